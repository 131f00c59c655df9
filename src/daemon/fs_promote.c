/*
 * fs_promote.c - promote/'s part of the FUSE operations: listing, stat and
 * lookup of promote/, promote/.status and promote/<run>/; the uploads
 * written there (open, create, setattr, close); mkdir, rename and
 * setxattr in it.
 *
 * fs.c dispatches each operation here for promote/ and replies with what
 * these return; the promoter (promote.h) does the staging and landing.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_internal.h"
#include "names.h"

/*
 * The number promote/<run> shows: tenant_view_ino(), a keyed hash of the
 * run's name in the view's own range, so it never meets a backing file's,
 * stays the same across remounts, and does not change when the run's
 * first file lands (a number from the run dir would: a tool copying into
 * a run made with mkdir would see its directory replaced).  Two of n runs
 * share one with a chance of about n^2 / 2^33.
 */
static ino_t staged_run_ino(const struct tenant *tenant, const char *run)
{
	return tenant_view_ino(tenant, run);
}

/* Whether the store has run, as the view shows it; *st its run dir. */
static bool store_has_run(struct tenant *tenant, const char *run, struct stat *st)
{
	int fd = view_open_run(&tenant->view, run, st);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/*
 * promote/<run> of a run the store has needs no staging: a write makes
 * one, and it goes when the run settles with no upload in flight (a
 * landing changes the run, so the last one brings the settle that
 * removes it), so that no staging outlives a run deleted behind the
 * daemon's back, even one deleted before it settled.
 */
void fs_promote_tidy_run(struct tenant *tenant, const char *run)
{
	struct stat st;

	promote_tidy_run(tenant->promoter, run, store_has_run(tenant, run, &st));
}

/*
 * Runs staged here that the store does not have: made with mkdir, or with
 * uploads in flight into a run deleted meanwhile.  The others are listed
 * from the store, and their idle stagings removed.
 */
static int add_staged_run(void *ctx, const char *run, const struct stat *st)
{
	struct tenant *tenant = ((void **)ctx)[0];
	struct stat run_st;
	bool stored = store_has_run(tenant, run, &run_st);
	int ret = promote_tidy_run(tenant->promoter, run, stored);

	if (stored || ret == 0 || ret == -ENOENT)
		return 0;
	return fs_dir_handle_add(((void **)ctx)[1], run, staged_run_ino(tenant, run), DT_DIR);
}

static int add_upload(void *ctx, const char *name, const struct stat *st)
{
	return fs_dir_handle_add(ctx, name, st->st_ino, DT_REG);
}

/*
 * Lists promote/: its outcome file, a directory for each of the tenant's
 * runs one may promote into and each run staged here only, the requests
 * in flight.  Makes nothing.
 */
int fs_promote_list(struct tenant *tenant, struct dir_handle *handle)
{
	struct dir_handle runs = { 0 };
	void *staged_ctx[] = { tenant, handle };
	int ret;

	if ((ret = fs_dir_handle_add(handle, ".", tenant->promote_ino, DT_DIR)) < 0 ||
	    (ret = fs_dir_handle_add(handle, "..", tenant->dir_ino, DT_DIR)) < 0 ||
	    (ret = fs_dir_handle_add(handle, PROMOTE_STATUS_FILE, tenant->status_ino,
				     DT_REG)) < 0)
		return ret;
	ret = fs_list_tenant(tenant, &runs, NULL);
	for (size_t i = 0; ret == 0 && i < runs.count; i++) {
		const struct dir_entry *run = &runs.entries[i];

		/* Not ".", ".." nor promote/ itself: no run is named so. */
		if (names_check_run(run->name, NULL) == 0 &&
		    promote_check_run(tenant->promoter, run->name) == 0)
			ret = fs_dir_handle_add(handle, run->name,
						staged_run_ino(tenant, run->name), DT_DIR);
	}
	fs_dir_handle_release(&runs);
	if (ret == 0)
		ret = promote_list_staged_runs(tenant->promoter, add_staged_run, staged_ctx);
	if (ret == 0)
		ret = promote_list_uploads(tenant->promoter, NULL, add_upload, handle);
	return ret;
}

int fs_promote_list_run(struct inode *dir, struct dir_handle *handle)
{
	int ret;

	if ((ret = fs_dir_handle_add(handle, ".", dir->ino, DT_DIR)) < 0 ||
	    (ret = fs_dir_handle_add(handle, "..", dir->tenant->promote_ino, DT_DIR)) < 0)
		return ret;
	return promote_list_uploads(dir->tenant->promoter, dir->name, add_upload, handle);
}

/*
 * rmdir promote/<run>: its staging goes if idle; a run the store has
 * but nothing staged has none to remove, and is done as well.
 */
int fs_promote_rmdir(struct tenant *tenant, const char *run)
{
	struct stat st;
	int ret = promote_unstage_run(tenant->promoter, run);

	return ret == -ENOENT && store_has_run(tenant, run, &st) ? 0 : ret;
}

/* --- attributes ----------------------------------------------------------- */

const char *fs_promote_upload_run(const struct inode *inode)
{
	return inode->parent->kind == INODE_STAGED_RUN ? inode->parent->name : NULL;
}

/*
 * Times of the view's own entries in promote/ come from the store, never
 * from the mount, so a backup sees nothing changed across remounts.
 */
static void take_times(struct stat *st, const struct timespec *time)
{
	st->st_atim = st->st_mtim = st->st_ctim = *time;
}

/* promote/'s times: the tenant dir's (the epoch before it has one). */
static void take_tenant_times(struct tenant *tenant, struct stat *st)
{
	struct stat dir;
	int fd = store_open_tenant(tenant->view.store, tenant->client, O_PATH);

	take_times(st, &(struct timespec){ 0 });
	if (fd < 0)
		return;
	if (fstat(fd, &dir) == 0) {
		st->st_atim = dir.st_atim;
		st->st_mtim = dir.st_mtim;
		st->st_ctim = dir.st_ctim;
	}
	close(fd);
}

/* promote/: one link for itself, one from the root, one per directory it lists. */
static int stat_promote_dir(struct fs *fs, struct tenant *tenant, struct stat *st)
{
	struct dir_handle listing = { 0 };
	nlink_t dirs = 0;
	int ret = fs_promote_list(tenant, &listing);

	for (size_t i = 0; i < listing.count; i++)
		dirs += listing.entries[i].type == DT_DIR;
	fs_dir_handle_release(&listing);
	if (ret < 0)
		return ret;
	fs_set_virtual_dir(fs, tenant, st, tenant->promote_ino, dirs);
	take_tenant_times(tenant, st);
	return 0;
}

static int take_newest_audit_time(void *ctx, const struct index_audit *row)
{
	*(int64_t *)ctx = row->time_ns;
	return 0;
}

/*
 * promote/.status changes when the audit does: its times are the
 * tenant's newest audit row's (the epoch while there is none).
 */
static int stat_status(struct fs *fs, struct tenant *tenant, struct stat *st)
{
	int64_t newest_ns = 0;
	int ret = index_list_audit(tenant->view.index, tenant->client, 1,
				   take_newest_audit_time, &newest_ns);

	if (ret < 0)
		return ret;
	fs_set_virtual_dir(fs, tenant, st, tenant->status_ino, 1);
	st->st_mode = S_IFREG | 0444;
	st->st_size = 0;	/* made at open; read it to its end */
	take_times(st, &(struct timespec){ .tv_sec = newest_ns / 1000000000,
					   .tv_nsec = newest_ns % 1000000000 });
	return 0;
}

/*
 * promote/<run>: the run dir as the view shows it, under a number of
 * promote/'s own; a run only staged here (mkdir), with promote/'s times.
 * Makes nothing.  Returns 0, -ENOENT or -errno.
 */
static int stat_staged_run(struct fs *fs, struct tenant *tenant, const char *run,
			   struct stat *st)
{
	struct stat backing;
	int ret;

	if (store_has_run(tenant, run, &backing)) {
		fs_present_backing(fs, tenant, st, &backing);
	} else {
		ret = promote_stage_run(tenant->promoter, run, false, &backing);
		if (ret < 0)
			return ret == -ENOTDIR || ret == -ELOOP ? -ENOENT : ret;
		fs_present_backing(fs, tenant, st, &backing);
		take_tenant_times(tenant, st);
	}
	st->st_ino = staged_run_ino(tenant, run);
	return 0;
}

/*
 * Stats a promote/ entry of kind: promote/ itself, promote/.status, run
 * promote/<name>, or the upload name into run (NULL: a request).  An
 * upload's name shows the staged file while it is in flight, then the
 * artifact it became (so a tool that sets times or modes after close
 * finds it), then nothing.
 */
static int stat_promote_entry(struct fs *fs, struct tenant *tenant, enum inode_kind kind,
			      const char *run, const char *name, struct stat *st)
{
	char path[NAMES_ID_MAX + NAMES_FILE_MAX + 2];
	struct stat backing;
	int tenant_fd, ret;

	if (kind == INODE_PROMOTE)
		return stat_promote_dir(fs, tenant, st);
	if (kind == INODE_STATUS)
		return stat_status(fs, tenant, st);
	if (kind == INODE_STAGED_RUN)
		return stat_staged_run(fs, tenant, name, st);
	ret = promote_stat_upload(tenant->promoter, run, name, &backing);
	if (ret == -ENOENT && run) {
		snprintf(path, sizeof(path), "%s/%s", run, name);
		tenant_fd = store_open_tenant(tenant->view.store, tenant->client, O_PATH);
		if (tenant_fd < 0)
			return tenant_fd;
		ret = fstatat(tenant_fd, path, &backing, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
		close(tenant_fd);
		if (ret == 0 && !S_ISREG(backing.st_mode))
			ret = -ENOENT;
		if (ret == -ENOTDIR || ret == -ELOOP)
			ret = -ENOENT;
	}
	if (ret < 0)
		return ret;
	fs_present_backing(fs, tenant, st, &backing);
	st->st_blksize = fs->upload_block;
	return 0;
}

int fs_promote_stat(struct fs *fs, struct inode *inode, struct stat *st)
{
	const char *run = inode->kind == INODE_UPLOAD ? fs_promote_upload_run(inode) : NULL;

	return stat_promote_entry(fs, inode->tenant, inode->kind, run, inode->name, st);
}

/* --- lookup --------------------------------------------------------------- */

int fs_promote_lookup(struct fs *fs, struct inode *parent, const char *name,
		      struct fuse_entry_param *e)
{
	const char *run = parent->kind == INODE_STAGED_RUN ? parent->name : NULL;
	struct tenant *tenant = parent->tenant;
	enum inode_kind kind = INODE_UPLOAD;
	struct inode *inode;
	struct stat st;
	int ret;

	e->attr_timeout = e->entry_timeout = 0;
	if (!run && strcmp(name, PROMOTE_STATUS_FILE) == 0) {
		kind = INODE_STATUS;
	} else if (!run && promote_stat_upload(tenant->promoter, NULL, name, &st) < 0) {
		/*
		 * Not a request in flight: promote/<run> of a run one may
		 * promote into, the store's or one staged here, found without
		 * making its staging.  Whether it is there comes first, so
		 * that no other tenant's run is told by EACCES.
		 */
		if (!promote_serves_run(tenant->promoter, name))
			return -ENOENT;
		ret = stat_staged_run(fs, tenant, name, &e->attr);
		if (ret < 0)
			return -ENOENT;
		/* Staged here, but another tenant promoted into it first. */
		ret = promote_check_run(tenant->promoter, name);
		if (ret < 0)
			return ret == -EACCES ? ret : -ENOENT;
		kind = INODE_STAGED_RUN;
	}
	if (kind != INODE_STAGED_RUN) {
		ret = stat_promote_entry(fs, tenant, kind, run, name, &e->attr);
		if (ret < 0)
			return ret;
	}
	ret = inode_get(fs->inodes, parent, kind, name, e->attr.st_ino, -1, &inode);
	if (ret < 0)
		return ret;
	e->ino = inode_to_nodeid(inode);
	return 0;
}

/* --- uploads ---------------------------------------------------------------- */

/* Opens /proc/<pid>/<name> for reading, or NULL (the process is gone). */
static FILE *open_proc_file(pid_t pid, const char *name)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	return fopen(path, "re");
}

/*
 * The process (thread group) of thread tid, which the kernel names as a
 * request's caller.  0 when it cannot be told (it exited meanwhile).
 */
static pid_t caller_process(pid_t tid)
{
	char line[128];
	pid_t tgid = 0;
	FILE *f = open_proc_file(tid, "status");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Tgid:", 5) == 0) {
			tgid = (pid_t)strtol(line + 5, NULL, 10);
			break;
		}
	fclose(f);
	return tgid;
}

