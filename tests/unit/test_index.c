/*
 * test_index.c - unit tests of the SQLite index (src/index.c).
 *
 * Each test gets a fresh temporary directory and looks at the result both
 * through the index API and through a second, plain sqlite3 connection, the
 * way an operator or another daemon would see the file.
 */
#include "test_helpers.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "index.h"
#include "meta.h"

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	make_temp_dir(f->dir, sizeof(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/index.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	remove_tree(f->dir);
	free(f);
	return 0;
}

/* ---- building runs ---- */

static const struct index_run_stamp stamp1 = {
	.dir_ino = 11, .dir_mtime_ns = 1700000000123456789,
	.meta_ino = 12, .meta_size = 345,
	.meta_mtime_ns = 1700000001000000001, .meta_ctime_ns = 1700000002000000002,
};

#define EXPIRES "2026-02-14T06:00:37.123456789+00:00"
#define EXPIRES_UNIX INT64_C(1771048837)

static struct meta_artifact full_artifacts[] = {
	{
		.filename = (char *)"chart.png",
		.agent_id = (char *)"agent-1",
		.generated_at = (char *)"2026-02-07T06:01:00.5+00:00",
		.content_type = (char *)"image/png",
		.has_size_bytes = true,
		.size_bytes = 1234,
	},
	{
		/* Every field missing but the name. */
		.filename = (char *)"bare.txt",
	},
	{
		.filename = (char *)"huge.bin",
		.agent_id = (char *)"agent-2",
		.has_size_bytes = true,
		.size_bytes = UINT64_MAX,
	},
};

static struct meta_run full_meta = {
	.run_id = (char *)"run-1",
	.workflow_id = (char *)"wf-9",
	.user_directive = (char *)"",
	.created_at = (char *)"2026-02-07T06:00:37.123456789+00:00",
	.expires_at = (char *)EXPIRES,
	.status = (char *)"active",
	.artifacts = full_artifacts,
	.n_artifacts = sizeof(full_artifacts) / sizeof(full_artifacts[0]),
};

static struct index *open_ok(const char *path)
{
	struct index *index = NULL;

	assert_int_equal(index_open(path, &index), 0);
	assert_non_null(index);
	return index;
}

static void assert_attr(const struct index_attrs *attrs, size_t i,
			const char *name, const char *value)
{
	assert_true(i < attrs->count);
	assert_string_equal(attrs->attr[i].name, name);
	assert_string_equal(attrs->attr[i].value, value);
}

/* ---- tests ---- */

static void test_open_creates(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct stat st;
	char *mode;

	assert_int_equal(stat(f->path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	/* Every tenant's metadata: for the daemon's user only. */
	assert_int_equal(st.st_mode & 077, 0);
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"),
			 INDEX_SCHEMA_VERSION);
	mode = sql_text(f->path, "PRAGMA journal_mode");
	assert_non_null(mode);
	assert_string_equal(mode, "wal");
	free(mode);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master"
				 " WHERE name IN ('runs', 'artifacts', 'runs_client_expiry',"
				 " 'run_owners', 'audit', 'audit_client')"),
			 6);
	index_close(index);

	/* Opening it again finds it current and leaves it alone. */
	index = open_ok(f->path);
	index_close(index);
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"),
			 INDEX_SCHEMA_VERSION);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM runs"), 0);

	index_close(NULL);
}

static void test_open_empty_file(void **state)
{
	struct fixture *f = *state;
	struct index *index;
	int fd;

	/* A zero-length file is an empty database: migrated, not set aside. */
	fd = open(f->path, O_CREAT | O_WRONLY, 0644);
	assert_true(fd >= 0);
	close(fd);
	index = open_ok(f->path);
	index_close(index);
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"),
			 INDEX_SCHEMA_VERSION);
}

static void test_stamp(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct index_run_stamp got, stamp2 = stamp1;
	struct index_attrs attrs;
	int64_t id;

	assert_int_equal(index_get_run_stamp(index, "c1", "r1", &got), -ENOENT);

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, NULL, NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_stamp(index, "c1", "r1", &got), 0);
	assert_memory_equal(&got, &stamp1, sizeof(got));
	id = sql_int(f->path, "SELECT id FROM runs WHERE client = 'c1' AND run = 'r1'");
	assert_true(id > 0);
	assert_int_equal(sql_int(f->path, "SELECT metadata_valid FROM runs"), 0);

	/* A run without metadata has a row and no attributes. */
	assert_int_equal(index_get_run_attrs(index, "c1", "r1", &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);

	/* Replacing keeps the row's id and stores the new stamp. */
	stamp2.meta_size = 999;
	stamp2.meta_mtime_ns++;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp2, &full_meta,
				       NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_stamp(index, "c1", "r1", &got), 0);
	assert_memory_equal(&got, &stamp2, sizeof(got));
	assert_int_equal(sql_int(f->path, "SELECT id FROM runs WHERE client = 'c1' AND run = 'r1'"),
			 id);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM runs"), 1);
	assert_int_equal(sql_int(f->path, "SELECT metadata_valid FROM runs"), 1);
	assert_true(sql_int(f->path, "SELECT indexed_at FROM runs") >=
		    (int64_t)time(NULL) - 60);

	/* Another client's run of the same id is another row. */
	assert_int_equal(index_get_run_stamp(index, "c2", "r1", &got), -ENOENT);
	index_close(index);
}

static void test_run_attrs(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct meta_run partial = full_meta;
	struct index_attrs attrs;

	assert_int_equal(index_get_run_attrs(index, "c1", "r1", &attrs), -ENOENT);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_attrs(index, "c1", "r1", &attrs), 0);
	assert_int_equal(attrs.count, 5);
	assert_attr(&attrs, 0, "workflow_id", "wf-9");
	assert_attr(&attrs, 1, "user_directive", "");
	assert_attr(&attrs, 2, "created_at", "2026-02-07T06:00:37.123456789+00:00");
	assert_attr(&attrs, 3, "expires_at", EXPIRES);
	assert_attr(&attrs, 4, "status", "active");
	index_attrs_release(&attrs);
	assert_int_equal(attrs.count, 0);

	/* NULL fields are left out, the others keep their order. */
	partial.workflow_id = NULL;
	partial.expires_at = NULL;
	assert_int_equal(index_put_run(index, "c1", "r2", &stamp1, &partial,
				       NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_attrs(index, "c1", "r2", &attrs), 0);
	assert_int_equal(attrs.count, 3);
	assert_attr(&attrs, 0, "user_directive", "");
	assert_attr(&attrs, 1, "created_at", "2026-02-07T06:00:37.123456789+00:00");
	assert_attr(&attrs, 2, "status", "active");
	index_attrs_release(&attrs);
	index_close(index);
}

static const struct index_file some_files[] = {
	{ .filename = "data.csv", .size = 10, .mtime_ns = 1000, .ino = 101 },
	{ .filename = "chart.png", .size = 1234, .mtime_ns = 2000, .ino = 102 },
};

