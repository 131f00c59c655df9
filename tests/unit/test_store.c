/*
 * test_store.c - the store's containment and layout (src/core/store.c)
 * over a real store in a temporary directory: ids that would make a path
 * elsewhere, symlinks and FIFOs planted in the store, the tenant and run
 * walks, and the tree removal and copies the writers build on.
 */
#include "test_tenant.h"

#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

/* Ids that name no directory of the layout: each would make another path. */
static const char *const bad_ids[] = { "..", ".", "", "a/b", "../bob", "a\nb" };

static void test_invalid_ids_are_refused(void **state)
{
	struct tenant *t = *state;
	int fd;

	/* Directories those ids would reach if they were used as they are. */
	tree_mkdir(t->root, "artifacts/a/b/metadata.json");
	tree_mkdir(t->root, "artifacts/bob/r1");
	tree_mkdir(t->root, "artifacts/alice/r1");
	tree_mkdir(t->root, "sessions/a/b/output");
	for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		const char *id = bad_ids[i];

		assert_int_equal(store_open_tenant(&t->store, id, O_PATH), -EINVAL);
		assert_int_equal(store_open_run(&t->store, id, "r1", O_PATH), -EINVAL);
		assert_int_equal(store_open_run(&t->store, TENANT, id, O_PATH), -EINVAL);
		assert_int_equal(store_open_legacy_run(&t->store, id, O_PATH), -EINVAL);
		assert_int_equal(store_open_session_output(&t->store, id, O_PATH), -EINVAL);
		assert_int_equal(store_make_run(&t->store, id, "r1"), -EINVAL);
		assert_int_equal(store_make_run(&t->store, TENANT, id), -EINVAL);
	}
	/* The same calls with valid ids do open. */
	fd = store_open_run(&t->store, TENANT, "r1", O_PATH);
	assert_true(fd >= 0);
	close(fd);
}

static void test_symlinked_tenant_or_run_is_never_followed(void **state)
{
	struct tenant *t = *state;
	int fd;

	tree_mkdir(t->root, "artifacts/bob/r1");
	put_metadata(t->root, "artifacts/old", "old", NULL, 0);
	tree_mkdir(t->root, "sessions/s1/output");
	tree_symlink("bob", t->root, "artifacts/alice");
	tree_symlink("../bob/r1", t->root, "artifacts/carol/stolen");
	tree_symlink(t->root, t->root, "artifacts/dave/absolute");
	tree_symlink("old", t->root, "artifacts/oldlink");
	tree_symlink("s1", t->root, "sessions/s2");

	assert_int_equal(store_open_tenant(&t->store, "alice", O_PATH), -ELOOP);
	assert_int_equal(store_open_tenant(&t->store, "alice", O_RDONLY), -ELOOP);
	assert_int_equal(store_open_run(&t->store, "alice", "r1", O_PATH), -ELOOP);
	assert_int_equal(store_open_run(&t->store, "carol", "stolen", O_PATH), -ELOOP);
	assert_int_equal(store_open_run(&t->store, "dave", "absolute", O_RDONLY), -ELOOP);
	assert_int_equal(store_open_legacy_run(&t->store, "oldlink", O_PATH), -ELOOP);
	assert_int_equal(store_open_session_output(&t->store, "s2", O_PATH), -ELOOP);
	/* Making a run does not go through a symlinked tenant either. */
	fd = store_make_run(&t->store, "alice", "new");
	assert_true(fd == -ENOTDIR || fd == -ELOOP);
	assert_false(tree_exists(t->root, "artifacts/bob/new"));
	/* What the links point to opens by its own name. */
	fd = store_open_run(&t->store, "bob", "r1", O_PATH);
	assert_true(fd >= 0);
	close(fd);
	fd = store_open_session_output(&t->store, "s1", O_RDONLY);
	assert_true(fd >= 0);
	close(fd);
}

/* What openat2() with RESOLVE_BENEATH answers a walk out of its directory. */
static void assert_escape_refused(int ret)
{
	if (ret >= 0)
		close(ret);
	assert_true(ret == -EXDEV || ret == -EACCES || ret == -ELOOP);
}

