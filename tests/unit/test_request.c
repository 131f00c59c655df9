/*
 * test_request.c - parsing the promotion requests agents write into promote/.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

static int parse(const char *text, struct request *r, char *problem)
{
	return request_parse(text, strlen(text), r, problem, 200);
}

static void test_full_request(void **state)
{
	struct request r;
	char problem[200];

	assert_int_equal(parse("{\"run_id\": \"r1\", \"files\": [\"a.txt\", \"b.csv\"],"
			       " \"workflow_id\": \"wf\", \"agent_id\": \"ag\","
			       " \"user_directive\": \"do it\"}", &r, problem), 0);
	assert_string_equal(r.run_id, "r1");
	assert_int_equal(r.n_files, 2);
	assert_string_equal(r.files[0], "a.txt");
	assert_string_equal(r.files[1], "b.csv");
	assert_string_equal(r.workflow_id, "wf");
	assert_string_equal(r.agent_id, "ag");
	assert_string_equal(r.user_directive, "do it");
	request_release(&r);
}

static void test_single_filename_and_defaults(void **state)
{
	struct request r;
	char problem[200];

	assert_int_equal(parse("{\"run_id\": \"r1\", \"filename\": \"one.md\"}", &r, problem), 0);
	assert_int_equal(r.n_files, 1);
	assert_string_equal(r.files[0], "one.md");
	assert_null(r.workflow_id);
	assert_null(r.agent_id);
	assert_null(r.user_directive);
	request_release(&r);
}

static void test_refusals(void **state)
{
	static const struct {
		const char *text;
		const char *problem;
	} cases[] = {
		{ "", "invalid JSON" },
		{ "[]", "not a JSON object" },
		{ "{\"files\": [\"a\"]}", "'run_id'" },
		{ "{\"run_id\": 7, \"files\": [\"a\"]}", "'run_id'" },
		{ "{\"run_id\": \"r\"}", "'files'" },
		{ "{\"run_id\": \"r\", \"files\": []}", "'files'" },
		{ "{\"run_id\": \"r\", \"files\": \"a\"}", "'files'" },
		{ "{\"run_id\": \"r\", \"files\": [\"a\", 3]}", "'files[1]'" },
		{ "{\"run_id\": \"r\", \"files\": [\"a\"], \"filename\": \"b\"}", "not both" },
		{ "{\"run_id\": \"r\", \"filename\": [\"b\"]}", "'filename'" },
		{ "{\"run_id\": \"r\", \"files\": [\"a\"], \"agent_id\": 1}", "'agent_id'" },
		{ "{\"run_id\": \"r\", \"files\": [\"a\"], \"extra\": 1}", "unknown field" },
		{ "{\"run_id\": \"r\", \"run_id\": \"s\", \"files\": [\"a\"]}", "invalid JSON" },
		/* jansson itself refuses \u0000: no string can hide a NUL. */
		{ "{\"run_id\": \"r\\u0000x\", \"files\": [\"a\"]}", "invalid JSON" },
		{ "{\"run_id\": \"r\", \"files\": [\"a\\u0000/../x\"]}", "invalid JSON" },
		{ "{\"run_id\": \"r\", \"files\": [\"\xff\"]}", "invalid JSON" },
	};
	struct request r;
	char problem[200];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse(cases[i].text, &r, problem), -EINVAL);
		if (!strstr(problem, cases[i].problem))
			fail_msg("case %zu: problem '%s' lacks '%s'", i, problem, cases[i].problem);
		request_release(&r);
	}
}

static void test_deep_nesting_is_refused_not_a_crash(void **state)
{
	static const char head[] = "{\"run_id\": \"r\", \"files\": ";
	size_t depth = 100000, len = 0;
	char *text = malloc(2 * depth + 64);
	struct request r;
	char problem[200];

	assert_non_null(text);
	/* A constant length: from sprintf's int, gcc -O2 sees a possible -1 offset. */
	memcpy(text, head, sizeof(head) - 1);
	len = sizeof(head) - 1;
	memset(text + len, '[', depth);
	len += depth;
	memset(text + len, ']', depth);
	len += depth;
	text[len++] = '}';
	assert_int_equal(request_parse(text, len, &r, problem, sizeof(problem)), -EINVAL);
	request_release(&r);
	free(text);
}

static void test_too_many_files(void **state)
{
	size_t n = REQUEST_FILES_MAX + 1, len = 0;
	char *text = malloc(n * 8 + 64);
	struct request r;
	char problem[200];

	assert_non_null(text);
	len += (size_t)sprintf(text, "{\"run_id\": \"r\", \"files\": [");
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(text + len, "%s\"f\"", i ? "," : "");
	len += (size_t)sprintf(text + len, "]}");
	assert_int_equal(request_parse(text, len, &r, problem, sizeof(problem)), -EINVAL);
	assert_non_null(strstr(problem, "more than"));
	request_release(&r);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_request),
		cmocka_unit_test(test_single_filename_and_defaults),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_deep_nesting_is_refused_not_a_crash),
		cmocka_unit_test(test_too_many_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