static void test_file_attrs_and_union(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct index_attrs attrs;

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	/* chart.png, bare.txt, huge.bin from meta; data.csv from files. */
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), 4);

	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "chart.png",
					      &attrs), 0);
	assert_int_equal(attrs.count, 4);
	assert_attr(&attrs, 0, "agent_id", "agent-1");
	assert_attr(&attrs, 1, "generated_at", "2026-02-07T06:01:00.5+00:00");
	assert_attr(&attrs, 2, "content_type", "image/png");
	assert_attr(&attrs, 3, "size_bytes", "1234");
	index_attrs_release(&attrs);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts"
				 " WHERE filename = 'chart.png'"), 102);

	/* An entry whose file is missing: metadata, no file columns. */
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "bare.txt",
					      &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts"
				 " WHERE filename = 'bare.txt'"), -2);
	assert_int_equal(sql_int(f->path, "SELECT file_size FROM artifacts"
				 " WHERE filename = 'bare.txt'"), -2);

	/* size_bytes beyond INT64_MAX cannot be stored: NULL, left out. */
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "huge.bin",
					      &attrs), 0);
	assert_int_equal(attrs.count, 1);
	assert_attr(&attrs, 0, "agent_id", "agent-2");
	index_attrs_release(&attrs);

	/* A file without an entry: file columns, no metadata. */
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "data.csv",
					      &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	assert_int_equal(sql_int(f->path, "SELECT file_size FROM artifacts"
				 " WHERE filename = 'data.csv'"), 10);
	assert_int_equal(sql_int(f->path, "SELECT file_mtime_ns FROM artifacts"
				 " WHERE filename = 'data.csv'"), 1000);
	assert_int_equal(sql_int(f->path, "SELECT agent_id IS NULL AND"
				 " content_type IS NULL AND size_bytes IS NULL"
				 " FROM artifacts WHERE filename = 'data.csv'"), 1);

	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "nothing",
					      &attrs), -ENOENT);
	index_attrs_release(&attrs);
	assert_int_equal(index_get_file_attrs(index, "c2", "r1", "chart.png",
					      &attrs), -ENOENT);
	index_attrs_release(&attrs);

	/* Putting again replaces the rows: no meta now, one file. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, NULL,
				       some_files, 1, NULL), 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), 1);
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "chart.png",
					      &attrs), -ENOENT);
	index_attrs_release(&attrs);
	index_close(index);
}

static void test_duplicates(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct meta_artifact arts[] = {
		{ .filename = (char *)"a", .agent_id = (char *)"first" },
		{ .filename = (char *)"b", .agent_id = (char *)"only" },
		{ .filename = (char *)"a", .agent_id = (char *)"second" },
	};
	struct meta_run meta = { .artifacts = arts, .n_artifacts = 3 };
	struct index_file files[] = {
		{ .filename = "a", .size = 1, .ino = 1 },
		{ .filename = "a", .size = 2, .ino = 2 },
	};
	struct index_attrs attrs;

	/* A hand-built list may repeat a name: the later one wins. */
	assert_int_equal(index_put_run(index, "c", "r", &stamp1, &meta,
				       files, 2, NULL), 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), 2);
	assert_int_equal(index_get_file_attrs(index, "c", "r", "a", &attrs), 0);
	assert_int_equal(attrs.count, 1);
	assert_attr(&attrs, 0, "agent_id", "second");
	index_attrs_release(&attrs);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts"
				 " WHERE filename = 'a'"), 2);
	index_close(index);
}

#define SHA "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

static void set_sha(const char *path, const char *filename)
{
	char sql[256];

	snprintf(sql, sizeof(sql), "UPDATE artifacts SET sha256 = '%s'"
		 " WHERE filename = '%s'", SHA, filename);
	sql_exec(path, sql);
}

static char *get_sha(struct index *index, const char *filename)
{
	struct index_attrs attrs;
	char *sha = NULL;
	size_t i;

	assert_int_equal(index_get_file_attrs(index, "c1", "r1", filename,
					      &attrs), 0);
	for (i = 0; i < attrs.count; i++) {
		if (strcmp(attrs.attr[i].name, "sha256") == 0) {
			/* sha256 comes last. */
			assert_int_equal(i, attrs.count - 1);
			sha = strdup(attrs.attr[i].value);
		}
	}
	index_attrs_release(&attrs);
	return sha;
}

static void assert_sha(struct index *index, const char *filename, bool kept)
{
	char *sha = get_sha(index, filename);

	if (kept) {
		assert_non_null(sha);
		assert_string_equal(sha, SHA);
	} else {
		assert_null(sha);
	}
	free(sha);
}

static void test_sha256_carry_over(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct index_file files[2];

	memcpy(files, some_files, sizeof(files));
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	set_sha(f->path, "chart.png");
	set_sha(f->path, "data.csv");
	set_sha(f->path, "bare.txt");	/* has no file: never kept */
	assert_sha(index, "chart.png", true);

	/* Same files: both hashes kept. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	assert_sha(index, "chart.png", true);
	assert_sha(index, "data.csv", true);
	assert_sha(index, "bare.txt", false);

	/* Size changed: gone.  The other file is untouched. */
	files[1].size++;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	assert_sha(index, "chart.png", false);
	assert_sha(index, "data.csv", true);

	/* mtime changed: gone. */
	files[0].mtime_ns++;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	assert_sha(index, "data.csv", false);

	/* ino changed (the file was replaced by rename): gone. */
	set_sha(f->path, "data.csv");
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	assert_sha(index, "data.csv", true);
	files[0].ino = 555;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	assert_sha(index, "data.csv", false);

	/* A file that disappears and comes back does not get its hash back. */
	set_sha(f->path, "data.csv");
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files + 1, 1, NULL), 0);
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       files, 2, NULL), 0);
	assert_sha(index, "data.csv", false);
	index_close(index);
}

/*
 * A file promoted here (it has a sha256) whose entry another writer's
 * rewrite of metadata.json dropped keeps its metadata, for a repair to
 * put back; once the file changes, it does not.
 */
static void test_dropped_entry_kept_for_a_promoted_file(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct meta_run without = full_meta;
	struct index_file files[2];
	struct index_attrs attrs;

	memcpy(files, some_files, sizeof(files));
	without.artifacts = NULL;
	without.n_artifacts = 0;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta, files, 2, NULL), 0);
	set_sha(f->path, "chart.png");
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &without, files, 2, NULL), 0);
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "chart.png", &attrs), 0);
	assert_int_equal(attrs.count, 5);
	assert_attr(&attrs, 0, "agent_id", "agent-1");
	assert_attr(&attrs, 1, "generated_at", "2026-02-07T06:01:00.5+00:00");
	assert_attr(&attrs, 2, "content_type", "image/png");
	assert_attr(&attrs, 3, "size_bytes", "1234");
	assert_attr(&attrs, 4, "sha256", SHA);
	assert_string_equal(index_attrs_value(&attrs, "content_type"), "image/png");
	assert_null(index_attrs_value(&attrs, "workflow_id"));
	index_attrs_release(&attrs);
	/* Still kept the next time (the row now holds it). */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &without, files, 2, NULL), 0);
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "chart.png", &attrs), 0);
	assert_int_equal(attrs.count, 5);
	index_attrs_release(&attrs);
	/* data.csv was never promoted here: nothing to keep. */
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "data.csv", &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	/* Rewritten since: what we knew is about other bytes. */
	files[1].mtime_ns++;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &without, files, 2, NULL), 0);
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "chart.png", &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	index_close(index);
}

/* A hash source that knows chart.png's SHA-256 and counts what it is asked. */
static char *count_asks(void *ctx, const struct index_file *file)
{
	unsigned int *asked = ctx;

	(*asked)++;
	return strcmp(file->filename, "chart.png") == 0 ? strdup(SHA) : NULL;
}

/*
 * The hash source is asked only for files whose previous row holds no
 * SHA-256 for the same bytes, and what it gives is stored.
 */
static void test_hash_source_is_asked_for_unhashed_files_only(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	unsigned int asked = 0;
	struct index_hash_source hashes = { count_asks, &asked };
	struct index_file files[2];
	char *sha;

	memcpy(files, some_files, sizeof(files));
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta, files, 2,
				       &hashes), 0);
	assert_int_equal(asked, 2);
	sha = get_sha(index, "chart.png");
	assert_string_equal(sha, SHA);
	free(sha);
	assert_null(get_sha(index, "data.csv"));
	/* Kept for the same bytes: chart.png is not asked again, data.csv is. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta, files, 2,
				       &hashes), 0);
	assert_int_equal(asked, 3);
	/* Other bytes (another mtime): asked again. */
	files[1].mtime_ns++;
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta, files, 2,
				       &hashes), 0);
	assert_int_equal(asked, 5);
	index_close(index);
}

static void test_delete_run(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct index_run_stamp got;

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_int_equal(index_put_run(index, "c1", "r2", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), 8);

	assert_int_equal(index_delete_run(index, "c1", "r1"), 0);
	assert_int_equal(index_get_run_stamp(index, "c1", "r1", &got), -ENOENT);
	/* The cascade took r1's artifacts, and only those. */
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), 4);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts a"
				 " LEFT JOIN runs r ON r.id = a.run_id"
				 " WHERE r.id IS NULL"), 0);
	assert_int_equal(index_get_run_stamp(index, "c1", "r2", &got), 0);

	/* Absent runs are not an error. */
	assert_int_equal(index_delete_run(index, "c1", "r1"), 0);
	assert_int_equal(index_delete_run(index, "nobody", "r2"), 0);
	assert_int_equal(index_get_run_stamp(index, "c1", "r2", &got), 0);
	index_close(index);
}

