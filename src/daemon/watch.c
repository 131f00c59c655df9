/*
 * watch.c - the inotify thread that follows a tenant's part of the store,
 * or every tenant's.
 *
 * Watched: the store root (for artifacts/ appearing), artifacts/ (for
 * tenant dirs appearing or going), each tenant dir followed (runs) and
 * every run dir in it (files).  Each event is reported at once (cache invalidation must be
 * quick); each run that changed is reported once more when it has been
 * quiet for SETTLE_QUIET_MS, or SETTLE_MAX_MS after its first change if
 * it never is: re-indexing a run costs as much as the run is big, and a
 * writer adding one file every few milliseconds must not pay for it once
 * per file (1,000 such files cost 2.3 s of CPU when every batch of events
 * settled at once).
 *
 * inotify only sees changes made through this host's kernel.  A store
 * that other hosts write (GlusterFS, NFS, CephFS) is polled instead, a
 * round every poll_ms (see POLL_SWEEP_RUNS below): a run found changed is
 * reported as inotify events would report it, changed at once and
 * settled a moment later.  docs/deployment.md says what that costs.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <search.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "names.h"
#include "watch.h"

enum level { LEVEL_ROOT, LEVEL_ARTIFACTS, LEVEL_TENANT, LEVEL_RUN };

#define ENTRY_EVENTS (IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)
#define SELF_EVENTS (IN_DELETE_SELF | IN_MOVE_SELF)
#define RUN_EVENTS (ENTRY_EVENTS | IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB)

#define SETTLE_QUIET_MS 50
#define SETTLE_MAX_MS 500

static const uint32_t level_masks[] = {
	[LEVEL_ROOT] = IN_CREATE | IN_MOVED_TO,
	[LEVEL_ARTIFACTS] = ENTRY_EVENTS,
	[LEVEL_TENANT] = ENTRY_EVENTS | SELF_EVENTS,
	[LEVEL_RUN] = RUN_EVENTS | IN_EXCL_UNLINK,
};

struct watched {
	int wd;
	enum level level;
	char client[NAMES_ID_MAX + 1];	/* LEVEL_TENANT and LEVEL_RUN */
	char run[NAMES_ID_MAX + 1];	/* LEVEL_RUN only */
};

/* What polling last saw of a directory, or of a metadata.json (zero: none). */
struct stamp {
	int64_t ino, size, mtime_ns, ctime_ns;
};

struct polled_run {
	char name[NAMES_ID_MAX + 1];
	struct stamp dir, meta;
	int64_t hot_until_ms;	/* changed lately: polled every round until then */
};

struct polled_tenant {
	char client[NAMES_ID_MAX + 1];
	bool present;
	struct stamp dir;
	struct polled_run *runs;	/* sorted by name */
	size_t n_runs;
	size_t sweep_next;	/* the run the next round's sweep starts at */
	/* How far the tenant's change log (store.h) has been read. */
	bool log_known;
	int64_t log_ino, log_offset;
};

/* follow_names() finds an item's name at its start. */
_Static_assert(offsetof(struct polled_run, name) == 0, "a run starts with its name");
_Static_assert(offsetof(struct polled_tenant, client) == 0, "a tenant starts with its name");

/*
 * A round polls the tenant dirs, reads their change logs, polls the runs
 * changed in the last POLL_HOT_MS, and sweeps on through the others, at
 * most POLL_SWEEP_RUNS of them (two stats each) per round: what bounds the
 * cost of an idle store of many runs.  A change artifactfs made, on any
 * host, is in the log and seen the next round; one only the kernel-server
 * made to a quiet run, by the time the sweep comes round to it.
 */
#define POLL_SWEEP_RUNS 500
#define POLL_HOT_MS 60000
/* Read from a change log per round at most; the rest next round. */
#define POLL_LOG_CHUNK (256 * 1024)