static void test_open_beneath_stays_beneath(void **state)
{
	struct tenant *t = *state;
	int tenant_fd, fd;

	tree_put(t->root, "artifacts/alice/r1/a.txt", "hello");
	tree_put(t->root, "artifacts/bob/r1/b.txt", "bob's");
	tree_symlink("../../bob/r1/b.txt", t->root, "artifacts/alice/r1/link");
	tenant_fd = store_open_tenant(&t->store, TENANT, O_RDONLY);
	assert_true(tenant_fd >= 0);

	assert_escape_refused(store_open_beneath(tenant_fd, "..", O_PATH, 0));
	assert_escape_refused(store_open_beneath(tenant_fd, "../bob/r1/b.txt", O_RDONLY, 0));
	assert_escape_refused(store_open_beneath(tenant_fd, "r1/../../bob", O_PATH, 0));
	assert_escape_refused(store_open_beneath(tenant_fd, "/etc/passwd", O_RDONLY, 0));
	assert_escape_refused(store_open_beneath(tenant_fd, t->root, O_PATH, 0));
	assert_escape_refused(store_open_beneath(t->store.root_fd, "..", O_PATH, 0));
	/* A symlink, even one that would stay in the store, is not crossed. */
	assert_int_equal(store_open_beneath(tenant_fd, "r1/link", O_RDONLY, 0), -ELOOP);
	/* Nor is anything created through an escape. */
	assert_escape_refused(store_open_beneath(tenant_fd, "../bob/r1/new",
						 O_WRONLY | O_CREAT, 0644));
	assert_false(tree_exists(t->root, "artifacts/bob/r1/new"));
	/* A walk that stays below the directory is fine, ".." included. */
	fd = store_open_beneath(tenant_fd, "r1/../r1/a.txt", O_RDONLY, 0);
	assert_true(fd >= 0);
	close(fd);
	close(tenant_fd);
}

static void test_open_regular_refuses_fifo_and_symlink(void **state)
{
	struct tenant *t = *state;
	struct stat st;
	char *buf = NULL;
	size_t len;
	int run_fd, fd;

	tree_put(t->root, "artifacts/alice/r1/a.txt", "hello");
	tree_mkdir(t->root, "artifacts/alice/r1/sub");
	tree_symlink("a.txt", t->root, "artifacts/alice/r1/link");
	assert_int_equal(mkfifo(tree_rel("%s/artifacts/alice/r1/pipe", t->root).path, 0644), 0);
	run_fd = store_open_run(&t->store, TENANT, "r1", O_PATH);
	assert_true(run_fd >= 0);

	/*
	 * Opening the FIFO for reading would block until a writer came: never
	 * done (the alarm ends the program if it is).
	 */
	alarm(10);
	assert_int_equal(store_open_regular(run_fd, "pipe", O_RDONLY, &st), -EINVAL);
	assert_int_equal(store_read_file(run_fd, "pipe", 100, &buf, &len, &st), -EINVAL);
	alarm(0);
	assert_int_equal(store_open_regular(run_fd, "link", O_RDONLY, &st), -ELOOP);
	assert_int_equal(store_read_file(run_fd, "link", 100, &buf, &len, &st), -ELOOP);
	assert_int_equal(store_open_regular(run_fd, "sub", O_RDONLY, &st), -EINVAL);
	assert_int_equal(store_open_regular(run_fd, "missing", O_RDONLY, &st), -ENOENT);
	assert_null(buf);

	fd = store_open_regular(run_fd, "a.txt", O_RDONLY, &st);
	assert_true(fd >= 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, 5);
	close(fd);
	assert_int_equal(store_read_file(run_fd, "a.txt", 100, &buf, &len, &st), 0);
	assert_int_equal(len, 5);
	assert_string_equal(buf, "hello");
	free(buf);
	assert_int_equal(store_read_file(run_fd, "a.txt", 4, &buf, &len, &st), -EFBIG);
	close(run_fd);
}