/* What the typed reads handed their callbacks, copied for checking. */
struct typed_seen {
	char rows[8][128];
	size_t count;
	int64_t files, bytes, expires_at_unix;
};

static void typed_add(struct typed_seen *seen, const char *a, const char *b, const char *c)
{
	assert_true(seen->count < 8);
	snprintf(seen->rows[seen->count++], sizeof(seen->rows[0]), "%s/%s/%s", a, b ? b : "-",
		 c ? c : "-");
}

static int seen_client(void *ctx, const char *client)
{
	typed_add(ctx, client, NULL, NULL);
	return 0;
}

static int seen_run(void *ctx, const struct index_run_row *row)
{
	struct typed_seen *seen = ctx;

	typed_add(seen, row->client, row->run, row->workflow_id);
	seen->files += row->files;
	seen->bytes += row->bytes;
	seen->expires_at_unix = row->expires_at_unix;
	return 0;
}

static int seen_artifact(void *ctx, const struct index_artifact_row *row)
{
	struct typed_seen *seen = ctx;

	typed_add(seen, row->run, row->filename, row->sha256 ? "sha" : row->agent_id);
	seen->bytes += row->file_size;
	return 0;
}

static int seen_audit(void *ctx, const struct index_audit *row)
{
	typed_add(ctx, row->client, index_action_name(row->action), row->filename);
	return 0;
}

/* Stops a walk at the first row: what the walk returns then. */
static int stop_walk(void *ctx, const char *client)
{
	return 7;
}

static void test_typed_reads(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct typed_seen seen = { 0 };
	struct index_audit row = { .time_ns = 1000, .client = "c3",
				   .action = INDEX_ACTION_DELETE, .filename = "x", .size = -1 };

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta, some_files, 2, NULL), 0);
	assert_int_equal(index_put_run(index, "c2", "r2", &stamp1, NULL, some_files, 1, NULL), 0);
	set_sha(f->path, "chart.png");
	assert_int_equal(index_claim_run(index, "c4", "r4"), 0);
	assert_int_equal(index_add_audit(index, &row), 0);
	row.time_ns = 3000;
	row.action = INDEX_ACTION_REPAIR;
	row.filename = "y";
	assert_int_equal(index_add_audit(index, &row), 0);

	/* Clients: from runs, owners and the audit, sorted, once each. */
	assert_int_equal(index_for_each_client(index, seen_client, &seen), 0);
	assert_int_equal(seen.count, 4);
	assert_string_equal(seen.rows[0], "c1/-/-");
	assert_string_equal(seen.rows[3], "c4/-/-");
	assert_int_equal(index_for_each_client(index, stop_walk, NULL), 7);

	/* Runs of one client, with what their present files add up to. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_for_each_run(index, "c1", seen_run, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_string_equal(seen.rows[0], "c1/r1/wf-9");
	assert_int_equal(seen.files, 2);	/* bare.txt and huge.bin have no file */
	assert_int_equal(seen.bytes, 10 + 1234);
	assert_int_equal(seen.expires_at_unix, EXPIRES_UNIX);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_for_each_run(index, NULL, seen_run, &seen), 0);
	assert_int_equal(seen.count, 2);
	assert_string_equal(seen.rows[1], "c2/r2/-");
	assert_int_equal(seen.expires_at_unix, INT64_MIN);

	/* Artifacts of a run, by name: entries without file, files without entry. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_for_each_artifact(index, "c1", "r1", seen_artifact, &seen), 0);
	assert_int_equal(seen.count, 4);
	assert_string_equal(seen.rows[0], "r1/bare.txt/-");
	assert_string_equal(seen.rows[1], "r1/chart.png/sha");
	assert_string_equal(seen.rows[2], "r1/data.csv/-");
	assert_string_equal(seen.rows[3], "r1/huge.bin/agent-2");

	/* Lookups: each field narrows, a client too. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_find_artifacts(index, &(struct index_artifact_query){
		.sha256 = SHA }, seen_artifact, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_string_equal(seen.rows[0], "r1/chart.png/sha");
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_find_artifacts(index, &(struct index_artifact_query){
		.agent_id = "agent-2" }, seen_artifact, &seen), 0);
	assert_int_equal(seen.count, 1);
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_find_artifacts(index, &(struct index_artifact_query){
		.workflow_id = "wf-9", .client = "c2" }, seen_artifact, &seen), 0);
	assert_int_equal(seen.count, 0);

	/* The audit since a time, oldest first, every client or one. */
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_for_each_audit(index, NULL, 2000, seen_audit, &seen), 0);
	assert_int_equal(seen.count, 1);
	assert_string_equal(seen.rows[0], "c3/repair/y");
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_for_each_audit(index, "c3", 0, seen_audit, &seen), 0);
	assert_int_equal(seen.count, 2);
	assert_string_equal(seen.rows[0], "c3/delete/x");
	memset(&seen, 0, sizeof(seen));
	assert_int_equal(index_for_each_audit(index, "c1", 0, seen_audit, &seen), 0);
	assert_int_equal(seen.count, 0);
	index_close(index);
}

static void test_list_runs(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	static const char *const a_runs[] = { "r3", "r1", "r10", "r2" };
	char **runs;
	size_t n, i;

	for (i = 0; i < 4; i++)
		assert_int_equal(index_put_run(index, "alice", a_runs[i], &stamp1,
					       NULL, NULL, 0, NULL), 0);
	assert_int_equal(index_put_run(index, "bob", "r1", &stamp1, &full_meta,
				       NULL, 0, NULL), 0);
	assert_int_equal(index_put_run(index, "bob", "x", &stamp1, NULL, NULL, 0, NULL), 0);

	assert_int_equal(index_list_runs(index, "alice", &runs, &n), 0);
	assert_int_equal(n, 4);
	assert_string_equal(runs[0], "r1");
	assert_string_equal(runs[1], "r10");
	assert_string_equal(runs[2], "r2");
	assert_string_equal(runs[3], "r3");
	index_free_list(runs, n);

	assert_int_equal(index_list_runs(index, "bob", &runs, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(runs[0], "r1");
	assert_string_equal(runs[1], "x");
	index_free_list(runs, n);

	assert_int_equal(index_list_runs(index, "carol", &runs, &n), 0);
	assert_int_equal(n, 0);
	index_free_list(runs, n);

	/* bob's r1 has metadata, alice's does not: separate rows. */
	struct index_attrs attrs;

	assert_int_equal(index_get_run_attrs(index, "alice", "r1", &attrs), 0);
	assert_int_equal(attrs.count, 0);
	index_attrs_release(&attrs);
	assert_int_equal(index_get_run_attrs(index, "bob", "r1", &attrs), 0);
	assert_int_equal(attrs.count, 5);
	index_attrs_release(&attrs);

	/* Deleting bob's r1 leaves alice's. */
	assert_int_equal(index_delete_run(index, "bob", "r1"), 0);
	assert_int_equal(index_list_runs(index, "alice", &runs, &n), 0);
	assert_int_equal(n, 4);
	index_free_list(runs, n);
	index_free_list(NULL, 0);
	index_close(index);
}

static void test_expiry(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct meta_run meta = full_meta;
	int64_t when = 42;

	assert_int_equal(index_get_run_expiry(index, "c1", "r1", &when), -ENOENT);

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, NULL, NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_expiry(index, "c1", "r1", &when), -ENOENT);

	meta.expires_at = (char *)"next tuesday";
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &meta, NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_expiry(index, "c1", "r1", &when), -ENOENT);
	/* The text is kept for the xattr even though it is not a time. */
	assert_int_equal(sql_int(f->path, "SELECT expires_at = 'next tuesday'"
				 " FROM runs"), 1);

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       NULL, 0, NULL), 0);
	assert_int_equal(index_get_run_expiry(index, "c1", "r1", &when), 0);
	assert_int_equal(when, EXPIRES_UNIX);
	assert_int_equal(sql_int(f->path, "SELECT expires_at_unix FROM runs"),
			 EXPIRES_UNIX);
	assert_int_equal(index_get_run_expiry(index, "c2", "r1", &when), -ENOENT);
	index_close(index);
}

