/*
 * reload.h - what the daemon does on signals other than stop: SIGHUP
 * reconnects to syslog and reads /etc/mime.types again; SIGUSR1 and
 * SIGUSR2 turn logging one level up (towards debug) or down (towards
 * error).  The mount stays served throughout.
 *
 * The three signals are blocked in every thread (reload_block_signals(),
 * first thing in main, so every thread started later inherits the
 * block) and read from a signalfd by a thread of this module, which does
 * the work outside signal context.  No other thread ever takes them, so
 * a thread busy or blocked elsewhere never holds one back.  libfuse's
 * own handlers keep SIGTERM and SIGINT (unmount and exit); SIGHUP, which
 * libfuse would also treat as "exit", is taken over here.
 */
#ifndef ARTIFACTFS_RELOAD_H
#define ARTIFACTFS_RELOAD_H

#include "log.h"

struct reload;

/*
 * Blocks SIGHUP, SIGUSR1 and SIGUSR2 in the calling thread, and so in
 * every thread it starts afterwards.  Call it before any thread is
 * started: one that does not block them could take one and die of it.
 * A signal that comes before reload_start() waits for it.  Returns 0 or
 * -errno.
 */
int reload_block_signals(void);

/*
 * Starts the thread that takes the blocked signals: it calls
 * reload_config(ctx) on SIGHUP to read the system's configuration again;
 * level is the level logging starts at.  Returns 0 and *out, or -errno
 * (logged).
 */
int reload_start(void (*reload_config)(void *ctx), void *ctx, enum log_level level,
		 struct reload **out);

/* Stops the thread; the signals stay blocked, unread, until exit.  NULL is a no-op. */
void reload_stop(struct reload *reload);

#endif
