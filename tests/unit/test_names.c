/*
 * test_names.c - every rule of names.h, each side of each limit.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "names.h"

static const char *const reason_charset =
	"contains a character other than letters, digits, '-', '_' and '.'";

/* A name of len copies of c, in a buffer owned by the caller. */
static const char *make_name(char *buf, size_t len, char c)
{
	memset(buf, c, len);
	buf[len] = '\0';
	return buf;
}

static void accept_id(const char *name)
{
	const char *reason = "untouched";

	assert_int_equal(names_check_id(name, &reason), 0);
	assert_int_equal(names_check_id(name, NULL), 0);
}

static void reject_id(const char *name, const char *why)
{
	const char *reason = NULL;

	assert_int_equal(names_check_id(name, &reason), -EINVAL);
	assert_non_null(reason);
	assert_string_equal(reason, why);
	/* A NULL reason pointer is allowed and changes nothing. */
	assert_int_equal(names_check_id(name, NULL), -EINVAL);
}

static void accept_run(const char *name)
{
	const char *reason = NULL;

	assert_int_equal(names_check_run(name, &reason), 0);
}

static void reject_run(const char *name, const char *why)
{
	const char *reason = NULL;

	assert_int_equal(names_check_run(name, &reason), -EINVAL);
	assert_non_null(reason);
	assert_string_equal(reason, why);
	assert_int_equal(names_check_run(name, NULL), -EINVAL);
}

static void accept_artifact(const char *name)
{
	const char *reason = NULL;

	assert_int_equal(names_check_artifact(name, &reason), 0);
	assert_int_equal(names_check_artifact(name, NULL), 0);
}

static void reject_artifact(const char *name, const char *why)
{
	const char *reason = NULL;

	assert_int_equal(names_check_artifact(name, &reason), -EINVAL);
	assert_non_null(reason);
	assert_string_equal(reason, why);
	assert_int_equal(names_check_artifact(name, NULL), -EINVAL);
}

static void test_id_accepts(void **state)
{
	char buf[NAMES_ID_MAX + 2];

	accept_id("public");
	accept_id("cli-mode");
	accept_id("0f8fad5b-d9cb-469f-a165-70867728950e");
	accept_id("a");
	accept_id("Z9");
	accept_id("under_score");
	accept_id("dots.inside.");
	accept_id(".hidden");	/* only "." and ".." are refused */
	accept_id("...");
	accept_id("promote");	/* reserved for runs only */
	accept_id(make_name(buf, NAMES_ID_MAX, 'x'));
}

static void test_id_rejects(void **state)
{
	char buf[NAMES_ID_MAX + 2];

	reject_id(NULL, "is missing");
	reject_id("", "is empty");
	reject_id(make_name(buf, NAMES_ID_MAX + 1, 'x'), "is longer than 128 bytes");
	reject_id(".", "is '.' or '..'");
	reject_id("..", "is '.' or '..'");
	reject_id("/", "contains '/'");
	reject_id("a/b", "contains '/'");
	reject_id("../etc", "contains '/'");
	reject_id("a b", reason_charset);
	reject_id("a\nb", reason_charset);
	reject_id("a\tb", reason_charset);
	reject_id("a\x7f", reason_charset);
	reject_id("caf\xc3\xa9", reason_charset);	/* letters are ASCII only */
	reject_id("a\\b", reason_charset);
	reject_id("a:b", reason_charset);
	reject_id("a+b", reason_charset);
	reject_id("~", reason_charset);
}

static void test_run(void **state)
{
	char buf[NAMES_ID_MAX + 2];

	accept_run("0f8fad5b-d9cb-469f-a165-70867728950e");
	accept_run("Promote");	/* the reserved name is case-sensitive */
	accept_run("promoted");
	accept_run("promot");
	accept_run(make_name(buf, NAMES_ID_MAX, '7'));
	reject_run(NAMES_PROMOTE_DIR, "is reserved");
	/* And every id rule still applies. */
	reject_run(NULL, "is missing");
	reject_run("", "is empty");
	reject_run(make_name(buf, NAMES_ID_MAX + 1, '7'), "is longer than 128 bytes");
	reject_run(".", "is '.' or '..'");
	reject_run("..", "is '.' or '..'");
	reject_run("promote/x", "contains '/'");
	reject_run("run 1", reason_charset);
}

