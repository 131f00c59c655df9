/*
 * fs.h - the FUSE low-level operations of a mount: one tenant's view at
 * the root, or (all_tenants) every tenant's in a directory of its own.
 *
 * fs.c is the only file that replies to the kernel: each operation decodes
 * its inode, asks the view, the store or the index, and replies once.
 * fs_promote.c does promote/'s part of the operations, fs_notify.c the
 * watcher's cache invalidations and the notifier thread (fs_internal.h
 * is their interface with fs.c).
 */
#ifndef ARTIFACTFS_FS_H
#define ARTIFACTFS_FS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "ino_cipher.h"
#include "inode.h"
#include "list.h"
#include "promote.h"
#include "tenant.h"
#include "watch.h"

struct landing_notice;		/* fs_notify.c's */

struct fs {
	/*
	 * Whom the mount serves: single_tenant at the root, or, when it is
	 * NULL, every tenant of the set in /<client>/.
	 */
	struct tenant_set *tenants;
	struct tenant *single_tenant;
	struct store *store;
	struct inode_table *inodes;
	struct fuse_session *session;	/* for cache invalidations */
	uid_t uid;			/* owner of the all-tenants root */
	gid_t gid;
	/*
	 * Kernel cache lifetime for entries and attributes, as configured
	 * (fixed once mounted).  Long, because the watcher pushes every
	 * change to the kernel; cut to 1 s, and keep_cache off, once degraded
	 * (set by the watcher thread when changes can no longer all be
	 * watched, read by every operation).
	 */
	double timeout;
	bool keep_cache;	/* data and directory caches survive open() */
	_Atomic bool degraded;
	/*
	 * Sequential read-ahead to set on the mount's backing device info
	 * (/sys/class/bdi/<bdi>/read_ahead_kb) once the kernel has its
	 * INIT reply; 0, or an empty bdi, leaves the kernel's.
	 */
	unsigned int read_ahead_kb;
	char bdi[32];		/* "MAJOR:MINOR" of the mount */
	/*
	 * The largest request (write, or read through the daemon) the INIT
	 * reply allows, and the block size an upload in promote/ reports,
	 * the largest power of two within it: cp sizes its writes by
	 * st_blksize, so a copy into promote/ sends a few large requests
	 * where 128 KiB ones would each pay a round trip.  Set by
	 * fs_size_requests() before mounting.
	 */
	unsigned int max_request;
	blksize_t upload_block;
	struct timespec mounted_at;
	struct ino_cipher ino_cipher;	/* how backing inode numbers are shown */
	/*
	 * FUSE passthrough: the kernel reads artifacts from their backing
	 * files itself, and no READ reaches the daemon.  passthrough_off says
	 * why it is not asked for (set before mounting; NULL: it is), and
	 * passthrough whether it is in use: set once the kernel granted it,
	 * cleared for good if the kernel refuses a backing file.
	 * backing_lock guards every struct backing, and the inodes' and open
	 * files' pointers to them; it is held across the kernel's backing
	 * open and close (ioctls on /dev/fuse, no disk I/O), never with the
	 * inode table locked.
	 */
	const char *passthrough_off;
	_Atomic bool passthrough;
	pthread_mutex_t backing_lock;
	/*
	 * Open files and directories, for those the kernel never releases
	 * (unmounted first, or stopped by a signal).  open_lock guards both
	 * lists.
	 */
	pthread_mutex_t open_lock;
	struct list_link *open_files;	/* of struct open_file */
	struct list_link *dir_handles;	/* of struct dir_handle */
	/*
	 * The thread that notifies the kernel for the requests, which must not
	 * do it themselves: the kernel may hold a directory lock for a LOOKUP
	 * or READDIRPLUS that waits for a free request thread while it takes
	 * that very lock to invalidate.  It shows landings (a FLUSH or RENAME
	 * in promote/ waits for that, within a bound) and prunes past
	 * max_files (an OPENDIR prunes itself as the bound nears, see
	 * fs_prune_before_listing()).
	 *
	 * round and lock are never held together, and neither while the
	 * kernel is notified, except round by the pruning itself.
	 */
	struct fs_notifier {
		pthread_t thread;
		pthread_mutex_t round;	/* held by one pruning round at a time */
		pthread_mutex_t lock;	/* guards the fields below, and stop's changes */
		pthread_cond_t wake;	/* the thread: something to do */
		pthread_cond_t shown;	/* requests: landings notified (CLOCK_MONOTONIC) */
		bool running;		/* the thread was started (main thread only) */
		bool prune_pending;	/* over the limit since the last prune */
		struct landing_notice *landings, **landings_tail;	/* to show, oldest first */
		uint64_t landings_queued, landings_shown;	/* how many so far */
		_Atomic bool stop;	/* also read unlocked in the prune loop */
	} notifier;
	/*
	 * Whether an OPENDIR may prune in its own thread: not when it may be
	 * the only request thread (-o max_threads=1, -s), which could then
	 * wait for a LOOKUP it is meant to serve.
	 */
	bool prune_in_requests;
};

extern const struct fuse_lowlevel_ops fs_operations;

/* Sets fs->max_request and fs->upload_block (before mounting). */
void fs_size_requests(struct fs *fs);

/*
 * Starts and stops the notifier thread (after the mount, before the
 * session ends).  Returns 0 or -errno.
 */
int fs_start_notifier(struct fs *fs);
void fs_stop_notifier(struct fs *fs);

/*
 * Closes the files and directories still open once the session is over
 * (before the promoters go).
 */
void fs_close_open_files(struct fs *fs);

/*
 * The tenant named client, made the first time it is asked for (and its
 * directory exists, with all_tenants).  Returns 0 and *out, or -ENOENT
 * for a name the mount does not serve, or -errno (logged).
 */
int fs_get_tenant(struct fs *fs, const char *client, struct tenant **out);

/*
 * How store changes reach the kernel's caches and the index: the watcher
 * thread calls these (never an operation: the kernel may be waiting on us
 * while we notify it).  ctx is the struct fs.
 */
extern const struct watch_handler fs_watch_handler;

#endif
