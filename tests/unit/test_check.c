/*
 * test_check.c - verifying a tenant's runs against metadata.json and the
 * index, and repairing them (src/core/check.c), over a real store in a
 * temporary directory: each kind of problem check_run() reports, and what
 * check_repair_run() mends, counts, audits and leaves alone.
 */
#include "test_tenant.h"

#include <time.h>

#include "check.h"

/* A data file of a run made by hand. */
struct test_file {
	const char *name;
	const char *content;
};

/*
 * Makes the tenant's run by hand, as the kernel-server would: files, and
 * a metadata.json of entries unless entries is NULL; indexed as it is
 * when indexed is set.
 */
static void make_run(struct tenant *t, const char *run, const struct test_file *files,
		     size_t n_files, const struct test_entry *entries, size_t n_entries,
		     bool indexed)
{
	tree_mkdir(t->root, run_rel(TENANT, run, NULL).path);
	for (size_t i = 0; i < n_files; i++)
		tree_put(t->root, run_rel(TENANT, run, files[i].name).path, files[i].content);
	if (entries)
		put_metadata(t->root, run_rel(TENANT, run, NULL).path, run, entries, n_entries);
	if (indexed)
		assert_int_equal(view_sync_run(&t->view, run, VIEW_SYNC_FORCE, NULL), 0);
}

/* What check_run() reported of one run: how many of each kind, and the file of each. */
struct found {
	unsigned int count[CHECK_KIND_COUNT];
	char file[CHECK_KIND_COUNT][64];
	size_t total;
	uint64_t runs, files, bytes_hashed;
};

static struct found check(struct tenant *t, const char *run, unsigned int flags)
{
	struct check_report report = { 0 };
	struct found found = { 0 };

	assert_int_equal(check_run(&t->view, run, flags, &report), 0);
	for (size_t i = 0; i < report.count; i++) {
		const struct check_problem *p = &report.problems[i];

		assert_true(p->kind < CHECK_KIND_COUNT);
		assert_string_equal(p->client, TENANT);
		assert_string_equal(p->run, run);
		assert_non_null(p->detail);
		print_message("check %s: %s %s: %s\n", run, check_kind_name(p->kind),
			      p->file ? p->file : "-", p->detail);
		found.count[p->kind]++;
		snprintf(found.file[p->kind], sizeof(found.file[0]), "%s", p->file ? p->file : "");
	}
	found.total = report.count;
	found.runs = report.runs;
	found.files = report.files;
	found.bytes_hashed = report.bytes_hashed;
	check_report_release(&report);
	return found;
}

/* check_run() found exactly one problem, of kind, about file ("" for the run). */
static void assert_only(const struct found *found, enum check_kind kind, const char *file)
{
	assert_int_equal(found->total, 1);
	assert_int_equal(found->count[kind], 1);
	assert_string_equal(found->file[kind], file);
}

/* Every problem left is one check_repair_run() does not mend. */
static void assert_only_unrepairable(const struct found *found)
{
	for (int kind = 0; kind < CHECK_KIND_COUNT; kind++)
		if (found->count[kind])
			assert_false(check_kind_repairable((enum check_kind)kind));
}

static void assert_file(struct tenant *t, const char *run, const char *name,
			const char *content)
{
	char *text = tree_read(t->root, run_rel(TENANT, run, name).path);

	assert_non_null(text);
	assert_string_equal(text, content);
	free(text);
}

/* The tenant's run/metadata.json, malloc'd, or NULL. */
static char *metadata_text(struct tenant *t, const char *run)
{
	return tree_read(t->root, run_rel(TENANT, run, NAMES_METADATA_FILE).path);
}

static const struct test_file three_files[] = {
	{ "a.txt", "hello" }, { "b.txt", "abc" }, { "c.txt", "four" },
};