static void test_artifact_accepts(void **state)
{
	char buf[NAMES_FILE_MAX + 2];

	accept_artifact("report.md");
	accept_artifact("chart.png");
	accept_artifact("a");
	accept_artifact("with space and (parens) [x] ~!@#$%^&*");
	accept_artifact("a..b");
	accept_artifact("trailing.");
	accept_artifact("back\\slash");
	accept_artifact("metadata.json.bak");
	accept_artifact("Metadata.json");
	accept_artifact("caf\xc3\xa9.txt");			/* U+00E9 */
	accept_artifact("\xc2\xa0nbsp");			/* U+00A0, after C1 */
	accept_artifact("\xe2\x82\xac");			/* U+20AC */
	accept_artifact("\xed\x9f\xbf");			/* U+D7FF, before surrogates */
	accept_artifact("\xee\x80\x80");			/* U+E000, after them */
	accept_artifact("\xef\xbf\xbd");			/* U+FFFD */
	accept_artifact("\xf0\x9f\x98\x80.png");		/* U+1F600 */
	accept_artifact("\xf4\x8f\xbf\xbf");			/* U+10FFFF */
	accept_artifact(make_name(buf, NAMES_FILE_MAX, 'f'));
}

static void test_artifact_length(void **state)
{
	char buf[NAMES_FILE_MAX + 2];

	reject_artifact(NULL, "is missing");
	reject_artifact("", "is empty");
	reject_artifact(make_name(buf, NAMES_FILE_MAX + 1, 'f'),
			"is longer than 255 bytes");
	/* The limit is in bytes: 85 three-byte characters fit, 86 do not. */
	for (int i = 0; i < 85; i++)
		memcpy(buf + 3 * i, "\xe2\x82\xac", 3);
	buf[255] = '\0';
	accept_artifact(buf);
	buf[255] = 'x';
	buf[256] = '\0';
	reject_artifact(buf, "is longer than 255 bytes");
}

static void test_artifact_dots_and_slash(void **state)
{
	reject_artifact(".", "is '.' or '..'");
	reject_artifact("..", "is '.' or '..'");
	reject_artifact(".hidden", "starts with '.'");
	reject_artifact("...", "starts with '.'");
	reject_artifact(".metadata.json", "starts with '.'");
	reject_artifact("/", "contains '/'");
	reject_artifact("a/b", "contains '/'");
	reject_artifact("../x", "contains '/'");
	reject_artifact("x/", "contains '/'");
	reject_artifact("/etc/passwd", "contains '/'");
}

static void test_artifact_reserved(void **state)
{
	reject_artifact(NAMES_METADATA_FILE, "is reserved");
	reject_artifact("metadata.json", "is reserved");
}

