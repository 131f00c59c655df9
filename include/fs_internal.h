/*
 * fs_internal.h - the daemon-internal interface between fs.c, fs_promote.c
 * and fs_notify.c, the three files of the FUSE layer (fs.h is its public
 * side, for main.c).
 *
 * fs.c holds the operations and is the only one of them that replies to
 * the kernel: fs_promote.c does promote/'s part of an operation and
 * returns what fs.c is to reply; fs_notify.c only notifies the kernel.
 */
#ifndef ARTIFACTFS_FS_INTERNAL_H
#define ARTIFACTFS_FS_INTERNAL_H

#include <dirent.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "fs.h"

/*
 * A file handed to the kernel to serve an inode's reads and writes itself
 * (FUSE passthrough).  The kernel takes one backing file per inode at a
 * time, so open files of one inode share it: an artifact's readers, or
 * the opens of one upload.  An upload that takes over the name of one
 * whose files are still open gets a backing of its own (the kernel
 * refuses that open if the older one is still attached).  Guarded by
 * fs->backing_lock.
 */
struct backing {
	int id;				/* the kernel's */
	unsigned int opens;		/* open files using it */
	const struct upload *upload;	/* the upload it is, NULL: an artifact */
};

/*
 * An open file: a backing file, an upload, or promote/.status.  Counted:
 * the kernel can send RELEASE while a READ of a reader it gave up on is
 * still being served by another thread.
 */
struct open_file {
	_Atomic unsigned int refs;
	struct fs *fs;
	struct list_link link;	/* in fs->open_files */
	int fd;			/* backing or staged file; -1 for .status */
	struct upload *upload;	/* an upload this handle writes, or NULL */
	struct backing *backing;	/* FUSE passthrough: see open_passthrough() */
	char *text;		/* promote/.status as of open */
	size_t len;
};

/*
 * An entry of a run directory's stream read but not yet sent (see struct
 * dir_handle).
 */
struct pending_entry {
	char name[NAME_MAX + 1];
	ino_t ino;
	unsigned char type;
	off_t next;		/* its cookie: the entry after it */
	bool stat_taken;	/* st is its backing file's, taken at read_ahead_ns */
	struct stat st;
};

/* An open directory: a stream for run dirs, a snapshot for the others. */
struct dir_handle {
	/*
	 * Guards all below against the reply's read-ahead, which runs on
	 * after the reply, into the next readdir or the release.
	 */
	pthread_mutex_t lock;
	DIR *stream;		/* INODE_RUN: the backing directory */
	ino_t dir_ino;		/* INODE_RUN: the directory's own, for "." */
	off_t offset;		/* the cookie of the next entry to send */
	/*
	 * Entries read from the stream but not yet sent, from
	 * pending[pending_first] to pending[pending_count - 1], next in line
	 * when the kernel asks at offset: the one that did not fit in the
	 * last reply (seeking back for it would drop the stream's buffer,
	 * and every reply would read the backing directory again), and those
	 * read ahead, with their stat, while the reader took that reply in.
	 */
	struct pending_entry *pending;
	size_t pending_first, pending_count, pending_capacity;
	int64_t read_ahead_ns;	/* CLOCK_MONOTONIC */
	struct dir_entry {
		char *name;
		ino_t ino;
		unsigned char type;
	} *entries;		/* the other directories: fixed at opendir */
	size_t count, capacity;
	struct list_link link;	/* in fs->dir_handles, while open */
};

/* --- fs.c ------------------------------------------------------------------ */

/*
 * Fills *st as a directory of tenant's own (NULL: the all-tenants root):
 * ino, nlink, the mount's times (which its caller replaces with the
 * store's where it has them).
 */
void fs_set_virtual_dir(struct fs *fs, const struct tenant *tenant, struct stat *st, ino_t ino,
			nlink_t nlink);

