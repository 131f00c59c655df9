/*
 * promote.c - staging uploads and committing them into a tenant's store;
 * temporaries and renames in promote/<run>/; requests for session files;
 * deletion; repairs of what unlocked writers leave in metadata.json.
 *
 * Staging layout, all on the store's file system:
 *   STORE/.artifactfs/staging/<client>/<instance>/      flock'ed while alive
 *       runs/<run>/<name>     direct uploads in flight
 *       requests/<name>       request documents in flight
 *       work/                 intents and metadata.json drafts
 *
 * A commit is: fsync the staged file; write an intent (what is about to
 * land, with its SHA-256); rename into the run; rewrite metadata.json
 * (draft, fsync, rename) under an flock on the run dir, so concurrent
 * promoters of one run, in this daemon or another, never lose an entry;
 * update the index; drop the intent.  A crash after the rename leaves an
 * intent that the next mount completes; a crash before leaves only
 * staging, which the next mount removes.  metadata.json is shared with
 * the kernel-server, which takes no lock: every edit of it goes through
 * edit_metadata(), which reads it again when it changed underneath.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "meta.h"
#include "metafile.h"
#include "mime.h"
#include "names.h"
#include "promote.h"
#include "request.h"

#define STAGING_DIR STORE_PRIVATE_DIR "/staging"
#define SHA256_HEX_SIZE 65
#define REASON_SIZE 256
#define SECONDS_PER_DAY 86400

/* Run attributes set on promote/<run> before its first file lands. */
struct run_attrs {
	char run[NAMES_ID_MAX + 1];
	char *workflow_id;
	char *user_directive;
	struct run_attrs *next;
};

/*
 * One file being written in promote/: from the open that starts it to the
 * release of its last descriptor.
 *
 * Who may touch what.  The kernel sends WRITE, SETATTR (truncate), FLUSH
 * (every close of every copy of the descriptor: dup(), fork(), exec's
 * close-on-exec) and finally RELEASE, from any of the daemon's threads,
 * in any overlap.  So:
 *  - lock serialises the operations on the upload: write, truncate,
 *    commit, abandon and end.  Its holder alone changes the staged file,
 *    the hash, failure and outcome, and swaps the open file behind fd.
 *  - The promoter's lock guards what other threads look at: registered
 *    and agent_id (written under it only: a newer upload of the same name
 *    takes the name over, setxattr sets the agent); staged, dirty,
 *    committed, dropped and size (written under both locks, so either one
 *    is enough to read them).  agent_id is copied under it, never kept.
 *  - fd keeps its number from the first stage to upload_free(): a new
 *    open file is dup3()'d onto it, so readers of that number (FUSE
 *    reads, fstat in listings) never meet a closed or reused one.
 *  - refs (promoter's lock) counts who holds the struct: each open file
 *    that writes it, and a rename or unlink at work on it.  The last one
 *    frees it, unless it is a temporary that still holds its name: that
 *    one stays, parked, for a rename, a reopen, an unlink, the idle limit
 *    or the end of the mount.  Whoever finds an upload under the
 *    promoter's lock and lets go of the lock takes a reference first.
 * Lock order: an upload's lock, then the promoter's.
 */
struct upload {
	struct promoter *promoter;
	struct upload *next;
	pthread_mutex_t lock;
	char run[NAMES_ID_MAX + 1];	/* "" for a request */
	char name[NAMES_FILE_MAX + 1];
	int fd;			/* the staged file; after a commit, the artifact */
	int dir_fd;		/* where it is staged */
	uint64_t size;		/* apparent size, as the quota counts it */
	bool dirty;		/* written since the last commit */
	bool committed;		/* committed at least once */
	bool registered;	/* in the promoter's list, holding its name */
	bool staged;		/* the staged name exists (not yet renamed away) */
	int failure;		/* sticky -errno: the upload can no longer commit */
	int outcome;		/* 0 or -errno of the last commit */
	bool temporary;		/* a temporary name: lands only when renamed */
	pid_t opener;		/* the process that first opened it, 0 if unknown */
	bool dropped;		/* unlinked before it landed: written on into nothing */
	bool from_artifact;	/* staged from the artifact's bytes: unwritten, nothing new */
	unsigned int refs;
	int64_t parked_ns;	/* refs fell to 0 then (CLOCK_MONOTONIC) */
	char *agent_id;
	/* SHA-256 of a sequential write, so a plain copy is hashed once. */
	EVP_MD_CTX *hash;
	uint64_t hashed;
};

/*
 * The metadata.json last written into a run, parsed, with what stat()
 * said of the file then.  Parsing the document is what made a commit
 * into a run of a thousand files cost 15 ms; while the file is the very
 * one we wrote (same inode, size, times), our copy is as good.
 */
struct metadata_cache_entry {
	char run[NAMES_ID_MAX + 1];	/* "" when unused */
	struct metafile_version version;	/* of the file as it was written */
	struct meta_run meta;
	unsigned long last_used;
};

#define METADATA_CACHE_RUNS 8

/* How long a temporary nobody holds stays staged, by default. */
#define TEMPORARY_IDLE_DEFAULT 3600

struct promoter {
	struct view *view;
	struct promote_options options;
	struct mime_table *mime;
	int instance_fd;	/* flock'ed for the life of the daemon */
	int runs_fd, requests_fd, work_fd;
	char instance[64];
	/*
	 * Guards uploads (the list and the fields struct upload names),
	 * run_attrs, the staged and used totals, work_serial and the
	 * metadata cache.  Held for memory updates and cheap directory
	 * calls only, never across a copy or an fsync.
	 */
	pthread_mutex_t lock;
	struct upload *uploads;
	struct run_attrs *run_attrs;
	uint64_t staged_bytes;
	uint64_t staged_files;
	/* The tenant's stored bytes and files, from the index, for quotas. */
	uint64_t used_bytes;
	uint64_t used_files;
	unsigned long work_serial;
	/* Guarded by lock; an entry is taken out while its run is locked. */
	struct metadata_cache_entry metadata_cache[METADATA_CACHE_RUNS];
	unsigned long metadata_clock;
};

/* Uploads are sent to the disk in chunks of this many bytes as they come. */
#define WRITEBACK_CHUNK (8u << 20)

/* What lands in metadata.json for one committed file. */
struct landing {
	const char *run;
	const char *name;
	const char *agent_id;
	const char *workflow_id;	/* used when the run is new */
	const char *user_directive;	/* used when the run is new */
	uint64_t size;
	char sha256[SHA256_HEX_SIZE];
	char generated_at[META_TIME_SIZE];
};

static int refresh_usage(struct promoter *p);

/* --- small helpers ------------------------------------------------------- */

/* Nanoseconds by clock: CLOCK_REALTIME for records, CLOCK_MONOTONIC for waits. */
static int64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static const char *errno_name(int error)
{
	const char *name = strerrorname_np(error);

	return name ? name : "EIO";
}

/* One log line and one audit row for every outcome a user can see. */
static void record(struct promoter *p, enum index_action action, const char *run,
		   const char *name, int64_t size, const char *sha256, int error,
		   const char *reason)
{
	char run_text[NAMES_ID_MAX * 4 + 1], name_text[NAMES_FILE_MAX * 4 + 1];
	char reason_text[REASON_SIZE];
	struct index_audit row = {
		.time_ns = clock_ns(CLOCK_REALTIME),
		.client = p->view->client,
		.action = action,
		.run = run ? run_text : NULL,
		.filename = name ? name_text : NULL,
		.size = size,
		.sha256 = sha256,
		.error = error,
		.reason = reason ? reason_text : NULL,
	};
	const char *verb = action == INDEX_ACTION_PROMOTE ? "promotion" :
			   action == INDEX_ACTION_DELETE ? "deletion" : "repair of metadata.json";

	/* Names come from agents: what is logged and shown must be plain text. */
	if (run)
		names_make_printable(run, run_text, sizeof(run_text));
	if (name)
		names_make_printable(name, name_text, sizeof(name_text));
	if (reason)
		names_make_printable(reason, reason_text, sizeof(reason_text));
	run = row.run;
	name = row.filename;
	reason = row.reason;

	/* The verdict first: a long name may cut the line, never the outcome. */
	if (error)
		log_warning("%s refused (%s): %s; client %s run %s file %s", verb,
			    errno_name(error), reason ? reason : strerror(error),
			    p->view->client, run ? run : "-", name ? name : "-");
	else
		log_info("%s done: client %s run %s file %s", verb, p->view->client,
			 run ? run : "-", name ? name : "-");
	index_add_audit(p->view->index, &row);
}

static int fsync_fd(int fd)
{
	return fsync(fd) < 0 ? -errno : 0;
}

/* Accepts an attribute value: bounded UTF-8 text without control characters. */
static int check_attr_value(const char *value, size_t size)
{
	if (size > PROMOTE_ATTR_MAX)
		return -E2BIG;
	return names_check_text(value, size, NULL);
}

/* A checked, NUL-terminated copy of an attribute value set through the mount. */
static int copy_attr_value(const char *value, size_t size, char **copy)
{
	int ret = check_attr_value(value, size);

	if (ret < 0)
		return ret;
	*copy = strndup(value, size);
	return *copy ? 0 : -ENOMEM;
}

static void hex_digest(const unsigned char *digest, char *hex)
{
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

/*
 * Puts a new open file of the same inode, opened with flags, in place of
 * fd (same number: other threads may hold it).  Returns 0 or -errno.
 */
static int reopen_fd(int fd, int flags)
{
	char proc[32];
	int fresh, ret = 0;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	fresh = open(proc, flags | O_CLOEXEC);
	if (fresh < 0)
		return -errno;
	if (dup3(fresh, fd, O_CLOEXEC) < 0)
		ret = -errno;
	close(fresh);
	return ret;
}

/* Hashes a whole file by reading it (for uploads written out of order). */
static int hash_file(int fd, char *hex)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	static const size_t chunk = 1 << 20;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char *buf = malloc(chunk);
	off_t offset = 0;
	int ret = 0;

	if (!ctx || !buf || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL)) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n = pread(fd, buf, chunk, offset);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
		offset += n;
	}
	EVP_DigestFinal_ex(ctx, digest, NULL);
	hex_digest(digest, hex);
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return ret;
}

/* --- ownership ----------------------------------------------------------- */

