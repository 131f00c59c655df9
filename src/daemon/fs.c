/*
 * fs.c - the FUSE low-level operations on the tenants' runs, and the
 * dispatch of every operation: the only file that replies to the kernel.
 *
 * Each operation decodes its inode, asks the view, the store or the index
 * (fs_promote.c for promote/), and replies exactly once, at the end.
 * Reads go straight from the open backing fd to the kernel (splice), with
 * no lock and no index query.  The kernel caches entries, attributes,
 * directory listings and file data for cache_timeout(); fs_notify.c drops
 * what a change in the store made stale, and keeps the inode table bounded.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "fs_internal.h"
#include "log.h"
#include "names.h"

#define XATTR_PREFIX "user.artifact."
/* A tenant's statistics attribute: not listed, so no backup copies it. */
#define XATTR_STATS "user.artifactfs.stats"
/* Seconds the kernel may keep a tenant directory's attributes. */
#define TENANT_TIMEOUT 1.0

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct inode *inode_of(fuse_req_t req, fuse_ino_t nodeid)
{
	return inode_from_nodeid(fs_of(req)->inodes, nodeid);
}

/*
 * What every entry of tenant shows, whatever backs it.  The all-tenants
 * root (tenant NULL) can be crossed but not listed by its owner's others:
 * a user given one tenant's path learns no other tenant's name.
 */
static void set_owner_and_mode(struct fs *fs, const struct tenant *tenant, struct stat *st,
			       mode_t type, mode_t backing_mode)
{
	st->st_uid = tenant ? tenant->uid : fs->uid;
	st->st_gid = tenant ? tenant->gid : fs->gid;
	if (type == S_IFDIR) {
		st->st_mode = S_IFDIR | (tenant ? 0755 : 0711);
	} else {
		/* Read-only content, but a script artifact stays runnable. */
		st->st_mode = S_IFREG | 0644 | (backing_mode & 0111);
		st->st_nlink = 1;
	}
}

void fs_set_virtual_dir(struct fs *fs, const struct tenant *tenant, struct stat *st, ino_t ino,
			nlink_t nlink)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = nlink;
	st->st_size = 4096;
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = fs->mounted_at;
	set_owner_and_mode(fs, tenant, st, S_IFDIR, 0);
}

/* How long the kernel may cache entries and attributes now. */
static double cache_timeout(struct fs *fs)
{
	return atomic_load(&fs->degraded) && fs->timeout > 1.0 ? 1.0 : fs->timeout;
}

/* Whether file data and listings may outlive an open() now. */
static bool keeps_cache(struct fs *fs)
{
	return fs->keep_cache && !atomic_load(&fs->degraded);
}

/*
 * The number the kernel is shown for an inode number of ours: backing
 * numbers go through the cipher (they would count other tenants' files),
 * the view's own (the root, and promote/'s from INO_CIPHER_VIEW_FIRST
 * up: see tenant.h) and 0 (a negative entry) as they are.  Applied only
 * where a reply is built, so every number inside the daemon stays the
 * backing one it can compare with the store.
 */
static ino_t shown_ino(const struct fs *fs, ino_t ino)
{
	if (ino == 0 || ino == INODE_ROOT_INO || ino >= INO_CIPHER_VIEW_FIRST)
		return ino;
	return ino_cipher_apply(&fs->ino_cipher, ino);
}

static void reply_entry(fuse_req_t req, struct fuse_entry_param *e)
{
	e->attr.st_ino = shown_ino(fs_of(req), e->attr.st_ino);
	fuse_reply_entry(req, e);
}

static void reply_attr(fuse_req_t req, struct stat *st, double timeout)
{
	st->st_ino = shown_ino(fs_of(req), st->st_ino);
	fuse_reply_attr(req, st, timeout);
}

/* --- listings ------------------------------------------------------------- */

void fs_dir_handle_release(struct dir_handle *handle)
{
	if (handle->stream)
		closedir(handle->stream);
	for (size_t i = 0; i < handle->count; i++)
		free(handle->entries[i].name);
	free(handle->entries);
}

static void dir_handle_free(struct dir_handle *handle)
{
	if (!handle)
		return;
	fs_dir_handle_release(handle);
	free(handle->pending);
	pthread_mutex_destroy(&handle->lock);
	free(handle);
}

/* Puts an opened directory on the list fs_close_open_files() empties. */
static void dir_handle_track(struct fs *fs, struct dir_handle *handle)
{
	pthread_mutex_lock(&fs->open_lock);
	list_push(&fs->dir_handles, &handle->link);
	pthread_mutex_unlock(&fs->open_lock);
}

/* Takes a directory off that list (its release) and frees it. */
static void dir_handle_close(struct fs *fs, struct dir_handle *handle)
{
	pthread_mutex_lock(&fs->open_lock);
	list_unlink(&fs->dir_handles, &handle->link);
	pthread_mutex_unlock(&fs->open_lock);
	/* The last reply's read-ahead may still be at work. */
	pthread_mutex_lock(&handle->lock);
	pthread_mutex_unlock(&handle->lock);
	dir_handle_free(handle);
}

