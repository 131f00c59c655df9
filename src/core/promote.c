/*
 * promote.c - promote/: uploads staged while their writers write them and
 * landed when they close; temporaries and renames in promote/<run>/;
 * request documents that promote session files; quotas; the mount's
 * deletion rule.
 *
 * Staging lives in the writer's instance (writer.h): runs/<run>/<name>
 * for direct uploads, requests/<name> for request documents.  A commit is
 * a landing (landing.h): the staged file is fsync'd and hashed here, then
 * renamed into the run with its metadata.json entry under the run lock.
 * Deletions (deletion.h) and repairs (check.h) are the core's; this file
 * adds what only a mount has: who may delete, when to repair.
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

#include "clock.h"
#include "audit.h"
#include "check.h"
#include "deletion.h"
#include "landing.h"
#include "metaedit.h"
#include "log.h"
#include "meta.h"
#include "names.h"
#include "promote.h"
#include "request.h"
#include "writer.h"


/* Run attributes set on promote/<run> before its first file lands. */
struct run_attrs {
	char run[NAMES_ID_MAX + 1];
	char *workflow_id;
	char *user_directive;
	/* Staged by mkdir promote/<run> on this mount: kept while the store lacks the run. */
	bool made;
	struct run_attrs *next;
};

/* Uploads are sent to the disk in chunks of this many bytes as they come. */
#define WRITEBACK_CHUNK (8u << 20)

/*
 * Writes from this size up, on offsets and sizes aligned to
 * DIRECT_WRITE_ALIGN, bypass the page cache (write_staged()); larger than
 * DIRECT_WRITE_MAX, which no FUSE request is, they go buffered.
 */
#define DIRECT_WRITE_MIN (64u << 10)
#define DIRECT_WRITE_MAX (1u << 20)
#define DIRECT_WRITE_ALIGN 4096u
/*
 * How long a new upload of a name waits for the release of a passthrough
 * upload of it that was closed (take_name()).
 */
