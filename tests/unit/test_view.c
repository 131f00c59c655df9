/*
 * test_view.c - a tenant's view over a real store in a temporary directory:
 * which runs are visible, and reconciling the index with the store.
 */
#include "test_helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "view.h"

struct fixture {
	char root[64];
	char index_path[128];
	struct store store;
	struct index *index;
	struct view view;
};

static void write_file(const char *root, const char *path, const char *content)
{
	char full[512];
	FILE *f;

	snprintf(full, sizeof(full), "%s/%s", root, path);
	f = fopen(full, "w");
	assert_non_null(f);
	fputs(content, f);
	fclose(f);
}

static void make_dir(const char *root, const char *path)
{
	char full[512];

	snprintf(full, sizeof(full), "%s/%s", root, path);
	assert_int_equal(mkdir(full, 0755), 0);
}

/* A metadata.json in the kernel-server's shape, expiring at expires_at. */
static void write_metadata(const char *root, const char *run_dir, const char *run,
			   const char *workflow, const char *expires_at)
{
	char path[256], json[1024];

	snprintf(path, sizeof(path), "%s/metadata.json", run_dir);
	snprintf(json, sizeof(json),
		 "{\n  \"run_id\": \"%s\",\n  \"workflow_id\": \"%s\",\n"
		 "  \"user_directive\": \"\",\n"
		 "  \"created_at\": \"2026-01-01T00:00:00.000000001+00:00\",\n"
		 "  \"expires_at\": \"%s\",\n"
		 "  \"artifacts\": [\n    {\n      \"filename\": \"a.txt\",\n"
		 "      \"agent_id\": \"agent-1\",\n"
		 "      \"generated_at\": \"2026-01-01T00:00:00+00:00\",\n"
		 "      \"size_bytes\": 5,\n      \"content_type\": \"text/plain\"\n    }\n"
		 "  ],\n  \"status\": \"active\"\n}",
		 run, workflow, expires_at);
	write_file(root, path, json);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	make_temp_dir(f->root, sizeof(f->root));
	make_dir(f->root, "artifacts");
	make_dir(f->root, "artifacts/alice");
	make_dir(f->root, "artifacts/bob");
	make_dir(f->root, "artifacts/alice/r1");
	make_dir(f->root, "artifacts/bob/r1");
	write_file(f->root, "artifacts/alice/r1/a.txt", "hello");
	write_metadata(f->root, "artifacts/alice/r1", "r1", "wf-alice", "2999-01-01T00:00:00+00:00");
	write_file(f->root, "artifacts/bob/r1/b.txt", "bob's");
	write_metadata(f->root, "artifacts/bob/r1", "r1", "wf-bob", "2999-01-01T00:00:00+00:00");

	snprintf(f->index_path, sizeof(f->index_path), "%s/index.db", f->root);
	assert_int_equal(store_open(f->root, &f->store), 0);
	assert_int_equal(index_open(f->index_path, &f->index), 0);
	f->view = (struct view){ .client = "alice", .store = &f->store, .index = f->index };
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	index_close(f->index);
	store_close(&f->store);
	assert_int_equal(remove_tree(f->root), 0);
	free(f);
	return 0;
}

static char *run_attr(struct fixture *f, const char *client, const char *run, const char *name)
{
	struct index_attrs attrs;
	char *value = NULL;

	if (index_get_run_attrs(f->index, client, run, &attrs) == 0)
		for (size_t i = 0; i < attrs.count; i++)
			if (strcmp(attrs.attr[i].name, name) == 0)
				value = strdup(attrs.attr[i].value);
	index_attrs_release(&attrs);
	return value;
}

static void set_workflow_behind_the_view(struct fixture *f, const char *value)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "UPDATE runs SET workflow_id = '%s' WHERE client = 'alice' AND run = 'r1'", value);
	sql_exec(f->index_path, sql);
}