static void test_clean_run(void **state)
{
	struct tenant *t = *state;
	struct found found;

	land_ok(t, "r1", "a.txt", "hello");
	land_ok(t, "r1", "b.txt", "abc");
	found = check(t, "r1", CHECK_READ_DATA);
	assert_int_equal(found.total, 0);
	assert_int_equal(found.runs, 1);
	assert_int_equal(found.files, 2);
	assert_int_equal(found.bytes_hashed, 8);
	/* A run that does not exist is no problem, and not counted. */
	found = check(t, "nope", 0);
	assert_int_equal(found.total, 0);
	assert_int_equal(found.runs, 0);
}

static void test_missing_entry(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = { { "a.txt", 5 }, { "c.txt", 4 } };
	struct found found;

	make_run(t, "r1", three_files, 3, entries, 2, true);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_MISSING_ENTRY, "b.txt");
	assert_int_equal(found.files, 3);
}

static void test_missing_file(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = {
		{ "a.txt", 5 }, { "b.txt", 3 }, { "c.txt", 4 }, { "gone.txt", 7 },
	};
	struct found found;

	make_run(t, "r1", three_files, 3, entries, 4, true);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_MISSING_FILE, "gone.txt");
}

static void test_duplicate_entry(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = {
		{ "a.txt", 5 }, { "b.txt", 3 }, { "a.txt", 5 }, { "c.txt", 4 },
	};
	struct found found;

	make_run(t, "r1", three_files, 3, entries, 4, true);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_DUPLICATE_ENTRY, "");
}

static void test_size_mismatch(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = { { "a.txt", 5 }, { "b.txt", 3 }, { "c.txt", 99 } };
	struct found found;

	make_run(t, "r1", three_files, 3, entries, 3, true);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_SIZE_MISMATCH, "c.txt");
}

static void test_no_metadata(void **state)
{
	struct tenant *t = *state;
	struct found found;

	make_run(t, "r1", three_files, 3, NULL, 0, true);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_NO_METADATA, "");
	assert_int_equal(found.files, 3);
	/* An empty run being made is not a problem. */
	make_run(t, "r2", NULL, 0, NULL, 0, true);
	assert_int_equal(check(t, "r2", 0).total, 0);
}

static void test_index_stale(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = { { "a.txt", 5 }, { "b.txt", 3 }, { "c.txt", 4 } };
	struct found found;

	struct timespec long_ago[2] = { { 12345, 0 }, { 12345, 0 } };

	/* Never indexed. */
	make_run(t, "r1", three_files, 3, entries, 3, false);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_INDEX_STALE, "");
	/* Indexed, then metadata.json rewritten behind the index's back. */
	assert_int_equal(view_sync_run(&t->view, "r1", VIEW_SYNC_FORCE, NULL), 0);
	assert_int_equal(check(t, "r1", 0).total, 0);
	put_metadata(t->root, run_rel(TENANT, "r1", NULL).path, "r1", entries, 3);
	assert_int_equal(utimensat(AT_FDCWD, tree_rel("%s/%s", t->root, run_rel(TENANT, "r1",
				   NAMES_METADATA_FILE).path).path, long_ago, 0), 0);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_INDEX_STALE, "");
}

static void test_unparsable(void **state)
{
	struct tenant *t = *state;
	struct found found;

	make_run(t, "r1", three_files, 3, NULL, 0, true);
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path,
		 "{\"run_id\": \"r1\", \"arti");
	found = check(t, "r1", 0);
	assert_int_equal(found.count[CHECK_UNPARSABLE], 1);
	assert_int_equal(found.total, found.count[CHECK_UNPARSABLE] +
		found.count[CHECK_INDEX_STALE]);
}

/* The bytes of a landed file changed in place, size and mtime kept: only a read sees it. */
static void test_hash_mismatch(void **state)
{
	struct tenant *t = *state;
	struct check_repair_result result = { 0 };
	struct timespec times[2];
	struct found found;
	struct stat st;
	int fd;

	land_ok(t, "r1", "a.txt", "hello");
	land_ok(t, "r1", "b.txt", "abc");
	fd = open(tree_rel("%s/%s", t->root, run_rel(TENANT, "r1", "a.txt").path).path,
		  O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(pwrite(fd, "j", 1, 0), 1);
	times[0] = st.st_atim;
	times[1] = st.st_mtim;
	assert_int_equal(futimens(fd, times), 0);
	close(fd);

	assert_int_equal(check(t, "r1", 0).total, 0);
	found = check(t, "r1", CHECK_READ_DATA);
	assert_only(&found, CHECK_HASH_MISMATCH, "a.txt");
	assert_int_equal(found.bytes_hashed, 8);

	/* Not for a repair to judge: the bytes stay, and so does the problem. */
	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.added + result.folded + result.dropped + result.resized, 0);
	assert_file(t, "r1", "a.txt", "jello");
	found = check(t, "r1", CHECK_READ_DATA);
	assert_only(&found, CHECK_HASH_MISMATCH, "a.txt");
	assert_only_unrepairable(&found);
}