/* Returns the name of the one entry of dir starting with prefix, malloc'd. */
static char *find_aside(const char *dir, const char *prefix, size_t *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *found = NULL;

	assert_non_null(d);
	*count = 0;
	while ((e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
			(*count)++;
			free(found);
			found = strdup(e->d_name);
		}
	}
	closedir(d);
	return found;
}

/* Checks that a fresh, working index took the place of a set-aside one. */
static void assert_rebuilt(struct fixture *f, const char *logged,
			   const char *reason, const char *old_content,
			   const char *old_wal)
{
	char aside[256], *name;
	struct index *index;
	struct index_run_stamp got;
	size_t count, len;
	FILE *fp;
	char buf[64] = "";

	assert_int_equal(count_lines(logged), 1);
	assert_non_null(strstr(logged, "warning"));
	assert_non_null(strstr(logged, f->path));
	assert_non_null(strstr(logged, reason));
	assert_non_null(strstr(logged, "rebuilt"));

	/* The file and its -wal (and a -shm if SQLite made one). */
	name = find_aside(f->dir, "index.db.corrupt-", &count);
	assert_true(count >= 2 && count <= 4);
	free(name);
	name = find_aside(f->dir, "index.db.corrupt-2", &count);
	assert_non_null(name);
	/*
	 * <path>.corrupt-YYYYmmddTHHMMSSZ; find_aside returns the last it
	 * saw, so strip a "-wal", "-shm" or "-journal".
	 */
	len = strlen("index.db.corrupt-20260101T000000Z");
	assert_true(strlen(name) >= len);
	assert_true(name[len] == '\0' || name[len] == '-');
	name[len] = '\0';
	assert_int_equal(name[len - 1], 'Z');
	assert_int_equal(name[len - 8], 'T');
	assert_non_null(strstr(logged, name));
	if (old_content) {
		snprintf(aside, sizeof(aside), "%s/%s", f->dir, name);
		fp = fopen(aside, "r");
		assert_non_null(fp);
		(void)!fgets(buf, sizeof(buf), fp);
		fclose(fp);
		assert_string_equal(buf, old_content);
	}
	snprintf(aside, sizeof(aside), "%s/%s-wal", f->dir, name);
	fp = fopen(aside, "r");
	assert_non_null(fp);
	buf[0] = '\0';
	(void)!fgets(buf, sizeof(buf), fp);
	fclose(fp);
	assert_string_equal(buf, old_wal);
	free(name);
	/* Nothing of the old file stays next to the new one. */
	snprintf(aside, sizeof(aside), "%s-journal", f->path);
	assert_int_equal(access(aside, F_OK), -1);

	assert_int_equal(sql_int(f->path, "PRAGMA user_version"),
			 INDEX_SCHEMA_VERSION);
	index = open_ok(f->path);
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_int_equal(index_get_run_stamp(index, "c1", "r1", &got), 0);
	index_close(index);
}

static void write_file(const char *path, const char *suffix, const char *text)
{
	char name[256];
	FILE *fp;

	snprintf(name, sizeof(name), "%s%s", path, suffix);
	fp = fopen(name, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static void test_garbage_moved_aside(void **state)
{
	struct fixture *f = *state;
	struct capture cap;
	struct index *index = NULL;
	char *logged;
	int ret;

	write_file(f->path, "", "this is not a database, just some text\n");
	/* A stray -wal would be replayed into the new file if left there. */
	write_file(f->path, "-wal", "stray wal\n");
	capture_begin(&cap);
	ret = index_open(f->path, &index);
	logged = capture_end(&cap);
	assert_int_equal(ret, 0);
	assert_non_null(index);
	index_close(index);
	assert_rebuilt(f, logged, "not a sound SQLite database",
		       "this is not a database, just some text\n", "stray wal\n");
	free(logged);
}

static void test_newer_version_moved_aside(void **state)
{
	struct fixture *f = *state;
	struct capture cap;
	struct index *index = NULL;
	char *logged;
	int ret;

	sql_exec(f->path, "PRAGMA journal_mode = DELETE;"
		 "CREATE TABLE future (x); PRAGMA user_version = 99");
	write_file(f->path, "-wal", "");
	write_file(f->path, "-journal", "");
	capture_begin(&cap);
	ret = index_open(f->path, &index);
	logged = capture_end(&cap);
	assert_int_equal(ret, 0);
	index_close(index);
	assert_rebuilt(f, logged, "schema version 99", NULL, "");
	free(logged);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master"
				 " WHERE name = 'future'"), 0);
}

static void test_unopenable(void **state)
{
	struct fixture *f = *state;
	struct index *index = (struct index *)&index;
	struct capture cap;
	char path[256], *logged;
	int ret;

	snprintf(path, sizeof(path), "%s/missing/index.db", f->dir);
	capture_begin(&cap);
	ret = index_open(path, &index);
	logged = capture_end(&cap);
	assert_int_equal(ret, -ENOENT);
	assert_null(index);
	assert_int_equal(count_lines(logged), 1);
	assert_non_null(strstr(logged, "error"));
	assert_non_null(strstr(logged, path));
	free(logged);

	/* A directory is not set aside as if it were a corrupt file. */
	assert_int_equal(mkdir(f->path, 0755), 0);
	capture_begin(&cap);
	ret = index_open(f->path, &index);
	logged = capture_end(&cap);
	assert_true(ret < 0);
	assert_int_equal(ret, -EISDIR);
	assert_int_equal(count_lines(logged), 1);
	free(logged);
	assert_int_equal(rmdir(f->path), 0);
}

static void test_unwritable(void **state)
{
	struct fixture *f = *state;
	struct index *index = NULL;
	char path[256];

	if (geteuid() == 0)
		skip();	/* root may write anywhere */

	/* An index SQLite could open only read-only is refused, not used. */
	index = open_ok(f->path);
	index_close(index);
	assert_int_equal(chmod(f->path, 0400), 0);
	assert_int_equal(index_open(f->path, &index), -EACCES);
	assert_null(index);

	/* A directory where the file cannot be created. */
	snprintf(path, sizeof(path), "%s/ro", f->dir);
	assert_int_equal(mkdir(path, 0555), 0);
	snprintf(path, sizeof(path), "%s/ro/index.db", f->dir);
	assert_int_equal(index_open(path, &index), -EACCES);
	assert_null(index);
}

