/*
 * test_landing.c - landing files into a tenant's run (src/core/landing.c
 * with src/core/writer.c) over a real store in a temporary directory:
 * what lands where, who may land in a run, renames, what a crash leaves
 * and how landing_recover() finishes it, and moving legacy runs.
 */
#include "test_tenant.h"

#include <pthread.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/xattr.h>

#include "seal.h"

/* A staging instance of the tenant, relative to the root. */
static struct tree_rel instance_rel(const char *instance)
{
	return tree_rel("%s/%s/%s", WRITER_STAGING_DIR, TENANT, instance);
}

/*
 * Leaves a staging instance as a writer that died leaves it: work/intent.1
 * holding intent (a JSON document as landing.c writes it), no flock held.
 */
static void make_dead_instance(struct tenant *t, const char *instance, const char *intent)
{
	tree_put(t->root, tree_rel("%s/work/intent.1", instance_rel(instance).path).path, intent);
}

/* A landing intent, as landing_intent() and write_intent() in landing.c make it. */
static struct tree_rel intent_json(const char *run, const char *name, const char *sha256,
				   size_t size)
{
	return tree_rel("{\"run\":\"%s\",\"name\":\"%s\",\"agent_id\":\"agent-9\","
			"\"workflow_id\":\"wf-9\",\"user_directive\":\"\",\"sha256\":\"%s\","
			"\"generated_at\":\"%s\",\"size\":%zu}",
			run, name, sha256, TEST_GENERATED_AT, size);
}

/* What the tenant's run/metadata.json says of name. */
struct entry_seen {
	size_t entries;		/* in the file, all names */
	bool found;
	char agent_id[64];
	char content_type[64];
	char generated_at[META_TIME_SIZE];
	uint64_t size;
};

static struct entry_seen entry_of(struct tenant *t, const char *run, const char *name)
{
	struct entry_seen seen = { 0 };
	struct meta_run meta;
	const struct meta_artifact *a;

	assert_int_equal(read_metadata(t, TENANT, run, &meta), 0);
	seen.entries = meta.n_artifacts;
	a = meta_find_artifact(&meta, name);
	if (a) {
		seen.found = true;
		snprintf(seen.agent_id, sizeof(seen.agent_id), "%s", a->agent_id);
		snprintf(seen.content_type, sizeof(seen.content_type), "%s", a->content_type);
		snprintf(seen.generated_at, sizeof(seen.generated_at), "%s", a->generated_at);
		seen.size = a->size_bytes;
	}
	meta_run_release(&meta);
	return seen;
}

/*
 * The tenant's run/metadata.json holds entries entries, one of them for
 * name, from agent, of size bytes.  Returns what it says of name.
 */
static struct entry_seen assert_entry(struct tenant *t, const char *run, const char *name,
				      const char *agent, uint64_t size, size_t entries)
{
	struct entry_seen entry = entry_of(t, run, name);

	assert_true(entry.found);
	assert_int_equal(entry.entries, entries);
	assert_string_equal(entry.agent_id, agent);
	assert_int_equal(entry.size, size);
	return entry;
}

static void test_land_file(void **state)
{
	struct tenant *t = *state;
	struct landing l = {
		.run = "r1", .name = "a.txt", .agent_id = "agent-1",
		.workflow_id = "wf-1", .user_directive = "make it so",
		.generated_at = TEST_GENERATED_AT,
	};
	char staged[64], reason[AUDIT_REASON_SIZE] = "";
	struct meta_run meta;
	struct entry_seen entry;
	struct indexed row;
	char *owner = NULL;
	int src = make_source(t, "hello");

	assert_int_equal(landing_stage_copy(t->writer, src, UINT64_MAX, staged, &l, reason), 0);
	close(src);
	assert_int_equal(l.size, 5);
	assert_string_equal(l.sha256, HELLO_SHA256);
	assert_int_equal(faccessat(t->writer->work_fd, staged, F_OK, AT_SYMLINK_NOFOLLOW), 0);

	assert_int_equal(landing_land_file(t->writer, t->writer->work_fd, staged, &l, reason), 0);
	assert_run_file(t, TENANT, "r1", "a.txt", "hello");
	assert_int_equal(tree_mode(t->root, run_rel(TENANT, "r1", "a.txt").path), 0644);
	/* The staged copy moved, and no intent is left behind. */
	assert_int_equal(count_entries(t->writer->work_fd), 0);

	assert_int_equal(read_metadata(t, TENANT, "r1", &meta), 0);
	assert_string_equal(meta.run_id, "r1");
	assert_string_equal(meta.workflow_id, "wf-1");
	assert_string_equal(meta.user_directive, "make it so");
	assert_string_equal(meta.status, "active");
	meta_run_release(&meta);
	entry = assert_entry(t, "r1", "a.txt", "agent-1", 5, 1);
	assert_string_equal(entry.content_type, "text/plain");
	assert_string_equal(entry.generated_at, TEST_GENERATED_AT);

	row = indexed_file(t, "r1", "a.txt");
	assert_true(row.found);
	assert_string_equal(row.sha256, HELLO_SHA256);
	assert_string_equal(row.agent_id, "agent-1");
	assert_int_equal(row.size_bytes, 5);
	assert_int_equal(row.file_size, 5);
	/* The run is the tenant's now. */
	assert_int_equal(index_get_run_owner(t->index, "r1", &owner), 0);
	assert_string_equal(owner, TENANT);
	free(owner);
}