int fs_dir_handle_add(struct dir_handle *handle, const char *name, ino_t ino,
		      unsigned char type)
{
	struct dir_entry *entry;

	if (handle->count == handle->capacity) {
		size_t bigger = handle->capacity ? handle->capacity * 2 : 16;
		struct dir_entry *grown = realloc(handle->entries, bigger * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		handle->entries = grown;
		handle->capacity = bigger;
	}
	entry = &handle->entries[handle->count];
	entry->name = strdup(name);
	if (!entry->name)
		return -ENOMEM;
	entry->ino = ino;
	entry->type = type;
	handle->count++;
	return 0;
}

/*
 * Lists a tenant's directory: ".", "..", "promote", then every visible
 * run.  Also the source of its link count, so both always agree.
 */
int fs_list_tenant(struct tenant *tenant, struct dir_handle *handle, struct stat *backing)
{
	struct dirent *entry;
	DIR *dir = NULL;
	int fd, ret;

	if ((ret = fs_dir_handle_add(handle, ".", tenant->dir_ino, DT_DIR)) < 0 ||
	    (ret = fs_dir_handle_add(handle, "..", INODE_ROOT_INO, DT_DIR)) < 0)
		return ret;
	if (tenant->promoter &&
	    (ret = fs_dir_handle_add(handle, NAMES_PROMOTE_DIR, tenant->promote_ino, DT_DIR)) < 0)
		return ret;

	fd = store_open_tenant(tenant->view.store, tenant->client, O_RDONLY);
	if (fd == -ENOENT)
		return 0;	/* no runs yet: an empty view, not an error */
	if (fd < 0) {
		log_error("client %s: cannot open the tenant directory: %s",
			  tenant->client, strerror(-fd));
		return fd;
	}
	if (backing && fstat(fd, backing) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	dir = fdopendir(fd);
	if (!dir) {
		ret = -errno;
		close(fd);
		return ret;
	}
	while ((errno = 0, entry = readdir(dir))) {
		if (store_entry_type(dir, entry) != DT_DIR ||
		    !view_run_visible(&tenant->view, entry->d_name))
			continue;
		ret = fs_dir_handle_add(handle, entry->d_name, entry->d_ino, DT_DIR);
		if (ret < 0)
			goto out;
	}
	ret = -errno;
	if (ret < 0)
		log_error("client %s: cannot list the tenant directory: %s",
			  tenant->client, strerror(-ret));
out:
	closedir(dir);
	return ret;
}

static int add_tenant_entry(void *ctx, const char *client)
{
	struct fs *fs = ((void **)ctx)[0];

	return fs_dir_handle_add(((void **)ctx)[1], client, tenant_dir_ino(fs->tenants, client),
				 DT_DIR);
}

/* Lists the all-tenants root: ".", "..", then every tenant directory. */
static int list_tenants(struct fs *fs, struct dir_handle *handle)
{
	void *ctx[] = { fs, handle };
	int ret;

	if ((ret = fs_dir_handle_add(handle, ".", INODE_ROOT_INO, DT_DIR)) < 0 ||
	    (ret = fs_dir_handle_add(handle, "..", INODE_ROOT_INO, DT_DIR)) < 0)
		return ret;
	ret = store_for_each_tenant(fs->store, add_tenant_entry, ctx);
	if (ret < 0)
		log_error("cannot list the tenants of %s: %s", fs->store->path, strerror(-ret));
	return ret;
}

int fs_get_tenant(struct fs *fs, const char *client, struct tenant **out)
{
	struct stat st;
	int ret;

	if (fs->single_tenant) {
		if (strcmp(client, fs->single_tenant->client) != 0)
			return -ENOENT;
		*out = fs->single_tenant;
		return 0;
	}
	ret = tenant_stat_dir(fs->tenants, client, &st);
	return ret < 0 ? ret : tenant_get(fs->tenants, client, &st, out);
}

/* --- attributes ----------------------------------------------------------- */

/* Its times, size and blocks, if dir (a store directory's) was read. */
static void take_backing_times(struct stat *st, const struct stat *dir)
{
	if (!dir->st_ino)
		return;
	st->st_atim = dir->st_atim;
	st->st_mtim = dir->st_mtim;
	st->st_ctim = dir->st_ctim;
	/* du counts directories too: the backing dir's own size and blocks. */
	st->st_size = dir->st_size;
	st->st_blocks = dir->st_blocks;
	st->st_blksize = dir->st_blksize;
}

/* The listing's size is the link count: 2 + subdirectories, as they link here. */
static int stat_tenant(struct fs *fs, struct tenant *tenant, struct stat *st)
{
	struct dir_handle listing = { 0 };
	struct stat backing = { 0 };
	int ret;

	ret = fs_list_tenant(tenant, &listing, &backing);
	fs_set_virtual_dir(fs, tenant, st, tenant->dir_ino, listing.count);
	st->st_mode = S_IFDIR | tenant->dir_mode;
	if (ret == 0)
		take_backing_times(st, &backing);
	fs_dir_handle_release(&listing);
	return ret;
}

static int stat_tenants(struct fs *fs, struct stat *st)
{
	struct dir_handle listing = { 0 };
	struct stat backing = { 0 };
	int ret, fd;

	ret = list_tenants(fs, &listing);
	fs_set_virtual_dir(fs, NULL, st, INODE_ROOT_INO, listing.count);
	fd = store_open_artifacts(fs->store, O_PATH);
	if (ret == 0 && fd >= 0 && fstat(fd, &backing) == 0)
		take_backing_times(st, &backing);
	if (fd >= 0)
		close(fd);
	fs_dir_handle_release(&listing);
	return ret;
}

/* Fills *st from a backing file or directory as the view shows it. */
void fs_present_backing(struct fs *fs, const struct tenant *tenant, struct stat *st,
			const struct stat *backing)
{
	*st = *backing;
	set_owner_and_mode(fs, tenant, st, backing->st_mode & S_IFMT, backing->st_mode);
	if (S_ISDIR(backing->st_mode))
		st->st_nlink = 2;	/* a run dir shows no subdirectories */
}

static int stat_inode(struct fs *fs, struct inode *inode, struct stat *st)
{
	struct stat backing;

	switch (inode->kind) {
	case INODE_TENANTS:
		return stat_tenants(fs, st);
	case INODE_TENANT:
		return stat_tenant(fs, inode->tenant, st);
	case INODE_PROMOTE:
	case INODE_STATUS:
	case INODE_STAGED_RUN:
	case INODE_UPLOAD:
		return fs_promote_stat(fs, inode, st);
	case INODE_RUN:
		if (fstat(inode->fd, &backing) < 0)
			return -errno;
		if (backing.st_nlink == 0)
			return -ENOENT;	/* removed from the store */
		break;
	case INODE_FILE:
		if (fstatat(inode->parent->fd, inode->name, &backing, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (!S_ISREG(backing.st_mode))
			return -ENOENT;
		if (backing.st_ino != inode->ino)
			return -ESTALE;	/* the name now holds another file */
		break;
	default:
		return -ENOENT;
	}
	fs_present_backing(fs, inode->tenant, st, &backing);
	return 0;
}

/* --- lookup --------------------------------------------------------------- */

/*
 * Expiry is a matter of time, not of a change anyone could notice: the
 * kernel must look a run up again when it expires, so it vanishes then.
 */
static void limit_to_expiry(struct view *view, const char *run, struct fuse_entry_param *e)
{
	int64_t expires_at;
	double left;

	if (view->show_expired || index_get_run_expiry(view->index, view->client, run, &expires_at) < 0)
		return;
	left = (double)(expires_at - (int64_t)time(NULL));
	if (left < e->entry_timeout)
		e->entry_timeout = e->attr_timeout = left > 0 ? left : 0;
}

/* An empty entry with the mount's cache timeouts. */
static void init_entry(struct fs *fs, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->attr_timeout = cache_timeout(fs);
	e->entry_timeout = cache_timeout(fs);
}

/*
 * The entry of a run's file, from its backing stat.  Returns 0 with *e
 * (a reference counted), or -errno.
 */
static int lookup_run_file(struct fs *fs, struct inode *parent, const char *name,
			   const struct stat *backing, struct fuse_entry_param *e)
{
	struct inode *inode;
	int ret;

	init_entry(fs, e);
	if (!S_ISREG(backing->st_mode))
		return -ENOENT;
	ret = inode_get(fs->inodes, parent, INODE_FILE, name, backing->st_ino, -1, &inode);
	if (ret < 0)
		return ret;
	if (inode_over_limit(fs->inodes))
		fs_ask_to_prune(fs);
	fs_present_backing(fs, inode->tenant, &e->attr, backing);
	e->ino = inode_to_nodeid(inode);
	return 0;
}

/*
 * Resolves name in parent and counts a kernel reference to the result.
 * Returns 0 with *e filled, or -errno (-ENOENT for anything the view hides).
 */
static int lookup_child(struct fs *fs, struct inode *parent, const char *name,
			struct fuse_entry_param *e)
{
	struct inode *inode;
	struct stat backing;
	int fd, ret;

	init_entry(fs, e);

	switch (parent->kind) {
	case INODE_TENANTS: {
		struct tenant *tenant;

		ret = fs_get_tenant(fs, name, &tenant);
		if (ret == 0)
			ret = inode_get_tenant(fs->inodes, tenant, &inode);
		if (ret < 0)
			return ret;
		e->ino = inode_to_nodeid(inode);
		e->attr_timeout = e->attr_timeout < TENANT_TIMEOUT ? e->attr_timeout : TENANT_TIMEOUT;
		ret = stat_tenant(fs, tenant, &e->attr);
		if (ret < 0)
			inode_forget(fs->inodes, inode, 1);
		return ret;
	}
	case INODE_TENANT:
		if (strcmp(name, NAMES_PROMOTE_DIR) == 0 && parent->tenant->promoter) {
			ret = inode_get(fs->inodes, parent, INODE_PROMOTE, name,
					parent->tenant->promote_ino, -1, &inode);
			if (ret < 0)
				return ret;
			e->ino = inode_to_nodeid(inode);
			ret = fs_promote_stat(fs, inode, &e->attr);
			if (ret < 0)
				inode_forget(fs->inodes, inode, 1);
			return ret;
		}
		fd = view_open_run(&parent->tenant->view, name, &backing);
		if (fd < 0)
			return fd;
		limit_to_expiry(&parent->tenant->view, name, e);
		ret = inode_get(fs->inodes, parent, INODE_RUN, name, backing.st_ino, fd, &inode);
		break;
	case INODE_RUN:
		if (fstatat(parent->fd, name, &backing, AT_SYMLINK_NOFOLLOW) < 0)
			return errno == ENOTDIR || errno == ELOOP ? -ENOENT : -errno;
		return lookup_run_file(fs, parent, name, &backing, e);
	case INODE_PROMOTE:
	case INODE_STAGED_RUN:
		return fs_promote_lookup(fs, parent, name, e);
	default:
		return -ENOTDIR;
	}
	if (ret < 0)
		return ret;
	fs_present_backing(fs, inode->tenant, &e->attr, &backing);
	e->ino = inode_to_nodeid(inode);
	return 0;
}

static bool is_promote_dir(const struct inode *inode)
{
	return inode->kind == INODE_PROMOTE || inode->kind == INODE_STAGED_RUN;
}

static void fs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	int ret;

	struct inode *dir = inode_of(req, parent);

	ret = lookup_child(fs, dir, name, &e);
	if (ret == -ENOENT) {
		/* Cache the absence too; the watcher drops it if the name appears. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = is_promote_dir(dir) ? 0 : cache_timeout(fs);
		reply_entry(req, &e);
		return;
	}
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		reply_entry(req, &e);
}

static void fs_forget(fuse_req_t req, fuse_ino_t nodeid, uint64_t nlookup)
{
	inode_forget(fs_of(req)->inodes, inode_of(req, nodeid), nlookup);
	fuse_reply_none(req);
}

static void fs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct fs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++)
		inode_forget(fs->inodes, inode_from_nodeid(fs->inodes, forgets[i].ino),
			     forgets[i].nlookup);
	fuse_reply_none(req);
}

static struct open_file *handle_of(struct fuse_file_info *fi)
{
	return (struct open_file *)(uintptr_t)fi->fh;
}

static void fs_getattr(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct inode *inode = inode_of(req, nodeid);
	struct stat st, backing;
	int ret;

	if (fi && (inode->kind == INODE_FILE || inode->kind == INODE_UPLOAD) &&
	    handle_of(fi)->fd >= 0) {
		/* fstat() of an open file: ask the file itself, not its name. */
		ret = fstat(handle_of(fi)->fd, &backing) < 0 ? -errno : 0;
		if (ret == 0)
			fs_present_backing(fs, inode->tenant, &st, &backing);
	} else {
		ret = stat_inode(fs, inode, &st);
	}
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else if (is_promote_dir(inode) || inode->kind == INODE_STATUS ||
		 inode->kind == INODE_UPLOAD)
		reply_attr(req, &st, 0);
	else if (inode->kind == INODE_TENANT || inode->kind == INODE_TENANTS)
		/* a link count that follows runs expiring: kept short */
		reply_attr(req, &st, TENANT_TIMEOUT < cache_timeout(fs) ? TENANT_TIMEOUT :
								     cache_timeout(fs));
	else
		reply_attr(req, &st, cache_timeout(fs));
}

/* --- files ---------------------------------------------------------------- */

/*
 * Opens a backing file for reading: never following a symlink, never
 * waiting on a FIFO, and only the very file the inode stands for.
 */
int fs_open_backing(int dirfd, const char *path, int flags, ino_t ino)
{
	int open_flags = O_RDONLY | (flags & O_NOATIME);
	struct stat st;
	int fd;

	fd = store_open_regular(dirfd, path, open_flags, &st);
	if (fd == -EPERM && (open_flags & O_NOATIME))
		/* Not the backing file's owner: atime is then not ours to spare. */
		fd = store_open_regular(dirfd, path, open_flags & ~O_NOATIME, &st);
	if (fd == -ELOOP || fd == -EINVAL)
		return -ENOENT;	/* no longer a regular file: hidden */
	if (fd < 0)
		return fd;
	if (st.st_ino != ino) {
		close(fd);
		/* The name was replaced since lookup: the kernel looks it up again. */
		return -ESTALE;
	}
	return fd;
}

/*
 * Hands the kernel the backing file of an open, so that it serves the
 * file's reads (and an upload's writes) itself: fd, unless the inode's
 * open files of the same artifact or upload share one already (struct
 * backing).  fd -1 (a read of an upload): the backing its writers use, if
 * any; the kernel refuses an open without it while they are open.  Where
 * passthrough is not in use or the kernel refuses the file, the daemon
 * serves the reads (fs_read) and writes, and nothing else changes.
 */
static void open_passthrough(fuse_req_t req, struct inode *inode, int fd,
			     const struct upload *upload, struct fuse_file_info *fi,
			     struct open_file *handle)
{
#ifdef HAVE_PASSTHROUGH
	struct fs *fs = fs_of(req);
	struct backing *b;

	if (!atomic_load(&fs->passthrough))
		return;
	pthread_mutex_lock(&fs->backing_lock);
	b = inode->backing;
	if (fd >= 0 && (!b || b->upload != upload)) {
		b = calloc(1, sizeof(*b));
		if (b && (b->id = fuse_passthrough_open(req, fd)) <= 0) {
			free(b);
			pthread_mutex_unlock(&fs->backing_lock);
			if (atomic_exchange(&fs->passthrough, false))
				log_warning("client %s run %s file %s: the kernel refuses it as a "
					    "passthrough backing file; from now on the daemon serves "
					    "every read and write", inode->tenant->client,
					    inode->parent->name, inode->name);
			return;
		}
		if (b) {
			b->upload = upload;
			inode->backing = b;	/* an older one lives on with its open files */
		}
	}
	if (!b) {
		pthread_mutex_unlock(&fs->backing_lock);
		return;
	}
	b->opens++;
	handle->backing = b;
	fi->backing_id = b->id;
	pthread_mutex_unlock(&fs->backing_lock);
	/* The kernel caches the backing file's pages, not the FUSE file's. */
	fi->keep_cache = 0;
	fi->direct_io = 0;
	inode->tenant->stats.passthrough_opens++;
#else
	(void)req, (void)inode, (void)fd, (void)upload, (void)fi, (void)handle;
#endif
}

/*
 * The release of an open that open_passthrough() served: the last open
 * file of a backing gives its id back.  With req NULL (the open's reply
 * never reached its opener, so no release will come; or the session is
 * over, and inode NULL: the inodes are gone) the id stays registered
 * until the unmount.
 */
static void release_passthrough(fuse_req_t req, struct inode *inode, struct open_file *handle)
{
	struct fs *fs = handle->fs;
	struct backing *b;

	if (!handle->backing)
		return;	/* set by its open only, before the kernel knew of it */
	pthread_mutex_lock(&fs->backing_lock);
	b = handle->backing;
	handle->backing = NULL;
	if (b && --b->opens == 0) {
#ifdef HAVE_PASSTHROUGH
		if (req)
			fuse_passthrough_close(req, b->id);
#else
		(void)req;
#endif
		if (inode && inode->backing == b)
			inode->backing = NULL;
		free(b);
	}
	pthread_mutex_unlock(&fs->backing_lock);
}

/* A new open file, counted once, on the list fs_close_open_files() empties. */
struct open_file *fs_open_file_new(struct fs *fs)
{
	struct open_file *handle = calloc(1, sizeof(*handle));

	if (!handle)
		return NULL;
	handle->refs = 1;
	handle->fd = -1;
	handle->fs = fs;
	pthread_mutex_lock(&fs->open_lock);
	list_push(&fs->open_files, &handle->link);
	pthread_mutex_unlock(&fs->open_lock);
	return handle;
}

void fs_open_file_put(struct open_file *handle)
{
	struct fs *fs = handle->fs;

	if (--handle->refs > 0)
		return;
	pthread_mutex_lock(&fs->open_lock);
	list_unlink(&fs->open_files, &handle->link);
	pthread_mutex_unlock(&fs->open_lock);
	release_passthrough(NULL, NULL, handle);	/* no release came: see fs_close_open_files() */
	if (handle->upload)
		promote_end_upload(handle->upload);
	else if (handle->fd >= 0)
		close(handle->fd);
	free(handle->text);
	free(handle);
}

static void reply_open(fuse_req_t req, struct inode *inode, struct fuse_file_info *fi,
		       struct open_file *handle)
{
	fi->fh = (uintptr_t)handle;
	if (fuse_reply_open(req, fi) < 0) {
		/* The opener is gone: no release will come. */
		release_passthrough(NULL, inode, handle);
		fs_open_file_put(handle);
	}
}

/*
 * Lets the kernel write an upload itself where the promoter allows it
 * (promote_pass_through()): no WRITE reaches the daemon then.
 */
static void pass_upload_through(fuse_req_t req, struct inode *inode,
				struct fuse_file_info *fi, struct open_file *handle)
{
	int fd;

	if (!atomic_load(&fs_of(req)->passthrough))
		return;
	fd = promote_pass_through(handle->upload);
	if (fd < 0)
		return;
	open_passthrough(req, inode, fd, handle->upload, fi, handle);
	close(fd);	/* the kernel holds the file now, if it took it */
}

/*
 * Starts an upload for an open of inode, or (inode NULL) a create of
 * name in parent, in promote/, and replies.
 */
static void open_upload(fuse_req_t req, struct inode *parent, struct inode *inode,
			const char *name, bool truncate, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e = { 0 };
	struct open_file *handle;
	int ret;

	ret = fs_promote_open_upload(fs, parent, name, truncate, fuse_req_ctx(req)->pid, fi,
				     &handle, inode ? NULL : &e);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	pass_upload_through(req, inode ? inode : inode_of(req, e.ino), fi, handle);
	if (inode) {
		reply_open(req, inode, fi, handle);
		return;
	}
	inode = inode_of(req, e.ino);
	e.attr.st_ino = shown_ino(fs, e.attr.st_ino);
	fi->fh = (uintptr_t)handle;
	if (fuse_reply_create(req, &e, fi) < 0) {
		release_passthrough(NULL, inode, handle);
		fs_open_file_put(handle);
	}
}

static void fs_open(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct inode *inode = inode_of(req, nodeid);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	struct open_file *handle;
	int fd;

	if (inode->kind == INODE_UPLOAD && writing) {
		open_upload(req, inode->parent, inode, inode->name, fi->flags & O_TRUNC, fi);
		return;
	}
	if (writing) {
		fuse_reply_err(req, inode->kind == INODE_STATUS ? EACCES : EROFS);
		return;
	}
	handle = fs_open_file_new(fs);
	if (!handle) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	switch (inode->kind) {
	case INODE_FILE:
		fd = fs_open_backing(inode->parent->fd, inode->name, fi->flags, inode->ino);
		fi->keep_cache = keeps_cache(fs);
		if (fd >= 0)
			open_passthrough(req, inode, fd, NULL, fi, handle);
		break;
	case INODE_STATUS:
		fd = fs_promote_open_read(fs, inode, handle, fi);
		break;
	case INODE_UPLOAD:
		fd = fs_promote_open_read(fs, inode, handle, fi);
		if (fd >= 0)
			open_passthrough(req, inode, -1, NULL, fi, handle);
		break;
	default:
		fd = -EISDIR;
	}
	if (fd < 0) {
		fs_open_file_put(handle);
		fuse_reply_err(req, -fd);
		return;
	}
	if (inode->kind != INODE_STATUS)
		handle->fd = fd;
	fi->noflush = 1;
	inode->tenant->stats.opens++;
	reply_open(req, inode, fi, handle);
}

static void fs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct inode *dir = inode_of(req, parent);

	if (!is_promote_dir(dir) || !dir->tenant->promoter) {
		fuse_reply_err(req, EROFS);
		return;
	}
	open_upload(req, dir, NULL, name, true, fi);
}

/*
 * An upload's last writes may still be on their way to its staged file
 * (promote_upload_write()): whatever reads it waits for them.
 */
static void settle_upload(struct inode *inode, struct open_file *handle)
{
	if (inode->kind == INODE_UPLOAD && inode->tenant->promoter)
		promote_settle_upload(inode->tenant->promoter, handle->upload,
				      fs_promote_upload_run(inode), inode->name);
}

static void fs_read(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t offset,
		    struct fuse_file_info *fi)
{
	struct open_file *handle = handle_of(fi);
	struct fuse_bufvec data = FUSE_BUFVEC_INIT(size);
	struct tenant_stats *stats = &inode_of(req, nodeid)->tenant->stats;

	stats->reads++;
	stats->read_bytes += size;
	handle->refs++;
	if (handle->fd < 0) {
		/* promote/.status, as of open */
		size_t start = (size_t)offset < handle->len ? (size_t)offset : handle->len;
		fuse_reply_buf(req, handle->text + start,
			       size < handle->len - start ? size : handle->len - start);
	} else {
		settle_upload(inode_of(req, nodeid), handle);
		data.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
		data.buf[0].fd = handle->fd;
		data.buf[0].pos = offset;
		fuse_reply_data(req, &data, FUSE_BUF_SPLICE_MOVE);
	}
	fs_open_file_put(handle);
}

static void answer_write(void *context, ssize_t written)
{
	fuse_req_t req = context;

	if (written < 0)
		fuse_reply_err(req, (int)-written);
	else
		fuse_reply_write(req, (size_t)written);
}

static void fs_write(fuse_req_t req, fuse_ino_t nodeid, const char *buf, size_t size,
		     off_t offset, struct fuse_file_info *fi)
{
	struct open_file *handle = handle_of(fi);

	if (!handle->upload) {
		fuse_reply_err(req, EBADF);
		return;
	}
	/* Answered once the bytes are staged; their hash follows on this thread. */
	promote_upload_write(handle->upload, buf, size, offset, answer_write, req);
}

/* The writer's close(): the moment its upload is committed (fs_promote_flush()). */
static void fs_flush(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi)
{
	struct open_file *handle = handle_of(fi);
	int ret = 0;

	if (handle->upload)
		ret = fs_promote_flush(fs_of(req), inode_of(req, nodeid), handle->upload,
				       fuse_req_ctx(req)->pid);
	fuse_reply_err(req, -ret);
}

static void fs_release(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi)
{
	struct inode *inode = inode_of(req, nodeid);

	release_passthrough(req, inode, handle_of(fi));
	/* The upload's staging directory stays for the next file: see fs_promote_tidy_run(). */
	fs_open_file_put(handle_of(fi));
	fuse_reply_err(req, 0);
}

static void fs_lseek(fuse_req_t req, fuse_ino_t nodeid, off_t offset, int whence,
		     struct fuse_file_info *fi)
{
	/* SEEK_DATA and SEEK_HOLE: sparse-aware copies need the backing answer. */
	off_t result = -1;

	if (handle_of(fi)->fd >= 0) {
		settle_upload(inode_of(req, nodeid), handle_of(fi));
		result = lseek(handle_of(fi)->fd, offset, whence);
	}

	if (result < 0)
		fuse_reply_err(req, handle_of(fi)->fd < 0 ? ESPIPE : errno);
	else
		fuse_reply_lseek(req, result);
}

static void fs_fsync(fuse_req_t req, fuse_ino_t nodeid, int datasync,
		     struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);	/* staged data is made durable at commit */
}

/* --- directories ------------------------------------------------------------ */

static void fs_opendir(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct inode *inode = inode_of(req, nodeid);
	struct dir_handle *handle;
	int ret;

	fs_prune_before_listing(fs);
	handle = calloc(1, sizeof(*handle));
	if (!handle) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&handle->lock, NULL);
	switch (inode->kind) {
	case INODE_TENANTS:
		ret = list_tenants(fs, handle);
		break;
	case INODE_TENANT:
		ret = fs_list_tenant(inode->tenant, handle, NULL);
		break;
	case INODE_PROMOTE:
		ret = fs_promote_list(inode->tenant, handle);
		break;
	case INODE_STAGED_RUN:
		ret = fs_promote_list_run(inode, handle);
		break;
	case INODE_RUN:
		handle->dir_ino = inode->ino;
		ret = store_open_dir(inode->fd, &handle->stream);
		break;
	default:
		ret = -ENOTDIR;
	}
	if (ret < 0) {
		dir_handle_free(handle);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uintptr_t)handle;
	/*
	 * A tenant's listing changes as runs expire, promote/'s with every
	 * upload: those are listed afresh each time.
	 */
	fi->keep_cache = keeps_cache(fs) && inode->kind == INODE_RUN;
	fi->cache_readdir = fi->keep_cache;
	dir_handle_track(fs, handle);
	if (fuse_reply_open(req, fi) < 0)
		dir_handle_close(fs, handle);
}