static void test_two_handles(void **state)
{
	struct fixture *f = *state;
	struct index *a = open_ok(f->path);
	struct index *b = open_ok(f->path);
	struct index_run_stamp got;
	struct index_attrs attrs;
	char **runs;
	size_t n;

	assert_int_equal(index_put_run(a, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_int_equal(index_get_run_stamp(b, "c1", "r1", &got), 0);
	assert_memory_equal(&got, &stamp1, sizeof(got));
	assert_int_equal(index_get_file_attrs(b, "c1", "r1", "chart.png", &attrs), 0);
	assert_int_equal(attrs.count, 4);
	index_attrs_release(&attrs);

	assert_int_equal(index_put_run(b, "c1", "r2", &stamp1, NULL, NULL, 0, NULL), 0);
	assert_int_equal(index_delete_run(b, "c1", "r1"), 0);
	assert_int_equal(index_list_runs(a, "c1", &runs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(runs[0], "r2");
	index_free_list(runs, n);
	index_close(a);
	assert_int_equal(index_get_run_stamp(b, "c1", "r2", &got), 0);
	index_close(b);
}

struct worker {
	struct index *index;
	int id;
	int failures;
};

#define WORKER_FILES 50
#define WORKER_ROUNDS 100

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct index_file files[WORKER_FILES];
	char names[WORKER_FILES][16], run[16];
	struct index_run_stamp stamp = stamp1, got;
	struct index_attrs attrs;
	char **runs;
	size_t n;
	int64_t when;
	int i, round;

	snprintf(run, sizeof(run), "run-%d", w->id);
	for (i = 0; i < WORKER_FILES; i++) {
		snprintf(names[i], sizeof(names[i]), "file-%03d", i);
		files[i] = (struct index_file){ names[i], i, i, i + 1 };
	}
	for (round = 0; round < WORKER_ROUNDS; round++) {
		stamp.dir_mtime_ns = round;
		if (index_put_run(w->index, "c", run, &stamp, &full_meta,
				  files, WORKER_FILES, NULL))
			w->failures++;
		if (index_get_run_stamp(w->index, "c", run, &got) ||
		    got.dir_mtime_ns != round)
			w->failures++;
		if (index_get_run_attrs(w->index, "c", run, &attrs) ||
		    attrs.count != 5)
			w->failures++;
		index_attrs_release(&attrs);
		if (index_get_file_attrs(w->index, "c", run, "chart.png", &attrs) ||
		    attrs.count != 4)
			w->failures++;
		index_attrs_release(&attrs);
		if (index_get_run_expiry(w->index, "c", run, &when) ||
		    when != EXPIRES_UNIX)
			w->failures++;
		if (index_list_runs(w->index, "c", &runs, &n) || n < 1)
			w->failures++;
		else
			index_free_list(runs, n);
		if (round % 10 == 4 && index_delete_run(w->index, "c", run))
			w->failures++;
	}
	return NULL;
}

static void run_workers(struct index *a, struct index *b)
{
	struct worker w[4];
	pthread_t t[4];
	int i;

	for (i = 0; i < 4; i++) {
		w[i] = (struct worker){ i % 2 ? b : a, i, 0 };
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(w[i].failures, 0);
	}
}

static void test_threads(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	char *check;

	run_workers(index, index);
	index_close(index);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM runs"), 4);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"),
			 4 * (WORKER_FILES + 3));
	check = sql_text(f->path, "PRAGMA integrity_check");
	assert_non_null(check);
	assert_string_equal(check, "ok");
	free(check);
}

static void test_threads_two_daemons(void **state)
{
	struct fixture *f = *state;
	struct index *a = open_ok(f->path);
	struct index *b = open_ok(f->path);
	char *check;

	/* Two connections contend for the write lock: the busy timeout. */
	run_workers(a, b);
	index_close(a);
	index_close(b);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"),
			 4 * (WORKER_FILES + 3));
	check = sql_text(f->path, "PRAGMA integrity_check");
	assert_non_null(check);
	assert_string_equal(check, "ok");
	free(check);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM runs"), 4);
}

static void test_large_run(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	enum { N = 100000 };
	struct index_file *files = calloc(N, sizeof(*files));
	char *names = calloc(N, 16);
	struct timespec t0, t1, t2;
	size_t i;

	assert_non_null(files);
	assert_non_null(names);
	/* Reverse order, so the index has to sort. */
	for (i = 0; i < N; i++) {
		snprintf(names + 16 * i, 16, "f%06zu", N - 1 - i);
		files[i] = (struct index_file){ names + 16 * i, (int64_t)i, 7,
						(int64_t)i + 1000 };
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(index_put_run(index, "c", "big", &stamp1, &full_meta,
				       files, N, NULL), 0);
	sql_exec(f->path, "UPDATE artifacts SET sha256 = '" SHA "'");
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(index_put_run(index, "c", "big", &stamp1, &full_meta,
				       files, N, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	print_message("100,000 files: first put %.2f s, second put (carrying hashes) %.2f s\n",
		      (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
		      (double)(t2.tv_sec - t1.tv_sec) + (t2.tv_nsec - t1.tv_nsec) / 1e9);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), N + 3);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"
				 " WHERE sha256 IS NOT NULL"), N);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts"
				 " WHERE filename = 'f000000'"), N - 1 + 1000);
	index_close(index);
	free(files);
	free(names);
}

/* ---- schema 2: migration, run ownership, audit, usage, sha256 ---- */

/* Step 1 of the migrations as released: what a version 1 daemon made. */
static const char v1_schema[] =
	"PRAGMA journal_mode = WAL;"
	"CREATE TABLE runs (id INTEGER PRIMARY KEY, client TEXT NOT NULL,"
	" run TEXT NOT NULL, workflow_id TEXT, user_directive TEXT,"
	" created_at TEXT, expires_at TEXT, expires_at_unix INTEGER,"
	" status TEXT, metadata_valid INTEGER NOT NULL, dir_ino INTEGER,"
	" dir_mtime_ns INTEGER, meta_ino INTEGER, meta_size INTEGER,"
	" meta_mtime_ns INTEGER, meta_ctime_ns INTEGER, indexed_at INTEGER,"
	" UNIQUE (client, run));"
	"CREATE TABLE artifacts (run_id INTEGER NOT NULL REFERENCES runs(id)"
	" ON DELETE CASCADE, filename TEXT NOT NULL, agent_id TEXT,"
	" generated_at TEXT, size_bytes INTEGER, content_type TEXT,"
	" sha256 TEXT, file_size INTEGER, file_mtime_ns INTEGER,"
	" file_ino INTEGER, PRIMARY KEY (run_id, filename)) WITHOUT ROWID;"
	"CREATE INDEX runs_client_expiry ON runs (client, expires_at_unix);"
	"PRAGMA user_version = 1;";

static void test_migrate_v1(void **state)
{
	struct fixture *f = *state;
	struct index *index;
	struct index_run_stamp got;
	struct index_attrs attrs;
	uint64_t bytes, files;
	char **runs;
	size_t n;

	sql_exec(f->path, v1_schema);
	sql_exec(f->path,
		 "INSERT INTO runs VALUES (7, 'c1', 'r1', 'wf-9', '', NULL,"
		 " '" EXPIRES "', 1771048837, 'active', 1, 11, 22, 33, 44, 55,"
		 " 66, 1700000000);"
		 "INSERT INTO artifacts VALUES (7, 'chart.png', 'agent-1', NULL,"
		 " 1234, 'image/png', 'abc', 1234, 2000, 102);"
		 "INSERT INTO artifacts VALUES (7, 'bare.txt', NULL, NULL, NULL,"
		 " NULL, NULL, NULL, NULL, NULL);");
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"), 1);

	index = open_ok(f->path);
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"), INDEX_SCHEMA_VERSION);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master"
				 " WHERE name IN ('run_owners', 'audit',"
				 " 'audit_client')"), 3);
	/* Migrated in place, not set aside. */
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM runs"), 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), 2);
	assert_int_equal(index_get_run_stamp(index, "c1", "r1", &got), 0);
	assert_int_equal(got.dir_ino, 11);
	assert_int_equal(got.meta_ctime_ns, 66);
	assert_int_equal(index_list_runs(index, "c1", &runs, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(runs[0], "r1");
	index_free_list(runs, n);
	assert_int_equal(index_get_file_attrs(index, "c1", "r1", "chart.png",
					      &attrs), 0);
	assert_int_equal(attrs.count, 4);
	assert_attr(&attrs, 0, "agent_id", "agent-1");
	assert_attr(&attrs, 3, "sha256", "abc");
	index_attrs_release(&attrs);

	/* The new tables work on the migrated file. */
	assert_int_equal(index_get_usage(index, "c1", &bytes, &files), 0);
	assert_int_equal(bytes, 1234);
	assert_int_equal(files, 1);
	assert_int_equal(index_claim_run(index, "c1", "r1"), 0);
	assert_int_equal(index_claim_run(index, "c2", "r1"), -EACCES);
	index_close(index);

	/* Opening again: already current, nothing changes. */
	index = open_ok(f->path);
	index_close(index);
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"), INDEX_SCHEMA_VERSION);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM run_owners"), 1);
}