int fs_promote_open_upload(struct fs *fs, struct inode *parent, const char *name,
			   bool truncate, pid_t caller, struct fuse_file_info *fi,
			   struct open_file **handle, struct fuse_entry_param *e)
{
	const char *run = parent->kind == INODE_STAGED_RUN ? parent->name : NULL;
	struct tenant *tenant = parent->tenant;
	struct open_file *writer;
	struct stat st;
	struct inode *inode;
	int ret;

	writer = fs_open_file_new(fs);
	if (!writer)
		return -ENOMEM;
	ret = promote_begin_upload(tenant->promoter, run, name, truncate, caller_process(caller),
				   &writer->upload, &st);
	if (ret < 0) {
		fs_open_file_put(writer);
		return ret;
	}
	writer->fd = promote_upload_fd(writer->upload);
	/*
	 * Every byte goes to the daemon at once (the quota is checked per
	 * write), unless the kernel writes the staged file itself (fs.c's
	 * pass_upload_through()).
	 */
	fi->direct_io = 1;
	fi->noflush = 0;
	if (e) {
		ret = inode_get(fs->inodes, parent, INODE_UPLOAD, name, st.st_ino, -1, &inode);
		if (ret < 0) {
			fs_open_file_put(writer);
			return ret;
		}
		fs_present_backing(fs, tenant, &e->attr, &st);
		e->attr.st_blksize = fs->upload_block;
		e->ino = inode_to_nodeid(inode);
	}
	*handle = writer;
	return 0;
}

