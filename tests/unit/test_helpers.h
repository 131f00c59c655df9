/*
 * test_helpers.h - what several unit tests need: a temporary directory,
 * files laid out and read back below it by relative path, a second, plain
 * sqlite3 connection to an index file, and the log captured.
 *
 * A header of static inline functions, so that each test stays one source
 * file (tests/unit/meson.build builds test_<name>.c alone); a test that
 * does not use a helper does not get it.  Temporary names start with the
 * test's program name, so a leftover says which test left it.
 */
#ifndef ARTIFACTFS_TEST_HELPERS_H
#define ARTIFACTFS_TEST_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

/* ---- temporary directories ---- */

/* Makes /tmp/<program>.XXXXXX into dir. */
static inline void make_temp_dir(char *dir, size_t size)
{
	snprintf(dir, size, "/tmp/%s.XXXXXX", program_invocation_short_name);
	assert_non_null(mkdtemp(dir));
}

static inline int remove_entry(const char *path, const struct stat *st,
			       int type, struct FTW *ftw)
{
	return remove(path);
}

/* Removes path and everything below it, without following links. */
static inline int remove_tree(const char *path)
{
	return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- files below a root, named by relative path ---- */

/* A path built for the caller, returned by value: tree_rel("a/%s", x).path. */
struct tree_rel {
	char path[PATH_MAX];
};

static inline struct tree_rel tree_rel(const char *format, ...)
	__attribute__((format(printf, 1, 2)));
static inline struct tree_rel tree_rel(const char *format, ...)
{
	struct tree_rel rel;
	va_list args;

	va_start(args, format);
	vsnprintf(rel.path, sizeof(rel.path), format, args);
	va_end(args);
	return rel;
}

/* Makes root/rel and each missing directory above it (0755). */
static inline void tree_mkdir(const char *root, const char *rel)
{
	struct tree_rel full = tree_rel("%s/%s", root, rel);

	for (char *p = full.path + strlen(root) + 1;; p++) {
		char c = *p;

		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		if (mkdir(full.path, 0755) < 0 && errno != EEXIST)
			fail_msg("mkdir %s: %s", full.path, strerror(errno));
		*p = c;
		if (!c)
			break;
	}
}

/* Makes the directory that root/rel goes into. */
static inline void tree_mkdir_above(const char *root, const char *rel)
{
	struct tree_rel above = tree_rel("%s", rel);
	char *slash = strrchr(above.path, '/');

	if (slash) {
		*slash = '\0';
		tree_mkdir(root, above.path);
	}
}

/* Writes len bytes as root/rel (made or truncated, 0644), its directory made first. */
static inline void tree_write(const char *root, const char *rel, const void *data, size_t len)
{
	struct tree_rel full = tree_rel("%s/%s", root, rel);
	int fd;

	tree_mkdir_above(root, rel);
	fd = open(full.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail_msg("open %s: %s", full.path, strerror(errno));
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static inline void tree_put(const char *root, const char *rel, const char *text)
{
	tree_write(root, rel, text, strlen(text));
}

/* Makes root/rel a symlink to target, its directory made first. */
static inline void tree_symlink(const char *target, const char *root, const char *rel)
{
	struct tree_rel full = tree_rel("%s/%s", root, rel);

	tree_mkdir_above(root, rel);
	assert_int_equal(symlink(target, full.path), 0);
}

/* What root/rel holds, malloc'd and NUL-terminated, or NULL when it cannot be read. */
static inline char *tree_read(const char *root, const char *rel)
{
	struct tree_rel full = tree_rel("%s/%s", root, rel);
	char *text = NULL;
	size_t size = 0;
	FILE *fp = fopen(full.path, "re");

	if (!fp)
		return NULL;
	text = calloc(1, 1 << 20);
	assert_non_null(text);
	size = fread(text, 1, (1 << 20) - 1, fp);
	text[size] = '\0';
	fclose(fp);
	return text;
}

/* Whether root/rel exists (a symlink counts, dangling or not). */
static inline bool tree_exists(const char *root, const char *rel)
{
	struct tree_rel full = tree_rel("%s/%s", root, rel);
	struct stat st;

	return lstat(full.path, &st) == 0;
}

/* The permission bits of root/rel, or -1 when it does not exist. */
static inline int tree_mode(const char *root, const char *rel)
{
	struct tree_rel full = tree_rel("%s/%s", root, rel);
	struct stat st;

	return lstat(full.path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* The entries of the directory dirfd, "." and ".." left out. */
static inline size_t count_entries(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *entry;
	size_t n = 0;
	DIR *dir;

	assert_true(fd >= 0);
	dir = fdopendir(fd);
	assert_non_null(dir);
	while ((entry = readdir(dir)))
		n += strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0;
	closedir(dir);
	return n;
}

/* ---- a second connection, as an operator's sqlite3 would be ---- */

static inline sqlite3 *sql_open(const char *path, int flags)
{
	sqlite3 *db = NULL;

	assert_int_equal(sqlite3_open_v2(path, &db, flags, NULL), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

/* Runs sql (one row, one column) and returns it; -1 for no row, -2 for NULL. */
static inline int64_t sql_int(const char *path, const char *sql)
{
	sqlite3 *db = sql_open(path, SQLITE_OPEN_READWRITE);
	sqlite3_stmt *stmt = NULL;
	int64_t value = -1;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW)
		value = sqlite3_column_type(stmt, 0) == SQLITE_NULL ?
			-2 : sqlite3_column_int64(stmt, 0);
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return value;
}

/* Runs sql and returns the first column of its one row, malloc'd, or NULL. */
static inline char *sql_text(const char *path, const char *sql)
{
	sqlite3 *db = sql_open(path, SQLITE_OPEN_READWRITE);
	sqlite3_stmt *stmt = NULL;
	char *value = NULL;

	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
	if (sqlite3_step(stmt) == SQLITE_ROW &&
	    sqlite3_column_type(stmt, 0) != SQLITE_NULL)
		value = strdup((const char *)sqlite3_column_text(stmt, 0));
	sqlite3_finalize(stmt);
	sqlite3_close(db);
	return value;
}

static inline void sql_exec(const char *path, const char *sql)
{
	sqlite3 *db = sql_open(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK)
		fail_msg("%s: %s", sql, err);
	sqlite3_close(db);
}

/* ---- capturing the log (src/log.c writes to fd 2) ---- */

struct capture {
	int saved;
	char path[64];
};

static inline void capture_begin(struct capture *c)
{
	int fd;

	snprintf(c->path, sizeof(c->path), "/tmp/%s_log.XXXXXX",
		 program_invocation_short_name);
	fd = mkstemp(c->path);
	assert_true(fd >= 0);
	fflush(stderr);
	c->saved = dup(STDERR_FILENO);
	assert_true(c->saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
}

/* Returns what was logged, malloc'd. */
static inline char *capture_end(struct capture *c)
{
	char *text = calloc(1, 65536);
	FILE *fp;

	assert_non_null(text);
	fflush(stderr);
	assert_int_equal(dup2(c->saved, STDERR_FILENO), STDERR_FILENO);
	close(c->saved);
	fp = fopen(c->path, "r");
	assert_non_null(fp);
	(void)!fread(text, 1, 65535, fp);
	fclose(fp);
	unlink(c->path);
	/* Show it anyway: a test's log is worth reading when it fails. */
	fputs(text, stderr);
	return text;
}

static inline size_t count_lines(const char *text)
{
	size_t n = 0;

	for (; *text; text++)
		n += *text == '\n';
	return n;
}

#endif /* ARTIFACTFS_TEST_HELPERS_H */
