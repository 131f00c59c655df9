/*
 * writer.c - staging instances and the metadata cache of struct writer.
 */
#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "writer.h"

/* Where content types come from: the system's table. */
#define WRITER_MIME_TYPES "/etc/mime.types"

/*
 * This host's name as it goes into an instance name: at most 32 bytes of
 * letters, digits, '-' and '_' (anything else becomes '-').
 */
static void host_label(char *label, size_t size)
{
	char host[256] = "";
	size_t i;

	if (gethostname(host, sizeof(host) - 1) < 0 || !host[0])
		snprintf(host, sizeof(host), "host");
	for (i = 0; i + 1 < size && i < 32 && host[i]; i++)
		label[i] = isalnum((unsigned char)host[i]) || host[i] == '-' || host[i] == '_' ?
			   host[i] : '-';
	label[i] = '\0';
}

/*
 * Makes the instance under a dot name (landing_recover() passes those
 * by), takes its lock, and only then gives it its name: no other process,
 * on any host, ever sees it unlocked while this one lives.
 */
static int make_instance(struct writer *w)
{
	char host[33], making[sizeof(w->instance) + 1] = "";
	struct timespec now;
	int ret = 0;

	w->staging_fd = store_make_private_dir(w->view->store, WRITER_STAGING_AREA,
					       w->view->client);
	if (w->staging_fd < 0) {
		log_error("client %s: cannot make the staging directory %s/%s/%s: %s",
			  w->view->client, w->view->store->path, WRITER_STAGING_DIR,
			  w->view->client, strerror(-w->staging_fd));
		return w->staging_fd;
	}
	host_label(host, sizeof(host));
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(w->instance, sizeof(w->instance), "%s.%d.%lld", host, getpid(),
		 (long long)now.tv_sec * 1000000000 + now.tv_nsec);
	snprintf(making, sizeof(making), ".%s", w->instance);
	w->instance_fd = store_make_dir(w->staging_fd, making, 0700, NULL);
	if (w->instance_fd < 0) {
		ret = w->instance_fd;
		goto out;
	}
	w->instance_lock = store_lock_file(w->instance_fd, WRITER_INSTANCE_LOCK, false);
	if (w->instance_lock < 0) {
		ret = w->instance_lock;
		goto out;
	}
	/*
	 * The name is this host's, process's and nanosecond's: nothing else
	 * takes it, so a plain rename does where RENAME_NOREPLACE is not
	 * offered (GlusterFS's client refuses it with EINVAL).
	 */
	if (renameat2(w->staging_fd, making, w->staging_fd, w->instance, RENAME_NOREPLACE) < 0 &&
	    (errno != EINVAL || renameat(w->staging_fd, making, w->staging_fd, w->instance) < 0)) {
		ret = -errno;
		goto out;
	}
	making[0] = '\0';	/* named: writer_close() removes it */
	/*
	 * Every commit frees an inode in work/ (the metadata.json its draft
	 * replaces), and an ext4 without a journal makes each new inode of a
	 * block group scan past those freed in the last half minute or more:
	 * with runs/ (the uploads) in the same group, the uploads of a run
	 * got slower with each file.  Apart, only the drafts pay, and the
	 * hint changes nothing where a file system has no use for it.
	 */
	store_spread_subdirs(w->instance_fd);
	w->runs_fd = store_make_dir(w->instance_fd, "runs", 0700, NULL);
	w->requests_fd = store_make_dir(w->instance_fd, "requests", 0700, NULL);
	w->work_fd = store_make_dir(w->instance_fd, "work", 0700, NULL);
	if (w->runs_fd < 0 || w->requests_fd < 0 || w->work_fd < 0)
		ret = -EIO;
out:
	if (ret < 0)
		log_error("client %s: cannot make the staging directory: %s", w->view->client,
			  strerror(-ret));
	/* Never named, so recovery would never see it: gone at once. */
	if (ret < 0 && making[0] && w->instance_fd >= 0)
		store_remove_tree(w->staging_fd, making);
	return ret;
}

int writer_open(struct view *view, const struct promote_options *options,
		struct writer **out)
{
	struct writer *w;
	int ret;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->view = view;
	w->options = *options;
	w->staging_fd = w->instance_fd = w->runs_fd = w->requests_fd = w->work_fd = -1;
	w->instance_lock = -1;
	pthread_mutex_init(&w->cache_lock, NULL);
	pthread_mutex_init(&w->landing_lock, NULL);
	pthread_cond_init(&w->landings_done, NULL);
	pthread_rwlock_init(&w->mime_lock, NULL);
	ret = mime_table_load(WRITER_MIME_TYPES, &w->mime);
	if (ret == 0)
		ret = make_instance(w);
	if (ret < 0) {
		writer_close(w);
		return ret;
	}
	*out = w;
	return 0;
}

