/*
 * promote.h - putting artifacts into a tenant's store, and taking them out.
 *
 * An upload is staged in STORE/.artifactfs/staging/<client>/<instance>/ (on
 * the store's file system, so the final rename is atomic) and committed
 * when its writer closes it: the file is fsync'd and renamed into the run,
 * metadata.json is rewritten atomically under a lock on the run dir, the
 * index is updated and an audit row written.  An intent record written
 * before the rename lets the next mount finish a commit a crash cut short.
 * A temporary name (names_is_temporary()) lands instead when renamed onto
 * a final name: that rename is the commit.
 *
 * Everything here is FUSE-free and keyed by the view's tenant.  Functions
 * return 0 or a negative errno; every refusal that reaches a user is
 * logged once and audited, naming tenant, run and file.
 */
#ifndef ARTIFACTFS_PROMOTE_H
#define ARTIFACTFS_PROMOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "promote_options.h"
#include "view.h"

/* Longest value accepted for an artifact attribute set through the mount. */
#define PROMOTE_ATTR_MAX 4096
/* Largest request document accepted. */
#define PROMOTE_REQUEST_MAX (1024 * 1024)
/* The outcome file in promote/, and how many audit rows it shows. */
#define PROMOTE_STATUS_FILE ".status"
#define PROMOTE_STATUS_LINES 1000

struct promoter;
struct upload;

/*
 * Prepares promotion for view's tenant: makes this instance's staging
 * directory, finishes or discards what instances that died left staged,
 * and reads the MIME table.  Returns 0 and *out, or -errno (logged).
 */
int promote_open(struct view *view, const struct promote_options *options,
		 struct promoter **out);

/* Reads what may have changed on the system (/etc/mime.types) again.  Returns 0 or -errno. */
int promote_reload(struct promoter *promoter);

/* Discards what is still staged and frees the promoter.  NULL is a no-op. */
void promote_close(struct promoter *promoter);

/* Whether promote/ offers run at all (-o run= names one run only). */
bool promote_serves_run(const struct promoter *promoter, const char *run);

/*
 * Whether the tenant may promote into run: a valid run id, allowed by
 * only_run, and not another tenant's (by the index, or by a run dir of
 * that id in another tenant's area).  Returns 0, -EINVAL, -EACCES.
 */
int promote_check_run(struct promoter *promoter, const char *run);

/*
 * The staging directory of promote/<run>, made if needed after
 * promote_check_run().  *st describes it.  With create false, -ENOENT
 * when it was never made.  Returns 0 or -errno.
 */
int promote_stage_run(struct promoter *promoter, const char *run, bool create,
		      struct stat *st);

/* Removes an idle promote/<run>.  Returns 0, -EBUSY, -ENOENT, -errno. */
int promote_unstage_run(struct promoter *promoter, const char *run);

/*
 * Removes promote/<run>'s staging once idle, as promote_unstage_run(),
 * unless run was made with mkdir on this mount and the store does not
 * have it (stored false): such a run is shown from its staging until its
 * first file lands.  A staging an upload made goes either way: the
 * store has the run (its files are listed from there), or the run was
 * deleted behind the mount's back.  Returns 0 (removed), 1 (kept: made
 * with mkdir), -EBUSY (uploads in it), -ENOENT (none), -errno.
 */
int promote_tidy_run(struct promoter *promoter, const char *run, bool stored);

/*
 * Calls fn for each run staged on this mount (promote/ lists them).
 * Returns 0 or -errno.
 */
int promote_list_staged_runs(struct promoter *promoter,
			     int (*fn)(void *ctx, const char *run, const struct stat *st),
			     void *ctx);

/*
 * Sets "workflow_id" or "user_directive" for files later promoted into a
 * new run.  Returns 0, -EINVAL (bad name or value), -E2BIG, -EOPNOTSUPP.
 */
int promote_set_run_attr(struct promoter *promoter, const char *run,
			 const char *name, const char *value, size_t size);