static void test_legacy_run_has_its_own_metadata(void **state)
{
	struct tenant *t = *state;
	int fd;

	put_metadata(t->root, "artifacts/old", "old", NULL, 0);
	tree_put(t->root, "artifacts/old/a.txt", "hello");
	tree_put(t->root, "artifacts/alice/r1/metadata.json", "{}");

	fd = store_open_legacy_run(&t->store, "old", O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(faccessat(fd, "a.txt", F_OK, AT_SYMLINK_NOFOLLOW), 0);
	close(fd);
	/* A tenant's area holds runs, not a metadata.json of its own. */
	assert_int_equal(store_open_legacy_run(&t->store, TENANT, O_PATH), -ENOENT);
	assert_int_equal(store_open_legacy_run(&t->store, "missing", O_PATH), -ENOENT);
}

static void test_make_run_makes_and_reuses(void **state)
{
	struct tenant *t = *state;
	struct stat made, again;
	int fd;

	assert_false(tree_exists(t->root, STORE_ARTIFACTS_DIR));
	fd = store_make_run(&t->store, TENANT, "r1");
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &made), 0);
	assert_true(S_ISDIR(made.st_mode));
	close(fd);
	assert_int_equal(tree_mode(t->root, "artifacts/alice/r1"), 0755);
	assert_int_equal(tree_mode(t->root, "artifacts/alice"), 0755);
	tree_put(t->root, "artifacts/alice/r1/a.txt", "hello");

	fd = store_make_run(&t->store, TENANT, "r1");
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &again), 0);
	close(fd);
	assert_int_equal(again.st_ino, made.st_ino);
	assert_true(tree_exists(t->root, "artifacts/alice/r1/a.txt"));
	/* Something else under the name is not replaced. */
	tree_put(t->root, "artifacts/alice/plain", "not a run");
	assert_int_equal(store_make_run(&t->store, TENANT, "plain"), -ENOTDIR);
}

/* The names a store_for_each_*() walk gave, in order; it stops at stop_at. */
struct walk {
	char names[16][NAMES_ID_MAX + 1];
	size_t count;
	const char *stop_at;
};

static int collect(void *ctx, const char *name)
{
	struct walk *w = ctx;

	assert_true(w->count < 16);
	snprintf(w->names[w->count++], sizeof(w->names[0]), "%s", name);
	return w->stop_at && strcmp(name, w->stop_at) == 0 ? 7 : 0;
}

static void assert_walked(const struct walk *w, const char *const *expected, size_t n)
{
	assert_int_equal(w->count, n);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(w->names[i], expected[i]);
}

static void test_for_each_tenant(void **state)
{
	struct tenant *t = *state;
	static const char *const tenants[] = { "alice", "bob", "carol" };
	struct walk w = { 0 };

	/* No artifacts/ at all: nothing, and no error. */
	assert_int_equal(store_for_each_tenant(&t->store, collect, &w), 0);
	assert_int_equal(w.count, 0);

	tree_mkdir(t->root, "artifacts/carol");
	tree_mkdir(t->root, "artifacts/alice/r1");
	tree_mkdir(t->root, "artifacts/bob");
	put_metadata(t->root, "artifacts/legacy", "legacy", NULL, 0);
	tree_symlink("alice", t->root, "artifacts/link");
	tree_put(t->root, "artifacts/file", "not a tenant");
	tree_mkdir(t->root, "artifacts/bad name");
	tree_mkdir(t->root, "artifacts/a+b");
	assert_int_equal(store_for_each_tenant(&t->store, collect, &w), 0);
	assert_walked(&w, tenants, 3);

	/* fn's non-zero stops the walk and is returned. */
	w = (struct walk){ .stop_at = "bob" };
	assert_int_equal(store_for_each_tenant(&t->store, collect, &w), 7);
	assert_walked(&w, tenants, 2);
}