/*
 * Adds one entry to a readdir reply; for READDIRPLUS, with the attributes
 * of backing when given (a run's file, stat taken by the read-ahead), else
 * looked up.  Returns the bytes used, or 0 when it did not fit (then
 * nothing was added, and no reference is left counted).
 */
static size_t add_entry(fuse_req_t req, struct inode *dir, char *buf, size_t space,
			const char *name, ino_t ino, unsigned char type, off_t next,
			bool plus, const struct stat *backing)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	size_t used;

	if (!plus) {
		struct stat st = { .st_ino = shown_ino(fs, ino), .st_mode = DTTOIF(type) };
		used = fuse_add_direntry(req, buf, space, name, &st, next);
		return used > space ? 0 : used;
	}
	if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		/* No node id: the kernel knows its way to these already. */
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = ino;
		e.attr.st_mode = DTTOIF(type);
	} else if ((backing ? lookup_run_file(fs, dir, name, backing, &e) :
			      lookup_child(fs, dir, name, &e)) < 0) {
		/* Vanished since it was listed: list it without attributes. */
		memset(&e, 0, sizeof(e));
		e.attr.st_ino = ino;
		e.attr.st_mode = DTTOIF(type);
	}
	e.attr.st_ino = shown_ino(fs, e.attr.st_ino);
	used = fuse_add_direntry_plus(req, buf, space, name, &e, next);
	if (used > space) {
		if (e.ino)
			inode_forget(fs->inodes, inode_from_nodeid(fs->inodes, e.ino), 1);
		return 0;
	}
	return used;
}

