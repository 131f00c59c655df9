/*
 * test_tenant.h - one tenant's store in a temporary directory, for the
 * tests of the modules that open or change it (store, landing, deletion,
 * check): the store root, an index beside artifacts/, a view of tenant
 * TENANT and a writer with the default promotion options; metadata.json
 * written as the kernel-server writes it, files landed as artifactctl
 * promote lands them, and what the index and its audit trail then hold.
 *
 * Static inline functions, like test_helpers.h, so that each test stays
 * one source file.
 */
#ifndef ARTIFACTFS_TEST_TENANT_H
#define ARTIFACTFS_TEST_TENANT_H

#include "test_helpers.h"

#include "audit.h"
#include "index.h"
#include "landing.h"
#include "meta.h"
#include "store.h"
#include "view.h"
#include "writer.h"

#define TENANT "alice"
#define OTHER_TENANT "bob"

/* SHA-256 of the bytes "hello". */
#define HELLO_SHA256 "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

/* generated_at of what the tests land. */
#define TEST_GENERATED_AT "2026-01-02T03:04:05.000000000+00:00"

struct tenant {
	char root[64];
	char index_path[128];
	struct store store;
	struct index *index;
	struct view view;
	struct promote_options options;
	struct writer *writer;
};

/* A cmocka setup: a fresh tenant in *state. */
static inline int tenant_setup(void **state)
{
	struct tenant *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	make_temp_dir(t->root, sizeof(t->root));
	snprintf(t->index_path, sizeof(t->index_path), "%s/index.db", t->root);
	assert_int_equal(store_open(t->root, &t->store), 0);
	assert_int_equal(index_open(t->index_path, &t->index), 0);
	t->view = (struct view){ .client = TENANT, .store = &t->store, .index = t->index };
	promote_options_init(&t->options);
	assert_int_equal(writer_open(&t->view, &t->options, &t->writer), 0);
	*state = t;
	return 0;
}

static inline int tenant_teardown(void **state)
{
	struct tenant *t = *state;

	writer_close(t->writer);
	index_close(t->index);
	store_close(&t->store);
	assert_int_equal(remove_tree(t->root), 0);
	free(t);
	return 0;
}

/* artifacts/<client>/<run>[/<name>], relative to the root. */
static inline struct tree_rel run_rel(const char *client, const char *run, const char *name)
{
	return name ? tree_rel("%s/%s/%s/%s", STORE_ARTIFACTS_DIR, client, run, name) :
		      tree_rel("%s/%s/%s", STORE_ARTIFACTS_DIR, client, run);
}

/* client's run/name holds exactly content. */
static inline void assert_run_file(struct tenant *t, const char *client, const char *run,
				   const char *name, const char *content)
{
	char *text = tree_read(t->root, run_rel(client, run, name).path);

	assert_non_null(text);
	assert_string_equal(text, content);
	free(text);
}

/* One metadata.json entry: a file name and the size it claims. */
struct test_entry {
	const char *name;
	uint64_t size;
};

/*
 * Writes dir/metadata.json (dir relative to the root) for run, formatted
 * as the kernel-server writes it, with one entry per element of entries,
 * duplicates included, agent "kernel".
 */
static inline void put_metadata(const char *root, const char *dir, const char *run,
				const struct test_entry *entries, size_t n)
{
	struct meta_artifact *artifacts = calloc(n + 1, sizeof(*artifacts));
	struct meta_run meta = {
		.run_id = (char *)run, .workflow_id = "wf-kernel", .user_directive = "",
		.created_at = "2026-01-01T00:00:00.000000000+00:00",
		.expires_at = "2999-01-01T00:00:00.000000000+00:00", .status = "active",
		.artifacts = artifacts, .n_artifacts = n,
	};
	char *text;
	size_t len;

	assert_non_null(artifacts);
	for (size_t i = 0; i < n; i++)
		artifacts[i] = (struct meta_artifact){
			.filename = (char *)entries[i].name, .agent_id = "kernel",
			.generated_at = TEST_GENERATED_AT, .content_type = "text/plain",
			.has_size_bytes = true, .size_bytes = entries[i].size,
		};
	assert_int_equal(meta_format(&meta, &text, &len), 0);
	tree_write(root, tree_rel("%s/%s", dir, NAMES_METADATA_FILE).path, text, len);
	free(text);
	free(artifacts);
}