#define RELEASE_WAIT_MS 1000
/* Direct writes of one upload in flight at once, each with its buffer. */
#define DIRECT_BUFFERS 8

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
 *    committed, spending, dropped and size (written under both locks, so
 *    either one is enough to read them).  agent_id is copied under it,
 *    never kept.
 *  - fd keeps its number from the first stage to upload_free(): a new
 *    open file is dup3()'d onto it, so readers of that number (FUSE
 *    reads, fstat in listings) never meet a closed or reused one.
 *  - direct_fd is a second, O_DIRECT open file of the staged file for
 *    large aligned writes (write_staged()); it exists only while the
 *    staged file does, and is closed before the file lands, or anything
 *    is put in place of fd.  Upload's lock.
 *  - refs (promoter's lock) counts who holds the struct: each open file
 *    that writes it, and a rename or unlink at work on it.  The last one
 *    frees it, unless it is a temporary that still holds its name: that
 *    one stays, parked, for a rename, a reopen, an unlink, the idle limit
 *    or the end of the mount.  Whoever finds an upload under the
 *    promoter's lock and lets go of the lock takes a reference first.
 *  - A write is answered as soon as it is taken; what is left of it is
 *    done behind the writer's back, so the writer sends its next bytes
 *    meanwhile: a large aligned write's direct write to the staged file
 *    (from one of the upload's aligned buffers), and the fold of a
 *    sequential write into the running SHA-256 (see
 *    promote_upload_write()).  hash_end (upload's lock) is where the
 *    sequential writes handed to the hash end; they fold in that order.
 *    behind_lock guards behind (writes answered, not yet done), hashed
 *    (where the folded bytes end), the buffers' busy flags and
 *    behind_error; the thread whose write starts at hashed folds, with
 *    no lock held.  Whatever reads the staged file or its size, resets,
 *    copies or frees the hash, or closes direct_fd first waits for
 *    behind to reach 0 (settle_behind()); under the upload's lock no new
 *    write can be taken meanwhile.
 * Lock order: an upload's lock, then the promoter's, then an upload's
 * behind_lock (which is never held across I/O).
 */
struct upload {
	struct promoter *promoter;
	struct upload *next;
	pthread_mutex_t lock;
	char run[NAMES_ID_MAX + 1];	/* "" for a request */
	char name[NAMES_FILE_MAX + 1];
	int fd;			/* the staged file; after a commit, the artifact */
	int dir_fd;		/* where it is staged */
	int direct_fd;		/* fd opened O_DIRECT, -1: not yet, or closed */
	bool direct_refused;	/* the file system refused O_DIRECT: buffered only */
	uint64_t direct_end;	/* end of the direct writes taken since the last settle */
	uint64_t size;		/* apparent size, as the quota counts it */
	bool dirty;		/* written since the last commit */
	bool committed;		/* committed at least once */
	bool spending;		/* a request whose commit has begun: no longer listed */
	bool registered;	/* in the promoter's list, holding its name */
	bool staged;		/* the staged name exists (not yet renamed away) */
	int failure;		/* sticky -errno: the upload can no longer commit */
	int outcome;		/* 0 or -errno of the last commit */
	bool temporary;		/* a temporary name: lands only when renamed */
	pid_t opener;		/* the process that first opened it, 0 if unknown */
	bool dropped;		/* unlinked before it landed: written on into nothing */
	bool from_artifact;	/* staged from the artifact's bytes: unwritten, nothing new */
	/*
	 * The kernel writes the staged file itself (FUSE passthrough), unseen:
	 * a commit looks at the file for what changed (seen_size, seen_mtime:
	 * the file as last looked at), and hashes it whole.  Upload's lock;
	 * never unset.  See promote_pass_through().
	 */
	bool passthrough;
	bool closed;		/* a close() (commit) came: the open reached its writer */
	uint64_t seen_size;
	struct timespec seen_mtime;
	unsigned int refs;
	int64_t parked_ns;	/* refs fell to 0 then (CLOCK_MONOTONIC) */
	char *agent_id;
	/* SHA-256 of a sequential write, so a plain copy is hashed once. */
	EVP_MD_CTX *hash;
	uint64_t hash_end;	/* UINT64_MAX: not sequential, hashed at commit */
	/* What answered writes still do; see above. */
	pthread_mutex_t behind_lock;
	pthread_cond_t behind_moved;
	unsigned int behind;
	uint64_t hashed;
	int behind_error;	/* sticky -errno of a direct write that failed */
	void *direct_buffers[DIRECT_BUFFERS];	/* DIRECT_WRITE_MAX bytes each */
	bool direct_busy[DIRECT_BUFFERS];
};

struct promoter {
	struct writer *writer;	/* staging, options, landings */
	struct view *view;	/* the writer's */
	const struct promote_options *options;	/* the writer's */
	/*
	 * Guards uploads (the list and the fields struct upload names),
	 * run_attrs, and the staged and used totals.  Held for memory
	 * updates and cheap directory calls only, never across a copy or an
	 * fsync.
	 */
	pthread_mutex_t lock;
	pthread_cond_t released;	/* an upload's reference was dropped (take_name()) */
	struct upload *uploads;
	struct run_attrs *run_attrs;
	uint64_t staged_bytes;
	uint64_t staged_files;
	/* The tenant's stored bytes and files, from the index, for quotas. */
	uint64_t used_bytes;
	uint64_t used_files;
};


static int refresh_usage(struct promoter *p);

/* --- small helpers ------------------------------------------------------- */

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

/* One log line and one audit row for view's tenant: see audit_record(). */
static void record(struct promoter *p, enum index_action action, const char *run,
		   const char *name, int64_t size, const char *sha256, int error,
		   const char *reason)
{
	audit_record(p->view, action, run, name, size, sha256, error, reason);
}

bool promote_serves_run(const struct promoter *p, const char *run)
{
	return !p->options->only_run || strcmp(run, p->options->only_run) == 0;
}

int promote_check_run(struct promoter *p, const char *run)
{
	if (names_check_run(run, NULL) < 0)
		return -EINVAL;
	if (!promote_serves_run(p, run))
		return -EACCES;
	return landing_check_run(p->writer, run);
}

/*
 * Lands a staged file and, on success, refreshes the usage quotas count.
 * Returns 0 or -errno with reason set.
 */
static int land_file(struct promoter *p, int staged_dir, const char *staged_name,
		     const struct landing *l, char *reason)
{
	int ret = landing_land_file(p->writer, staged_dir, staged_name, l, reason);

	if (ret == 0)
		refresh_usage(p);
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

/* run's attributes, made empty if it has none.  NULL: out of memory.  Locked. */
static struct run_attrs *get_run_attrs(struct promoter *p, const char *run)
{
	struct run_attrs *attrs = find_run_attrs(p, run);

	if (attrs)
		return attrs;
	attrs = calloc(1, sizeof(*attrs));
	if (!attrs)
		return NULL;
	snprintf(attrs->run, sizeof(attrs->run), "%s", run);
	attrs->next = p->run_attrs;
	p->run_attrs = attrs;
	return attrs;
}

/*
 * Reads the tenant's usage from the index (when a quota needs it).  Done
 * when an upload starts, not on each write: writes only add to staged_bytes.
 */
static int refresh_usage(struct promoter *p)
{
	uint64_t bytes = 0, files = 0;
	int ret;

	if (!p->options->quota_bytes && !p->options->quota_files)
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
	return (p->options->quota_bytes &&
		p->used_bytes + p->staged_bytes + bytes > p->options->quota_bytes) ||
	       (p->options->quota_files &&
		p->used_files + p->staged_files + files > p->options->quota_files);
}

int promote_stage_run(struct promoter *p, const char *run, bool create, struct stat *st)
{
	struct run_attrs *attrs;
	int fd, ret;

	if (!create) {
		if (fstatat(p->writer->runs_fd, run, st, AT_SYMLINK_NOFOLLOW) < 0)
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
	/* Locked: a tidy in between would take the staging for one an upload left. */
	pthread_mutex_lock(&p->lock);
	attrs = get_run_attrs(p, run);
	fd = attrs ? store_make_dir(p->writer->runs_fd, run, 0700, NULL) : -ENOMEM;
	if (fd >= 0)
		attrs->made = true;
	pthread_mutex_unlock(&p->lock);
	if (fd < 0)
		return fd;
	ret = fstat(fd, st) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

/*
 * Removes run's staging if no upload is in it.  Locked: an upload
 * starting meanwhile would stage into a removed dir.
 */
static int unstage(struct promoter *p, const char *run)
{
	struct run_attrs *attrs;

	for (struct upload *u = p->uploads; u; u = u->next)
		if (strcmp(u->run, run) == 0)
			return -EBUSY;
	if (unlinkat(p->writer->runs_fd, run, AT_REMOVEDIR) < 0)
		return -errno;
	attrs = find_run_attrs(p, run);
	if (attrs)
		attrs->made = false;
	return 0;
}

int promote_unstage_run(struct promoter *p, const char *run)
{
	int ret;

	pthread_mutex_lock(&p->lock);
	ret = unstage(p, run);
	pthread_mutex_unlock(&p->lock);
	return ret;
}

int promote_tidy_run(struct promoter *p, const char *run, bool stored)
{
	struct run_attrs *attrs;
	int ret;

	pthread_mutex_lock(&p->lock);
	attrs = find_run_attrs(p, run);
	ret = !stored && attrs && attrs->made ? 1 : unstage(p, run);
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

	ret = store_open_dir(p->writer->runs_fd, &dir);
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
	attrs = get_run_attrs(p, run);
	if (!attrs) {
		pthread_mutex_unlock(&p->lock);
		free(copy);
		return -ENOMEM;
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
	pthread_cond_broadcast(&u->promoter->released);
	if (--u->refs > 0)
		return false;
	if (u->registered && u->temporary) {
		u->parked_ns = clock_ns(CLOCK_MONOTONIC);
		return false;
	}
	return !u->registered;
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

/*
 * Gives back a reference taken on an upload found under the lock.  Each
 * open file holds one, so the last one means every open file of it was
 * released meanwhile, and that release found it held: a non-temporary
 * upload is then discarded here as the release would have done (what
 * was committed has landed; what failed must not keep its name busy).
 */
static void upload_put(struct upload *u)
{
	struct promoter *p = u->promoter;
	bool gone;

	pthread_mutex_lock(&p->lock);
	if (u->refs == 1 && !u->temporary && u->registered)
		discard_registered(p, u);
	gone = drop_reference(u);
	pthread_mutex_unlock(&p->lock);
	if (gone)
		upload_free(u);
}

/* Discards the temporaries nobody has held for the idle limit.  Locked. */
static void sweep_parked(struct promoter *p)
{
	unsigned int idle = p->options->temporary_idle;
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

/*
 * Waits until every answered write is done (see struct upload).  With
 * the upload's lock held, or, where only the staged file is read, the
 * promoter's.
 */
static void settle_behind(struct upload *u)
{
	pthread_mutex_lock(&u->behind_lock);
	while (u->behind)
		pthread_cond_wait(&u->behind_moved, &u->behind_lock);
	pthread_mutex_unlock(&u->behind_lock);
}

/*
 * A direct write that failed after its write was answered fails the
 * upload, as a write-back error fails fsync() and close(): its bytes are
 * not in the staged file.  Upload locked, settled.
 */
static void take_behind_error(struct upload *u)
{
	int error;

	pthread_mutex_lock(&u->behind_lock);
	error = u->behind_error;
	pthread_mutex_unlock(&u->behind_lock);
	if (!error || u->failure)
		return;
	u->failure = error;
	record(u->promoter, INDEX_ACTION_PROMOTE, u->run[0] ? u->run : NULL, u->name,
	       (int64_t)u->size, NULL, -error, "a write to the staged file failed after it "
	       "was acknowledged");
}

/* Closes the O_DIRECT open file of the staged file.  Upload locked. */
static void close_direct(struct upload *u)
{
	settle_behind(u);
	if (u->direct_fd >= 0)
		close(u->direct_fd);
	u->direct_fd = -1;
}

static void upload_free(struct upload *u)
{
	close_direct(u);	/* a write answered before the release may still be behind */
	for (int i = 0; i < DIRECT_BUFFERS; i++)
		free(u->direct_buffers[i]);
	if (u->fd >= 0)
		close(u->fd);
	if (u->dir_fd >= 0)
		close(u->dir_fd);
	EVP_MD_CTX_free(u->hash);
	free(u->agent_id);
	pthread_cond_destroy(&u->behind_moved);
	pthread_mutex_destroy(&u->behind_lock);
	pthread_mutex_destroy(&u->lock);
	free(u);
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
		ret = store_copy_range(content_fd, staged, UINT64_MAX, size);
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
	settle_behind(u);
	/* Content copied in, or written unseen: the sequential hash cannot cover it. */
	u->hash_end = size || u->passthrough ? UINT64_MAX : 0;
	pthread_mutex_lock(&u->behind_lock);
	u->hashed = 0;
	pthread_mutex_unlock(&u->behind_lock);
	EVP_DigestInit_ex(u->hash, EVP_sha256(), NULL);
}

/*
 * Whether an upload committed and not written since is still open: one
 * the kernel writes itself may be written again at any moment, unseen,
 * into the artifact it landed as; a newer upload of the name must wait
 * for its release (take_name()).  Locked (either lock).
 */
static bool awaits_release(const struct upload *u)
{
	return u->passthrough && u->refs > 0;
}

/*
 * Whether an upload is done with its name: close() returns before the
 * kernel releases the file, so an upload committed and not written since
 * is done, unless its staged file is still there to land.  A request's
 * never lands: done once committed.  Locked (either lock).
 */
static bool upload_done(const struct upload *u)
{
	return u->committed && !u->dirty && !(u->staged && u->run[0]) && !awaits_release(u);
}

/*
 * Unregisters an upload done with its name but for awaits_release(): its
 * staged name is another upload's from now on (see promote_end_upload()),
 * and what its writer still writes fails.  Locked.
 */
static void give_up_name(struct promoter *p, struct upload *u)
{
	if (u->staged)
		p->staged_bytes -= u->size;
	unregister(p, u);
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
	give_up_name(p, busy);
	return 0;
}

/*
 * Frees run/name for a new upload: takes it from an upload done with it
 * (raced a first open, or closed).  A passthrough upload closed but not
 * yet released is waited for, RELEASE_WAIT_MS at most: the kernel sends
 * the release after close() has returned, and refuses a new open of the
 * file while the old one's backing file is attached.  Returns 0 or
 * -EBUSY.  Locked.
 */
static int take_name(struct promoter *p, const char *run, const char *name)
{
	struct timespec deadline;
	struct upload *busy;
	int ret;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_nsec += (RELEASE_WAIT_MS % 1000) * 1000000L;
	deadline.tv_sec += RELEASE_WAIT_MS / 1000 + deadline.tv_nsec / 1000000000L;
	deadline.tv_nsec %= 1000000000L;
	while ((busy = find_upload(p, run, name))) {
		if (busy->temporary)
			return -EBUSY;
		ret = take_over(p, busy);
		if (ret == 0 || !busy->committed || busy->dirty || !awaits_release(busy))
			return ret;
		if (pthread_cond_timedwait(&p->released, &p->lock, &deadline) == ETIMEDOUT)
			return -EBUSY;
	}
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
	settle_behind(u);	/* the size it opens with counts the writes behind */
	if (fstat(u->fd, st) < 0)
		memset(st, 0, sizeof(*st));
	*out = u;
	return 0;
}

int promote_begin_upload(struct promoter *p, const char *run, const char *name,
			 bool truncate, pid_t opener, struct upload **out, struct stat *st)
{
	struct upload *u = NULL;
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
	u->fd = u->dir_fd = u->direct_fd = -1;
	u->refs = 1;
	u->opener = opener;
	u->temporary = run && names_is_temporary(name);
	pthread_mutex_init(&u->lock, NULL);
	pthread_mutex_init(&u->behind_lock, NULL);
	pthread_cond_init(&u->behind_moved, NULL);
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
		u->dir_fd = dup(p->writer->requests_fd);
		if (u->dir_fd < 0) {
			upload_free(u);
			return -errno;
		}
	}

	ret = refresh_usage(p);
	pthread_mutex_lock(&p->lock);
	sweep_parked(p);
	if (ret == 0)
		ret = take_name(p, run, name);
	if (ret == 0 && run && over_quota(p, 0, 1))
		ret = -EDQUOT;
	if (ret == 0 && run) {
		/* Locked: promote_unstage_run() removes the dir under this lock. */
		u->dir_fd = store_make_dir(p->writer->runs_fd, run, 0700, NULL);
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

int promote_pass_through(struct upload *u)
{
	struct promoter *p = u->promoter;
	char proc[32], link[48];
	struct stat st;
	int fd = -EPERM, error;

	pthread_mutex_lock(&u->lock);
	/*
	 * Every write of a request, a temporary and a tenant with a byte
	 * quota must be seen: checked against its limit, or refused once its
	 * rename landed it.
	 */
	if (!u->run[0] || u->temporary || p->options->quota_bytes || u->failure)
		goto out;
	/*
	 * The kernel opens the file again for each open it passes through,
	 * by the path of the descriptor handed to it, and each of those
	 * closes is an IN_CLOSE_WRITE to that path's directory: for the
	 * staged name, the run's once it landed, where every watcher of the
	 * store (ours too) would take it for the artifact rewritten in place
	 * and index the run again.  So the kernel gets a name of its own,
	 * unlinked at once: its directory is staging, which no one watches.
	 */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", u->fd);
	snprintf(link, sizeof(link), "passthrough.%" PRIxPTR, (uintptr_t)u);
	unlinkat(u->dir_fd, link, 0);	/* a leftover of a crash */
	if (linkat(AT_FDCWD, proc, u->dir_fd, link, AT_SYMLINK_FOLLOW) < 0) {
		fd = -errno;
		goto out;
	}
	fd = openat(u->dir_fd, link, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	error = errno;
	unlinkat(u->dir_fd, link, 0);
	if (fd < 0) {
		fd = -error;
		goto out;
	}
	if (!u->passthrough) {
		settle_behind(u);
		if (fstat(fd, &st) < 0) {
			error = errno;
			close(fd);
			fd = -error;
			goto out;
		}
		u->passthrough = true;
		u->hash_end = UINT64_MAX;
		u->seen_size = (uint64_t)st.st_size;
		u->seen_mtime = st.st_mtim;
	}
out:
	pthread_mutex_unlock(&u->lock);
	return fd;
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
	close_direct(u);	/* it would write to the file landed before */
	if (ret == 0 && dup3(fd, u->fd, O_CLOEXEC) < 0) {
		ret = -errno;
		unlinkat(u->dir_fd, u->name, 0);
	}
	if (fd >= 0)
		close(fd);
	if (ret < 0) {
		char reason[AUDIT_REASON_SIZE];

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

static int prepare_change(struct upload *u, uint64_t new_size);

/*
 * A change to a passthrough upload after its commit (see
 * promote_pass_through()): the kernel goes on writing the artifact itself,
 * whose open file it holds, so the artifact cannot be copied aside like
 * restage() does.  It is linked back under its staged name instead, to
 * land from there, in place, at the next commit.  A file removed from
 * the store meanwhile cannot be linked again: what is written into it can
 * no longer land, and the upload fails.  Upload locked.
 */
static int stage_in_place(struct upload *u)
{
	struct promoter *p = u->promoter;
	char proc[32], reason[AUDIT_REASON_SIZE];
	struct stat st;
	int ret = 0;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", u->fd);
	unlinkat(u->dir_fd, u->name, 0);	/* a leftover of an earlier failure */
	if (fstat(u->fd, &st) < 0 ||
	    linkat(AT_FDCWD, proc, u->dir_fd, u->name, AT_SYMLINK_FOLLOW) < 0)
		ret = -errno;
	else if ((ret = reopen_fd(u->fd, O_RDWR)) < 0)
		unlinkat(u->dir_fd, u->name, 0);
	if (ret < 0) {
		snprintf(reason, sizeof(reason), "written after its commit, but it %s",
			 ret == -ENOENT ? "was removed from the store meanwhile" :
			 "cannot be staged again");
		u->failure = -EIO;
		record(p, INDEX_ACTION_PROMOTE, u->run, u->name, -1, NULL,
		       ret == -ENOENT ? ENOENT : -ret, reason);
		return -EIO;
	}
	start_hash(u, (uint64_t)st.st_size);
	pthread_mutex_lock(&p->lock);
	u->staged = true;
	u->size = (uint64_t)st.st_size;
	p->staged_bytes += u->size;
	pthread_mutex_unlock(&p->lock);
	return 0;
}

/*
 * Whether the kernel wrote a passthrough upload since it was last looked
 * at: then it is a change like any other (prepare_change()).  Its size
 * or its modification time tells; the store's file systems give every
 * change after a look a new one (fine-grained timestamps).  A time set
 * through the mount counts too: one commit more, never one less.
 * Returns 0 or -errno (the upload can no longer commit).  Upload locked.
 */
static int notice_unseen_writes(struct upload *u)
{
	struct stat st;
	int ret;

	if (!u->passthrough || u->failure)
		return u->failure;
	if (fstat(u->fd, &st) < 0)
		return 0;	/* the commit's own fstat reports it */
	if ((uint64_t)st.st_size == u->seen_size &&
	    st.st_mtim.tv_sec == u->seen_mtime.tv_sec &&
	    st.st_mtim.tv_nsec == u->seen_mtime.tv_nsec)
		return 0;
	u->seen_size = (uint64_t)st.st_size;
	u->seen_mtime = st.st_mtim;
	ret = prepare_change(u, (uint64_t)st.st_size);
	if (ret == -EBUSY) {
		/* Written through a descriptor kept after the name was given up. */
		u->failure = -EBUSY;
		record(u->promoter, INDEX_ACTION_PROMOTE, u->run, u->name, (int64_t)st.st_size,
		       NULL, EBUSY, "written after its name went to a newer upload, or a rename");
	}
	return ret;
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

	take_behind_error(u);
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
		ret = u->passthrough ? stage_in_place(u) : restage(u);
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

/* What is left of an answered write: see promote_upload_write(). */
struct behind_work {
	int buffer;	/* the direct write's buffer, -1: none (written already) */
	bool fold;	/* folds into the hash */
};

/*
 * Takes a free aligned buffer for a direct write, waiting for one of the
 * writes behind to finish if all are busy.  Returns its index, or -ENOMEM.
 * Upload locked.
 */
static int take_buffer(struct upload *u)
{
	int ret = -ENOMEM;

	pthread_mutex_lock(&u->behind_lock);
	for (;;) {
		int i;
		for (i = 0; i < DIRECT_BUFFERS && u->direct_busy[i]; i++)
			;
		if (i < DIRECT_BUFFERS) {
			if (u->direct_buffers[i] ||
			    posix_memalign(&u->direct_buffers[i], DIRECT_WRITE_ALIGN,
					   DIRECT_WRITE_MAX) == 0) {
				u->direct_busy[i] = true;
				ret = i;
			} else {
				u->direct_buffers[i] = NULL;
			}
			break;
		}
		pthread_cond_wait(&u->behind_moved, &u->behind_lock);
	}
	pthread_mutex_unlock(&u->behind_lock);
	return ret;
}

/* Whether a write may go past the page cache (see write_staged()).  Upload locked. */
static bool may_write_direct(struct upload *u, size_t size, off_t offset)
{
	char proc[32];

	if (u->direct_refused || size < DIRECT_WRITE_MIN || size > DIRECT_WRITE_MAX ||
	    size % DIRECT_WRITE_ALIGN || (uint64_t)offset % DIRECT_WRITE_ALIGN)
		return false;
	if (u->direct_fd < 0) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", u->fd);
		u->direct_fd = open(proc, O_WRONLY | O_DIRECT | O_CLOEXEC);
		if (u->direct_fd < 0) {
			log_info("client %s run %s file %s: the staged file cannot be opened "
				 "with O_DIRECT (%s); writing through the page cache",
				 u->promoter->view->client, u->run, u->name, strerror(errno));
			u->direct_refused = true;
			return false;
		}
	}
	return true;
}

/*
 * Takes a write into the staged file.  A large aligned write (a copy's:
 * cp sizes them by st_blksize) is copied to an aligned buffer, to be
 * written past the page cache once answered (work->buffer): on these
 * kernels copying new data into freshly allocated page cache is what a
 * buffered write costs most, and every byte must reach the disk before
 * the commit anyway.  Anything else is written now, through the page
 * cache, and sent to the disk as it comes.  The kernel keeps the page
 * cache coherent with direct writes, so reads through fd see them once
 * settled.  Returns the bytes taken or -errno.  Upload locked.
 */
static ssize_t take_write(struct upload *u, const void *buf, size_t size, off_t offset,
			  struct behind_work *work)
{
	ssize_t written;

	/*
	 * Direct writes behind may finish in any order, so they never
	 * overlap: one below the last one's end, or any other write, waits
	 * for them first.
	 */
	work->buffer = -1;
	if (may_write_direct(u, size, offset) && (uint64_t)offset >= u->direct_end)
		work->buffer = take_buffer(u);
	if (work->buffer < 0) {
		settle_behind(u);
		u->direct_end = 0;
	}
	if (work->buffer >= 0) {
		u->direct_end = (uint64_t)offset + size;
		memcpy(u->direct_buffers[work->buffer], buf, size);
		return (ssize_t)size;
	}
	written = pwrite(u->fd, buf, size, offset);
	if (written < 0)
		return -errno;
	start_writeback(u->fd, (uint64_t)offset, (uint64_t)written);
	return written;
}

/*
 * Does what is left of an answered write: its fold into the hash, in the
 * order the sequential writes were taken, then its direct write.  Folding
 * first keeps the hash, which goes one write at a time, from waiting on
 * the disk.  No lock held; see struct upload.
 */
static void finish_behind(struct upload *u, const struct behind_work *work, const void *buf,
			  size_t size, uint64_t offset)
{
	int error = 0;

	if (work->fold) {
		pthread_mutex_lock(&u->behind_lock);
		while (u->hashed != offset)
			pthread_cond_wait(&u->behind_moved, &u->behind_lock);
		pthread_mutex_unlock(&u->behind_lock);
		EVP_DigestUpdate(u->hash, buf, size);
		pthread_mutex_lock(&u->behind_lock);
		u->hashed += size;
		pthread_cond_broadcast(&u->behind_moved);
		pthread_mutex_unlock(&u->behind_lock);
	}
	if (work->buffer >= 0) {
		ssize_t n = pwrite(u->direct_fd, u->direct_buffers[work->buffer], size,
				   (off_t)offset);
		if (n != (ssize_t)size)
			error = n < 0 ? -errno : -EIO;
	}
	pthread_mutex_lock(&u->behind_lock);
	if (work->buffer >= 0)
		u->direct_busy[work->buffer] = false;
	if (error && !u->behind_error)
		u->behind_error = error;
	u->behind--;
	pthread_cond_broadcast(&u->behind_moved);
	pthread_mutex_unlock(&u->behind_lock);
}

void promote_upload_write(struct upload *u, const void *buf, size_t size, off_t offset,
			  void (*answer)(void *context, ssize_t written), void *context)
{
	struct behind_work work = { .buffer = -1 };
	ssize_t written;

	pthread_mutex_lock(&u->lock);
	written = prepare_change(u, (uint64_t)offset + size);
	if (written < 0)
		goto out;
	written = take_write(u, buf, size, offset, &work);
	if (written <= 0)
		goto out;
	if ((uint64_t)offset == u->hash_end) {
		u->hash_end += (uint64_t)written;
		work.fold = true;
	} else {
		/* Out of order, or over bytes already hashed: hash the file at commit. */
		u->hash_end = UINT64_MAX;
	}
	if (work.fold || work.buffer >= 0) {
		pthread_mutex_lock(&u->behind_lock);
		u->behind++;
		pthread_mutex_unlock(&u->behind_lock);
	}
out:
	pthread_mutex_unlock(&u->lock);
	answer(context, written);
	if (work.fold || work.buffer >= 0)
		finish_behind(u, &work, buf, (size_t)written, (uint64_t)offset);
}

int promote_upload_truncate(struct upload *u, off_t size)
{
	int ret;

	if (size < 0)
		return -EINVAL;
	pthread_mutex_lock(&u->lock);
	settle_behind(u);	/* a direct write behind would extend it again */
	ret = prepare_change(u, (uint64_t)size);
	if (ret < 0)
		goto out;
	if (ftruncate(u->fd, size) < 0) {
		ret = -errno;
		goto out;
	}
	if ((uint64_t)size != u->hash_end)
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
/*
 * A file staged in place (stage_in_place()) that landed over its own
 * name: the rename between two links of one inode did nothing, and the
 * staged link is left.  Upload locked, the name ours.
 */
static void drop_staged_link(struct upload *u)
{
	struct stat staged, own;

	if (fstatat(u->dir_fd, u->name, &staged, AT_SYMLINK_NOFOLLOW) == 0 &&
	    fstat(u->fd, &own) == 0 && staged.st_ino == own.st_ino && staged.st_dev == own.st_dev)
		unlinkat(u->dir_fd, u->name, 0);
}

static int land_upload(struct upload *u, const char *name)
{
	struct promoter *p = u->promoter;
	char reason[AUDIT_REASON_SIZE] = "";
	struct landing l = { .run = u->run, .name = name };
	char *workflow_id = NULL, *user_directive = NULL, *agent_id = NULL;
	struct run_attrs *attrs;
	struct stat st;
	struct timespec now;
	int ret = 0;

	/* Made durable by the landing, with its seal. */
	if (fstat(u->fd, &st) < 0) {
		ret = -EIO;
		snprintf(reason, AUDIT_REASON_SIZE, "cannot write the staged file: %s", strerror(errno));
		goto out;
	}
	l.size = (uint64_t)st.st_size;
	settle_behind(u);
	if (u->hash_end == l.size) {
		unsigned char digest[EVP_MAX_MD_SIZE];
		EVP_MD_CTX *copy = EVP_MD_CTX_new();
		if (!copy || !EVP_MD_CTX_copy_ex(copy, u->hash)) {
			EVP_MD_CTX_free(copy);
			ret = -ENOMEM;
			goto out;
		}
		EVP_DigestFinal_ex(copy, digest, NULL);
		EVP_MD_CTX_free(copy);
		landing_hex_digest(digest, l.sha256);
	} else if ((ret = landing_hash_and_flush(u->fd, l.sha256)) < 0) {
		/* Written out of order (a database, an archive): hashed at its commit. */
		snprintf(reason, AUDIT_REASON_SIZE, "cannot hash or flush the staged file: %s",
			 strerror(-ret));
		ret = -EIO;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	meta_format_time(now.tv_sec, now.tv_nsec, l.generated_at);
	/* Copied: a setxattr on promote/<run> or on the file may replace them meanwhile. */
	pthread_mutex_lock(&p->lock);
	attrs = find_run_attrs(p, u->run);
	workflow_id = metaedit_copy_text(attrs && attrs->workflow_id ? attrs->workflow_id :
				p->options->workflow_id, &ret);
	user_directive = metaedit_copy_text(attrs && attrs->user_directive ? attrs->user_directive :
				   p->options->user_directive, &ret);
	agent_id = metaedit_copy_text(u->agent_id ? u->agent_id : p->options->agent_id, &ret);
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
	close_direct(u);
	ret = reopen_fd(u->fd, O_RDONLY);
	if (ret == 0) {
		ret = land_file(p, u->dir_fd, u->name, &l, reason);
		if (ret < 0 && reopen_fd(u->fd, O_RDWR) < 0)
			u->failure = -EIO;	/* cannot write on: refuse, never lose */
	} else {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot reopen the staged file: %s", strerror(-ret));
		ret = -EIO;
	}
	if (ret == 0) {
		pthread_mutex_lock(&p->lock);
		u->staged = false;	/* u->fd is now the artifact itself */
		p->staged_bytes -= u->size;
		pthread_mutex_unlock(&p->lock);
		if (u->passthrough)
			drop_staged_link(u);
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
 * name no longer leads to it, or it has another link again.  The name is
 * looked up and its link count read in one call (name is one component,
 * checked, in the session's own output dir): were they two, an agent
 * linking the file again just for the lookup and dropping the link before
 * the count was read would pass.  The copy's own count is checked on both
 * sides, so a flip around the lookup is caught too.
 */
static bool still_the_session_file(int out_fd, const char *name, int src)
{
	struct stat opened, named;

	if (fstat(src, &opened) < 0 || opened.st_nlink != 1)
		return false;
	if (fstatat(out_fd, name, &named, AT_SYMLINK_NOFOLLOW) < 0 ||
	    named.st_ino != opened.st_ino || named.st_dev != opened.st_dev ||
	    named.st_nlink != 1)
		return false;
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
	char reason[AUDIT_REASON_SIZE] = "";
	struct landing l = { .run = r->run_id, .name = name };
	const char *why;
	struct timespec now;
	struct stat st;
	int out_fd = -1, src = -1, ret;
	bool staged = false;
	uint64_t reserved = UINT64_MAX;
	char staged_name[64];

	if (names_check_artifact(name, &why) < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "file name %s", why);
		ret = -EINVAL;
		goto out;
	}
	ret = promote_check_run(p, r->run_id);
	if (ret < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, ret == -EACCES ?
			 "the run belongs to another tenant" : "invalid run id");
		goto out;
	}
	out_fd = store_open_session_output(p->view->store, r->run_id, O_PATH);
	if (out_fd < 0) {
		ret = out_fd == -ENOENT ? -ENOENT : -EINVAL;
		snprintf(reason, AUDIT_REASON_SIZE, "no session output directory: %s", strerror(-out_fd));
		goto out;
	}
	src = store_open_regular(out_fd, name, O_RDONLY, &st);
	if (src < 0) {
		ret = src == -ENOENT ? -ENOENT : -EINVAL;
		snprintf(reason, AUDIT_REASON_SIZE, "cannot open the session file: %s",
			 src == -ELOOP ? "it is a symlink" :
			 src == -EINVAL ? "it is not a regular file" : strerror(-src));
		goto out;
	}
	if (st.st_nlink != 1) {
		ret = -EINVAL;
		snprintf(reason, AUDIT_REASON_SIZE, "the session file has other hard links");
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
		snprintf(reason, AUDIT_REASON_SIZE, "the tenant's quota would be exceeded");
		goto out;
	}
	ret = landing_stage_copy(p->writer, src, (uint64_t)st.st_size, staged_name, &l, reason);
	if (ret < 0) {
		ret = -EIO;
		goto out;
	}
	staged = true;
	if (!still_the_session_file(out_fd, name, src)) {
		ret = -EINVAL;
		snprintf(reason, AUDIT_REASON_SIZE, "the session file was replaced while it was copied");
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	meta_format_time(now.tv_sec, now.tv_nsec, l.generated_at);
	l.agent_id = r->agent_id ? r->agent_id : p->options->agent_id;
	l.workflow_id = r->workflow_id ? r->workflow_id : p->options->workflow_id;
	l.user_directive = r->user_directive ? r->user_directive : p->options->user_directive;
	ret = land_file(p, p->writer->work_fd, staged_name, &l, reason);
	if (ret == 0)
		staged = false;
out:
	if (staged)
		unlinkat(p->writer->work_fd, staged_name, 0);
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
	char problem[AUDIT_REASON_SIZE] = "";
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
	int ret;

	if (u->run[0]) {
		ret = land_upload(u, u->name);
	} else {
		/*
		 * A request is spent by its first commit: gone from promote/'s
		 * listing before .status can tell its outcome.
		 */
		pthread_mutex_lock(&p->lock);
		u->spending = true;
		pthread_mutex_unlock(&p->lock);
		ret = commit_request(u);
	}
	pthread_mutex_lock(&p->lock);
	u->dirty = false;
	u->committed = true;
	pthread_mutex_unlock(&p->lock);
	u->outcome = ret;
	return ret;
}

/*
 * What can no longer land leaves promote/ at the close that settled it,
 * not at the release the kernel sends after close() has returned: a
 * failed upload, and a request, which its first commit spends.  Upload
 * locked.
 */
static void withdraw_if_spent(struct upload *u)
{
	struct promoter *p = u->promoter;

	if (!u->failure && (u->run[0] || !u->committed))
		return;
	pthread_mutex_lock(&p->lock);
	if (u->registered)
		discard_registered(p, u);	/* never frees: the caller holds a reference */
	pthread_mutex_unlock(&p->lock);
}

void promote_abandon_upload(struct upload *u, const char *reason)
{
	pthread_mutex_lock(&u->lock);
	if (!u->failure) {
		u->failure = -EINTR;
		record(u->promoter, INDEX_ACTION_PROMOTE, u->run[0] ? u->run : NULL, u->name,
		       (int64_t)u->size, NULL, EINTR, reason);
	}
	withdraw_if_spent(u);
	pthread_mutex_unlock(&u->lock);
}

int promote_commit_upload(struct upload *u)
{
	int ret;

	pthread_mutex_lock(&u->lock);
	settle_behind(u);
	take_behind_error(u);
	notice_unseen_writes(u);
	u->closed = true;
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
	withdraw_if_spent(u);
	pthread_mutex_unlock(&u->lock);
	return ret;
}

void promote_end_upload(struct upload *u)
{
	struct promoter *p = u->promoter;

	pthread_mutex_lock(&u->lock);
	settle_behind(u);
	take_behind_error(u);
	notice_unseen_writes(u);
	/*
	 * What no close committed: a write after the last flush, or a new
	 * file nothing was written to (touch).  An artifact opened for
	 * writing and left as it was (an editor's probe) is no new version,
	 * and one unlinked in flight lands nothing.  Nor does an open the
	 * kernel refused after the daemon answered it (a passthrough backing
	 * another open still holds): it never reached its writer, so no
	 * close came, and landing its truncated file would lose the artifact.
	 */
	if (!u->dropped && !u->temporary && !u->failure &&
	    (u->dirty || (!u->committed && !u->from_artifact && u->closed)))
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
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_unlock(&u->lock);
	/*
	 * The reference goes last, after the upload's lock: whoever drops the
	 * last one frees the upload, its lock included (a rename of the name
	 * just closed, or the sweep of a parked temporary).
	 */
	upload_put(u);
}

int promote_discard_upload(struct promoter *p, const char *run, const char *name)
{
	struct upload *u;
	bool landed = false;

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
			/*
			 * Landed by its last close, nothing written since: it
			 * only waits for its release (a dup still open, or the
			 * kernel's release just after close() returned), and the
			 * name is the artifact's, deleted as after the release.
			 */
			landed = !u->temporary && u->committed && u->outcome == 0 && !u->dirty &&
				 !u->staged;
			u->dropped = u->staged;	/* its writer's bytes go to the unlinked file */
			discard_registered(p, u);
		}
		pthread_mutex_unlock(&p->lock);
		pthread_mutex_unlock(&u->lock);
		upload_put(u);
		return landed ? promote_delete_file(p, run, name) : 0;
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
		run_fd = store_open_run(p->view->store, p->view->client, u->run, O_PATH);
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




/* landing_rename_artifact() for promote/<run>/, logged and audited. */
static int promote_rename_artifact(struct promoter *p, const char *run, const char *from,
				   const char *to, bool no_replace)
{
	char reason[AUDIT_REASON_SIZE] = "", done[AUDIT_REASON_SIZE];
	int ret;

	if (names_is_temporary(to) || names_is_temporary(from) ||
	    names_check_artifact(from, NULL) < 0) {
		ret = names_is_temporary(from) ? -ENOENT : -EPERM;
		snprintf(reason, AUDIT_REASON_SIZE, "an artifact is renamed to an artifact name only");
	} else {
		ret = landing_rename_artifact(p->writer, run, from, to, no_replace, reason);
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
		if (ret == 0 && u->dirty)
			ret = -EBUSY;	/* written again meanwhile */
		else if (ret == 0)
			give_up_name(p, u);	/* its own rename: no release to wait for */
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
	if (u && u->staged) {
		settle_behind(u);	/* its size counts the writes behind */
		ret = fstat(u->fd, st) < 0 ? -errno : 0;
	}
	pthread_mutex_unlock(&p->lock);
	return ret;
}

void promote_settle_upload(struct promoter *p, struct upload *u, const char *run,
			   const char *name)
{
	if (u) {
		settle_behind(u);	/* the caller's reference keeps it */
		return;
	}
	pthread_mutex_lock(&p->lock);
	u = find_upload(p, run, name);
	if (u)
		settle_behind(u);
	pthread_mutex_unlock(&p->lock);
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
	for (u = p->uploads; u && ret == 0; u = u->next) {
		if (!u->staged || u->spending || strcmp(u->run, run ? run : "") != 0)
			continue;
		settle_behind(u);
		if (fstat(u->fd, &st) == 0)
			ret = fn(ctx, u->name, &st);
	}
	pthread_mutex_unlock(&p->lock);
	return ret;
}

/* --- deletion, repairs, usage --------------------------------------------- */

/* The mount's nodelete rule, audited when it refuses. */
static int check_may_delete(struct promoter *p, const char *run, const char *name)
{
	if (!p->options->no_delete)
		return 0;
	record(p, INDEX_ACTION_DELETE, run, name, -1, NULL, EPERM,
	       "deletion is disabled on this mount");
	return -EPERM;
}

int promote_delete_file(struct promoter *p, const char *run, const char *name)
{
	int ret = check_may_delete(p, run, name);

	return ret < 0 ? ret : deletion_delete_file(p->writer, run, name);
}

int promote_delete_run(struct promoter *p, const char *run)
{
	int ret = check_may_delete(p, run, NULL);

	if (ret == 0)
		ret = deletion_delete_run(p->writer, run, DELETION_ONLY_EMPTY, NULL);
	if (ret == 0)
		promote_unstage_run(p, run);	/* promote/<run> goes with the run */
	return ret;
}

/* How long a run must have been left alone before its metadata is repaired. */
#define REPAIR_GRACE_MS 2000

unsigned int promote_repair_run(struct promoter *p, const char *run)
{
	return check_repair_run(p->writer, run, REPAIR_GRACE_MS, 0, NULL);
}

int promote_get_usage(struct promoter *p, struct promote_usage *usage)
{
	int ret = index_get_usage(p->view->index, p->view->client,
				  &usage->used_bytes, &usage->used_files);

	usage->quota_bytes = p->options->quota_bytes;
	usage->quota_files = p->options->quota_files;
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
	char *line;
	size_t len;
	int ret;

	ret = audit_format_row(row, false, &line);
	if (ret < 0)
		return ret;
	len = strlen(line);
	if (out->len + len + 2 > out->capacity) {
		size_t bigger = (out->capacity + len + 2) * 2;
		char *grown = realloc(out->text, bigger);
		if (!grown) {
			free(line);
			return -ENOMEM;
		}
		out->text = grown;
		out->capacity = bigger;
	}
	memcpy(out->text + out->len, line, len);
	out->len += len;
	out->text[out->len++] = '\n';
	out->text[out->len] = '\0';
	free(line);
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

/* --- set-up and tear-down --------------------------------------------------- */

int promote_open(struct view *view, const struct promote_options *options,
		 struct promoter **out)
{
	struct promoter *p;
	int ret;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&p->released, &attr);
	pthread_condattr_destroy(&attr);
	ret = writer_open(view, options, &p->writer);
	if (ret < 0) {
		promote_close(p);
		return ret;
	}
	p->view = view;
	p->options = &p->writer->options;
	/* What dead instances left: finishing their commits needs our work dir. */
	landing_recover(p->writer);
	*out = p;
	return 0;
}

void promote_close(struct promoter *p)
{
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
	while (p->run_attrs) {
		struct run_attrs *next = p->run_attrs->next;
		free(p->run_attrs->workflow_id);
		free(p->run_attrs->user_directive);
		free(p->run_attrs);
		p->run_attrs = next;
	}
	writer_close(p->writer);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->released);
	free(p);
}

int promote_reload(struct promoter *p)
{
	return writer_reload_mime(p->writer);
}