static size_t read_snapshot(fuse_req_t req, struct inode *dir, struct dir_handle *handle,
			    char *buf, size_t size, off_t offset, bool plus)
{
	size_t pos = 0;

	/* A snapshot entry's cookie is its index + 1. */
	for (size_t i = (size_t)offset; i < handle->count; i++) {
		size_t used = add_entry(req, dir, buf + pos, size - pos, handle->entries[i].name,
					handle->entries[i].ino, handle->entries[i].type, (off_t)i + 1, plus,
					NULL);
		if (!used)
			break;
		pos += used;
	}
	return pos;
}

/*
 * Entries a READDIRPLUS reply's read-ahead takes at most: about what one
 * reply to a 32 KiB getdents() holds.
 */
#define READ_AHEAD_MAX 256
/*
 * How long attributes taken ahead may be sent: well within the second in
 * which the mount shows a change made in the store.
 */
#define READ_AHEAD_FRESH_NS (100 * 1000000LL)

/* Makes room for count pending entries.  Returns 0 or -ENOMEM.  Handle locked. */
static int make_pending_room(struct dir_handle *handle, size_t count)
{
	struct pending_entry *bigger;

	if (handle->pending_capacity >= count)
		return 0;
	bigger = realloc(handle->pending, count * sizeof(*bigger));
	if (!bigger)
		return -ENOMEM;
	handle->pending = bigger;
	handle->pending_capacity = count;
	return 0;
}