static void test_reconcile_indexes_only_the_tenant(void **state)
{
	struct fixture *f = *state;
	char **runs;
	size_t n;
	char *workflow;

	assert_int_equal(view_reconcile(&f->view), 0);
	assert_int_equal(index_list_runs(f->index, "alice", &runs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(runs[0], "r1");
	index_free_list(runs, n);
	workflow = run_attr(f, "alice", "r1", "workflow_id");
	assert_non_null(workflow);
	assert_string_equal(workflow, "wf-alice");
	free(workflow);
	/* bob's run of the same id is not indexed by alice's view */
	assert_int_equal(index_list_runs(f->index, "bob", &runs, &n), 0);
	assert_int_equal(n, 0);
	index_free_list(runs, n);
}

static void test_reconcile_skips_unchanged_runs(void **state)
{
	struct fixture *f = *state;
	char path[256];
	char *workflow;

	assert_int_equal(view_reconcile(&f->view), 0);
	set_workflow_behind_the_view(f, "tampered");
	/* Unchanged stamp: not parsed again, so the tampered value stays. */
	assert_int_equal(view_reconcile(&f->view), 0);
	workflow = run_attr(f, "alice", "r1", "workflow_id");
	assert_string_equal(workflow, "tampered");
	free(workflow);
	/* A new file changes the run dir's mtime: parsed again. */
	snprintf(path, sizeof(path), "%s/artifacts/alice/r1", f->root);
	struct timespec times[2] = { { 0, UTIME_NOW }, { 12345, 0 } };
	assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
	assert_int_equal(view_reconcile(&f->view), 0);
	workflow = run_attr(f, "alice", "r1", "workflow_id");
	assert_string_equal(workflow, "wf-alice");
	free(workflow);
}

static void test_reconcile_drops_vanished_runs(void **state)
{
	struct fixture *f = *state;
	char path[256];
	char **runs;
	size_t n;

	assert_int_equal(view_reconcile(&f->view), 0);
	snprintf(path, sizeof(path), "%s/artifacts/alice/r1", f->root);
	assert_int_equal(remove_tree(path), 0);
	assert_int_equal(view_reconcile(&f->view), 0);
	assert_int_equal(index_list_runs(f->index, "alice", &runs, &n), 0);
	assert_int_equal(n, 0);
	index_free_list(runs, n);
}

static void test_tenant_without_directory_is_empty(void **state)
{
	struct fixture *f = *state;
	char **runs;
	size_t n;

	f->view.client = "carol";
	assert_int_equal(view_reconcile(&f->view), 0);
	assert_int_equal(index_list_runs(f->index, "carol", &runs, &n), 0);
	assert_int_equal(n, 0);
	index_free_list(runs, n);
}

static void test_malformed_metadata_keeps_the_run(void **state)
{
	struct fixture *f = *state;
	struct index_attrs attrs;
	char **runs;
	size_t n;

	make_dir(f->root, "artifacts/alice/bad");
	write_file(f->root, "artifacts/alice/bad/x.bin", "x");
	write_file(f->root, "artifacts/alice/bad/metadata.json", "{\"run_id\": 42, \"status\": \"active\"");
	make_dir(f->root, "artifacts/alice/typed");
	write_file(f->root, "artifacts/alice/typed/metadata.json",
		   "{\"run_id\": \"typed\", \"workflow_id\": 7, \"status\": \"active\"}");
	/* Unparsable and just written: a writer may be halfway, so reconcile waits it out. */
	assert_int_equal(view_reconcile(&f->view), 0);
	assert_int_equal(index_list_runs(f->index, "alice", &runs, &n), 0);
	assert_int_equal(n, 3);
	index_free_list(runs, n);
	/* Not JSON at all: the run is indexed without attributes. */
	assert_int_equal(index_get_run_attrs(f->index, "alice", "bad", &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	/* Wrong type: that field is absent, the valid ones are kept. */
	assert_int_equal(index_get_run_attrs(f->index, "alice", "typed", &attrs), 0);
	assert_int_equal(attrs.count, 1);
	assert_string_equal(attrs.attr[0].name, "status");
	index_attrs_release(&attrs);
	assert_int_equal(index_get_file_attrs(f->index, "alice", "bad", "x.bin", &attrs), 0);
	index_attrs_release(&attrs);
}

/* A run whose metadata.json breaks keeps the metadata last read, while it is written and after. */
static void test_broken_metadata_keeps_the_last_good(void **state)
{
	struct fixture *f = *state;
	struct index_attrs attrs;
	bool incomplete = true;

	write_metadata(f->root, "artifacts/alice/r1", "r1", "wf-good", "2999-01-01T00:00:00+00:00");
	assert_int_equal(view_sync_run(&f->view, "r1", VIEW_SYNC_FORCE, &incomplete), 0);
	assert_false(incomplete);
	write_file(f->root, "artifacts/alice/r1/metadata.json", "{\"run_id\": \"r1\", \"wor");
	assert_int_equal(view_sync_run(&f->view, "r1", VIEW_SYNC_FORCE, NULL), -EAGAIN);
	nanosleep(&(struct timespec){ .tv_sec = 1, .tv_nsec = 100000000 }, NULL);
	assert_int_equal(view_sync_run(&f->view, "r1", VIEW_SYNC_FORCE, NULL), 0);
	assert_int_equal(index_get_run_attrs(f->index, "alice", "r1", &attrs), 0);
	assert_true(attrs.count > 0);
	assert_string_equal(attrs.attr[0].value, "wf-good");
	index_attrs_release(&attrs);
	/* A file with no entry makes the run incomplete (a repair is due). */
	write_metadata(f->root, "artifacts/alice/r1", "r1", "wf-good", "2999-01-01T00:00:00+00:00");
	write_file(f->root, "artifacts/alice/r1/orphan.txt", "x");
	assert_int_equal(view_sync_run(&f->view, "r1", VIEW_SYNC_FORCE, &incomplete), 0);
	assert_true(incomplete);
}

static void test_hidden_runs(void **state)
{
	struct fixture *f = *state;
	char target[256], link[256];
	struct stat st;

	make_dir(f->root, "artifacts/alice/promote");
	make_dir(f->root, "artifacts/alice/old");
	write_metadata(f->root, "artifacts/alice/old", "old", "wf", "2001-01-01T00:00:00+00:00");
	write_file(f->root, "artifacts/alice/plainfile", "not a run");
	snprintf(target, sizeof(target), "%s/artifacts/bob/r1", f->root);
	snprintf(link, sizeof(link), "%s/artifacts/alice/stolen", f->root);
	assert_int_equal(symlink(target, link), 0);
	assert_int_equal(view_reconcile(&f->view), 0);

	assert_true(view_run_visible(&f->view, "r1"));
	assert_false(view_run_visible(&f->view, "promote"));
	assert_false(view_run_visible(&f->view, ".."));
	assert_false(view_run_visible(&f->view, "old"));
	f->view.show_expired = true;
	assert_true(view_run_visible(&f->view, "old"));

	int fd = view_open_run(&f->view, "r1", &st);
	assert_true(fd >= 0);
	assert_true(S_ISDIR(st.st_mode));
	close(fd);
	assert_int_equal(view_open_run(&f->view, "stolen", &st), -ENOENT);
	assert_int_equal(view_open_run(&f->view, "plainfile", &st), -ENOENT);
	assert_int_equal(view_open_run(&f->view, "promote", &st), -ENOENT);
	assert_int_equal(view_open_run(&f->view, "../bob", &st), -ENOENT);
	assert_int_equal(view_open_run(&f->view, "missing", &st), -ENOENT);
}

static void test_sync_run_follows_a_rewrite(void **state)
{
	struct fixture *f = *state;
	char *workflow;

	assert_int_equal(view_reconcile(&f->view), 0);
	write_metadata(f->root, "artifacts/alice/r1", "r1", "rewritten", "2999-01-01T00:00:00+00:00");
	assert_int_equal(view_sync_run(&f->view, "r1", VIEW_SYNC_FORCE, NULL), 0);
	workflow = run_attr(f, "alice", "r1", "workflow_id");
	assert_string_equal(workflow, "rewritten");
	free(workflow);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reconcile_indexes_only_the_tenant, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile_skips_unchanged_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconcile_drops_vanished_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tenant_without_directory_is_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_metadata_keeps_the_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_broken_metadata_keeps_the_last_good, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_hidden_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sync_run_follows_a_rewrite, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