/* Every repairable problem at once, mended in one repair that deletes no data file. */
static void test_repair_mends_the_run(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = {
		{ "a.txt", 5 }, { "a.txt", 5 }, { "c.txt", 99 }, { "gone.txt", 7 },
	};
	struct check_repair_result result = { 0 };
	struct meta_run meta;
	struct found found;
	char *before, *after;

	make_run(t, "r1", three_files, 3, entries, 4, false);
	found = check(t, "r1", 0);
	assert_int_equal(found.total, 5);
	assert_int_equal(found.count[CHECK_MISSING_ENTRY], 1);
	assert_int_equal(found.count[CHECK_MISSING_FILE], 1);
	assert_int_equal(found.count[CHECK_DUPLICATE_ENTRY], 1);
	assert_int_equal(found.count[CHECK_SIZE_MISMATCH], 1);
	assert_int_equal(found.count[CHECK_INDEX_STALE], 1);

	/* Just written: within the grace, nothing is changed and the wait is said. */
	before = metadata_text(t, "r1");
	assert_true(check_repair_run(t->writer, "r1", 60000, CHECK_REPAIR_ALL, &result) > 0);
	after = metadata_text(t, "r1");
	assert_string_equal(after, before);
	free(before);
	free(after);
	assert_false(result.reindexed);

	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.added, 1);
	assert_int_equal(result.folded, 1);
	assert_int_equal(result.dropped, 1);
	assert_int_equal(result.resized, 1);
	assert_false(result.rebuilt);
	assert_true(result.reindexed);
	assert_int_equal(check(t, "r1", CHECK_READ_DATA).total, 0);

	assert_int_equal(read_metadata(t, TENANT, "r1", &meta), 0);
	assert_int_equal(meta.n_artifacts, 3);
	assert_int_equal(meta.n_duplicates, 0);
	assert_null(meta_find_artifact(&meta, "gone.txt"));
	assert_int_equal(meta_find_artifact(&meta, "c.txt")->size_bytes, 4);
	assert_string_equal(meta_find_artifact(&meta, "b.txt")->agent_id, "unknown");
	assert_int_equal(meta_find_artifact(&meta, "b.txt")->size_bytes, 3);
	meta_run_release(&meta);
	for (size_t i = 0; i < 3; i++)
		assert_file(t, "r1", three_files[i].name, three_files[i].content);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "r1", "b.txt", 0), 1);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "r1", "gone.txt", 0), 1);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "r1", "c.txt", 0), 1);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "r1", NULL, 0), 1);

	/* Mended: a second repair has nothing to do. */
	result = (struct check_repair_result){ 0 };
	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.added + result.folded + result.dropped + result.resized, 0);
}

/* Without CHECK_REPAIR_ALL only entries are added and duplicates folded. */
static void test_repair_without_all_only_adds(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = {
		{ "a.txt", 5 }, { "a.txt", 5 }, { "c.txt", 99 }, { "gone.txt", 7 },
	};
	struct check_repair_result result = { 0 };
	struct found found;

	make_run(t, "r1", three_files, 3, entries, 4, true);
	assert_int_equal(check_repair_run(t->writer, "r1", 0, 0, &result), 0);
	assert_int_equal(result.added, 1);
	assert_int_equal(result.folded, 1);
	assert_int_equal(result.dropped + result.resized, 0);
	found = check(t, "r1", 0);
	assert_int_equal(found.total, 2);
	assert_int_equal(found.count[CHECK_MISSING_FILE], 1);
	assert_int_equal(found.count[CHECK_SIZE_MISMATCH], 1);
}