/*
 * Reads the stream's next entry that the view shows into a new pending
 * entry.  Returns 1, 0 at the end of the stream, or -errno.  Handle
 * locked, with room for one more pending.
 */
static int read_pending(struct dir_handle *handle)
{
	struct pending_entry *pending;
	struct dirent *entry;
	bool dot;

	for (;;) {
		errno = 0;
		entry = readdir(handle->stream);
		if (!entry)
			return -errno;
		dot = strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0;
		if (dot || store_entry_type(handle->stream, entry) == DT_REG)
			break;
		/* symlinks, FIFOs, devices, subdirectories: not shown */
	}
	pending = &handle->pending[handle->pending_count++];
	snprintf(pending->name, sizeof(pending->name), "%s", entry->d_name);
	pending->ino = entry->d_ino;
	pending->type = DT_REG;
	if (dot) {
		pending->ino = entry->d_name[1] ? INODE_ROOT_INO : handle->dir_ino;
		pending->type = DT_DIR;
	}
	pending->next = entry->d_off;
	pending->stat_taken = false;
	return 1;
}

/*
 * Fills a reply from a run directory's stream, pending entries first.
 * Sets *pos to the bytes used and *sent to the entries.  Returns 0 or
 * -errno (only when nothing was added).  Handle locked.
 */
