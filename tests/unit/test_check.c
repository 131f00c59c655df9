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
	size_t total, unrepairable;
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
		found.unrepairable += !p->repairable;
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

/* Every problem found is one check_repair_run() says it does not mend. */
static void assert_only_unrepairable(const struct found *found)
{
	assert_int_equal(found->unrepairable, found->total);
}

/* The tenant's run/metadata.json, malloc'd, or NULL. */
static char *metadata_text(struct tenant *t, const char *run)
{
	return tree_read(t->root, run_rel(TENANT, run, NAMES_METADATA_FILE).path);
}

/* How many entries the tenant's run dir holds. */
static size_t run_entries(struct tenant *t, const char *run)
{
	int fd = open(tree_rel("%s/%s", t->root, run_rel(TENANT, run, NULL).path).path,
		      O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	size_t n;

	assert_true(fd >= 0);
	n = count_entries(fd);
	close(fd);
	return n;
}

static const struct test_file three_files[] = {
	{ "a.txt", "hello" }, { "b.txt", "abc" }, { "c.txt", "four" },
};

/* A repair deleted no data file: run still holds three_files as they were. */
static void assert_files_kept(struct tenant *t, const char *run)
{
	for (size_t i = 0; i < 3; i++)
		assert_run_file(t, TENANT, run, three_files[i].name, three_files[i].content);
}

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

/*
 * A run of three_files whose metadata.json has entries, indexed: check_run()
 * finds exactly one problem, of kind, about file ("" for the run), and
 * says a repair mends it.
 */
static void assert_one_problem(struct tenant *t, const struct test_entry *entries, size_t n,
			       enum check_kind kind, const char *file)
{
	struct found found;

	make_run(t, "r1", three_files, 3, entries, n, true);
	found = check(t, "r1", 0);
	assert_only(&found, kind, file);
	assert_int_equal(found.unrepairable, 0);
	assert_int_equal(found.files, 3);
}

static void test_missing_entry(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = { { "a.txt", 5 }, { "c.txt", 4 } };

	/* A dot-file (a temporary, say) is not an artifact and wants no entry. */
	tree_put(t->root, run_rel(TENANT, "r1", ".a.txt.part").path, "hel");
	assert_one_problem(t, entries, 2, CHECK_MISSING_ENTRY, "b.txt");
}

static void test_missing_file(void **state)
{
	struct tenant *t = *state;
	struct check_repair_result result = { 0 };
	struct meta_run meta = { 0 };
	static const struct test_entry entries[] = {
		{ "a.txt", 5 }, { "b.txt", 3 }, { "c.txt", 4 }, { "gone.txt", 7 }, { ".env", 3 },
	};

	/* A dot-file the kernel-server gave an entry is no artifact, but it is there. */
	tree_put(t->root, run_rel(TENANT, "r1", ".env").path, "k=v");
	assert_one_problem(t, entries, 5, CHECK_MISSING_FILE, "gone.txt");
	check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result);
	assert_int_equal(result.dropped, 1);
	assert_int_equal(read_metadata(t, TENANT, "r1", &meta), 0);
	assert_int_equal(meta.n_artifacts, 4);
	assert_non_null(meta_find_artifact(&meta, ".env"));
	meta_run_release(&meta);
	assert_int_equal(check(t, "r1", 0).total, 0);
}

static void test_duplicate_entry(void **state)
{
	static const struct test_entry entries[] = {
		{ "a.txt", 5 }, { "b.txt", 3 }, { "a.txt", 5 }, { "c.txt", 4 },
	};

	assert_one_problem(*state, entries, 4, CHECK_DUPLICATE_ENTRY, "");
}