/* Fills *st from a backing file or directory of tenant as the view shows it. */
void fs_present_backing(struct fs *fs, const struct tenant *tenant, struct stat *st,
			const struct stat *backing);

/*
 * Adds a copy of name to a snapshot listing.  Returns 0 or -ENOMEM (the
 * listing then holds what was added before).
 */
int fs_dir_handle_add(struct dir_handle *handle, const char *name, ino_t ino,
		      unsigned char type);

/* Frees what a listing holds, not the handle itself (one on the stack). */
void fs_dir_handle_release(struct dir_handle *handle);

/*
 * Lists tenant's directory into handle: ".", "..", "promote" (unless
 * read-only), then every visible run.  backing, if not NULL, gets the
 * store directory's stat (left alone when there is none yet).
 * Returns 0 or -errno (logged).
 */
int fs_list_tenant(struct tenant *tenant, struct dir_handle *handle, struct stat *backing);

/*
 * Opens the regular file path below dirfd for reading, only if it is still
 * the backing file numbered ino.  flags: the opener's (O_NOATIME is kept
 * where allowed).  Returns the fd, -ENOENT (no longer a regular file),
 * -ESTALE (the name was replaced since lookup) or -errno.
 */
int fs_open_backing(int dirfd, const char *path, int flags, ino_t ino);

/*
 * A new open file of fs, counted once, fd -1, on the list
 * fs_close_open_files() empties.  NULL without memory.
 */
struct open_file *fs_open_file_new(struct fs *fs);

/*
 * Drops a reference to handle; the last one takes it off the list, ends
 * its upload (or closes its fd) and frees it.
 */
void fs_open_file_put(struct open_file *handle);

/* --- fs_promote.c: promote/'s part of the operations ----------------------- */

/* The run an upload goes to: its parent's name, or NULL for a request. */
const char *fs_promote_upload_run(const struct inode *inode);

/*
 * Resolves name in promote/ or promote/<run> (parent) and counts a kernel
 * reference to the result; e's timeouts are 0, since uploads come and go
 * with every close.  Returns 0 with *e filled, or -errno.
 */
int fs_promote_lookup(struct fs *fs, struct inode *parent, const char *name,
		      struct fuse_entry_param *e);

/*
 * Stats promote/, promote/.status, a promote/<run> or an upload, with
 * times and numbers from the store and the audit, never the mount's.
 * Makes nothing.  Returns 0 or -errno.
 */
int fs_promote_stat(struct fs *fs, struct inode *inode, struct stat *st);

/*
 * Snapshot listings of promote/ (its outcome file, a directory for each
 * of the tenant's runs one may promote into and for each run staged here
 * only, requests in flight; making no staging) and of promote/<run>
 * (dir: the uploads in flight into that run).  Return 0 or -errno.
 */
int fs_promote_list(struct tenant *tenant, struct dir_handle *handle);
int fs_promote_list_run(struct inode *dir, struct dir_handle *handle);

/*
 * Removes the idle staging of promote/<run> (promote_tidy_run()) unless
 * it is a run made with mkdir that the store does not have yet: promote/
 * lists the store's runs, and a staging left behind would outlive the
 * run.  Called when the run has settled (quiet for a moment after its
 * last change, see watch.h), not at each release: a writer landing one
 * file after another would otherwise remove and make the staging
 * directory once per file, under the promoter's lock.
 */
void fs_promote_tidy_run(struct tenant *tenant, const char *run);

/*
 * rmdir of promote/<run>: removes its staging if idle.  Returns 0,
 * -EBUSY (uploads in flight), -ENOENT or -errno.
 */
int fs_promote_rmdir(struct tenant *tenant, const char *run);

/*
 * Starts an upload of name in parent (promote/ or promote/<run>) for an
 * open for writing or, with e, a create: caller is the thread the request
 * came from.  Sets fi for direct I/O and flushes.  Returns 0 with *handle
 * writing the upload (and, for a create, *e: the new inode, counted once,
 * its number not yet shown through the cipher), or -errno.
 */
