/*
 * deletion.c - deletions of artifacts and whole runs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "deletion.h"
#include "log.h"
#include "metaedit.h"

/* The tenant's run dir, O_RDONLY, and its lock.  Returns the fd or -errno. */
static int lock_run(struct writer *w, const char *run, int *lock)
{
	return store_open_locked_run(w->view->store, w->view->client, run, O_RDONLY, lock);
}

/* Drops the entries of the file named ctx: 1 when there are none. */
static int drop_entry(struct meta_run *meta, const void *name)
{
	return metaedit_remove_entry(meta, name) ? 0 : 1;
}

int deletion_delete_file(struct writer *w, const char *run, const char *name)
{
	char reason[AUDIT_REASON_SIZE] = "";
	struct metafile_version version;
	struct meta_run meta = { 0 };
	bool dropped = false;
	int run_fd, lock, ret = 0;

	/* One name in the run: whatever the caller checked, never a path. */
	if (strcmp(name, NAMES_METADATA_FILE) != 0 && names_check_upload(name, NULL) < 0)
		return -ENOENT;
	run_fd = lock_run(w, run, &lock);
	if (run_fd < 0)
		return run_fd;
	if (strcmp(name, NAMES_METADATA_FILE) != 0) {
		ret = metaedit_read(run_fd, &meta, &version, reason);
		dropped = ret == 0 && meta_find_artifact(&meta, name);
		if (ret == 0)
			ret = metaedit_apply(w, run_fd, &meta, &version, drop_entry, name, reason);
		dropped &= ret == 0;
		if (ret == -EIO)
			/* The file was asked to go; the metadata is not ours to fix. */
			log_warning("client %s run %s file %s: deleting the file, leaving its "
				    "metadata.json as it is: %s", w->view->client, run, name, reason);
		if (ret == -ENOMEM || (ret < 0 && ret != -ENOENT && ret != -EIO))
			goto out;
	}
	ret = 0;
	if (unlinkat(run_fd, name, 0) < 0 && !(errno == ENOENT && dropped)) {
		ret = -errno;
		snprintf(reason, AUDIT_REASON_SIZE, "cannot remove the file: %s", strerror(-ret));
		goto out;
	}
	/* With the file gone already, the entry that went is the change. */
	ret = fsync(run_fd) < 0 ? -errno : 0;
out:
	close(run_fd);
	store_unlock(lock);
	meta_run_release(&meta);
	view_sync_run(w->view, run, VIEW_SYNC_FORCE, NULL);
	if (ret == 0)
		store_note_change(w->view->store, w->view->client, run);
	if (ret != -ENOENT)
		audit_record(w->view, INDEX_ACTION_DELETE, run, name, -1, NULL, -ret,
			     ret ? reason : NULL);
	return ret;
}

/* Whether run_fd still holds a regular file (an artifact, metadata.json). */
static int holds_files(int run_fd)
{
	struct dirent *entry;
	DIR *dir;
	int ret;

	ret = store_open_dir(run_fd, &dir);
	if (ret < 0)
		return ret;
	while ((entry = readdir(dir)))
		if (store_entry_type(dir, entry) == DT_REG) {
			ret = 1;
			break;
		}
	closedir(dir);
	return ret;
}

/* Whether run_fd's metadata.json says the run has expired: 1, 0, or -errno. */
static int has_expired(int run_fd)
{
	struct metafile_version version;
	struct meta_run meta = { 0 };
	int64_t expires_at;
	int ret;

	ret = metafile_read(run_fd, true, &meta, &version, NULL, 0);
	if (ret == 0 || ret == -EINVAL)
		ret = meta.expires_at && meta_parse_time(meta.expires_at, &expires_at) == 0 &&
		      expires_at <= time(NULL);
	meta_run_release(&meta);
	return ret == -ENOENT ? 0 : ret;
}

int deletion_delete_run(struct writer *w, const char *run, unsigned int flags,
			const char *why)
{
	char reason[AUDIT_REASON_SIZE] = "";
	int tenant_fd = -1, run_fd, lock, ret = 0;

	run_fd = lock_run(w, run, &lock);
	if (run_fd < 0)
		return run_fd;
	/* rmdir's promise: nothing the tenant can see is left in it. */
	if (flags & DELETION_ONLY_EMPTY) {
		ret = holds_files(run_fd);
		if (ret != 0) {
			ret = ret > 0 ? -ENOTEMPTY : ret;
			goto out;
		}
	}
	if (flags & DELETION_ONLY_EXPIRED) {
		ret = has_expired(run_fd);
		if (ret < 0)
			snprintf(reason, AUDIT_REASON_SIZE, "cannot read metadata.json to check "
				 "that the run expired: %s", strerror(-ret));
		if (ret <= 0) {
			ret = ret == 0 ? -ESTALE : ret;
			goto out;
		}
		ret = 0;
	}
	tenant_fd = store_open_tenant(w->view->store, w->view->client, O_RDONLY);
	if (tenant_fd < 0) {
		ret = tenant_fd;
		goto out;
	}
	/* Locked to the end: a landing waiting for the lock then makes the run anew. */
	ret = store_remove_tree(tenant_fd, run);
	if (ret == 0 && fsync(tenant_fd) < 0)
		ret = -errno;
	if (ret < 0)
		snprintf(reason, AUDIT_REASON_SIZE, "cannot remove the run directory: %s",
			 strerror(-ret));
out:
	if (tenant_fd >= 0)
		close(tenant_fd);
	close(run_fd);
	store_unlock(lock);
	view_sync_run(w->view, run, VIEW_SYNC_FORCE, NULL);
	if (ret == 0)
		store_note_change(w->view->store, w->view->client, run);
	if (ret != -ENOTEMPTY && ret != -ENOENT && ret != -ESTALE)
		audit_record(w->view, INDEX_ACTION_DELETE, run, NULL, -1, NULL, -ret,
			     ret ? reason : why);
	return ret;
}
