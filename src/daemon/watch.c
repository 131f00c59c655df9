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
 * inotify only sees changes made through this host's kernel; a store on a
 * distributed file system needs polling as well (see docs/architecture.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

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

struct watch {
	const struct store *store;
	const char *client;	/* the tenant followed; NULL: every tenant */
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

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mark_dirty(struct watch *watch, const char *client, const char *run, bool content)
{
	int64_t now = now_ms();

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
	int64_t now = now_ms(), wait = -1;
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

static void *watch_thread(void *arg)
{
	struct watch *watch = arg;
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct pollfd fds[2] = {
		{ .fd = watch->inotify_fd, .events = POLLIN },
		{ .fd = watch->stop_fd, .events = POLLIN },
	};

	int timeout = -1;

	for (;;) {
		bool rescan = false;
		ssize_t len;

		if (poll(fds, 2, timeout) < 0 && errno != EINTR)
			break;
		if (fds[1].revents)
			break;
		while ((len = read(watch->inotify_fd, buf, sizeof(buf))) > 0) {
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
		timeout = settle_due_runs(watch);
	}
	return NULL;
}

int watch_start(const struct store *store, const char *client,
		const struct watch_handler *handler, void *ctx, struct watch **out)
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
	free(watch->dirty);
	free(watch);
}
