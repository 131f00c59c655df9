/*
 * watch.h - noticing changes the kernel-server (or another host) makes to
 * the store.
 *
 * A thread follows one tenant directory (or every one) and each run dir
 * and reports what changed, so the daemon can keep long kernel caches and
 * still show every change within moments.  It follows them with inotify,
 * which sees the changes made through this host's kernel, or, on a store
 * that other hosts write too (a network file system), by polling their
 * change stamps.  Names are reported as found in the store; the handler
 * decides what is visible.
 */
#ifndef ARTIFACTFS_WATCH_H
#define ARTIFACTFS_WATCH_H

#include <stdbool.h>

#include "store.h"

struct watch_handler {
	/*
	 * Anything of client may have changed: its tenant dir came or went,
	 * events were lost.  client NULL: of every tenant.
	 */
	void (*tenant_changed)(void *ctx, const char *client);
	/* A name in client's tenant dir was created, removed or renamed. */
	void (*run_changed)(void *ctx, const char *client, const char *run);
	/* A file in a run dir changed: entry when created, removed or renamed. */
	void (*file_changed)(void *ctx, const char *client, const char *run, const char *file,
			     bool entry);
	/*
	 * This run had changes and has been quiet for a moment since (or has
	 * kept changing for half a second): once per burst, at most about
	 * half a second after the first change.  content: a file was written
	 * or its attributes changed, which the run's stamp (names,
	 * metadata.json) cannot tell.  Returns 0, or how many milliseconds
	 * later to be called again for this run (with content set) if
	 * nothing changes in it before; a change first brings the call back
	 * to the usual moment.
	 */
	unsigned int (*run_settled)(void *ctx, const char *client, const char *run, bool content);
	/* A directory could not be watched: some changes will go unseen. */
	void (*degraded)(void *ctx);
};

struct watch;

enum watch_mode {
	WATCH_AUTO,	/* WATCH_POLL on a network file system, else WATCH_INOTIFY */
	WATCH_INOTIFY,
	/*
	 * Every poll_ms, a round: the stamps (mtime, ctime, inode) of
	 * artifacts/ and of each tenant dir followed; what each tenant's
	 * change log (store.h) gained, the runs artifactfs changed on any
	 * host; the runs changed in the last minute; and the next few hundred
	 * of the others (their dir and metadata.json, two stats each), so
	 * that a sweep comes round to every run.  A file rewritten in place,
	 * keeping its name, is seen only once its run changes otherwise.
	 */
	WATCH_POLL,
};

#define WATCH_POLL_MS_DEFAULT 1000
#define WATCH_POLL_MS_MIN 100
#define WATCH_POLL_MS_MAX 60000

/* "auto", "inotify" or "poll" into *mode.  Returns 0 or -EINVAL. */
int watch_parse_mode(const char *name, enum watch_mode *mode);

/*
 * Starts watching client's directory in store (or waiting for it to be
 * created), or with client NULL every tenant directory, those created
 * later too, on a new thread that calls handler with ctx; mode says how
 * (WATCH_AUTO is settled here, from the store's file system type, and
 * logged), poll_ms how often a polling watch polls.
 * Returns 0 and *out, or -errno (logged).
 */
int watch_start(const struct store *store, const char *client, enum watch_mode mode,
		unsigned int poll_ms, const struct watch_handler *handler, void *ctx,
		struct watch **out);

/* Stops the thread (no handler call after return) and frees the watch. */
void watch_stop(struct watch *watch);

#endif