static int read_stream(fuse_req_t req, struct inode *dir, struct dir_handle *handle,
		       char *buf, size_t size, off_t offset, bool plus, size_t *pos, size_t *sent)
{
	bool fresh = clock_ns(CLOCK_MONOTONIC) - handle->read_ahead_ns < READ_AHEAD_FRESH_NS;
	int ret = 0;

	/* The backing directory's own cookies: stable while entries come and go. */
	if (offset != handle->offset) {
		seekdir(handle->stream, offset);
		handle->offset = offset;
		handle->pending_first = handle->pending_count = 0;
	}
	*pos = *sent = 0;
	for (;;) {
		struct pending_entry *next;
		size_t used;

		if (handle->pending_first == handle->pending_count) {
			handle->pending_first = handle->pending_count = 0;
			ret = make_pending_room(handle, 1);
			if (ret == 0)
				ret = read_pending(handle);
			if (ret <= 0)
				break;
		}
		next = &handle->pending[handle->pending_first];
		used = add_entry(req, dir, buf + *pos, size - *pos, next->name, next->ino,
				 next->type, next->next, plus,
				 plus && fresh && next->stat_taken ? &next->st : NULL);
		if (!used)
			return 0;	/* it stays pending: first in the next reply */
		*pos += used;
		(*sent)++;
		handle->pending_first++;
		handle->offset = next->next;
	}
	return *pos ? 0 : ret;
}

/*
 * After a full READDIRPLUS reply from a run directory, reads the entries
 * the next one will need and takes their stat, while the kernel and the
 * reader take this reply in: a walk's stat() calls then overlap with the
 * reader's work instead of adding to it.  Touches nothing but the handle,
 * which the release waits for: the kernel may forget the directory's
 * inode meanwhile.  Handle locked.
 */
static void read_ahead(struct dir_handle *handle, size_t sent)
{
	size_t want = sent < READ_AHEAD_MAX ? sent : READ_AHEAD_MAX;
	size_t left = handle->pending_count - handle->pending_first;
	int fd = dirfd(handle->stream);

	if (make_pending_room(handle, READ_AHEAD_MAX) < 0)
		return;		/* the next reply reads as it goes */
	memmove(handle->pending, handle->pending + handle->pending_first,
		left * sizeof(*handle->pending));
	handle->pending_first = 0;
	handle->pending_count = left;
	while (handle->pending_count < want && read_pending(handle) > 0)
		;
	handle->read_ahead_ns = clock_ns(CLOCK_MONOTONIC);
	for (size_t i = 0; i < handle->pending_count; i++) {
		struct pending_entry *pending = &handle->pending[i];

		pending->stat_taken = pending->type == DT_REG &&
				      fstatat(fd, pending->name, &pending->st,
					      AT_SYMLINK_NOFOLLOW) == 0;
	}
}

static void do_readdir(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t offset,
		       struct fuse_file_info *fi, bool plus)
{
	struct dir_handle *handle = (struct dir_handle *)(uintptr_t)fi->fh;
	struct inode *dir = inode_of(req, nodeid);
	size_t pos = 0, sent = 0;
	char *buf;
	int ret = 0;

	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&handle->lock);
	if (handle->stream)
		ret = read_stream(req, dir, handle, buf, size, offset, plus, &pos, &sent);
	else
		pos = read_snapshot(req, dir, handle, buf, size, offset, plus);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, pos);
	if (ret == 0 && plus && handle->stream && handle->pending_first < handle->pending_count)
		read_ahead(handle, sent);
	pthread_mutex_unlock(&handle->lock);
	free(buf);
}

static void fs_readdir(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	do_readdir(req, nodeid, size, offset, fi, false);
}

static void fs_readdirplus(fuse_req_t req, fuse_ino_t nodeid, size_t size, off_t offset,
			   struct fuse_file_info *fi)
{
	do_readdir(req, nodeid, size, offset, fi, true);
}

