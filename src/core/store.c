/*
 * store.c - the one module that opens paths in the backing store.
 *
 * Why openat2 and not openat with O_NOFOLLOW: O_NOFOLLOW guards only the
 * last component, and the store is written by others (the kernel-server,
 * and agents through sessions/), so any component may have been replaced
 * by a symlink or a mount point between two requests.  RESOLVE_BENEATH and
 * friends make the kernel refuse such a walk atomically.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "store.h"

/* How long an entry another host is making may answer inconsistently: see settle_shared_entry(). */
#define STORE_SETTLE_TRIES 20
#define STORE_SETTLE_MS 10

#define STORE_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | \
		       RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)

int store_open_beneath(int dirfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (unsigned long long)(flags | O_CLOEXEC),
		.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
		.resolve = STORE_RESOLVE,
	};
	long fd;

	do
		fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
	while (fd < 0 && errno == EAGAIN);	/* a concurrent rename raced the walk */
	return fd < 0 ? -errno : (int)fd;
}

int store_open(const char *path, struct store *store)
{
	char *absolute = NULL;
	int fd = -1, ret;

	absolute = realpath(path, NULL);
	if (!absolute) {
		ret = -errno;
		log_error("cannot open store '%s': %s", path, strerror(errno));
		goto out;
	}
	fd = open(absolute, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		log_error("cannot open store '%s': %s", path, strerror(errno));
		goto out;
	}
	/* Reading the root is not enough: every lookup searches below it. */
	if (faccessat(fd, ".", R_OK | X_OK, AT_EACCESS) < 0) {
		ret = -errno;
		log_error("cannot open store '%s': %s", path, strerror(errno));
		goto out;
	}
	store->root_fd = fd;
	store->path = absolute;
	fd = -1;
	absolute = NULL;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(absolute);
	return ret;
}

void store_close(struct store *store)
{
	if (store->root_fd >= 0)
		close(store->root_fd);
	free(store->path);
	store->root_fd = -1;
	store->path = NULL;
}

/*
 * Opens STORE/<dir>/<first>[/<second>][/<tail>].  The ids are checked here
 * too, so that no caller can make a path of "..", "" or a slash, whatever
 * it checked before.
 */
static int open_layout(const struct store *store, const char *dir, const char *first,
		       const char *second, const char *tail, int flags)
{
	char path[PATH_MAX];

	if ((first && names_check_id(first, NULL) < 0) ||
	    (second && names_check_id(second, NULL) < 0))
		return -EINVAL;
	snprintf(path, sizeof(path), "%s%s%s%s%s%s%s", dir,
		 first ? "/" : "", first ? first : "", second ? "/" : "", second ? second : "",
		 tail ? "/" : "", tail ? tail : "");
	return store_open_beneath(store->root_fd, path, flags | O_DIRECTORY, 0);
}

int store_open_artifacts(const struct store *store, int flags)
{
	return open_layout(store, STORE_ARTIFACTS_DIR, NULL, NULL, NULL, flags);
}

int store_open_tenant(const struct store *store, const char *client, int flags)
{
	return open_layout(store, STORE_ARTIFACTS_DIR, client, NULL, NULL, flags);
}

int store_open_run(const struct store *store, const char *client, const char *run, int flags)
{
	return open_layout(store, STORE_ARTIFACTS_DIR, client, run, NULL, flags);
}

