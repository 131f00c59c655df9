/*
 * index.c - the SQLite index: a rebuildable cache of the store's metadata,
 * plus (since schema 2) what the store cannot tell: who owns each run, and
 * the audit of promotions and deletions.
 *
 * This file owns the index database file and everything about it: opening
 * it (WAL, busy timeout, setting aside a file that is not a usable index),
 * the schema and its forward migrations, the prepared statements, and the
 * translation of SQLite result codes to errno.  No other file talks SQL.
 *
 * One connection per struct index, used by one thread at a time under
 * index->lock; several daemons share a file through SQLite's own locking.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "index.h"
#include "log.h"
#include "meta.h"

/* How long a statement waits for another daemon's write lock. */
#define BUSY_TIMEOUT_MS 5000

/*
 * Schema migrations: migrations[v] turns a version v-1 file into version v.
 * (The newlines are for operators: sqlite3's .schema shows the text as is.)
 * The next schema version appends its step here and bumps
 * INDEX_SCHEMA_VERSION; steps already released never change, since files
 * in the field were built by them.
 */
static const char *const migrations[INDEX_SCHEMA_VERSION + 1] = {
	[1] =
	"CREATE TABLE runs (\n"
	"\tid INTEGER PRIMARY KEY,\n"
	"\tclient TEXT NOT NULL,\n"
	"\trun TEXT NOT NULL,\n"
	"\tworkflow_id TEXT,\n"
	"\tuser_directive TEXT,\n"
	"\tcreated_at TEXT,\n"
	"\texpires_at TEXT,\n"
	"\texpires_at_unix INTEGER,\n"
	"\tstatus TEXT,\n"
	"\tmetadata_valid INTEGER NOT NULL,\n"
	"\tdir_ino INTEGER,\n"
	"\tdir_mtime_ns INTEGER,\n"
	"\tmeta_ino INTEGER,\n"
	"\tmeta_size INTEGER,\n"
	"\tmeta_mtime_ns INTEGER,\n"
	"\tmeta_ctime_ns INTEGER,\n"
	"\tindexed_at INTEGER,\n"
	"\tUNIQUE (client, run)\n"
	");\n"
	"CREATE TABLE artifacts (\n"
	"\trun_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
	"\tfilename TEXT NOT NULL,\n"
	"\tagent_id TEXT,\n"
	"\tgenerated_at TEXT,\n"
	"\tsize_bytes INTEGER,\n"
	"\tcontent_type TEXT,\n"
	"\tsha256 TEXT,\n"
	"\tfile_size INTEGER,\n"
	"\tfile_mtime_ns INTEGER,\n"
	"\tfile_ino INTEGER,\n"
	"\tPRIMARY KEY (run_id, filename)\n"
	") WITHOUT ROWID;\n"
	"CREATE INDEX runs_client_expiry ON runs (client, expires_at_unix);\n",
	/*
	 * Unlike the tables of step 1, these are not derived from the store
	 * and cannot be rebuilt from it: who owns a run (sessions/ is not
	 * scoped by client, so the first tenant to promote into a run keeps
	 * it), and the promotion audit.  The ids of audit only grow (rows are
	 * deleted oldest first), so id order is insertion order.
	 */
	[2] =
	"CREATE TABLE run_owners (\n"
	"\trun TEXT PRIMARY KEY,\n"
	"\tclient TEXT NOT NULL,\n"
	"\tclaimed_at INTEGER NOT NULL\n"
	");\n"
	"CREATE TABLE audit (\n"
	"\tid INTEGER PRIMARY KEY,\n"
	"\ttime_ns INTEGER NOT NULL,\n"
	"\tclient TEXT NOT NULL,\n"
	"\taction TEXT NOT NULL CHECK (action IN ('promote', 'delete')),\n"
	"\trun TEXT,\n"
	"\tfilename TEXT,\n"
	"\tsize INTEGER,\n"
	"\tsha256 TEXT,\n"
	"\terror INTEGER NOT NULL,\n"
	"\treason TEXT\n"
	");\n"
	"CREATE INDEX audit_client ON audit (client, id);\n",
	/*
	 * Repairs of metadata.json (entries put back or folded) are audited
	 * too.  SQLite cannot change a CHECK constraint in place: the table
	 * is copied, ids and all.
	 */
	[3] =
	"CREATE TABLE audit_v3 (\n"
	"\tid INTEGER PRIMARY KEY,\n"
	"\ttime_ns INTEGER NOT NULL,\n"
	"\tclient TEXT NOT NULL,\n"
	"\taction TEXT NOT NULL CHECK (action IN ('promote', 'delete', 'repair')),\n"
	"\trun TEXT,\n"
	"\tfilename TEXT,\n"
	"\tsize INTEGER,\n"
	"\tsha256 TEXT,\n"
	"\terror INTEGER NOT NULL,\n"
	"\treason TEXT\n"
	");\n"
	"INSERT INTO audit_v3 SELECT id, time_ns, client, action, run, filename, size,"
	" sha256, error, reason FROM audit;\n"
	"DROP TABLE audit;\n"
	"ALTER TABLE audit_v3 RENAME TO audit;\n"
	"CREATE INDEX audit_client ON audit (client, id);\n",
	/*
	 * Each run keeps the sum of its artifacts' file sizes and their
	 * count, kept by triggers: a tenant's usage (statfs, quotas) adds up
	 * its runs, not every artifact row (a million rows took 150 ms, with
	 * the index locked).  Derived from artifacts, like them rebuilt with
	 * the store.  The REPLACE of an artifact row deletes the old one
	 * with recursive_triggers on (index_open() sets it), or its delete
	 * trigger would not fire.
	 */
	[4] =
	"ALTER TABLE runs ADD COLUMN artifact_bytes INTEGER NOT NULL DEFAULT 0;\n"
	"ALTER TABLE runs ADD COLUMN artifact_files INTEGER NOT NULL DEFAULT 0;\n"
	"UPDATE runs SET\n"
	"\tartifact_bytes = (SELECT coalesce(sum(file_size), 0) FROM artifacts\n"
	"\t\tWHERE run_id = runs.id AND file_size IS NOT NULL),\n"
	"\tartifact_files = (SELECT count(*) FROM artifacts\n"
	"\t\tWHERE run_id = runs.id AND file_size IS NOT NULL);\n"
	"CREATE TRIGGER artifacts_usage_insert AFTER INSERT ON artifacts\n"
	"WHEN NEW.file_size IS NOT NULL BEGIN\n"
	"\tUPDATE runs SET artifact_bytes = artifact_bytes + NEW.file_size,\n"
	"\t\tartifact_files = artifact_files + 1 WHERE id = NEW.run_id;\n"
	"END;\n"
	"CREATE TRIGGER artifacts_usage_delete AFTER DELETE ON artifacts\n"
	"WHEN OLD.file_size IS NOT NULL BEGIN\n"
	"\tUPDATE runs SET artifact_bytes = artifact_bytes - OLD.file_size,\n"
	"\t\tartifact_files = artifact_files - 1 WHERE id = OLD.run_id;\n"
	"END;\n"
	"CREATE TRIGGER artifacts_usage_update AFTER UPDATE OF run_id, file_size ON artifacts\n"
	"BEGIN\n"
	"\tUPDATE runs SET artifact_bytes = artifact_bytes - coalesce(OLD.file_size, 0),\n"
	"\t\tartifact_files = artifact_files - (OLD.file_size IS NOT NULL)\n"
	"\t\tWHERE id = OLD.run_id;\n"
	"\tUPDATE runs SET artifact_bytes = artifact_bytes + coalesce(NEW.file_size, 0),\n"
	"\t\tartifact_files = artifact_files + (NEW.file_size IS NOT NULL)\n"
	"\t\tWHERE id = NEW.run_id;\n"
	"END;\n",
};

/*
 * The audit keeps the newest AUDIT_KEEP rows of each client.  Finding the
 * cut costs a walk over up to AUDIT_KEEP index entries (milliseconds), too
 * much for every insert: a client is trimmed at its first insert through
 * a struct index (what earlier processes counted is lost) and then after
 * every AUDIT_TRIM_EVERY more, so a client holds at most AUDIT_KEEP +
 * AUDIT_TRIM_EVERY - 1 rows per daemon writing for it.  The counts are
 * remembered for up to AUDIT_CLIENTS_MAX clients; past that they are all
 * forgotten, which costs each client one early trim.
 */
#define AUDIT_KEEP 100000
#define AUDIT_TRIM_EVERY 1000
#define AUDIT_CLIENTS_MAX 1024

enum stmt_id {
	STMT_BEGIN,
	STMT_COMMIT,
	STMT_ROLLBACK,
	STMT_GET_STAMP,
	STMT_UPSERT_RUN,
	STMT_OLD_HASHES,
	STMT_DELETE_ARTIFACTS,
	STMT_INSERT_ARTIFACT,
	STMT_DELETE_RUN,
	STMT_LIST_RUNS,
	STMT_GET_EXPIRY,
	STMT_RUN_ATTRS,
	STMT_FILE_ATTRS,
	STMT_CLAIM_RUN,
	STMT_GET_OWNER,
	STMT_ADD_AUDIT,
	STMT_TRIM_AUDIT,
	STMT_LIST_AUDIT,
	STMT_USAGE,
	STMT_SET_SHA256,
	STMT_REPLACE_ARTIFACT,
	STMT_COUNT
};