/* Schema 2's audit table: CHECK allowed 'promote' and 'delete' only. */
static const char v2_audit[] =
	"CREATE TABLE run_owners (run TEXT PRIMARY KEY, client TEXT NOT NULL,"
	" claimed_at INTEGER NOT NULL);"
	"CREATE TABLE audit (id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL,"
	" client TEXT NOT NULL, action TEXT NOT NULL CHECK (action IN ('promote', 'delete')),"
	" run TEXT, filename TEXT, size INTEGER, sha256 TEXT, error INTEGER NOT NULL,"
	" reason TEXT);"
	"CREATE INDEX audit_client ON audit (client, id);"
	"INSERT INTO audit VALUES (41, 1000, 'c1', 'promote', 'r1', 'a.txt', 3, NULL, 0, NULL);"
	"INSERT INTO audit VALUES (42, 2000, 'c1', 'delete', 'r1', 'a.txt', -1, NULL, 0, NULL);"
	"PRAGMA user_version = 2;";

static int collect_actions(void *ctx, const struct index_audit *row)
{
	int *actions = ctx;

	actions[actions[0] + 1] = (int)row->action;
	actions[0]++;
	return 0;
}

static void test_migrate_v2_audit(void **state)
{
	struct fixture *f = *state;
	struct index_audit repair = { 3000, "c1", INDEX_ACTION_REPAIR, "r1", "b.txt", 5, NULL, 0,
				      "entry rebuilt from the file" };
	int actions[8] = { 0 };
	struct index *index;

	sql_exec(f->path, v1_schema);
	sql_exec(f->path, v2_audit);
	index = open_ok(f->path);
	assert_int_equal(sql_int(f->path, "PRAGMA user_version"), INDEX_SCHEMA_VERSION);
	/* The rows and their ids survive the copy. */
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit WHERE id IN (41, 42)"), 2);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM sqlite_master"
				 " WHERE name = 'audit_client'"), 1);
	assert_int_equal(index_add_audit(index, &repair), 0);
	assert_int_equal(index_list_audit(index, "c1", 10, collect_actions, actions), 0);
	assert_int_equal(actions[0], 3);
	assert_int_equal(actions[1], INDEX_ACTION_PROMOTE);
	assert_int_equal(actions[2], INDEX_ACTION_DELETE);
	assert_int_equal(actions[3], INDEX_ACTION_REPAIR);
	assert_string_equal(index_action_name(INDEX_ACTION_REPAIR), "repair");
	assert_int_equal(sql_int(f->path, "SELECT id > 42 FROM audit WHERE action = 'repair'"), 1);
	index_close(index);
}

static void test_claim(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	char *owner = (char *)"untouched";
	int64_t now = (int64_t)time(NULL);

	assert_int_equal(index_get_run_owner(index, "r1", &owner), -ENOENT);
	assert_null(owner);

	assert_int_equal(index_claim_run(index, "c1", "r1"), 0);
	assert_int_equal(index_claim_run(index, "c2", "r1"), -EACCES);
	assert_int_equal(index_claim_run(index, "c1", "r1"), 0);
	assert_int_equal(index_get_run_owner(index, "r1", &owner), 0);
	assert_string_equal(owner, "c1");
	free(owner);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM run_owners"), 1);
	assert_true(sql_int(f->path, "SELECT claimed_at FROM run_owners") >= now - 60);
	assert_true(sql_int(f->path, "SELECT claimed_at FROM run_owners") <= now + 60);

	/* Another run is another claim; a prefix is not the same client. */
	assert_int_equal(index_claim_run(index, "c2", "r2"), 0);
	assert_int_equal(index_claim_run(index, "c", "r2"), -EACCES);
	assert_int_equal(index_claim_run(index, "c22", "r2"), -EACCES);
	assert_int_equal(index_get_run_owner(index, "r2", &owner), 0);
	assert_string_equal(owner, "c2");
	free(owner);

	/* Ownership outlives the run's rows: sessions/<run> is still there. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, NULL, NULL, 0, NULL), 0);
	assert_int_equal(index_delete_run(index, "c1", "r1"), 0);
	assert_int_equal(index_claim_run(index, "c2", "r1"), -EACCES);
	index_close(index);

	/* And the file: a second open sees the same owners. */
	index = open_ok(f->path);
	assert_int_equal(index_claim_run(index, "c2", "r1"), -EACCES);
	assert_int_equal(index_claim_run(index, "c1", "r1"), 0);
	index_close(index);
}

#define CLAIM_RUNS 200

struct claimer {
	struct index *index;
	const char *client;
	pthread_barrier_t *start;
	int result[CLAIM_RUNS];
};

static void *claimer_main(void *arg)
{
	struct claimer *c = arg;
	char run[32];
	int i;

	/* Both start each claim together: every run is contended. */
	for (i = 0; i < CLAIM_RUNS; i++) {
		snprintf(run, sizeof(run), "run-%d", i);
		pthread_barrier_wait(c->start);
		c->result[i] = index_claim_run(c->index, c->client, run);
	}
	return NULL;
}

static void test_claim_race(void **state)
{
	struct fixture *f = *state;
	struct index *a = open_ok(f->path);
	struct index *b = open_ok(f->path);
	pthread_barrier_t start;
	struct claimer c[2] = {
		{ .index = a, .client = "alice", .start = &start },
		{ .index = b, .client = "bob", .start = &start },
	};
	pthread_t t[2];
	char run[32], *owner;
	int i, j, wins[2] = { 0, 0 };

	/* Two connections, as two daemons: only SQLite's locking between them. */
	assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, claimer_main, &c[i]), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	pthread_barrier_destroy(&start);

	for (i = 0; i < CLAIM_RUNS; i++) {
		snprintf(run, sizeof(run), "run-%d", i);
		assert_int_equal(index_get_run_owner(a, run, &owner), 0);
		for (j = 0; j < 2; j++) {
			if (strcmp(owner, c[j].client) == 0) {
				assert_int_equal(c[j].result[i], 0);
				wins[j]++;
			} else {
				assert_int_equal(c[j].result[i], -EACCES);
			}
		}
		free(owner);
	}
	assert_int_equal(wins[0] + wins[1], CLAIM_RUNS);
	print_message("claims won: alice %d, bob %d\n", wins[0], wins[1]);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM run_owners"),
			 CLAIM_RUNS);
	index_close(a);
	index_close(b);
}

/* What index_list_audit() handed over, copied. */
struct audit_seen {
	size_t n;
	int stop_at;		/* return 99 from this call on (1-based); 0: never */
	struct {
		int64_t time_ns;
		char client[16];
		enum index_action action;
		char run[16];
		char filename[16];
		int64_t size;
		char sha256[80];
		int error;
		char reason[32];
		bool null_run, null_filename, null_sha256, null_reason;
	} row[16];
};

static void copy_field(char *dst, size_t size, const char *src, bool *null)
{
	*null = src == NULL;
	snprintf(dst, size, "%s", src ? src : "");
}

static int audit_collect(void *ctx, const struct index_audit *row)
{
	struct audit_seen *seen = ctx;
	bool unused;

	assert_true(seen->n < 16);
	seen->row[seen->n].time_ns = row->time_ns;
	copy_field(seen->row[seen->n].client, 16, row->client, &unused);
	seen->row[seen->n].action = row->action;
	copy_field(seen->row[seen->n].run, 16, row->run,
		   &seen->row[seen->n].null_run);
	copy_field(seen->row[seen->n].filename, 16, row->filename,
		   &seen->row[seen->n].null_filename);
	seen->row[seen->n].size = row->size;
	copy_field(seen->row[seen->n].sha256, 80, row->sha256,
		   &seen->row[seen->n].null_sha256);
	seen->row[seen->n].error = row->error;
	copy_field(seen->row[seen->n].reason, 32, row->reason,
		   &seen->row[seen->n].null_reason);
	seen->n++;
	return seen->stop_at && (int)seen->n >= seen->stop_at ? 99 : 0;
}

static int list_audit(struct index *index, const char *client, size_t limit,
		      struct audit_seen *seen, int stop_at)
{
	memset(seen, 0, sizeof(*seen));
	seen->stop_at = stop_at;
	return index_list_audit(index, client, limit, audit_collect, seen);
}