/* How many intents work/ still holds: landings a failure left for recovery. */
static unsigned int count_intents(int work_fd)
{
	unsigned int count = 0;
	struct dirent *entry;
	DIR *dir;

	if (work_fd < 0 || store_open_dir(work_fd, &dir) < 0)
		return 0;
	while ((entry = readdir(dir)))
		count += strncmp(entry->d_name, "intent.", 7) == 0;
	closedir(dir);
	return count;
}

void writer_close(struct writer *w)
{
	unsigned int intents;

	if (!w)
		return;
	for (size_t i = 0; i < WRITER_CACHED_RUNS; i++)
		meta_run_release(&w->cache[i].meta);
	/*
	 * An intent left means a file landed whose entry could not be written:
	 * the instance stays, unlocked once closed, for landing_recover().
	 */
	intents = count_intents(w->work_fd);
	if (intents)
		log_warning("client %s: leaving staging instance %s with %u unfinished "
			    "landings for recovery (next mount or artifactctl repair)",
			    w->view->client, w->instance, intents);
	if (w->runs_fd >= 0)
		close(w->runs_fd);
	if (w->requests_fd >= 0)
		close(w->requests_fd);
	if (w->work_fd >= 0)
		close(w->work_fd);
	/* A clean stop leaves no staging behind. */
	if (w->instance_fd >= 0 && !intents)
		store_remove_tree(w->staging_fd, w->instance);
	if (w->staging_fd >= 0)
		close(w->staging_fd);
	if (w->instance_fd >= 0)
		close(w->instance_fd);
	store_unlock(w->instance_lock);
	mime_table_free(w->mime);
	pthread_rwlock_destroy(&w->mime_lock);
	pthread_mutex_destroy(&w->cache_lock);
	pthread_cond_destroy(&w->landings_done);
	pthread_mutex_destroy(&w->landing_lock);
	free(w);
}

void writer_content_type(struct writer *w, const char *name, char *type, size_t size)
{
	pthread_rwlock_rdlock(&w->mime_lock);
	snprintf(type, size, "%s", mime_type_of(w->mime, name));
	pthread_rwlock_unlock(&w->mime_lock);
}

int writer_reload_mime(struct writer *w)
{
	struct mime_table *fresh, *old;
	int ret = mime_table_load(WRITER_MIME_TYPES, &fresh);

	if (ret < 0) {
		log_warning("client %s: cannot read %s again: %s; keeping the content types "
			    "read before", w->view->client, WRITER_MIME_TYPES, strerror(-ret));
		return ret;
	}
	pthread_rwlock_wrlock(&w->mime_lock);
	old = w->mime;
	w->mime = fresh;
	pthread_rwlock_unlock(&w->mime_lock);
	mime_table_free(old);
	return 0;
}

void writer_work_name(struct writer *w, const char *prefix, char *name, size_t size)
{
	snprintf(name, size, "%s.%lu", prefix, w->serial++);
}

void writer_intent_name(struct writer *w, const char *run, char *name, size_t size)
{
	snprintf(name, size, "intent.%lu.%s", w->serial++, run);
}

bool writer_take_metadata(struct writer *w, int run_fd, const char *run,
			  struct meta_run *meta, struct metafile_version *version)
{
	struct writer_cached_metadata taken = { 0 };
	bool found = false;

	pthread_mutex_lock(&w->cache_lock);
	for (size_t i = 0; i < WRITER_CACHED_RUNS; i++) {
		struct writer_cached_metadata *entry = &w->cache[i];

		if (strcmp(entry->run, run) == 0) {
			taken = *entry;
			memset(entry, 0, sizeof(*entry));
			found = true;
			break;
		}
	}
	pthread_mutex_unlock(&w->cache_lock);
	if (found && metafile_unchanged(run_fd, &taken.version)) {
		*meta = taken.meta;
		*version = taken.version;
		return true;
	}
	meta_run_release(&taken.meta);
	return false;
}

void writer_keep_metadata(struct writer *w, const char *run,
			  const struct metafile_version *version, struct meta_run *meta)
{
	struct writer_cached_metadata *slot = NULL;

	if (!version->present)
		return;	/* rewritten by someone else at once: not worth keeping */
	pthread_mutex_lock(&w->cache_lock);
	for (size_t i = 0; i < WRITER_CACHED_RUNS; i++) {
		struct writer_cached_metadata *entry = &w->cache[i];

		if (strcmp(entry->run, run) == 0 || !entry->run[0]) {
			slot = entry;
			break;
		}
		if (!slot || entry->last_used < slot->last_used)
			slot = entry;	/* the least recently used goes */
	}
	meta_run_release(&slot->meta);
	snprintf(slot->run, sizeof(slot->run), "%s", run);
	slot->version = *version;
	slot->meta = *meta;
	slot->last_used = ++w->cache_clock;
	memset(meta, 0, sizeof(*meta));
	pthread_mutex_unlock(&w->cache_lock);
}
