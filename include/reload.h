/*
 * reload.h - what the daemon does on signals other than stop: SIGHUP
 * reconnects to syslog and reads /etc/mime.types again; SIGUSR1 and
 * SIGUSR2 turn logging one level up (towards debug) or down (towards
 * error).  The mount stays served throughout.
 *
 * The handlers only write the signal's number into a pipe; a thread of
 * this module does the work, outside signal context.  libfuse's own
 * handlers keep SIGTERM and SIGINT (unmount and exit); SIGHUP, which
 * libfuse would also treat as "exit", is taken over here.
 */
#ifndef ARTIFACTFS_RELOAD_H
#define ARTIFACTFS_RELOAD_H

#include "log.h"

struct reload;

/*
 * Installs the handlers (after fuse_set_signal_handlers()) and starts the
 * thread, which calls reload_config(ctx) on SIGHUP to read the system's
 * configuration again; level is the level logging starts at.  Returns 0
 * and *out, or -errno (logged).
 */
int reload_start(void (*reload_config)(void *ctx), void *ctx, enum log_level level,
		 struct reload **out);

/* Ignores SIGHUP, SIGUSR1 and SIGUSR2 from now on and stops the thread.  NULL is a no-op. */
void reload_stop(struct reload *reload);

#endif