static void test_for_each_run(void **state)
{
	struct tenant *t = *state;
	static const char *const runs[] = { "r1", "r2", "r3" };
	struct walk w = { 0 };

	assert_int_equal(store_for_each_run(&t->store, TENANT, collect, &w), 0);
	assert_int_equal(w.count, 0);
	assert_int_equal(store_for_each_run(&t->store, "..", collect, &w), -EINVAL);

	tree_mkdir(t->root, "artifacts/alice/r3");
	tree_mkdir(t->root, "artifacts/alice/r1");
	tree_put(t->root, "artifacts/alice/r2/a.txt", "hello");
	tree_mkdir(t->root, "artifacts/bob/r4");
	tree_symlink("../bob/r4", t->root, "artifacts/alice/link");
	tree_put(t->root, "artifacts/alice/file.txt", "not a run");
	tree_mkdir(t->root, "artifacts/alice/bad name");
	assert_int_equal(store_for_each_run(&t->store, TENANT, collect, &w), 0);
	assert_walked(&w, runs, 3);

	w = (struct walk){ .stop_at = "r1" };
	assert_int_equal(store_for_each_run(&t->store, TENANT, collect, &w), 7);
	assert_walked(&w, runs, 1);
	/* A symlinked tenant area is not walked. */
	tree_symlink("alice", t->root, "artifacts/mallory");
	w = (struct walk){ 0 };
	assert_int_equal(store_for_each_run(&t->store, "mallory", collect, &w), -ELOOP);
	assert_int_equal(w.count, 0);
}

static void test_remove_tree_follows_no_symlink(void **state)
{
	struct tenant *t = *state;
	char *kept;
	int tenant_fd;

	tree_put(t->root, "outside/keep.txt", "keep me");
	tree_put(t->root, "artifacts/alice/r1/a.txt", "hello");
	tree_put(t->root, "artifacts/alice/r1/sub/deeper/b.txt", "deep");
	tree_mkdir(t->root, "artifacts/alice/r1/sub/empty");
	tree_symlink(tree_rel("%s/outside/keep.txt", t->root).path, t->root,
		     "artifacts/alice/r1/sub/to-file");
	tree_symlink("../../../../outside", t->root, "artifacts/alice/r1/sub/to-dir");
	tree_symlink("../../outside", t->root, "artifacts/alice/to-dir");
	tenant_fd = store_open_tenant(&t->store, TENANT, O_RDONLY);
	assert_true(tenant_fd >= 0);

	assert_int_equal(store_remove_tree(tenant_fd, "r1"), 0);
	assert_false(tree_exists(t->root, "artifacts/alice/r1"));
	/* A symlink of its own is removed, not what it points to. */
	assert_int_equal(store_remove_tree(tenant_fd, "to-dir"), 0);
	assert_false(tree_exists(t->root, "artifacts/alice/to-dir"));
	kept = tree_read(t->root, "outside/keep.txt");
	assert_non_null(kept);
	assert_string_equal(kept, "keep me");
	free(kept);
	assert_int_equal(store_remove_tree(tenant_fd, "r1"), -ENOENT);
	close(tenant_fd);
}

/*
 * The placement hint sets chattr's +T where the file system keeps it (the
 * ext4 these tests run on), again without harm, and is refused with an
 * errno, not ignored, where it means nothing (a memfd's tmpfs file).
 */
static void test_spread_subdirs_sets_the_hint(void **state)
{
	struct tenant *t = *state;
	int dir_fd, memfd, flags = 0, ret;

	dir_fd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dir_fd >= 0);
	if (ioctl(dir_fd, FS_IOC_GETFLAGS, &flags) < 0) {
		print_message("spread: %s keeps no inode flags (%s), nothing to check\n", t->root,
			      strerror(errno));
		close(dir_fd);
		return;
	}
	assert_false(flags & FS_TOPDIR_FL);
	assert_int_equal(store_spread_subdirs(dir_fd), 0);
	assert_int_equal(ioctl(dir_fd, FS_IOC_GETFLAGS, &flags), 0);
	assert_true(flags & FS_TOPDIR_FL);
	assert_int_equal(store_spread_subdirs(dir_fd), 0);
	close(dir_fd);

	memfd = memfd_create("test_store", MFD_CLOEXEC);
	assert_true(memfd >= 0);
	ret = store_spread_subdirs(memfd);
	assert_true(ret < 0);
	close(memfd);
}