static void fs_releasedir(fuse_req_t req, fuse_ino_t nodeid, struct fuse_file_info *fi)
{
	dir_handle_close(fs_of(req), (struct dir_handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static uint64_t rounded_down(uint64_t value, uint64_t step)
{
	return step > 1 ? value - value % step : value;
}

/* base units, or a sixteenth of a smaller total, a thousandth of a larger. */
static uint64_t coarse_step(uint64_t total, uint64_t base)
{
	uint64_t step = base < total / 16 ? base : total / 16;

	return step > total / 1000 ? step : total / 1000;
}

/*
 * Free space and free inodes of the shared file system move with every
 * tenant's writes.  Without a quota to report instead, they are shown in
 * coarse steps (1 GiB and 65536 inodes; a sixteenth of a smaller file
 * system, a thousandth of a larger one), so another tenant's activity
 * shows only when it moves the total across a step: df stays useful, and
 * a tenant learns about one bit per step crossed instead of every byte
 * and file.
 */
static void blur_shared_figures(struct statvfs *st)
{
	uint64_t bytes_step = coarse_step(st->f_blocks,
					  (1ULL << 30) / (st->f_frsize ? st->f_frsize : 1));
	uint64_t files_step = coarse_step(st->f_files, 65536);

	st->f_bfree = rounded_down(st->f_bfree, bytes_step);
	st->f_bavail = rounded_down(st->f_bavail, bytes_step);
	st->f_ffree = rounded_down(st->f_ffree, files_step);
	st->f_favail = rounded_down(st->f_favail, files_step);
}

/*
 * df of the mount: the store's file system in coarse steps, or, with a
 * quota, the tenant's own figures (the quota as size, what it stores as
 * used).
 */
static void fs_statfs(fuse_req_t req, fuse_ino_t nodeid)
{
	struct fs *fs = fs_of(req);
	struct tenant *tenant = inode_of(req, nodeid)->tenant;
	struct promote_usage usage;
	struct statvfs st;

	if (fstatvfs(fs->store->root_fd, &st) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	blur_shared_figures(&st);
	if (tenant && tenant->promoter && promote_get_usage(tenant->promoter, &usage) == 0) {
		if (usage.quota_bytes) {
			uint64_t left = usage.quota_bytes > usage.used_bytes ?
					usage.quota_bytes - usage.used_bytes : 0;
			st.f_blocks = usage.quota_bytes / st.f_frsize;
			left /= st.f_frsize;
			/* Never more room than the file system really has. */
			st.f_bfree = left < st.f_bfree ? left : st.f_bfree;
			st.f_bavail = left < st.f_bavail ? left : st.f_bavail;
		}
		if (usage.quota_files) {
			uint64_t left = usage.quota_files > usage.used_files ?
					usage.quota_files - usage.used_files : 0;
			st.f_files = usage.quota_files;
			st.f_ffree = left < st.f_ffree ? left : st.f_ffree;
			st.f_favail = left < st.f_favail ? left : st.f_favail;
		}
	}
	fuse_reply_statfs(req, &st);
}

/* --- extended attributes ------------------------------------------------------ */

/* Reads the index attributes of a run or file; none for the others. */
static int read_attrs(struct inode *inode, struct index_attrs *attrs)
{
	const struct view *view = inode->tenant ? &inode->tenant->view : NULL;

	memset(attrs, 0, sizeof(*attrs));
	switch (inode->kind) {
	case INODE_RUN:
	case INODE_STAGED_RUN:
		return index_get_run_attrs(view->index, view->client, inode->name, attrs);
	case INODE_FILE:
		return index_get_file_attrs(view->index, view->client, inode->parent->name,
					    inode->name, attrs);
	case INODE_UPLOAD:
		if (!fs_promote_upload_run(inode))
			return -ENOENT;
		return index_get_file_attrs(view->index, view->client,
					    fs_promote_upload_run(inode), inode->name, attrs);
	default:
		return -ENOENT;
	}
}

/* Replies to a getxattr with value (NULL: there is none). */
static void reply_xattr_value(fuse_req_t req, const char *value, size_t size)
{
	if (!value)
		fuse_reply_err(req, ENODATA);
	else if (size == 0)
		fuse_reply_xattr(req, strlen(value));
	else if (size < strlen(value))
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, strlen(value));
}

static void add_stats(void *ctx, struct tenant *tenant)
{
	uint64_t *sums = ctx;

	sums[0] += tenant->stats.opens;
	sums[1] += tenant->stats.reads;
	sums[2] += tenant->stats.read_bytes;
	sums[3] += tenant->stats.passthrough_opens;
}

/*
 * The read counters of inode's tenant (the all-tenants root: every
 * tenant's, summed).  The daemon's root adds how many file inodes it
 * holds, the figure -o max_cached_files bounds; a tenant directory of an
 * all-tenants daemon does not, or its tenant would learn the others'
 * activity from it.
 */
static void reply_stats(fuse_req_t req, struct inode *inode, size_t size)
{
	struct fs *fs = fs_of(req);
	uint64_t sums[4] = { 0 };
	char text[224], cached[48] = "";

	if (inode->tenant)
		add_stats(sums, inode->tenant);
	else
		tenant_for_each(fs->tenants, add_stats, sums);
	if (inode == inode_root(fs->inodes))
		snprintf(cached, sizeof(cached), ",\"cached_files\":%zu",
			 inode_cached_files(fs->inodes));
	snprintf(text, sizeof(text),
		 "{\"opens\":%llu,\"reads\":%llu,\"read_bytes\":%llu,"
		 "\"passthrough_opens\":%llu,\"passthrough\":%s%s}",
		 (unsigned long long)sums[0], (unsigned long long)sums[1],
		 (unsigned long long)sums[2], (unsigned long long)sums[3],
		 atomic_load(&fs->passthrough) ? "true" : "false", cached);
	reply_xattr_value(req, text, size);
}

static void fs_getxattr(fuse_req_t req, fuse_ino_t nodeid, const char *name, size_t size)
{
	struct inode *inode = inode_of(req, nodeid);
	struct index_attrs attrs;
	int ret;

	if ((inode->kind == INODE_TENANT || inode->kind == INODE_TENANTS) &&
	    strcmp(name, XATTR_STATS) == 0) {
		reply_stats(req, inode, size);
		return;
	}
	/*
	 * Only user.* names exist here.  Saying so for the other namespaces
	 * (not "no such attribute") matters to ls -l, which asks for
	 * security.selinux and system.posix_acl_access of every file unless
	 * the file system said it has none: two round trips a file.
	 */
	if (strncmp(name, "user.", 5) != 0) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0) {
		fuse_reply_err(req, ENODATA);	/* no index query for those */
		return;
	}
	ret = read_attrs(inode, &attrs);
	if (ret < 0 && ret != -ENOENT) {
		fuse_reply_err(req, -ret);
		goto out;
	}
	reply_xattr_value(req, index_attrs_value(&attrs, name + strlen(XATTR_PREFIX)), size);
out:
	index_attrs_release(&attrs);
}

static void fs_listxattr(fuse_req_t req, fuse_ino_t nodeid, size_t size)
{
	struct index_attrs attrs;
	char list[INDEX_ATTRS_MAX * 64];
	size_t len = 0;
	int ret;

	ret = read_attrs(inode_of(req, nodeid), &attrs);
	if (ret < 0 && ret != -ENOENT) {
		fuse_reply_err(req, -ret);
		goto out;
	}
	for (size_t i = 0; i < attrs.count; i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
					XATTR_PREFIX, attrs.attr[i].name) + 1;
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
out:
	index_attrs_release(&attrs);
}

/* --- everything that would change the store --------------------------------- */

static void fs_setattr(fuse_req_t req, fuse_ino_t nodeid, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct inode *inode = inode_of(req, nodeid);
	struct stat st;
	int ret;

	if (inode->kind == INODE_UPLOAD)
		ret = fs_promote_setattr(fs, inode, fi ? handle_of(fi)->upload : NULL, attr, to_set);
	else if (inode->kind == INODE_STAGED_RUN)
		ret = (to_set & FUSE_SET_ATTR_SIZE) ? -EISDIR : 0;
	else
		ret = -EROFS;
	if (ret == 0)
		ret = stat_inode(fs, inode, &st);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		reply_attr(req, &st, 0);
}

static void fs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

/* mkdir in promote/: a run to upload into. */
static void fs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct inode *dir = inode_of(req, parent);
	struct fuse_entry_param e = { 0 };
	int ret;

	if (dir->kind != INODE_STAGED_RUN && (dir->kind != INODE_PROMOTE || !dir->tenant->promoter)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = fs_promote_mkdir(fs, dir, name, &e);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		reply_entry(req, &e);
}

/* rm of an artifact (or of metadata.json) in a run, or of a temporary in promote/<run>. */
static void fs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct inode *dir = inode_of(req, parent);
	struct promoter *promoter = dir->tenant ? dir->tenant->promoter : NULL;

	if (dir->kind == INODE_RUN && promoter)
		fuse_reply_err(req, -promote_delete_file(promoter, dir->name, name));
	else if (dir->kind == INODE_STAGED_RUN)
		fuse_reply_err(req, -promote_discard_upload(promoter, dir->name, name));
	else
		fuse_reply_err(req, is_promote_dir(dir) ? EPERM : EROFS);
}

/* rmdir of a run (the end of rm -r), or of an idle promote/<run>. */
static void fs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct inode *dir = inode_of(req, parent);
	struct promoter *promoter = dir->tenant ? dir->tenant->promoter : NULL;
	int ret = -EROFS;

	if (dir->kind == INODE_TENANTS)
		ret = -EACCES;	/* tenants come and go with the store only */
	else if (!promoter)
		ret = -EROFS;
	else if (dir->kind == INODE_TENANT && strcmp(name, NAMES_PROMOTE_DIR) == 0)
		ret = -EPERM;
	else if (dir->kind == INODE_TENANT)
		ret = promote_delete_run(promoter, name);
	else if (dir->kind == INODE_PROMOTE)
		ret = fs_promote_rmdir(dir->tenant, name);
	fuse_reply_err(req, -ret);
}

static void fs_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

/* rename() within promote/<run>/ may promote; everything else stays read-only. */
static void fs_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct inode *dir = inode_of(req, parent);

	if (dir->kind != INODE_STAGED_RUN || newparent != parent)
		fuse_reply_err(req, dir->kind == INODE_STAGED_RUN ? EXDEV : EROFS);
	else
		fuse_reply_err(req, -fs_promote_rename(fs_of(req), dir, name, newname, flags));
}

