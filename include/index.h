/*
 * index.h - the SQLite index of the store's metadata.
 *
 * The store is the source of truth; the index is a cache of it that can be
 * deleted and rebuilt at any time (inode numbers never come from it),
 * except for two records of its own: the audit of promotions and
 * deletions, and the owners of runs that no longer have a directory
 * (a run dir in a tenant's area says who owns it).  One
 * index file may serve several tenants, and several daemons at once (WAL
 * mode, busy timeout): every row is keyed by client id.  The schema is
 * documented for operators in docs/index.md and versioned with
 * PRAGMA user_version; index_open() migrates older files forward.
 *
 * Every function is safe to call from several threads: a struct index
 * serialises its own statements.  Functions return 0 or a negative errno;
 * SQLite failures are logged once, with the SQLite message, and become -EIO.
 */
#ifndef ARTIFACTFS_INDEX_H
#define ARTIFACTFS_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "meta.h"

struct index;

/* The schema version this build writes (PRAGMA user_version). */
#define INDEX_SCHEMA_VERSION 4

/*
 * What a run's rows were built from.  When a fresh stat of the run dir and
 * its metadata.json gives the same stamp, the run need not be parsed again.
 * Fields are 0 when the thing is absent (no metadata.json).
 */
struct index_run_stamp {
	int64_t dir_ino;
	int64_t dir_mtime_ns;
	int64_t meta_ino;
	int64_t meta_size;
	int64_t meta_mtime_ns;
	int64_t meta_ctime_ns;
};

/* A regular file found in a run dir (metadata.json excluded). */
struct index_file {
	const char *filename;
	int64_t size;
	int64_t mtime_ns;
	int64_t ino;
};

/*
 * Where index_put_run() asks for the SHA-256 of a file whose previous row
 * holds none for these very bytes: sha256_of() returns it malloc'd, or
 * NULL when it is not known.  Called with the index locked, once per such
 * file, in filename order.
 */
struct index_hash_source {
	char *(*sha256_of)(void *ctx, const struct index_file *file);
	void *ctx;
};

/*
 * Opens (creating if needed) the index at path; its directory must exist.
 * Sets WAL mode, a busy timeout, and migrates the schema to
 * INDEX_SCHEMA_VERSION.  A file that is not a SQLite database, is corrupt,
 * or has a user_version newer than this build knows is not an error: it is
 * renamed to "<path>.corrupt-<UTC time>" (with its -wal and -shm files),
 * one warning is logged, and a new empty index is created in its place
 * (the caller's reconcile then rebuilds it from the store).
 * Returns 0 and *out, or -errno (one error logged) when path cannot be
 * created or opened.
 */
int index_open(const char *path, struct index **out);

/* Closes the index (checkpointing the WAL).  NULL is a no-op. */
void index_close(struct index *index);

/* Reads the stamp stored with a run.  Returns 0, -ENOENT (no row), -EIO. */
int index_get_run_stamp(struct index *index, const char *client,
			const char *run, struct index_run_stamp *stamp);

/*
 * Replaces, in one transaction, a run's row and all its artifact rows.
 * meta is the parsed metadata.json, or NULL when it is absent or was not
 * parsable; its NULL fields are stored as NULL.  There is one artifact row
 * per filename in the union of meta's artifacts and files: metadata
 * columns come from meta (NULL if the file has no entry), file columns from
 * files (NULL if the entry has no file).  The sha256 column of a file whose
 * ino, size and mtime are the same as in the previous row is kept; any
 * other is what hashes (may be NULL) gives, else NULL.  Such a file (one
 * promoted through artifactfs) that has
 * no entry in meta also keeps the previous row's metadata columns: its
 * entry was dropped by another writer, and promote_repair_run() puts it
 * back from them.  expires_at is also stored as seconds since the epoch when
 * meta_parse_time() accepts it (NULL otherwise).
 * Returns 0, -EIO.
 */
int index_put_run(struct index *index, const char *client, const char *run,
		  const struct index_run_stamp *stamp,
		  const struct meta_run *meta,
		  const struct index_file *files, size_t n_files,
		  const struct index_hash_source *hashes);