/*
 * Parses the metadata.json of client's run into *meta (release it after).
 * Returns meta_parse()'s result, or -ENOENT when there is none.
 */
static inline int read_metadata(struct tenant *t, const char *client, const char *run,
				struct meta_run *meta)
{
	char *text = tree_read(t->root, run_rel(client, run, NAMES_METADATA_FILE).path);
	int ret;

	*meta = (struct meta_run){ 0 };
	if (!text)
		return -ENOENT;
	ret = meta_parse(text, strlen(text), meta, NULL, 0);
	free(text);
	return ret;
}

/* A file holding text, opened O_RDWR and nameless: a source to stage from. */
static inline int make_source(struct tenant *t, const char *text)
{
	int fd = open(t->root, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(store_write_all(fd, text, strlen(text)), 0);
	return fd;
}

/*
 * Lands text as the tenant's run/name from agent, as artifactctl promote
 * does: landing_stage_copy() from a source file, then landing_land_file()
 * (a new run gets workflow "wf" and an empty directive); a refused
 * landing's staged copy is removed.  Returns the first failure, with
 * reason (AUDIT_REASON_SIZE bytes) set, or 0.
 */
static inline int land(struct tenant *t, const char *run, const char *name, const char *agent,
		       const char *text, char *reason)
{
	struct landing l = {
		.run = run, .name = name, .agent_id = agent,
		.workflow_id = "wf", .user_directive = "",
		.generated_at = TEST_GENERATED_AT,
	};
	char staged[64];
	int src = make_source(t, text), ret;

	ret = landing_stage_copy(t->writer, src, UINT64_MAX, staged, &l, reason);
	close(src);
	if (ret < 0)
		return ret;
	ret = landing_land_file(t->writer, t->writer->work_fd, staged, &l, reason);
	if (ret < 0)
		unlinkat(t->writer->work_fd, staged, 0);
	return ret;
}

/* land() that must succeed. */
static inline void land_ok(struct tenant *t, const char *run, const char *name,
			   const char *text)
{
	char reason[AUDIT_REASON_SIZE] = "";

	if (land(t, run, name, "agent-1", text, reason) < 0)
		fail_msg("landing %s/%s: %s", run, name, reason);
}

/* An artifact row of the index, copied out. */
struct indexed {
	bool found;
	char agent_id[64];
	char sha256[LANDING_SHA256_HEX_SIZE];	/* "" when none is recorded */
	int64_t size_bytes, file_size;
};

struct indexed_query {
	const char *name;
	struct indexed *out;
};

static inline int match_indexed(void *ctx, const struct index_artifact_row *row)
{
	const struct indexed_query *q = ctx;

	if (strcmp(row->filename, q->name) != 0)
		return 0;
	q->out->found = true;
	snprintf(q->out->agent_id, sizeof(q->out->agent_id), "%s",
		 row->agent_id ? row->agent_id : "");
	snprintf(q->out->sha256, sizeof(q->out->sha256), "%s", row->sha256 ? row->sha256 : "");
	q->out->size_bytes = row->size_bytes;
	q->out->file_size = row->file_size;
	return 0;
}

/* The index's row of the tenant's run/name (.found false when there is none). */
static inline struct indexed indexed_file(struct tenant *t, const char *run, const char *name)
{
	struct indexed out = { 0 };
	struct indexed_query q = { name, &out };

	assert_int_equal(index_for_each_artifact(t->index, TENANT, run, match_indexed, &q), 0);
	return out;
}

/* Which audit rows to count; a NULL run or file matches only a row without one. */
struct audit_query {
	enum index_action action;
	const char *run, *file;
	int error;
	size_t count;
};

static inline bool same_text(const char *a, const char *b)
{
	return a && b ? strcmp(a, b) == 0 : a == b;
}

static inline int match_audit(void *ctx, const struct index_audit *row)
{
	struct audit_query *q = ctx;

	q->count += row->action == q->action && same_text(row->run, q->run) &&
		    same_text(row->filename, q->file) && row->error == q->error;
	return 0;
}

/* How many of the tenant's audit rows are action on run/file with error (0: success). */
static inline size_t count_audit(struct tenant *t, enum index_action action, const char *run,
				 const char *file, int error)
{
	struct audit_query q = { action, run, file, error, 0 };

	assert_int_equal(index_for_each_audit(t->index, TENANT, 0, match_audit, &q), 0);
	return q.count;
}

#endif /* ARTIFACTFS_TEST_TENANT_H */