static void test_size_mismatch(void **state)
{
	static const struct test_entry entries[] = { { "a.txt", 5 }, { "b.txt", 3 }, { "c.txt", 99 } };

	assert_one_problem(*state, entries, 3, CHECK_SIZE_MISMATCH, "c.txt");
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
	struct timespec long_ago[2] = { { 12345, 0 }, { 12345, 0 } };
	struct found found;

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

/* JSON that breaks the schema: reported, and nothing found beside it is for a repair. */
static void test_schema(void **state)
{
	struct tenant *t = *state;
	static const char schema[] = "{\"run_id\": 42, \"artifacts\": [{\"filename\": \"a.txt\"}]}";
	struct check_repair_result result = { 0 };
	struct found found;
	char *text;

	make_run(t, "r1", three_files, 3, NULL, 0, false);
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path, schema);
	assert_int_equal(view_sync_run(&t->view, "r1", VIEW_SYNC_FORCE, NULL), 0);
	found = check(t, "r1", 0);
	assert_int_equal(found.count[CHECK_SCHEMA], 1);
	assert_int_equal(found.count[CHECK_MISSING_ENTRY], 2);
	assert_int_equal(found.total, 3);
	assert_only_unrepairable(&found);

	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.added + result.rebuilt, 0);
	text = metadata_text(t, "r1");
	assert_string_equal(text, schema);
	free(text);
}

static void test_unparsable(void **state)
{
	struct tenant *t = *state;
	struct found found;

	make_run(t, "r1", three_files, 3, NULL, 0, true);
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path,
		 "{\"run_id\": \"r1\", \"arti");
	/* Caught just written, it may be half written: a problem all the same. */
	found = check(t, "r1", 0);
	assert_int_equal(found.count[CHECK_UNPARSABLE], 1);
	assert_int_equal(found.count[CHECK_INDEX_STALE], 1);
	assert_int_equal(found.total, 2);
	assert_int_equal(found.unrepairable, 0);
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
	assert_run_file(t, TENANT, "r1", "a.txt", "jello");
	found = check(t, "r1", CHECK_READ_DATA);
	assert_only(&found, CHECK_HASH_MISMATCH, "a.txt");
	assert_only_unrepairable(&found);
}

/*
 * Entries for three_files with every problem a repair mends: a.txt twice,
 * none for b.txt, a wrong size for c.txt, one for a file that is gone.
 */
static const struct test_entry mendable[] = {
	{ "a.txt", 5 }, { "a.txt", 5 }, { "c.txt", 99 }, { "gone.txt", 7 },
};

/* Every repairable problem at once, mended in one repair that deletes no data file. */
static void test_repair_mends_the_run(void **state)
{
	struct tenant *t = *state;
	struct check_repair_result result = { 0 };
	struct meta_run meta;
	struct found found;
	char *before, *after;

	make_run(t, "r1", three_files, 3, mendable, 4, false);
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
	assert_int_equal(result.added + result.folded + result.dropped + result.resized, 0);
	assert_false(result.reindexed);

	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.added, 1);
	assert_int_equal(result.folded, 1);
	assert_int_equal(result.dropped, 1);
	assert_int_equal(result.resized, 1);
	assert_int_equal(result.rebuilt, 0);
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
	assert_files_kept(t, "r1");
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
	struct check_repair_result result = { 0 };
	struct found found;

	make_run(t, "r1", three_files, 3, mendable, 4, true);
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
	assert_int_equal(result.rebuilt, 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path));
	assert_files_kept(t, "r1");
	found = check(t, "r1", 0);
	assert_only(&found, CHECK_NO_METADATA, "");
	assert_only_unrepairable(&found);
}

/*
 * Waits until a metadata.json written now counts as settled, not half
 * written.  That is judged by its ctime, which no call can set back
 * (utimensat() moves it to now), so the wait is METAFILE_SETTLE_MS.
 */
static void wait_until_settled(void)
{
	nanosleep(&(struct timespec){ .tv_sec = METAFILE_SETTLE_MS / 1000,
				      .tv_nsec = (METAFILE_SETTLE_MS % 1000 + 100) * 1000000L },
		  NULL);
}

/*
 * The kept copy of the run's broken metadata.json, relative to the root
 * (STORE/.artifactfs/repairs/<client>/<run>.metadata.json.<seconds>), or
 * "" when there is none.
 */