static void test_stage_copy_stops_at_limit(void **state)
{
	struct tenant *t = *state;
	struct landing l = { 0 };
	char staged[64], reason[AUDIT_REASON_SIZE] = "", *text;
	int src = make_source(t, "hello, world");

	assert_int_equal(landing_stage_copy(t->writer, src, 5, staged, &l, reason), 0);
	close(src);
	assert_int_equal(l.size, 5);
	assert_string_equal(l.sha256, HELLO_SHA256);
	text = tree_read(t->root, tree_rel("%s/work/%s", instance_rel(t->writer->instance).path,
					   staged).path);
	assert_non_null(text);
	assert_string_equal(text, "hello");
	free(text);
}

/*
 * landing_hash_and_flush() gives landing_hash_file()'s digest below its
 * threshold (hashed only) and above it (flushed on a thread meanwhile),
 * and the error of a descriptor that can be neither read nor flushed.
 */
static void test_hash_and_flush_hashes_as_landing_hash_file(void **state)
{
	struct tenant *t = *state;
	size_t size = LANDING_HASH_AND_FLUSH_MIN + 4097;
	char *bytes = malloc(size);
	char hashed[LANDING_SHA256_HEX_SIZE], flushed[LANDING_SHA256_HEX_SIZE];
	char proc[32];
	int small = make_source(t, "hello"), large, path_only;

	assert_int_equal(landing_hash_and_flush(small, flushed), 0);
	assert_string_equal(flushed, HELLO_SHA256);
	close(small);

	assert_non_null(bytes);
	for (size_t i = 0; i < size; i++)
		bytes[i] = (char)(i * 7 + i / 4096);
	large = open(t->root, O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
	assert_true(large >= 0);
	assert_int_equal(store_write_all(large, bytes, size), 0);
	assert_int_equal(landing_hash_file(large, hashed), 0);
	assert_int_equal(landing_hash_and_flush(large, flushed), 0);
	assert_string_equal(flushed, hashed);
	assert_string_not_equal(flushed, HELLO_SHA256);

	/* Large enough for the flush's thread, which fails with the hash. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", large);
	path_only = open(proc, O_PATH | O_CLOEXEC);
	assert_true(path_only >= 0);
	assert_int_equal(landing_hash_and_flush(path_only, flushed), -EBADF);
	close(path_only);
	close(large);
	free(bytes);
}

static void test_land_refused_in_another_tenants_run(void **state)
{
	struct tenant *t = *state;
	char reason[AUDIT_REASON_SIZE] = "";

	/* Owned by another tenant in the index. */
	assert_int_equal(index_claim_run(t->index, OTHER_TENANT, "claimed"), 0);
	assert_int_equal(land(t, "claimed", "a.txt", "agent-1", "hello", reason), -EACCES);
	assert_true(strlen(reason) > 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "claimed", NULL).path));

	/* Held by another tenant's run dir, which no index row describes. */
	reason[0] = '\0';
	tree_mkdir(t->root, run_rel(OTHER_TENANT, "theirs", NULL).path);
	assert_int_equal(land(t, "theirs", "a.txt", "agent-1", "hello", reason), -EACCES);
	assert_true(strlen(reason) > 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "theirs", NULL).path));
	assert_false(tree_exists(t->root, run_rel(OTHER_TENANT, "theirs", "a.txt").path));

	/* A legacy run belongs to nobody who could land in it. */
	reason[0] = '\0';
	put_metadata(t->root, "artifacts/legacy", "legacy", NULL, 0);
	assert_int_equal(land(t, "legacy", "a.txt", "agent-1", "hello", reason), -EACCES);
	assert_true(strlen(reason) > 0);
	assert_false(tree_exists(t->root, "artifacts/legacy/a.txt"));

	/* Not a run id at all. */
	assert_int_equal(land(t, "promote", "a.txt", "agent-1", "hello", reason), -EINVAL);
	assert_int_equal(land(t, "..", "a.txt", "agent-1", "hello", reason), -EINVAL);
	assert_false(tree_exists(t->root, "artifacts/a.txt"));
	assert_false(tree_exists(t->root, run_rel(TENANT, "promote", NULL).path));

	/* The run the tenant owns takes the same landing. */
	assert_int_equal(index_claim_run(t->index, TENANT, "mine"), 0);
	assert_int_equal(land(t, "mine", "a.txt", "agent-1", "hello", reason), 0);
	assert_run_file(t, TENANT, "mine", "a.txt", "hello");
}

