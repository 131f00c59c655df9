/*
 * check.c - verification of a tenant's runs, and repairs of metadata.json.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "check.h"
#include "landing.h"
#include "log.h"
#include "metaedit.h"

/* agent_id of an entry rebuilt from the file alone. */
#define UNKNOWN_AGENT "unknown"

static const char *const kind_names[CHECK_KIND_COUNT] = {
	[CHECK_UNPARSABLE] = "unparsable",
	[CHECK_SCHEMA] = "schema",
	[CHECK_NO_METADATA] = "no_metadata",
	[CHECK_MISSING_ENTRY] = "missing_entry",
	[CHECK_MISSING_FILE] = "missing_file",
	[CHECK_DUPLICATE_ENTRY] = "duplicate_entry",
	[CHECK_SIZE_MISMATCH] = "size_mismatch",
	[CHECK_HASH_MISMATCH] = "hash_mismatch",
	[CHECK_INDEX_STALE] = "index_stale",
	[CHECK_LEGACY_RUN] = "legacy_run",
};

const char *check_kind_name(enum check_kind kind)
{
	return kind < CHECK_KIND_COUNT ? kind_names[kind] : "unknown";
}

/*
 * Whether check_repair_run(CHECK_REPAIR_ALL) mends that kind of problem:
 * lost bytes, runs without any metadata and files that break the schema
 * are for a person to judge, legacy runs for migrate-legacy.
 */
static bool kind_repairable(enum check_kind kind)
{
	return kind != CHECK_HASH_MISMATCH && kind != CHECK_NO_METADATA &&
	       kind != CHECK_SCHEMA && kind != CHECK_LEGACY_RUN;
}

void check_report_release(struct check_report *report)
{
	for (size_t i = 0; i < report->count; i++) {
		free(report->problems[i].client);
		free(report->problems[i].run);
		free(report->problems[i].file);
		free(report->problems[i].detail);
	}
	free(report->problems);
	memset(report, 0, sizeof(*report));
}

/* Set while checking a run whose metadata.json breaks the schema: nothing there is repaired. */
#define CHECK_KIND_UNREPAIRED 0x100

/* Appends a problem; kind may carry CHECK_KIND_UNREPAIRED.  Returns 0 or -ENOMEM. */
static int add_problem(struct check_report *report, unsigned int kind, const char *client,
		       const char *run, const char *file, const char *format, ...)
	__attribute__((format(printf, 6, 7)));