struct watch {
	const struct store *store;
	const char *client;	/* the tenant followed; NULL: every tenant */
	enum watch_mode mode;	/* WATCH_INOTIFY or WATCH_POLL */
	unsigned int poll_ms;
	/* Polling only: what was seen last, sorted by client. */
	struct stamp artifacts;
	struct polled_tenant *tenants;
	size_t n_tenants;
	const struct watch_handler *handler;
	void *ctx;
	int inotify_fd;
	int stop_fd;
	pthread_t thread;
	void *by_wd;		/* struct watched, by wd */
	bool degraded;
	/* Runs changed and not settled yet. */
	struct dirty_run {
		char client[NAMES_ID_MAX + 1];
		char run[NAMES_ID_MAX + 1];
		bool content;	/* a file's bytes or attributes, not just names */
		int64_t first_ms, last_ms;	/* CLOCK_MONOTONIC */
		int64_t retry_ms;	/* settle again then (0: when quiet) */
	} *dirty;
	size_t n_dirty, dirty_capacity;
};

static int compare_wd(const void *a, const void *b)
{
	const struct watched *x = a, *y = b;

	return (x->wd > y->wd) - (x->wd < y->wd);
}

static struct watched *find_watched(struct watch *watch, int wd)
{
	struct watched key = { .wd = wd };
	void *slot = tfind(&key, &watch->by_wd, compare_wd);

	return slot ? *(struct watched **)slot : NULL;
}

static void forget_watched(struct watch *watch, struct watched *watched)
{
	tdelete(watched, &watch->by_wd, compare_wd);
	free(watched);
}

/*
 * Watches the directory fd (taken over; a negative fd is passed back as
 * the error), opened O_PATH by a store layout function: the watch lands
 * on what the openat2() rules allow, never on a symlink's target.  what
 * names the directory in messages.  Returns 0, or -errno (-ENOENT when
 * it does not exist).
 */
static int add_watch(struct watch *watch, int fd, const char *what, enum level level,
		     const char *client, const char *run)
{
	char proc_path[64];
	struct watched *watched;
	void *slot;
	int wd;

	if (fd < 0)
		return fd;
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(watch->inotify_fd, proc_path, level_masks[level] | IN_ONLYDIR);
	close(fd);
	if (wd < 0) {
		int ret = -errno;
		if (!watch->degraded && ret != -ENOENT) {
			watch->degraded = true;
			log_warning("client %s: cannot watch %s for changes: %s",
				    client ? client : "(all)", what, strerror(-ret));
			watch->handler->degraded(watch->ctx);
		}
		return ret;
	}
	watched = find_watched(watch, wd);
	if (!watched) {
		watched = calloc(1, sizeof(*watched));
		if (!watched)
			return -ENOMEM;
		watched->wd = wd;
		slot = tsearch(watched, &watch->by_wd, compare_wd);
		if (!slot) {
			free(watched);
			return -ENOMEM;
		}
	}
	watched->level = level;
	snprintf(watched->client, sizeof(watched->client), "%s", client ? client : "");
	snprintf(watched->run, sizeof(watched->run), "%s", run ? run : "");
	return 0;
}

static int watch_run(struct watch *watch, const char *client, const char *run)
{
	return add_watch(watch, store_open_run(watch->store, client, run, O_PATH),
			 run, LEVEL_RUN, client, run);
}

/* Watches client's tenant dir, if it exists, and each run dir in it. */
static int establish_tenant(void *ctx, const char *client)
{
	struct watch *watch = ctx;
	struct dirent *entry;
	DIR *dir;
	int fd;

	if (add_watch(watch, store_open_tenant(watch->store, client, O_PATH),
		      "the tenant's directory", LEVEL_TENANT, client, NULL) < 0)
		return 0;
	fd = store_open_tenant(watch->store, client, O_PATH);
	if (fd < 0)
		return 0;
	if (store_open_dir(fd, &dir) == 0) {
		while ((entry = readdir(dir)))
			if (names_check_run(entry->d_name, NULL) == 0 &&
			    store_entry_type(dir, entry) == DT_DIR)
				watch_run(watch, client, entry->d_name);
		closedir(dir);
	}
	close(fd);
	return 0;
}

