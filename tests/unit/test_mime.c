/*
 * test_mime.c - unit tests of the MIME table (src/mime.c): a small
 * mime.types written by the test, a missing one, and the system's.
 */
#include "test_helpers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mime.h"

#define SYSTEM_TABLE "/etc/mime.types"

/* Loads path and checks what was logged: warnings lines of it. */
static struct mime_table *load(const char *path, size_t warnings)
{
	struct mime_table *table = NULL;
	struct capture cap;
	char *logged;

	capture_begin(&cap);
	assert_int_equal(mime_table_load(path, &table), 0);
	logged = capture_end(&cap);
	assert_non_null(table);
	assert_int_equal(count_lines(logged), warnings);
	if (warnings) {
		assert_non_null(strstr(logged, "warning"));
		assert_non_null(strstr(logged, path));
	}
	free(logged);
	return table;
}

/* ---- a small table ---- */

struct fixture {
	char path[64];
};

static const char small_table[] =
	"# mime.types for the tests\n"
	"   # an indented comment\n"
	"\n"
	"\t \n"
	"text/plain\t\t\ttxt text\n"
	"image/png\tpng\n"
	"application/x-first\tdup\n"
	"application/x-second\tDUP other\n"
	"application/gzip gz\n"
	"text/x-mixed \t tsv\t \ttab  \n"
	"application/x-inline\tinl # notanext either\n"
	"application/x-none\n"
	"notatype foo\n"
	"TEXT/X-Upper\tUPX\n"
	"text/x-crlf crlf\r\n"
	"text/plain dup\n";

/* A line longer than any fixed buffer: 5,000 extensions. */
#define LONG_EXTS 5000

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	FILE *fp;
	int fd, i;

	assert_non_null(f);
	snprintf(f->path, sizeof(f->path), "/tmp/test_mime.XXXXXX");
	fd = mkstemp(f->path);
	assert_true(fd >= 0);
	fp = fdopen(fd, "w");
	assert_non_null(fp);
	fputs(small_table, fp);
	fputs("application/x-long", fp);
	for (i = 0; i < LONG_EXTS; i++)
		fprintf(fp, " e%d", i);
	/* The last line has no newline. */
	fputs(" lastlong\napplication/x-last\tnoeol", fp);
	assert_int_equal(fclose(fp), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	unlink(f->path);
	free(f);
	return 0;
}

static void assert_type(const struct mime_table *table, const char *name,
			const char *type)
{
	const char *got = mime_type_of(table, name);

	assert_non_null(got);
	if (strcmp(got, type) != 0)
		fail_msg("%s: got %s, expected %s", name ? name : "(null)",
			 got, type);
}

static void test_small_table(void **state)
{
	struct fixture *f = *state;
	struct mime_table *table = load(f->path, 0);
	char name[32];

	assert_type(table, "notes.txt", "text/plain");
	assert_type(table, "notes.text", "text/plain");
	assert_type(table, "chart.png", "image/png");

	/* Comments, blank lines, tabs and spaces. */
	assert_type(table, "a.tsv", "text/x-mixed");
	assert_type(table, "a.tab", "text/x-mixed");
	assert_type(table, "a.inl", "application/x-inline");
	assert_type(table, "a.notanext", MIME_DEFAULT_TYPE);
	assert_type(table, "a.either", MIME_DEFAULT_TYPE);
	assert_type(table, "a.crlf", "text/x-crlf");
	assert_type(table, "a.noeol", "application/x-last");
	/* A first word that is not a type makes no entries. */
	assert_type(table, "a.foo", MIME_DEFAULT_TYPE);

	/* The first of a duplicate extension wins, whatever its case. */
	assert_type(table, "a.dup", "application/x-first");
	assert_type(table, "a.other", "application/x-second");

	/* Case does not matter, either side; the type is as written. */
	assert_type(table, "CHART.PNG", "image/png");
	assert_type(table, "chart.Png", "image/png");
	assert_type(table, "a.upx", "TEXT/X-Upper");
	assert_type(table, "a.UpX", "TEXT/X-Upper");

	/* The last extension counts. */
	assert_type(table, "archive.tar.gz", "application/gzip");
	assert_type(table, "archive.gz.tar", MIME_DEFAULT_TYPE);
	assert_type(table, "a.png.txt", "text/plain");

	/* No extension. */
	assert_type(table, "README", MIME_DEFAULT_TYPE);
	assert_type(table, "trailing.", MIME_DEFAULT_TYPE);
	assert_type(table, "png.", MIME_DEFAULT_TYPE);
	assert_type(table, ".hidden", MIME_DEFAULT_TYPE);
	assert_type(table, ".png", MIME_DEFAULT_TYPE);
	assert_type(table, "..png", MIME_DEFAULT_TYPE);
	assert_type(table, ".hidden.png", "image/png");
	assert_type(table, "", MIME_DEFAULT_TYPE);
	assert_type(table, ".", MIME_DEFAULT_TYPE);
	assert_type(table, "..", MIME_DEFAULT_TYPE);
	assert_type(table, "png", MIME_DEFAULT_TYPE);
	assert_type(table, "a.unknown", MIME_DEFAULT_TYPE);
	/* Only the last path component has an extension. */
	assert_type(table, "dir.png/README", MIME_DEFAULT_TYPE);
	assert_type(table, "dir/chart.png", "image/png");

	/* Every word of a long line. */
	assert_type(table, "a.e0", "application/x-long");
	snprintf(name, sizeof(name), "a.e%d", LONG_EXTS - 1);
	assert_type(table, name, "application/x-long");
	assert_type(table, "a.lastlong", "application/x-long");

	assert_type(table, NULL, MIME_DEFAULT_TYPE);
	mime_table_free(table);
}

static void test_missing_file(void **state)
{
	struct mime_table *table = load("/tmp/test_mime.does-not-exist/mime.types", 1);

	assert_type(table, "chart.png", MIME_DEFAULT_TYPE);
	assert_type(table, "notes.txt", MIME_DEFAULT_TYPE);
	assert_type(table, "README", MIME_DEFAULT_TYPE);
	assert_type(table, "", MIME_DEFAULT_TYPE);
	mime_table_free(table);

	/* A directory opens but cannot be read: the same. */
	table = load("/tmp", 1);
	assert_type(table, "chart.png", MIME_DEFAULT_TYPE);
	mime_table_free(table);

	/* An empty file is an empty table, and no cause for a warning. */
	table = load("/dev/null", 0);
	assert_type(table, "chart.png", MIME_DEFAULT_TYPE);
	mime_table_free(table);

	mime_table_free(NULL);
	assert_type(NULL, "chart.png", MIME_DEFAULT_TYPE);
}

static void test_system_table(void **state)
{
	struct mime_table *table;

	if (access(SYSTEM_TABLE, R_OK) != 0)
		skip();	/* package media-types not installed */
	table = load(SYSTEM_TABLE, 0);
	/* The types the kernel-server writes itself. */
	assert_type(table, "a.png", "image/png");
	assert_type(table, "a.csv", "text/csv");
	assert_type(table, "a.json", "application/json");
	assert_type(table, "a.md", "text/markdown");
	assert_type(table, "a.txt", "text/plain");
	assert_type(table, "a.unknownext", MIME_DEFAULT_TYPE);
	assert_type(table, "report.PDF", "application/pdf");
	assert_type(table, "archive.tar.gz", "application/gzip");
	mime_table_free(table);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_small_table, setup, teardown),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_system_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