static void test_audit(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	const struct index_audit rows[] = {
		{ 1000, "c1", INDEX_ACTION_PROMOTE, "r1", "a.csv", 10, SHA, 0, NULL },
		{ 2000, "c2", INDEX_ACTION_PROMOTE, "r9", "x.bin", 5, NULL, 0, NULL },
		{ 3000, "c1", INDEX_ACTION_PROMOTE, "r1", "../x", -1, NULL, EINVAL,
		  "file name contains '/'" },
		/* A whole run deleted: no file, size unknown. */
		{ 4000, "c1", INDEX_ACTION_DELETE, "r1", NULL, -1, NULL, 0, NULL },
		/* A request that named no run. */
		{ 5000, "c1", INDEX_ACTION_PROMOTE, NULL, NULL, -1, NULL, EACCES,
		  "no run given" },
	};
	struct index_audit bad = rows[0];
	struct audit_seen seen;
	struct capture cap;
	char *logged;
	size_t i;
	int ret;

	assert_int_equal(list_audit(index, "c1", 10, &seen, 0), 0);
	assert_int_equal(seen.n, 0);
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		assert_int_equal(index_add_audit(index, &rows[i]), 0);

	/* All of c1's, oldest first, every field as given. */
	assert_int_equal(list_audit(index, "c1", 10, &seen, 0), 0);
	assert_int_equal(seen.n, 4);
	assert_int_equal(seen.row[0].time_ns, 1000);
	assert_string_equal(seen.row[0].client, "c1");
	assert_int_equal(seen.row[0].action, INDEX_ACTION_PROMOTE);
	assert_string_equal(seen.row[0].run, "r1");
	assert_string_equal(seen.row[0].filename, "a.csv");
	assert_int_equal(seen.row[0].size, 10);
	assert_string_equal(seen.row[0].sha256, SHA);
	assert_int_equal(seen.row[0].error, 0);
	assert_true(seen.row[0].null_reason);

	assert_int_equal(seen.row[1].time_ns, 3000);
	assert_string_equal(seen.row[1].filename, "../x");
	assert_int_equal(seen.row[1].size, -1);
	assert_true(seen.row[1].null_sha256);
	assert_int_equal(seen.row[1].error, EINVAL);
	assert_string_equal(seen.row[1].reason, "file name contains '/'");

	assert_int_equal(seen.row[2].action, INDEX_ACTION_DELETE);
	assert_string_equal(seen.row[2].run, "r1");
	assert_true(seen.row[2].null_filename);

	assert_int_equal(seen.row[3].time_ns, 5000);
	assert_true(seen.row[3].null_run);
	assert_true(seen.row[3].null_filename);
	assert_int_equal(seen.row[3].error, EACCES);

	/* The stored form, as an operator sees it. */
	assert_int_equal(sql_int(f->path, "SELECT size FROM audit WHERE time_ns = 3000"), -2);
	assert_int_equal(sql_int(f->path, "SELECT action = 'delete' FROM audit"
				 " WHERE time_ns = 4000"), 1);
	assert_int_equal(sql_int(f->path, "SELECT run FROM audit WHERE time_ns = 5000"), -2);

	/* A limit keeps the newest, still oldest first. */
	assert_int_equal(list_audit(index, "c1", 2, &seen, 0), 0);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.row[0].time_ns, 4000);
	assert_int_equal(seen.row[1].time_ns, 5000);
	assert_int_equal(list_audit(index, "c1", 1, &seen, 0), 0);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.row[0].time_ns, 5000);
	assert_int_equal(list_audit(index, "c1", 0, &seen, 0), 0);
	assert_int_equal(seen.n, 0);
	assert_int_equal(list_audit(index, "c1", SIZE_MAX, &seen, 0), 0);
	assert_int_equal(seen.n, 4);

	/* Each client sees its own rows only. */
	assert_int_equal(list_audit(index, "c2", 10, &seen, 0), 0);
	assert_int_equal(seen.n, 1);
	assert_string_equal(seen.row[0].filename, "x.bin");
	assert_string_equal(seen.row[0].client, "c2");
	assert_int_equal(list_audit(index, "c", 10, &seen, 0), 0);
	assert_int_equal(seen.n, 0);

	/* fn's first non-zero return stops the walk and is returned. */
	assert_int_equal(list_audit(index, "c1", 10, &seen, 2), 99);
	assert_int_equal(seen.n, 2);

	/* An action index.h does not know is refused, with one error. */
	bad.action = (enum index_action)7;
	capture_begin(&cap);
	ret = index_add_audit(index, &bad);
	logged = capture_end(&cap);
	assert_int_equal(ret, -EIO);
	assert_int_equal(count_lines(logged), 1);
	assert_non_null(strstr(logged, "c1"));
	free(logged);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"), 5);
	index_close(index);
}

static void add_audit_rows(struct index *index, const char *client, int n)
{
	struct index_audit row = { 0, client, INDEX_ACTION_PROMOTE, "r", "f",
				   1, NULL, 0, NULL };
	int i;

	for (i = 0; i < n; i++) {
		row.time_ns = 900000000 + i;
		assert_int_equal(index_add_audit(index, &row), 0);
	}
}

static void test_audit_bound(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct audit_seen seen;

	index_close(index);
	/* 100,500 old rows of one client, 10 of another, interleaved at the end. */
	sql_exec(f->path,
		 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
		 " WHERE i < 100500)"
		 " INSERT INTO audit (time_ns, client, action, error)"
		 " SELECT i, 'big', 'promote', 0 FROM n;"
		 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
		 " WHERE i < 10)"
		 " INSERT INTO audit (time_ns, client, action, error)"
		 " SELECT i, 'small', 'delete', 0 FROM n;");
	index = open_ok(f->path);

	/* The first row a struct index adds for a client trims it. */
	add_audit_rows(index, "big", 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"
				 " WHERE client = 'big'"), 100000);
	/* The oldest went: 100,500 + 1 - 100,000 = 501 of them. */
	assert_int_equal(sql_int(f->path, "SELECT min(time_ns) FROM audit"
				 " WHERE client = 'big'"), 502);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"
				 " WHERE client = 'small'"), 10);

	/* Then every 1000 rows: up to 999 over, never more. */
	add_audit_rows(index, "big", 999);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"
				 " WHERE client = 'big'"), 100999);
	add_audit_rows(index, "big", 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"
				 " WHERE client = 'big'"), 100000);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"
				 " WHERE client = 'small'"), 10);

	/* The newest stay, and are what a listing shows. */
	assert_int_equal(list_audit(index, "big", 2, &seen, 0), 0);
	assert_int_equal(seen.n, 2);
	assert_int_equal(seen.row[0].time_ns, 900000000 + 998);
	assert_int_equal(seen.row[1].time_ns, 900000000);

	/* A small client's trim deletes nothing. */
	add_audit_rows(index, "small", 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"
				 " WHERE client = 'small'"), 11);
	index_close(index);
}

/*
 * The usage the runs' counters give (index_get_usage()) equals the sum
 * over the artifact rows they are kept from.
 */
static void assert_usage_of_rows(struct index *index, const char *path, const char *client)
{
	char sql[256];
	uint64_t bytes, files;

	assert_int_equal(index_get_usage(index, client, &bytes, &files), 0);
	snprintf(sql, sizeof(sql), "SELECT coalesce(sum(a.file_size), 0) FROM runs r"
		 " JOIN artifacts a ON a.run_id = r.id WHERE r.client = '%s'", client);
	assert_int_equal((int64_t)bytes, sql_int(path, sql));
	snprintf(sql, sizeof(sql), "SELECT count(a.file_size) FROM runs r"
		 " JOIN artifacts a ON a.run_id = r.id WHERE r.client = '%s'", client);
	assert_int_equal((int64_t)files, sql_int(path, sql));
}