/* Watches every level that exists now, down to each run dir. */
static void establish(struct watch *watch)
{
	if (add_watch(watch, store_open_beneath(watch->store->root_fd, ".",
						O_PATH | O_DIRECTORY, 0),
		      "the store root", LEVEL_ROOT, NULL, NULL) < 0 ||
	    add_watch(watch, store_open_artifacts(watch->store, O_PATH),
		      STORE_ARTIFACTS_DIR "/", LEVEL_ARTIFACTS, NULL, NULL) < 0)
		return;
	if (watch->client)
		establish_tenant(watch, watch->client);
	else
		store_for_each_tenant(watch->store, establish_tenant, watch);
}

static void mark_dirty(struct watch *watch, const char *client, const char *run, bool content)
{
	int64_t now = clock_monotonic_ms();

	for (size_t i = 0; i < watch->n_dirty; i++)
		if (strcmp(watch->dirty[i].run, run) == 0 &&
		    strcmp(watch->dirty[i].client, client) == 0) {
			watch->dirty[i].content |= content;
			watch->dirty[i].last_ms = now;
			watch->dirty[i].retry_ms = 0;	/* changed again: wait for quiet */
			return;
		}
	if (watch->n_dirty == watch->dirty_capacity) {
		size_t bigger = watch->dirty_capacity ? watch->dirty_capacity * 2 : 16;
		void *grown = realloc(watch->dirty, bigger * sizeof(*watch->dirty));
		if (!grown) {
			/* Without a place to note it, treat it as everything changed. */
			watch->handler->tenant_changed(watch->ctx, client);
			return;
		}
		watch->dirty = grown;
		watch->dirty_capacity = bigger;
	}
	watch->dirty[watch->n_dirty] = (struct dirty_run){
		.content = content, .first_ms = now, .last_ms = now,
	};
	snprintf(watch->dirty[watch->n_dirty].client, sizeof(watch->dirty->client), "%s", client);
	snprintf(watch->dirty[watch->n_dirty++].run, sizeof(watch->dirty->run), "%s", run);
}

static int64_t settle_due_ms(const struct dirty_run *dirty)
{
	int64_t quiet = dirty->last_ms + SETTLE_QUIET_MS, latest = dirty->first_ms + SETTLE_MAX_MS;

	if (dirty->retry_ms)
		return dirty->retry_ms;
	return quiet < latest ? quiet : latest;
}

/*
 * Reports the runs due to settle and forgets them.  Returns how long to
 * wait for the next one to be due, in ms, or -1 when none is dirty.
 */
static int settle_due_runs(struct watch *watch)
{
	int64_t now = clock_monotonic_ms(), wait = -1;
	size_t kept = 0;

	for (size_t i = 0; i < watch->n_dirty; i++) {
		struct dirty_run *dirty = &watch->dirty[i];
		int64_t due = settle_due_ms(dirty);

		if (due <= now) {
			unsigned int again = watch->handler->run_settled(watch->ctx, dirty->client,
									 dirty->run, dirty->content);
			if (!again)
				continue;
			/* Asked back later: then parsed again whatever its stamp says. */
			dirty->retry_ms = now + again;
			dirty->content = true;
			dirty->first_ms = dirty->last_ms = now;	/* a new burst from here */
			due = dirty->retry_ms;
		}
		if (wait < 0 || due - now < wait)
			wait = due - now;
		watch->dirty[kept++] = *dirty;
	}
	watch->n_dirty = kept;
	return (int)wait;
}

