/*
 * landing.c - landings, artifact renames, and the intents that let any
 * later writer finish them after a crash.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "flush.h"
#include "landing.h"
#include "log.h"
#include "metaedit.h"
#include "seal.h"

#define SECONDS_PER_DAY 86400
/* Room for a content type ("application/vnd.openxmlformats-...") and a NUL. */
#define LANDING_TYPE_SIZE 256
/* Intent records are small JSON documents; anything larger is not ours. */
#define INTENT_MAX 65536

void landing_hex_digest(const unsigned char *digest, char hex[LANDING_SHA256_HEX_SIZE])
{
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

int landing_hash_file(int fd, char hex[LANDING_SHA256_HEX_SIZE])
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
	landing_hex_digest(digest, hex);
out:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return ret;
}

/* A file's flush, on a thread of its own while the caller hashes it. */
struct background_flush {
	pthread_t thread;
	int fd;
	int result;	/* 0 or -errno, once joined */
};

static void *run_flush(void *arg)
{
	struct background_flush *flush = arg;

	flush->result = fdatasync(flush->fd) < 0 ? -errno : 0;
	return NULL;
}

int landing_hash_and_flush(int fd, char hex[LANDING_SHA256_HEX_SIZE])
{
	struct background_flush flush = { .fd = fd };
	bool flushing = false;
	struct stat st;
	int ret;

	/*
	 * The landing flushes the file again with its seal: only what it
	 * would wait for long enough to hide a hash behind is worth a flush
	 * and a thread of its own.
	 */
	if (fstat(fd, &st) == 0 && st.st_size >= LANDING_HASH_AND_FLUSH_MIN)
		flushing = pthread_create(&flush.thread, NULL, run_flush, &flush) == 0;
	ret = landing_hash_file(fd, hex);
	if (flushing) {
		pthread_join(flush.thread, NULL);
		/* Reported once per open file: the landing's fsync may not see it again. */
		if (ret == 0)
			ret = flush.result;
	}
	return ret;
}

/* --- ownership ----------------------------------------------------------- */

/* A run id looked for in other tenants' areas, for store_for_each_tenant(). */
struct foreign_search {
	const struct view *view;
	const char *run;
};

/* -EACCES when client, another tenant, has a run dir (or anything) named run. */
static int holds_run(void *ctx, const char *client)
{
	const struct foreign_search *search = ctx;
	int fd;

	if (strcmp(client, search->view->client) == 0)
		return 0;
	fd = store_open_run(search->view->store, client, search->run, O_PATH);
	if (fd >= 0)
		close(fd);
	return fd >= 0 || fd == -ELOOP || fd == -ENOTDIR ? -EACCES : 0;
}

/*
 * Whether some other tenant's area (or, with legacy_counts, the legacy
 * layout) holds run: -EACCES, else 0 or -errno.
 */
static int find_foreign_run(struct view *view, const char *run, bool legacy_counts)
{
	struct foreign_search search = { view, run };
	int fd;

	fd = legacy_counts ? store_open_legacy_run(view->store, run, O_PATH) : -ENOENT;
	if (fd >= 0) {
		close(fd);
		return -EACCES;	/* a legacy run belongs to nobody here */
	}
	return store_for_each_tenant(view->store, holds_run, &search);
}

int landing_check_run(struct writer *w, const char *run)
{
	char *owner = NULL;
	int fd, ret;

	if (names_check_run(run, NULL) < 0)
		return -EINVAL;
	fd = store_open_run(w->view->store, w->view->client, run, O_PATH);
	if (fd >= 0) {
		close(fd);
		return 0;	/* the tenant's own run dir: its run */
	}
	ret = index_get_run_owner(w->view->index, run, &owner);
	if (ret == 0) {
		ret = strcmp(owner, w->view->client) == 0 ? 0 : -EACCES;
		free(owner);
		return ret;
	}
	if (ret != -ENOENT)
		return ret;
	return find_foreign_run(w->view, run, true);
}

/* --- intents -------------------------------------------------------------- */

/*
 * Writes doc (taken over) as an intent record, durably, named
 * intent_name (64 bytes), before what it describes happens.
 */
static int write_intent(struct writer *w, json_t *doc, char *intent_name)
{
	int fd = -1, ret = 0;
	char *text = NULL;

	if (!doc || !(text = json_dumps(doc, JSON_COMPACT))) {
		ret = -ENOMEM;
		goto out;
	}
	writer_work_name(w, "intent", intent_name, 64);
	fd = openat(w->work_fd, intent_name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = store_write_all(fd, text, strlen(text));
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret == 0 && fsync(w->work_fd) < 0)
		ret = -errno;
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0 && fd >= 0)
		unlinkat(w->work_fd, intent_name, 0);
	free(text);
	json_decref(doc);
	return ret;
}

static json_t *landing_intent(const struct landing *l)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I}",
			 "run", l->run, "name", l->name,
			 "agent_id", l->agent_id, "workflow_id", l->workflow_id,
			 "user_directive", l->user_directive,
			 "sha256", l->sha256, "generated_at", l->generated_at,
			 "size", (json_int_t)l->size);
}

/* --- landing -------------------------------------------------------------- */

/*
 * Locks the tenant's run for a landing (one writer of metadata.json at a
 * time, across threads, processes and hosts), into *lock, then opens its
 * dir, making it if needed: a deletion of the run (rm -r) that held the
 * lock before us has removed it, and the landing makes it anew.
 * Returns the fd, or -errno with reason saying which step failed (then
 * nothing is held).
 */