static void test_land_again_replaces_the_entry(void **state)
{
	struct tenant *t = *state;
	struct indexed row;

	land_ok(t, "r1", "a.txt", "one");
	land_ok(t, "r1", "b.txt", "other");
	land_ok(t, "r1", "a.txt", "second");
	assert_run_file(t, TENANT, "r1", "a.txt", "second");
	assert_entry(t, "r1", "a.txt", "agent-1", 6, 2);
	row = indexed_file(t, "r1", "a.txt");
	assert_string_equal(row.sha256,
			    "16367aacb67a4a017c8da8ab95682ccb390863780f7114dda0a0e0c55644c7c4");
	assert_int_equal(row.file_size, 6);
	assert_true(entry_of(t, "r1", "b.txt").found);
}

static void test_rename_artifact(void **state)
{
	struct tenant *t = *state;
	char reason[AUDIT_REASON_SIZE] = "";
	struct indexed row;

	land_ok(t, "r1", "a.txt", "hello");
	land_ok(t, "r1", "c.txt", "other");
	assert_int_equal(landing_rename_artifact(t->writer, "r1", "a.txt", "b.txt", true,
						 reason), 0);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", "a.txt").path));
	assert_run_file(t, TENANT, "r1", "b.txt", "hello");
	assert_false(entry_of(t, "r1", "a.txt").found);
	assert_entry(t, "r1", "b.txt", "agent-1", 5, 2);
	/* The recorded SHA-256 goes with the bytes. */
	row = indexed_file(t, "r1", "b.txt");
	assert_string_equal(row.sha256, HELLO_SHA256);
	assert_false(indexed_file(t, "r1", "a.txt").found);

	/* no_replace keeps an existing name; without it, the file and entry are replaced. */
	assert_int_equal(landing_rename_artifact(t->writer, "r1", "b.txt", "c.txt", true,
						 reason), -EEXIST);
	assert_run_file(t, TENANT, "r1", "c.txt", "other");
	assert_int_equal(landing_rename_artifact(t->writer, "r1", "b.txt", "c.txt", false,
						 reason), 0);
	assert_run_file(t, TENANT, "r1", "c.txt", "hello");
	assert_entry(t, "r1", "c.txt", "agent-1", 5, 1);

	assert_int_equal(landing_rename_artifact(t->writer, "r1", "missing", "d.txt", false,
						 reason), -ENOENT);
	assert_int_equal(landing_rename_artifact(t->writer, "nope", "c.txt", "d.txt", false,
						 reason), -ENOENT);
	assert_int_equal(count_entries(t->writer->work_fd), 0);
}

static void test_recover_completes_a_landing(void **state)
{
	struct tenant *t = *state;
	struct writer *next;
	struct entry_seen entry;
	struct indexed row;

	land_ok(t, "r1", "b.txt", "other");
	/* A crash after the rename into the run, before metadata.json. */
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	make_dead_instance(t, "1.1", intent_json("r1", "a.txt", HELLO_SHA256, 5).path);
	assert_false(entry_of(t, "r1", "a.txt").found);

	/* The next writer of the tenant finishes it. */
	assert_int_equal(writer_open(&t->view, &t->options, &next), 0);
	assert_int_equal(landing_recover(next), 1);
	writer_close(next);
	entry = assert_entry(t, "r1", "a.txt", "agent-9", 5, 2);
	assert_string_equal(entry.generated_at, TEST_GENERATED_AT);
	row = indexed_file(t, "r1", "a.txt");
	assert_true(row.found);
	assert_string_equal(row.sha256, HELLO_SHA256);
	assert_false(tree_exists(t->root, instance_rel("1.1").path));
	/* The fixture's writer is alive: its instance stays. */
	assert_true(tree_exists(t->root, instance_rel(t->writer->instance).path));
	/* Nothing is left to do. */
	assert_int_equal(landing_recover(t->writer), 0);
}

