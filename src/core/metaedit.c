/*
 * metaedit.c - reads, edits and rewrites of a run's metadata.json.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "metaedit.h"

char *metaedit_copy_text(const char *text, int *ret)
{
	char *copy = strdup(text ? text : "");

	if (!copy)
		*ret = -ENOMEM;
	return copy;
}

int metaedit_read(int run_fd, struct meta_run *meta, struct metafile_version *version,
		  char *reason)
{
	char problem[160] = "";
	int ret;

	ret = metafile_read(run_fd, true, meta, version, problem, sizeof(problem));
	if (ret == 0 || ret == -ENOENT || ret == -ENOMEM)
		return ret;
	if (ret == -EBADMSG)
		snprintf(reason, AUDIT_REASON_SIZE, "metadata.json does not parse (%s) and has "
			 "not changed for %d ms; not rewriting it", problem, METAFILE_SETTLE_MS);
	else if (ret == -EINVAL)
		snprintf(reason, AUDIT_REASON_SIZE,
			 "metadata.json does not follow the schema (%s); not rewriting it", problem);
	else
		snprintf(reason, AUDIT_REASON_SIZE, "cannot read metadata.json: %s",
			 ret == -EFBIG ? problem : strerror(-ret));
	return -EIO;
}

/*
 * Writes *meta as the run's metadata.json if it is still *version (see
 * metafile_write()); *version then describes what was written.
 * Returns 0, -ESTALE (changed since read), -ENOMEM, -EIO with reason set.
 */
static int write_metadata(struct writer *w, int run_fd, const struct meta_run *meta,
			  struct metafile_version *version, char *reason)
{
	struct metafile_version written;
	char draft[64];
	int ret;

	writer_work_name(w, "metadata", draft, sizeof(draft));
	ret = metafile_write(run_fd, w->work_fd, draft, meta, version, &written);
	if (ret == 0)
		*version = written;
	if (ret == 0 || ret == -ESTALE || ret == -ENOMEM)
		return ret;
	snprintf(reason, AUDIT_REASON_SIZE, "cannot %s metadata.json: %s",
		 ret == -EINVAL ? "format" : "write", strerror(-ret));
	return -EIO;
}

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int metaedit_apply(struct writer *w, int run_fd, struct meta_run *meta,
		   struct metafile_version *version, metaedit_fn edit, const void *ctx,
		   char *reason)
{
	int64_t deadline = monotonic_ns() + (int64_t)METAEDIT_RETRY_MS * 1000000;

	for (long tries = 1;; tries++) {
		int ret = edit(meta, ctx);

		if (ret < 0) {
			snprintf(reason, AUDIT_REASON_SIZE, "out of memory");
			return ret;
		}
		if (ret == 1)
			return 0;
		ret = write_metadata(w, run_fd, meta, version, reason);
		if (ret != -ESTALE)
			return ret;
		if (monotonic_ns() >= deadline) {
			snprintf(reason, AUDIT_REASON_SIZE, "metadata.json kept changing while it "
				 "was being rewritten (%ld tries in %d ms)", tries, METAEDIT_RETRY_MS);
			return -EIO;
		}
		/* Out of step with the other writer's loop, in a few ms. */
		nanosleep(&(struct timespec){ .tv_nsec = (tries % 7 + 1) * 1000000L }, NULL);
		ret = metaedit_read(run_fd, meta, version, reason);
		if (ret < 0 && ret != -ENOENT)
			return ret;	/* -ENOENT: removed meanwhile, made anew */
	}
}

bool metaedit_remove_entry(struct meta_run *meta, const char *name)
{
	size_t kept = 0;
	bool found = false;

	for (size_t i = 0; i < meta->n_artifacts; i++) {
		struct meta_artifact *a = &meta->artifacts[i];
		if (strcmp(a->filename, name) == 0) {
			meta_artifact_release(a);
			found = true;
			continue;
		}
		meta->artifacts[kept++] = *a;
	}
	meta->n_artifacts = kept;
	return found;
}

/* Sets *field to a copy of value (NULL stays NULL).  Returns 0 or -ENOMEM. */
static int replace_string(char **field, const char *value)
{
	char *copy = NULL;

	if (value && !(copy = strdup(value)))
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

int metaedit_put_entry(struct meta_run *meta, const struct meta_artifact *entry)
{
	struct meta_artifact *slot = NULL;
	size_t kept = 0;
	int ret;

	/* The first entry of the name keeps its place; later duplicates go. */
	for (size_t i = 0; i < meta->n_artifacts; i++) {
		struct meta_artifact *a = &meta->artifacts[i];
		bool same = strcmp(a->filename, entry->filename) == 0;

		if (same && slot) {
			meta_artifact_release(a);
			continue;
		}
		meta->artifacts[kept] = *a;
		if (same)
			slot = &meta->artifacts[kept];
		kept++;
	}
	meta->n_artifacts = kept;
	if (!slot) {
		struct meta_artifact *grown = realloc(meta->artifacts,
						      (kept + 1) * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		meta->artifacts = grown;
		slot = &grown[meta->n_artifacts++];
		memset(slot, 0, sizeof(*slot));
		slot->filename = strdup(entry->filename);
		if (!slot->filename)
			return -ENOMEM;
	}
	if ((ret = replace_string(&slot->agent_id, entry->agent_id)) < 0 ||
	    (ret = replace_string(&slot->generated_at, entry->generated_at)) < 0 ||
	    (ret = replace_string(&slot->content_type, entry->content_type)) < 0)
		return ret;
	slot->size_bytes = entry->size_bytes;
	slot->has_size_bytes = entry->has_size_bytes;
	return 0;
}

int metaedit_rename_entry(struct meta_run *meta, const char *from, const char *to)
{
	struct meta_artifact *entry;

	metaedit_remove_entry(meta, to);
	entry = meta_find_artifact(meta, from);
	return entry ? replace_string(&entry->filename, to) : 1;
}