/* A run with files and no metadata.json: nothing is made up, nothing deleted. */
static void test_repair_leaves_a_run_without_metadata(void **state)
{
	struct tenant *t = *state;
	struct check_repair_result result = { 0 };
	struct found found;

	make_run(t, "r1", three_files, 3, NULL, 0, true);
	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.added, 0);
	assert_false(result.rebuilt);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path));
	for (size_t i = 0; i < 3; i++)
		assert_file(t, "r1", three_files[i].name, three_files[i].content);
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_NO_METADATA, "");
	assert_only_unrepairable(&found);
}

/* The name of the kept broken copy, .metadata.json.broken-<seconds>, or "" when none. */
static struct tree_rel broken_copy(struct tenant *t, const char *run)
{
	struct tree_rel name = { "" };
	struct dirent *entry;
	DIR *dir = opendir(tree_rel("%s/%s", t->root, run_rel(TENANT, run, NULL).path).path);

	assert_non_null(dir);
	while ((entry = readdir(dir)))
		if (strncmp(entry->d_name, ".metadata.json.broken-", 22) == 0)
			name = tree_rel("%s", entry->d_name);
	closedir(dir);
	return name;
}

/*
 * An unparsable metadata.json is rebuilt once it has settled, the broken
 * one kept beside it.  Settled is judged by its ctime, which no call can
 * set back (utimensat() moves it to now), so the test waits
 * METAFILE_SETTLE_MS out.
 *
 * BUG (src/core/check.c, rebuild_metadata() with check_repair_run()):
 * the broken copy is kept by linkat(), which moves the file's ctime, so
 * metaedit_apply() finds metadata.json "changed since read" (-ESTALE),
 * reads it again, waits METAFILE_SETTLE_MS for the unparsable file to
 * settle once more and gives up with -EIO: the rebuild never lands, the
 * repair is audited as failed, and a .metadata.json.broken-* link is left
 * at every attempt.  Left failing.
 */
static void test_repair_rebuilds_unparsable_metadata(void **state)
{
	struct tenant *t = *state;
	static const char broken[] = "{\"run_id\": \"r1\", \"arti";
	struct check_repair_result result = { 0 };
	struct meta_run meta;
	struct tree_rel kept;
	char *text;

	make_run(t, "r1", three_files, 3, NULL, 0, true);
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path, broken);
	/* Half written, for all anyone knows: the repair says when to come back. */
	assert_true(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result) > 0);
	assert_false(result.rebuilt);
	assert_string_equal(broken_copy(t, "r1").path, "");

	nanosleep(&(struct timespec){ .tv_sec = METAFILE_SETTLE_MS / 1000,
				      .tv_nsec = (METAFILE_SETTLE_MS % 1000 + 100) * 1000000L },
		  NULL);
	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	kept = broken_copy(t, "r1");
	assert_string_not_equal(kept.path, "");
	text = tree_read(t->root, run_rel(TENANT, "r1", kept.path).path);
	assert_non_null(text);
	assert_string_equal(text, broken);
	free(text);
	assert_true(result.rebuilt);
	assert_int_equal(result.added, 3);
	assert_int_equal(read_metadata(t, TENANT, "r1", &meta), 0);
	assert_string_equal(meta.run_id, "r1");
	assert_int_equal(meta.n_artifacts, 3);
	meta_run_release(&meta);
	assert_int_equal(check(t, "r1", 0).total, 0);
	for (size_t i = 0; i < 3; i++)
		assert_file(t, "r1", three_files[i].name, three_files[i].content);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_clean_run, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_missing_entry, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_missing_file, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_entry, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_size_mismatch, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_no_metadata, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_index_stale, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_unparsable, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_hash_mismatch, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_repair_mends_the_run, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_repair_without_all_only_adds, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_repair_leaves_a_run_without_metadata,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_repair_rebuilds_unparsable_metadata,
						tenant_setup, tenant_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