static int add_problem(struct check_report *report, unsigned int kind, const char *client,
		       const char *run, const char *file, const char *format, ...)
{
	struct check_problem *problem;
	char detail[512];
	va_list args;
	int ret = 0;

	if (report->count == report->capacity) {
		size_t bigger = report->capacity ? 2 * report->capacity : 16;
		struct check_problem *grown = realloc(report->problems, bigger * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		report->problems = grown;
		report->capacity = bigger;
	}
	va_start(args, format);
	vsnprintf(detail, sizeof(detail), format, args);
	va_end(args);
	problem = &report->problems[report->count++];
	*problem = (struct check_problem){
		.kind = (enum check_kind)(kind & ~CHECK_KIND_UNREPAIRED),
		.repairable = !(kind & CHECK_KIND_UNREPAIRED) &&
			      kind_repairable((enum check_kind)kind),
		.client = client ? metaedit_copy_text(client, &ret) : NULL,
		.run = metaedit_copy_text(run, &ret),
		.file = file ? metaedit_copy_text(file, &ret) : NULL,
		.detail = metaedit_copy_text(detail, &ret),
	};
	return ret;
}

/* --- verification ------------------------------------------------------------ */

/* The index's artifact rows of one run, copied out of the callback. */
struct recorded {
	struct recorded_file {
		char *filename;
		char *sha256;
		int64_t file_size, file_mtime_ns, file_ino;
	} *files;
	size_t count;
};

static int add_recorded(void *ctx, const struct index_artifact_row *row)
{
	struct recorded *r = ctx;
	struct recorded_file *grown;
	int ret = 0;

	if (!row->sha256)
		return 0;	/* only what artifactfs hashed can be verified */
	grown = realloc(r->files, (r->count + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	r->files = grown;
	grown[r->count++] = (struct recorded_file){
		.filename = metaedit_copy_text(row->filename, &ret),
		.sha256 = metaedit_copy_text(row->sha256, &ret),
		.file_size = row->file_size,
		.file_mtime_ns = row->file_mtime_ns,
		.file_ino = row->file_ino,
	};
	return ret;
}

static void recorded_release(struct recorded *r)
{
	for (size_t i = 0; i < r->count; i++) {
		free(r->files[i].filename);
		free(r->files[i].sha256);
	}
	free(r->files);
}

/* Hashes the files whose SHA-256 the index recorded for these very bytes. */
static int check_hashes(struct view *view, const char *run, int run_fd,
			struct check_report *report)
{
	struct recorded recorded = { 0 };
	int ret;

	ret = index_for_each_artifact(view->index, view->client, run, add_recorded, &recorded);
	for (size_t i = 0; ret == 0 && i < recorded.count; i++) {
		const struct recorded_file *f = &recorded.files[i];
		char sha[LANDING_SHA256_HEX_SIZE];
		struct stat st;
		int fd = store_open_regular(run_fd, f->filename, O_RDONLY | O_NOATIME, &st);

		if (fd < 0 && fd != -EPERM)
			continue;	/* gone: reported as a missing file */
		if (fd == -EPERM)
			fd = store_open_regular(run_fd, f->filename, O_RDONLY, &st);
		if (fd < 0)
			continue;
		/* A file replaced since (another inode) is not what was hashed. */
		if ((int64_t)st.st_ino == f->file_ino && landing_hash_file(fd, sha) == 0) {
			report->bytes_hashed += (uint64_t)st.st_size;
			if (strcmp(sha, f->sha256) != 0)
				ret = add_problem(report, CHECK_HASH_MISMATCH, view->client, run,
						  f->filename, "SHA-256 %s, recorded %s", sha,
						  f->sha256);
		}
		close(fd);
	}
	recorded_release(&recorded);
	return ret;
}

/*
 * Whether a file of the run is an artifact: a name an artifact may have
 * (a dot-file or another temporary is not one, and gets no entry).
 */
static bool is_artifact(const struct index_file *file)
{
	return names_check_artifact(file->filename, NULL) == 0;
}

/* Compares the run's files with its parsed metadata; flags: CHECK_KIND_UNREPAIRED. */
static int check_entries(struct view *view, const char *run, int run_fd,
			 const struct meta_run *meta, unsigned int flags,
			 struct check_report *report)
{
	struct view_file_list files = { 0 };
	int ret;

	ret = view_list_run_files(run_fd, &files);
	for (size_t i = 0; ret == 0 && i < files.count; i++) {
		const struct index_file *f = &files.files[i];
		const struct meta_artifact *entry = meta_find_artifact(meta, f->filename);

		if (!is_artifact(f))
			continue;
		report->files++;
		if (!entry)
			ret = add_problem(report, CHECK_MISSING_ENTRY | flags, view->client, run,
					  f->filename, "file of %lld bytes has no entry in "
					  "metadata.json", (long long)f->size);
		else if (entry->has_size_bytes && entry->size_bytes != (uint64_t)f->size)
			ret = add_problem(report, CHECK_SIZE_MISMATCH | flags, view->client, run,
					  f->filename, "size_bytes %llu, file %lld bytes",
					  (unsigned long long)entry->size_bytes, (long long)f->size);
	}
	for (size_t i = 0; ret == 0 && i < meta->n_artifacts; i++) {
		const char *name = meta->artifacts[i].filename;
		bool found = false;

		for (size_t j = 0; j < files.count && !found; j++)
			found = strcmp(files.files[j].filename, name) == 0;
		if (!found)
			ret = add_problem(report, CHECK_MISSING_FILE | flags, view->client, run, name,
					  "entry in metadata.json has no file");
	}
	if (ret == 0 && meta->n_duplicates)
		ret = add_problem(report, CHECK_DUPLICATE_ENTRY | flags, view->client, run, NULL,
				  "%zu duplicate entries in metadata.json", meta->n_duplicates);
	view_file_list_release(&files);
	return ret;
}

int check_run(struct view *view, const char *run, unsigned int flags,
	      struct check_report *report)
{
	struct index_run_stamp indexed, now;
	struct metafile_version version;
	struct meta_run meta = { 0 };
	char problem[256] = "";
	int run_fd, lock, ret;

	if (names_check_run(run, NULL) < 0)
		return 0;	/* promote/: never a run of the view */
	run_fd = store_open_run(view->store, view->client, run, O_RDONLY);
	if (run_fd < 0)
		return run_fd == -ENOENT || run_fd == -ELOOP || run_fd == -ENOTDIR ? 0 : run_fd;
	/* Unlocked where the lock cannot be had: a read-only store changes not. */
	lock = store_lock_run(view->store, view->client, run, false);
	report->runs++;
	view_stamp_run(run_fd, &now);
	if (index_get_run_stamp(view->index, view->client, run, &indexed) < 0 ||
	    memcmp(&indexed, &now, sizeof(now)) != 0) {
		ret = add_problem(report, CHECK_INDEX_STALE, view->client, run, NULL,
				  "the index does not describe the run as it is");
		if (ret < 0)
			goto out;
	}
	ret = metafile_read(run_fd, false, &meta, &version, problem, sizeof(problem));
	switch (ret) {
	case 0:
		ret = check_entries(view, run, run_fd, &meta, 0, report);
		if (ret == 0 && (flags & CHECK_READ_DATA))
			ret = check_hashes(view, run, run_fd, report);
		break;
	case -EINVAL:
		ret = add_problem(report, CHECK_SCHEMA, view->client, run, NULL,
				  "metadata.json does not follow the schema: %s", problem);
		if (ret == 0)
			ret = check_entries(view, run, run_fd, &meta, CHECK_KIND_UNREPAIRED, report);
		break;
	case -ENOENT: {
		struct view_file_list files = { 0 };
		size_t artifacts = 0;

		ret = view_list_run_files(run_fd, &files);
		for (size_t i = 0; i < files.count; i++)
			artifacts += is_artifact(&files.files[i]);
		if (ret == 0 && artifacts)
			ret = add_problem(report, CHECK_NO_METADATA, view->client, run, NULL,
					  "%zu files and no metadata.json", artifacts);
		report->files += artifacts;
		view_file_list_release(&files);
		break;
	}
	case -EAGAIN:
	case -EBADMSG:
		ret = add_problem(report, CHECK_UNPARSABLE, view->client, run, NULL,
				  "metadata.json does not parse: %s", problem);
		break;
	case -ENOMEM:
		break;
	default:	/* too large, or unreadable: a person's to look at */
		ret = add_problem(report, CHECK_UNPARSABLE | CHECK_KIND_UNREPAIRED, view->client,
				  run, NULL, "cannot read metadata.json: %s",
				  ret == -EFBIG ? problem : strerror(-ret));
		break;
	}
out:
	store_unlock(lock);
	close(run_fd);
	meta_run_release(&meta);
	return ret;
}

static int add_legacy_run(void *ctx, const char *run)
{
	return add_problem(ctx, CHECK_LEGACY_RUN, NULL, run, NULL, "run in the legacy layout "
			   STORE_ARTIFACTS_DIR "/%s/: see artifactctl migrate-legacy", run);
}

int check_legacy_runs(const struct store *store, struct check_report *report)
{
	return store_for_each_legacy_run(store, add_legacy_run, report);
}

/* --- repairs ---------------------------------------------------------------- */

/* What a repair is about to change, found under the run lock. */
struct repair {
	struct orphan {
		struct meta_artifact entry;	/* what to add for a file without one */
		bool from_index;	/* as artifactfs promoted it, else from stat */
	} *orphans;
	size_t count;
	struct view_file_list files;	/* every regular file of the run */
	unsigned int flags;
	bool rebuilt;		/* metadata.json is being rebuilt: write it, entries or not */
};

static void repair_release(struct repair *r)
{
	for (size_t i = 0; i < r->count; i++)
		meta_artifact_release(&r->orphans[i].entry);
	free(r->orphans);
	view_file_list_release(&r->files);
}

/*
 * The entry of a file with none: as the index remembers it where
 * artifactfs promoted the file (an entry another writer dropped), else
 * from the file itself, with the agent unknown and generated_at its mtime.
 */
static int make_orphan_entry(struct writer *w, const char *run, const struct index_file *file,
			     struct orphan *orphan)
{
	struct index_attrs attrs = { 0 };
	const char *agent, *generated, *type;
	char mtime[META_TIME_SIZE], file_type[256];
	int ret = 0;

	index_get_file_attrs(w->view->index, w->view->client, run, file->filename, &attrs);
	agent = index_attrs_value(&attrs, "agent_id");
	generated = index_attrs_value(&attrs, "generated_at");
	type = index_attrs_value(&attrs, "content_type");
	orphan->from_index = agent && generated && type;
	if (!orphan->from_index) {
		meta_format_time(file->mtime_ns / 1000000000, (long)(file->mtime_ns % 1000000000),
				 mtime);
		agent = UNKNOWN_AGENT;
		generated = mtime;
		writer_content_type(w, file->filename, file_type, sizeof(file_type));
		type = file_type;
	}
	orphan->entry = (struct meta_artifact){
		.filename = metaedit_copy_text(file->filename, &ret),
		.agent_id = metaedit_copy_text(agent, &ret),
		.generated_at = metaedit_copy_text(generated, &ret),
		.content_type = metaedit_copy_text(type, &ret),
		.has_size_bytes = true,
		.size_bytes = (uint64_t)file->size,
	};
	index_attrs_release(&attrs);
	return ret;
}

/*
 * Lists the run's files and those without an entry, and when the newest
 * change to them or to metadata.json was (*changed_ns, CLOCK_REALTIME).
 */
static int find_orphans(struct writer *w, const char *run, int run_fd,
			const struct meta_run *meta, const struct metafile_version *version,
			struct repair *r, int64_t *changed_ns)
{
	int ret;

	*changed_ns = version->ctime_ns;
	ret = view_list_run_files(run_fd, &r->files);
	for (size_t i = 0; ret == 0 && i < r->files.count; i++) {
		const struct index_file *file = &r->files.files[i];
		struct stat st;

		if (fstatat(run_fd, file->filename, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    store_time_ns(&st.st_ctim) > *changed_ns)
			*changed_ns = store_time_ns(&st.st_ctim);
		if (!is_artifact(file) || meta_find_artifact(meta, file->filename))
			continue;
		if (r->count % 16 == 0) {
			struct orphan *grown = realloc(r->orphans, (r->count + 16) * sizeof(*grown));
			if (!grown)
				return -ENOMEM;
			r->orphans = grown;
		}
		memset(&r->orphans[r->count], 0, sizeof(*r->orphans));
		ret = make_orphan_entry(w, run, file, &r->orphans[r->count++]);
	}
	return ret;
}

static const struct index_file *find_file(const struct repair *r, const char *name)
{
	for (size_t i = 0; i < r->files.count; i++)
		if (strcmp(r->files.files[i].filename, name) == 0)
			return &r->files.files[i];
	return NULL;
}

/*
 * The repair as an edit of metaedit_apply(): adds the entries files still
 * lack (the write folds duplicates); with CHECK_REPAIR_ALL drops entries
 * without a file and corrects sizes.  Applied again to a re-read file.
 */
static int repair_entries(struct meta_run *meta, const void *ctx)
{
	const struct repair *r = ctx;
	bool changed = meta->n_duplicates > 0 || r->rebuilt;

	if (!meta->run_id)
		return 1;	/* metadata.json went meanwhile: not ours to make up */
	for (size_t i = 0; i < r->count; i++) {
		const struct orphan *o = &r->orphans[i];
		int ret;

		if (meta_find_artifact(meta, o->entry.filename))
			continue;	/* its writer added it after all */
		ret = metaedit_put_entry(meta, &o->entry);
		if (ret < 0)
			return ret;
		changed = true;
	}
	if (!(r->flags & CHECK_REPAIR_ALL))
		return changed ? 0 : 1;
	for (size_t i = 0; i < meta->n_artifacts;) {
		struct meta_artifact *a = &meta->artifacts[i];
		const struct index_file *file = find_file(r, a->filename);

		if (!file) {
			meta_artifact_release(a);
			memmove(a, a + 1, (meta->n_artifacts - i - 1) * sizeof(*a));
			meta->n_artifacts--;
			changed = true;
			continue;	/* the next entry moved into slot i */
		}
		if (!a->has_size_bytes || a->size_bytes != (uint64_t)file->size) {
			a->size_bytes = (uint64_t)file->size;
			a->has_size_bytes = true;
			changed = true;
		}
		i++;
	}
	return changed ? 0 : 1;
}

/* Whether the repair written put o's entry in *meta (and not its own writer). */
static bool orphan_added(const struct meta_run *meta, const struct orphan *o)
{
	const struct meta_artifact *a = meta_find_artifact(meta, o->entry.filename);

	return a && a->agent_id && strcmp(a->agent_id, o->entry.agent_id) == 0 &&
	       a->generated_at && strcmp(a->generated_at, o->entry.generated_at) == 0;
}

/* Counts what the repair changed between before and after, auditing each. */
static void audit_repair(struct writer *w, const char *run, const struct repair *r,
			 const struct meta_run *before, size_t duplicates,
			 const struct meta_run *after, struct check_repair_result *result)
{
	char reason[AUDIT_REASON_SIZE];

	for (size_t i = 0; i < r->count; i++)
		if (orphan_added(after, &r->orphans[i])) {
			result->added++;
			audit_record(w->view, INDEX_ACTION_REPAIR, run, r->orphans[i].entry.filename,
				     (int64_t)r->orphans[i].entry.size_bytes, NULL, 0,
				     r->orphans[i].from_index ?
				     "entry put back as artifactfs promoted the file" :
				     "entry rebuilt from the file (agent unknown)");
		}
	for (size_t i = 0; i < before->n_artifacts; i++) {
		const struct meta_artifact *was = &before->artifacts[i];
		const struct meta_artifact *is = meta_find_artifact(after, was->filename);

		if (!is) {
			result->dropped++;
			audit_record(w->view, INDEX_ACTION_REPAIR, run, was->filename, -1, NULL, 0,
				     "entry dropped: its file is gone");
		} else if (is->size_bytes != was->size_bytes) {
			result->resized++;
			snprintf(reason, sizeof(reason), "size_bytes corrected from %llu to the "
				 "file's %llu", (unsigned long long)was->size_bytes,
				 (unsigned long long)is->size_bytes);
			audit_record(w->view, INDEX_ACTION_REPAIR, run, was->filename,
				     (int64_t)is->size_bytes, NULL, 0, reason);
		}
	}
	if (duplicates) {
		result->folded += (unsigned int)duplicates;
		snprintf(reason, sizeof(reason), "%zu duplicate entries folded into the last of "
			 "their name", duplicates);
		audit_record(w->view, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, 0, reason);
	}
}

/*
 * Copies the parts of *meta that audit_repair() compares (filename and
 * size of each entry).  Returns 0 or -ENOMEM.
 */
static int copy_sizes(const struct meta_run *meta, struct meta_run *copy)
{
	int ret = 0;

	copy->artifacts = calloc(meta->n_artifacts + 1, sizeof(*copy->artifacts));
	if (!copy->artifacts)
		return -ENOMEM;
	for (size_t i = 0; i < meta->n_artifacts; i++) {
		copy->artifacts[i].filename = metaedit_copy_text(meta->artifacts[i].filename, &ret);
		copy->artifacts[i].size_bytes = meta->artifacts[i].size_bytes;
		copy->n_artifacts++;
	}
	return ret;
}

/* Where a rebuilt metadata.json's broken original is kept, out of the tenant's sight. */
#define CHECK_KEPT_DIR "repairs"

/*
 * Keeps a copy of the run's broken metadata.json as
 * STORE/.artifactfs/repairs/<client>/<run>.metadata.json.<s>.<ns>: a
 * copy, not a link (a new link would change the file's ctime, its
 * version), and not in the run, where the tenant would see it.
 */
static int keep_broken_metadata(struct writer *w, const char *run, int run_fd, char *reason)
{
	int dir_fd, broken = -1, copy = -1, ret = 0;
	char kept[NAMES_ID_MAX + 64];
	struct timespec now;
	uint64_t copied;
	struct stat st;

	dir_fd = store_make_private_dir(w->view->store, CHECK_KEPT_DIR, w->view->client);
	clock_gettime(CLOCK_REALTIME, &now);
	snprintf(kept, sizeof(kept), "%s.%s.%lld.%09ld", run, NAMES_METADATA_FILE,
		 (long long)now.tv_sec, now.tv_nsec);
	broken = store_open_regular(run_fd, NAMES_METADATA_FILE, O_RDONLY, &st);
	if (dir_fd >= 0 && broken >= 0)
		copy = openat(dir_fd, kept, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (copy < 0 || store_copy_range(broken, copy, UINT64_MAX, &copied) < 0 ||
	    fsync(copy) < 0 || fsync(dir_fd) < 0) {
		ret = -EIO;
		snprintf(reason, AUDIT_REASON_SIZE, "cannot keep a copy of the broken "
			 "metadata.json in %s/%s/%s", STORE_PRIVATE_DIR, CHECK_KEPT_DIR,
			 w->view->client);
		if (copy >= 0)
			unlinkat(dir_fd, kept, 0);	/* no partial copy left behind */
	}
	if (copy >= 0)
		close(copy);
	if (broken >= 0)
		close(broken);
	if (dir_fd >= 0)
		close(dir_fd);
	return ret;
}

/*
 * Rebuilds an unparsable metadata.json: the run's fields as the index
 * last had them (else the run id, "unknown", the dir's mtime and the
 * writer's retention), no entries (repair_entries() adds one per file).
 * The broken file is kept first (keep_broken_metadata()).
 */
static int rebuild_metadata(struct writer *w, const char *run, int run_fd,
			    struct meta_run *meta, char *reason)
{
	struct index_attrs attrs = { 0 };
	char created[META_TIME_SIZE], expires[META_TIME_SIZE];
	struct stat st;
	const char *value;
	int ret;

	ret = keep_broken_metadata(w, run, run_fd, reason);
	if (ret < 0)
		return ret;
	fstat(run_fd, &st);
	meta_format_time(st.st_mtim.tv_sec, st.st_mtim.tv_nsec, created);
	meta_format_time(st.st_mtim.tv_sec +
			 (int64_t)w->options.retention_days * 86400, st.st_mtim.tv_nsec, expires);
	index_get_run_attrs(w->view->index, w->view->client, run, &attrs);
	meta_run_release(meta);
	meta->run_id = metaedit_copy_text(run, &ret);
	value = index_attrs_value(&attrs, "workflow_id");
	meta->workflow_id = metaedit_copy_text(value ? value : UNKNOWN_AGENT, &ret);
	value = index_attrs_value(&attrs, "user_directive");
	meta->user_directive = metaedit_copy_text(value ? value : "", &ret);
	value = index_attrs_value(&attrs, "created_at");
	meta->created_at = metaedit_copy_text(value ? value : created, &ret);
	value = index_attrs_value(&attrs, "expires_at");
	meta->expires_at = metaedit_copy_text(value ? value : expires, &ret);
	value = index_attrs_value(&attrs, "status");
	meta->status = metaedit_copy_text(value ? value : "active", &ret);
	index_attrs_release(&attrs);
	return ret;
}

unsigned int check_repair_run(struct writer *w, const char *run, unsigned int grace_ms,
			      unsigned int flags, struct check_repair_result *result)
{
	char reason[AUDIT_REASON_SIZE] = "";
	struct check_repair_result ignored = { 0 };
	struct metafile_version version, read;
	struct meta_run meta = { 0 }, before = { 0 };
	struct repair r = { .flags = flags };
	struct timespec now;
	int64_t changed_ns, quiet_ms;
	unsigned int again = 0;
	size_t duplicates;
	bool rebuilt = false;
	int run_fd, lock, ret;

	if (!result)
		result = &ignored;
	if (names_check_run(run, NULL) < 0)
		return 0;	/* promote/: never a run of the view */
	lock = store_lock_run(w->view->store, w->view->client, run, true);
	if (lock < 0) {
		result->error = lock;
		log_error("client %s run %s: cannot lock the run to repair it: %s",
			  w->view->client, run, strerror(-lock));
		return 0;
	}
	run_fd = store_open_run(w->view->store, w->view->client, run, O_RDONLY);
	if (run_fd < 0) {
		store_unlock(lock);
		return 0;
	}
	ret = metafile_read(run_fd, false, &meta, &version, NULL, 0);
	if (ret == -EAGAIN)
		again = METAFILE_SETTLE_MS / 4;
	if (ret == -EBADMSG && (flags & CHECK_REPAIR_ALL)) {
		ret = rebuild_metadata(w, run, run_fd, &meta, reason);
		rebuilt = r.rebuilt = ret == 0;
		if (ret < 0) {
			result->error = ret;
			audit_record(w->view, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, -ret, reason);
		}
	}
	/*
	 * Only a file that follows the schema is mended; one that is absent
	 * (deleted on purpose, or a run being made) is not made up.
	 */
	if (ret < 0)
		goto out;
	ret = find_orphans(w, run, run_fd, &meta, &version, &r, &changed_ns);
	if (ret < 0)
		goto out;
	/* A writer that copied a file in may be about to add its entry: give it time. */
	clock_gettime(CLOCK_REALTIME, &now);
	quiet_ms = (store_time_ns(&now) - changed_ns) / 1000000;
	if (!rebuilt && quiet_ms < grace_ms) {
		again = (unsigned int)(grace_ms - (quiet_ms > 0 ? quiet_ms : 0));
		goto out;
	}
	duplicates = meta.n_duplicates;
	read = version;
	ret = copy_sizes(&meta, &before);
	if (ret == 0)
		ret = metaedit_apply(w, run_fd, &meta, &version, repair_entries, &r, reason);
	if (ret < 0) {
		result->error = ret;
		audit_record(w->view, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, -ret, reason);
		goto out;
	}
	if (rebuilt) {
		result->rebuilt++;
		audit_record(w->view, INDEX_ACTION_REPAIR, run, NULL, -1, NULL, 0,
			     "unparsable metadata.json rebuilt from the files and the index; "
			     "the broken one kept in " STORE_PRIVATE_DIR "/" CHECK_KEPT_DIR);
	}
	audit_repair(w, run, &r, &before, duplicates, &meta, result);
	/* Other hosts hear of a repair that rewrote metadata.json, not of every look. */
	if (rebuilt || read.present != version.present || read.ino != version.ino ||
	    read.mtime_ns != version.mtime_ns)
		store_note_change(w->view->store, w->view->client, run);
	view_index_run(w->view, run, run_fd, VIEW_SYNC_FORCE, NULL);
	result->reindexed = true;
out:
	store_unlock(lock);
	close(run_fd);
	meta_run_release(&meta);
	meta_run_release(&before);
	repair_release(&r);
	return again;
}