/* One file just promoted, for index_put_artifacts(). */
struct index_landed {
	const struct meta_artifact *entry;	/* its entry in the metadata.json written */
	struct index_file file;			/* its stat */
	const char *sha256;
};

/*
 * Records, in one transaction, files just promoted into one run together:
 * the run's row (fields from meta, which may be NULL, and stamp) and each
 * file's artifact row (entry's metadata, file's stat, its sha256), leaving
 * the run's other rows alone.  Cheaper than index_put_run() for a run of
 * many files, which a commit must not pay for each file, and one
 * transaction for a whole group commit.
 * Returns 0, -EIO (nothing recorded).
 */
int index_put_artifacts(struct index *index, const char *client, const char *run,
			const struct index_run_stamp *stamp, const struct meta_run *meta,
			const struct index_landed *landed, size_t n_landed);

/* Deletes a run's row and its artifact rows.  Returns 0 (also when absent), -EIO. */
int index_delete_run(struct index *index, const char *client, const char *run);

/*
 * Lists the run ids indexed for client, sorted.  On success *runs is a
 * malloc'd array of *n_runs malloc'd strings; free with index_free_list().
 * Returns 0, -ENOMEM, -EIO.
 */
int index_list_runs(struct index *index, const char *client,
		    char ***runs, size_t *n_runs);
void index_free_list(char **list, size_t n);

/*
 * Reads when a run expires, in seconds since the epoch.
 * Returns 0, -ENOENT when the run is not indexed or has no valid
 * expires_at (such a run never expires), -EIO.
 */
int index_get_run_expiry(struct index *index, const char *client,
			 const char *run, int64_t *expires_at);

/* Extended attributes of one run or file: name without "user.artifact.". */
#define INDEX_ATTRS_MAX 8
struct index_attrs {
	size_t count;
	struct {
		const char *name;	/* static string */
		char *value;		/* malloc'd, NUL-terminated */
	} attr[INDEX_ATTRS_MAX];
};

/*
 * Reads a run's attributes, in this order and only those not NULL:
 * workflow_id, user_directive, created_at, expires_at, status.
 * Returns 0, -ENOENT (run not indexed), -ENOMEM, -EIO.
 * Release *attrs with index_attrs_release() after any return.
 */
int index_get_run_attrs(struct index *index, const char *client,
			const char *run, struct index_attrs *attrs);

/*
 * Reads a file's attributes, in this order and only those not NULL:
 * agent_id, generated_at, content_type, size_bytes (decimal), sha256 (hex).
 * Returns 0, -ENOENT (no row), -ENOMEM, -EIO.
 * Release *attrs with index_attrs_release() after any return.
 */
int index_get_file_attrs(struct index *index, const char *client,
			 const char *run, const char *filename,
			 struct index_attrs *attrs);
void index_attrs_release(struct index_attrs *attrs);

/* The value of attribute name in *attrs, or NULL when it has none. */
const char *index_attrs_value(const struct index_attrs *attrs, const char *name);

/* --- schema 2: run ownership, promotion audit, usage ----------------------- */

/*
 * Records client as the owner of run unless the run already has one
 * (the first tenant to promote into a run owns it; the row is never
 * changed after).  Returns 0 when client owns run (now or before),
 * -EACCES when another client does, -EIO.
 */
int index_claim_run(struct index *index, const char *client, const char *run);

/*
 * Reads the owner of run.  On success *owner is a malloc'd client id.
 * Returns 0, -ENOENT (no owner recorded), -ENOMEM, -EIO.
 */
int index_get_run_owner(struct index *index, const char *run, char **owner);

/* What an audit row records: one per promotion, refusal, deletion or repair. */
enum index_action {
	INDEX_ACTION_PROMOTE,	/* stored as "promote" */
	INDEX_ACTION_DELETE,	/* stored as "delete" */
	INDEX_ACTION_REPAIR,	/* stored as "repair": metadata.json mended */
};

struct index_audit {
	int64_t time_ns;	/* when, nanoseconds since the epoch */
	const char *client;
	enum index_action action;
	const char *run;	/* may be NULL (a request that named none) */
	const char *filename;	/* may be NULL (a whole run deleted, a bad request) */
	int64_t size;		/* -1 when unknown */
	const char *sha256;	/* 64 lowercase hex digits, or NULL */
	int error;		/* 0 for success, else a positive errno */
	const char *reason;	/* one line, may be NULL on success */
};