/* Handles one event; sets *rescan when the watched levels must be rebuilt. */
static void handle_event(struct watch *watch, const struct inotify_event *event, bool *rescan)
{
	struct watched *watched = find_watched(watch, event->wd);
	const char *name = event->len ? event->name : "";

	if (event->mask & IN_Q_OVERFLOW) {
		*rescan = true;
		return;
	}
	if (!watched)
		return;
	if (event->mask & IN_IGNORED) {
		enum level level = watched->level;
		forget_watched(watch, watched);
		if (level != LEVEL_RUN)
			*rescan = true;
		return;
	}
	switch (watched->level) {
	case LEVEL_ROOT:
		if (strcmp(name, STORE_ARTIFACTS_DIR) == 0)
			*rescan = true;
		break;
	case LEVEL_ARTIFACTS:
		if (watch->client) {
			*rescan |= strcmp(name, watch->client) == 0;
		} else if (names_check_id(name, NULL) == 0) {
			/* A tenant came (or went: its own watch then reports that too). */
			log_debug("client %s: changed in the store (inotify 0x%x)", name,
				  event->mask);
			establish_tenant(watch, name);
			watch->handler->tenant_changed(watch->ctx, name);
		}
		break;
	case LEVEL_TENANT:
		if (event->mask & SELF_EVENTS) {
			*rescan = true;
			break;
		}
		if (names_check_run(name, NULL) < 0)
			break;
		if ((event->mask & (IN_CREATE | IN_MOVED_TO)) && (event->mask & IN_ISDIR))
			watch_run(watch, watched->client, name);
		log_debug("client %s run %s: changed in the store (inotify 0x%x)",
			  watched->client, name, event->mask);
		watch->handler->run_changed(watch->ctx, watched->client, name);
		mark_dirty(watch, watched->client, name, false);
		break;
	case LEVEL_RUN:
		if (!event->len || (event->mask & IN_ISDIR))
			break;	/* the dir itself, or a subdirectory: not shown */
		log_debug("client %s run %s file %s: changed in the store (inotify 0x%x)",
			  watched->client, watched->run, name, event->mask);
		watch->handler->file_changed(watch->ctx, watched->client, watched->run, name,
					     (event->mask & ENTRY_EVENTS) != 0);
		mark_dirty(watch, watched->client, watched->run,
			   (event->mask & ENTRY_EVENTS) == 0);
		break;
	}
}

/* --- polling ------------------------------------------------------------------ */

/* The stamp of dir_fd's name (a directory or a regular file); zero when missing. */
static struct stamp stamp_of(int dir_fd, const char *name)
{
	struct stamp stamp = { 0 };
	struct stat st;

	if (fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)))
		stamp = (struct stamp){
			.ino = (int64_t)st.st_ino, .size = S_ISREG(st.st_mode) ? st.st_size : 0,
			.mtime_ns = store_time_ns(&st.st_mtim), .ctime_ns = store_time_ns(&st.st_ctim),
		};
	return stamp;
}

/* The stamp of run's metadata.json, in the tenant dir tenant_fd. */
static struct stamp metadata_stamp(int tenant_fd, const char *run)
{
	char path[NAMES_ID_MAX + sizeof("/" NAMES_METADATA_FILE)];

	snprintf(path, sizeof(path), "%s/%s", run, NAMES_METADATA_FILE);
	return stamp_of(tenant_fd, path);
}

static bool same_stamp(const struct stamp *a, const struct stamp *b)
{
	return memcmp(a, b, sizeof(*a)) == 0;
}

/* The names store_for_each_tenant() or store_for_each_run() gave, in their (name) order. */
struct names {
	char (*names)[NAMES_ID_MAX + 1];
	size_t count, capacity;
};

static int add_name(void *ctx, const char *name)
{
	struct names *list = ctx;

	if (list->count == list->capacity) {
		size_t bigger = list->capacity ? list->capacity * 2 : 64;
		void *grown = realloc(list->names, bigger * sizeof(*list->names));
		if (!grown)
			return -ENOMEM;
		list->names = grown;
		list->capacity = bigger;
	}
	snprintf(list->names[list->count++], sizeof(*list->names), "%s", name);
	return 0;
}

/*
 * Brings a sorted array of what polling follows (*count items of size
 * bytes, each starting with its name: struct polled_run or struct
 * polled_tenant) in step with the names there now: an item whose name is
 * gone goes to gone(), a name new here gets a zeroed item that came()
 * fills, the others stay as they were.  Returns 0 or -ENOMEM (then
 * nothing changed).
 */
static int follow_names(struct watch *watch, void **items, size_t *count, size_t size,
			const struct names *now, void (*gone)(struct watch *, void *, void *),
			void (*came)(struct watch *, void *, void *), void *ctx)
{
	char *old = *items, *fresh = calloc(now->count ? now->count : 1, size);
	size_t i = 0, j = 0, n = 0;

	if (!fresh)
		return -ENOMEM;
	while (i < *count || j < now->count) {
		int order = i == *count ? 1 : j == now->count ? -1 :
			    strcmp(old + i * size, now->names[j]);

		if (order < 0) {
			gone(watch, ctx, old + i++ * size);
			continue;
		}
		if (order == 0) {
			memcpy(fresh + n * size, old + i++ * size, size);
		} else {
			snprintf(fresh + n * size, sizeof(*now->names), "%s", now->names[j]);
			came(watch, ctx, fresh + n * size);
		}
		j++;
		n++;
	}
	free(old);
	*items = fresh;
	*count = n;
	return 0;
}