int fs_promote_open_read(struct fs *fs, struct inode *inode, struct open_file *handle,
			 struct fuse_file_info *fi)
{
	const char *run = fs_promote_upload_run(inode);
	struct tenant *tenant = inode->tenant;
	char path[NAMES_ID_MAX + NAMES_FILE_MAX + 2];
	int fd, dirfd;

	if (inode->kind == INODE_STATUS) {
		fi->direct_io = 1;	/* its size is known only now */
		return promote_format_status(tenant->promoter, &handle->text, &handle->len);
	}
	/* Reading back: the staged file, or the artifact it became. */
	fd = promote_open_staged(tenant->promoter, run, inode->name);
	if (fd == -ENOENT && run) {
		snprintf(path, sizeof(path), "%s/%s", run, inode->name);
		dirfd = store_open_tenant(tenant->view.store, tenant->client, O_PATH);
		fd = dirfd < 0 ? dirfd : fs_open_backing(dirfd, path, fi->flags, inode->ino);
		if (dirfd >= 0)
			close(dirfd);
	}
	fi->direct_io = 1;
	return fd;
}

/*
 * In promote/ a tool may set what the view decides anyway (owner, mode)
 * or what the staged file keeps (times): accepted, so cp -a, tar -x and
 * rsync finish cleanly.  The size changes only through the writer's handle.
 */