static int lock_run_for_landing(struct writer *w, const char *run, int *lock, char *reason)
{
	int run_fd;

	*lock = store_lock_run(w->view->store, w->view->client, run, true);
	if (*lock < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot lock the run: %s", strerror(-*lock));
		return *lock;
	}
	run_fd = store_make_run(w->view->store, w->view->client, run);
	if (run_fd < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot make or open the run directory: %s",
			 strerror(-run_fd));
		store_unlock(*lock);
		*lock = -1;
	}
	return run_fd;
}

/*
 * Reads the run's metadata.json into *meta for a landing: absent is
 * fine (a new run), unreadable is not.  run_fd is locked by the caller.
 */
static int read_metadata_for_landing(struct writer *w, int run_fd, const char *run,
				     struct meta_run *meta, struct metafile_version *version,
				     char *reason)
{
	int ret;

	if (writer_take_metadata(w, run_fd, run, meta, version))
		return 0;
	ret = metaedit_read(run_fd, meta, version, reason);
	return ret == -ENOENT ? 0 : ret;
}

/* A landing, and the writer whose defaults make a new run, for add_landing(). */
struct landing_edit {
	struct writer *writer;
	const struct landing *landing;
};

/*
 * Puts the landing's entry into *meta, replacing any entry of that name
 * (and dropping duplicates the kernel-server may have appended), filling
 * a new run's fields.  Returns 0 or -ENOMEM.
 */
static int add_landing(struct meta_run *meta, const void *ctx)
{
	const struct landing_edit *edit = ctx;
	const struct landing *l = edit->landing;
	char content_type[LANDING_TYPE_SIZE];
	struct meta_artifact entry = {
		.filename = (char *)l->name,
		.agent_id = (char *)l->agent_id,
		.generated_at = (char *)l->generated_at,
		.content_type = content_type,
		.has_size_bytes = true,
		.size_bytes = l->size,
	};
	int ret = 0;

	writer_content_type(edit->writer, l->name, content_type, sizeof(content_type));

	if (!meta->run_id) {
		char created[META_TIME_SIZE], expires[META_TIME_SIZE];
		int64_t retention = (int64_t)edit->writer->options.retention_days * SECONDS_PER_DAY;
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		meta_format_time(now.tv_sec, now.tv_nsec, created);
		meta_format_time(now.tv_sec + retention, now.tv_nsec, expires);
		meta->run_id = metaedit_copy_text(l->run, &ret);
		meta->workflow_id = metaedit_copy_text(l->workflow_id, &ret);
		meta->user_directive = metaedit_copy_text(l->user_directive, &ret);
		meta->created_at = metaedit_copy_text(created, &ret);
		meta->expires_at = metaedit_copy_text(expires, &ret);
		meta->status = metaedit_copy_text("active", &ret);
		if (ret < 0)
			return ret;
	}
	return metaedit_put_entry(meta, &entry);
}

/*
 * Records files landed together in the index, in one transaction: their
 * rows and the run's, not the whole run again (a run of many files would
 * pay for each one).  meta is the metadata.json just written, *version
 * the file written; run_fd is locked.
 */