static void test_recover_records_only_the_promised_bytes(void **state)
{
	struct tenant *t = *state;

	land_ok(t, "r1", "b.txt", "other");
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "jello");
	make_dead_instance(t, "1.1", intent_json("r1", "a.txt", HELLO_SHA256, 5).path);
	/* And one whose run does not exist. */
	make_dead_instance(t, "1.2", intent_json("gone", "a.txt", HELLO_SHA256, 5).path);
	assert_int_equal(landing_recover(t->writer), 0);
	assert_false(entry_of(t, "r1", "a.txt").found);
	assert_string_equal(indexed_file(t, "r1", "a.txt").sha256, "");
	/* The file is not deleted, the dead instances are. */
	assert_run_file(t, TENANT, "r1", "a.txt", "jello");
	assert_false(tree_exists(t->root, instance_rel("1.1").path));
	assert_false(tree_exists(t->root, instance_rel("1.2").path));
	assert_false(tree_exists(t->root, run_rel(TENANT, "gone", NULL).path));
}

static void test_recover_leaves_a_live_instance_alone(void **state)
{
	struct tenant *t = *state;
	int fd;

	land_ok(t, "r1", "b.txt", "other");
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	make_dead_instance(t, "2.2", intent_json("r1", "a.txt", HELLO_SHA256, 5).path);
	fd = open(tree_rel("%s/%s", t->root, instance_rel("2.2").path).path,
		  O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(flock(fd, LOCK_EX), 0);

	assert_int_equal(landing_recover(t->writer), 0);
	assert_true(tree_exists(t->root, tree_rel("%s/work/intent.1",
						  instance_rel("2.2").path).path));
	assert_false(entry_of(t, "r1", "a.txt").found);

	/* Once its process is gone (the lock free), it is finished. */
	assert_int_equal(flock(fd, LOCK_UN), 0);
	close(fd);
	assert_int_equal(landing_recover(t->writer), 1);
	assert_true(entry_of(t, "r1", "a.txt").found);
	assert_false(tree_exists(t->root, instance_rel("2.2").path));
}

/*
 * A live instance says so by the OFD lock on its lock file, which every
 * host of a network store sees: recovery leaves it alone while the lock
 * is held, and finishes it once the lock is free.
 */
static void test_recover_leaves_an_instance_whose_lock_is_held(void **state)
{
	struct tenant *t = *state;
	int staging_fd, instance_fd, lock;

	land_ok(t, "r1", "b.txt", "other");
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	make_dead_instance(t, "otherhost.7.7", intent_json("r1", "a.txt", HELLO_SHA256, 5).path);
	staging_fd = open(tree_rel("%s/%s/%s", t->root, WRITER_STAGING_DIR, TENANT).path,
			  O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(staging_fd >= 0);
	instance_fd = openat(staging_fd, "otherhost.7.7", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(instance_fd >= 0);
	lock = store_lock_file(instance_fd, WRITER_INSTANCE_LOCK, false);
	assert_true(lock >= 0);
	/* Held: a second taker is refused at once, in this process too. */
	assert_int_equal(store_lock_file(instance_fd, WRITER_INSTANCE_LOCK, false), -EAGAIN);

	assert_int_equal(landing_recover(t->writer), 0);
	assert_false(entry_of(t, "r1", "a.txt").found);
	assert_true(tree_exists(t->root, instance_rel("otherhost.7.7").path));

	store_unlock(lock);
	assert_int_equal(landing_recover(t->writer), 1);
	assert_true(entry_of(t, "r1", "a.txt").found);
	assert_false(tree_exists(t->root, instance_rel("otherhost.7.7").path));
	/* The fixture's own writer is locked the same way, and untouched. */
	assert_true(tree_exists(t->root, tree_rel("%s/%s", instance_rel(t->writer->instance).path,
						  WRITER_INSTANCE_LOCK).path));
	close(instance_fd);
	close(staging_fd);
}

static void test_recover_completes_a_rename(void **state)
{
	struct tenant *t = *state;
	static const char intent[] = "{\"run\":\"r1\",\"name\":\"b.txt\",\"renamed_from\":\"a.txt\"}";

	land_ok(t, "r1", "a.txt", "hello");
	/* A crash before the rename: nothing to finish. */
	make_dead_instance(t, "3.1", intent);
	assert_int_equal(landing_recover(t->writer), 0);
	assert_true(entry_of(t, "r1", "a.txt").found);
	assert_false(tree_exists(t->root, instance_rel("3.1").path));

	/* A crash after the rename of the file, before its entry moved. */
	assert_int_equal(rename(tree_rel("%s/%s", t->root, run_rel(TENANT, "r1", "a.txt").path).path,
				tree_rel("%s/%s", t->root, run_rel(TENANT, "r1", "b.txt").path).path),
			 0);
	make_dead_instance(t, "3.2", intent);
	assert_int_equal(landing_recover(t->writer), 1);
	assert_false(entry_of(t, "r1", "a.txt").found);
	assert_entry(t, "r1", "b.txt", "agent-1", 5, 1);
	assert_true(indexed_file(t, "r1", "b.txt").found);
	assert_false(tree_exists(t->root, instance_rel("3.2").path));
}

/* Seals the file at rel (relative to the root) as a landing does (seal.h). */
static void put_seal(struct tenant *t, const char *rel, const char *run, const char *name,
		     const char *sha256, size_t size)
{
	struct tree_rel path = tree_rel("%s/%s", t->root, rel);
	struct tree_rel seal;
	struct stat st;

	assert_int_equal(stat(path.path, &st), 0);
	seal = tree_rel("{\"run\":\"%s\",\"name\":\"%s\",\"generated_at\":\"%s\","
			"\"sha256\":\"%s\",\"size\":%zu,\"mtime_ns\":%lld}",
			run, name, TEST_GENERATED_AT, sha256, size,
			(long long)store_time_ns(&st.st_mtim));
	assert_int_equal(setxattr(path.path, SEAL_XATTR, seal.path, strlen(seal.path), 0), 0);
}

/*
 * Leaves, in a dead instance, the record of a group landing into run as
 * landing.c writes it: work/intent.<serial>.<run>, the run's next
 * metadata.json, holding b.txt (landed before) and the group's files.
 */
static void put_record(struct tenant *t, const char *instance, const char *run,
		       const char *const *names, size_t n)
{
	struct meta_artifact artifacts[8];
	struct meta_run meta = {
		.run_id = (char *)run, .workflow_id = "wf", .user_directive = "",
		.created_at = TEST_GENERATED_AT, .expires_at = TEST_GENERATED_AT,
		.status = "active", .artifacts = artifacts, .n_artifacts = n,
	};
	char *text;
	size_t len;

	assert_true(n <= 8);
	for (size_t i = 0; i < n; i++)
		artifacts[i] = (struct meta_artifact){
			.filename = (char *)names[i], .agent_id = "agent-9",
			.generated_at = TEST_GENERATED_AT, .content_type = "text/plain",
			.has_size_bytes = true, .size_bytes = 5,
		};
	assert_int_equal(meta_format(&meta, &text, &len), 0);
	tree_write(t->root, tree_rel("%s/work/intent.7.%s", instance_rel(instance).path, run).path,
		   text, len);
	free(text);
}

static void test_land_seals_the_file(void **state)
{
	struct tenant *t = *state;
	char seal[1024];
	ssize_t len;

	land_ok(t, "r1", "a.txt", "hello");
	len = getxattr(tree_rel("%s/%s", t->root, run_rel(TENANT, "r1", "a.txt").path).path,
		       SEAL_XATTR, seal, sizeof(seal) - 1);
	assert_true(len > 0);
	seal[len] = '\0';
	assert_non_null(strstr(seal, "\"run\":\"r1\""));
	assert_non_null(strstr(seal, "\"name\":\"a.txt\""));
	assert_non_null(strstr(seal, HELLO_SHA256));
	/* The record of the landing is gone once it is whole. */
	assert_int_equal(count_entries(t->writer->work_fd), 0);
}

/*
 * The SHA-256 is the file's: an index that forgot the run (rebuilt, or
 * another host's) reads it back from the seal, but not once the bytes
 * changed since (another size or mtime).
 */
static void test_index_rebuild_takes_the_sealed_sha256(void **state)
{
	struct tenant *t = *state;
	struct tree_rel changed = tree_rel("%s/%s", t->root, run_rel(TENANT, "r1", "b.txt").path);
	struct timespec later[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = 1234567890 } };

	land_ok(t, "r1", "a.txt", "hello");
	land_ok(t, "r1", "b.txt", "hello");
	assert_int_equal(utimensat(AT_FDCWD, changed.path, later, 0), 0);
	assert_int_equal(index_delete_run(t->index, TENANT, "r1"), 0);
	assert_false(indexed_file(t, "r1", "a.txt").found);

	assert_int_equal(view_sync_run(&t->view, "r1", VIEW_SYNC_FORCE, NULL), 0);
	assert_string_equal(indexed_file(t, "r1", "a.txt").sha256, HELLO_SHA256);
	assert_true(indexed_file(t, "r1", "b.txt").found);
	assert_string_equal(indexed_file(t, "r1", "b.txt").sha256, "");
}

/*
 * A crash after a group's files were renamed into the run, before its
 * metadata.json was: the record gives each sealed file its entry.
 */
static void test_recover_completes_a_group_from_its_record(void **state)
{
	static const char *const names[] = { "b.txt", "a.txt", "c.txt", "d.txt" };
	struct tenant *t = *state;
	struct entry_seen entry;

	land_ok(t, "r1", "b.txt", "other");
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	put_seal(t, run_rel(TENANT, "r1", "a.txt").path, "r1", "a.txt", HELLO_SHA256, 5);
	/* Not sealed: not the record's file. */
	tree_put(t->root, run_rel(TENANT, "r1", "c.txt").path, "hello");
	/* Sealed, but its bytes changed since. */
	tree_put(t->root, run_rel(TENANT, "r1", "d.txt").path, "jello");
	put_seal(t, run_rel(TENANT, "r1", "d.txt").path, "r1", "d.txt", HELLO_SHA256, 5);
	put_record(t, "4.1", "r1", names, 4);

	assert_int_equal(landing_recover(t->writer), 1);
	entry = assert_entry(t, "r1", "a.txt", "agent-9", 5, 2);
	assert_string_equal(entry.generated_at, TEST_GENERATED_AT);
	assert_string_equal(indexed_file(t, "r1", "a.txt").sha256, HELLO_SHA256);
	/* b.txt keeps the entry it had; c.txt and d.txt get none, and stay. */
	assert_entry(t, "r1", "b.txt", "agent-1", 5, 2);
	assert_false(entry_of(t, "r1", "c.txt").found);
	assert_false(entry_of(t, "r1", "d.txt").found);
	assert_run_file(t, TENANT, "r1", "d.txt", "jello");
	assert_false(tree_exists(t->root, instance_rel("4.1").path));
	assert_int_equal(landing_recover(t->writer), 0);
}

/*
 * A crash after the group's metadata.json was renamed into the run, not a
 * file: the staged file whose entry is there moves in; one whose entry is
 * not goes with its instance.
 */
static void test_recover_moves_a_staged_file_whose_entry_landed(void **state)
{
	static const struct test_entry entries[] = { { "b.txt", 5 }, { "a.txt", 5 } };
	struct tenant *t = *state;
	struct tree_rel staged_a = tree_rel("%s/runs/r1/a.txt", instance_rel("5.1").path);
	struct tree_rel staged_z = tree_rel("%s/work/copy.3", instance_rel("5.1").path);

	land_ok(t, "r1", "b.txt", "other");
	put_metadata(t->root, run_rel(TENANT, "r1", NULL).path, "r1", entries, 2);
	tree_put(t->root, staged_a.path, "hello");
	put_seal(t, staged_a.path, "r1", "a.txt", HELLO_SHA256, 5);
	tree_put(t->root, staged_z.path, "hello");
	put_seal(t, staged_z.path, "r1", "z.txt", HELLO_SHA256, 5);

	assert_int_equal(landing_recover(t->writer), 1);
	assert_run_file(t, TENANT, "r1", "a.txt", "hello");
	assert_int_equal(tree_mode(t->root, run_rel(TENANT, "r1", "a.txt").path), 0644);
	assert_string_equal(indexed_file(t, "r1", "a.txt").sha256, HELLO_SHA256);
	assert_false(tree_exists(t->root, run_rel(TENANT, "r1", "z.txt").path));
	assert_false(tree_exists(t->root, instance_rel("5.1").path));
}

#define GROUP_WRITERS 8

struct group_writer {
	struct tenant *tenant;
	char name[16];
	int ret;
};

static void *land_one(void *arg)
{
	struct group_writer *gw = arg;
	char reason[AUDIT_REASON_SIZE] = "";

	gw->ret = land(gw->tenant, "r1", gw->name, "agent-1", "hello", reason);
	return NULL;
}

/*
 * Landings into one run at once share their metadata.json rewrite: with
 * the run locked by another writer while they queue up, eight landings
 * rewrite it at most twice (the first to come leads alone, the other
 * seven wait and land together), and every entry is there.
 */
static void test_landings_at_once_share_a_rewrite(void **state)
{
	struct tenant *t = *state;
	struct group_writer writers[GROUP_WRITERS];
	pthread_t threads[GROUP_WRITERS];
	char events[64 * 1024];
	int run_lock, watch_fd, rewrites = 0;
	ssize_t len;

	land_ok(t, "r1", "b.txt", "other");
	run_lock = store_lock_run(&t->store, TENANT, "r1", true);
	assert_true(run_lock >= 0);
	watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	assert_true(watch_fd >= 0);
	assert_true(inotify_add_watch(watch_fd, tree_rel("%s/%s", t->root,
				      run_rel(TENANT, "r1", NULL).path).path, IN_MOVED_TO) >= 0);

	for (int i = 0; i < GROUP_WRITERS; i++) {
		writers[i] = (struct group_writer){ .tenant = t };
		snprintf(writers[i].name, sizeof(writers[i].name), "w%d.txt", i);
		assert_int_equal(pthread_create(&threads[i], NULL, land_one, &writers[i]), 0);
	}
	usleep(300 * 1000);	/* all staged and queued behind the lock */
	store_unlock(run_lock);
	for (int i = 0; i < GROUP_WRITERS; i++) {
		assert_int_equal(pthread_join(threads[i], NULL), 0);
		assert_int_equal(writers[i].ret, 0);
		assert_entry(t, "r1", writers[i].name, "agent-1", 5, GROUP_WRITERS + 1);
	}
	while ((len = read(watch_fd, events, sizeof(events))) > 0)
		for (char *p = events; p < events + len;) {
			struct inotify_event *event = (struct inotify_event *)p;

			rewrites += event->len && strcmp(event->name, NAMES_METADATA_FILE) == 0;
			p += sizeof(*event) + event->len;
		}
	assert_true(rewrites >= 1 && rewrites <= 2);
	close(watch_fd);
}

/*
 * A writer closed with an intent still in work/ (a landing whose entry a
 * failure left unwritten) keeps its instance, so that the next writer
 * finishes the landing instead of losing its promised entry.
 */
static void test_close_keeps_unfinished_landings(void **state)
{
	struct tenant *t = *state;
	struct writer *first;
	char instance[sizeof(first->instance)];

	land_ok(t, "r1", "b.txt", "other");
	assert_int_equal(writer_open(&t->view, &t->options, &first), 0);
	snprintf(instance, sizeof(instance), "%s", first->instance);
	tree_put(t->root, run_rel(TENANT, "r1", "a.txt").path, "hello");
	make_dead_instance(t, instance, intent_json("r1", "a.txt", HELLO_SHA256, 5).path);
	writer_close(first);
	assert_true(tree_exists(t->root, instance_rel(instance).path));

	assert_int_equal(landing_recover(t->writer), 1);
	assert_entry(t, "r1", "a.txt", "agent-9", 5, 2);
	assert_false(tree_exists(t->root, instance_rel(instance).path));
}

static void test_migrate_legacy_run(void **state)
{
	struct tenant *t = *state;
	static const struct test_entry entries[] = { { "a.txt", 5 } };
	char reason[AUDIT_REASON_SIZE] = "";
	char *owner = NULL;
	struct indexed row;

	put_metadata(t->root, "artifacts/old", "old", entries, 1);
	tree_put(t->root, "artifacts/old/a.txt", "hello");
	/* Another tenant's area, without a run of that id. */
	tree_mkdir(t->root, run_rel(OTHER_TENANT, "r1", NULL).path);
	/* A dry run foresees the move and makes none. */
	assert_int_equal(landing_migrate_legacy(&t->view, "old", true, reason), 0);
	assert_true(tree_exists(t->root, "artifacts/old/a.txt"));
	assert_false(tree_exists(t->root, run_rel(TENANT, "old", NULL).path));
	assert_int_equal(index_get_run_owner(t->index, "old", &owner), -ENOENT);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "old", NULL, 0), 0);

	assert_int_equal(landing_migrate_legacy(&t->view, "old", false, reason), 0);
	assert_false(tree_exists(t->root, "artifacts/old"));
	assert_run_file(t, TENANT, "old", "a.txt", "hello");
	assert_true(entry_of(t, "old", "a.txt").found);
	assert_int_equal(index_get_run_owner(t->index, "old", &owner), 0);
	assert_string_equal(owner, TENANT);
	free(owner);
	row = indexed_file(t, "old", "a.txt");
	assert_true(row.found);
	assert_int_equal(row.size_bytes, 5);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "old", NULL, 0), 1);
}