static void test_artifact_utf8(void **state)
{
	const char *bad = "is not valid UTF-8";

	reject_artifact("\xc0\xaf", bad);		/* overlong '/' */
	reject_artifact("\xc1\xbf", bad);		/* overlong U+007F */
	reject_artifact("\xe0\x80\xaf", bad);		/* overlong, 3 bytes */
	reject_artifact("\xe0\x9f\xbf", bad);		/* overlong U+07FF */
	reject_artifact("\xf0\x80\x80\xaf", bad);	/* overlong, 4 bytes */
	reject_artifact("\xf0\x8f\xbf\xbf", bad);	/* overlong U+FFFF */
	reject_artifact("\xed\xa0\x80", bad);		/* U+D800 surrogate */
	reject_artifact("\xed\xbf\xbf", bad);		/* U+DFFF surrogate */
	reject_artifact("\xf4\x90\x80\x80", bad);	/* U+110000 */
	reject_artifact("\xf5\x80\x80\x80", bad);
	reject_artifact("\xf8\x88\x80\x80\x80", bad);	/* 5-byte form */
	reject_artifact("\xff", bad);
	reject_artifact("\xfe", bad);
	reject_artifact("\x80", bad);			/* lone continuation */
	reject_artifact("a\xbf", bad);
	reject_artifact("\xc3", bad);			/* truncated at the end */
	reject_artifact("\xe2\x82", bad);
	reject_artifact("\xf0\x9f\x98", bad);
	reject_artifact("\xc3x", bad);			/* truncated in the middle */
	reject_artifact("\xe2\x82x.txt", bad);
	reject_artifact("\xf0\x9f\x98x", bad);
	reject_artifact("ok\xe2\x82\xac\xe2", bad);
	/* Invalid UTF-8 with a leading '.' is still reported as invalid. */
	reject_artifact(".\xff", bad);
}

static void test_artifact_controls(void **state)
{
	const char *ctl = "contains a control character";

	reject_artifact("\x01", ctl);
	reject_artifact("a\nb", ctl);
	reject_artifact("a\rb", ctl);
	reject_artifact("tab\there", ctl);
	reject_artifact("esc\x1b[0m", ctl);
	reject_artifact("\x1f", ctl);
	reject_artifact("del\x7f", ctl);
	reject_artifact("\xc2\x80", ctl);	/* U+0080 */
	reject_artifact("nel\xc2\x85", ctl);	/* U+0085 */
	reject_artifact("\xc2\x9f", ctl);	/* U+009F */
	/* The first offending character decides the reason. */
	reject_artifact("\n/", ctl);
	reject_artifact("/\n", "contains '/'");
}

/* promote/<run>/ also takes the temporary names tools write, then rename or delete. */
static void test_upload_names_and_temporaries(void **state)
{
	static const char *const temporary[] = {
		".report.pdf.Xa81Kz", ".out.tmp", "..x", "db.sqlite-journal", "db.sqlite-wal",
		"db.sqlite-shm", ".metadata.json",
	};
	static const char *const final[] = {
		"report.pdf", "tmpa1b2c3d4", "zi0Xk2lm", "sedAb12Cd", "journal", "-wal", "x.wal",
		"notes~",
	};
	const char *reason = NULL;

	for (size_t i = 0; i < sizeof(temporary) / sizeof(*temporary); i++) {
		assert_int_equal(names_check_upload(temporary[i], &reason), 0);
		assert_true(names_is_temporary(temporary[i]));
	}
	for (size_t i = 0; i < sizeof(final) / sizeof(*final); i++) {
		assert_int_equal(names_check_upload(final[i], &reason), 0);
		assert_false(names_is_temporary(final[i]));
	}
	/* Everything else an artifact name may not be, an upload name may not be either. */
	assert_int_equal(names_check_upload(".", &reason), -EINVAL);
	assert_int_equal(names_check_upload("..", &reason), -EINVAL);
	assert_int_equal(names_check_upload(".a/b", &reason), -EINVAL);
	assert_int_equal(names_check_upload(".a\nb", &reason), -EINVAL);
	assert_int_equal(names_check_upload("metadata.json", &reason), -EINVAL);
	assert_string_equal(reason, "is reserved");
	assert_int_equal(names_check_upload("", &reason), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_id_accepts),
		cmocka_unit_test(test_id_rejects),
		cmocka_unit_test(test_run),
		cmocka_unit_test(test_artifact_accepts),
		cmocka_unit_test(test_artifact_length),
		cmocka_unit_test(test_artifact_dots_and_slash),
		cmocka_unit_test(test_artifact_reserved),
		cmocka_unit_test(test_artifact_utf8),
		cmocka_unit_test(test_artifact_controls),
		cmocka_unit_test(test_upload_names_and_temporaries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