int fs_promote_open_upload(struct fs *fs, struct inode *parent, const char *name,
			   bool truncate, pid_t caller, struct fuse_file_info *fi,
			   struct open_file **handle, struct fuse_entry_param *e);

/*
 * Opens promote/.status (its text as of now into handle) or an upload
 * (inode) for reading: the staged file, or the artifact it became, opened
 * with fi's flags.  Sets fi for direct I/O.  Returns the fd to read, 0 for
 * .status (read from handle's text), or -errno.
 */
int fs_promote_open_read(struct fs *fs, struct inode *inode, struct open_file *handle,
			 struct fuse_file_info *fi);

/*
 * A setattr of an upload (inode): upload is the one its writer's handle
 * writes, or NULL for a setattr by name.  Returns 0 or -errno.
 */
int fs_promote_setattr(struct fs *fs, struct inode *inode, struct upload *upload,
		       const struct stat *attr, int to_set);

/*
 * The close() of upload (inode), by thread caller: commits it, or abandons
 * it when the writer is dying of a signal.  Returns 0 or what close() is
 * to report (-EINTR for a killed writer).
 */
int fs_promote_flush(struct fs *fs, struct inode *inode, struct upload *upload,
		     pid_t caller);

/*
 * mkdir name in promote/ (dir; read-write mounts only) or in a
 * promote/<run>.  Returns 0 with *e filled (a reference counted), or
 * -errno (always -EPERM in promote/<run>).
 */
int fs_promote_mkdir(struct fs *fs, struct inode *dir, const char *name,
		     struct fuse_entry_param *e);

/*
 * rename() of name to newname within promote/<run> (dir); flags: FUSE's.
 * Returns 0 or -errno.
 */
int fs_promote_rename(struct fs *fs, struct inode *dir, const char *name,
		      const char *newname, unsigned int flags);

/*
 * Sets attribute name (without the "user.artifact." prefix) of an upload
 * or a promote/<run> (inode).  Returns 0 or -errno (-EROFS once the upload
 * is no longer in flight).
 */
int fs_promote_setxattr(struct fs *fs, struct inode *inode, const char *name,
			const char *value, size_t size);

/* --- fs_notify.c ------------------------------------------------------------ */

/*
 * Drop what the kernel caches of client's run/file (entry: its name and
 * the run's listing too), or of its run (its entry, and the tenant's
 * listing).  ctx is the struct fs: these are also fs_watch_handler's.
 * Never with the inode table locked: the kernel may call us back (FORGET)
 * meanwhile.
 */
void fs_notify_file(void *ctx, const char *client, const char *run, const char *file,
		    bool entry);
void fs_notify_run(void *ctx, const char *client, const char *run);

/*
 * Shows a landing in client's run: file landed (and, if not NULL, gone
 * was renamed away).  For a request (FLUSH, RENAME): the notifier thread
 * notifies the kernel, and this waits for it up to 0.1 s, which only
 * passes when a listing of that directory waits for a request thread
 * (the landing then shows once one is free).
 */
void fs_notify_landing(struct fs *fs, const char *client, const char *run, const char *gone,
		       const char *landed);

/* Asks the notifier to prune; cheap enough for every lookup over the limit. */
void fs_ask_to_prune(struct fs *fs);

/*
 * Prunes now, in the calling request's thread, when the bound is near
 * (inode_near_limit()), unless a round is under way.  For OPENDIR: its
 * caller is between listings, with no LOOKUP or READDIRPLUS of its own
 * in flight, so the kernel distrusts no attributes for the inodes it
 * evicts meanwhile (inode_collect_stale() says why that matters).  Must
 * not be called from a request the kernel holds a directory lock for;
 * does nothing unless fs->prune_in_requests.
 */
void fs_prune_before_listing(struct fs *fs);

#endif