static struct tree_rel broken_copy(struct tenant *t, const char *run)
{
	struct tree_rel dir = tree_rel("%s/repairs/%s", STORE_PRIVATE_DIR, TENANT);
	struct tree_rel prefix = tree_rel("%s.%s.", run, NAMES_METADATA_FILE);
	struct tree_rel name = { "" };
	struct dirent *entry;
	DIR *d = opendir(tree_rel("%s/%s", t->root, dir.path).path);

	while (d && (entry = readdir(d)))
		if (strncmp(entry->d_name, prefix.path, strlen(prefix.path)) == 0)
			name = tree_rel("%s/%s", dir.path, entry->d_name);
	if (d)
		closedir(d);
	return name;
}

/*
 * An unparsable metadata.json is rebuilt once it has settled, from the
 * files and what the index last had of the run, and a copy of the broken
 * one is kept out of the tenant's sight.
 */
static void test_repair_rebuilds_unparsable_metadata(void **state)
{
	struct tenant *t = *state;
	static const char broken[] = "{\"run_id\": \"r1\", \"arti";
	static const struct test_entry entries[] = { { "a.txt", 5 } };
	struct check_repair_result result = { 0 };
	struct meta_run meta;
	struct tree_rel kept;
	char *text;

	/* The index knows the run's fields from an earlier, good metadata.json. */
	make_run(t, "r1", three_files, 3, entries, 1, true);
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path, broken);
	/* Half written, for all anyone knows: the repair says when to come back. */
	assert_true(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result) > 0);
	assert_int_equal(result.rebuilt, 0);
	assert_string_equal(broken_copy(t, "r1").path, "");
	text = tree_read(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path);
	assert_string_equal(text, broken);
	free(text);

	wait_until_settled();
	assert_int_equal(check(t, "r1", 0).count[CHECK_UNPARSABLE], 1);
	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.rebuilt, 1);
	assert_int_equal(result.added, 3);
	assert_int_equal(result.error, 0);
	assert_true(result.reindexed);
	kept = broken_copy(t, "r1");
	assert_string_not_equal(kept.path, "");
	text = tree_read(t->root, kept.path);
	assert_non_null(text);
	assert_string_equal(text, broken);
	free(text);
	assert_int_equal(read_metadata(t, TENANT, "r1", &meta), 0);
	assert_string_equal(meta.run_id, "r1");
	assert_string_equal(meta.workflow_id, "wf-kernel");
	assert_int_equal(meta.n_artifacts, 3);
	meta_run_release(&meta);
	/* Nothing is left in the run but its files and the new metadata.json. */
	assert_int_equal(run_entries(t, "r1"), 4);
	assert_int_equal(check(t, "r1", 0).total, 0);
	assert_files_kept(t, "r1");
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "r1", NULL, 0), 1);
}

/*
 * The rebuilt metadata.json of a run with no data file has no entry to
 * add, yet it must be written (it once was not, while the run was
 * audited as rebuilt and every repair kept one more copy of the broken
 * file).
 */
static void test_repair_rebuilds_unparsable_metadata_of_an_empty_run(void **state)
{
	struct tenant *t = *state;
	struct check_repair_result result = { 0 };
	struct meta_run meta;

	make_run(t, "r1", NULL, 0, NULL, 0, true);
	tree_put(t->root, run_rel(TENANT, "r1", NAMES_METADATA_FILE).path, "{\"run_id\": \"r");
	wait_until_settled();
	assert_int_equal(check_repair_run(t->writer, "r1", 0, CHECK_REPAIR_ALL, &result), 0);
	assert_int_equal(result.rebuilt, 1);
	assert_int_equal(read_metadata(t, TENANT, "r1", &meta), 0);
	assert_string_equal(meta.run_id, "r1");
	assert_int_equal(meta.n_artifacts, 0);
	meta_run_release(&meta);
	assert_int_equal(check(t, "r1", 0).total, 0);
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
		cmocka_unit_test_setup_teardown(test_schema, tenant_setup, tenant_teardown),
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
		cmocka_unit_test_setup_teardown(
			test_repair_rebuilds_unparsable_metadata_of_an_empty_run,
			tenant_setup, tenant_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