/* The audit columns read_audit_row() decodes, in its order. */
#define AUDIT_COLUMNS "time_ns, client, action, run, filename, size, sha256, error, reason"

static const char *const stmt_sql[STMT_COUNT] = {
	/* IMMEDIATE: take the write lock now, so that no other daemon can
	 * make our read of the old rows stale before we write. */
	[STMT_BEGIN] = "BEGIN IMMEDIATE",
	[STMT_COMMIT] = "COMMIT",
	[STMT_ROLLBACK] = "ROLLBACK",
	[STMT_GET_STAMP] =
	"SELECT dir_ino, dir_mtime_ns, meta_ino, meta_size, meta_mtime_ns,"
	" meta_ctime_ns FROM runs WHERE client = ?1 AND run = ?2",
	/* An upsert, not a replace: the row keeps its id. */
	[STMT_UPSERT_RUN] =
	"INSERT INTO runs (client, run, workflow_id, user_directive,"
	" created_at, expires_at, expires_at_unix, status, metadata_valid,"
	" dir_ino, dir_mtime_ns, meta_ino, meta_size, meta_mtime_ns,"
	" meta_ctime_ns, indexed_at)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
	" ?15, ?16)"
	" ON CONFLICT (client, run) DO UPDATE SET"
	" workflow_id = excluded.workflow_id,"
	" user_directive = excluded.user_directive,"
	" created_at = excluded.created_at,"
	" expires_at = excluded.expires_at,"
	" expires_at_unix = excluded.expires_at_unix,"
	" status = excluded.status,"
	" metadata_valid = excluded.metadata_valid,"
	" dir_ino = excluded.dir_ino,"
	" dir_mtime_ns = excluded.dir_mtime_ns,"
	" meta_ino = excluded.meta_ino,"
	" meta_size = excluded.meta_size,"
	" meta_mtime_ns = excluded.meta_mtime_ns,"
	" meta_ctime_ns = excluded.meta_ctime_ns,"
	" indexed_at = excluded.indexed_at"
	" RETURNING id",
	/* The primary key gives this order for free; index_put_run merges on
	 * it, and strcmp() orders like SQLite's BINARY collation. */
	[STMT_OLD_HASHES] =
	"SELECT filename, file_ino, file_size, file_mtime_ns, sha256,"
	" agent_id, generated_at, size_bytes, content_type"
	" FROM artifacts WHERE run_id = ?1 AND sha256 IS NOT NULL"
	" AND file_ino IS NOT NULL ORDER BY filename",
	[STMT_DELETE_ARTIFACTS] = "DELETE FROM artifacts WHERE run_id = ?1",
	[STMT_REPLACE_ARTIFACT] =
	"INSERT OR REPLACE INTO artifacts (run_id, filename, agent_id, generated_at,"
	" size_bytes, content_type, sha256, file_size, file_mtime_ns,"
	" file_ino) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	[STMT_INSERT_ARTIFACT] =
	"INSERT INTO artifacts (run_id, filename, agent_id, generated_at,"
	" size_bytes, content_type, sha256, file_size, file_mtime_ns,"
	" file_ino) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
	/* The artifact rows go with it: ON DELETE CASCADE. */
	[STMT_DELETE_RUN] = "DELETE FROM runs WHERE client = ?1 AND run = ?2",
	[STMT_LIST_RUNS] =
	"SELECT run FROM runs WHERE client = ?1 ORDER BY run",
	[STMT_GET_EXPIRY] =
	"SELECT expires_at_unix FROM runs WHERE client = ?1 AND run = ?2",
	/* Column order is the order index.h promises. */
	[STMT_RUN_ATTRS] =
	"SELECT workflow_id, user_directive, created_at, expires_at, status"
	" FROM runs WHERE client = ?1 AND run = ?2",
	[STMT_FILE_ATTRS] =
	"SELECT a.agent_id, a.generated_at, a.content_type, a.size_bytes,"
	" a.sha256 FROM runs r JOIN artifacts a ON a.run_id = r.id"
	" WHERE r.client = ?1 AND r.run = ?2 AND a.filename = ?3",
	/* The first claim stays: see index_claim_run(). */
	[STMT_CLAIM_RUN] =
	"INSERT OR IGNORE INTO run_owners (run, client, claimed_at)"
	" VALUES (?1, ?2, ?3)",
	[STMT_GET_OWNER] = "SELECT client FROM run_owners WHERE run = ?1",
	[STMT_ADD_AUDIT] =
	"INSERT INTO audit (time_ns, client, action, run, filename, size,"
	" sha256, error, reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	/* Both walks are over audit_client; no row at ?2 means nothing to cut. */
	[STMT_TRIM_AUDIT] =
	"DELETE FROM audit WHERE client = ?1 AND id < (SELECT id FROM audit"
	" WHERE client = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
	/* The newest ?2 rows (audit_client, backwards), then oldest first. */
	[STMT_LIST_AUDIT] =
	"SELECT " AUDIT_COLUMNS
	" FROM (SELECT * FROM audit WHERE client = ?1 ORDER BY id DESC"
	" LIMIT ?2) ORDER BY id",
	[STMT_USAGE] =
	"SELECT coalesce(sum(artifact_bytes), 0), coalesce(sum(artifact_files), 0)"
	" FROM runs WHERE client = ?1",
	[STMT_SET_SHA256] =
	"UPDATE artifacts SET sha256 = ?7 WHERE run_id = (SELECT id FROM runs"
	" WHERE client = ?1 AND run = ?2) AND filename = ?3 AND file_ino = ?4"
	" AND file_size = ?5 AND file_mtime_ns = ?6",
};

static const char *const run_attr_names[] = {
	"workflow_id", "user_directive", "created_at", "expires_at", "status",
};

static const char *const file_attr_names[] = {
	"agent_id", "generated_at", "content_type", "size_bytes", "sha256",
};

/* How many audit rows a client added since its last trim. */
struct audit_count {
	char *client;
	unsigned inserts;
};

struct index {
	char *path;			/* for log lines; immutable */
	pthread_mutex_t lock;		/* guards everything below */
	sqlite3 *db;
	sqlite3_stmt *stmt[STMT_COUNT];
	struct audit_count *audit_counts;	/* sorted by client */
	size_t n_audit_counts;
};

/*
 * The one translation of SQLite result codes to errno.  For open and I/O
 * failures SQLite keeps the errno of the system call that failed, which
 * says more (ENOENT, EACCES, EISDIR) than any code could.
 */
static int errno_from_sqlite(sqlite3 *db, int rc)
{
	int sys = db ? sqlite3_system_errno(db) : 0;

	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_TOOBIG:
		return -EFBIG;
	case SQLITE_CANTOPEN:
	case SQLITE_IOERR:
		return sys > 0 ? -sys : -EIO;
	default:
		return -EIO;
	}
}

/* True when rc says the file is not a (sound) SQLite database. */
static bool is_corrupt(int rc)
{
	return (rc & 0xff) == SQLITE_NOTADB || (rc & 0xff) == SQLITE_CORRUPT;
}

/* Runs a one-row query and returns its first column as an integer. */
static int query_int(sqlite3 *db, const char *sql, int64_t *value)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	*value = 0;
	rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		goto out;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		*value = sqlite3_column_int64(stmt, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
	}
out:
	sqlite3_finalize(stmt);
	return rc;
}

/* Sets the journal mode to WAL; *wal tells whether SQLite agreed. */
static int set_wal(sqlite3 *db, bool *wal)
{
	sqlite3_stmt *stmt = NULL;
	const unsigned char *mode;
	int rc;

	*wal = false;
	rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
	if (rc != SQLITE_OK)
		goto out;
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		mode = sqlite3_column_text(stmt, 0);
		*wal = mode && strcmp((const char *)mode, "wal") == 0;
		rc = SQLITE_OK;
	}
out:
	sqlite3_finalize(stmt);
	return rc;
}

/*
 * Applies each step of migrations[] newer than the file's user_version, in
 * its own write transaction that also sets user_version.  user_version is
 * read under the write lock because another daemon opening the same file
 * may have migrated it first.
 */
