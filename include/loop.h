/*
 * loop.h - the daemon's request loop: threads that take turns reading
 * /dev/fuse, so that one waits in the kernel at a time.
 *
 * Why not libfuse's multithreaded loop: every one of its idle threads
 * waits in the kernel, and the kernel wakes one for each FORGET it
 * queues.  After a prune the kernel queues them by the thousand, and the
 * idle threads were woken over and over to read a few each (a walk of a
 * million files spent a sixth of its time so; docs/performance.md).
 * Letting fewer threads idle (libfuse's max_idle_threads) made it start
 * and end a thread for nearly every promoted file instead.
 *
 * Here the reading thread hands the reading over to a waiting thread (or
 * starts one, up to max_threads, kept from then on) only before it
 * serves a request that may take time; a FORGET it serves itself and
 * reads on.  Threads are never ended before the session is.
 */
#ifndef ARTIFACTFS_LOOP_H
#define ARTIFACTFS_LOOP_H

#include <fuse_lowlevel.h>

/* Threads serving at once unless -o max_threads says: libfuse's default. */
#define LOOP_THREADS_DEFAULT 10
/* Threads waiting in the kernel for requests unless -o max_idle_threads says. */
#define LOOP_READING_DEFAULT 2

/* What loop_run() returns when a signal stopped it: no signal's number. */
#define LOOP_STOPPED 0x10000

/*
 * Serves session until it ends: unmounted (returns 0), fuse_session_exit()
 * (a signal; returns LOOP_STOPPED), or a read of /dev/fuse fails (returns
 * -errno).
 * max_threads (at least 1) bounds the threads serving requests at once,
 * max_reading (at least 1) those waiting in the kernel for the next.
 */
int loop_run(struct fuse_session *session, unsigned int max_threads,
	     unsigned int max_reading);

#endif