/*
 * Starts an upload: run/name (a direct upload) or, with run NULL, a
 * request file called name.  Unless truncate is set, the staged file
 * starts with the content of the existing artifact, if any.  opener is
 * the process (thread group id) opening it, 0 when unknown: a direct
 * upload still being written is shared with another open by the same
 * process (SQLite opens its database again), never with another
 * process's; a temporary is shared with every open.
 * Returns 0 and *out with *st describing the staged file; -EINVAL (bad
 * name), -EACCES, -EBUSY (being uploaded by another process), -EDQUOT,
 * -errno.
 */
int promote_begin_upload(struct promoter *promoter, const char *run, const char *name,
			 bool truncate, pid_t opener, struct upload **out, struct stat *st);

/* The staged file, for reads and fstat. */
int promote_upload_fd(const struct upload *upload);

/*
 * Lets the kernel write the upload itself (FUSE passthrough): returns a
 * new open file of the staged file, for reading and writing, to hand to
 * the kernel (the caller closes its own descriptor once the kernel holds
 * it), or -EPERM where every write must be seen: a request (its size
 * limit), a temporary (refused once its rename landed it), a tenant with
 * a byte quota (checked per write), or -errno.  From then on the upload
 * is hashed whole at each commit, and each commit (close) first looks at
 * the file for what the kernel wrote.  Once landed, a file the kernel
 * writes again through a descriptor still open is the artifact itself,
 * changed in place until the next close lands it again (docs/promote.md).
 */
int promote_pass_through(struct upload *upload);

/*
 * Writes to the staged file, and calls answer(context, result) as soon as
 * the write is taken: result is the bytes written, or -EDQUOT (the upload
 * then fails as a whole), -errno.  What is left is done before it returns,
 * while the writer sends its next bytes: a large aligned write's bytes
 * reach the staged file then (a failure there fails the upload at its
 * commit, as a write-back error fails close()), and buf is folded into
 * the upload's SHA-256.  answer is called exactly once.
 */
void promote_upload_write(struct upload *upload, const void *buf, size_t size, off_t offset,
			  void (*answer)(void *context, ssize_t result), void *context);

/* Truncates or extends the staged file.  Returns 0, -EDQUOT, -errno. */
int promote_upload_truncate(struct upload *upload, off_t size);

/*
 * Sets attribute name ("agent_id") of the upload in flight for run/file.
 * Returns 0, -ENOENT (none in flight), -EINVAL, -E2BIG, -EOPNOTSUPP.
 */
int promote_set_file_attr(struct promoter *promoter, const char *run, const char *file,
			  const char *name, const char *value, size_t size);

/*
 * Commits what was written since the last commit (the writer's close):
 * a direct upload lands in its run, a request promotes each file it
 * names from sessions/, in order, stopping at the first failure.
 * Returns 0 or the failure's -errno (logged and audited).
 */
int promote_commit_upload(struct upload *upload);

/*
 * Fails an upload whose writer died (audited with reason): nothing of it
 * is committed, now or at its end.
 */
void promote_abandon_upload(struct upload *upload, const char *reason);

/*
 * Ends an upload (the last close): commits what is still uncommitted
 * (the result can then only be logged and audited), removes the staged
 * file, frees the upload.
 */
void promote_end_upload(struct upload *upload);

/*
 * unlink() in promote/<run>/: an upload of that name (a temporary, or one
 * still being written) is dropped, staged file and all, and never lands;
 * whoever still has it open writes on into nothing.  Without one, the
 * artifact of that name is deleted as by promote_delete_file() (zip opens
 * its archive to try it, then unlinks it).  Returns 0, -ENOENT, or
 * promote_delete_file()'s -errno.
 */
int promote_discard_upload(struct promoter *p, const char *run, const char *name);