/* The name an action is stored and shown under: "promote", "delete", "repair". */
const char *index_action_name(enum index_action action);

/* Appends an audit row.  Returns 0, -EIO. */
int index_add_audit(struct index *index, const struct index_audit *row);

/*
 * Calls fn for the newest limit audit rows of client, oldest first (the
 * strings are valid during the call only; fn runs with the index locked
 * and must not call back into it).  Returns 0, or the first
 * non-zero value fn returned, or -EIO.
 */
int index_list_audit(struct index *index, const char *client, size_t limit,
		     int (*fn)(void *ctx, const struct index_audit *row), void *ctx);

/*
 * Adds up what client stores: the file_size of every artifact row whose
 * file is present, and how many such rows there are.  Returns 0, -EIO.
 */
int index_get_usage(struct index *index, const char *client,
		    uint64_t *bytes, uint64_t *files);

/*
 * Records the SHA-256 of a file as promoted, on its artifact row, but only
 * while the row describes that very file (same file_ino, file_size and
 * file_mtime_ns): a hash never lands on other content.
 * Returns 0, -ENOENT (no such row, or it describes another file), -EIO.
 */
int index_set_sha256(struct index *index, const char *client, const char *run,
		     const char *filename, int64_t ino, int64_t size,
		     int64_t mtime_ns, const char *sha256);

/* --- typed reads, for artifactctl and verification ------------------------ */

/*
 * The read functions below call fn once per row, in a stable order, with
 * the index locked and the statement open (the strings are valid during
 * the call only; fn must not call back into the index).  fn returns 0 to
 * go on; anything else stops the walk and is returned.  Otherwise they
 * return 0 or -EIO.
 */

/* A run as indexed.  NULL strings: absent from metadata.json. */
struct index_run_row {
	const char *client;
	const char *run;
	const char *workflow_id;
	const char *user_directive;
	const char *created_at;
	const char *expires_at;
	int64_t expires_at_unix;	/* INT64_MIN when expires_at is not a valid time */
	const char *status;
	bool metadata_valid;		/* metadata.json followed the schema */
	int64_t files;			/* artifact rows whose file is present */
	int64_t bytes;			/* their file sizes added up */
};

/* An artifact as indexed: its entry and its file, either may be missing. */
struct index_artifact_row {
	const char *client;
	const char *run;
	const char *filename;
	const char *agent_id;		/* NULL when the file has no entry */
	const char *generated_at;
	const char *content_type;
	int64_t size_bytes;		/* -1 when the file has no entry */
	int64_t file_size;		/* -1 when the entry has no file */
	int64_t file_mtime_ns;
	int64_t file_ino;
	const char *sha256;		/* NULL unless artifactfs promoted these bytes */
};

/* Every client with a run indexed or owned, or audit rows, sorted. */
int index_for_each_client(struct index *index,
			  int (*fn)(void *ctx, const char *client), void *ctx);

/* The runs of client (every client when NULL), by client then run id. */
int index_for_each_run(struct index *index, const char *client,
		       int (*fn)(void *ctx, const struct index_run_row *row), void *ctx);

/* The artifacts of one run, by filename. */
int index_for_each_artifact(struct index *index, const char *client, const char *run,
			    int (*fn)(void *ctx, const struct index_artifact_row *row),
			    void *ctx);

/*
 * The artifacts matching every field that is not NULL (exactly): sha256,
 * agent_id, the run's workflow_id, client.  By client, run, filename.
 */
struct index_artifact_query {
	const char *client;
	const char *sha256;
	const char *agent_id;
	const char *workflow_id;
};
int index_find_artifacts(struct index *index, const struct index_artifact_query *query,
			 int (*fn)(void *ctx, const struct index_artifact_row *row), void *ctx);

/* The audit rows of client (every client when NULL) since since_ns, oldest first. */
int index_for_each_audit(struct index *index, const char *client, int64_t since_ns,
			 int (*fn)(void *ctx, const struct index_audit *row), void *ctx);

#endif