int store_open_legacy_run(const struct store *store, const char *run, int flags)
{
	struct stat st;
	int fd = open_layout(store, STORE_ARTIFACTS_DIR, run, NULL, NULL, flags);

	/* A tenant's area holds runs; a legacy run holds metadata.json itself. */
	if (fd >= 0 && fstatat(fd, NAMES_METADATA_FILE, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		close(fd);
		return -ENOENT;
	}
	return fd;
}

int store_open_session_output(const struct store *store, const char *run, int flags)
{
	return open_layout(store, STORE_SESSIONS_DIR, run, NULL, "output", flags);
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Calls fn, in name order, for each directory in dir_fd (taken over) with
 * a valid id that skip (may be NULL) does not refuse.
 */
static int for_each_directory(const struct store *store, int dir_fd,
			      bool (*skip)(const struct store *store, const char *name),
			      int (*fn)(void *ctx, const char *name), void *ctx)
{
	struct dirent *entry;
	char **names = NULL;
	size_t count = 0;
	DIR *dir;
	int ret;

	if (dir_fd < 0)
		return dir_fd == -ENOENT ? 0 : dir_fd;
	ret = store_open_dir(dir_fd, &dir);
	close(dir_fd);
	if (ret < 0)
		return ret;
	while ((entry = readdir(dir))) {
		char **grown;

		if (names_check_id(entry->d_name, NULL) < 0 ||
		    store_entry_type(dir, entry) != DT_DIR ||
		    (skip && skip(store, entry->d_name)))
			continue;
		grown = realloc(names, (count + 1) * sizeof(*names));
		if (!grown || !(grown[count] = strdup(entry->d_name))) {
			names = grown ? grown : names;
			ret = -ENOMEM;
			break;
		}
		names = grown;
		count++;
	}
	closedir(dir);
	if (ret == 0 && count > 1)
		qsort(names, count, sizeof(*names), compare_names);
	for (size_t i = 0; ret == 0 && i < count; i++)
		ret = fn(ctx, names[i]);
	for (size_t i = 0; i < count; i++)
		free(names[i]);
	free(names);
	return ret;
}

bool store_is_legacy_run(const struct store *store, const char *name)
{
	int fd = store_open_legacy_run(store, name, O_PATH);

	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

int store_for_each_tenant(const struct store *store,
			  int (*fn)(void *ctx, const char *client), void *ctx)
{
	return for_each_directory(store, store_open_artifacts(store, O_RDONLY), store_is_legacy_run,
				  fn, ctx);
}

static bool is_tenant(const struct store *store, const char *name)
{
	return !store_is_legacy_run(store, name);
}

int store_for_each_legacy_run(const struct store *store,
			      int (*fn)(void *ctx, const char *run), void *ctx)
{
	return for_each_directory(store, store_open_artifacts(store, O_RDONLY), is_tenant,
				  fn, ctx);
}

static bool is_reserved(const struct store *store, const char *name)
{
	return names_check_run(name, NULL) < 0;
}

int store_for_each_run(const struct store *store, const char *client,
		       int (*fn)(void *ctx, const char *run), void *ctx)
{
	return for_each_directory(store, store_open_tenant(store, client, O_RDONLY),
				  is_reserved, fn, ctx);
}

/* Makes the directory name in fd unless it exists, durably.  Returns its fd or -errno. */
static int make_durable_dir(int fd, const char *name)
{
	bool made;
	int dir_fd = store_make_dir(fd, name, 0755, &made);

	/* A new directory exists for good once its parent is flushed. */
	if (dir_fd >= 0 && made && fsync(fd) < 0) {
		close(dir_fd);
		return -errno;
	}
	return dir_fd;
}

int store_make_private_dir(const struct store *store, const char *area, const char *client)
{
	const char *const path[] = { STORE_PRIVATE_DIR, area, client };
	int fd, next;

	if (names_check_id(client, NULL) < 0)
		return -EINVAL;
	fd = dup(store->root_fd);
	if (fd < 0)
		return -errno;
	for (size_t i = 0; i < 3; i++) {
		next = store_make_dir(fd, path[i], 0700, NULL);
		close(fd);
		if (next < 0)
			return next;
		fd = next;
	}
	return fd;
}

int store_make_tenant(const struct store *store, const char *client)
{
	int artifacts_fd, tenant_fd;

	if (names_check_id(client, NULL) < 0)
		return -EINVAL;
	artifacts_fd = make_durable_dir(store->root_fd, STORE_ARTIFACTS_DIR);
	if (artifacts_fd < 0)
		return artifacts_fd;
	tenant_fd = make_durable_dir(artifacts_fd, client);
	close(artifacts_fd);
	return tenant_fd;
}

int store_make_run(const struct store *store, const char *client, const char *run)
{
	int tenant_fd, run_fd;

	if (names_check_id(run, NULL) < 0)
		return -EINVAL;
	tenant_fd = store_make_tenant(store, client);
	if (tenant_fd < 0)
		return tenant_fd;
	run_fd = make_durable_dir(tenant_fd, run);
	close(tenant_fd);
	return run_fd;
}

int store_read_file(int dirfd, const char *name, size_t max,
		    char **buf, size_t *len, struct stat *st)
{
	char *data = NULL;
	size_t used = 0, capacity;
	int fd, ret;

	fd = store_open_regular(dirfd, name, O_RDONLY, st);
	if (fd < 0)
		return fd;
	if ((unsigned long long)st->st_size > max) {
		ret = -EFBIG;
		goto out;
	}
	/* The file may grow while we read it: read to EOF, bounded by max. */
	capacity = (size_t)st->st_size + 1;
	data = malloc(capacity + 1);
	if (!data) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, data + used, capacity - used);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
		if (used > max) {
			ret = -EFBIG;
			goto out;
		}
		if (used == capacity) {
			char *bigger;
			capacity = capacity * 2 > max + 1 ? max + 1 : capacity * 2;
			bigger = realloc(data, capacity + 1);
			if (!bigger) {
				ret = -ENOMEM;
				goto out;
			}
			data = bigger;
		}
	}
	data[used] = '\0';
	*buf = data;
	*len = used;
	data = NULL;
	ret = 0;
out:
	free(data);
	close(fd);
	return ret;
}

int store_open_dir(int dirfd, DIR **dir)
{
	int fd = store_open_beneath(dirfd, ".", O_RDONLY | O_DIRECTORY, 0);

	if (fd < 0)
		return fd;
	*dir = fdopendir(fd);
	if (!*dir) {
		int ret = -errno;
		close(fd);
		return ret;
	}
	return 0;
}

unsigned char store_entry_type(DIR *dir, const struct dirent *entry)
{
	struct stat st;

	if (entry->d_type != DT_UNKNOWN)
		return entry->d_type;
	if (fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return DT_UNKNOWN;
	return IFTODT(st.st_mode);
}

/*
 * Whether to try making or opening an entry again after an answer that
 * contradicts itself.  GlusterFS makes an entry in two steps, its name
 * and then its identity, and answers from either state while hosts make
 * entries at once: mkdir says EEXIST where there is nothing to open (seen
 * even in a directory the same host had just made), an O_CREAT open says
 * EEXIST.  A local file system never answers so; on one shared by hosts
 * the answer settles within milliseconds (the other host's mkdir of that
 * very name succeeded 12 ms later).  Sleeps before the next try; false
 * once STORE_SETTLE_TRIES are spent.
 */
static bool settle_shared_entry(int *tries)
{
	if (++*tries >= STORE_SETTLE_TRIES)
		return false;
	nanosleep(&(struct timespec){ .tv_nsec = STORE_SETTLE_MS * 1000000L }, NULL);
	return true;
}

int store_make_dir(int dirfd, const char *name, mode_t mode, bool *created)
{
	bool made;
	int fd, tries = 0;

	do {
		made = mkdirat(dirfd, name, mode) == 0;
		if (!made && errno != EEXIST)
			return -errno;
		fd = store_open_beneath(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	} while (fd == -ENOENT && settle_shared_entry(&tries));
	if (created)
		*created = made;
	return fd;
}

int store_spread_subdirs(int dir_fd)
{
	int flags;

	/* The kernel reads and writes an int, whatever the ioctl's type says. */
	if (ioctl(dir_fd, FS_IOC_GETFLAGS, &flags) < 0)
		return -errno;
	if (flags & FS_TOPDIR_FL)
		return 0;
	flags |= FS_TOPDIR_FL;
	return ioctl(dir_fd, FS_IOC_SETFLAGS, &flags) < 0 ? -errno : 0;
}

/*
 * Opens path beneath dirfd with O_CREAT: a file every host of the store
 * shares.  -ENOENT: a directory on the way is missing.
 */
static int open_shared_file(int dirfd, const char *path, int flags)
{
	int fd, tries = 0;

	do
		fd = store_open_beneath(dirfd, path, flags | O_CREAT | O_NOFOLLOW, 0600);
	while (fd == -EEXIST && settle_shared_entry(&tries));
	return fd;
}

int store_remove_tree(int parent_fd, const char *name)
{
	struct dirent *entry;
	DIR *dir;
	int fd, ret;

	if (unlinkat(parent_fd, name, 0) == 0)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -errno;
	/* A directory: empty it first, one level at a time, no symlink followed. */
	fd = store_open_beneath(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
	if (fd < 0)
		return fd;
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	ret = 0;
	while ((entry = readdir(dir))) {
		if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
			continue;
		ret = store_remove_tree(dirfd(dir), entry->d_name);
		if (ret < 0 && ret != -ENOENT)
			break;
		ret = 0;
	}
	closedir(dir);
	if (ret < 0)
		return ret;
	return unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

/* Where run locks live, below STORE_PRIVATE_DIR. */
#define RUN_LOCKS_AREA "locks"
#define RUN_LOCKS_FILE "runs"

/* Sets an OFD lock on len bytes at offset of fd (0: to the end), waiting with wait. */
static int lock_range(int fd, short type, off_t offset, off_t len, bool wait)
{
	struct flock lock = {
		.l_type = type, .l_whence = SEEK_SET, .l_start = offset, .l_len = len,
	};

	while (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &lock) < 0) {
		if (errno == EINTR)
			continue;
		return errno == EACCES ? -EAGAIN : -errno;
	}
	return 0;
}

/* FNV-1a over client, a separator and run: where the run's lock byte is. */
static off_t run_lock_offset(const char *client, const char *run)
{
	uint64_t hash = 14695981039346656037ULL;
	const char *parts[] = { client ? client : "", "/", run };

	for (size_t i = 0; i < 3; i++)
		for (const char *c = parts[i]; *c; c++) {
			hash ^= (unsigned char)*c;
			hash *= 1099511628211ULL;
		}
	return (off_t)(hash >> 2);	/* positive, and far from any real file size */
}

/* Makes the run locks' file and its directories, each level from the one before. */
static int make_run_locks(const struct store *store)
{
	int fd, dir_fd, locks_fd;

	dir_fd = store_make_dir(store->root_fd, STORE_PRIVATE_DIR, 0700, NULL);
	if (dir_fd < 0)
		return dir_fd;
	locks_fd = store_make_dir(dir_fd, RUN_LOCKS_AREA, 0700, NULL);
	close(dir_fd);
	if (locks_fd < 0)
		return locks_fd;
	fd = open_shared_file(locks_fd, RUN_LOCKS_FILE, O_RDWR);
	close(locks_fd);
	return fd;
}

/* Opens the run locks' file, making it when missing. */
static int open_run_locks(const struct store *store)
{
	const char *path = STORE_PRIVATE_DIR "/" RUN_LOCKS_AREA "/" RUN_LOCKS_FILE;
	int fd = open_shared_file(store->root_fd, path, O_RDWR);

	if (fd == -EROFS || fd == -EACCES)
		return store_open_beneath(store->root_fd, path, O_RDONLY | O_NOFOLLOW, 0);
	return fd == -ENOENT ? make_run_locks(store) : fd;
}

int store_lock_run(const struct store *store, const char *client, const char *run,
		   bool exclusive)
{
	int fd = open_run_locks(store), ret;

	if (fd < 0)
		return fd;
	ret = lock_range(fd, exclusive ? F_WRLCK : F_RDLCK, run_lock_offset(client, run), 1, true);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

void store_note_change(const struct store *store, const char *client, const char *run)
{
	char line[NAMES_ID_MAX + 2];
	int dir_fd, fd = -1, len, ret = 0;
	struct stat st;

	len = snprintf(line, sizeof(line), "%s\n", run);
	dir_fd = store_make_private_dir(store, STORE_CHANGES_AREA, client);
	if (dir_fd < 0) {
		ret = dir_fd;
		goto out;
	}
	fd = open_shared_file(dir_fd, STORE_CHANGES_LOG, O_WRONLY | O_APPEND);
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	/* One write of one line: O_APPEND keeps lines of several writers whole. */
	if (write(fd, line, (size_t)len) != len)
		ret = -EIO;
	else if (fstat(fd, &st) == 0 && st.st_size > STORE_CHANGES_MAX)
		renameat(dir_fd, STORE_CHANGES_LOG, dir_fd, STORE_CHANGES_OLD);
out:
	if (ret < 0)
		log_warning("client %s run %s: cannot note the change in %s/%s/%s: %s; other "
			    "hosts see it later", client, run, STORE_PRIVATE_DIR,
			    STORE_CHANGES_AREA, client, strerror(-ret));
	if (fd >= 0)
		close(fd);
	if (dir_fd >= 0)
		close(dir_fd);
}

int store_open_changes(const struct store *store, const char *client)
{
	char path[sizeof(STORE_PRIVATE_DIR "/" STORE_CHANGES_AREA "/") + NAMES_ID_MAX];

	if (names_check_id(client, NULL) < 0)
		return -EINVAL;
	snprintf(path, sizeof(path), "%s/%s/%s", STORE_PRIVATE_DIR, STORE_CHANGES_AREA, client);
	return store_open_beneath(store->root_fd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
}

int store_open_locked_run(const struct store *store, const char *client, const char *run,
			  int flags, int *lock)
{
	int run_fd;

	*lock = store_lock_run(store, client, run, true);
	if (*lock < 0)
		return *lock;
	run_fd = store_open_run(store, client, run, flags);
	if (run_fd < 0) {
		store_unlock(*lock);
		*lock = -1;
		return run_fd == -ELOOP || run_fd == -EINVAL || run_fd == -ENOTDIR ? -ENOENT : run_fd;
	}
	return run_fd;
}

void store_unlock(int lock)
{
	if (lock >= 0)
		close(lock);	/* an OFD lock goes with its open file description */
}

int store_lock_file(int dir_fd, const char *name, bool wait)
{
	int fd = open_shared_file(dir_fd, name, O_RDWR), ret;

	if (fd < 0)
		return fd;
	ret = lock_range(fd, F_WRLCK, 0, 0, wait);
	if (ret < 0) {
		close(fd);
		return ret;
	}
	return fd;
}

int store_open_regular(int dirfd, const char *name, int flags, struct stat *st)
{
	char proc[64];
	struct stat again;
	int path_fd, fd;

	path_fd = store_open_beneath(dirfd, name, O_PATH | O_NOFOLLOW, 0);
	if (path_fd < 0)
		return path_fd;
	if (fstat(path_fd, st) < 0) {
		fd = -errno;
		close(path_fd);
		return fd;
	}
	if (!S_ISREG(st->st_mode)) {
		fd = S_ISLNK(st->st_mode) ? -ELOOP : -EINVAL;
		close(path_fd);
		return fd;
	}
	/* The very inode checked above: /proc/self/fd resolves to it, not to the name. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", path_fd);
	fd = open(proc, flags | O_CLOEXEC);
	fd = fd < 0 ? -errno : fd;
	close(path_fd);
	if (fd >= 0 && (fstat(fd, &again) < 0 || again.st_ino != st->st_ino ||
			again.st_dev != st->st_dev)) {
		close(fd);
		fd = -ESTALE;
	}
	return fd;
}

static int read_key(const struct store *store, int dirfd, const char *name,
		    unsigned char *key, size_t len)
{
	struct stat st;
	char *data = NULL;
	size_t got = 0;
	int ret;

	ret = store_read_file(dirfd, name, len, &data, &got, &st);
	if (ret == -EFBIG || (ret == 0 && got != len)) {
		log_error("store %s: key %s/%s is not %zu bytes: damaged; restore it "
			  "(a new key would renumber every file)", store->path,
			  STORE_PRIVATE_DIR, name, len);
		ret = -EBADMSG;
	} else if (ret == 0) {
		memcpy(key, data, len);
	} else if (ret != -ENOENT) {
		log_error("store %s: cannot read key %s/%s: %s", store->path,
			  STORE_PRIVATE_DIR, name, strerror(-ret));
	}
	free(data);
	return ret;
}

int store_write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *data = buf;

	while (len) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int store_load_key(const struct store *store, const char *name, unsigned char *key,
		   size_t len)
{
	char draft[NAME_MAX + 1];
	int dirfd, fd = -1, ret;

	dirfd = store_make_dir(store->root_fd, STORE_PRIVATE_DIR, 0700, NULL);
	if (dirfd < 0) {
		log_error("store %s: cannot open %s: %s", store->path, STORE_PRIVATE_DIR,
			  strerror(-dirfd));
		return dirfd;
	}
	ret = read_key(store, dirfd, name, key, len);
	if (ret != -ENOENT)
		goto out;

	/* The first mount of this store: a key made durable before it is used. */
	if (getrandom(key, len, 0) != (ssize_t)len) {
		ret = -errno;
		log_error("store %s: cannot draw a key: %s", store->path, strerror(errno));
		goto out;
	}
	snprintf(draft, sizeof(draft), "%s.%d.draft", name, (int)getpid());
	fd = store_open_beneath(dirfd, draft, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		ret = fd;
		fd = -1;
	} else if ((ret = store_write_all(fd, key, len)) == 0 && fsync(fd) < 0) {
		ret = -errno;
	}
	if (ret == 0 && linkat(dirfd, draft, dirfd, name, 0) < 0)
		ret = -errno;
	if (fd >= 0)
		unlinkat(dirfd, draft, 0);
	if (ret == -EEXIST) {
		ret = read_key(store, dirfd, name, key, len);	/* another mount won */
		goto out;
	}
	if (ret == 0 && fsync(dirfd) < 0)
		ret = -errno;
	if (ret < 0)
		log_error("store %s: cannot create key %s/%s: %s", store->path,
			  STORE_PRIVATE_DIR, name, strerror(-ret));
out:
	if (fd >= 0)
		close(fd);
	close(dirfd);
	return ret;
}

char *store_resolve_index_path(const struct store *store, const char *given)
{
	char *path = NULL, *dir = NULL, *slash, *resolved_dir = NULL;

	if (given && !*given) {
		log_error("invalid index path: it is empty");
		return NULL;
	}
	if (!given) {
		if (mkdirat(store->root_fd, STORE_PRIVATE_DIR, 0700) < 0 && errno != EEXIST) {
			log_error("cannot create the index directory %s/%s: %s",
				  store->path, STORE_PRIVATE_DIR, strerror(errno));
			return NULL;
		}
		if (asprintf(&path, "%s/%s/%s", store->path, STORE_PRIVATE_DIR,
			     STORE_INDEX_FILE) < 0)
			return NULL;
		return path;
	}
	dir = strdup(given);
	if (!dir)
		return NULL;
	slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		dir[0] = '.', dir[1] = '\0';	/* strdup gave at least 2 bytes */
	resolved_dir = realpath(dir, NULL);
	if (!resolved_dir) {
		log_error("cannot open index %s: directory %s: %s", given, dir,
			  strerror(errno));
		goto out;
	}
	if (asprintf(&path, "%s/%s", strcmp(resolved_dir, "/") ? resolved_dir : "",
		     slash ? strrchr(given, '/') + 1 : given) < 0)
		path = NULL;
out:
	free(resolved_dir);
	free(dir);
	return path;
}

/*
 * store_copy_range() where copy_file_range() cannot work: across file
 * systems of different types (EXDEV), or where it is not supported.
 */
static int copy_by_reading(int src, int dst, off_t in, off_t out, uint64_t limit,
			   uint64_t *copied)
{
	static const size_t chunk = 1 << 20;
	char *buf = malloc(chunk);
	int ret = 0;

	if (!buf)
		return -ENOMEM;
	while ((uint64_t)in < limit) {
		uint64_t left = limit - (uint64_t)in;
		ssize_t n = pread(src, buf, left < chunk ? (size_t)left : chunk, in);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? -errno : 0;
			break;	/* n == 0: the source shrank */
		}
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(dst, buf + done, (size_t)(n - done), out);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				ret = -errno;
				goto out;
			}
			done += w;
			out += w;
		}
		in += n;
	}
out:
	free(buf);
	*copied = (uint64_t)out;
	return ret;
}

int store_copy_range(int src, int dst, uint64_t limit, uint64_t *copied)
{
	off_t in = 0, out = 0;

	while ((uint64_t)in < limit) {
		uint64_t left = limit - (uint64_t)in;
		ssize_t n = copy_file_range(src, &in, dst, &out,
					    left > SSIZE_MAX ? SSIZE_MAX : (size_t)left, 0);
		if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == EOPNOTSUPP ||
			      errno == ENOSYS))
			return copy_by_reading(src, dst, in, out, limit, copied);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;	/* the source shrank */
	}
	*copied = (uint64_t)out;
	return 0;
}
