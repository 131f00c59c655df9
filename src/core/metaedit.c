/*
 * metaedit.c - reads, edits and rewrites of a run's metadata.json.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
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

/* The reason for a failed write of metadata.json; returns what the caller returns. */
static int write_failed(int ret, char *reason)
{
	if (ret == -ESTALE || ret == -ENOMEM)
		return ret;
	snprintf(reason, AUDIT_REASON_SIZE, "cannot %s metadata.json: %s",
		 ret == -EINVAL ? "format" : "write", strerror(-ret));
	return -EIO;
}

/* One change of a run's metadata.json, ordered when before is set. */
struct change {
	struct writer *writer;
	int run_fd;
	const char *run;
	metaedit_before_fn before;
	void *before_ctx;
	bool moved;	/* before() ran: its record must stay until the change is whole */
	char record[WRITER_WORK_NAME_SIZE];	/* an ordered change's first draft */
};

/*
 * Writes *meta as the run's metadata.json if it is still *version: a
 * durable draft, before() the first time, the rename, an fsync of the run
 * dir.  *version then describes what was written.  Returns 0, 1 (before()
 * asks for the edit again), -ESTALE (changed since read), -ENOMEM, -EIO
 * with reason set.
 */
static int write_metadata(struct change *c, const struct meta_run *meta,
			  struct metafile_version *version, char *reason)
{
	struct writer *w = c->writer;
	struct metafile_version written;
	char draft[WRITER_WORK_NAME_SIZE];
	bool is_record = c->before && !c->moved;
	struct stat drafted;
	int ret;

	if (is_record)
		writer_intent_name(w, c->run, draft, sizeof(draft));
	else
		writer_work_name(w, "metadata", draft, sizeof(draft));
	/* A record is flushed by before(), with what it describes. */
	ret = metafile_draft(w->work_fd, draft, meta, version, !is_record, &drafted);
	if (ret < 0)
		return write_failed(ret, reason);
	if (is_record) {
		int durable[2] = { openat(w->work_fd, draft, O_RDONLY | O_CLOEXEC), w->work_fd };

		ret = durable[0] < 0 ? write_failed(-errno, reason) :
		      c->before(c->before_ctx, durable, 2, reason);
		if (durable[0] >= 0)
			close(durable[0]);
		if (ret < 0) {
			unlinkat(w->work_fd, draft, 0);
			return ret;
		}
		c->moved = true;
		snprintf(c->record, sizeof(c->record), "%s", draft);
		if (ret == 1)
			return 1;
	}
	ret = metafile_install(c->run_fd, w->work_fd, draft, version, &drafted, &written);
	if (ret < 0) {
		if (strcmp(draft, c->record) != 0)
			unlinkat(w->work_fd, draft, 0);
		return write_failed(ret, reason);
	}
	if (fsync(c->run_fd) < 0)
		return write_failed(-errno, reason);
	*version = written;
	return 0;
}

static int apply(struct change *c, struct meta_run *meta, struct metafile_version *version,
		 metaedit_fn edit, const void *ctx, char *reason)
{
	int64_t deadline = clock_ns(CLOCK_MONOTONIC) + (int64_t)METAEDIT_RETRY_MS * 1000000;
	int ret;

	for (long tries = 1;; tries++) {
		ret = edit(meta, ctx);
		if (ret < 0) {
			snprintf(reason, AUDIT_REASON_SIZE, "out of memory");
			break;
		}
		if (ret == 1) {
			ret = 0;
			break;
		}
		ret = write_metadata(c, meta, version, reason);
		if (ret != -ESTALE && ret != 1)
			break;
		if (ret == -ESTALE && clock_ns(CLOCK_MONOTONIC) >= deadline) {
			snprintf(reason, AUDIT_REASON_SIZE, "metadata.json kept changing while it "
				 "was being rewritten (%ld tries in %d ms)", tries, METAEDIT_RETRY_MS);
			ret = -EIO;
			break;
		}
		/* Out of step with the other writer's loop, in a few ms. */
		if (ret == -ESTALE)
			nanosleep(&(struct timespec){ .tv_nsec = (tries % 7 + 1) * 1000000L }, NULL);
		ret = metaedit_read(c->run_fd, meta, version, reason);
		if (ret < 0 && ret != -ENOENT)
			break;	/* -ENOENT: removed meanwhile, made anew */
	}
	/* Whole, or nothing moved: the record has nothing left to tell. */
	if (c->record[0] && ret == 0)
		unlinkat(c->writer->work_fd, c->record, 0);
	return ret;
}

int metaedit_apply(struct writer *w, int run_fd, struct meta_run *meta,
		   struct metafile_version *version, metaedit_fn edit, const void *ctx,
		   char *reason)
{
	struct change c = { .writer = w, .run_fd = run_fd };

	return apply(&c, meta, version, edit, ctx, reason);
}

int metaedit_apply_ordered(struct writer *w, int run_fd, const char *run,
			   struct meta_run *meta, struct metafile_version *version,
			   metaedit_fn edit, const void *ctx, metaedit_before_fn before,
			   void *before_ctx, char *reason)
{
	struct change c = {
		.writer = w, .run_fd = run_fd, .run = run,
		.before = before, .before_ctx = before_ctx,
	};

	return apply(&c, meta, version, edit, ctx, reason);
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