static void index_landings(struct writer *w, int run_fd, const char *run,
			   const struct meta_run *meta, const struct metafile_version *version,
			   const struct landing *const *landings, size_t n)
{
	struct index_landed *landed = calloc(n, sizeof(*landed));
	struct index_run_stamp stamp;
	struct stat st;
	size_t i;

	/*
	 * The stamp of the very file we wrote: if another writer changed it
	 * since, the stamps differ and the watcher has the run parsed again.
	 */
	view_stamp_run(run_fd, &stamp);
	stamp.meta_ino = version->ino;
	stamp.meta_size = version->size;
	stamp.meta_mtime_ns = version->mtime_ns;
	stamp.meta_ctime_ns = version->ctime_ns;
	for (i = 0; landed && i < n; i++) {
		const struct landing *l = landings[i];

		landed[i].entry = meta_find_artifact(meta, l->name);
		if (!landed[i].entry || fstatat(run_fd, l->name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			break;
		landed[i].file = (struct index_file){
			.filename = l->name, .size = st.st_size,
			.mtime_ns = store_time_ns(&st.st_mtim), .ino = (int64_t)st.st_ino,
		};
		landed[i].sha256 = l->sha256;
	}
	if (landed && i == n)
		index_put_artifacts(w->view->index, w->view->client, run, &stamp, meta, landed, n);
	else
		view_index_run(w->view, run, run_fd, VIEW_SYNC_FORCE, NULL);	/* the slow way */
	free(landed);
}

/* Adds the landing's entry to metadata.json and the index.  run_fd is locked. */
static int record_landing(struct writer *w, int run_fd, const struct landing *l,
			  struct meta_run *meta, struct metafile_version *version,
			  char *reason)
{
	struct landing_edit edit = { w, l };
	int ret;

	ret = metaedit_apply(w, run_fd, meta, version, add_landing, &edit, reason);
	if (ret < 0)
		return ret;
	index_landings(w, run_fd, l->run, meta, version, &l, 1);
	writer_keep_metadata(w, l->run, version, meta);
	return 0;
}

/* --- seals ------------------------------------------------------------------ */

/*
 * Whether fd (of st) is a file sealed (seal.h) for run/name at
 * generated_at that holds the sealed bytes; the sealed SHA-256 goes to
 * sha256.  Hashes the whole file: recovery trusts a file in a run, or in a
 * dead instance's staging, as the one a landing describes only then.
 */
static bool seal_holds(int fd, const struct stat *st, const char *run, const char *name,
		       const char *generated_at, char sha256[LANDING_SHA256_HEX_SIZE])
{
	char hashed[LANDING_SHA256_HEX_SIZE];
	struct seal seal;
	bool holds;

	if (seal_read(fd, &seal) < 0)
		return false;
	holds = strcmp(seal.run, run) == 0 && strcmp(seal.name, name) == 0 &&
		generated_at && strcmp(seal.generated_at, generated_at) == 0 &&
		seal.size == st->st_size &&
		landing_hash_file(fd, hashed) == 0 && strcmp(hashed, seal.sha256) == 0;
	if (holds)
		memcpy(sha256, hashed, LANDING_SHA256_HEX_SIZE);
	seal_release(&seal);
	return holds;
}

/*
 * Opens the staged file and seals it for l (not durably yet: the group
 * it lands with flushes it).  *sealed is false where the store keeps no
 * user xattrs: that landing then needs an intent of its own.  Returns the
 * open file or -errno with reason set.
 */
static int seal_staged(int staged_dir, const char *staged_name, const struct landing *l,
		       bool *sealed, char *reason)
{
	int fd, ret;

	*sealed = false;
	fd = openat(staged_dir, staged_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	ret = fd < 0 ? -errno : seal_write(fd, l->run, l->name, l->generated_at, l->sha256);
	if (ret == 0)
		*sealed = true;
	else if (ret == -ENOTSUP)
		ret = 0;
	if (ret < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot write the staged file: %s",
			 strerror(-ret));
		if (fd >= 0)
			close(fd);
		fd = -EIO;
	}
	return fd;
}

/* --- group commit --------------------------------------------------------- */

/*
 * Landings into one run by the writer's threads at once share their
 * flushes.  A landing waits in w->landings_waiting; the first thread to
 * find no group of its run being landed leads: it takes every landing of
 * the run waiting then, lands them together (one record, one
 * metadata.json rewrite, one flush_all() and one fsync of the run dir)
 * and wakes the others.  Landings that arrive meanwhile form the next group.
 */
struct landing_job {
	int staged_dir;
	const char *staged_name;
	int fd;			/* the staged file, open */
	const struct landing *landing;
	bool sealed;
	char *reason;		/* the waiter's, AUDIT_REASON_SIZE bytes */
	/* The leader's, while the job is in its group. */
	int outcome;
	bool failed, renamed;
	char intent[WRITER_WORK_NAME_SIZE];	/* an unsealed job's own, or "" */
	struct landing_job *next;
	/* Under landing_lock: 1 while waiting, then outcome. */
	int result;
};

/* A group being landed, on its leader's stack. */
struct landing_group {
	struct writer *writer;
	const char *run;
	struct landing_job *jobs;
	struct landing_group *next;	/* in writer->landings_leading */
};

static void fail_job(struct landing_job *job, int ret, const char *reason)
{
	job->failed = true;
	job->outcome = ret;
	snprintf(job->reason, AUDIT_REASON_SIZE, "%s", reason);
}

/* The group's edit: every landing not failed gets its entry. */
static int add_group(struct meta_run *meta, const void *ctx)
{
	const struct landing_group *g = ctx;
	bool any = false;
	int ret;

	for (struct landing_job *job = g->jobs; job; job = job->next) {
		struct landing_edit edit = { g->writer, job->landing };

		if (job->failed)
			continue;
		any = true;
		if ((ret = add_landing(meta, &edit)) < 0)
			return ret;
	}
	return any ? 0 : 1;
}

/*
 * The group's files into the run.  First, in one flush_all(): their
 * bytes and seals, the record of their entries (durable[]), and their
 * staging directories, so that after any crash each file is under one of
 * its two names and the record outlives the renames.
 */
static int move_group(void *ctx, const int *durable, size_t n_durable, char *reason)
{
	struct landing_group *g = ctx;
	struct writer *w = g->writer;
	bool any_failed = false;
	size_t n = 0, size = n_durable;
	int run_fd = -1, ret, *fds;

	for (struct landing_job *job = g->jobs; job; job = job->next)
		size += 2;
	fds = malloc(size * sizeof(*fds));
	if (!fds) {
		snprintf(reason, AUDIT_REASON_SIZE, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n_durable; i++)
		fds[n++] = durable[i];
	for (struct landing_job *job = g->jobs; job; job = job->next) {
		bool seen = job->staged_dir == w->work_fd;

		if (job->failed)
			continue;
		fds[n++] = job->fd;
		for (struct landing_job *before = g->jobs; before != job && !seen;
		     before = before->next)
			seen = before->staged_dir == job->staged_dir;
		if (!seen)
			fds[n++] = job->staged_dir;
	}
	ret = flush_all(fds, n);
	free(fds);
	if (ret < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot make the staged files durable: %s",
			 strerror(-ret));
		return -EIO;
	}
	run_fd = store_open_run(w->view->store, w->view->client, g->run, O_PATH);
	if (run_fd < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "the run directory went away");
		return -EIO;
	}
	for (struct landing_job *job = g->jobs; job; job = job->next) {
		char problem[AUDIT_REASON_SIZE];

		if (job->failed)
			continue;
		if (renameat(job->staged_dir, job->staged_name, run_fd, job->landing->name) < 0) {
			snprintf(problem, sizeof(problem), "cannot move the file into the run: %s",
				 strerror(errno));
			fail_job(job, -EIO, problem);
			any_failed = true;
			continue;
		}
		job->renamed = true;
	}
	close(run_fd);
	return any_failed ? 1 : 0;
}

/*
 * Gets each landing of the group ready to move: its own intent where the
 * store keeps no seal, the store's file mode.  A job that cannot be is
 * failed alone.
 */
static void prepare_group(struct landing_group *g)
{
	struct writer *w = g->writer;
	char problem[AUDIT_REASON_SIZE];
	int ret;

	for (struct landing_job *job = g->jobs; job; job = job->next) {
		if (!job->sealed &&
		    (ret = write_intent(w, landing_intent(job->landing), job->intent)) < 0) {
			snprintf(problem, sizeof(problem), "cannot write the intent record: %s",
				 strerror(-ret));
			fail_job(job, -EIO, problem);
			continue;
		}
		/*
		 * Staged private (0600, in a 0700 dir), landed with the store's
		 * mode: the kernel-server, another user, serves these files too.
		 */
		if (fchmodat(job->staged_dir, job->staged_name, w->options.file_mode, 0) < 0) {
			snprintf(problem, sizeof(problem), "cannot set the file's mode: %s",
				 strerror(errno));
			fail_job(job, -EIO, problem);
		}
	}
}

/* Records the group's landed files in the index.  run_fd is locked. */
static void index_group(struct landing_group *g, int run_fd, const struct meta_run *meta,
			const struct metafile_version *version)
{
	const struct landing **landings;
	size_t n = 0;

	for (struct landing_job *job = g->jobs; job; job = job->next)
		n += !job->failed;
	if (n == 0)
		return;
	landings = calloc(n, sizeof(*landings));
	if (!landings) {
		view_index_run(g->writer->view, g->run, run_fd, VIEW_SYNC_FORCE, NULL);
		return;
	}
	n = 0;
	for (struct landing_job *job = g->jobs; job; job = job->next)
		if (!job->failed)
			landings[n++] = job->landing;
	index_landings(g->writer, run_fd, g->run, meta, version, landings, n);
	free(landings);
}

/* Lands a group, under the run lock; sets every job's outcome. */
static void land_group(struct landing_group *g)
{
	struct writer *w = g->writer;
	char reason[AUDIT_REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	int run_fd, lock, ret;

	run_fd = lock_run_for_landing(w, g->run, &lock, reason);
	if (run_fd < 0) {
		ret = -EIO;
		goto out;
	}
	/* Refuse before anything moves if metadata.json cannot be kept valid. */
	ret = read_metadata_for_landing(w, run_fd, g->run, &meta, &version, reason);
	if (ret < 0)
		goto out;
	prepare_group(g);
	ret = metaedit_apply_ordered(w, run_fd, g->run, &meta, &version, add_group, g,
				     move_group, g, reason);
	if (ret == 0) {
		index_group(g, run_fd, &meta, &version);
		writer_keep_metadata(w, g->run, &version, &meta);
	}
out:
	for (struct landing_job *job = g->jobs; job; job = job->next) {
		if (!job->failed && ret < 0)
			fail_job(job, ret, reason);
		/* A file moved without its entry: its intent finishes it. */
		if (job->intent[0] && !(job->renamed && job->failed))
			unlinkat(w->work_fd, job->intent, 0);
	}
	if (run_fd >= 0) {
		close(run_fd);
		store_unlock(lock);
	}
	for (struct landing_job *job = g->jobs; job; job = job->next)
		if (job->renamed) {
			store_note_change(w->view->store, w->view->client, g->run);
			break;
		}
	meta_run_release(&meta);
}

static bool run_is_leading(struct writer *w, const char *run)
{
	for (struct landing_group *g = w->landings_leading; g; g = g->next)
		if (strcmp(g->run, run) == 0)
			return true;
	return false;
}

/*
 * Leads the group of g->run: takes the landings of the run waiting now,
 * lands them and publishes their results.  Called and returns with
 * landing_lock held.
 */
static void lead_group(struct landing_group *g)
{
	struct writer *w = g->writer;
	struct landing_job **tail = &g->jobs;

	for (struct landing_job **link = &w->landings_waiting; *link;) {
		struct landing_job *job = *link;

		if (strcmp(job->landing->run, g->run) != 0) {
			link = &job->next;
			continue;
		}
		*link = job->next;
		job->next = NULL;
		*tail = job;
		tail = &job->next;
	}
	g->next = w->landings_leading;
	w->landings_leading = g;
	pthread_mutex_unlock(&w->landing_lock);

	land_group(g);

	pthread_mutex_lock(&w->landing_lock);
	for (struct landing_group **link = &w->landings_leading; *link; link = &(*link)->next)
		if (*link == g) {
			*link = g->next;
			break;
		}
	for (struct landing_job *job = g->jobs; job; job = job->next)
		job->result = job->outcome;
	pthread_cond_broadcast(&w->landings_done);
}

/* Waits for the landing of job, leading its group when no one else does. */
static int land_in_group(struct writer *w, struct landing_job *job)
{
	struct landing_job **tail;
	int ret;

	pthread_mutex_lock(&w->landing_lock);
	for (tail = &w->landings_waiting; *tail; tail = &(*tail)->next)
		;
	*tail = job;
	while (job->result == 1) {
		struct landing_group g = { .writer = w, .run = job->landing->run };

		if (run_is_leading(w, g.run))
			pthread_cond_wait(&w->landings_done, &w->landing_lock);
		else
			lead_group(&g);
	}
	ret = job->result;
	pthread_mutex_unlock(&w->landing_lock);
	return ret;
}

/* --- landing -------------------------------------------------------------- */

int landing_land_file(struct writer *w, int staged_dir, const char *staged_name,
		      const struct landing *l, char *reason)
{
	struct landing_job job = {
		.staged_dir = staged_dir, .staged_name = staged_name, .landing = l,
		.reason = reason, .result = 1,
	};
	int run_fd, ret;

	/* One name in the run: whatever the caller checked, never a path. */
	if (names_check_artifact(l->name, NULL) < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "invalid file name");
		return -EINVAL;
	}
	ret = landing_check_run(w, l->run);
	run_fd = ret == 0 ? store_open_run(w->view->store, w->view->client, l->run, O_PATH) : -1;
	if (run_fd >= 0)
		close(run_fd);	/* the tenant's own run dir: its run, whoever else claims the id */
	else if (ret == 0)
		ret = index_claim_run(w->view->index, w->view->client, l->run);
	if (ret < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, ret == -EACCES ?
			 "the run belongs to another tenant" : "invalid run id");
		return ret;
	}
	job.fd = seal_staged(staged_dir, staged_name, l, &job.sealed, reason);
	if (job.fd < 0)
		return job.fd;
	ret = land_in_group(w, &job);
	close(job.fd);
	return ret;
}