/* Whether some other tenant's area, or the legacy layout, holds run. */
static int find_foreign_run(struct promoter *p, const char *run)
{
	char path[2 * NAMES_ID_MAX + 32];
	struct dirent *entry;
	struct stat st;
	DIR *dir;
	int fd, ret = 0;

	fd = store_open_beneath(p->view->store->root_fd, "artifacts", O_RDONLY | O_DIRECTORY, 0);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	/* A legacy run dir (artifacts/<run>/metadata.json) belongs to nobody here. */
	snprintf(path, sizeof(path), "%s/%s", run, NAMES_METADATA_FILE);
	if (fstatat(fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		close(fd);
		return -EACCES;
	}
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -errno;
	}
	while ((entry = readdir(dir))) {
		if (strcmp(entry->d_name, p->view->client) == 0 ||
		    names_check_id(entry->d_name, NULL) < 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", entry->d_name, run);
		if (fstatat(dirfd(dir), path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			ret = -EACCES;
			break;
		}
	}
	closedir(dir);
	return ret;
}

/* Opens the tenant's own run dir (O_RDONLY), or -ENOENT. */
static int open_own_run(struct promoter *p, const char *run)
{
	char path[2 * NAMES_ID_MAX + 16];

	snprintf(path, sizeof(path), "artifacts/%s/%s", p->view->client, run);
	return store_open_beneath(p->view->store->root_fd, path,
				  O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
}

bool promote_serves_run(const struct promoter *p, const char *run)
{
	return !p->options.only_run || strcmp(run, p->options.only_run) == 0;
}

int promote_check_run(struct promoter *p, const char *run)
{
	char *owner = NULL;
	int fd, ret;

	if (names_check_run(run, NULL) < 0)
		return -EINVAL;
	if (!promote_serves_run(p, run))
		return -EACCES;
	fd = open_own_run(p, run);
	if (fd >= 0) {
		close(fd);
		return 0;	/* the tenant's own run dir: its run */
	}
	ret = index_get_run_owner(p->view->index, run, &owner);
	if (ret == 0) {
		ret = strcmp(owner, p->view->client) == 0 ? 0 : -EACCES;
		free(owner);
		return ret;
	}
	if (ret != -ENOENT)
		return ret;
	return find_foreign_run(p, run);
}

/* --- metadata.json ------------------------------------------------------- */

/* A copy of text ("" for NULL), or NULL with *ret set to -ENOMEM. */
static char *copy_text(const char *text, int *ret)
{
	char *copy = strdup(text ? text : "");

	if (!copy)
		*ret = -ENOMEM;
	return copy;
}

/*
 * Reads the run's metadata.json into *meta, waiting while a writer that
 * takes no lock (the kernel-server) is halfway through rewriting it.  A
 * missing file is an empty run (-ENOENT); a file that does not follow
 * the schema, or stays unparsable, is never rewritten (-EIO): rewriting
 * would lose what the kernel-server wrote.
 */
static int read_metadata(int run_fd, struct meta_run *meta, struct metafile_version *version,
			 char *reason)
{
	char problem[160] = "";
	int ret;

	ret = metafile_read(run_fd, true, meta, version, problem, sizeof(problem));
	if (ret == 0 || ret == -ENOENT || ret == -ENOMEM)
		return ret;
	if (ret == -EBADMSG)
		snprintf(reason, REASON_SIZE, "metadata.json does not parse (%s) and has not "
			 "changed for %d ms; not rewriting it", problem, METAFILE_SETTLE_MS);
	else if (ret == -EINVAL)
		snprintf(reason, REASON_SIZE,
			 "metadata.json does not follow the schema (%s); not rewriting it", problem);
	else
		snprintf(reason, REASON_SIZE, "cannot read metadata.json: %s",
			 ret == -EFBIG ? problem : strerror(-ret));
	return -EIO;
}

/*
 * Writes *meta as the run's metadata.json if it is still *version (see
 * metafile_write()); *version then describes what was written.
 * Returns 0, -ESTALE (changed since read), -ENOMEM, -EIO with reason set.
 */
static int write_metadata(struct promoter *p, int run_fd, const struct meta_run *meta,
			  struct metafile_version *version, char *reason)
{
	struct metafile_version written;
	char draft[64];
	int ret;

	pthread_mutex_lock(&p->lock);
	snprintf(draft, sizeof(draft), "metadata.%lu", p->work_serial++);
	pthread_mutex_unlock(&p->lock);
	ret = metafile_write(run_fd, p->work_fd, draft, meta, version, &written);
	if (ret == 0)
		*version = written;
	if (ret == 0 || ret == -ESTALE || ret == -ENOMEM)
		return ret;
	snprintf(reason, REASON_SIZE, "cannot %s metadata.json: %s",
		 ret == -EINVAL ? "format" : "write", strerror(-ret));
	return -EIO;
}

/*
 * How long an edit of metadata.json is tried again while another writer
 * keeps getting in between (a kernel-server promoting file after file).
 */
#define EDIT_RETRY_MS 10000

/*
 * A change to a run's metadata: edits *meta in place.  Returns 0, 1 when
 * there is nothing to write, or -ENOMEM.
 */
typedef int (*metadata_edit_fn)(struct promoter *p, struct meta_run *meta, const void *ctx);

/*
 * Applies edit to *meta, the run's metadata.json as read (*version), and
 * writes the result; when the file changed since it was read (a writer
 * that takes no lock), reads it again and applies the edit again, so that
 * what the other writer wrote stays.  run_fd is locked by the caller.
 * On success *meta and *version are what the file now holds.
 * Returns 0 or -errno with reason set.
 */
static int edit_metadata(struct promoter *p, int run_fd, struct meta_run *meta,
			 struct metafile_version *version, metadata_edit_fn edit,
			 const void *ctx, char *reason)
{
	int64_t deadline = clock_ns(CLOCK_MONOTONIC) + (int64_t)EDIT_RETRY_MS * 1000000;

	for (long tries = 1;; tries++) {
		int ret = edit(p, meta, ctx);

		if (ret < 0) {
			snprintf(reason, REASON_SIZE, "out of memory");
			return ret;
		}
		if (ret == 1)
			return 0;
		ret = write_metadata(p, run_fd, meta, version, reason);
		if (ret != -ESTALE)
			return ret;
		if (clock_ns(CLOCK_MONOTONIC) >= deadline) {
			snprintf(reason, REASON_SIZE, "metadata.json kept changing while it was "
				 "being rewritten (%ld tries in %d ms)", tries, EDIT_RETRY_MS);
			return -EIO;
		}
		/* Out of step with the other writer's loop, in a few ms. */
		nanosleep(&(struct timespec){ .tv_nsec = (tries % 7 + 1) * 1000000L }, NULL);
		ret = read_metadata(run_fd, meta, version, reason);
		if (ret < 0 && ret != -ENOENT)
			return ret;	/* -ENOENT: removed meanwhile, made anew */
	}
}

/* Sets *field to a copy of value.  Returns 0 or -ENOMEM. */
static int replace_string(char **field, const char *value)
{
	char *copy = strdup(value);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

/*
 * Puts the landing's entry into *meta, replacing any entry of that name
 * (and dropping duplicates the kernel-server may have appended), filling
 * a new run's fields.  Returns 0 or -ENOMEM.
 */
static int add_entry(struct promoter *p, struct meta_run *meta, const struct landing *l)
{
	struct meta_artifact *entry = NULL;
	size_t kept = 0;
	int ret = 0;

	if (!meta->run_id) {
		char created[META_TIME_SIZE], expires[META_TIME_SIZE];
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		meta_format_time(now.tv_sec, now.tv_nsec, created);
		meta_format_time(now.tv_sec + (int64_t)p->options.retention_days * SECONDS_PER_DAY,
				 now.tv_nsec, expires);
		meta->run_id = copy_text(l->run, &ret);
		meta->workflow_id = copy_text(l->workflow_id, &ret);
		meta->user_directive = copy_text(l->user_directive, &ret);
		meta->created_at = copy_text(created, &ret);
		meta->expires_at = copy_text(expires, &ret);
		meta->status = copy_text("active", &ret);
		if (ret < 0)
			return ret;
	}
	for (size_t i = 0; i < meta->n_artifacts; i++) {
		struct meta_artifact *a = &meta->artifacts[i];
		if (strcmp(a->filename, l->name) == 0 && entry) {
			meta_artifact_release(a);
			continue;
		}
		meta->artifacts[kept] = *a;
		if (strcmp(a->filename, l->name) == 0)
			entry = &meta->artifacts[kept];
		kept++;
	}
	meta->n_artifacts = kept;
	if (!entry) {
		struct meta_artifact *grown = realloc(meta->artifacts,
						      (kept + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		meta->artifacts = grown;
		entry = &grown[kept];
		memset(entry, 0, sizeof(*entry));
		entry->filename = strdup(l->name);
		meta->n_artifacts++;
		if (!entry->filename)
			return -ENOMEM;
	}
	if ((ret = replace_string(&entry->agent_id, l->agent_id)) < 0 ||
	    (ret = replace_string(&entry->generated_at, l->generated_at)) < 0 ||
	    (ret = replace_string(&entry->content_type, mime_type_of(p->mime, l->name))) < 0)
		return ret;
	entry->size_bytes = l->size;
	entry->has_size_bytes = true;
	return 0;
}

/* Drops every entry of name from *meta.  Returns whether one was there. */
static bool remove_entry(struct meta_run *meta, const char *name)
{
	size_t kept = 0;
	bool found = false;

	for (size_t i = 0; i < meta->n_artifacts; i++) {
		struct meta_artifact *a = &meta->artifacts[i];
		if (strcmp(a->filename, name) == 0) {
			meta_artifact_release(a);
			found = true;
			continue;
		}
		meta->artifacts[kept++] = *a;
	}
	meta->n_artifacts = kept;
	return found;
}

/* --- intents -------------------------------------------------------------- */

/*
 * Writes doc (taken over) as an intent record, durably, named
 * intent_name (64 bytes), before what it describes happens: the next
 * mount completes the metadata of a file a crash left unrecorded.
 */
static int write_intent_doc(struct promoter *p, json_t *doc, char *intent_name)
{
	int fd = -1, ret = 0;
	char *text = NULL;

	if (!doc || !(text = json_dumps(doc, JSON_COMPACT))) {
		ret = -ENOMEM;
		goto out;
	}
	pthread_mutex_lock(&p->lock);
	snprintf(intent_name, 64, "intent.%lu", p->work_serial++);
	pthread_mutex_unlock(&p->lock);
	fd = openat(p->work_fd, intent_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = store_write_all(fd, text, strlen(text));
	if (ret == 0)
		ret = fsync_fd(fd);
	if (ret == 0)
		ret = fsync_fd(p->work_fd);
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0 && fd >= 0)
		unlinkat(p->work_fd, intent_name, 0);
	free(text);
	json_decref(doc);
	return ret;
}

/* The intent of a landing: what is about to land, with its SHA-256. */
static int write_intent(struct promoter *p, const struct landing *l, char *intent_name)
{
	return write_intent_doc(p, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}",
					     "run", l->run, "name", l->name,
					     "agent_id", l->agent_id, "workflow_id", l->workflow_id,
					     "user_directive", l->user_directive,
					     "sha256", l->sha256, "generated_at", l->generated_at,
					     "size", (json_int_t)l->size),
				intent_name);
}

/* --- committing ----------------------------------------------------------- */

/* Opens (making it, durably, if needed) the tenant's run dir. */
static int make_run_dir(struct promoter *p, const char *run)
{
	int artifacts_fd, tenant_fd, run_fd;
	bool made;

	artifacts_fd = store_make_dir(p->view->store->root_fd, "artifacts", 0755, &made);
	if (artifacts_fd < 0)
		return artifacts_fd;
	if (made)
		fsync(p->view->store->root_fd);
	tenant_fd = store_make_dir(artifacts_fd, p->view->client, 0755, &made);
	if (made)
		fsync(artifacts_fd);
	close(artifacts_fd);
	if (tenant_fd < 0)
		return tenant_fd;
	run_fd = store_make_dir(tenant_fd, run, 0755, &made);
	if (run_fd >= 0 && made)
		fsync(tenant_fd);
	close(tenant_fd);
	return run_fd;
}

/*
 * Opens (making it if needed) and locks the tenant's run dir for a
 * landing: one writer of metadata.json at a time, across threads and
 * daemons.  A deletion of the run (rm -r) may remove the directory while
 * we wait for its lock; the landing then makes it anew.
 */
static int lock_run_for_landing(struct promoter *p, const char *run)
{
	for (int tries = 0; tries < 16; tries++) {
		int run_fd = make_run_dir(p, run);
		struct stat st;

		if (run_fd < 0)
			return run_fd;
		store_lock(run_fd, LOCK_EX);
		if (fstat(run_fd, &st) == 0 && st.st_nlink > 0)
			return run_fd;
		flock(run_fd, LOCK_UN);
		close(run_fd);
	}
	return -ESTALE;	/* deleted again and again: give up, loudly */
}

/*
 * Moves the cached metadata of run into *meta when run_fd's metadata.json
 * is still the one it was parsed from.  run_fd is locked by the caller.
 */
static bool take_cached_metadata(struct promoter *p, int run_fd, const char *run,
				 struct meta_run *meta, struct metafile_version *version)
{
	struct metadata_cache_entry taken = { 0 };
	bool found = false;

	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < METADATA_CACHE_RUNS; i++) {
		struct metadata_cache_entry *entry = &p->metadata_cache[i];

		if (strcmp(entry->run, run) == 0) {
			taken = *entry;
			memset(entry, 0, sizeof(*entry));
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (found && metafile_unchanged(run_fd, &taken.version)) {
		*meta = taken.meta;
		*version = taken.version;
		return true;
	}
	meta_run_release(&taken.meta);
	return false;
}

/*
 * Keeps *meta, just written as run's metadata.json (*version), for the
 * next commit into run (it takes *meta over, leaving it empty).
 */
static void keep_metadata(struct promoter *p, const char *run,
			  const struct metafile_version *version, struct meta_run *meta)
{
	struct metadata_cache_entry *slot = NULL;

	if (!version->present)
		return;	/* rewritten by someone else at once: not worth keeping */
	pthread_mutex_lock(&p->lock);
	for (size_t i = 0; i < METADATA_CACHE_RUNS; i++) {
		struct metadata_cache_entry *entry = &p->metadata_cache[i];

		if (strcmp(entry->run, run) == 0 || !entry->run[0]) {
			slot = entry;
			break;
		}
		if (!slot || entry->last_used < slot->last_used)
			slot = entry;	/* the least recently used goes */
	}
	meta_run_release(&slot->meta);
	snprintf(slot->run, sizeof(slot->run), "%s", run);
	slot->version = *version;
	slot->meta = *meta;
	slot->last_used = ++p->metadata_clock;
	memset(meta, 0, sizeof(*meta));
	pthread_mutex_unlock(&p->lock);
}

/*
 * Reads the run's metadata.json into *meta for a landing: absent is
 * fine (a new run), unreadable is not.  run_fd is locked by the caller.
 */
static int read_metadata_for_landing(struct promoter *p, int run_fd, const char *run,
				     struct meta_run *meta, struct metafile_version *version,
				     char *reason)
{
	int ret;

	if (take_cached_metadata(p, run_fd, run, meta, version))
		return 0;
	ret = read_metadata(run_fd, meta, version, reason);
	return ret == -ENOENT ? 0 : ret;
}

/* add_entry() as an edit of edit_metadata(). */
static int add_landing(struct promoter *p, struct meta_run *meta, const void *landing)
{
	return add_entry(p, meta, landing);
}

/* Adds the landing to *meta (as read: *version) and writes it; run_fd is locked by the caller. */
static int record_landing(struct promoter *p, int run_fd, struct meta_run *meta,
			  struct metafile_version *version, const struct landing *l, char *reason)
{
	return edit_metadata(p, run_fd, meta, version, add_landing, l, reason);
}

/*
 * Records a landed file in the index: its row and the run's, not the
 * whole run again (a run of many files would pay for each one).
 * meta is the metadata.json just written, *version the file written;
 * run_fd is locked.
 */
static void index_landing(struct promoter *p, int run_fd, const struct meta_run *meta,
			  const struct metafile_version *version, const struct landing *l)
{
	struct index_file file = { .filename = l->name };
	const struct meta_artifact *entry = meta_find_artifact(meta, l->name);
	struct index_run_stamp stamp;
	struct stat st;

	/*
	 * The stamp of the very file we wrote: if another writer changed it
	 * since, the stamps differ and the watcher has the run parsed again.
	 */
	view_stamp_run(run_fd, &stamp);
	stamp.meta_ino = version->ino;
	stamp.meta_size = version->size;
	stamp.meta_mtime_ns = version->mtime_ns;
	stamp.meta_ctime_ns = version->ctime_ns;
	if (!entry || fstatat(run_fd, l->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		view_index_run(p->view, l->run, run_fd, VIEW_SYNC_FORCE, NULL);	/* the slow way */
		return;
	}
	file.size = st.st_size;
	file.mtime_ns = store_time_ns(&st.st_mtim);
	file.ino = (int64_t)st.st_ino;
	index_put_artifact(p->view->index, p->view->client, l->run, &stamp, meta, entry,
			   &file, l->sha256);
}

/*
 * Lands the staged file (staged_dir, staged_name) as l->run/l->name.
 * On failure the store is as before for that file.  Returns 0 or -errno
 * with reason set.
 */
static int land_file(struct promoter *p, int staged_dir, const char *staged_name,
		     const struct landing *l, char *reason)
{
	struct metafile_version version;
	struct meta_run meta = { 0 };
	char intent[64] = "";
	int run_fd = -1, ret;

	ret = promote_check_run(p, l->run);
	run_fd = ret == 0 ? open_own_run(p, l->run) : -1;
	if (run_fd >= 0)
		close(run_fd);	/* the tenant's own run dir: its run, whoever else claims the id */
	else if (ret == 0)
		ret = index_claim_run(p->view->index, p->view->client, l->run);
	if (ret < 0) {
		snprintf(reason, REASON_SIZE, ret == -EACCES ?
			 "the run belongs to another tenant" : "invalid run id");
		return ret;
	}
	run_fd = lock_run_for_landing(p, l->run);
	if (run_fd < 0) {
		snprintf(reason, REASON_SIZE, "cannot make the run directory: %s",
			 strerror(-run_fd));
		return -EIO;
	}
	/* Refuse before anything moves if metadata.json cannot be kept valid. */
	ret = read_metadata_for_landing(p, run_fd, l->run, &meta, &version, reason);
	if (ret < 0)
		goto out;
	ret = write_intent(p, l, intent);
	if (ret < 0) {
		snprintf(reason, REASON_SIZE, "cannot write the intent record: %s", strerror(-ret));
		ret = -EIO;
		goto out;
	}
	/*
	 * Staged private (0600, in a 0700 dir), landed with the store's mode:
	 * the kernel-server, another user, serves these files too.
	 */
	if (fchmodat(staged_dir, staged_name, p->options.file_mode, 0) < 0) {
		ret = -errno;
		snprintf(reason, REASON_SIZE, "cannot set the file's mode: %s", strerror(-ret));
		ret = -EIO;
		goto out;
	}
	if (renameat(staged_dir, staged_name, run_fd, l->name) < 0) {
		ret = -errno;
		snprintf(reason, REASON_SIZE, "cannot move the file into the run: %s", strerror(-ret));
		ret = -EIO;
		goto out;
	}
	ret = fsync_fd(run_fd);
	if (ret == 0)
		ret = record_landing(p, run_fd, &meta, &version, l, reason);
	if (ret < 0) {
		/* The file is in place; the intent finishes its metadata at next mount. */
		intent[0] = '\0';
		goto out;
	}
	index_landing(p, run_fd, &meta, &version, l);
	keep_metadata(p, l->run, &version, &meta);
	refresh_usage(p);
out:
	if (intent[0])
		unlinkat(p->work_fd, intent, 0);
	flock(run_fd, LOCK_UN);
	close(run_fd);
	meta_run_release(&meta);
	return ret;
}

/* --- uploads -------------------------------------------------------------- */

static struct upload *find_upload(struct promoter *p, const char *run, const char *name)
{
	for (struct upload *u = p->uploads; u; u = u->next)
		if (strcmp(u->run, run ? run : "") == 0 && strcmp(u->name, name) == 0)
			return u;
	return NULL;
}

/* Takes an upload out of the list (its name is free again).  Locked. */
static void unregister(struct promoter *p, struct upload *u)
{
	if (!u->registered)
		return;
	for (struct upload **link = &p->uploads; *link; link = &(*link)->next)
		if (*link == u) {
			*link = u->next;
			break;
		}
	u->registered = false;
	p->staged_files--;
}

static struct run_attrs *find_run_attrs(struct promoter *p, const char *run)
{
	for (struct run_attrs *a = p->run_attrs; a; a = a->next)
		if (strcmp(a->run, run) == 0)
			return a;
	return NULL;
}

/*
 * Reads the tenant's usage from the index (when a quota needs it).  Done
 * when an upload starts, not on each write: writes only add to staged_bytes.
 */
static int refresh_usage(struct promoter *p)
{
	uint64_t bytes = 0, files = 0;
	int ret;

	if (!p->options.quota_bytes && !p->options.quota_files)
		return 0;
	ret = index_get_usage(p->view->index, p->view->client, &bytes, &files);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&p->lock);
	p->used_bytes = bytes;
	p->used_files = files;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* Whether adding bytes and files would take the tenant over a quota.  Locked. */
static bool over_quota(const struct promoter *p, uint64_t bytes, uint64_t files)
{
	return (p->options.quota_bytes &&
		p->used_bytes + p->staged_bytes + bytes > p->options.quota_bytes) ||
	       (p->options.quota_files &&
		p->used_files + p->staged_files + files > p->options.quota_files);
}

int promote_stage_run(struct promoter *p, const char *run, bool create, struct stat *st)
{
	int fd, ret;

	if (!create) {
		if (fstatat(p->runs_fd, run, st, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		return S_ISDIR(st->st_mode) ? 0 : -ENOENT;
	}
	ret = promote_check_run(p, run);
	if (ret < 0) {
		record(p, INDEX_ACTION_PROMOTE, run, NULL, -1, NULL, -ret,
		       ret == -EACCES ? "the run belongs to another tenant or this mount "
		       "serves another run" : "invalid run id");
		return ret;
	}
	fd = store_make_dir(p->runs_fd, run, 0700, NULL);
	if (fd < 0)
		return fd;
	ret = fstat(fd, st) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

int promote_unstage_run(struct promoter *p, const char *run)
{
	bool busy = false;
	int ret;

	/* Locked: an upload starting meanwhile would stage into a removed dir. */
	pthread_mutex_lock(&p->lock);
	for (struct upload *u = p->uploads; u; u = u->next)
		busy |= strcmp(u->run, run) == 0;
	ret = busy ? -EBUSY : unlinkat(p->runs_fd, run, AT_REMOVEDIR) < 0 ? -errno : 0;
	pthread_mutex_unlock(&p->lock);
	return ret;
}

int promote_list_staged_runs(struct promoter *p,
			     int (*fn)(void *ctx, const char *run, const struct stat *st),
			     void *ctx)
{
	struct dirent *entry;
	struct stat st;
	DIR *dir;
	int ret = 0;

	ret = store_open_dir(p->runs_fd, &dir);
	if (ret < 0)
		return ret;
	while ((entry = readdir(dir)) && ret == 0) {
		if (names_check_run(entry->d_name, NULL) < 0 ||
		    fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		ret = fn(ctx, entry->d_name, &st);
	}
	closedir(dir);
	return ret;
}

int promote_set_run_attr(struct promoter *p, const char *run, const char *name,
			 const char *value, size_t size)
{
	struct run_attrs *attrs;
	char **field;
	char *copy;
	int ret;

	if (strcmp(name, "workflow_id") != 0 && strcmp(name, "user_directive") != 0)
		return -EOPNOTSUPP;
	ret = copy_attr_value(value, size, &copy);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&p->lock);
	attrs = find_run_attrs(p, run);
	if (!attrs) {
		attrs = calloc(1, sizeof(*attrs));
		if (!attrs) {
			pthread_mutex_unlock(&p->lock);
			free(copy);
			return -ENOMEM;
		}
		snprintf(attrs->run, sizeof(attrs->run), "%s", run);
		attrs->next = p->run_attrs;
		p->run_attrs = attrs;
	}
	field = strcmp(name, "workflow_id") == 0 ? &attrs->workflow_id : &attrs->user_directive;
	free(*field);
	*field = copy;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

static void upload_free(struct upload *u);

/*
 * Drops a reference to u.  Returns whether u is to be freed (the caller
 * does it, after letting go of the lock): the last reference to an upload
 * that no longer holds its name.  A temporary that holds it is parked.
 * Locked.
 */
static bool drop_reference(struct upload *u)
{
	if (--u->refs > 0)
		return false;
	if (u->registered && u->temporary) {
		u->parked_ns = clock_ns(CLOCK_MONOTONIC);
		return false;
	}
	return !u->registered;
}

/* Gives back a reference taken on an upload found under the lock. */
static void upload_put(struct upload *u)
{
	struct promoter *p = u->promoter;
	bool gone;

	pthread_mutex_lock(&p->lock);
	gone = drop_reference(u);
	pthread_mutex_unlock(&p->lock);
	if (gone)
		upload_free(u);
}

/*
 * Takes a registered upload's name and staged file away.  It is freed
 * when nobody holds it (returns true: the caller frees it, unlocked).
 * Locked.
 */
static bool discard_registered(struct promoter *p, struct upload *u)
{
	if (u->staged) {
		p->staged_bytes -= u->size;
		unlinkat(u->dir_fd, u->name, 0);
	}
	unregister(p, u);
	return u->refs == 0;
}

/* Discards the temporaries nobody has held for the idle limit.  Locked. */
static void sweep_parked(struct promoter *p)
{
	unsigned int idle = p->options.temporary_idle ? p->options.temporary_idle :
			    TEMPORARY_IDLE_DEFAULT;
	int64_t now = clock_ns(CLOCK_MONOTONIC);
	struct upload *u = p->uploads, *next;

	for (; u; u = next) {
		next = u->next;
		if (u->temporary && u->refs == 0 &&
		    now - u->parked_ns >= (int64_t)idle * 1000000000) {
			log_info("client %s run %s file %s: temporary file unused for %u s, discarded",
				 p->view->client, u->run, u->name, idle);
			if (discard_registered(p, u))
				upload_free(u);
		}
	}
}

static void upload_free(struct upload *u)
{
	if (u->fd >= 0)
		close(u->fd);
	if (u->dir_fd >= 0)
		close(u->dir_fd);
	EVP_MD_CTX_free(u->hash);
	free(u->agent_id);
	pthread_mutex_destroy(&u->lock);
	free(u);
}

/*
 * Copies src into the fresh staged file dst, at most limit bytes (the
 * size a quota was checked against: the source may grow meanwhile).
 * *copied is what was copied.
 */
static int copy_content(int src, int dst, uint64_t limit, uint64_t *copied)
{
	off_t in = 0, out = 0;

	while ((uint64_t)in < limit) {
		uint64_t left = limit - (uint64_t)in;
		ssize_t n = copy_file_range(src, &in, dst, &out,
					    left > SSIZE_MAX ? SSIZE_MAX : (size_t)left, 0);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;	/* the source shrank */
	}
	*copied = (uint64_t)out;
	return 0;
}

/*
 * Creates the upload's staged file under its name, holding the content of
 * content_fd (-1: empty).  The name must be the upload's to use.
 * Returns 0 with *fd (read-write) and *size, or -errno.
 */
static int make_staged_file(struct upload *u, int content_fd, int *fd, uint64_t *size)
{
	struct stat from;
	int staged, ret = 0;

	*size = 0;
	unlinkat(u->dir_fd, u->name, 0);	/* a leftover of an earlier failure */
	staged = openat(u->dir_fd, u->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (staged < 0)
		return -errno;
	if (content_fd >= 0)
		ret = copy_content(content_fd, staged, UINT64_MAX, size);
	/*
	 * A copy of the artifact looks like it until written: an editor that
	 * opens the file to try it must not see it changed since it read it.
	 */
	if (ret == 0 && content_fd >= 0 && fstat(content_fd, &from) == 0)
		futimens(staged, (struct timespec[2]){ from.st_atim, from.st_mtim });
	if (ret < 0) {
		close(staged);
		unlinkat(u->dir_fd, u->name, 0);
		return ret;
	}
	*fd = staged;
	return 0;
}

/* Starts the sequential hash over a staged file of size bytes.  Upload locked. */
static void start_hash(struct upload *u, uint64_t size)
{
	/* Content copied in: the sequential hash cannot cover it. */
	u->hashed = size ? UINT64_MAX : 0;
	EVP_DigestInit_ex(u->hash, EVP_sha256(), NULL);
}

/*
 * Whether an upload is done with its name: close() returns before the
 * kernel releases the file, so an upload committed and not written since
 * is done, unless its staged file is still there to land.  A request's
 * never lands: done once committed.  Locked (either lock).
 */
static bool upload_done(const struct upload *u)
{
	return u->committed && !u->dirty && !(u->staged && u->run[0]);
}

/*
 * Takes the name from busy, the upload holding the one a new open asks
 * for, if it is done with it.  Returns 0 (busy no longer holds the name)
 * or -EBUSY.  Locked.
 */
static int take_over(struct promoter *p, struct upload *busy)
{
	if (!upload_done(busy))
		return -EBUSY;
	/* Its staged name is the newcomer's from now on; see promote_end_upload(). */
	if (busy->staged)
		p->staged_bytes -= busy->size;
	unregister(p, busy);
	return 0;
}

/*
 * Another open of a name being uploaded, that shares the upload: any open
 * of a temporary (SQLite opens its journal again, rsync sets times on its
 * temporary file by name), and an open of a file still being written by
 * the same process (SQLite opens its database again).  Returns 0 with
 * *out, or -ENOENT when there is none to share.
 */
static int reopen_upload(struct promoter *p, const char *run, const char *name,
			 bool truncate, pid_t opener, struct upload **out, struct stat *st)
{
	struct upload *u;
	int ret = 0;

	pthread_mutex_lock(&p->lock);
	sweep_parked(p);
	u = find_upload(p, run, name);
	if (u && !u->temporary && (!opener || u->opener != opener || upload_done(u)))
		u = NULL;
	if (u)
		u->refs++;
	pthread_mutex_unlock(&p->lock);
	if (!u)
		return -ENOENT;
	if (truncate)
		ret = promote_upload_truncate(u, 0);
	if (ret < 0) {
		upload_put(u);
		return ret;
	}
	if (fstat(u->fd, st) < 0)
		memset(st, 0, sizeof(*st));
	*out = u;
	return 0;
}

int promote_begin_upload(struct promoter *p, const char *run, const char *name,
			 bool truncate, pid_t opener, struct upload **out, struct stat *st)
{
	struct upload *u = NULL, *busy;
	int existing = -1, ret;
	const char *reason;

	ret = run ? names_check_upload(name, &reason) : names_check_artifact(name, &reason);
	if (ret < 0) {
		record(p, INDEX_ACTION_PROMOTE, run, name, -1, NULL, EINVAL, reason);
		return -EINVAL;
	}
	if (run && (ret = promote_check_run(p, run)) < 0) {
		record(p, INDEX_ACTION_PROMOTE, run, name, -1, NULL, -ret,
		       ret == -EACCES ? "the run belongs to another tenant" : "invalid run id");
		return ret;
	}
	if (run && reopen_upload(p, run, name, truncate, opener, out, st) == 0)
		return 0;
	u = calloc(1, sizeof(*u));
	if (!u)
		return -ENOMEM;
	u->promoter = p;
	u->fd = u->dir_fd = -1;
	u->refs = 1;
	u->opener = opener;
	u->temporary = run && names_is_temporary(name);
	pthread_mutex_init(&u->lock, NULL);
	snprintf(u->run, sizeof(u->run), "%s", run ? run : "");
	snprintf(u->name, sizeof(u->name), "%s", name);
	u->hash = EVP_MD_CTX_new();
	if (!u->hash || !EVP_DigestInit_ex(u->hash, EVP_sha256(), NULL)) {
		upload_free(u);
		return -ENOMEM;
	}
	if (run) {
		/* dd conv=notrunc into an existing artifact starts from its bytes. */
		if (!truncate) {
			char path[NAMES_ID_MAX + NAMES_FILE_MAX + 2];
			snprintf(path, sizeof(path), "%s/%s", run, name);
			int tenant_fd = store_open_tenant(p->view->store, p->view->client, O_PATH);
			if (tenant_fd >= 0) {
				existing = store_open_beneath(tenant_fd, path,
							      O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
				close(tenant_fd);
			}
		}
	} else {
		u->dir_fd = dup(p->requests_fd);
		if (u->dir_fd < 0) {
			upload_free(u);
			return -errno;
		}
	}

	ret = refresh_usage(p);
	pthread_mutex_lock(&p->lock);
	sweep_parked(p);
	if (ret == 0 && (busy = find_upload(p, run, name)))
		ret = busy->temporary ? -EBUSY : take_over(p, busy);	/* raced a first open */
	if (ret == 0 && run && over_quota(p, 0, 1))
		ret = -EDQUOT;
	if (ret == 0 && run) {
		/* Locked: promote_unstage_run() removes the dir under this lock. */
		u->dir_fd = store_make_dir(p->runs_fd, run, 0700, NULL);
		ret = u->dir_fd < 0 ? u->dir_fd : 0;
	}
	if (ret == 0)
		ret = make_staged_file(u, existing, &u->fd, &u->size);
	if (ret == 0) {
		u->from_artifact = existing >= 0;
		start_hash(u, u->size);
		u->staged = true;
		u->next = p->uploads;
		p->uploads = u;
		u->registered = true;
		p->staged_files++;
		p->staged_bytes += u->size;
	}
	pthread_mutex_unlock(&p->lock);
	if (existing >= 0)
		close(existing);
	if (ret < 0) {
		if (ret == -EBUSY || ret == -EDQUOT)
			record(p, INDEX_ACTION_PROMOTE, run, name, -1, NULL, -ret,
			       ret == -EBUSY ? "the file is already being uploaded" :
			       "the tenant's file quota is used up");
		upload_free(u);
		return ret;
	}
	if (fstat(u->fd, st) < 0)
		memset(st, 0, sizeof(*st));
	*out = u;
	return 0;
}

int promote_upload_fd(const struct upload *u)
{
	return u->fd;
}

/*
 * Accounts for the upload growing to new_size: -EDQUOT (and the upload
 * fails as a whole) when the tenant would go over its byte quota.
 */
static int reserve(struct upload *u, uint64_t new_size)
{
	struct promoter *p = u->promoter;
	int ret = 0;

	if (new_size <= u->size)
		return 0;
	pthread_mutex_lock(&p->lock);
	if (u->registered && u->run[0] && over_quota(p, new_size - u->size, 0))
		ret = -EDQUOT;
	if (ret == 0) {
		/* An unlinked temporary is no longer staged: its growth is not counted. */
		if (u->registered)
			p->staged_bytes += new_size - u->size;
		u->size = new_size;
	}
	pthread_mutex_unlock(&p->lock);
	if (ret == -EDQUOT && !u->failure) {
		u->failure = -EDQUOT;
		record(p, INDEX_ACTION_PROMOTE, u->run, u->name, (int64_t)new_size, NULL, EDQUOT,
		       "the tenant's byte quota would be exceeded");
	}
	return ret;
}

/* A request past PROMOTE_REQUEST_MAX fails as a whole: no cut document is read. */
static int fail_request_size(struct upload *u, uint64_t size)
{
	if (!u->failure) {
		u->failure = -EFBIG;
		record(u->promoter, INDEX_ACTION_PROMOTE, NULL, u->name, (int64_t)size, NULL, EFBIG,
		       "the request is larger than 1 MiB");
	}
	return -EFBIG;
}

/*
 * A write after a commit starts a new version from the committed bytes,
 * staged under the upload's name again.  The name is still ours: the
 * caller marked the upload dirty while it was registered.  A failure
 * fails the upload: what it would write could no longer land.  Upload
 * locked.
 */
static int restage(struct upload *u)
{
	struct promoter *p = u->promoter;
	int fd = -1, ret;
	uint64_t size;

	ret = make_staged_file(u, u->fd, &fd, &size);
	if (ret == 0 && dup3(fd, u->fd, O_CLOEXEC) < 0) {
		ret = -errno;
		unlinkat(u->dir_fd, u->name, 0);
	}
	if (fd >= 0)
		close(fd);
	if (ret < 0) {
		char reason[REASON_SIZE];

		snprintf(reason, sizeof(reason), "cannot stage the file again for a write "
			 "after its commit: %s", strerror(-ret));
		u->failure = -EIO;
		record(p, INDEX_ACTION_PROMOTE, u->run, u->name, -1, NULL, EIO, reason);
		return -EIO;
	}
	start_hash(u, size);
	pthread_mutex_lock(&p->lock);
	u->staged = true;
	u->size = size;
	p->staged_bytes += size;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/*
 * What every change of an upload's content does first: refuses a failed
 * upload, or one whose name a newer upload took; marks it dirty (from
 * then on no newer open takes the name); stages the committed file again
 * if need be; reserves growth to new_size against the quota.  Upload
 * locked.
 */
static int prepare_change(struct upload *u, uint64_t new_size)
{
	struct promoter *p = u->promoter;
	int ret = 0;

	if (u->failure)
		return u->failure;
	if (!u->run[0] && new_size > PROMOTE_REQUEST_MAX)
		return fail_request_size(u, new_size);
	if (u->temporary && !u->staged)
		return -EROFS;	/* renamed into its run: it is an artifact now */
	pthread_mutex_lock(&p->lock);
	if (u->registered || u->temporary || u->dropped)
		u->dirty = true;	/* an unlinked upload writes on, unseen */
	else
		ret = -EBUSY;	/* its name went to a newer upload */
	pthread_mutex_unlock(&p->lock);
	if (ret == 0 && !u->staged)
		ret = restage(u);
	if (ret == 0)
		ret = reserve(u, new_size);
	return ret;
}

/*
 * The commit's fsync must wait for every byte to reach the disk; started
 * as the bytes come, the disk works while the writer is still sending, and
 * the fsync at close only waits for the tail.  Asynchronous and advisory:
 * a failure here shows at the fsync.
 */
static void start_writeback(int fd, uint64_t offset, uint64_t len)
{
	const uint64_t chunk = WRITEBACK_CHUNK;
	uint64_t end = offset + len;

	if (offset / chunk == end / chunk)
		return;		/* no chunk boundary crossed */
	end -= end % chunk;
	sync_file_range(fd, (off64_t)(end - chunk), (off64_t)chunk, SYNC_FILE_RANGE_WRITE);
}

ssize_t promote_upload_write(struct upload *u, const void *buf, size_t size, off_t offset)
{
	ssize_t written;

	pthread_mutex_lock(&u->lock);
	written = prepare_change(u, (uint64_t)offset + size);
	if (written < 0)
		goto out;
	written = pwrite(u->fd, buf, size, offset);
	if (written < 0) {
		written = -errno;
		goto out;
	}
	start_writeback(u->fd, (uint64_t)offset, (uint64_t)written);
	if ((uint64_t)offset == u->hashed) {
		EVP_DigestUpdate(u->hash, buf, (size_t)written);
		u->hashed += (uint64_t)written;
	} else if ((uint64_t)offset + (uint64_t)written > u->hashed) {
		u->hashed = UINT64_MAX;	/* out of order: hash the file at commit */
	}
out:
	pthread_mutex_unlock(&u->lock);
	return written;
}

int promote_upload_truncate(struct upload *u, off_t size)
{
	int ret;

	if (size < 0)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	ret = prepare_change(u, (uint64_t)size);
	if (ret < 0)
		goto out;
	if (ftruncate(u->fd, size) < 0) {
		ret = -errno;
		goto out;
	}
	if ((uint64_t)size != u->hashed)
		start_hash(u, (uint64_t)size);
out:
	pthread_mutex_unlock(&u->lock);
	return ret;
}

int promote_set_file_attr(struct promoter *p, const char *run, const char *file,
			  const char *name, const char *value, size_t size)
{
	struct upload *u;
	char *copy;
	int ret;

	if (strcmp(name, "agent_id") != 0)
		return -EOPNOTSUPP;
	ret = copy_attr_value(value, size, &copy);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&p->lock);
	u = find_upload(p, run, file);
	if (u) {
		free(u->agent_id);
		u->agent_id = copy;
		copy = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(copy);
	return u ? 0 : -ENOENT;
}

/*
 * Lands a direct upload in its run under name (its own, or the one a
 * rename of a temporary gives it).  Upload locked.
 */
static int land_upload(struct upload *u, const char *name)
{
	struct promoter *p = u->promoter;
	char reason[REASON_SIZE] = "";
	struct landing l = { .run = u->run, .name = name };
	char *workflow_id = NULL, *user_directive = NULL, *agent_id = NULL;
	struct run_attrs *attrs;
	struct stat st;
	struct timespec now;
	int ret = 0;

	if (fstat(u->fd, &st) < 0 || (ret = fsync_fd(u->fd)) < 0) {
		ret = -EIO;
		snprintf(reason, REASON_SIZE, "cannot write the staged file: %s", strerror(errno));
		goto out;
	}
	l.size = (uint64_t)st.st_size;
	if (u->hashed == l.size) {
		unsigned char digest[EVP_MAX_MD_SIZE];
		EVP_MD_CTX *copy = EVP_MD_CTX_new();
		if (!copy || !EVP_MD_CTX_copy_ex(copy, u->hash)) {
			EVP_MD_CTX_free(copy);
			ret = -ENOMEM;
			goto out;
		}
		EVP_DigestFinal_ex(copy, digest, NULL);
		EVP_MD_CTX_free(copy);
		hex_digest(digest, l.sha256);
	} else if ((ret = hash_file(u->fd, l.sha256)) < 0) {
		snprintf(reason, REASON_SIZE, "cannot hash the staged file: %s", strerror(-ret));
		ret = -EIO;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	meta_format_time(now.tv_sec, now.tv_nsec, l.generated_at);
	/* Copied: a setxattr on promote/<run> or on the file may replace them meanwhile. */
	pthread_mutex_lock(&p->lock);
	attrs = find_run_attrs(p, u->run);
	workflow_id = copy_text(attrs && attrs->workflow_id ? attrs->workflow_id :
				p->options.workflow_id, &ret);
	user_directive = copy_text(attrs && attrs->user_directive ? attrs->user_directive :
				   p->options.user_directive, &ret);
	agent_id = copy_text(u->agent_id ? u->agent_id : p->options.agent_id, &ret);
	pthread_mutex_unlock(&p->lock);
	if (ret < 0)
		goto out;
	l.workflow_id = workflow_id;
	l.user_directive = user_directive;
	l.agent_id = agent_id;
	/*
	 * Let go of write access while the file is still in staging: closed
	 * for writing in the run dir, it would look to every watcher of the
	 * store (our own too) like a file rewritten in place, and have the
	 * whole run indexed again.  Reads and a later restage need no more.
	 */
	ret = reopen_fd(u->fd, O_RDONLY);
	if (ret == 0) {
		ret = land_file(p, u->dir_fd, u->name, &l, reason);
		if (ret < 0 && reopen_fd(u->fd, O_RDWR) < 0)
			u->failure = -EIO;	/* cannot write on: refuse, never lose */
	} else {
		snprintf(reason, REASON_SIZE, "cannot reopen the staged file: %s", strerror(-ret));
		ret = -EIO;
	}
	if (ret == 0) {
		pthread_mutex_lock(&p->lock);
		u->staged = false;	/* u->fd is now the artifact itself */
		p->staged_bytes -= u->size;
		pthread_mutex_unlock(&p->lock);
	}
out:
	free(workflow_id);
	free(user_directive);
	free(agent_id);
	record(p, INDEX_ACTION_PROMOTE, u->run, name, (int64_t)l.size,
	       ret == 0 ? l.sha256 : NULL, -ret, ret ? reason : NULL);
	return ret;
}

/*
 * After the copy: is the inode copied still the session's own file, and
 * its only link?  A hard link to someone else's file, dropped by the agent
 * just after the open (so the link count looked right), fails here: the
 * name no longer leads to it, or it has another link again.  Checked on
 * both sides of the name check, so a flip between them is caught too.
 */
static bool still_the_session_file(int out_fd, const char *name, int src)
{
	struct stat opened, named;
	int fd;

	if (fstat(src, &opened) < 0 || opened.st_nlink != 1)
		return false;
	fd = store_open_beneath(out_fd, name, O_PATH | O_NOFOLLOW, 0);
	if (fd < 0)
		return false;
	if (fstat(fd, &named) < 0 || named.st_ino != opened.st_ino ||
	    named.st_dev != opened.st_dev) {
		close(fd);
		return false;
	}
	close(fd);
	return fstat(src, &opened) == 0 && opened.st_nlink == 1;
}

/*
 * Copies one session output file into staging and lands it.  The agent
 * controls sessions/<run>/output/: only a regular file with one link is
 * taken, opened without following or waiting on anything.
 */
static int promote_session_file(struct promoter *p, const struct request *r,
				const char *name)
{
	char reason[REASON_SIZE] = "";
	char path[NAMES_ID_MAX + 32];
	struct landing l = { .run = r->run_id, .name = name };
	const char *why;
	struct timespec now;
	struct stat st;
	int out_fd = -1, src = -1, staged = -1, ret;
	uint64_t reserved = UINT64_MAX;
	char staged_name[64];

	if (names_check_artifact(name, &why) < 0) {
		snprintf(reason, REASON_SIZE, "file name %s", why);
		ret = -EINVAL;
		goto out;
	}
	ret = promote_check_run(p, r->run_id);
	if (ret < 0) {
		snprintf(reason, REASON_SIZE, ret == -EACCES ?
			 "the run belongs to another tenant" : "invalid run id");
		goto out;
	}
	snprintf(path, sizeof(path), "sessions/%s/output", r->run_id);
	out_fd = store_open_beneath(p->view->store->root_fd, path, O_PATH | O_DIRECTORY, 0);
	if (out_fd < 0) {
		ret = out_fd == -ENOENT ? -ENOENT : -EINVAL;
		snprintf(reason, REASON_SIZE, "no session output directory: %s", strerror(-out_fd));
		goto out;
	}
	src = store_open_regular(out_fd, name, O_RDONLY, &st);
	if (src < 0) {
		ret = src == -ENOENT ? -ENOENT : -EINVAL;
		snprintf(reason, REASON_SIZE, "cannot open the session file: %s",
			 src == -ELOOP ? "it is a symlink" :
			 src == -EINVAL ? "it is not a regular file" : strerror(-src));
		goto out;
	}
	if (st.st_nlink != 1) {
		ret = -EINVAL;
		snprintf(reason, REASON_SIZE, "the session file has other hard links");
		goto out;
	}
	/* Reserved as an upload in flight, so parallel requests add up. */
	ret = refresh_usage(p);
	pthread_mutex_lock(&p->lock);
	if (ret == 0 && over_quota(p, (uint64_t)st.st_size, 1))
		ret = -EDQUOT;
	if (ret == 0) {
		p->staged_bytes += (uint64_t)st.st_size;
		p->staged_files++;
		reserved = (uint64_t)st.st_size;
	}
	pthread_mutex_unlock(&p->lock);
	if (ret < 0) {
		snprintf(reason, REASON_SIZE, "the tenant's quota would be exceeded");
		goto out;
	}
	pthread_mutex_lock(&p->lock);
	snprintf(staged_name, sizeof(staged_name), "session.%lu", p->work_serial++);
	pthread_mutex_unlock(&p->lock);
	staged = openat(p->work_fd, staged_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (staged < 0 || (ret = copy_content(src, staged, (uint64_t)st.st_size, &l.size)) < 0 ||
	    (ret = fsync_fd(staged)) < 0 || (ret = hash_file(staged, l.sha256)) < 0) {
		snprintf(reason, REASON_SIZE, "cannot stage the session file: %s",
			 strerror(staged < 0 ? errno : -ret));
		ret = -EIO;
		goto out;
	}
	if (!still_the_session_file(out_fd, name, src)) {
		ret = -EINVAL;
		snprintf(reason, REASON_SIZE, "the session file was replaced while it was copied");
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	meta_format_time(now.tv_sec, now.tv_nsec, l.generated_at);
	l.agent_id = r->agent_id ? r->agent_id : p->options.agent_id;
	l.workflow_id = r->workflow_id ? r->workflow_id : p->options.workflow_id;
	l.user_directive = r->user_directive ? r->user_directive : p->options.user_directive;
	/* Closed while still in staging: see land_upload(). */
	close(staged);
	staged = -1;
	ret = land_file(p, p->work_fd, staged_name, &l, reason);
	if (ret < 0)
		unlinkat(p->work_fd, staged_name, 0);
out:
	if (staged >= 0) {
		close(staged);
		unlinkat(p->work_fd, staged_name, 0);	/* only failures get here */
	}
	if (src >= 0)
		close(src);
	if (out_fd >= 0)
		close(out_fd);
	if (reserved != UINT64_MAX) {
		pthread_mutex_lock(&p->lock);
		p->staged_bytes -= reserved;
		p->staged_files--;
		pthread_mutex_unlock(&p->lock);
	}
	record(p, INDEX_ACTION_PROMOTE, r->run_id, name, ret == 0 ? (int64_t)l.size : -1,
	       ret == 0 ? l.sha256 : NULL, -ret, ret ? reason : NULL);
	return ret;
}

/* Carries out a request document: each file in order, up to the first failure. */
static int commit_request(struct upload *u)
{
	struct promoter *p = u->promoter;
	char problem[REASON_SIZE] = "";
	struct request r;
	char *buf = NULL;
	struct stat st;
	size_t len;
	int ret;

	/* A request that cannot be read names no artifact: the request file stands in. */
	ret = store_read_file(u->dir_fd, u->name, PROMOTE_REQUEST_MAX, &buf, &len, &st);
	if (ret < 0) {
		record(p, INDEX_ACTION_PROMOTE, NULL, u->name, -1, NULL, -ret,
		       "cannot read the request");
		return ret;
	}
	ret = request_parse(buf, len, &r, problem, sizeof(problem));
	free(buf);
	if (ret < 0) {
		record(p, INDEX_ACTION_PROMOTE, r.run_id, u->name, -1, NULL, -ret, problem);
		goto out;
	}
	if (names_check_run(r.run_id, NULL) < 0) {
		ret = -EINVAL;
		record(p, INDEX_ACTION_PROMOTE, r.run_id, u->name, -1, NULL, EINVAL,
		       "the request's run_id is not a valid run id");
		goto out;
	}
	/* The same rules as for values set with setxattr. */
	if ((r.agent_id && check_attr_value(r.agent_id, strlen(r.agent_id)) < 0) ||
	    (r.workflow_id && check_attr_value(r.workflow_id, strlen(r.workflow_id)) < 0) ||
	    (r.user_directive && check_attr_value(r.user_directive, strlen(r.user_directive)) < 0)) {
		ret = -EINVAL;
		record(p, INDEX_ACTION_PROMOTE, r.run_id, u->name, -1, NULL, EINVAL,
		       "agent_id, workflow_id or user_directive is too long or not plain text");
		goto out;
	}
	for (size_t i = 0; i < r.n_files && ret == 0; i++)
		ret = promote_session_file(p, &r, r.files[i]);
out:
	request_release(&r);
	return ret;
}

/* Commits what the upload holds now.  Upload locked. */
static int commit_upload(struct upload *u)
{
	struct promoter *p = u->promoter;
	int ret = u->run[0] ? land_upload(u, u->name) : commit_request(u);

	pthread_mutex_lock(&p->lock);
	u->dirty = false;
	u->committed = true;
	pthread_mutex_unlock(&p->lock);
	u->outcome = ret;
	return ret;
}

void promote_abandon_upload(struct upload *u, const char *reason)
{
	pthread_mutex_lock(&u->lock);
	if (!u->failure) {
		u->failure = -EINTR;
		record(u->promoter, INDEX_ACTION_PROMOTE, u->run[0] ? u->run : NULL, u->name,
		       (int64_t)u->size, NULL, EINTR, reason);
	}
	pthread_mutex_unlock(&u->lock);
}

int promote_commit_upload(struct upload *u)
{
	int ret;

	pthread_mutex_lock(&u->lock);
	/*
	 * Only what was written since the last commit is committed: a shell
	 * opens, dup2()s and closes the first descriptor before it writes a
	 * byte, and that close must not promote an empty file.  A close with
	 * nothing new (another copy of the descriptor) reports the last
	 * commit's outcome, so no close() says 0 of a file that did not land.
	 */
	if (u->failure)
		ret = u->failure;
	else if (u->temporary || u->dropped)
		ret = 0;	/* lands only when renamed; or unlinked in flight */
	else if (u->dirty)
		ret = commit_upload(u);
	else
		ret = u->outcome;
	pthread_mutex_unlock(&u->lock);
	return ret;
}

void promote_end_upload(struct upload *u)
{
	struct promoter *p = u->promoter;
	bool gone;

	pthread_mutex_lock(&u->lock);
	/*
	 * What no close committed: a write after the last flush, or a new
	 * file nothing was written to (touch).  An artifact opened for
	 * writing and left as it was (an editor's probe) is no new version,
	 * and one unlinked in flight lands nothing.
	 */
	if (!u->dropped && !u->temporary && !u->failure &&
	    (u->dirty || (!u->committed && !u->from_artifact)))
		commit_upload(u);	/* logged and audited; no one left to tell */
	pthread_mutex_lock(&p->lock);
	/*
	 * A staged name taken over by a newer upload is no longer ours
	 * (take_over() settled its bytes).  Removed under the lock: once
	 * unregistered, the name may be staged anew at any moment.  A
	 * temporary stays, parked, for what its writer does next.
	 */
	if (u->refs == 1 && !u->temporary && u->registered)
		discard_registered(p, u);	/* a request never remains either */
	gone = drop_reference(u);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_unlock(&u->lock);
	if (gone)
		upload_free(u);
}

int promote_discard_upload(struct promoter *p, const char *run, const char *name)
{
	struct upload *u;

	pthread_mutex_lock(&p->lock);
	u = find_upload(p, run, name);
	if (u)
		u->refs++;
	pthread_mutex_unlock(&p->lock);
	if (u) {
		/* Under its lock: a close committing it lands first, or nothing does. */
		pthread_mutex_lock(&u->lock);
		pthread_mutex_lock(&p->lock);
		if (u->registered) {
			u->dropped = u->staged;	/* its writer's bytes go to the unlinked file */
			discard_registered(p, u);
		}
		pthread_mutex_unlock(&p->lock);
		pthread_mutex_unlock(&u->lock);
		upload_put(u);
		return 0;
	}
	/* zip opens its archive to try it, then unlinks it: an artifact by then. */
	return names_is_temporary(name) ? -ENOENT : promote_delete_file(p, run, name);
}

/*
 * Renames the temporary u to another temporary name: the staged file and
 * the upload together.  Whatever temporary held that name goes, as rename()
 * replaces a file; an upload in flight under it is -EBUSY.  Upload locked.
 */
static int rename_temporary(struct upload *u, const char *to, bool no_replace)
{
	struct promoter *p = u->promoter;
	struct upload *target;
	bool gone = false;
	int ret = 0;

	pthread_mutex_lock(&p->lock);
	target = find_upload(p, u->run, to);
	if (target && no_replace)
		ret = -EEXIST;
	else if (target && target->refs)
		ret = -EBUSY;
	else if (target)
		gone = discard_registered(p, target);
	if (ret == 0 && renameat(u->dir_fd, u->name, u->dir_fd, to) < 0)
		ret = -errno;
	if (ret == 0)
		snprintf(u->name, sizeof(u->name), "%s", to);
	pthread_mutex_unlock(&p->lock);
	if (gone)
		upload_free(target);
	return ret;
}

/*
 * Lands the temporary u as the artifact to: what a rename onto a final
 * name means, durable when it returns.  An upload in flight under to is
 * -EBUSY, a done one yields (as to a new open).  Upload locked.
 */
static int land_temporary(struct upload *u, const char *to, bool no_replace)
{
	struct promoter *p = u->promoter;
	struct upload *target;
	struct stat st;
	int ret = 0, run_fd;

	if (no_replace) {
		run_fd = open_own_run(p, u->run);
		if (run_fd >= 0 && fstatat(run_fd, to, &st, AT_SYMLINK_NOFOLLOW) == 0)
			ret = -EEXIST;
		if (run_fd >= 0)
			close(run_fd);
	}
	pthread_mutex_lock(&p->lock);
	target = ret == 0 ? find_upload(p, u->run, to) : NULL;
	if (target)
		ret = no_replace ? -EEXIST : take_over(p, target);
	pthread_mutex_unlock(&p->lock);
	if (ret < 0)
		return ret;
	ret = land_upload(u, to);
	if (ret < 0)
		return ret;
	/* Its staged file is the artifact now (land_upload() settled the bytes). */
	pthread_mutex_lock(&p->lock);
	unregister(p, u);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/* The move of an entry to another name. */
struct entry_move {
	const char *from, *to;
};

/* Drops the entries of move->to and gives move->from's the name move->to. */
static int move_entry(struct promoter *p, struct meta_run *meta, const void *ctx)
{
	const struct entry_move *move = ctx;
	struct meta_artifact *entry;

	if (!meta->run_id)
		return 1;	/* no metadata.json: nothing to move */
	remove_entry(meta, move->to);
	entry = meta_find_artifact(meta, move->from);
	return entry ? replace_string(&entry->filename, move->to) : 1;
}

/*
 * Renames the artifact from of the run to to, file and entry together
 * (what a tool that wrote a final-looking temporary name, such as
 * mkstemp's "tmpXXXXXXXX", then renames means), recorded by an intent so
 * that a crash between the two is completed at the next mount.  Its
 * SHA-256 goes with it.  Returns 0 or -errno with reason set.
 */
static int rename_artifact(struct promoter *p, const char *run, const char *from,
			   const char *to, bool no_replace, char *reason)
{
	struct index_attrs attrs = { 0 };
	struct metafile_version version;
	struct entry_move move = { from, to };
	struct meta_run meta = { 0 };
	const char *sha256;
	char intent[64] = "";
	struct stat st;
	int run_fd, ret;

	run_fd = open_own_run(p, run);
	if (run_fd < 0) {
		snprintf(reason, REASON_SIZE, "no such run");
		return run_fd == -ELOOP ? -ENOENT : run_fd;
	}
	store_lock(run_fd, LOCK_EX);
	if (fstatat(run_fd, from, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
		ret = -ENOENT;
		snprintf(reason, REASON_SIZE, "no such artifact to rename");
		goto out;
	}
	if (no_replace && faccessat(run_fd, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		ret = -EEXIST;
		snprintf(reason, REASON_SIZE, "the new name exists");
		goto out;
	}
	/* Refuse before anything moves if metadata.json cannot be kept valid. */
	ret = read_metadata(run_fd, &meta, &version, reason);
	if (ret < 0 && ret != -ENOENT)
		goto out;
	index_get_file_attrs(p->view->index, p->view->client, run, from, &attrs);
	sha256 = index_attrs_value(&attrs, "sha256");
	ret = write_intent_doc(p, json_pack("{s:s, s:s, s:s}", "run", run, "name", to,
					    "renamed_from", from), intent);
	if (ret == 0 && (renameat(run_fd, from, run_fd, to) < 0 || fsync(run_fd) < 0))
		ret = -errno;
	if (ret < 0) {
		snprintf(reason, REASON_SIZE, "cannot rename the file: %s", strerror(-ret));
		ret = -EIO;
		goto out;
	}
	if (version.present)
		ret = edit_metadata(p, run_fd, &meta, &version, move_entry, &move, reason);
	if (ret < 0) {
		intent[0] = '\0';	/* renamed: the intent finishes the entry at next mount */
		goto out;
	}
	view_index_run(p->view, run, run_fd, VIEW_SYNC_FORCE, NULL);
	if (sha256)
		index_set_sha256(p->view->index, p->view->client, run, to, (int64_t)st.st_ino,
				 st.st_size, store_time_ns(&st.st_mtim), sha256);
out:
	if (intent[0])
		unlinkat(p->work_fd, intent, 0);
	flock(run_fd, LOCK_UN);
	close(run_fd);
	index_attrs_release(&attrs);
	meta_run_release(&meta);
	return ret;
}

/* rename_artifact() for promote/<run>/, logged and audited. */
static int promote_rename_artifact(struct promoter *p, const char *run, const char *from,
				   const char *to, bool no_replace)
{
	char reason[REASON_SIZE] = "", done[REASON_SIZE];
	int ret;

	if (names_is_temporary(to) || names_is_temporary(from) ||
	    names_check_artifact(from, NULL) < 0) {
		ret = names_is_temporary(from) ? -ENOENT : -EPERM;
		snprintf(reason, REASON_SIZE, "an artifact is renamed to an artifact name only");
	} else {
		ret = rename_artifact(p, run, from, to, no_replace, reason);
	}
	if (ret == -ENOENT)
		return ret;	/* nothing there: a plain rename() error, not an event */
	snprintf(done, sizeof(done), "renamed from %s", from);
	record(p, INDEX_ACTION_PROMOTE, run, to, -1, NULL, -ret, ret ? reason : done);
	return ret;
}

int promote_rename_upload(struct promoter *p, const char *run, const char *from,
			  const char *to, bool no_replace)
{
	const char *reason;
	struct upload *u;
	int ret;

	if (names_check_upload(to, &reason) < 0) {
		record(p, INDEX_ACTION_PROMOTE, run, to, -1, NULL, EINVAL, reason);
		return -EINVAL;
	}
	pthread_mutex_lock(&p->lock);
	u = find_upload(p, run, from);
	if (u)
		u->refs++;
	pthread_mutex_unlock(&p->lock);
	if (u && !u->temporary) {
		/*
		 * Renamed before its writer closed it (Python's
		 * NamedTemporaryFile, then os.replace): what was written lands
		 * now, under its name, then moves like any artifact.
		 */
		ret = promote_commit_upload(u);
		pthread_mutex_lock(&p->lock);
		if (ret == 0)
			ret = take_over(p, u);
		pthread_mutex_unlock(&p->lock);
		upload_put(u);
		if (ret < 0)
			return ret;
		u = NULL;
	}
	if (!u)
		return promote_rename_artifact(p, run, from, to, no_replace);
	pthread_mutex_lock(&u->lock);
	if (u->failure)
		ret = u->failure;
	else if (!u->registered || strcmp(u->name, from) != 0)
		ret = -ENOENT;	/* unlinked or renamed meanwhile */
	else if (names_is_temporary(to))
		ret = rename_temporary(u, to, no_replace);
	else
		ret = land_temporary(u, to, no_replace);
	pthread_mutex_unlock(&u->lock);
	upload_put(u);
	return ret;
}

int promote_refuse_directory(struct promoter *p, const char *run, const char *name)
{
	char path[NAMES_FILE_MAX + 2];

	snprintf(path, sizeof(path), "%s/", name);
	record(p, INDEX_ACTION_PROMOTE, run, path, -1, NULL, EPERM,
	       "a directory: runs are flat, only files can be promoted into them");
	return -EPERM;
}

int promote_stat_upload(struct promoter *p, const char *run, const char *name,
			struct stat *st)
{
	int ret = -ENOENT;

	pthread_mutex_lock(&p->lock);
	struct upload *u = find_upload(p, run, name);
	if (u && u->staged)
		ret = fstat(u->fd, st) < 0 ? -errno : 0;
	pthread_mutex_unlock(&p->lock);
	return ret;
}

int promote_open_staged(struct promoter *p, const char *run, const char *name)
{
	int fd = -ENOENT;

	pthread_mutex_lock(&p->lock);
	struct upload *u = find_upload(p, run, name);
	if (u && u->staged) {
		char proc[64];
		/* Its own open file description: the writer's offset stays its own. */
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", u->fd);
		fd = open(proc, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			fd = -errno;
	}
	pthread_mutex_unlock(&p->lock);
	return fd;
}

int promote_list_uploads(struct promoter *p, const char *run,
			 int (*fn)(void *ctx, const char *name, const struct stat *st),
			 void *ctx)
{
	struct upload *u;
	struct stat st;
	int ret = 0;

	pthread_mutex_lock(&p->lock);
	for (u = p->uploads; u && ret == 0; u = u->next)
		if (u->staged && strcmp(u->run, run ? run : "") == 0 && fstat(u->fd, &st) == 0)
			ret = fn(ctx, u->name, &st);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

/* --- deletion ------------------------------------------------------------- */

/*
 * Opens the tenant's run dir and locks it for a deletion of name (NULL:
 * the run).  Returns the fd, or -EPERM (audited) under -o nodelete, -ENOENT.
 */
static int lock_run_to_delete(struct promoter *p, const char *run, const char *name)
{
	int run_fd;

	if (p->options.no_delete) {
		record(p, INDEX_ACTION_DELETE, run, name, -1, NULL, EPERM,
		       "deletion is disabled on this mount");
		return -EPERM;
	}
	run_fd = open_own_run(p, run);
	if (run_fd < 0)
		return run_fd == -ELOOP ? -ENOENT : run_fd;
	store_lock(run_fd, LOCK_EX);
	return run_fd;
}

/* Drops the entries of the file named ctx: 1 when there are none. */
static int drop_entry(struct promoter *p, struct meta_run *meta, const void *name)
{
	return remove_entry(meta, name) ? 0 : 1;
}

int promote_delete_file(struct promoter *p, const char *run, const char *name)
{
	char reason[REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	int run_fd, ret;

	run_fd = lock_run_to_delete(p, run, name);
	if (run_fd < 0)
		return run_fd;
	/* The entry goes first: a crash then leaves a file without entry, not the reverse. */
	if (strcmp(name, NAMES_METADATA_FILE) != 0) {
		ret = read_metadata(run_fd, &meta, &version, reason);
		if (ret == 0)
			ret = edit_metadata(p, run_fd, &meta, &version, drop_entry, name, reason);
		if (ret == -EIO)
			/* The tenant asked for the file to go; the metadata is not ours to fix. */
			log_warning("client %s run %s file %s: deleting the file, leaving its "
				    "metadata.json as it is: %s", p->view->client, run, name, reason);
		if (ret == -ENOMEM || (ret < 0 && ret != -ENOENT && ret != -EIO))
			goto out;
	}
	if (unlinkat(run_fd, name, 0) < 0) {
		ret = -errno;
		snprintf(reason, REASON_SIZE, "cannot remove the file: %s", strerror(-ret));
		goto out;
	}
	ret = fsync_fd(run_fd);
out:
	flock(run_fd, LOCK_UN);
	close(run_fd);
	meta_run_release(&meta);
	view_sync_run(p->view, run, VIEW_SYNC_FORCE, NULL);
	record(p, INDEX_ACTION_DELETE, run, name, -1, NULL, -ret, ret ? reason : NULL);
	return ret;
}

int promote_delete_run(struct promoter *p, const char *run)
{
	char reason[REASON_SIZE] = "";
	struct dirent *entry;
	int tenant_fd = -1, run_fd, ret = 0;
	DIR *dir = NULL;

	run_fd = lock_run_to_delete(p, run, NULL);
	if (run_fd < 0)
		return run_fd;
	ret = store_open_dir(run_fd, &dir);
	if (ret < 0)
		goto out;
	/* rmdir's promise: nothing the tenant can see is left in it. */
	while ((entry = readdir(dir)))
		if (store_entry_type(dir, entry) == DT_REG) {
			ret = -ENOTEMPTY;
			goto out;
		}
	closedir(dir);
	dir = NULL;
	tenant_fd = store_open_tenant(p->view->store, p->view->client, O_RDONLY);
	if (tenant_fd < 0) {
		ret = tenant_fd;
		goto out;
	}
	ret = store_remove_tree(tenant_fd, run);
	if (ret == 0)
		ret = fsync_fd(tenant_fd);
	if (ret == 0)
		promote_unstage_run(p, run);	/* promote/<run> goes with the run */
	if (ret < 0)
		snprintf(reason, REASON_SIZE, "cannot remove the run directory: %s", strerror(-ret));
out:
	if (dir)
		closedir(dir);
	if (tenant_fd >= 0)
		close(tenant_fd);
	flock(run_fd, LOCK_UN);
	close(run_fd);
	view_sync_run(p->view, run, VIEW_SYNC_FORCE, NULL);
	if (ret != -ENOTEMPTY)
		record(p, INDEX_ACTION_DELETE, run, NULL, -1, NULL, -ret, ret ? reason : NULL);
	return ret;
}

/* --- repairs ----------------------------------------------------------------- */

/* How long a run must have been left alone before its metadata is repaired. */
#define REPAIR_GRACE_MS 2000
/* agent_id of an entry rebuilt from the file alone. */
#define UNKNOWN_AGENT "unknown"

/* A regular file of the run that metadata.json has no entry for. */
struct orphan {
	struct meta_artifact entry;	/* what to add for it */
	bool from_index;	/* entry as artifactfs promoted it, else from stat */
};

struct repair {
	struct orphan *orphans;
	size_t count;
};

static void repair_release(struct repair *r)
{
	for (size_t i = 0; i < r->count; i++)
		meta_artifact_release(&r->orphans[i].entry);
	free(r->orphans);
}

/*
 * The entry of a file with none: as the index remembers it where this
 * daemon promoted the file (an entry another writer dropped), else from
 * the file itself, with the agent unknown and generated_at its mtime.
 */
static int make_orphan_entry(struct promoter *p, const char *run, const char *name,
			     const struct stat *st, struct orphan *orphan)
{
	struct index_attrs attrs = { 0 };
	const char *agent, *generated, *type;
	char mtime[META_TIME_SIZE];
	int ret = 0;

	index_get_file_attrs(p->view->index, p->view->client, run, name, &attrs);
	agent = index_attrs_value(&attrs, "agent_id");
	generated = index_attrs_value(&attrs, "generated_at");
	type = index_attrs_value(&attrs, "content_type");
	orphan->from_index = agent && generated && type;
	if (!orphan->from_index) {
		meta_format_time(st->st_mtim.tv_sec, st->st_mtim.tv_nsec, mtime);
		agent = UNKNOWN_AGENT;
		generated = mtime;
		type = mime_type_of(p->mime, name);
	}
	orphan->entry = (struct meta_artifact){
		.filename = copy_text(name, &ret),
		.agent_id = copy_text(agent, &ret),
		.generated_at = copy_text(generated, &ret),
		.content_type = copy_text(type, &ret),
		.has_size_bytes = true,
		.size_bytes = (uint64_t)st->st_size,
	};
	index_attrs_release(&attrs);
	return ret;
}

/*
 * Finds the run's files without an entry, and when the newest change to
 * them or to metadata.json was (*changed_ns, CLOCK_REALTIME).
 */
static int find_orphans(struct promoter *p, const char *run, int run_fd,
			const struct meta_run *meta, const struct metafile_version *version,
			struct repair *r, int64_t *changed_ns)
{
	struct view_file_list files = { 0 };
	int ret;

	*changed_ns = version->ctime_ns;
	ret = view_list_run_files(run_fd, &files);
	for (size_t i = 0; ret == 0 && i < files.count; i++) {
		const char *name = files.files[i].filename;
		struct stat st;

		if (meta_find_artifact(meta, name) || fstatat(run_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (r->count % 16 == 0) {
			struct orphan *grown = realloc(r->orphans, (r->count + 16) * sizeof(*grown));
			if (!grown) {
				ret = -ENOMEM;
				break;
			}
			r->orphans = grown;
		}
		memset(&r->orphans[r->count], 0, sizeof(*r->orphans));
		ret = make_orphan_entry(p, run, name, &st, &r->orphans[r->count++]);
		if (store_time_ns(&st.st_ctim) > *changed_ns)
			*changed_ns = store_time_ns(&st.st_ctim);
	}
	view_file_list_release(&files);
	return ret;
}

/* Adds the entries the files still lack; the write folds duplicates. */
static int add_orphan_entries(struct promoter *p, struct meta_run *meta, const void *ctx)
{
	const struct repair *r = ctx;
	size_t added = 0;

	if (!meta->run_id)
		return 1;	/* metadata.json went meanwhile: not ours to make up */
	for (size_t i = 0; i < r->count; i++) {
		const struct orphan *o = &r->orphans[i];
		struct meta_artifact *grown;
		int ret = 0;

		if (meta_find_artifact(meta, o->entry.filename))
			continue;	/* its writer added it after all */
		grown = realloc(meta->artifacts, (meta->n_artifacts + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		meta->artifacts = grown;
		grown[meta->n_artifacts] = (struct meta_artifact){
			.filename = copy_text(o->entry.filename, &ret),
			.agent_id = copy_text(o->entry.agent_id, &ret),
			.generated_at = copy_text(o->entry.generated_at, &ret),
			.content_type = copy_text(o->entry.content_type, &ret),
			.has_size_bytes = true,
			.size_bytes = o->entry.size_bytes,
		};
		meta->n_artifacts++;
		if (ret < 0)
			return ret;
		added++;
	}
	return added || meta->n_duplicates ? 0 : 1;
}

/* Whether the repair written put o's entry in *meta (and not its own writer). */
static bool orphan_added(const struct meta_run *meta, const struct orphan *o)
{
	const struct meta_artifact *a = meta_find_artifact(meta, o->entry.filename);

	return a && a->agent_id && strcmp(a->agent_id, o->entry.agent_id) == 0 &&
	       a->generated_at && strcmp(a->generated_at, o->entry.generated_at) == 0;
}

unsigned int promote_repair_run(struct promoter *p, const char *run)
{
	char reason[REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct repair r = { 0 };
	struct timespec now;
	int64_t changed_ns, quiet_ms;
	unsigned int again = 0;
	int run_fd, ret;

	run_fd = open_own_run(p, run);
	if (run_fd < 0)
		return 0;
	store_lock(run_fd, LOCK_EX);
	/*
	 * Only a file that follows the schema is mended; one that is absent
	 * (deleted on purpose, or a run being made) is not made up.
	 */
	ret = metafile_read(run_fd, false, &meta, &version, NULL, 0);
	if (ret == -EAGAIN)
		again = METAFILE_SETTLE_MS / 4;
	if (ret < 0)
		goto out;
	ret = find_orphans(p, run, run_fd, &meta, &version, &r, &changed_ns);
	if (ret < 0 || (!r.count && !meta.n_duplicates))
		goto out;
	/* A writer that copied a file in may be about to add its entry: give it time. */
	clock_gettime(CLOCK_REALTIME, &now);
	quiet_ms = (store_time_ns(&now) - changed_ns) / 1000000;
	if (quiet_ms < REPAIR_GRACE_MS) {
		again = (unsigned int)(REPAIR_GRACE_MS - (quiet_ms > 0 ? quiet_ms : 0));
		goto out;
	}
	ret = edit_metadata(p, run_fd, &meta, &version, add_orphan_entries, &r, reason);
	if (ret < 0) {
		record(p, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, -ret, reason);
		goto out;
	}
	view_index_run(p->view, run, run_fd, VIEW_SYNC_FORCE, NULL);
	for (size_t i = 0; i < r.count; i++)
		if (orphan_added(&meta, &r.orphans[i]))
			record(p, INDEX_ACTION_REPAIR, run, r.orphans[i].entry.filename,
			       (int64_t)r.orphans[i].entry.size_bytes, NULL, 0,
			       r.orphans[i].from_index ?
			       "entry put back as this daemon promoted the file" :
			       "entry rebuilt from the file (agent unknown)");
	if (meta.n_duplicates) {
		snprintf(reason, REASON_SIZE, "%zu duplicate entries folded into the last of "
			 "their name", meta.n_duplicates);
		record(p, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, 0, reason);
	}
out:
	flock(run_fd, LOCK_UN);
	close(run_fd);
	meta_run_release(&meta);
	repair_release(&r);
	return again;
}

int promote_get_usage(struct promoter *p, struct promote_usage *usage)
{
	int ret = index_get_usage(p->view->index, p->view->client,
				  &usage->used_bytes, &usage->used_files);

	usage->quota_bytes = p->options.quota_bytes;
	usage->quota_files = p->options.quota_files;
	return ret;
}

/* --- promote/.status ------------------------------------------------------ */

struct status_text {
	char *text;
	size_t len, capacity;
};

static int append_status(void *ctx, const struct index_audit *row)
{
	struct status_text *out = ctx;
	char time_text[META_TIME_SIZE];
	json_t *line;
	char *dumped;
	size_t len;

	meta_format_time(row->time_ns / 1000000000, (long)(row->time_ns % 1000000000), time_text);
	line = json_pack("{s:s, s:s, s:s?, s:s?, s:s, s:s?}",
			 "time", time_text,
			 "action", index_action_name(row->action),
			 "run", row->run, "file", row->filename,
			 "result", row->error ? errno_name(row->error) : "ok",
			 "reason", row->reason ? row->reason :
				   row->action == INDEX_ACTION_PROMOTE ? "promoted" : "deleted");
	if (!line)
		return -ENOMEM;
	if (row->sha256)
		json_object_set_new(line, "sha256", json_string(row->sha256));
	if (row->size >= 0)
		json_object_set_new(line, "size", json_integer(row->size));
	dumped = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(line);
	if (!dumped)
		return -ENOMEM;
	len = strlen(dumped);
	if (out->len + len + 2 > out->capacity) {
		size_t bigger = (out->capacity + len + 2) * 2;
		char *grown = realloc(out->text, bigger);
		if (!grown) {
			free(dumped);
			return -ENOMEM;
		}
		out->text = grown;
		out->capacity = bigger;
	}
	memcpy(out->text + out->len, dumped, len);
	out->len += len;
	out->text[out->len++] = '\n';
	out->text[out->len] = '\0';
	free(dumped);
	return 0;
}

int promote_format_status(struct promoter *p, char **text, size_t *len)
{
	struct status_text out = { 0 };
	int ret;

	ret = index_list_audit(p->view->index, p->view->client, PROMOTE_STATUS_LINES,
			       append_status, &out);
	if (ret < 0) {
		free(out.text);
		return ret;
	}
	*text = out.text ? out.text : strdup("");
	*len = out.len;
	return *text ? 0 : -ENOMEM;
}

/* --- set-up, recovery, tear-down -------------------------------------------- */

/* Completes the entry of a rename an intent describes, if the file was renamed. */
static void recover_rename(struct promoter *p, json_t *doc)
{
	char reason[REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct entry_move move;
	const char *run;
	int run_fd;

	if (json_unpack(doc, "{s:s, s:s, s:s}", "run", &run, "name", &move.to,
			"renamed_from", &move.from) < 0 || names_check_run(run, NULL) < 0 ||
	    names_check_artifact(move.to, NULL) < 0 || names_check_artifact(move.from, NULL) < 0)
		return;
	run_fd = open_own_run(p, run);
	if (run_fd < 0)
		return;
	store_lock(run_fd, LOCK_EX);
	if (faccessat(run_fd, move.from, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
	    faccessat(run_fd, move.to, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
	    read_metadata(run_fd, &meta, &version, reason) == 0 &&
	    edit_metadata(p, run_fd, &meta, &version, move_entry, &move, reason) == 0) {
		view_index_run(p->view, run, run_fd, VIEW_SYNC_FORCE, NULL);
		log_warning("client %s run %s file %s: completed a rename from %s cut short by "
			    "a crash", p->view->client, run, move.to, move.from);
	}
	flock(run_fd, LOCK_UN);
	close(run_fd);
	meta_run_release(&meta);
}

/* Completes the metadata of a landing an intent describes, if it landed. */
static void recover_intent(struct promoter *p, int work_fd, const char *name)
{
	char reason[REASON_SIZE] = "", sha[SHA256_HEX_SIZE];
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct landing l = { 0 };
	json_error_t error;
	const char *generated_at, *sha256;
	json_int_t size = -1;
	struct stat st;
	json_t *doc;
	char *buf;
	size_t len;
	int run_fd, fd;

	if (store_read_file(work_fd, name, 64 * 1024, &buf, &len, &st) < 0)
		return;
	doc = json_loadb(buf, len, 0, &error);
	free(buf);
	if (doc && json_object_get(doc, "renamed_from")) {
		recover_rename(p, doc);
		goto out;
	}
	if (!doc || json_unpack(doc, "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}",
				"run", &l.run, "name", &l.name, "agent_id", &l.agent_id,
				"workflow_id", &l.workflow_id, "user_directive", &l.user_directive,
				"generated_at", &generated_at, "sha256", &sha256, "size", &size) < 0 ||
	    names_check_run(l.run, NULL) < 0 || names_check_artifact(l.name, NULL) < 0)
		goto out;
	snprintf(l.generated_at, sizeof(l.generated_at), "%s", generated_at);
	snprintf(l.sha256, sizeof(l.sha256), "%s", sha256);
	l.size = (uint64_t)size;
	run_fd = open_own_run(p, l.run);
	if (run_fd < 0)
		goto out;
	store_lock(run_fd, LOCK_EX);
	/* Only the very content the intent promised is recorded. */
	fd = store_open_beneath(run_fd, l.name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size == l.size && hash_file(fd, sha) == 0 &&
	    strcmp(sha, l.sha256) == 0 &&
	    read_metadata_for_landing(p, run_fd, l.run, &meta, &version, reason) == 0 &&
	    record_landing(p, run_fd, &meta, &version, &l, reason) == 0) {
		index_landing(p, run_fd, &meta, &version, &l);
		log_warning("client %s run %s file %s: completed a promotion cut short by a crash",
			    p->view->client, l.run, l.name);
	}
	if (fd >= 0)
		close(fd);
	flock(run_fd, LOCK_UN);
	close(run_fd);
out:
	meta_run_release(&meta);
	json_decref(doc);
}

/* Finishes what a dead instance left (its intents), then removes it. */
static void reclaim_instance(struct promoter *p, int staging_fd, const char *name)
{
	struct dirent *entry;
	int fd, work_fd;
	DIR *dir;

	fd = store_open_beneath(staging_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (fd < 0)
		return;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		close(fd);	/* alive: another daemon serving this tenant */
		return;
	}
	work_fd = store_open_beneath(fd, "work", O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (work_fd >= 0 && store_open_dir(work_fd, &dir) == 0) {
		while ((entry = readdir(dir)))
			if (strncmp(entry->d_name, "intent.", 7) == 0)
				recover_intent(p, work_fd, entry->d_name);
		closedir(dir);
	}
	if (work_fd >= 0)
		close(work_fd);
	if (store_remove_tree(staging_fd, name) < 0)
		log_warning("client %s: cannot remove stale staging %s", p->view->client, name);
	close(fd);
}

static int make_staging(struct promoter *p)
{
	static const char *const path[] = { STORE_PRIVATE_DIR, "staging" };
	struct dirent *entry;
	int fd, next, ret;
	DIR *dir;

	fd = dup(p->view->store->root_fd);
	for (size_t i = 0; fd >= 0 && i < 2; i++) {
		next = store_make_dir(fd, path[i], 0700, NULL);
		close(fd);
		fd = next;
	}
	if (fd >= 0) {
		next = store_make_dir(fd, p->view->client, 0700, NULL);
		close(fd);
		fd = next;
	}
	if (fd < 0) {
		log_error("client %s: cannot make the staging directory %s/%s/%s: %s",
			  p->view->client, p->view->store->path, STAGING_DIR, p->view->client,
			  strerror(-fd));
		return fd;
	}
	snprintf(p->instance, sizeof(p->instance), "%d.%lld", getpid(),
		 (long long)clock_ns(CLOCK_REALTIME));
	p->instance_fd = store_make_dir(fd, p->instance, 0700, NULL);
	if (p->instance_fd < 0 || flock(p->instance_fd, LOCK_EX | LOCK_NB) < 0) {
		ret = p->instance_fd < 0 ? p->instance_fd : -errno;
		goto fail;
	}
	p->runs_fd = store_make_dir(p->instance_fd, "runs", 0700, NULL);
	p->requests_fd = store_make_dir(p->instance_fd, "requests", 0700, NULL);
	p->work_fd = store_make_dir(p->instance_fd, "work", 0700, NULL);
	if (p->runs_fd < 0 || p->requests_fd < 0 || p->work_fd < 0) {
		ret = -EIO;
		goto fail;
	}
	/* Then what dead instances left: finishing their commits needs our work dir. */
	if (store_open_dir(fd, &dir) == 0) {
		while ((entry = readdir(dir)))
			if (entry->d_name[0] != '.' && strcmp(entry->d_name, p->instance) != 0)
				reclaim_instance(p, fd, entry->d_name);
		closedir(dir);
	}
	close(fd);
	return 0;
fail:
	log_error("client %s: cannot make the staging directory: %s", p->view->client,
		  strerror(-ret));
	close(fd);
	return ret;
}

int promote_open(struct view *view, const struct promote_options *options,
		 struct promoter **out)
{
	struct promoter *p;
	int ret;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->view = view;
	p->options = *options;
	p->instance_fd = p->runs_fd = p->requests_fd = p->work_fd = -1;
	pthread_mutex_init(&p->lock, NULL);
	ret = mime_table_load("/etc/mime.types", &p->mime);
	if (ret == 0)
		ret = make_staging(p);
	if (ret < 0) {
		promote_close(p);
		return ret;
	}
	*out = p;
	return 0;
}

void promote_close(struct promoter *p)
{
	int staging_fd;
	char path[sizeof(STAGING_DIR) + NAMES_ID_MAX + 2];

	if (!p)
		return;
	/* Only parked temporaries are left once every open file was released. */
	while (p->uploads) {
		struct upload *u = p->uploads;

		if (u->refs) {
			promote_end_upload(u);
		} else {
			discard_registered(p, u);
			upload_free(u);
		}
	}
	for (size_t i = 0; i < METADATA_CACHE_RUNS; i++)
		meta_run_release(&p->metadata_cache[i].meta);
	while (p->run_attrs) {
		struct run_attrs *next = p->run_attrs->next;
		free(p->run_attrs->workflow_id);
		free(p->run_attrs->user_directive);
		free(p->run_attrs);
		p->run_attrs = next;
	}
	if (p->runs_fd >= 0)
		close(p->runs_fd);
	if (p->requests_fd >= 0)
		close(p->requests_fd);
	if (p->work_fd >= 0)
		close(p->work_fd);
	/* A clean stop leaves no staging behind. */
	snprintf(path, sizeof(path), "%s/%s", STAGING_DIR, p->view->client);
	staging_fd = store_open_beneath(p->view->store->root_fd, path, O_RDONLY | O_DIRECTORY, 0);
	if (staging_fd >= 0 && p->instance[0])
		store_remove_tree(staging_fd, p->instance);
	if (staging_fd >= 0)
		close(staging_fd);
	if (p->instance_fd >= 0)
		close(p->instance_fd);
	mime_table_free(p->mime);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