/*
 * A directory with nothing to walk (an empty tenant area; an artifacts/
 * of legacy runs only, as landing_migrate_legacy() walks it) calls fn
 * never and is no error (it once passed NULL to qsort(), which UBSan
 * aborts on).  Last in the list, as an abort would end the program.
 */
static void test_walk_with_nothing_to_walk(void **state)
{
	struct tenant *t = *state;
	struct walk w = { 0 };

	put_metadata(t->root, "artifacts/legacy", "legacy", NULL, 0);
	tree_put(t->root, "artifacts/file", "not a tenant");
	assert_int_equal(store_for_each_tenant(&t->store, collect, &w), 0);
	assert_int_equal(w.count, 0);
	tree_put(t->root, "artifacts/alice/file.txt", "not a run");
	assert_int_equal(store_for_each_run(&t->store, TENANT, collect, &w), 0);
	assert_int_equal(w.count, 0);
}

/*
 * Copies src with store_copy_range(), up to limit, into a new file of the
 * store: the first expected bytes of data must land, and be reported.
 */
static void assert_copies(struct tenant *t, int src, uint64_t limit, const char *data,
			  size_t expected)
{
	uint64_t copied = 0;
	char *copy;
	int dst;

	dst = open(tree_rel("%s/copy", t->root).path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
		   0600);
	assert_true(dst >= 0);
	assert_int_equal(store_copy_range(src, dst, limit, &copied), 0);
	close(dst);
	assert_int_equal(copied, expected);
	copy = tree_read(t->root, "copy");
	assert_non_null(copy);
	assert_int_equal(strlen(copy), expected);
	assert_memory_equal(copy, data, expected);
	free(copy);
}

/* size bytes of text that is not the same from one block to the next. */
static char *make_pattern(size_t size)
{
	char *data = malloc(size + 1);

	assert_non_null(data);
	for (size_t i = 0; i < size; i++)
		data[i] = (char)('a' + (i * 7 + i / 4096) % 26);
	data[size] = '\0';
	return data;
}

/*
 * The change log: a line per change, appended; past STORE_CHANGES_MAX
 * bytes it goes to log.old, ending with the change that filled it, and
 * the next change starts a new log.
 */