static void fs_link(fuse_req_t req, fuse_ino_t nodeid, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}

/* Only what is being promoted takes metadata; everything else is read-only. */
static void fs_setxattr(fuse_req_t req, fuse_ino_t nodeid, const char *name,
			const char *value, size_t size, int flags)
{
	struct inode *inode = inode_of(req, nodeid);
	const size_t prefix = strlen(XATTR_PREFIX);

	if (inode->kind != INODE_UPLOAD && inode->kind != INODE_STAGED_RUN)
		fuse_reply_err(req, EROFS);
	else if (strncmp(name, XATTR_PREFIX, prefix) != 0)
		fuse_reply_err(req, EOPNOTSUPP);
	else
		fuse_reply_err(req, -fs_promote_setxattr(fs_of(req), inode, name + prefix, value, size));
}

static void fs_removexattr(fuse_req_t req, fuse_ino_t nodeid, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void fs_access(fuse_req_t req, fuse_ino_t nodeid, int mask)
{
	struct inode *inode = inode_of(req, nodeid);

	if (!(mask & W_OK))
		fuse_reply_err(req, 0);
	else if (inode->kind == INODE_STATUS || inode->kind == INODE_TENANTS)
		fuse_reply_err(req, EACCES);
	else
		fuse_reply_err(req, inode->tenant->promoter ? 0 : EROFS);
}

/* The largest request whose spliced reply fits in a pipe (see fs_init). */
static unsigned int splice_request_max(void)
{
	const unsigned int page = (unsigned int)sysconf(_SC_PAGESIZE);
	unsigned long pipe_max = 1UL << 20;	/* the kernel's default */
	FILE *limit = fopen("/proc/sys/fs/pipe-max-size", "re");

	if (limit) {
		if (fscanf(limit, "%lu", &pipe_max) != 1)
			pipe_max = 1UL << 20;
		fclose(limit);
	}
	if (pipe_max > 1UL << 20)
		pipe_max = 1UL << 20;	/* the kernel sends no more anyway */
	if (pipe_max < 36UL * page)
		return 32 * page;	/* FUSE's own floor; then without splice */
	return (unsigned int)(pipe_max - 4 * page);
}

void fs_size_requests(struct fs *fs)
{
	fs->max_request = splice_request_max();
	fs->upload_block = 4096;
	while ((unsigned long)fs->upload_block * 2 <= fs->max_request)
		fs->upload_block *= 2;
}

/*
 * The kernel gives a FUSE mount 128 KiB of read-ahead, so a sequential
 * reader waits on a round trip per 128 KiB; with a few MiB the daemon
 * works ahead of it (on this kind of machine, the first read of a cached
 * 1 GiB file went from 1.7 to about 4 GB/s).  Only the device info's
 * sysfs knob raises it; the INIT reply can only lower it.  Not being
 * allowed to (no root, a read-only /sys) costs speed, nothing else.
 */
static void set_read_ahead(struct fs *fs, struct fuse_conn_info *conn)
{
	char path[64], value[16];
	int fd, len;

	if (!fs->read_ahead_kb || !fs->bdi[0])
		return;
	snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", fs->bdi);
	len = snprintf(value, sizeof(value), "%u", fs->read_ahead_kb);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, value, (size_t)len) != len) {
		log_info("keeping the kernel's read-ahead: cannot write %s: %s", path,
			 strerror(errno));
	} else {
		conn->max_readahead = fs->read_ahead_kb * 1024;
	}
	if (fd >= 0)
		close(fd);
}

/*
 * Asks for FUSE passthrough where it may be used, and says once, at start,
 * how reads of artifacts will be served.
 */
static void negotiate_passthrough(struct fs *fs, struct fuse_conn_info *conn)
{
#ifdef HAVE_PASSTHROUGH
	if (!fs->passthrough_off && !(conn->capable & FUSE_CAP_PASSTHROUGH))
		fs->passthrough_off = "is not offered by the kernel";
	if (!fs->passthrough_off) {
		/* Passthrough excludes the writeback cache, which is never asked for. */
		conn->want |= FUSE_CAP_PASSTHROUGH;
		/*
		 * Each write the kernel passes through an upload first asks
		 * whether the file has set-id bits or capabilities to drop: a
		 * GETXATTR per write.  The view shows neither (modes are its
		 * own, security attributes are not shown), so there are none:
		 * with KILLPRIV_V2 the kernel remembers that after one look per
		 * inode (SB_NOSEC).
		 */
		if (conn->capable & FUSE_CAP_HANDLE_KILLPRIV_V2)
			conn->want |= FUSE_CAP_HANDLE_KILLPRIV_V2;
		atomic_store(&fs->passthrough, true);
		log_info("reads of artifacts: FUSE passthrough (the kernel reads the store, "
			 "and writes uploads)");
		return;
	}
#endif
	log_info("reads of artifacts: through the daemon; passthrough %s", fs->passthrough_off);
}

static void fs_init(void *userdata, struct fuse_conn_info *conn)
{
	set_read_ahead(userdata, conn);
	negotiate_passthrough(userdata, conn);
	/* Reads splice from the backing fd to the kernel without a copy. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
	/*
	 * A spliced reply must fit in a pipe: the data, and three pages plus
	 * the reply header libfuse counts on top.  Without CAP_SYS_RESOURCE a pipe holds
	 * at most fs.pipe-max-size (1 MiB by default), and a reply that does
	 * not fit falls back to a fresh 1 MiB buffer per request, about ten
	 * times slower.  So requests stay 4 pages short of what a pipe holds.
	 */
	conn->max_write = ((struct fs *)userdata)->max_request;
	/*
	 * Always readdirplus: a listing then brings every entry's attributes
	 * at once, where the kernel's adaptive mode would send a lookup per
	 * entry to a walk that stats everything (find, du, backups).
	 */
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
	/* Our own invalidations are the authority on data changes. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

const struct fuse_lowlevel_ops fs_operations = {
	.init = fs_init,
	.lookup = fs_lookup,
	.forget = fs_forget,
	.forget_multi = fs_forget_multi,
	.getattr = fs_getattr,
	.setattr = fs_setattr,
	.mknod = fs_mknod,
	.mkdir = fs_mkdir,
	.unlink = fs_unlink,
	.rmdir = fs_rmdir,
	.symlink = fs_symlink,
	.rename = fs_rename,
	.link = fs_link,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.flush = fs_flush,
	.release = fs_release,
	.fsync = fs_fsync,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.readdirplus = fs_readdirplus,
	.releasedir = fs_releasedir,
	.fsyncdir = fs_fsync,
	.statfs = fs_statfs,
	.setxattr = fs_setxattr,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.removexattr = fs_removexattr,
	.access = fs_access,
	.create = fs_create,
	.lseek = fs_lseek,
};

void fs_close_open_files(struct fs *fs)
{
	/* What the kernel never released: the session ended first. */
	while (fs->open_files) {
		struct open_file *handle = list_entry(fs->open_files, struct open_file, link);

		handle->refs = 1;
		fs_open_file_put(handle);
	}
	while (fs->dir_handles)
		dir_handle_close(fs, list_entry(fs->dir_handles, struct dir_handle, link));
}
