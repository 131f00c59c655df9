/*
 * test_deletion.c - deleting artifacts and runs (src/core/deletion.c)
 * over a real store in a temporary directory: the entry, the file and the
 * index row go together, in that order; rmdir's emptiness rule; and every
 * deletion done leaves its audit row.
 */
#include "test_tenant.h"

#include "deletion.h"

static bool has_entry(struct tenant *t, const char *run, const char *name)
{
	struct meta_run meta;
	bool found;

	assert_int_equal(read_metadata(t, TENANT, run, &meta), 0);
	found = meta_find_artifact(&meta, name) != NULL;
	meta_run_release(&meta);
	return found;
}

static bool run_indexed(struct tenant *t, const char *run)
{
	char **runs;
	size_t n;
	bool found = false;

	assert_int_equal(index_list_runs(t->index, TENANT, &runs, &n), 0);
	for (size_t i = 0; i < n; i++)
		found |= strcmp(runs[i], run) == 0;
	index_free_list(runs, n);
	return found;
}

static void test_delete_file(void **state)
{
	struct tenant *t = *state;

	land_ok(t, "r1", "a.txt", "hello");
	land_ok(t, "r1", "b.txt", "other");
	assert_true(indexed_file(t, "r1", "a.txt").found);

	assert_int_equal(deletion_delete_file(t->writer, "r1", "a.txt"), 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", "a.txt").path));
	assert_false(has_entry(t, "r1", "a.txt"));
	assert_true(has_entry(t, "r1", "b.txt"));
	assert_false(indexed_file(t, "r1", "a.txt").found);
	assert_true(indexed_file(t, "r1", "b.txt").found);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", "a.txt", 0), 1);
}

/* The entry goes first: a file that cannot be removed has lost its entry already. */
static void test_delete_file_drops_the_entry_first(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = { { "a.txt", 5 }, { "sub", 0 } };

	put_metadata(t->root, run_rel(TENANT, "r1", NULL).path, "r1", entries, 2);
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	tree_put(t->root, run_rel(TENANT, "r1", "sub/inside").path, "x");

	assert_int_equal(deletion_delete_file(t->writer, "r1", "sub"), -EISDIR);
	assert_false(has_entry(t, "r1", "sub"));
	assert_true(has_entry(t, "r1", "a.txt"));
	assert_true(tree_exists(t->root, run_rel(TENANT, "r1", "sub/inside").path));
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", "sub", EISDIR), 1);
}

static void test_delete_metadata_json(void **state)
{
	struct tenant *t = *state;
	struct index_attrs attrs;

	land_ok(t, "r1", "a.txt", "hello");
	assert_int_equal(deletion_delete_file(t->writer, "r1", NAMES_METADATA_FILE), 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path));
	assert_true(tree_exists(t->root, run_rel(TENANT, "r1", "a.txt").path));
	/* The index follows: the run has no metadata left, its file is still there. */
	assert_int_equal(index_get_run_attrs(t->index, TENANT, "r1", &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	assert_true(indexed_file(t, "r1", "a.txt").found);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", NAMES_METADATA_FILE, 0), 1);
}

/* A file whose metadata.json is broken for good still goes; the metadata is left as it is. */
static void test_delete_file_beside_broken_metadata(void **state)
{
	struct tenant *t = *state;
	static const char broken[] = "{\"run_id\": 42}";
	char *text;

	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path, broken);
	assert_int_equal(deletion_delete_file(t->writer, "r1", "a.txt"), 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", "a.txt").path));
	text = tree_read(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path);
	assert_non_null(text);
	assert_string_equal(text, broken);
	free(text);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", "a.txt", 0), 1);
}

static void test_delete_what_is_missing(void **state)
{
	struct tenant *t = *state;

	land_ok(t, "r1", "a.txt", "hello");
	assert_int_equal(deletion_delete_file(t->writer, "nope", "a.txt"), -ENOENT);
	assert_int_equal(deletion_delete_file(t->writer, "r1", "missing"), -ENOENT);
	assert_int_equal(deletion_delete_run(t->writer, "nope", 0, "rm"), -ENOENT);
	assert_int_equal(deletion_delete_run(t->writer, "..", 0, "rm"), -ENOENT);
	/* Another tenant's run is not this tenant's to delete. */
	tree_put(t->root, run_rel(OTHER_TENANT, "theirs", "b.txt").path, "bob's");
	assert_int_equal(deletion_delete_run(t->writer, "theirs", 0, "rm"), -ENOENT);
	assert_true(tree_exists(t->root, run_rel(OTHER_TENANT, "theirs", "b.txt").path));
	assert_true(tree_exists(t->root, run_rel(TENANT, "r1", "a.txt").path));
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "nope", "a.txt", ENOENT), 0);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "nope", NULL, ENOENT), 0);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", "missing", ENOENT), 0);
}

static void test_delete_run_only_empty(void **state)
{
	struct tenant *t = *state;

	land_ok(t, "r1", "a.txt", "hello");
	assert_int_equal(deletion_delete_run(t->writer, "r1", DELETION_ONLY_EMPTY, "rmdir"),
			 -ENOTEMPTY);
	assert_true(tree_exists(t->root, run_rel(TENANT, "r1", "a.txt").path));
	assert_true(run_indexed(t, "r1"));
	/* metadata.json alone is a regular file too. */
	assert_int_equal(deletion_delete_file(t->writer, "r1", "a.txt"), 0);
	assert_int_equal(deletion_delete_run(t->writer, "r1", DELETION_ONLY_EMPTY, "rmdir"),
			 -ENOTEMPTY);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", NULL, ENOTEMPTY), 0);

	/* What the view hides (a dot-directory, a symlink) does not count. */
	tree_put(t->root, run_rel(TENANT, "r2", ".cache/state").path, "x");
	tree_symlink("../r1/metadata.json", t->root, run_rel(TENANT, "r2", "link").path);
	assert_int_equal(deletion_delete_run(t->writer, "r2", DELETION_ONLY_EMPTY, "rmdir"), 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r2", NULL).path));
	assert_true(tree_exists(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path));
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r2", NULL, 0), 1);
}

static void test_delete_full_run(void **state)
{
	struct tenant *t = *state;
	char *owner = NULL;

	land_ok(t, "r1", "a.txt", "hello");
	land_ok(t, "r1", "b.txt", "other");
	tree_put(t->root, run_rel(TENANT, "r1", ".hidden/x").path, "x");
	land_ok(t, "r2", "c.txt", "kept");
	assert_true(run_indexed(t, "r1"));

	assert_int_equal(deletion_delete_run(t->writer, "r1", 0, "expired"), 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", NULL).path));
	assert_false(run_indexed(t, "r1"));
	assert_false(indexed_file(t, "r1", "a.txt").found);
	assert_true(run_indexed(t, "r2"));
	assert_true(tree_exists(t->root, run_rel(TENANT, "r2", "c.txt").path));
	/* The id stays the tenant's. */
	assert_int_equal(index_get_run_owner(t->index, "r1", &owner), 0);
	assert_string_equal(owner, TENANT);
	free(owner);
	assert_int_equal(count_audit(t, INDEX_ACTION_DELETE, "r1", NULL, 0), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delete_file, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_delete_file_drops_the_entry_first,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_delete_metadata_json, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_delete_file_beside_broken_metadata,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_delete_what_is_missing, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_delete_run_only_empty, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_delete_full_run, tenant_setup, tenant_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
