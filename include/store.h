/*
 * store.h - access to the backing store, the only code that opens store paths.
 *
 * The store root is opened once, from the command line; everything below
 * it is opened relative to a directory fd with openat2() and
 * RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
 * RESOLVE_NO_XDEV, so no name from a request or from the store itself
 * can lead outside the directory it is resolved in.  Callers pass names
 * that have passed names.h's checks; these functions add the kernel's
 * guarantee on top.
 */
#ifndef ARTIFACTFS_STORE_H
#define ARTIFACTFS_STORE_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

struct store {
	int root_fd;		/* the storage root, O_RDONLY | O_DIRECTORY */
	char *path;		/* absolute, for messages and the index default */
};

/*
 * Opens the storage root given on the command line: it must be a
 * directory the caller can read and search.  Returns 0, or -errno with
 * one error logged.
 */
int store_open(const char *path, struct store *store);
void store_close(struct store *store);

/*
 * openat2() of path below dirfd with the RESOLVE_ flags above and
 * O_CLOEXEC added to flags.  Returns the new fd, or -errno
 * (-ELOOP for a symlink anywhere on the way, -EXDEV for a mount point).
 */
int store_open_beneath(int dirfd, const char *path, int flags, mode_t mode);

/*
 * The store's layout (RARO's contract, docs/architecture.md):
 *   artifacts/<client>/<run>/   a tenant's run: its files and metadata.json
 *   artifacts/<run>/            a legacy run, from before tenants had areas
 *   sessions/<run>/output/      an agent session's raw output
 * These are the only functions that spell it.  Each opens its directory
 * with flags (O_PATH or O_RDONLY; O_DIRECTORY is added) and returns the
 * fd, -ENOENT when it does not exist, -EINVAL for a client or run that
 * fails names_check_id(), or another -errno (-ELOOP for a symlink,
 * -EXDEV for a mount point, -ENOTDIR).
 */
#define STORE_ARTIFACTS_DIR "artifacts"
#define STORE_SESSIONS_DIR "sessions"
int store_open_artifacts(const struct store *store, int flags);
int store_open_tenant(const struct store *store, const char *client, int flags);
int store_open_run(const struct store *store, const char *client, const char *run, int flags);
/* Also -ENOENT for a directory without metadata.json (a tenant's area). */
int store_open_legacy_run(const struct store *store, const char *run, int flags);
/*
 * Whether name, directly under artifacts/, is a legacy run dir (it holds
 * metadata.json itself) rather than a tenant's area.
 */
bool store_is_legacy_run(const struct store *store, const char *name);
int store_open_session_output(const struct store *store, const char *run, int flags);

/*
 * Calls fn for each tenant area of the store (a directory
 * artifacts/<client>/ with a valid id that is not a legacy run), each
 * legacy run, or each run dir of client (a directory whose name passes
 * names_check_run(): promote/ is never a run), in name order.  The names
 * are read first, so fn may change the directory.
 * Symlinks and other files are skipped.  Returns 0 (also when there is
 * nothing), the first non-zero value fn returned, or -errno.
 */
int store_for_each_tenant(const struct store *store,
			  int (*fn)(void *ctx, const char *client), void *ctx);
int store_for_each_legacy_run(const struct store *store,
			      int (*fn)(void *ctx, const char *run), void *ctx);
int store_for_each_run(const struct store *store, const char *client,
		       int (*fn)(void *ctx, const char *run), void *ctx);

/*
 * Opens the tenant's area, or its run dir, O_RDONLY, making it and the
 * directories above it (0755) first where they are missing, durably: each
 * new directory's parent is fsync'd.  Returns the fd or -errno.
 */
int store_make_tenant(const struct store *store, const char *client);
int store_make_run(const struct store *store, const char *client, const char *run);

/*
 * Opens the regular file name in dirfd with flags (O_RDONLY, O_NOATIME...)
 * without opening anything else first: the name is resolved O_PATH, checked
 * to be a regular file, and only then that inode is opened, so a FIFO or a
 * device planted under the name is never opened (no writer released, no
 * device touched).  *st describes the file.  Returns the fd, -EINVAL for
 * anything but a regular file, -ELOOP for a symlink, or -errno.
 */
int store_open_regular(int dirfd, const char *name, int flags, struct stat *st);

/*
 * Reads the regular file name in dirfd, at most max bytes: never follows
 * a symlink, never blocks on a FIFO.  On success *buf is malloc'd (with a
 * NUL after the *len bytes) and *st describes the file as opened.
 * Returns 0, -EINVAL for a non-regular file, -EFBIG when
 * larger than max, or -errno.
 */
int store_read_file(int dirfd, const char *name, size_t max,
		    char **buf, size_t *len, struct stat *st);

/*
 * Opens a directory stream on dirfd itself (dirfd may be O_PATH).
 * Returns 0 and *dir, or -errno.  Close with closedir().
 */
int store_open_dir(int dirfd, DIR **dir);

/*
 * The file type of an entry read from dir (DT_REG, DT_DIR, ...), asking
 * the file system when the directory did not say (DT_UNKNOWN).  Symlinks
 * are reported as DT_LNK, never followed.  Returns DT_UNKNOWN when the
 * entry vanished.
 */
unsigned char store_entry_type(DIR *dir, const struct dirent *entry);

/*
 * Makes the directory name in dirfd (a single component) unless it
 * exists, then opens it O_RDONLY.  *created (may be NULL) tells whether
 * it was made: the caller then owes its parent an fsync.  Answers of a
 * store shared by hosts that contradict themselves for a moment (EEXIST,
 * then nothing to open) are tried again for up to 0.2 s.
 * Returns the fd or -errno (-ENOTDIR when name is something else).
 */
int store_make_dir(int dirfd, const char *name, mode_t mode, bool *created);