int fs_promote_setattr(struct fs *fs, struct inode *inode, struct upload *upload,
		       const struct stat *attr, int to_set)
{
	struct timespec times[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
	struct tenant *tenant = inode->tenant;
	int ret = 0, fd = -1;

	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (!upload)
			return promote_stat_upload(tenant->promoter, fs_promote_upload_run(inode),
						   inode->name, &(struct stat){ 0 }) == 0 ?
			       -EBUSY : -EROFS;
		ret = promote_upload_truncate(upload, attr->st_size);
		if (ret < 0)
			return ret;
	}
	if (to_set & FUSE_SET_ATTR_ATIME)
		times[0] = to_set & FUSE_SET_ATTR_ATIME_NOW ?
			   (struct timespec){ .tv_nsec = UTIME_NOW } : attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME)
		times[1] = to_set & FUSE_SET_ATTR_MTIME_NOW ?
			   (struct timespec){ .tv_nsec = UTIME_NOW } : attr->st_mtim;
	if (!(to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)))
		return 0;
	/* Times land on the staged file, so the artifact keeps them. */
	fd = upload ? dup(promote_upload_fd(upload)) :
	     promote_open_staged(tenant->promoter, fs_promote_upload_run(inode), inode->name);
	if (fd >= 0) {
		ret = futimens(fd, times) < 0 ? -errno : 0;
		close(fd);
	}
	return ret;
}