/*
 * A run that came, went or changed: the kernel forgets what it cached of
 * it, and it is indexed again once settled (by its stamps: a change this
 * daemon made itself is indexed already and costs nothing more).
 */
static void report_run(struct watch *watch, const char *client, const char *run, bool report)
{
	if (!report)
		return;
	log_debug("client %s run %s: changed in the store (polled)", client, run);
	watch->handler->run_changed(watch->ctx, client, run);
	mark_dirty(watch, client, run, false);
}

/* A tenant whose runs are listed again, for run_gone() and run_came(). */
struct run_listing {
	struct polled_tenant *tenant;
	int tenant_fd;
	bool report;
};

static void run_gone(struct watch *watch, void *ctx, void *run)
{
	const struct run_listing *listing = ctx;

	report_run(watch, listing->tenant->client, ((struct polled_run *)run)->name,
		   listing->report);
}

static void run_came(struct watch *watch, void *ctx, void *item)
{
	const struct run_listing *listing = ctx;
	struct polled_run *run = item;

	run->dir = stamp_of(listing->tenant_fd, run->name);
	run->meta = metadata_stamp(listing->tenant_fd, run->name);
	report_run(watch, listing->tenant->client, run->name, listing->report);
}

/*
 * Lists the tenant's runs again (its dir changed): reports those that
 * came and went, and keeps the stamps of those still there.
 */
static int poll_run_names(struct watch *watch, struct polled_tenant *t, int tenant_fd,
			  bool report)
{
	struct run_listing listing = { t, tenant_fd, report };
	struct names now = { 0 };
	int ret = store_for_each_run(watch->store, t->client, add_name, &now);

	if (ret == 0)
		ret = follow_names(watch, (void **)&t->runs, &t->n_runs, sizeof(*t->runs), &now,
				   run_gone, run_came, &listing);
	free(now.names);
	return ret;
}

/* Stats one run again; reports it, and keeps it hot, when it changed. */
static void poll_run(struct watch *watch, struct polled_tenant *t, int tenant_fd,
		     struct polled_run *run, bool report)
{
	struct stamp dir = stamp_of(tenant_fd, run->name);
	struct stamp meta = metadata_stamp(tenant_fd, run->name);

	if (same_stamp(&dir, &run->dir) && same_stamp(&meta, &run->meta))
		return;
	run->dir = dir;
	run->meta = meta;
	run->hot_until_ms = clock_monotonic_ms() + POLL_HOT_MS;
	report_run(watch, t->client, run->name, report);
}

static int compare_run_name(const void *key, const void *run)
{
	return strcmp(key, ((const struct polled_run *)run)->name);
}

/* The runs named in buf (len bytes of whole lines of a change log), polled now. */
static void poll_logged_runs(struct watch *watch, struct polled_tenant *t, int tenant_fd,
			     char *buf, size_t len, bool report)
{
	for (char *line = buf, *end; line < buf + len; line = end + 1) {
		struct polled_run *run;

		end = memchr(line, '\n', (size_t)(buf + len - line));
		*end = '\0';
		if (names_check_run(line, NULL) < 0)
			continue;
		run = bsearch(line, t->runs, t->n_runs, sizeof(*t->runs), compare_run_name);
		if (run)
			poll_run(watch, t, tenant_fd, run, report);
		else
			t->dir = (struct stamp){ 0 };	/* new here: list the runs again */
	}
}

/*
 * Reads fd's change log from *offset (whole lines only, at most
 * POLL_LOG_CHUNK) and polls the runs it names; *offset moves past them.
 */
