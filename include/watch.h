/*
 * watch.h - noticing changes the kernel-server makes to the store.
 *
 * A thread follows one tenant directory (or every one) and each run dir
 * with inotify and reports what changed, so the daemon can keep long
 * kernel caches and still show every change within moments.  Names are
 * reported as found in the store; the handler decides what is visible.
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

/*
 * Starts watching client's directory in store (or waiting for it to be
 * created), or with client NULL every tenant directory, those created
 * later too, on a new thread that calls handler with ctx.
 * Returns 0 and *out, or -errno (logged).
 */
int watch_start(const struct store *store, const char *client,
		const struct watch_handler *handler, void *ctx, struct watch **out);

/* Stops the thread (no handler call after return) and frees the watch. */
void watch_stop(struct watch *watch);

#endif