/*
 * Whether the process closing a file is dying of a signal: the kernel
 * closes a killed writer's files too, and what it wrote is no artifact.
 * Field 52 of /proc/<pid>/stat is the exit code, set before files close.
 */
static bool killed_by_signal(pid_t pid)
{
	char line[1024];
	long exit_code = 0;
	FILE *f = open_proc_file(pid, "stat");

	if (!f)
		return false;
	if (fgets(line, sizeof(line), f)) {
		/* Fields after the command name, which may hold spaces: from the last ')'. */
		char *p = strrchr(line, ')');
		for (int field = 2; p && field < 52; field++)
			p = strchr(p + 1, ' ');
		if (p)
			exit_code = strtol(p + 1, NULL, 10);
	}
	fclose(f);
	return (exit_code & 0x7f) != 0;
}

/*
 * The writer's close() is the moment an upload is committed, so that
 * close() reports the outcome.  The view is told at once, not when the
 * watcher notices.
 */
int fs_promote_flush(struct fs *fs, struct inode *inode, struct upload *upload,
		     pid_t caller)
{
	int ret;

	if (killed_by_signal(caller)) {
		promote_abandon_upload(upload, "the writer was killed");
		return -EINTR;
	}
	ret = promote_commit_upload(upload);
	if (ret == 0 && fs_promote_upload_run(inode))
		fs_notify_landing(fs, inode->tenant->client, fs_promote_upload_run(inode), NULL,
				  inode->name);
	return ret;
}

/* --- what else changes promote/ ----------------------------------------------- */

/* mkdir promote/<run>: a run to upload into. */
int fs_promote_mkdir(struct fs *fs, struct inode *dir, const char *name,
		     struct fuse_entry_param *e)
{
	struct tenant *tenant = dir->tenant;
	struct inode *inode;
	struct stat st;
	int ret;

	if (dir->kind == INODE_STAGED_RUN)
		return promote_refuse_directory(tenant->promoter, dir->name, name);
	ret = promote_stage_run(tenant->promoter, name, true, &st);
	if (ret == 0)
		ret = stat_staged_run(fs, tenant, name, &e->attr);
	if (ret == 0)
		ret = inode_get(fs->inodes, dir, INODE_STAGED_RUN, name, e->attr.st_ino, -1, &inode);
	if (ret < 0)
		return ret;
	e->ino = inode_to_nodeid(inode);
	return 0;
}

/*
 * A temporary file (rsync's ".name.XXXXXX", "x.tmp" written then
 * renamed) renamed onto a final name: that is the promotion.
 */
int fs_promote_rename(struct fs *fs, struct inode *dir, const char *name,
		      const char *newname, unsigned int flags)
{
	struct tenant *tenant = dir->tenant;
	int ret;

	if (flags & ~RENAME_NOREPLACE)
		return -EINVAL;	/* RENAME_EXCHANGE, RENAME_WHITEOUT */
	ret = promote_rename_upload(tenant->promoter, dir->name, name, newname,
				    flags & RENAME_NOREPLACE);
	if (ret == 0 && !names_is_temporary(newname)) {
		/* name: an artifact renamed away, if it was not temporary */
		fs_notify_landing(fs, tenant->client, dir->name, name, newname);
	}
	return ret;
}

/*
 * Metadata for what is being promoted: user.artifact.agent_id on an
 * upload in flight, user.artifact.workflow_id and .user_directive on
 * promote/<run>.
 */
int fs_promote_setxattr(struct fs *fs, struct inode *inode, const char *name,
			const char *value, size_t size)
{
	const char *run = fs_promote_upload_run(inode);
	struct tenant *tenant = inode->tenant;
	int ret;

	if (inode->kind == INODE_STAGED_RUN)
		ret = promote_set_run_attr(tenant->promoter, inode->name, name, value, size);
	else
		ret = promote_set_file_attr(tenant->promoter, run ? run : "", inode->name, name,
					    value, size);
	return ret == -ENOENT ? -EROFS : ret;
}