static void read_log(struct watch *watch, struct polled_tenant *t, int tenant_fd, int fd,
		     int64_t *offset, bool report)
{
	char *buf = malloc(POLL_LOG_CHUNK);
	ssize_t got;
	char *last;

	if (!buf)
		return;
	got = pread(fd, buf, POLL_LOG_CHUNK, *offset);
	last = got > 0 ? memrchr(buf, '\n', (size_t)got) : NULL;
	if (last) {
		poll_logged_runs(watch, t, tenant_fd, buf, (size_t)(last - buf + 1), report);
		*offset += last - buf + 1;
	}
	free(buf);
}

/*
 * What the tenant's change log gained since the last round: the runs
 * artifactfs changed on any host.  A log renamed to log.old (it grew too
 * long) is read to its end first; one lost track of (renamed twice
 * between two rounds) leaves the changes to the sweep.
 */
static void poll_change_log(struct watch *watch, struct polled_tenant *t, int tenant_fd,
			    bool report)
{
	int dir_fd = store_open_changes(watch->store, t->client), fd = -1;
	struct stat st;

	if (dir_fd < 0) {
		t->log_known = true;	/* no log yet: one made later is read from its start */
		return;
	}
	fd = store_open_beneath(dir_fd, STORE_CHANGES_LOG, O_RDONLY | O_NOFOLLOW, 0);
	if (fd == -ENOENT && t->log_known) {
		/* Just renamed to log.old, with no change since: its last lines. */
		fd = store_open_beneath(dir_fd, STORE_CHANGES_OLD, O_RDONLY | O_NOFOLLOW, 0);
		if (fd >= 0 && fstat(fd, &st) == 0 && (int64_t)st.st_ino == t->log_ino &&
		    st.st_size > t->log_offset)
			read_log(watch, t, tenant_fd, fd, &t->log_offset, report);
		goto out;
	}
	if (fd < 0 || fstat(fd, &st) < 0)
		goto out;
	if (!t->log_known) {
		t->log_known = true;	/* the daemon indexed the store since: start at the end */
		t->log_ino = (int64_t)st.st_ino;
		t->log_offset = st.st_size;
		goto out;
	}
	if ((int64_t)st.st_ino != t->log_ino) {
		int old = store_open_beneath(dir_fd, STORE_CHANGES_OLD, O_RDONLY | O_NOFOLLOW, 0);
		struct stat old_st;

		if (old >= 0 && fstat(old, &old_st) == 0 && (int64_t)old_st.st_ino == t->log_ino)
			read_log(watch, t, tenant_fd, old, &t->log_offset, report);
		if (old >= 0)
			close(old);
		t->log_ino = (int64_t)st.st_ino;
		t->log_offset = 0;
	}
	if (st.st_size > t->log_offset)
		read_log(watch, t, tenant_fd, fd, &t->log_offset, report);
out:
	if (fd >= 0)
		close(fd);
	close(dir_fd);
}

/*
 * Polls one tenant: its dir (runs that came or went), its change log,
 * its hot runs, and the next stretch of the sweep.  With report unset,
 * only notes what is there.
 */
static void poll_tenant(struct watch *watch, struct polled_tenant *t, size_t sweep, bool report)
{
	int tenant_fd = store_open_tenant(watch->store, t->client, O_PATH);
	int64_t now = clock_monotonic_ms();
	struct stamp dir;

	if (tenant_fd < 0) {
		if (t->present && report)
			watch->handler->tenant_changed(watch->ctx, t->client);
		t->present = false;
		t->dir = (struct stamp){ 0 };
		free(t->runs);
		t->runs = NULL;
		t->n_runs = 0;
		return;
	}
	dir = stamp_of(tenant_fd, ".");
	if (!t->present || !same_stamp(&dir, &t->dir)) {
		if (!t->present && report)
			watch->handler->tenant_changed(watch->ctx, t->client);
		/* Unlisted (no memory, say): looked at again next time. */
		if (poll_run_names(watch, t, tenant_fd, report && t->present) == 0)
			t->dir = dir;
		t->present = true;
	}
	poll_change_log(watch, t, tenant_fd, report);
	if (!report)
		goto out;	/* the first round: the listing stamped every run */
	for (size_t i = 0; i < t->n_runs; i++)
		if (t->runs[i].hot_until_ms > now)
			poll_run(watch, t, tenant_fd, &t->runs[i], report);
	for (size_t k = 0; k < sweep && k < t->n_runs; k++) {
		struct polled_run *run = &t->runs[(t->sweep_next + k) % t->n_runs];

		if (run->hot_until_ms <= now)
			poll_run(watch, t, tenant_fd, run, report);
	}
	if (t->n_runs)
		t->sweep_next = (t->sweep_next + sweep) % t->n_runs;
out:
	close(tenant_fd);
}

