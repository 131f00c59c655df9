/*
 * view.c - a tenant's runs: which are shown, and keeping the index in step.
 *
 * The store is the source of truth; this file reads it and writes what it
 * found to the index.  Parsing is skipped for runs whose stamp (run dir
 * and metadata.json inode, size and times) is unchanged, which makes the
 * reconcile at mount cost one stat pair per run for an unchanged store.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "meta.h"
#include "metafile.h"
#include "names.h"
#include "seal.h"
#include "view.h"

void view_file_list_release(struct view_file_list *list)
{
	for (size_t i = 0; i < list->count; i++)
		free((char *)list->files[i].filename);
	free(list->files);
	memset(list, 0, sizeof(*list));
}

static int file_list_add(struct view_file_list *list, const char *name, const struct stat *st)
{
	if (list->count == list->capacity) {
		size_t capacity = list->capacity ? list->capacity * 2 : 16;
		struct index_file *files = realloc(list->files, capacity * sizeof(*files));
		if (!files)
			return -ENOMEM;
		list->files = files;
		list->capacity = capacity;
	}
	char *copy = strdup(name);
	if (!copy)
		return -ENOMEM;
	list->files[list->count++] = (struct index_file){
		.filename = copy,
		.size = st->st_size,
		.mtime_ns = store_time_ns(&st->st_mtim),
		.ino = (int64_t)st->st_ino,
	};
	return 0;
}

int view_list_run_files(int run_fd, struct view_file_list *list)
{
	struct dirent *entry;
	struct stat st;
	DIR *dir;
	int ret;

	ret = store_open_dir(run_fd, &dir);
	if (ret < 0)
		return ret;
	while ((errno = 0, entry = readdir(dir))) {
		if (strcmp(entry->d_name, NAMES_METADATA_FILE) == 0)
			continue;
		if (store_entry_type(dir, entry) != DT_REG)
			continue;
		if (fstatat(dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;	/* vanished or replaced since readdir */
		ret = file_list_add(list, entry->d_name, &st);
		if (ret < 0)
			goto out;
	}
	ret = -errno;
out:
	closedir(dir);
	return ret;
}