static int migrate(const char *path, sqlite3 *db)
{
	char sql[64];
	int64_t current;
	int version, rc;
	const char *what;

	for (version = 1; version <= INDEX_SCHEMA_VERSION; version++) {
		what = "begin a transaction";
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		what = "read user_version";
		rc = query_int(db, "PRAGMA user_version", &current);
		if (rc != SQLITE_OK)
			goto fail;
		if (current < version) {
			what = "apply the step";
			rc = sqlite3_exec(db, migrations[version], NULL, NULL, NULL);
			if (rc != SQLITE_OK)
				goto fail;
			what = "set user_version";
			snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", version);
			rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
			if (rc != SQLITE_OK)
				goto fail;
		}
		what = "commit";
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
	}
	return SQLITE_OK;

fail:
	/* A corrupt file is the caller's to set aside, without an error. */
	if (!is_corrupt(rc))
		log_error("index %s: cannot migrate the schema to version %d (%s): %s",
			  path, version, what, sqlite3_errmsg(db));
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/*
 * Opens path as an index of schema INDEX_SCHEMA_VERSION.
 * Returns 0 and *out; 1 when the file is not a usable index (why says
 * why, nothing logged); or -errno with one error logged.
 */
static int open_db(const char *path, sqlite3 **out, char *why, size_t why_size)
{
	sqlite3 *db = NULL;
	int64_t version = 0, tables;
	bool wal, logged = false;
	int fd, rc, ret = 0;

	*out = NULL;
	/*
	 * Create the file ourselves.  The errno of this open is the real
	 * reason when it fails (SQLite, refused write access, retries
	 * read-only and reports the errno of that second attempt); and the
	 * index holds every tenant's metadata, so only the daemon's user may
	 * read it (SQLite gives the -wal and -shm files the same mode).
	 */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		log_error("index %s: cannot open: %s", path, strerror(-ret));
		goto out;
	}
	close(fd);
	/* NOMUTEX: struct index serialises its connection itself. */
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE |
			     SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		ret = errno_from_sqlite(db, rc);
		log_error("index %s: cannot open: %s", path, strerror(-ret));
		goto out;
	}
	/* SQLite quietly falls back to read-only when it may not write. */
	if (sqlite3_db_readonly(db, "main") == 1) {
		ret = faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) ? -errno : -EACCES;
		log_error("index %s: cannot open for writing: %s", path,
			  strerror(-ret));
		goto out;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

	/*
	 * Reading the schema is what finds a file that is not a database or
	 * whose first pages are damaged; deeper damage shows up when used.
	 */
	rc = query_int(db, "SELECT count(*) FROM sqlite_master", &tables);
	if (rc == SQLITE_OK)
		rc = query_int(db, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK)
		goto fail;
	if (version > INDEX_SCHEMA_VERSION) {
		snprintf(why, why_size,
			 "has schema version %lld, newer than this build's %d",
			 (long long)version, INDEX_SCHEMA_VERSION);
		ret = 1;
		goto unusable;
	}

	rc = set_wal(db, &wal);
	if (rc != SQLITE_OK)
		goto fail;
	if (!wal)
		log_warning("index %s: cannot use WAL mode (the file system may "
			    "not support it); daemons sharing this index will "
			    "wait for each other", path);
	/*
	 * A checkpoint leaves the -wal file at its largest size, and a run of
	 * 100,000 files makes it large: let SQLite cut it back to 64 MiB.
	 */
	rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL;"
			  "PRAGMA foreign_keys = ON;"
			  "PRAGMA recursive_triggers = ON;"	/* see migrations[4] */
			  "PRAGMA journal_size_limit = 67108864",
			  NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;

	if (version < INDEX_SCHEMA_VERSION) {
		rc = migrate(path, db);
		logged = true;
		if (rc != SQLITE_OK)
			goto fail;
	}
	*out = db;
	db = NULL;
	goto out;

fail:
	if (!is_corrupt(rc)) {
		ret = errno_from_sqlite(db, rc);
		if (!logged)
			log_error("index %s: cannot open: %s", path,
				  sqlite3_errmsg(db));
		goto out;
	}
	snprintf(why, why_size, "is not a sound SQLite database (%s)",
		 sqlite3_errstr(rc));
	ret = 1;
unusable:
	/*
	 * A -wal file next to the database put this connection in WAL mode,
	 * and closing the last WAL connection deletes the -wal: keep it with
	 * the file it belongs to, for whoever looks into what went wrong.
	 */
	sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &(int){ 1 });
out:
	sqlite3_close(db);
	return ret;
}

/* Returns malloc'd "<a><b>", or NULL. */
static char *concat(const char *a, const char *b)
{
	size_t size = strlen(a) + strlen(b) + 1;
	char *s = malloc(size);

	if (s)
		snprintf(s, size, "%s%s", a, b);
	return s;
}

/* Renames from to to unless to exists: two set-asides in one second. */
static int rename_noreplace(const char *from, const char *to)
{
	if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -errno;
	/* The file system cannot do it atomically: check, then rename. */
	if (access(to, F_OK) == 0)
		return -EEXIST;
	return rename(from, to) ? -errno : 0;
}

/*
 * Moves path and its -wal, -shm and -journal files to
 * "<path>.corrupt-YYYYmmddTHHMMSSZ[.N]" so that a new index can be made in
 * their place: a leftover -wal or -journal would otherwise be replayed
 * into the new file.  Logs the one warning (or error) of the set-aside.
 */
static int move_aside(const char *path, const char *why)
{
	static const char *const sidecars[] = { "-wal", "-shm", "-journal" };
	char stamp[32], suffix[64];
	char *aside = NULL, *from = NULL, *to = NULL;
	struct tm tm;
	time_t now = time(NULL);
	int ret = -EEXIST;
	size_t i;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (i = 0; i < 100 && ret == -EEXIST; i++) {
		if (i == 0)
			snprintf(suffix, sizeof(suffix), ".corrupt-%s", stamp);
		else
			snprintf(suffix, sizeof(suffix), ".corrupt-%s.%zu", stamp, i);
		free(aside);
		aside = concat(path, suffix);
		if (!aside) {
			ret = -ENOMEM;
			break;
		}
		ret = rename_noreplace(path, aside);
	}
	if (ret < 0) {
		log_error("index %s: %s, and cannot move it aside: %s", path,
			  why, strerror(-ret));
		goto out;
	}
	for (i = 0; i < sizeof(sidecars) / sizeof(sidecars[0]); i++) {
		free(from);
		free(to);
		from = concat(path, sidecars[i]);
		to = concat(aside, sidecars[i]);
		if (!from || !to) {
			ret = -ENOMEM;
		} else if (rename(from, to) && errno != ENOENT) {
			ret = -errno;
		}
		if (ret < 0) {
			log_error("index %s: %s; moved it to %s but cannot move its %s file: %s",
				  path, why, aside, sidecars[i], strerror(-ret));
			goto out;
		}
	}
	log_warning("index %s: %s; moved it aside to %s, a new index will be rebuilt from the store",
		    path, why, aside);
out:
	free(aside);
	free(from);
	free(to);
	return ret;
}

/* Forgets every client's audit count. */
static void audit_counts_clear(struct index *index)
{
	size_t i;

	for (i = 0; i < index->n_audit_counts; i++)
		free(index->audit_counts[i].client);
	index->n_audit_counts = 0;
}

static void free_index(struct index *index)
{
	size_t i;

	audit_counts_clear(index);
	free(index->audit_counts);
	for (i = 0; i < STMT_COUNT; i++)
		sqlite3_finalize(index->stmt[i]);
	sqlite3_close(index->db);
	pthread_mutex_destroy(&index->lock);
	free(index->path);
	free(index);
}

int index_open(const char *path, struct index **out)
{
	struct index *index = NULL;
	char why[256];
	sqlite3 *db = NULL;
	int ret, rc, attempt;
	size_t i;

	*out = NULL;
	for (attempt = 0;; attempt++) {
		ret = open_db(path, &db, why, sizeof(why));
		if (ret <= 0)
			break;
		if (attempt > 0) {
			/* The new file we just made: not the old file's fault. */
			log_error("index %s: a new index %s", path, why);
			ret = -EIO;
			break;
		}
		ret = move_aside(path, why);
		if (ret < 0)
			break;
	}
	if (ret < 0)
		goto out;

	index = calloc(1, sizeof(*index));
	if (!index || !(index->path = strdup(path))) {
		free(index);
		index = NULL;
		sqlite3_close(db);
		ret = -ENOMEM;
		log_error("index %s: cannot open: %s", path, strerror(ENOMEM));
		goto out;
	}
	index->db = db;
	pthread_mutex_init(&index->lock, NULL);
	for (i = 0; i < STMT_COUNT; i++) {
		rc = sqlite3_prepare_v3(db, stmt_sql[i], -1,
					SQLITE_PREPARE_PERSISTENT,
					&index->stmt[i], NULL);
		if (rc != SQLITE_OK) {
			/* The file claims our version but has other tables. */
			log_error("index %s: cannot prepare \"%.40s...\": %s",
				  path, stmt_sql[i], sqlite3_errmsg(db));
			ret = errno_from_sqlite(db, rc);
			free_index(index);
			goto out;
		}
	}
	*out = index;
out:
	return ret;
}

void index_close(struct index *index)
{
	if (!index)
		return;
	/*
	 * The last connection to close checkpoints and removes the -wal file
	 * itself; while other daemons keep theirs open, copy what we can
	 * without waiting for their readers.
	 */
	sqlite3_wal_checkpoint_v2(index->db, NULL, SQLITE_CHECKPOINT_PASSIVE,
				  NULL, NULL);
	free_index(index);
}

/* Logs a failed statement; index.h promises -EIO for every such failure. */
static int sql_failed(struct index *index, const char *what,
		      const char *client, const char *run)
{
	log_error("index %s: cannot %s for client %s run %s: %s", index->path,
		  what, client, run, sqlite3_errmsg(index->db));
	return -EIO;
}