static void release_tenant(struct polled_tenant *t)
{
	free(t->runs);
}

static void tenant_gone(struct watch *watch, void *ctx, void *tenant)
{
	const bool *report = ctx;

	if (*report)
		watch->handler->tenant_changed(watch->ctx, ((struct polled_tenant *)tenant)->client);
	release_tenant(tenant);
}

/* A tenant new here is polled from its first round on: nothing to fill in. */
static void tenant_came(struct watch *watch, void *ctx, void *tenant)
{
}

/*
 * With every tenant followed: lists artifacts/ again when it changed,
 * adding the tenants that came (polled from then on) and reporting and
 * dropping those that went.  Returns 0 or -errno (then tried again).
 */
static int poll_tenant_names(struct watch *watch, bool report)
{
	struct names now = { 0 };
	int ret = store_for_each_tenant(watch->store, add_name, &now);

	if (ret == 0)
		ret = follow_names(watch, (void **)&watch->tenants, &watch->n_tenants,
				   sizeof(*watch->tenants), &now, tenant_gone, tenant_came,
				   &report);
	free(now.names);
	return ret;
}

/* One round of polling; with report unset (the first), only notes what is there. */
static void poll_store(struct watch *watch, bool report)
{
	if (!watch->client) {
		int artifacts_fd = store_open_artifacts(watch->store, O_PATH);
		struct stamp now = artifacts_fd >= 0 ? stamp_of(artifacts_fd, ".") :
						       (struct stamp){ 0 };

		if (artifacts_fd >= 0)
			close(artifacts_fd);
		if (!same_stamp(&now, &watch->artifacts) && poll_tenant_names(watch, report) == 0)
			watch->artifacts = now;
	} else if (!watch->n_tenants) {
		watch->tenants = calloc(1, sizeof(*watch->tenants));
		if (!watch->tenants)
			return;
		snprintf(watch->tenants->client, sizeof(watch->tenants->client), "%s",
			 watch->client);
		watch->n_tenants = 1;
	}
	for (size_t i = 0; i < watch->n_tenants; i++)
		poll_tenant(watch, &watch->tenants[i],
			    POLL_SWEEP_RUNS / watch->n_tenants ? POLL_SWEEP_RUNS / watch->n_tenants : 1,
			    report);
}

static void *watch_thread(void *arg)
{
	struct watch *watch = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	bool polling = watch->mode == WATCH_POLL;
	struct pollfd fds[2] = {
		{ .fd = watch->stop_fd, .events = POLLIN },
		{ .fd = watch->inotify_fd, .events = POLLIN },
	};
	int64_t next_poll = clock_monotonic_ms() + watch->poll_ms;
	int timeout = -1;

	for (;;) {
		bool rescan = false;
		ssize_t len;

		if (polling) {
			int64_t until_poll = next_poll - clock_monotonic_ms();

			if (until_poll < 0)
				until_poll = 0;
			if (timeout < 0 || until_poll < timeout)
				timeout = (int)until_poll;
		}
		if (poll(fds, polling ? 1 : 2, timeout) < 0 && errno != EINTR)
			break;
		if (fds[0].revents)
			break;
		while (!polling && (len = read(watch->inotify_fd, buf, sizeof(buf))) > 0) {
			for (char *p = buf; p < buf + len;) {
				const struct inotify_event *event = (const void *)p;
				handle_event(watch, event, &rescan);
				p += sizeof(*event) + event->len;
			}
		}
		if (rescan) {
			establish(watch);
			watch->handler->tenant_changed(watch->ctx, watch->client);
		}
		if (polling && clock_monotonic_ms() >= next_poll) {
			poll_store(watch, true);
			next_poll = clock_monotonic_ms() + watch->poll_ms;
		}
		timeout = settle_due_runs(watch);
	}
	return NULL;
}