static void test_change_log(void **state)
{
	struct tenant *t = *state;
	struct tree_rel log = tree_rel("%s/%s/alice/%s", STORE_PRIVATE_DIR, STORE_CHANGES_AREA,
				       STORE_CHANGES_LOG);
	struct tree_rel old = tree_rel("%s/%s/alice/%s", STORE_PRIVATE_DIR, STORE_CHANGES_AREA,
				       STORE_CHANGES_OLD);
	char *text, *padding, tail[4] = "";
	struct stat st;
	int fd;

	assert_int_equal(store_open_changes(&t->store, "alice"), -ENOENT);
	store_note_change(&t->store, "alice", "r1");
	store_note_change(&t->store, "alice", "r2");
	text = tree_read(t->root, log.path);
	assert_string_equal(text, "r1\nr2\n");
	free(text);
	fd = store_open_changes(&t->store, "alice");
	assert_true(fd >= 0);
	close(fd);

	padding = malloc(STORE_CHANGES_MAX);
	assert_non_null(padding);
	memset(padding, 'x', STORE_CHANGES_MAX - 1);
	padding[STORE_CHANGES_MAX - 1] = '\n';
	fd = open(tree_rel("%s/%s", t->root, log.path).path, O_WRONLY | O_APPEND | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(store_write_all(fd, padding, STORE_CHANGES_MAX), 0);
	close(fd);
	free(padding);
	store_note_change(&t->store, "alice", "r3");
	assert_false(tree_exists(t->root, log.path));
	fd = open(tree_rel("%s/%s", t->root, old.path).path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, 6 + STORE_CHANGES_MAX + 3);
	assert_int_equal(pread(fd, tail, 3, st.st_size - 3), 3);
	assert_string_equal(tail, "r3\n");
	close(fd);
	store_note_change(&t->store, "alice", "r4");
	text = tree_read(t->root, log.path);
	assert_string_equal(text, "r4\n");
	free(text);
}

/* What an OFD lock of type on the whole of fd's file would meet: F_UNLCK when nothing. */
static short probe_lock(int fd, short type)
{
	struct flock probe = { .l_type = type, .l_whence = SEEK_SET };

	assert_int_equal(fcntl(fd, F_OFD_GETLK, &probe), 0);
	return probe.l_type;
}

/*
 * Run locks are OFD locks: two takers in one process exclude each other
 * (each call opens its own file description), shared takers share, and
 * different runs do not wait for each other.
 */
static void test_run_locks(void **state)
{
	struct tenant *t = *state;
	int exclusive, shared, other, second_shared, probe_fd;

	exclusive = store_lock_run(&t->store, "alice", "r1", true);
	assert_true(exclusive >= 0);
	/* Another run, and the same run id of another tenant, are free. */
	other = store_lock_run(&t->store, "alice", "r2", true);
	assert_true(other >= 0);
	store_unlock(other);
	other = store_lock_run(&t->store, "bob", "r1", true);
	assert_true(other >= 0);
	store_unlock(other);
	/* Seen from another file description of this process: held, then free. */
	probe_fd = open(tree_rel("%s/.artifactfs/locks/runs", t->root).path, O_RDWR | O_CLOEXEC);
	assert_true(probe_fd >= 0);
	assert_int_equal(probe_lock(probe_fd, F_RDLCK), F_WRLCK);
	store_unlock(exclusive);
	assert_int_equal(probe_lock(probe_fd, F_WRLCK), F_UNLCK);

	shared = store_lock_run(&t->store, "alice", "r1", false);
	second_shared = store_lock_run(&t->store, "alice", "r1", false);
	assert_true(shared >= 0 && second_shared >= 0);
	assert_int_equal(probe_lock(probe_fd, F_RDLCK), F_UNLCK);	/* readers share */
	assert_int_equal(probe_lock(probe_fd, F_WRLCK), F_RDLCK);
	store_unlock(shared);
	store_unlock(second_shared);
	store_unlock(-1);	/* a no-op */
	assert_int_equal(probe_lock(probe_fd, F_WRLCK), F_UNLCK);
	close(probe_fd);
}

static void test_copy_range_copies_and_reports_size(void **state)
{
	struct tenant *t = *state;
	size_t size = (1 << 20) - 100;	/* tree_read() reads up to 1 MiB */
	char *data = make_pattern(size);
	int src = make_source(t, data);

	assert_copies(t, src, UINT64_MAX, data, size);
	assert_copies(t, src, 4099, data, 4099);
	assert_copies(t, src, 0, data, 0);
	/* The source shrank below the limit a quota was checked against. */
	assert_int_equal(ftruncate(src, 10), 0);
	assert_copies(t, src, size, data, 10);
	close(src);
	free(data);
}

/*
 * copy_file_range() between file systems of different types fails with
 * EXDEV (Linux >= 5.19): store_copy_range() then reads and writes, so
 * artifactctl promote copies a file from a tmpfs /tmp.  A memfd is always
 * on the kernel's internal tmpfs.
 */
static void test_copy_range_from_another_file_system(void **state)
{
	struct tenant *t = *state;
	static const char data[] = "bytes from a memfd";
	int src = memfd_create("test_store", MFD_CLOEXEC);

	assert_true(src >= 0);
	assert_int_equal(store_write_all(src, data, strlen(data)), 0);
	assert_copies(t, src, UINT64_MAX, data, strlen(data));
	close(src);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_run_locks, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_change_log, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_invalid_ids_are_refused, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_symlinked_tenant_or_run_is_never_followed,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_open_beneath_stays_beneath, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_open_regular_refuses_fifo_and_symlink,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_legacy_run_has_its_own_metadata, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_make_run_makes_and_reuses, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_for_each_tenant, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_for_each_run, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_remove_tree_follows_no_symlink, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_copy_range_copies_and_reports_size,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_copy_range_from_another_file_system,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_spread_subdirs_sets_the_hint, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_walk_with_nothing_to_walk, tenant_setup,
						tenant_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