/* Resets a statement and drops its bindings (pointers to caller strings). */
static void stmt_done(sqlite3_stmt *stmt)
{
	sqlite3_reset(stmt);
	sqlite3_clear_bindings(stmt);
}

/* Binds ?1 and ?2 to a run's key and steps once. */
static int step_run_key(sqlite3_stmt *stmt, const char *client, const char *run)
{
	int rc;

	rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(stmt, 2, run, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	return rc;
}

/*
 * Ends a transaction of begin_transaction(): commits it when ret is 0, else
 * logs what failed (of a call for client's run) and rolls it back.
 * Returns 0, or the -EIO index.h promises for every failed statement.
 */
static int end_transaction(struct index *index, int ret, const char *what,
			   const char *client, const char *run)
{
	sqlite3_stmt *stmt = index->stmt[STMT_COMMIT];
	int rc;

	if (ret == 0) {
		what = "commit";
		rc = sqlite3_step(stmt);
		sqlite3_reset(stmt);
		if (rc == SQLITE_DONE)
			return 0;
	}
	/* Log first: the rollback would replace SQLite's message. */
	ret = sql_failed(index, what, client, run);
	/* SQLite may already have rolled it back. */
	if (!sqlite3_get_autocommit(index->db)) {
		stmt = index->stmt[STMT_ROLLBACK];
		sqlite3_step(stmt);
		sqlite3_reset(stmt);
	}
	return ret;
}

/*
 * Starts a write transaction for a call about client's run, for
 * end_transaction() to end.  Returns 0, or -EIO logged with no
 * transaction left open.
 */
static int begin_transaction(struct index *index, const char *client,
			     const char *run)
{
	sqlite3_stmt *stmt = index->stmt[STMT_BEGIN];
	int rc;

	rc = sqlite3_step(stmt);
	sqlite3_reset(stmt);
	if (rc == SQLITE_DONE)
		return 0;
	return end_transaction(index, -EIO, "begin a transaction", client, run);
}

int index_get_run_stamp(struct index *index, const char *client,
			const char *run, struct index_run_stamp *stamp)
{
	sqlite3_stmt *stmt = index->stmt[STMT_GET_STAMP];
	int rc, ret = 0;

	memset(stamp, 0, sizeof(*stamp));
	pthread_mutex_lock(&index->lock);
	rc = step_run_key(stmt, client, run);
	if (rc == SQLITE_ROW) {
		stamp->dir_ino = sqlite3_column_int64(stmt, 0);
		stamp->dir_mtime_ns = sqlite3_column_int64(stmt, 1);
		stamp->meta_ino = sqlite3_column_int64(stmt, 2);
		stamp->meta_size = sqlite3_column_int64(stmt, 3);
		stamp->meta_mtime_ns = sqlite3_column_int64(stmt, 4);
		stamp->meta_ctime_ns = sqlite3_column_int64(stmt, 5);
	} else if (rc == SQLITE_DONE) {
		ret = -ENOENT;
	} else {
		ret = sql_failed(index, "read the stamp", client, run);
	}
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

static const char *artifact_name(const void *p)
{
	const struct meta_artifact *art = p;

	return art->filename;
}

static const char *file_name(const void *p)
{
	const struct index_file *file = p;

	return file->filename;
}

/* Sorts entries by filename, and equal names in input order. */
static int cmp_artifact(const void *a, const void *b)
{
	const struct meta_artifact *x = *(const void *const *)a;
	const struct meta_artifact *y = *(const void *const *)b;
	int c = strcmp(x->filename, y->filename);

	/* Both point into one array, so address order is input order. */
	return c ? c : (x > y) - (x < y);
}

static int cmp_file(const void *a, const void *b)
{
	const struct index_file *x = *(const void *const *)a;
	const struct index_file *y = *(const void *const *)b;
	int c = strcmp(x->filename, y->filename);

	return c ? c : (x > y) - (x < y);
}

/*
 * Fills *sorted with pointers to the n elements of array (each size
 * bytes), sorted by name, without the elements whose name is NULL and
 * without duplicates: of equal names the last stays, as meta.h says a
 * later entry replaces an earlier one.  The caller's array stays as it is.
 */
static int sort_by_name(const void *array, size_t n, size_t size,
			const char *(*name_of)(const void *),
			int (*cmp)(const void *, const void *),
			const void ***sorted, size_t *n_sorted)
{
	const void **list;
	size_t i, m = 0;

	*sorted = NULL;
	*n_sorted = 0;
	if (n == 0)
		return 0;
	list = malloc(n * sizeof(*list));
	if (!list)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		const void *elem = (const char *)array + i * size;

		if (name_of(elem))
			list[m++] = elem;
	}
	qsort(list, m, sizeof(*list), cmp);
	n = m;
	m = 0;
	for (i = 0; i < n; i++) {
		if (i + 1 < n &&
		    strcmp(name_of(list[i]), name_of(list[i + 1])) == 0)
			continue;
		list[m++] = list[i];
	}
	*sorted = list;
	*n_sorted = m;
	return 0;
}

/*
 * The previous rows of a run that have a sha256 worth keeping (files
 * promoted through artifactfs), sorted by filename, with their metadata
 * columns.  The strings live in one growing buffer (rows hold offsets, as
 * the buffer moves) so that 100,000 rows cost a few allocations, not
 * 200,000.
 */
#define NO_TEXT SIZE_MAX	/* the offset of a NULL column */

struct old_row {
	size_t filename;	/* offsets in text */
	size_t sha256;
	size_t agent_id, generated_at, content_type;	/* or NO_TEXT */
	bool has_size_bytes;
	int64_t size_bytes;
	int64_t ino;
	int64_t size;
	int64_t mtime_ns;
};

struct old_rows {
	struct old_row *row;
	size_t n, alloc;
	char *text;
	size_t len, size;
};

static int old_rows_text(struct old_rows *old, const unsigned char *s,
			 int bytes, size_t *offset)
{
	size_t need = (size_t)(bytes > 0 ? bytes : 0) + 1;
	char *text;

	if (old->size - old->len < need) {
		size_t size = old->size ? old->size : 4096;

		while (size - old->len < need)
			size *= 2;
		text = realloc(old->text, size);
		if (!text)
			return -ENOMEM;
		old->text = text;
		old->size = size;
	}
	if (need > 1)
		memcpy(old->text + old->len, s, need - 1);
	old->text[old->len + need - 1] = '\0';
	*offset = old->len;
	old->len += need;
	return 0;
}

/* Copies text column i of stmt into old->text, or notes NO_TEXT for NULL. */
static int old_rows_column(struct old_rows *old, sqlite3_stmt *stmt, int i, size_t *offset)
{
	const unsigned char *text = sqlite3_column_text(stmt, i);

	if (!text) {
		*offset = NO_TEXT;
		return sqlite3_column_type(stmt, i) == SQLITE_NULL ? 0 : -ENOMEM;
	}
	return old_rows_text(old, text, sqlite3_column_bytes(stmt, i), offset);
}

static int old_rows_add(struct old_rows *old, sqlite3_stmt *stmt)
{
	struct old_row *row;
	const unsigned char *name = sqlite3_column_text(stmt, 0);
	int name_bytes = sqlite3_column_bytes(stmt, 0);
	const unsigned char *sha = sqlite3_column_text(stmt, 4);
	int sha_bytes = sqlite3_column_bytes(stmt, 4);

	if (!name || !sha)
		return -ENOMEM;
	if (old->n == old->alloc) {
		size_t alloc = old->alloc ? old->alloc * 2 : 256;

		row = realloc(old->row, alloc * sizeof(*row));
		if (!row)
			return -ENOMEM;
		old->row = row;
		old->alloc = alloc;
	}
	row = &old->row[old->n];
	if (old_rows_text(old, name, name_bytes, &row->filename) ||
	    old_rows_text(old, sha, sha_bytes, &row->sha256) ||
	    old_rows_column(old, stmt, 5, &row->agent_id) ||
	    old_rows_column(old, stmt, 6, &row->generated_at) ||
	    old_rows_column(old, stmt, 8, &row->content_type))
		return -ENOMEM;
	row->has_size_bytes = sqlite3_column_type(stmt, 7) != SQLITE_NULL;
	row->size_bytes = sqlite3_column_int64(stmt, 7);
	row->ino = sqlite3_column_int64(stmt, 1);
	row->size = sqlite3_column_int64(stmt, 2);
	row->mtime_ns = sqlite3_column_int64(stmt, 3);
	old->n++;
	return 0;
}

static void old_rows_release(struct old_rows *old)
{
	free(old->row);
	free(old->text);
}

/* Reads the run's old hashable rows.  Returns an SQLite code or SQLITE_NOMEM. */
static int read_old_rows(struct index *index, int64_t run_id,
			 struct old_rows *old)
{
	sqlite3_stmt *stmt = index->stmt[STMT_OLD_HASHES];
	int rc;

	rc = sqlite3_bind_int64(stmt, 1, run_id);
	while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
		rc = old_rows_add(old, stmt) ? SQLITE_NOMEM : SQLITE_OK;
	stmt_done(stmt);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * Finds name in old from *pos on (names come in increasing order, so the
 * cursor only moves forward) and returns its row if the file is the same
 * one, else NULL.
 */
static const struct old_row *kept_row(const struct old_rows *old, size_t *pos,
				      const struct index_file *file)
{
	const struct old_row *row;
	int c = -1;

	while (*pos < old->n) {
		c = strcmp(old->text + old->row[*pos].filename, file->filename);
		if (c >= 0)
			break;
		(*pos)++;
	}
	if (*pos == old->n || c != 0)
		return NULL;
	row = &old->row[*pos];
	if (row->ino != file->ino || row->size != file->size ||
	    row->mtime_ns != file->mtime_ns)
		return NULL;
	return row;
}

/* A kept row's text column, or NULL. */
static const char *kept_text(const struct old_rows *old, size_t offset)
{
	return offset == NO_TEXT ? NULL : old->text + offset;
}

/* Binds a text or NULL; bad |= failure.  Keeps the insert loop readable. */
static void bind_text(sqlite3_stmt *stmt, int i, const char *s, bool *bad)
{
	if (sqlite3_bind_text(stmt, i, s, -1, SQLITE_STATIC) != SQLITE_OK)
		*bad = true;
}

static void bind_int64(sqlite3_stmt *stmt, int i, bool present, int64_t v,
		       bool *bad)
{
	int rc = present ? sqlite3_bind_int64(stmt, i, v)
			 : sqlite3_bind_null(stmt, i);

	if (rc != SQLITE_OK)
		*bad = true;
}

/* The code of a failed bind, which SQLite records as the last error. */
static int bind_failed(struct index *index)
{
	int rc = sqlite3_errcode(index->db);

	return rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE ?
	       SQLITE_ERROR : rc;
}

/*
 * Writes the union of arts and files (from sort_by_name(): struct
 * meta_artifact and struct index_file pointers), one row per filename, in
 * filename order (the primary key's order, the cheapest to insert).
 */
static int insert_artifacts(struct index *index, int64_t run_id,
			    const void *const *arts, size_t n_arts,
			    const void *const *files, size_t n_files,
			    const struct old_rows *old, const struct index_hash_source *hashes)
{
	sqlite3_stmt *stmt = index->stmt[STMT_INSERT_ARTIFACT];
	const struct meta_artifact *art;
	const struct index_file *file;
	const struct old_row *kept;
	struct meta_artifact from_kept;
	const char *name;
	size_t i = 0, j = 0, pos = 0;
	int c, rc = SQLITE_OK;
	bool bad, sized;

	while (i < n_arts || j < n_files) {
		char *asked = NULL;

		if (i == n_arts)
			c = 1;
		else if (j == n_files)
			c = -1;
		else
			c = strcmp(artifact_name(arts[i]), file_name(files[j]));
		art = c <= 0 ? arts[i++] : NULL;
		file = c >= 0 ? files[j++] : NULL;
		/* c says which of art and file is set: at least one. */
		name = art ? art->filename : file->filename;
		kept = file ? kept_row(old, &pos, file) : NULL;
		if (!art && kept) {
			/*
			 * Promoted here, unchanged, and its entry gone: another
			 * writer's rewrite of metadata.json dropped it.  What we
			 * knew stays, for promote_repair_run() to put back.
			 */
			from_kept = (struct meta_artifact){
				.filename = (char *)name,
				.agent_id = (char *)kept_text(old, kept->agent_id),
				.generated_at = (char *)kept_text(old, kept->generated_at),
				.content_type = (char *)kept_text(old, kept->content_type),
				.has_size_bytes = kept->has_size_bytes,
				.size_bytes = (uint64_t)kept->size_bytes,
			};
			art = &from_kept;
		}

		bad = false;
		bind_int64(stmt, 1, true, run_id, &bad);
		bind_text(stmt, 2, name, &bad);
		bind_text(stmt, 3, art ? art->agent_id : NULL, &bad);
		bind_text(stmt, 4, art ? art->generated_at : NULL, &bad);
		/* SQLite integers are signed: a larger size cannot be kept. */
		sized = art && art->has_size_bytes && art->size_bytes <= INT64_MAX;
		bind_int64(stmt, 5, sized, sized ? (int64_t)art->size_bytes : 0,
			   &bad);
		bind_text(stmt, 6, art ? art->content_type : NULL, &bad);
		if (!kept && file && hashes)
			asked = hashes->sha256_of(hashes->ctx, file);
		bind_text(stmt, 7, kept ? old->text + kept->sha256 : asked, &bad);
		bind_int64(stmt, 8, file != NULL, file ? file->size : 0, &bad);
		bind_int64(stmt, 9, file != NULL, file ? file->mtime_ns : 0, &bad);
		bind_int64(stmt, 10, file != NULL, file ? file->ino : 0, &bad);
		rc = bad ? bind_failed(index) : sqlite3_step(stmt);
		sqlite3_reset(stmt);
		free(asked);
		if (rc != SQLITE_DONE)
			break;
		rc = SQLITE_OK;
	}
	sqlite3_clear_bindings(stmt);
	return rc;
}

/* Writes the run row and returns its id. */
static int upsert_run(struct index *index, const char *client, const char *run,
		      const struct index_run_stamp *stamp,
		      const struct meta_run *meta, int64_t *run_id)
{
	static const struct index_run_stamp no_stamp;
	sqlite3_stmt *stmt = index->stmt[STMT_UPSERT_RUN];
	int64_t expires = 0;
	bool has_expiry, bad = false;
	int rc;

	if (!stamp)
		stamp = &no_stamp;
	has_expiry = meta && meta->expires_at &&
		     meta_parse_time(meta->expires_at, &expires) == 0;
	bind_text(stmt, 1, client, &bad);
	bind_text(stmt, 2, run, &bad);
	bind_text(stmt, 3, meta ? meta->workflow_id : NULL, &bad);
	bind_text(stmt, 4, meta ? meta->user_directive : NULL, &bad);
	bind_text(stmt, 5, meta ? meta->created_at : NULL, &bad);
	bind_text(stmt, 6, meta ? meta->expires_at : NULL, &bad);
	bind_int64(stmt, 7, has_expiry, expires, &bad);
	bind_text(stmt, 8, meta ? meta->status : NULL, &bad);
	bind_int64(stmt, 9, true, meta != NULL, &bad);
	bind_int64(stmt, 10, true, stamp->dir_ino, &bad);
	bind_int64(stmt, 11, true, stamp->dir_mtime_ns, &bad);
	bind_int64(stmt, 12, true, stamp->meta_ino, &bad);
	bind_int64(stmt, 13, true, stamp->meta_size, &bad);
	bind_int64(stmt, 14, true, stamp->meta_mtime_ns, &bad);
	bind_int64(stmt, 15, true, stamp->meta_ctime_ns, &bad);
	bind_int64(stmt, 16, true, (int64_t)time(NULL), &bad);
	if (bad) {
		rc = bind_failed(index);
		goto out;
	}
	rc = sqlite3_step(stmt);
	if (rc != SQLITE_ROW)
		goto out;
	*run_id = sqlite3_column_int64(stmt, 0);
	/* RETURNING: the row is written by the first step; finish cleanly. */
	rc = sqlite3_step(stmt);
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
out:
	stmt_done(stmt);
	return rc;
}

/*
 * Every change to a run starts the same way: a transaction, and the run's
 * row written first (its id is what the artifact rows point to).  Returns
 * 0 with the transaction open and *run_id set, or -EIO logged with none.
 * Called with index->lock held.
 */
static int begin_run_write(struct index *index, const char *client, const char *run,
			   const struct index_run_stamp *stamp, const struct meta_run *meta,
			   int64_t *run_id)
{
	int ret = begin_transaction(index, client, run);

	if (ret == 0 && upsert_run(index, client, run, stamp, meta, run_id) != SQLITE_OK)
		ret = end_transaction(index, -EIO, "write the run", client, run);
	return ret;
}

int index_put_run(struct index *index, const char *client, const char *run,
		  const struct index_run_stamp *stamp,
		  const struct meta_run *meta,
		  const struct index_file *files, size_t n_files,
		  const struct index_hash_source *hashes)
{
	const void **arts = NULL, **sorted_files = NULL;
	size_t n_arts = 0, n_sorted_files = 0;
	struct old_rows old = { 0 };
	sqlite3_stmt *stmt;
	const char *what;
	int64_t run_id = 0;
	int rc, ret = 0;

	/* Sorting needs no lock: do it before taking it. */
	if (meta)
		ret = sort_by_name(meta->artifacts, meta->n_artifacts,
				   sizeof(*meta->artifacts), artifact_name,
				   cmp_artifact, &arts, &n_arts);
	if (ret == 0)
		ret = sort_by_name(files, n_files, sizeof(*files), file_name,
				   cmp_file, &sorted_files, &n_sorted_files);
	if (ret < 0) {
		/* index.h promises only -EIO here: the caller just retries. */
		log_error("index %s: cannot sort the files for client %s run %s: %s",
			  index->path, client, run, strerror(-ret));
		ret = -EIO;
		goto out;
	}

	pthread_mutex_lock(&index->lock);
	ret = begin_run_write(index, client, run, stamp, meta, &run_id);
	if (ret < 0)
		goto unlock;

	what = "read the old artifacts";
	rc = read_old_rows(index, run_id, &old);
	if (rc != SQLITE_OK)
		goto fail;

	what = "delete the old artifacts";
	stmt = index->stmt[STMT_DELETE_ARTIFACTS];
	rc = sqlite3_bind_int64(stmt, 1, run_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	stmt_done(stmt);
	if (rc != SQLITE_DONE)
		goto fail;

	what = "write the artifacts";
	rc = insert_artifacts(index, run_id, arts, n_arts, sorted_files,
			      n_sorted_files, &old, hashes);
	if (rc != SQLITE_OK)
		goto fail;
	goto end;

fail:
	ret = -EIO;
end:
	ret = end_transaction(index, ret, what, client, run);
unlock:
	pthread_mutex_unlock(&index->lock);
out:
	old_rows_release(&old);
	free(arts);
	free(sorted_files);
	return ret;
}

int index_delete_run(struct index *index, const char *client, const char *run)
{
	sqlite3_stmt *stmt = index->stmt[STMT_DELETE_RUN];
	int rc, ret = 0;

	pthread_mutex_lock(&index->lock);
	rc = step_run_key(stmt, client, run);
	if (rc != SQLITE_DONE)
		ret = sql_failed(index, "delete the run", client, run);
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

int index_list_runs(struct index *index, const char *client,
		    char ***runs, size_t *n_runs)
{
	sqlite3_stmt *stmt = index->stmt[STMT_LIST_RUNS];
	char **list = NULL, **grown;
	size_t n = 0, alloc = 0;
	int rc, ret = 0;

	*runs = NULL;
	*n_runs = 0;
	pthread_mutex_lock(&index->lock);
	rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
	while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(stmt, 0);

		if (n == alloc) {
			alloc = alloc ? alloc * 2 : 16;
			grown = realloc(list, alloc * sizeof(*list));
			if (!grown) {
				ret = -ENOMEM;
				break;
			}
			list = grown;
		}
		if (!text || !(list[n] = strdup(text))) {
			ret = -ENOMEM;
			break;
		}
		n++;
		rc = SQLITE_OK;
	}
	if (ret == 0 && rc != SQLITE_DONE) {
		log_error("index %s: cannot list runs for client %s: %s",
			  index->path, client, sqlite3_errmsg(index->db));
		ret = -EIO;
	} else if (ret == -ENOMEM) {
		log_error("index %s: cannot list runs for client %s: %s",
			  index->path, client, strerror(ENOMEM));
	}
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	if (ret < 0) {
		index_free_list(list, n);
		return ret;
	}
	*runs = list;
	*n_runs = n;
	return 0;
}

void index_free_list(char **list, size_t n)
{
	size_t i;

	if (!list)
		return;
	for (i = 0; i < n; i++)
		free(list[i]);
	free(list);
}

int index_get_run_expiry(struct index *index, const char *client,
			 const char *run, int64_t *expires_at)
{
	sqlite3_stmt *stmt = index->stmt[STMT_GET_EXPIRY];
	int rc, ret = 0;

	*expires_at = 0;
	pthread_mutex_lock(&index->lock);
	rc = step_run_key(stmt, client, run);
	if (rc == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL)
		*expires_at = sqlite3_column_int64(stmt, 0);
	else if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		ret = -ENOENT;
	else
		ret = sql_failed(index, "read the expiry", client, run);
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

/* Copies the non-NULL columns of the current row into attrs, in order. */
static int fill_attrs(sqlite3_stmt *stmt, const char *const *names,
		      size_t n_names, struct index_attrs *attrs)
{
	const unsigned char *text;
	char *value;
	size_t i, len;

	for (i = 0; i < n_names && attrs->count < INDEX_ATTRS_MAX; i++) {
		if (sqlite3_column_type(stmt, (int)i) == SQLITE_NULL)
			continue;
		/* An INTEGER column reads as its decimal text. */
		text = sqlite3_column_text(stmt, (int)i);
		if (!text)
			return -ENOMEM;
		len = (size_t)sqlite3_column_bytes(stmt, (int)i);
		value = malloc(len + 1);
		if (!value)
			return -ENOMEM;
		memcpy(value, text, len);
		value[len] = '\0';
		attrs->attr[attrs->count].name = names[i];
		attrs->attr[attrs->count].value = value;
		attrs->count++;
	}
	return 0;
}

/*
 * The common part of the two attribute readers: rc is the result of the
 * step; file is NULL for a run's attributes.
 */
static int read_attrs(struct index *index, sqlite3_stmt *stmt, int rc,
		      const char *const *names, size_t n_names,
		      const char *client, const char *run, const char *file,
		      struct index_attrs *attrs)
{
	const char *why;
	int ret = 0;

	if (rc == SQLITE_DONE)
		return -ENOENT;
	if (rc == SQLITE_ROW) {
		ret = fill_attrs(stmt, names, n_names, attrs);
		if (ret == 0)
			return 0;
		why = strerror(-ret);
	} else {
		ret = -EIO;
		why = sqlite3_errmsg(index->db);
	}
	if (file)
		log_error("index %s: cannot read the attributes of file %s for client %s run %s: %s",
			  index->path, file, client, run, why);
	else
		log_error("index %s: cannot read the attributes for client %s run %s: %s",
			  index->path, client, run, why);
	return ret;
}

int index_get_run_attrs(struct index *index, const char *client,
			const char *run, struct index_attrs *attrs)
{
	sqlite3_stmt *stmt = index->stmt[STMT_RUN_ATTRS];
	int rc, ret;

	memset(attrs, 0, sizeof(*attrs));
	pthread_mutex_lock(&index->lock);
	rc = step_run_key(stmt, client, run);
	ret = read_attrs(index, stmt, rc, run_attr_names,
			 sizeof(run_attr_names) / sizeof(run_attr_names[0]),
			 client, run, NULL, attrs);
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

int index_get_file_attrs(struct index *index, const char *client,
			 const char *run, const char *filename,
			 struct index_attrs *attrs)
{
	sqlite3_stmt *stmt = index->stmt[STMT_FILE_ATTRS];
	int rc, ret;

	memset(attrs, 0, sizeof(*attrs));
	pthread_mutex_lock(&index->lock);
	rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(stmt, 2, run, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(stmt, 3, filename, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	ret = read_attrs(index, stmt, rc, file_attr_names,
			 sizeof(file_attr_names) / sizeof(file_attr_names[0]),
			 client, run, filename, attrs);
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

void index_attrs_release(struct index_attrs *attrs)
{
	size_t i;

	if (!attrs)
		return;
	for (i = 0; i < attrs->count && i < INDEX_ATTRS_MAX; i++)
		free(attrs->attr[i].value);
	memset(attrs, 0, sizeof(*attrs));
}

const char *index_attrs_value(const struct index_attrs *attrs, const char *name)
{
	for (size_t i = 0; i < attrs->count; i++)
		if (strcmp(attrs->attr[i].name, name) == 0)
			return attrs->attr[i].value;
	return NULL;
}

int index_claim_run(struct index *index, const char *client, const char *run)
{
	sqlite3_stmt *stmt;
	const unsigned char *owner;
	const char *what;
	bool theirs = false;
	int rc, ret = 0;

	pthread_mutex_lock(&index->lock);
	/*
	 * Unlike the cache, a claim lost to a power cut cannot be rebuilt,
	 * and the run's promoted files survive it: the next tenant to
	 * promote would own their run.  So this commit syncs the WAL (only
	 * a commit that wrote does, once per run).
	 */
	what = "make the claim durable";
	/* Not a prepared statement: a PRAGMA acts when compiled. */
	rc = sqlite3_exec(index->db, "PRAGMA synchronous = FULL", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto fail;

	/*
	 * Insert-if-absent, then read back, both under the write lock that
	 * BEGIN IMMEDIATE takes: no other daemon can claim in between, so
	 * the owner read is the one that stays.
	 */
	ret = begin_transaction(index, client, run);
	if (ret < 0)
		goto unlock;

	what = "claim the run";
	stmt = index->stmt[STMT_CLAIM_RUN];
	rc = sqlite3_bind_text(stmt, 1, run, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(stmt, 2, client, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 3, (int64_t)time(NULL));
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	stmt_done(stmt);
	if (rc != SQLITE_DONE)
		goto fail;

	what = "read the owner";
	stmt = index->stmt[STMT_GET_OWNER];
	rc = sqlite3_bind_text(stmt, 1, run, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		/* client is NOT NULL: a NULL here is SQLite out of memory. */
		owner = sqlite3_column_text(stmt, 0);
		if (owner)
			theirs = strcmp((const char *)owner, client) != 0;
		else
			rc = SQLITE_NOMEM;
	}
	stmt_done(stmt);
	if (rc != SQLITE_ROW)
		goto fail;
	goto end;

fail:
	ret = -EIO;
end:
	/* A run owned by another client is no failed statement: commit, then refuse. */
	ret = end_transaction(index, ret, what, client, run);
	if (ret == 0 && theirs)
		ret = -EACCES;
unlock:
	/* Should this fail, commits stay FULL: slower, never wrong. */
	sqlite3_exec(index->db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

int index_get_run_owner(struct index *index, const char *run, char **owner)
{
	sqlite3_stmt *stmt = index->stmt[STMT_GET_OWNER];
	const unsigned char *text;
	int rc, ret = 0;

	*owner = NULL;
	pthread_mutex_lock(&index->lock);
	rc = sqlite3_bind_text(stmt, 1, run, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		text = sqlite3_column_text(stmt, 0);
		if (!text || !(*owner = strdup((const char *)text))) {
			ret = -ENOMEM;
			log_error("index %s: cannot read the owner of run %s: %s",
				  index->path, run, strerror(ENOMEM));
		}
	} else if (rc == SQLITE_DONE) {
		ret = -ENOENT;
	} else {
		ret = -EIO;
		log_error("index %s: cannot read the owner of run %s: %s",
			  index->path, run, sqlite3_errmsg(index->db));
	}
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

const char *index_action_name(enum index_action action)
{
	switch (action) {
	case INDEX_ACTION_PROMOTE:
		return "promote";
	case INDEX_ACTION_DELETE:
		return "delete";
	case INDEX_ACTION_REPAIR:
		return "repair";
	}
	return NULL;
}

/*
 * Counts an audit row of client and tells whether the client is due a
 * trim (see AUDIT_KEEP).  The counts are a sorted array, allocated at
 * full size the first time, searched by hand to find where a new client
 * goes.
 */
static bool audit_trim_due(struct index *index, const char *client)
{
	struct audit_count *count;
	size_t lo = 0, hi = index->n_audit_counts, mid;
	char *copy;
	int c;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		count = &index->audit_counts[mid];
		c = strcmp(client, count->client);
		if (c == 0) {
			if (++count->inserts < AUDIT_TRIM_EVERY)
				return false;
			count->inserts = 0;
			return true;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (index->n_audit_counts == AUDIT_CLIENTS_MAX) {
		audit_counts_clear(index);
		lo = 0;
	}
	if (!index->audit_counts)
		index->audit_counts = malloc(AUDIT_CLIENTS_MAX *
					     sizeof(*index->audit_counts));
	copy = index->audit_counts ? strdup(client) : NULL;
	/* Without memory the client is not remembered: trimmed again next time. */
	if (copy) {
		count = &index->audit_counts[lo];
		memmove(count + 1, count,
			(index->n_audit_counts - lo) * sizeof(*count));
		count->client = copy;
		count->inserts = 0;
		index->n_audit_counts++;
	}
	/* New to this struct index: what others counted is unknown. */
	return true;
}

/* Deletes client's audit rows older than the newest AUDIT_KEEP. */
static void audit_trim(struct index *index, const char *client)
{
	sqlite3_stmt *stmt = index->stmt[STMT_TRIM_AUDIT];
	int rc;

	rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, AUDIT_KEEP - 1);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	/* The row itself is in: a failed trim is made up for by the next. */
	if (rc != SQLITE_DONE)
		log_error("index %s: cannot trim the audit of client %s: %s",
			  index->path, client, sqlite3_errmsg(index->db));
	stmt_done(stmt);
}

int index_add_audit(struct index *index, const struct index_audit *row)
{
	sqlite3_stmt *stmt = index->stmt[STMT_ADD_AUDIT];
	bool bad = false;
	int rc, ret = 0;

	pthread_mutex_lock(&index->lock);
	bind_int64(stmt, 1, true, row->time_ns, &bad);
	bind_text(stmt, 2, row->client, &bad);
	/* An action index.h does not know binds NULL: refused, logged. */
	bind_text(stmt, 3, index_action_name(row->action), &bad);
	bind_text(stmt, 4, row->run, &bad);
	bind_text(stmt, 5, row->filename, &bad);
	bind_int64(stmt, 6, row->size >= 0, row->size, &bad);
	bind_text(stmt, 7, row->sha256, &bad);
	bind_int64(stmt, 8, true, row->error, &bad);
	bind_text(stmt, 9, row->reason, &bad);
	rc = bad ? bind_failed(index) : sqlite3_step(stmt);
	if (rc != SQLITE_DONE)
		ret = sql_failed(index, "add an audit row", row->client,
				 row->run ? row->run : "(none)");
	stmt_done(stmt);
	if (ret == 0 && audit_trim_due(index, row->client))
		audit_trim(index, row->client);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

/* Returns a text column, or NULL for SQL NULL (or SQLite out of memory). */
static const char *column_text(sqlite3_stmt *stmt, int i)
{
	return (const char *)sqlite3_column_text(stmt, i);
}

/* An audit row's action column; the CHECK constraint allows these three only. */
static enum index_action action_from_name(const char *action)
{
	return !action || strcmp(action, "promote") == 0 ? INDEX_ACTION_PROMOTE :
	       strcmp(action, "delete") == 0 ? INDEX_ACTION_DELETE : INDEX_ACTION_REPAIR;
}

/* The row a statement selecting AUDIT_COLUMNS stands on; its strings live until the next step. */
static struct index_audit read_audit_row(sqlite3_stmt *stmt)
{
	return (struct index_audit){
		.time_ns = sqlite3_column_int64(stmt, 0),
		.client = column_text(stmt, 1),
		.action = action_from_name(column_text(stmt, 2)),
		.run = column_text(stmt, 3),
		.filename = column_text(stmt, 4),
		.size = sqlite3_column_type(stmt, 5) == SQLITE_NULL ? -1 :
			sqlite3_column_int64(stmt, 5),
		.sha256 = column_text(stmt, 6),
		.error = sqlite3_column_int(stmt, 7),
		.reason = column_text(stmt, 8),
	};
}

int index_list_audit(struct index *index, const char *client, size_t limit,
		     int (*fn)(void *ctx, const struct index_audit *row), void *ctx)
{
	sqlite3_stmt *stmt = index->stmt[STMT_LIST_AUDIT];
	struct index_audit row;
	int rc, ret = 0;

	pthread_mutex_lock(&index->lock);
	rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
	/* LIMIT is signed, and a negative one means no limit at all. */
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(stmt, 2, (uint64_t)limit > INT64_MAX ?
					INT64_MAX : (int64_t)limit);
	/*
	 * fn runs under the lock, with the statement open (which is what
	 * keeps the strings valid): it must not call back into this index.
	 */
	while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		row = read_audit_row(stmt);
		ret = fn(ctx, &row);
		if (ret)
			break;
		rc = SQLITE_OK;
	}
	if (ret == 0 && rc != SQLITE_DONE) {
		log_error("index %s: cannot list the audit of client %s: %s",
			  index->path, client, sqlite3_errmsg(index->db));
		ret = -EIO;
	}
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

int index_get_usage(struct index *index, const char *client,
		    uint64_t *bytes, uint64_t *files)
{
	sqlite3_stmt *stmt = index->stmt[STMT_USAGE];
	int rc, ret = 0;

	*bytes = 0;
	*files = 0;
	pthread_mutex_lock(&index->lock);
	rc = sqlite3_bind_text(stmt, 1, client, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(stmt);
	if (rc == SQLITE_ROW) {
		/* Sizes come from stat(): never negative. */
		*bytes = (uint64_t)sqlite3_column_int64(stmt, 0);
		*files = (uint64_t)sqlite3_column_int64(stmt, 1);
	} else {
		log_error("index %s: cannot add up the usage of client %s: %s",
			  index->path, client, sqlite3_errmsg(index->db));
		ret = -EIO;
	}
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

int index_set_sha256(struct index *index, const char *client, const char *run,
		     const char *filename, int64_t ino, int64_t size,
		     int64_t mtime_ns, const char *sha256)
{
	sqlite3_stmt *stmt = index->stmt[STMT_SET_SHA256];
	bool bad = false;
	int rc, ret = 0;

	pthread_mutex_lock(&index->lock);
	bind_text(stmt, 1, client, &bad);
	bind_text(stmt, 2, run, &bad);
	bind_text(stmt, 3, filename, &bad);
	bind_int64(stmt, 4, true, ino, &bad);
	bind_int64(stmt, 5, true, size, &bad);
	bind_int64(stmt, 6, true, mtime_ns, &bad);
	bind_text(stmt, 7, sha256, &bad);
	rc = bad ? bind_failed(index) : sqlite3_step(stmt);
	/*
	 * sqlite3_changes() counts the rows the WHERE matched, whether or
	 * not the value was new: 0 means no row describes this file.
	 */
	if (rc == SQLITE_DONE && sqlite3_changes(index->db) == 0) {
		ret = -ENOENT;
	} else if (rc != SQLITE_DONE) {
		log_error("index %s: cannot record the sha256 of file %s for client %s run %s: %s",
			  index->path, filename, client, run,
			  sqlite3_errmsg(index->db));
		ret = -EIO;
	}
	stmt_done(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

int index_put_artifacts(struct index *index, const char *client, const char *run,
			const struct index_run_stamp *stamp, const struct meta_run *meta,
			const struct index_landed *landed, size_t n_landed)
{
	sqlite3_stmt *stmt = index->stmt[STMT_REPLACE_ARTIFACT];
	const char *what = "write the artifact";
	int64_t run_id = 0;
	int ret;

	pthread_mutex_lock(&index->lock);
	ret = begin_run_write(index, client, run, stamp, meta, &run_id);
	if (ret < 0)
		goto unlock;
	for (size_t i = 0; i < n_landed && ret == 0; i++) {
		const struct meta_artifact *entry = landed[i].entry;
		const struct index_file *file = &landed[i].file;
		bool sized = entry->has_size_bytes && entry->size_bytes <= INT64_MAX;
		bool bad = false;

		bind_int64(stmt, 1, true, run_id, &bad);
		bind_text(stmt, 2, file->filename, &bad);
		bind_text(stmt, 3, entry->agent_id, &bad);
		bind_text(stmt, 4, entry->generated_at, &bad);
		bind_int64(stmt, 5, sized, sized ? (int64_t)entry->size_bytes : 0, &bad);
		bind_text(stmt, 6, entry->content_type, &bad);
		bind_text(stmt, 7, landed[i].sha256, &bad);
		bind_int64(stmt, 8, true, file->size, &bad);
		bind_int64(stmt, 9, true, file->mtime_ns, &bad);
		bind_int64(stmt, 10, true, file->ino, &bad);
		if ((bad ? bind_failed(index) : sqlite3_step(stmt)) != SQLITE_DONE)
			ret = -EIO;
		stmt_done(stmt);
	}
	ret = end_transaction(index, ret, what, client, run);
unlock:
	pthread_mutex_unlock(&index->lock);
	return ret;
}

/* --- typed reads ------------------------------------------------------------ */

/* Whom a typed read hands its rows: the one callback it was given. */
struct visitor {
	int (*client)(void *ctx, const char *client);
	int (*run)(void *ctx, const struct index_run_row *row);
	int (*artifact)(void *ctx, const struct index_artifact_row *row);
	int (*audit)(void *ctx, const struct index_audit *row);
	void *ctx;
};

/*
 * Prepares sql, binds the texts (NULL binds NULL) and calls row_fn for
 * each row, under the lock.  These reads serve the admin tool, not the
 * mount's hot paths: a statement prepared per call is cheap enough.
 */
static int for_each_row(struct index *index, const char *what, const char *sql,
			const char *const *texts, size_t n_texts, int64_t number,
			int (*row_fn)(sqlite3_stmt *stmt, const struct visitor *visitor),
			const struct visitor *visitor)
{
	sqlite3_stmt *stmt = NULL;
	int rc, ret = 0;

	pthread_mutex_lock(&index->lock);
	rc = sqlite3_prepare_v2(index->db, sql, -1, &stmt, NULL);
	for (size_t i = 0; rc == SQLITE_OK && i < n_texts; i++)
		rc = texts[i] ? sqlite3_bind_text(stmt, (int)i + 1, texts[i], -1, SQLITE_STATIC) :
				sqlite3_bind_null(stmt, (int)i + 1);
	if (rc == SQLITE_OK && sqlite3_bind_parameter_count(stmt) > (int)n_texts)
		rc = sqlite3_bind_int64(stmt, (int)n_texts + 1, number);
	while (rc == SQLITE_OK && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
		ret = row_fn(stmt, visitor);
		if (ret)
			break;
		rc = SQLITE_OK;
	}
	if (ret == 0 && rc != SQLITE_DONE) {
		log_error("index %s: cannot list %s: %s", index->path, what,
			  sqlite3_errmsg(index->db));
		ret = -EIO;
	}
	sqlite3_finalize(stmt);
	pthread_mutex_unlock(&index->lock);
	return ret;
}

static int64_t column_int64_or(sqlite3_stmt *stmt, int i, int64_t null_value)
{
	return sqlite3_column_type(stmt, i) == SQLITE_NULL ? null_value :
	       sqlite3_column_int64(stmt, i);
}

static int client_row(sqlite3_stmt *stmt, const struct visitor *visitor)
{
	return visitor->client(visitor->ctx, column_text(stmt, 0));
}

int index_for_each_client(struct index *index,
			  int (*fn)(void *ctx, const char *client), void *ctx)
{
	return for_each_row(index, "clients",
			    "SELECT client FROM runs UNION SELECT client FROM run_owners "
			    "UNION SELECT client FROM audit ORDER BY 1",
			    NULL, 0, 0, client_row,
			    &(struct visitor){ .client = fn, .ctx = ctx });
}

static int run_row(sqlite3_stmt *stmt, const struct visitor *visitor)
{
	struct index_run_row row = {
		.client = column_text(stmt, 0),
		.run = column_text(stmt, 1),
		.workflow_id = column_text(stmt, 2),
		.user_directive = column_text(stmt, 3),
		.created_at = column_text(stmt, 4),
		.expires_at = column_text(stmt, 5),
		.expires_at_unix = column_int64_or(stmt, 6, INT64_MIN),
		.status = column_text(stmt, 7),
		.metadata_valid = sqlite3_column_int(stmt, 8) != 0,
		.files = sqlite3_column_int64(stmt, 9),
		.bytes = sqlite3_column_int64(stmt, 10),
	};

	return visitor->run(visitor->ctx, &row);
}

int index_for_each_run(struct index *index, const char *client,
		       int (*fn)(void *ctx, const struct index_run_row *row), void *ctx)
{
	const char *texts[] = { client };

	return for_each_row(index, "runs",
			    "SELECT r.client, r.run, r.workflow_id, r.user_directive, r.created_at,"
			    " r.expires_at, r.expires_at_unix, r.status, r.metadata_valid,"
			    " count(a.file_size), coalesce(sum(a.file_size), 0)"
			    " FROM runs r LEFT JOIN artifacts a ON a.run_id = r.id"
			    " WHERE ?1 IS NULL OR r.client = ?1"
			    " GROUP BY r.id ORDER BY r.client, r.run",
			    texts, 1, 0, run_row,
			    &(struct visitor){ .run = fn, .ctx = ctx });
}

/* The columns artifact_row() reads, in its order. */
#define ARTIFACT_COLUMNS \
	"r.client, r.run, a.filename, a.agent_id, a.generated_at, a.content_type," \
	" a.size_bytes, a.file_size, a.file_mtime_ns, a.file_ino, a.sha256" \
	" FROM artifacts a JOIN runs r ON a.run_id = r.id"

static int artifact_row(sqlite3_stmt *stmt, const struct visitor *visitor)
{
	struct index_artifact_row row = {
		.client = column_text(stmt, 0),
		.run = column_text(stmt, 1),
		.filename = column_text(stmt, 2),
		.agent_id = column_text(stmt, 3),
		.generated_at = column_text(stmt, 4),
		.content_type = column_text(stmt, 5),
		.size_bytes = column_int64_or(stmt, 6, -1),
		.file_size = column_int64_or(stmt, 7, -1),
		.file_mtime_ns = column_int64_or(stmt, 8, 0),
		.file_ino = column_int64_or(stmt, 9, 0),
		.sha256 = column_text(stmt, 10),
	};

	return visitor->artifact(visitor->ctx, &row);
}

int index_for_each_artifact(struct index *index, const char *client, const char *run,
			    int (*fn)(void *ctx, const struct index_artifact_row *row),
			    void *ctx)
{
	const char *texts[] = { client, run };

	return for_each_row(index, "artifacts",
			    "SELECT " ARTIFACT_COLUMNS
			    " WHERE r.client = ?1 AND r.run = ?2 ORDER BY a.filename",
			    texts, 2, 0, artifact_row,
			    &(struct visitor){ .artifact = fn, .ctx = ctx });
}

int index_find_artifacts(struct index *index, const struct index_artifact_query *query,
			 int (*fn)(void *ctx, const struct index_artifact_row *row), void *ctx)
{
	const char *texts[] = { query->client, query->sha256, query->agent_id,
				query->workflow_id };

	return for_each_row(index, "artifacts",
			    "SELECT " ARTIFACT_COLUMNS
			    " WHERE (?1 IS NULL OR r.client = ?1)"
			    " AND (?2 IS NULL OR a.sha256 = ?2)"
			    " AND (?3 IS NULL OR a.agent_id = ?3)"
			    " AND (?4 IS NULL OR r.workflow_id = ?4)"
			    " ORDER BY r.client, r.run, a.filename",
			    texts, 4, 0, artifact_row,
			    &(struct visitor){ .artifact = fn, .ctx = ctx });
}

static int audit_row(sqlite3_stmt *stmt, const struct visitor *visitor)
{
	struct index_audit row = read_audit_row(stmt);

	return visitor->audit(visitor->ctx, &row);
}

int index_for_each_audit(struct index *index, const char *client, int64_t since_ns,
			 int (*fn)(void *ctx, const struct index_audit *row), void *ctx)
{
	const char *texts[] = { client };

	return for_each_row(index, "the audit",
			    "SELECT " AUDIT_COLUMNS " FROM audit WHERE (?1 IS NULL OR client = ?1)"
			    " AND time_ns >= ?2 ORDER BY id",
			    texts, 1, since_ns, audit_row,
			    &(struct visitor){ .audit = fn, .ctx = ctx });
}