int watch_parse_mode(const char *name, enum watch_mode *mode)
{
	static const char *const names[] = {
		[WATCH_AUTO] = "auto", [WATCH_INOTIFY] = "inotify", [WATCH_POLL] = "poll",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0) {
			*mode = (enum watch_mode)i;
			return 0;
		}
	return -EINVAL;
}

/*
 * The file system types other hosts may write too, whose changes inotify
 * never reports (FUSE: GlusterFS's client, sshfs and the like).
 */
static const char *network_file_system(long type)
{
	static const struct { long type; const char *name; } types[] = {
		{ 0x65735546, "FUSE" }, { 0x6969, "NFS" }, { 0x00c36400, "CephFS" },
		{ 0xff534d42, "CIFS" }, { 0xfe534d42, "SMB2" }, { 0x01021997, "9P" },
		{ 0x5346414f, "AFS" }, { 0x01161970, "GFS2" }, { 0x7461636f, "OCFS2" },
		{ 0x0bd00bd0, "Lustre" },
	};

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (types[i].type == type)
			return types[i].name;
	return NULL;
}

/* Settles WATCH_AUTO from the store's file system, and says how changes will be seen. */
static enum watch_mode settle_mode(const struct store *store, enum watch_mode mode,
				   unsigned int poll_ms)
{
	const char *network = NULL;
	struct statfs st;

	if (fstatfs(store->root_fd, &st) == 0)
		network = network_file_system((long)st.f_type);
	if (mode == WATCH_AUTO)
		mode = network ? WATCH_POLL : WATCH_INOTIFY;
	if (mode == WATCH_POLL)
		log_info("changes to the store: polled every %u ms%s%s%s", poll_ms,
			 network ? " (a " : "", network ? network : "",
			 network ? " file system, which other hosts may write)" : "");
	else if (network)
		log_warning("changes to the store: inotify, which does not see what other "
			    "hosts write to this %s file system (-o watch=poll does)", network);
	else
		log_info("changes to the store: inotify");
	return mode;
}

int watch_start(const struct store *store, const char *client, enum watch_mode mode,
		unsigned int poll_ms, const struct watch_handler *handler, void *ctx,
		struct watch **out)
{
	struct watch *watch;
	int ret;

	watch = calloc(1, sizeof(*watch));
	if (!watch)
		return -ENOMEM;
	watch->store = store;
	watch->client = client;
	watch->handler = handler;
	watch->ctx = ctx;
	watch->mode = settle_mode(store, mode, poll_ms);
	watch->poll_ms = poll_ms;
	watch->stop_fd = -1;
	watch->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (watch->inotify_fd < 0) {
		ret = -errno;
		log_error("cannot watch the store: inotify: %s", strerror(errno));
		goto fail;
	}
	watch->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (watch->stop_fd < 0) {
		ret = -errno;
		log_error("cannot watch the store: eventfd: %s", strerror(errno));
		goto fail;
	}
	if (watch->mode == WATCH_POLL)
		poll_store(watch, false);
	else
		establish(watch);
	ret = -pthread_create(&watch->thread, NULL, watch_thread, watch);
	if (ret < 0) {
		log_error("cannot start the watcher thread: %s", strerror(-ret));
		goto fail;
	}
	*out = watch;
	return 0;
fail:
	if (watch->inotify_fd >= 0)
		close(watch->inotify_fd);
	if (watch->stop_fd >= 0)
		close(watch->stop_fd);
	tdestroy(watch->by_wd, free);
	free(watch);
	return ret;
}

void watch_stop(struct watch *watch)
{
	uint64_t one = 1;

	if (!watch)
		return;
	if (write(watch->stop_fd, &one, sizeof(one)) == sizeof(one))
		pthread_join(watch->thread, NULL);
	close(watch->inotify_fd);
	close(watch->stop_fd);
	tdestroy(watch->by_wd, free);
	for (size_t i = 0; i < watch->n_tenants; i++)
		release_tenant(&watch->tenants[i]);
	free(watch->tenants);
	free(watch->dirty);
	free(watch);
}