int landing_stage_copy(struct writer *w, int src, uint64_t limit, char *staged_name,
		       struct landing *l, char *reason)
{
	int staged, ret;

	writer_work_name(w, "copy", staged_name, 64);
	staged = openat(w->work_fd, staged_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (staged < 0) {
		ret = -errno;
		goto out;
	}
	ret = store_copy_range(src, staged, limit, &l->size);
	if (ret == 0)
		ret = landing_hash_and_flush(staged, l->sha256);
	close(staged);
	if (ret < 0)
		unlinkat(w->work_fd, staged_name, 0);
out:
	if (ret < 0)
		snprintf(reason, AUDIT_REASON_SIZE, "cannot stage a copy of the file: %s",
			 strerror(-ret));
	return ret;
}

/* --- legacy runs ------------------------------------------------------------- */

int landing_migrate_legacy(struct view *view, const char *run, bool dry_run, char *reason)
{
	int legacy_fd = -1, artifacts_fd = -1, tenant_fd = -1, lock, ret;
	char *owner = NULL;
	char done[AUDIT_REASON_SIZE];

	if (names_check_run(run, NULL) < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "a run may not be named %s: the view "
			 "would never show it", run);
		return -EINVAL;
	}
	/* Its writers (a kernel-server of the old layout takes none) wait for the move. */
	lock = store_lock_run(view->store, NULL, run, true);
	if (lock < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot lock the run: %s", strerror(-lock));
		return -EIO;
	}
	legacy_fd = store_open_legacy_run(view->store, run, O_RDONLY);
	if (legacy_fd < 0) {
		store_unlock(lock);
		snprintf(reason, AUDIT_REASON_SIZE, "no legacy run of that id");
		return legacy_fd == -EINVAL || legacy_fd == -ELOOP ? -ENOENT : legacy_fd;
	}
	ret = index_get_run_owner(view->index, run, &owner);
	if (ret == 0 && strcmp(owner, view->client) != 0)
		ret = -EACCES;
	else if (ret == 0 || ret == -ENOENT)
		ret = find_foreign_run(view, run, false);
	if (ret < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, ret == -EACCES ?
			 "another tenant owns or holds a run of that id" :
			 "cannot tell who owns the run id: %s", strerror(-ret));
		goto out;
	}
	if (dry_run) {
		tenant_fd = store_open_run(view->store, view->client, run, O_PATH);
		ret = tenant_fd >= 0 || tenant_fd == -ELOOP || tenant_fd == -ENOTDIR ? -EEXIST : 0;
		if (tenant_fd >= 0)
			close(tenant_fd);
		tenant_fd = -1;
		if (ret < 0)
			snprintf(reason, AUDIT_REASON_SIZE, "the tenant has a run of that id already");
		goto out;
	}
	tenant_fd = store_make_tenant(view->store, view->client);
	if (tenant_fd < 0) {
		ret = tenant_fd;
		snprintf(reason, AUDIT_REASON_SIZE, "cannot make the tenant's area: %s",
			 strerror(-ret));
		goto out;
	}
	artifacts_fd = store_open_artifacts(view->store, O_RDONLY);
	if (artifacts_fd < 0 ||
	    renameat2(artifacts_fd, run, tenant_fd, run, RENAME_NOREPLACE) < 0 ||
	    fsync(tenant_fd) < 0 || fsync(artifacts_fd) < 0) {
		ret = artifacts_fd < 0 ? artifacts_fd : -errno;
		snprintf(reason, AUDIT_REASON_SIZE, ret == -EEXIST || ret == -ENOTEMPTY ?
			 "the tenant has a run of that id already" :
			 "cannot move the run: %s", strerror(-ret));
		ret = ret == -ENOTEMPTY ? -EEXIST : ret;
		goto out;
	}
	index_claim_run(view->index, view->client, run);