void view_stamp_run(int run_fd, struct index_run_stamp *stamp)
{
	struct stat st;

	memset(stamp, 0, sizeof(*stamp));
	if (fstat(run_fd, &st) == 0) {
		stamp->dir_ino = (int64_t)st.st_ino;
		stamp->dir_mtime_ns = store_time_ns(&st.st_mtim);
	}
	if (fstatat(run_fd, NAMES_METADATA_FILE, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISREG(st.st_mode)) {
		stamp->meta_ino = (int64_t)st.st_ino;
		stamp->meta_size = st.st_size;
		stamp->meta_mtime_ns = store_time_ns(&st.st_mtim);
		stamp->meta_ctime_ns = store_time_ns(&st.st_ctim);
	}
}

/* What read_run_metadata() found. */
enum run_metadata {
	RUN_METADATA_READ,	/* *meta holds what is worth indexing */
	RUN_METADATA_NONE,	/* absent or unusable: index the run without it */
	RUN_METADATA_CHANGING,	/* half written right now: look again later */
	RUN_METADATA_BROKEN,	/* unparsable for a while: keep what the index has */
};

/*
 * Reads and parses the run's metadata.json, without waiting on a writer
 * that is halfway through it.  A problem that lasts is logged once per
 * read, naming the run.
 */
static enum run_metadata read_run_metadata(struct view *view, const char *run, int run_fd,
					   bool wait, struct meta_run *meta)
{
	struct metafile_version version;
	char problem[256] = "";
	int ret;

	ret = metafile_read(run_fd, wait, meta, &version, problem, sizeof(problem));
	switch (ret) {
	case 0:
		return RUN_METADATA_READ;
	case -ENOENT:
		return RUN_METADATA_NONE;	/* a run being created: not worth a warning */
	case -EAGAIN:
		return RUN_METADATA_CHANGING;
	case -EINVAL:
		log_warning("client %s run %s: metadata.json does not follow the schema: %s; "
			    "serving the run with what could be read",
			    view->client, run, problem);
		return RUN_METADATA_READ;
	case -EBADMSG:
		log_warning("client %s run %s: metadata.json does not parse (%s) and has not "
			    "changed for %d ms; serving the run with the metadata last read",
			    view->client, run, problem, METAFILE_SETTLE_MS);
		return RUN_METADATA_BROKEN;
	case -EFBIG:
		log_warning("client %s run %s: metadata.json is larger than %u bytes; "
			    "serving the run without its metadata",
			    view->client, run, META_MAX_BYTES);
		return RUN_METADATA_NONE;
	default:
		log_warning("client %s run %s: cannot read metadata.json: %s; "
			    "serving the run without its metadata",
			    view->client, run, strerror(-ret));
		return RUN_METADATA_NONE;
	}
}

/*
 * Whether the run's metadata wants a repair: a regular file with no entry,
 * or entries the parser folded into a later one of the same name.
 */
static bool metadata_incomplete(const struct meta_run *meta, const struct view_file_list *files)
{
	if (meta->n_duplicates)
		return true;
	for (size_t i = 0; i < files->count; i++)
		if (!meta_find_artifact(meta, files->files[i].filename))
			return true;
	return false;
}

/*
 * Opens a run dir by name (flags O_PATH or O_RDONLY), whether or not it
 * has expired.  A run name that is invalid, a symlink or not a directory
 * is -ENOENT: for the view such a thing does not exist.
 */
static int open_run_dir(struct view *view, const char *run, int flags, struct stat *st)
{
	int fd;

	if (names_check_run(run, NULL) < 0)
		return -ENOENT;
	fd = store_open_run(view->store, view->client, run, flags);
	if (fd == -ELOOP || fd == -ENOTDIR || fd == -EXDEV)
		return -ENOENT;
	if (fd < 0)
		return fd;
	if (fstat(fd, st) < 0 || !S_ISDIR(st->st_mode)) {
		close(fd);
		return -ENOENT;
	}
	return fd;
}

/*
 * The SHA-256 sealed on a file the index holds none for (new, changed, or
 * an index rebuilt, on this host or another), where the seal still
 * describes it: an index_hash_source, ctx the run dir's fd.  Files the
 * index hashed as they are keep theirs, unread: a seal costs a getxattr,
 * a round trip on a network store.
 */
static char *sealed_sha256(void *ctx, const struct index_file *file)
{
	const int *run_fd = ctx;
	struct seal seal;
	char *sha256 = NULL;

	if (seal_read_at(*run_fd, file->filename, &seal) == 0 &&
	    seal_describes(&seal, file->size, file->mtime_ns))
		sha256 = strdup(seal.sha256);	/* none without memory */
	seal_release(&seal);
	return sha256;
}

int view_index_run(struct view *view, const char *run, int run_fd, unsigned int flags,
		   bool *incomplete)
{
	struct index_run_stamp stamp, indexed;
	struct view_file_list files = { 0 };
	struct meta_run meta = { 0 };
	enum run_metadata found;
	bool was_indexed;
	int ret;

	if (incomplete)
		*incomplete = false;
	view_stamp_run(run_fd, &stamp);
	was_indexed = index_get_run_stamp(view->index, view->client, run, &indexed) == 0;
	if (!(flags & VIEW_SYNC_FORCE) && was_indexed &&
	    memcmp(&stamp, &indexed, sizeof(stamp)) == 0)
		return 0;
	ret = view_list_run_files(run_fd, &files);
	if (ret < 0) {
		log_warning("client %s run %s: cannot list run directory: %s",
			    view->client, run, strerror(-ret));
		goto out;
	}
	found = read_run_metadata(view, run, run_fd, flags & VIEW_SYNC_WAIT, &meta);
	if (found == RUN_METADATA_CHANGING) {
		ret = -EAGAIN;	/* the index keeps what it had meanwhile */
		goto out;
	}
	if (found == RUN_METADATA_BROKEN && was_indexed)
		goto out;	/* keep the metadata last read; the stamp stays old */
	if (found == RUN_METADATA_READ && incomplete)
		*incomplete = metadata_incomplete(&meta, &files);
	ret = index_put_run(view->index, view->client, run, &stamp,
			    found == RUN_METADATA_READ ? &meta : NULL, files.files, files.count,
			    &(struct index_hash_source){ sealed_sha256, &run_fd });
	log_debug("client %s run %s: indexed, %zu files%s", view->client, run, files.count,
		  found == RUN_METADATA_READ ? "" : ", without metadata");
out:
	meta_run_release(&meta);
	view_file_list_release(&files);
	return ret;
}

int view_sync_run(struct view *view, const char *run, unsigned int flags, bool *incomplete)
{
	struct stat st;
	int run_fd, lock, ret;

	if (incomplete)
		*incomplete = false;
	run_fd = open_run_dir(view, run, O_RDONLY, &st);
	if (run_fd < 0) {
		if (run_fd != -ENOENT)
			log_warning("client %s run %s: cannot open run directory: %s",
				    view->client, run, strerror(-run_fd));
		return index_delete_run(view->index, view->client, run);
	}
	/*
	 * Promoters hold the run's lock exclusively while they change it:
	 * sharing it here means never indexing a commit half done.  Without
	 * it (a read-only store, where no one can be changing anything),
	 * unlocked.
	 */
	lock = store_lock_run(view->store, view->client, run, false);
	ret = view_index_run(view, run, run_fd, flags, incomplete);
	store_unlock(lock);
	close(run_fd);
	return ret;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int view_reconcile(struct view *view)
{
	char **seen = NULL, **indexed = NULL;
	size_t n_seen = 0, capacity = 0, n_indexed = 0;
	struct dirent *entry;
	DIR *dir = NULL;
	int tenant_fd, ret;

	tenant_fd = store_open_tenant(view->store, view->client, O_PATH);
	if (tenant_fd >= 0) {
		ret = store_open_dir(tenant_fd, &dir);
		close(tenant_fd);
		if (ret < 0) {
			log_error("client %s: cannot list the tenant directory: %s",
				  view->client, strerror(-ret));
			goto out;
		}
	} else if (tenant_fd != -ENOENT) {
		ret = tenant_fd;
		log_error("client %s: cannot open the tenant directory: %s",
			  view->client, strerror(-ret));
		goto out;
	}

	while (dir && (errno = 0, entry = readdir(dir))) {
		if (names_check_run(entry->d_name, NULL) < 0 ||
		    store_entry_type(dir, entry) != DT_DIR)
			continue;
		if (n_seen == capacity) {
			size_t bigger = capacity ? capacity * 2 : 64;
			char **grown = realloc(seen, bigger * sizeof(*seen));
			if (!grown) {
				ret = -ENOMEM;
				goto out;
			}
			seen = grown;
			capacity = bigger;
		}
		seen[n_seen] = strdup(entry->d_name);
		if (!seen[n_seen]) {
			ret = -ENOMEM;
			goto out;
		}
		n_seen++;
		/*
		 * A run that cannot be indexed is still served: keep going.  No
		 * change event will come for a metadata.json written before we
		 * looked: wait for one caught half written.
		 */
		view_sync_run(view, entry->d_name, VIEW_SYNC_WAIT, NULL);
	}
	if (dir && errno) {
		ret = -errno;
		log_error("client %s: cannot list the tenant directory: %s",
			  view->client, strerror(-ret));
		goto out;
	}

	if (n_seen)	/* qsort() and bsearch() want a non-NULL array */
		qsort(seen, n_seen, sizeof(*seen), compare_names);
	ret = index_list_runs(view->index, view->client, &indexed, &n_indexed);
	if (ret < 0)
		goto out;
	for (size_t i = 0; i < n_indexed; i++) {
		if (n_seen && bsearch(&indexed[i], seen, n_seen, sizeof(*seen), compare_names))
			continue;
		ret = index_delete_run(view->index, view->client, indexed[i]);
		if (ret < 0)
			goto out;
	}
	ret = 0;
out:
	if (dir)
		closedir(dir);
	index_free_list(indexed, n_indexed);
	for (size_t i = 0; i < n_seen; i++)
		free(seen[i]);
	free(seen);
	return ret;
}

bool view_run_visible(struct view *view, const char *run)
{
	int64_t expires_at;

	if (names_check_run(run, NULL) < 0)
		return false;
	if (view->show_expired)
		return true;
	if (index_get_run_expiry(view->index, view->client, run, &expires_at) < 0)
		return true;	/* unknown expiry: never hide data on a guess */
	return expires_at > (int64_t)time(NULL);
}

int view_open_run(struct view *view, const char *run, struct stat *st)
{
	if (!view_run_visible(view, run))
		return -ENOENT;
	return open_run_dir(view, run, O_PATH, st);
}