static void test_migrate_legacy_refusals(void **state)
{
	struct tenant *t = *state;
	char reason[AUDIT_REASON_SIZE] = "";

	/* The tenant has a run of that id. */
	put_metadata(t->root, "artifacts/dup", "dup", NULL, 0);
	tree_put(t->root, run_rel(TENANT, "dup", "mine.txt").path, "mine");
	assert_int_equal(landing_migrate_legacy(&t->view, "dup", true, reason), -EEXIST);
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "dup", NULL, EEXIST), 0);
	assert_int_equal(landing_migrate_legacy(&t->view, "dup", false, reason), -EEXIST);
	assert_true(strlen(reason) > 0);
	assert_true(tree_exists(t->root, "artifacts/dup/metadata.json"));
	assert_run_file(t, TENANT, "dup", "mine.txt", "mine");
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "dup", NULL, EEXIST), 1);

	/* Another tenant owns the id in the index, or holds a run dir of it. */
	reason[0] = '\0';
	put_metadata(t->root, "artifacts/taken", "taken", NULL, 0);
	assert_int_equal(index_claim_run(t->index, OTHER_TENANT, "taken"), 0);
	assert_int_equal(landing_migrate_legacy(&t->view, "taken", true, reason), -EACCES);
	assert_int_equal(landing_migrate_legacy(&t->view, "taken", false, reason), -EACCES);
	assert_true(strlen(reason) > 0);
	assert_true(tree_exists(t->root, "artifacts/taken/metadata.json"));
	assert_false(tree_exists(t->root, run_rel(TENANT, "taken", NULL).path));
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "taken", NULL, EACCES), 1);
	put_metadata(t->root, "artifacts/held", "held", NULL, 0);
	tree_mkdir(t->root, run_rel(OTHER_TENANT, "held", NULL).path);
	assert_int_equal(landing_migrate_legacy(&t->view, "held", false, reason), -EACCES);
	assert_true(tree_exists(t->root, "artifacts/held/metadata.json"));

	/* No legacy run of that id: a missing one, a tenant's area. */
	assert_int_equal(landing_migrate_legacy(&t->view, "nothing", false, reason), -ENOENT);
	assert_int_equal(landing_migrate_legacy(&t->view, TENANT, false, reason), -ENOENT);
	/* Not a run id of a view: a bad id, and promote, which no view would show. */
	assert_int_equal(landing_migrate_legacy(&t->view, "..", false, reason), -EINVAL);
	put_metadata(t->root, "artifacts/promote", "promote", NULL, 0);
	assert_int_equal(landing_migrate_legacy(&t->view, "promote", false, reason), -EINVAL);
	assert_true(tree_exists(t->root, "artifacts/promote/metadata.json"));
	assert_int_equal(count_audit(t, INDEX_ACTION_REPAIR, "nothing", NULL, ENOENT), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_land_file, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_stage_copy_stops_at_limit, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_hash_and_flush_hashes_as_landing_hash_file,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_land_refused_in_another_tenants_run,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_land_again_replaces_the_entry, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_rename_artifact, tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_completes_a_landing, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_records_only_the_promised_bytes,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_leaves_a_live_instance_alone,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_leaves_an_instance_whose_lock_is_held,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_completes_a_rename, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_land_seals_the_file, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_index_rebuild_takes_the_sealed_sha256,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_completes_a_group_from_its_record,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_recover_moves_a_staged_file_whose_entry_landed,
						tenant_setup, tenant_teardown),
		cmocka_unit_test_setup_teardown(test_landings_at_once_share_a_rewrite, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_close_keeps_unfinished_landings, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_migrate_legacy_run, tenant_setup,
						tenant_teardown),
		cmocka_unit_test_setup_teardown(test_migrate_legacy_refusals, tenant_setup,
						tenant_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