static void test_usage(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	const struct index_file other[] = {
		{ .filename = "big.bin", .size = 1000000, .mtime_ns = 1, .ino = 201 },
	};
	uint64_t bytes = 42, files = 42;

	assert_int_equal(index_get_usage(index, "c1", &bytes, &files), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(files, 0);

	/* 4 rows: chart.png and data.csv have files, bare.txt and huge.bin not. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_int_equal(index_get_usage(index, "c1", &bytes, &files), 0);
	assert_int_equal(bytes, 1244);
	assert_int_equal(files, 2);

	assert_int_equal(index_put_run(index, "c1", "r2", &stamp1, NULL,
				       other, 1, NULL), 0);
	assert_int_equal(index_put_run(index, "c2", "r1", &stamp1, NULL,
				       some_files, 1, NULL), 0);
	assert_int_equal(index_get_usage(index, "c1", &bytes, &files), 0);
	assert_int_equal(bytes, 1001244);
	assert_int_equal(files, 3);
	assert_int_equal(index_get_usage(index, "c2", &bytes, &files), 0);
	assert_int_equal(bytes, 10);
	assert_int_equal(files, 1);

	/* A run with entries but no files adds nothing. */
	assert_int_equal(index_put_run(index, "c3", "r1", &stamp1, &full_meta,
				       NULL, 0, NULL), 0);
	assert_int_equal(index_get_usage(index, "c3", &bytes, &files), 0);
	assert_int_equal(bytes, 0);
	assert_int_equal(files, 0);

	assert_int_equal(index_delete_run(index, "c1", "r2"), 0);
	assert_int_equal(index_get_usage(index, "c1", &bytes, &files), 0);
	assert_int_equal(bytes, 1244);
	assert_int_equal(files, 2);

	/* Indexed again with other files: the counters follow the rows. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       other, 1, NULL), 0);
	assert_int_equal(index_get_usage(index, "c1", &bytes, &files), 0);
	assert_int_equal(bytes, 1000000);
	assert_int_equal(files, 1);
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_usage_of_rows(index, f->path, "c1");
	assert_usage_of_rows(index, f->path, "c2");
	assert_usage_of_rows(index, f->path, "c3");
	index_close(index);
}

static void test_set_sha256(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	const char *other = "0000000000000000000000000000000000000000000000000000000000000000";

	/* data.csv: size 10, mtime 1000, ino 101; chart.png: 1234, 2000, 102. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_int_equal(index_set_sha256(index, "c1", "r1", "data.csv",
					  101, 10, 1000, SHA), 0);
	assert_sha(index, "data.csv", true);
	assert_sha(index, "chart.png", false);
	/* Setting it again is not "no row". */
	assert_int_equal(index_set_sha256(index, "c1", "r1", "data.csv",
					  101, 10, 1000, SHA), 0);

	/* Any difference means the row describes other content: no change. */
	assert_int_equal(index_set_sha256(index, "c1", "r1", "data.csv",
					  999, 10, 1000, other), -ENOENT);
	assert_int_equal(index_set_sha256(index, "c1", "r1", "data.csv",
					  101, 11, 1000, other), -ENOENT);
	assert_int_equal(index_set_sha256(index, "c1", "r1", "data.csv",
					  101, 10, 1001, other), -ENOENT);
	assert_sha(index, "data.csv", true);
	assert_int_equal(index_set_sha256(index, "c1", "r1", "chart.png",
					  102, 1234, 1999, SHA), -ENOENT);
	assert_sha(index, "chart.png", false);

	/* No such row: other client, run, file; an entry without a file. */
	assert_int_equal(index_set_sha256(index, "c2", "r1", "data.csv",
					  101, 10, 1000, other), -ENOENT);
	assert_int_equal(index_set_sha256(index, "c1", "r2", "data.csv",
					  101, 10, 1000, other), -ENOENT);
	assert_int_equal(index_set_sha256(index, "c1", "r1", "nothing",
					  101, 10, 1000, other), -ENOENT);
	assert_int_equal(index_set_sha256(index, "c1", "r1", "bare.txt",
					  0, 0, 0, other), -ENOENT);
	assert_sha(index, "bare.txt", false);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"
				 " WHERE sha256 IS NOT NULL"), 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"
				 " WHERE sha256 = '" SHA "' AND filename = 'data.csv'"), 1);

	/* The hash then lives as any other: kept while the file stays. */
	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	assert_sha(index, "data.csv", true);
	index_close(index);
}

/* index_put_artifacts() of one file. */
static int put_artifact(struct index *index, const char *run, const struct meta_artifact *entry,
			const struct index_file *file)
{
	struct index_landed landed = { entry, *file, SHA };

	return index_put_artifacts(index, "c1", run, &stamp1, &full_meta, &landed, 1);
}

static void test_put_artifact(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct meta_artifact entry = {
		.filename = "new.md", .agent_id = "agent-9",
		.generated_at = "2026-11-27T08:52:13.145199101+00:00",
		.content_type = "text/markdown", .has_size_bytes = true, .size_bytes = 5,
	};
	struct index_file file = { .filename = "new.md", .size = 5, .mtime_ns = 3000, .ino = 103 };

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	int64_t before = sql_int(f->path, "SELECT count(*) FROM artifacts");
	assert_int_equal(put_artifact(index, "r1", &entry, &file), 0);
	/* One row more, the others untouched, the new one complete. */
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), before + 1);
	assert_sha(index, "new.md", true);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts WHERE filename = 'new.md'"),
			 103);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"
				 " WHERE filename = 'data.csv' AND file_ino = 101"), 1);
	/* Again with other content: replaced, never duplicated. */
	file.ino = 104;
	assert_int_equal(put_artifact(index, "r1", &entry, &file), 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts WHERE filename = 'new.md'"),
			 1);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts WHERE filename = 'new.md'"),
			 104);
	/* A replaced row leaves the usage, the new one counts. */
	file.size = 7;
	assert_int_equal(put_artifact(index, "r1", &entry, &file), 0);
	assert_usage_of_rows(index, f->path, "c1");
	/* A run not indexed yet gets its row too. */
	assert_int_equal(put_artifact(index, "r9", &entry, &file), 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM runs WHERE run = 'r9'"), 1);
	index_close(index);
}

static void test_put_artifacts_of_a_group(void **state)
{
	struct fixture *f = *state;
	struct index *index = open_ok(f->path);
	struct meta_artifact entries[2] = {
		{ .filename = "a.md", .agent_id = "agent-1", .generated_at = "2026-11-27T08:52:13Z",
		  .content_type = "text/markdown", .has_size_bytes = true, .size_bytes = 5 },
		{ .filename = "b.md", .agent_id = "agent-2", .generated_at = "2026-11-27T08:52:14Z",
		  .content_type = "text/markdown", .has_size_bytes = true, .size_bytes = 6 },
	};
	struct index_landed landed[2] = {
		{ &entries[0], { .filename = "a.md", .size = 5, .mtime_ns = 1, .ino = 201 }, SHA },
		{ &entries[1], { .filename = "b.md", .size = 6, .mtime_ns = 2, .ino = 202 }, NULL },
	};

	assert_int_equal(index_put_run(index, "c1", "r1", &stamp1, &full_meta,
				       some_files, 2, NULL), 0);
	int64_t before = sql_int(f->path, "SELECT count(*) FROM artifacts");
	assert_int_equal(index_put_artifacts(index, "c1", "r1", &stamp1, &full_meta, landed, 2),
			 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), before + 2);
	assert_int_equal(sql_int(f->path, "SELECT file_ino FROM artifacts WHERE filename = 'b.md'"),
			 202);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"
				 " WHERE filename = 'a.md' AND sha256 = '" SHA "'"), 1);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"
				 " WHERE filename = 'b.md' AND sha256 IS NULL"), 1);
	assert_usage_of_rows(index, f->path, "c1");
	/* Nothing to record is a transaction that changes nothing. */
	assert_int_equal(index_put_artifacts(index, "c1", "r1", &stamp1, &full_meta, landed, 0),
			 0);
	assert_int_equal(sql_int(f->path, "SELECT count(*) FROM artifacts"), before + 2);
	index_close(index);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_artifact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_put_artifacts_of_a_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hash_source_is_asked_for_unhashed_files_only,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_creates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_empty_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stamp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_attrs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_attrs_and_union, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sha256_carry_over, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_list_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_typed_reads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage_moved_aside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_version_moved_aside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unopenable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unwritable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
		cmocka_unit_test_setup_teardown(test_threads_two_daemons, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_v2_audit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dropped_entry_kept_for_a_promoted_file, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_claim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_claim_race, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_audit_bound, setup, teardown),
		cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_set_sha256, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