/*
 * rename() inside promote/<run>/.  Of a temporary: onto another temporary
 * name it only moves; onto a final name it lands, as a close lands an
 * upload, durable when this returns (that rename is the promotion).  Of a
 * file promoted there under a final-looking name (mkstemp's
 * "tmpXXXXXXXX", zip's "ziXXXXXX"; one still open lands first): the
 * artifact is renamed, file and entry together, recorded by an intent.
 * no_replace: RENAME_NOREPLACE.  Returns 0, -ENOENT, -EBUSY (to is being
 * uploaded), -EEXIST, -EINVAL (bad name), -EPERM (an artifact renamed to
 * a temporary name), or the landing's -errno (logged and audited).
 */
int promote_rename_upload(struct promoter *p, const char *run, const char *from,
			  const char *to, bool no_replace);

/*
 * mkdir in promote/<run>/: runs are flat in RARO's layout, so a tree
 * (tar -x, cp -r, rsync -r) lands its files and not its directories.
 * Logs and audits the refusal, naming the path.  Returns -EPERM.
 */
int promote_refuse_directory(struct promoter *p, const char *run, const char *name);

/*
 * Waits until every write answered so far to the upload (upload, or if
 * NULL the one in flight for run/name) is in its staged file.  A write is
 * answered before its bytes reach the staged file (promote_upload_write());
 * whatever reads the staged file through another way than this module
 * (a FUSE read of an open file, lseek) calls this first.
 */
void promote_settle_upload(struct promoter *promoter, struct upload *upload, const char *run,
			   const char *name);

/*
 * Looks up the upload in flight for run/name (run NULL: a request).
 * Returns 0 with *st describing the staged file, or -ENOENT.
 */
int promote_stat_upload(struct promoter *promoter, const char *run, const char *name,
			struct stat *st);

/* A new read-only fd on the staged file of run/name, or -ENOENT. */
int promote_open_staged(struct promoter *promoter, const char *run, const char *name);

/* Calls fn for each upload in flight into run (NULL: the requests). */
int promote_list_uploads(struct promoter *promoter, const char *run,
			 int (*fn)(void *ctx, const char *name, const struct stat *st),
			 void *ctx);

/*
 * Deletes an artifact (its file, its metadata.json entry, its index row),
 * or metadata.json itself.  Returns 0, -EPERM (nodelete), -ENOENT, -errno.
 */
int promote_delete_file(struct promoter *promoter, const char *run, const char *name);

/*
 * Deletes a run whose artifacts are all gone (rm -r): what the view hides
 * in it goes too.  Returns 0, -EPERM, -ENOTEMPTY, -ENOENT, -errno.
 */
int promote_delete_run(struct promoter *promoter, const char *run);

/*
 * Mends what writers that take no lock (the kernel-server) leave in a
 * run's metadata.json: each regular file without an entry gets one (as
 * this daemon promoted it, from the index, where it did; else from the
 * file: agent_id "unknown", generated_at its mtime, content_type by its
 * name), duplicate entries fold into the last of their name.  Only once
 * metadata.json and those files have gone unchanged for a grace period
 * (a writer that copied a file in is about to add its entry), and never
 * to a metadata.json that is absent or does not follow the schema.  Each
 * repair is audited (action "repair") and logged.
 * Returns 0 (done, nothing to do, or failed and audited), or how many
 * milliseconds to wait before the run may be repaired.
 */
unsigned int promote_repair_run(struct promoter *p, const char *run);

/* The tenant's quotas (0: none) and what it stores, from the index. */
struct promote_usage {
	uint64_t quota_bytes, quota_files;
	uint64_t used_bytes, used_files;
};

/* Fills *usage.  Returns 0 or -errno (-EIO from the index). */
int promote_get_usage(struct promoter *promoter, struct promote_usage *usage);

/*
 * Formats promote/.status: the tenant's last PROMOTE_STATUS_LINES audit
 * rows as JSON lines, oldest first.  *text is malloc'd.  Returns 0 or -errno.
 */
int promote_format_status(struct promoter *promoter, char **text, size_t *len);

#endif