/*
 * Asks the file system to place the directories made in dir_fd apart from
 * one another, each with the files later made in it (ext4's Orlov
 * allocator: chattr +T).  A hint that changes no content: returns 0, or
 * -errno where the file system has no such hint (XFS, tmpfs, GlusterFS),
 * which callers may ignore.
 */
int store_spread_subdirs(int dir_fd);

/*
 * Removes name in dirfd, with everything below it when it is a
 * directory; symlinks are removed, never followed.  Returns 0 or -errno
 * (-ENOENT when name does not exist).
 */
int store_remove_tree(int dirfd, const char *name);

/*
 * Writes all len bytes of buf to fd, going on after short writes and
 * EINTR.  Returns 0 or -errno.
 */
int store_write_all(int fd, const void *buf, size_t len);

/*
 * Copies src into dst from offset 0, up to limit bytes or src's end, in
 * the kernel (copy_file_range: reflinks where the file system can), or by
 * reading and writing where it cannot (from another file system type).
 * Returns 0 with *copied set, or -errno.
 */
int store_copy_range(int src, int dst, uint64_t limit, uint64_t *copied);

/*
 * Run locks: whoever changes a run (a landing, a deletion, a rename, a
 * repair, a migration) holds its lock exclusively, whoever indexes it
 * holds it shared, so the index never records a change half done.  A
 * run lock is an OFD lock (fcntl F_OFD_SETLKW) on one byte of
 * STORE_PRIVATE_DIR/locks/runs, at an offset hashed from client and run:
 * unlike flock on a directory, a lock that network file systems
 * (GlusterFS, NFS, CephFS) share between hosts.  Each call opens the file
 * anew, so the threads of one process exclude each other too.  Two runs
 * whose hashes meet share a lock: slower, never wrong.  client NULL: a
 * run of the legacy layout.  Returns the lock (a descriptor, for
 * store_unlock()) or -errno.  Read-only callers may go on unlocked when
 * the lock cannot be had (a read-only store has no writers to wait for).
 */
int store_lock_run(const struct store *store, const char *client, const char *run,
		   bool exclusive);

/*
 * Locks client's run exclusively (store_lock_run(), into *lock), then
 * opens its dir with flags: after the lock, so that a run deleted or
 * made again meanwhile is the one opened.  Returns the fd or -errno
 * (then nothing is held; -ENOENT for a run that is not there).
 */
int store_open_locked_run(const struct store *store, const char *client, const char *run,
			  int flags, int *lock);

/*
 * The change log of a tenant: STORE_PRIVATE_DIR/changes/<client>/log, a
 * run id per line, appended (O_APPEND) by every artifactfs writer, on any
 * host, once a change to that run is durable.  A host polling a network
 * store (watch.h) reads what was appended since it last looked: one stat
 * and one read per tenant show it every change artifactfs made anywhere,
 * however many runs there are.  Past STORE_CHANGES_MAX bytes the writer
 * renames it to log.old (replacing the one before) and the next change
 * starts a new log.  A hint, never the only way a change is seen: a
 * failure to note one is logged, and polling finds the change later.
 */
#define STORE_CHANGES_AREA "changes"
#define STORE_CHANGES_LOG "log"
#define STORE_CHANGES_OLD "log.old"
#define STORE_CHANGES_MAX (1 << 20)
void store_note_change(const struct store *store, const char *client, const char *run);

/* The directory of client's change log (O_RDONLY), or -errno (-ENOENT: none yet). */
int store_open_changes(const struct store *store, const char *client);

/* Releases a lock of store_lock_run() or store_lock_file().  Negative: a no-op. */
void store_unlock(int lock);

/*
 * Takes an OFD write lock on the whole of dir_fd's file name, made (0600)
 * if missing: how a staging instance says it is alive, to every host of
 * a shared store.  Without wait, -EAGAIN when someone holds it.  Returns
 * the lock or -errno.
 */
int store_lock_file(int dir_fd, const char *name, bool wait);

/*
 * The store's own directory, beside artifacts/ and sessions/: the
 * daemon's staging, the default index, keys.  Never shown to a tenant.
 */
#define STORE_PRIVATE_DIR ".artifactfs"

/*
 * Opens STORE_PRIVATE_DIR/<area>/<client> (O_RDONLY), making each level
 * that is missing, private (0700): staging, kept copies of repairs.
 * Returns the fd, -EINVAL for an invalid client id, or -errno.
 */
int store_make_private_dir(const struct store *store, const char *area, const char *client);

/* The index's file in STORE_PRIVATE_DIR unless another is given. */
#define STORE_INDEX_FILE "index.db"
/* The key of the inode numbers shown (ino_cipher.h), in STORE_PRIVATE_DIR. */
#define STORE_INODE_KEY_FILE "inode-key"

/*
 * Resolves the index path (given, or NULL for the store's default) to an
 * absolute one (a daemon changes to "/" when it detaches, and SQLite
 * reopens its journal by name), creating STORE_PRIVATE_DIR for the
 * default.  Returns a malloc'd path, or NULL with one error logged.
 */
char *store_resolve_index_path(const struct store *store, const char *given);

/*
 * Reads the store's secret key STORE_PRIVATE_DIR/name, exactly len bytes,
 * making it (from getrandom) when the store has none yet.  The key lives
 * in the store because every mount and host of it must agree on it; two
 * first mounts racing are settled by link(), the loser reading the
 * winner's key.  Returns 0, or -errno with one error logged (-EBADMSG
 * for a key file of the wrong size).
 */
int store_load_key(const struct store *store, const char *name, unsigned char *key,
		   size_t len);

/* Nanoseconds since the epoch of a struct timespec. */
static inline long long store_time_ns(const struct timespec *ts)
{
	return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

#endif