out:
	if (ret != -ENOENT && !dry_run) {
		snprintf(done, sizeof(done), "run moved from the legacy layout %s/%s/",
			 STORE_ARTIFACTS_DIR, run);
		audit_record(view, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, -ret,
			     ret ? reason : done);
	}
	free(owner);
	if (artifacts_fd >= 0)
		close(artifacts_fd);
	if (tenant_fd >= 0)
		close(tenant_fd);
	close(legacy_fd);
	store_unlock(lock);
	/* After the unlock: indexing takes the run's lock, shared. */
	if (ret == 0 && !dry_run) {
		view_sync_run(view, run, VIEW_SYNC_FORCE, NULL);
		store_note_change(view->store, view->client, run);
	}
	return ret;
}

/* --- renames ----------------------------------------------------------------- */

struct entry_move {
	const char *from, *to;
};

/* metaedit_rename_entry() as an edit; a run without metadata.json has nothing to move. */
static int move_entry(struct meta_run *meta, const void *ctx)
{
	const struct entry_move *move = ctx;

	return meta->run_id ? metaedit_rename_entry(meta, move->from, move->to) : 1;
}

int landing_rename_artifact(struct writer *w, const char *run, const char *from,
			    const char *to, bool no_replace, char *reason)
{
	struct index_attrs attrs = { 0 };
	struct metafile_version version;
	struct entry_move move = { from, to };
	struct meta_run meta = { 0 };
	const char *sha256;
	char intent[64] = "";
	struct stat st;
	int run_fd, lock, ret;

	if (names_check_artifact(from, NULL) < 0 || names_check_artifact(to, NULL) < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "invalid file name");
		return -EINVAL;
	}
	run_fd = store_open_locked_run(w->view->store, w->view->client, run, O_RDONLY, &lock);
	if (run_fd < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, run_fd == -ENOENT ? "no such run" :
			 "cannot lock the run: %s", strerror(-run_fd));
		return run_fd;
	}
	if (fstatat(run_fd, from, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
		ret = -ENOENT;
		snprintf(reason, AUDIT_REASON_SIZE, "no such artifact to rename");
		goto out;
	}
	if (no_replace && faccessat(run_fd, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		ret = -EEXIST;
		snprintf(reason, AUDIT_REASON_SIZE, "the new name exists");
		goto out;
	}
	/* Refuse before anything moves if metadata.json cannot be kept valid. */
	ret = metaedit_read(run_fd, &meta, &version, reason);
	if (ret < 0 && ret != -ENOENT)
		goto out;
	index_get_file_attrs(w->view->index, w->view->client, run, from, &attrs);
	sha256 = index_attrs_value(&attrs, "sha256");
	ret = write_intent(w, json_pack("{s:s, s:s, s:s}", "run", run, "name", to,
					"renamed_from", from), intent);
	if (ret == 0 && (renameat(run_fd, from, run_fd, to) < 0 || fsync(run_fd) < 0))
		ret = -errno;
	if (ret < 0) {
		snprintf(reason, AUDIT_REASON_SIZE, "cannot rename the file: %s", strerror(-ret));
		ret = -EIO;
		goto out;
	}
	if (version.present)
		ret = metaedit_apply(w, run_fd, &meta, &version, move_entry, &move, reason);
	if (ret < 0) {
		intent[0] = '\0';	/* renamed: the intent finishes the entry */
		goto out;
	}
	view_index_run(w->view, run, run_fd, VIEW_SYNC_FORCE, NULL);
	store_note_change(w->view->store, w->view->client, run);
	if (sha256)
		index_set_sha256(w->view->index, w->view->client, run, to, (int64_t)st.st_ino,
				 st.st_size, store_time_ns(&st.st_mtim), sha256);
out:
	if (intent[0])
		unlinkat(w->work_fd, intent, 0);
	close(run_fd);
	store_unlock(lock);
	index_attrs_release(&attrs);
	meta_run_release(&meta);
	return ret;
}

/* --- recovery ---------------------------------------------------------------- */

/* Completes the entry of a rename an intent describes, if the file was renamed. */
static bool recover_rename(struct writer *w, json_t *doc)
{
	char reason[AUDIT_REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct entry_move move;
	const char *run;
	bool done = false;
	int run_fd, lock;

	if (json_unpack(doc, "{s:s, s:s, s:s}", "run", &run, "name", &move.to,
			"renamed_from", &move.from) < 0 || names_check_run(run, NULL) < 0 ||
	    names_check_artifact(move.to, NULL) < 0 || names_check_artifact(move.from, NULL) < 0)
		return false;
	run_fd = store_open_locked_run(w->view->store, w->view->client, run, O_RDONLY, &lock);
	if (run_fd < 0)
		return false;
	if (faccessat(run_fd, move.from, F_OK, AT_SYMLINK_NOFOLLOW) < 0 &&
	    faccessat(run_fd, move.to, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
	    metaedit_read(run_fd, &meta, &version, reason) == 0 &&
	    metaedit_apply(w, run_fd, &meta, &version, move_entry, &move, reason) == 0) {
		view_index_run(w->view, run, run_fd, VIEW_SYNC_FORCE, NULL);
		log_warning("client %s run %s file %s: completed a rename from %s cut short by "
			    "a crash", w->view->client, run, move.to, move.from);
		done = true;
	}
	close(run_fd);
	store_unlock(lock);
	meta_run_release(&meta);
	return done;
}

/*
 * The run of a group landing's record, "intent.<serial>.<run>"
 * (writer_intent_name()); "" for an intent of another kind.
 */
static const char *intent_run(const char *name)
{
	const char *dot = strchr(name + strlen("intent."), '.');

	return dot ? dot + 1 : "";
}

/*
 * Completes the entries of a group landing whose record (the first draft
 * of its metadata.json, see metaedit_apply_ordered()) a crash left: each
 * file of the record that is in the run, sealed for that entry and
 * holding the sealed bytes, gets its entry where metadata.json has it not.
 * Returns how many were completed.
 */
static unsigned int recover_record(struct writer *w, const char *run, const char *buf,
				   size_t len)
{
	char reason[AUDIT_REASON_SIZE] = "";
	struct meta_run record = { 0 }, meta = { 0 };
	struct metafile_version version;
	unsigned int completed = 0;
	int run_fd, lock;

	if (meta_parse(buf, len, &record, NULL, 0) < 0)
		goto out;
	run_fd = store_open_locked_run(w->view->store, w->view->client, run, O_RDONLY, &lock);
	if (run_fd < 0)
		goto out;
	for (size_t i = 0; i < record.n_artifacts; i++) {
		const struct meta_artifact *entry = &record.artifacts[i], *now;
		struct landing l = {
			.run = run, .name = entry->filename, .agent_id = entry->agent_id,
			.workflow_id = record.workflow_id, .user_directive = record.user_directive,
			.size = entry->size_bytes,
		};
		struct stat st;
		bool holds;
		int fd;

		if (!entry->generated_at || !entry->agent_id ||
		    read_metadata_for_landing(w, run_fd, run, &meta, &version, reason) < 0)
			continue;
		now = meta_find_artifact(&meta, entry->filename);
		if (now && now->generated_at && strcmp(now->generated_at, entry->generated_at) == 0)
			continue;	/* its entry made it */
		fd = store_open_regular(run_fd, entry->filename, O_RDONLY, &st);
		holds = fd >= 0 && seal_holds(fd, &st, run, entry->filename, entry->generated_at,
					      l.sha256);
		if (fd >= 0)
			close(fd);
		snprintf(l.generated_at, sizeof(l.generated_at), "%s", entry->generated_at);
		l.size = holds ? (uint64_t)st.st_size : 0;
		if (holds && record_landing(w, run_fd, &l, &meta, &version, reason) == 0) {
			log_warning("client %s run %s file %s: completed a promotion cut short by "
				    "a crash", w->view->client, run, l.name);
			completed++;
		}
		meta_run_release(&meta);
	}
	close(run_fd);
	store_unlock(lock);
out:
	meta_run_release(&meta);
	meta_run_release(&record);
	return completed;
}

/* Completes the metadata of a landing an intent describes, if it landed. */
static unsigned int recover_intent(struct writer *w, int work_fd, const char *name)
{
	char reason[AUDIT_REASON_SIZE] = "", sha[LANDING_SHA256_HEX_SIZE];
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct landing l = { 0 };
	json_error_t error;
	const char *generated_at, *sha256;
	json_int_t size = -1;
	unsigned int done = 0;
	struct stat st;
	json_t *doc;
	char *buf;
	size_t len;
	int run_fd, fd, lock;

	if (store_read_file(work_fd, name, INTENT_MAX, &buf, &len, &st) < 0)
		return 0;
	doc = json_loadb(buf, len, 0, &error);
	if (doc && json_object_get(doc, "artifacts")) {
		done = recover_record(w, intent_run(name), buf, len);
		free(buf);
		goto out;
	}
	free(buf);
	if (doc && json_object_get(doc, "renamed_from")) {
		done = recover_rename(w, doc);
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
	run_fd = store_open_locked_run(w->view->store, w->view->client, l.run, O_RDONLY, &lock);
	if (run_fd < 0)
		goto out;
	/* Only the very content the intent promised is recorded. */
	fd = store_open_regular(run_fd, l.name, O_RDONLY, &st);
	if (fd >= 0 && (uint64_t)st.st_size == l.size && landing_hash_file(fd, sha) == 0 &&
	    strcmp(sha, l.sha256) == 0 &&
	    read_metadata_for_landing(w, run_fd, l.run, &meta, &version, reason) == 0 &&
	    record_landing(w, run_fd, &l, &meta, &version, reason) == 0) {
		log_warning("client %s run %s file %s: completed a promotion cut short by a crash",
			    w->view->client, l.run, l.name);
		done = 1;
	}
	if (fd >= 0)
		close(fd);
	close(run_fd);
	store_unlock(lock);
out:
	meta_run_release(&meta);
	json_decref(doc);
	return done;
}

/*
 * Moves a staged file into its run when the run's metadata.json already
 * has the entry it was sealed for but the file did not get there (the
 * rename of metadata.json outlived a crash, the file's did not).
 * Returns whether it did.
 */
static bool recover_staged(struct writer *w, int dir_fd, const char *name)
{
	char reason[AUDIT_REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	const struct meta_artifact *entry;
	struct landing l = { 0 };
	struct seal seal = { 0 };
	bool done = false, there;
	int fd, in_run, run_fd = -1, lock = -1;
	struct stat st, landed;

	fd = store_open_regular(dir_fd, name, O_RDONLY, &st);
	if (fd < 0 || seal_read(fd, &seal) < 0 || names_check_run(seal.run, NULL) < 0 ||
	    names_check_artifact(seal.name, NULL) < 0)
		goto out;
	run_fd = store_open_locked_run(w->view->store, w->view->client, seal.run, O_RDONLY,
				       &lock);
	if (run_fd < 0)
		goto out;
	if (read_metadata_for_landing(w, run_fd, seal.run, &meta, &version, reason) < 0)
		goto out;
	entry = meta_find_artifact(&meta, seal.name);
	if (!entry || !entry->generated_at || strcmp(entry->generated_at, seal.generated_at) != 0)
		goto out;	/* its entry never landed: nothing was promised */
	in_run = store_open_regular(run_fd, seal.name, O_RDONLY, &landed);
	there = in_run >= 0 &&
		seal_holds(in_run, &landed, seal.run, seal.name, seal.generated_at, l.sha256);
	if (in_run >= 0)
		close(in_run);
	if (there)
		goto out;
	l.run = seal.run;
	l.name = seal.name;
	l.size = (uint64_t)st.st_size;
	snprintf(l.generated_at, sizeof(l.generated_at), "%s", seal.generated_at);
	if (!seal_holds(fd, &st, seal.run, seal.name, seal.generated_at, l.sha256) ||
	    fchmodat(dir_fd, name, w->options.file_mode, 0) < 0 ||
	    renameat(dir_fd, name, run_fd, seal.name) < 0 || fsync(run_fd) < 0)
		goto out;
	index_landings(w, run_fd, l.run, &meta, &version, &(const struct landing *){ &l }, 1);
	log_warning("client %s run %s file %s: completed a promotion cut short by a crash",
		    w->view->client, l.run, l.name);
	done = true;
out:
	if (run_fd >= 0)
		close(run_fd);
	store_unlock(lock);
	if (fd >= 0)
		close(fd);
	seal_release(&seal);
	meta_run_release(&meta);
	return done;
}

/* recover_staged() for every file in dir_fd, and in its subdirectories with descend. */
static unsigned int recover_staged_in(struct writer *w, int dir_fd, bool descend)
{
	unsigned int completed = 0;
	struct dirent *entry;
	DIR *dir;

	if (store_open_dir(dir_fd, &dir) < 0)
		return 0;
	while ((entry = readdir(dir))) {
		int sub;

		if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0 ||
		    strncmp(entry->d_name, "intent.", 7) == 0)
			continue;
		if (entry->d_type == DT_REG) {
			completed += recover_staged(w, dir_fd, entry->d_name);
			continue;
		}
		if (!descend || entry->d_type != DT_DIR)
			continue;
		sub = store_open_beneath(dir_fd, entry->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
		if (sub >= 0) {
			completed += recover_staged_in(w, sub, false);
			close(sub);
		}
	}
	closedir(dir);
	return completed;
}

/*
 * Finishes what a dead instance left (its intents, then staged files
 * whose entries landed without them), then removes it.
 */
static unsigned int reclaim_instance(struct writer *w, int staging_fd, const char *name)
{
	unsigned int completed = 0;
	struct dirent *entry;
	int fd, work_fd, runs_fd, lock = -1;
	DIR *dir;

	fd = store_open_beneath(staging_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (fd < 0)
		return 0;
	/* An instance of an earlier artifactfs says it is alive by an flock on itself. */
	if (faccessat(fd, WRITER_INSTANCE_LOCK, F_OK, AT_SYMLINK_NOFOLLOW) < 0 ?
	    flock(fd, LOCK_EX | LOCK_NB) < 0 :
	    (lock = store_lock_file(fd, WRITER_INSTANCE_LOCK, false)) < 0) {
		close(fd);	/* alive: another process writing this tenant's store */
		return 0;
	}
	work_fd = store_open_beneath(fd, "work", O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (work_fd >= 0 && store_open_dir(work_fd, &dir) == 0) {
		while ((entry = readdir(dir)))
			if (strncmp(entry->d_name, "intent.", 7) == 0)
				completed += recover_intent(w, work_fd, entry->d_name);
		closedir(dir);
	}
	if (work_fd >= 0) {
		completed += recover_staged_in(w, work_fd, false);
		close(work_fd);
	}
	runs_fd = store_open_beneath(fd, "runs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (runs_fd >= 0) {
		completed += recover_staged_in(w, runs_fd, true);
		close(runs_fd);
	}
	if (store_remove_tree(staging_fd, name) < 0)
		log_warning("client %s: cannot remove stale staging %s", w->view->client, name);
	close(fd);
	store_unlock(lock);
	return completed;
}

unsigned int landing_recover(struct writer *w)
{
	unsigned int completed = 0;
	struct dirent *entry;
	DIR *dir;

	if (store_open_dir(w->staging_fd, &dir) == 0) {
		while ((entry = readdir(dir)))
			if (entry->d_name[0] != '.' && strcmp(entry->d_name, w->instance) != 0)
				completed += reclaim_instance(w, w->staging_fd, entry->d_name);
		closedir(dir);
	}
	return completed;
}
