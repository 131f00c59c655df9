/*
 * test_meta.c - metadata.json against the kernel-server's schema and its
 * serde_json output, and the RFC 3339 times it holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "meta.h"

/*
 * A run as the kernel-server writes it, byte for byte: serde_json's
 * to_string_pretty, which escapes only '"', '\\' and control characters
 * (\u001f in lowercase hex) and leaves '/' and non-ASCII alone.
 */
static const char fixture[] =
	"{\n"
	"  \"run_id\": \"0f8fad5b-d9cb-469f-a165-70867728950e\",\n"
	"  \"workflow_id\": \"wf-7d1c\",\n"
	"  \"user_directive\": \"Plot \\\"Q3\\\" sales/costs\\nin \xe2\x82\xac, per caf\xc3\xa9\\t\\u001f\\\\\",\n"
	"  \"created_at\": \"2026-02-07T06:00:37.123456789+00:00\",\n"
	"  \"expires_at\": \"2026-02-14T06:00:37.123456789+00:00\",\n"
	"  \"artifacts\": [\n"
	"    {\n"
	"      \"filename\": \"chart.png\",\n"
	"      \"agent_id\": \"agent-plotter\",\n"
	"      \"generated_at\": \"2026-02-07T06:01:02.500+00:00\",\n"
	"      \"size_bytes\": 48213,\n"
	"      \"content_type\": \"image/png\"\n"
	"    },\n"
	"    {\n"
	"      \"filename\": \"report.md\",\n"
	"      \"agent_id\": \"agent-writer\",\n"
	"      \"generated_at\": \"2026-02-07T06:02:10.250123+00:00\",\n"
	"      \"size_bytes\": 0,\n"
	"      \"content_type\": \"text/markdown\"\n"
	"    }\n"
	"  ],\n"
	"  \"status\": \"active\"\n"
	"}";

static const char fixture_directive[] =
	"Plot \"Q3\" sales/costs\nin \xe2\x82\xac, per caf\xc3\xa9\t\x1f\\";

#define PROBLEM_SIZE 256

static int parse_text(const char *doc, struct meta_run *run, char *problem)
{
	return meta_parse(doc, strlen(doc), run, problem, PROBLEM_SIZE);
}

static void assert_run_empty(const struct meta_run *run)
{
	assert_null(run->run_id);
	assert_null(run->workflow_id);
	assert_null(run->user_directive);
	assert_null(run->created_at);
	assert_null(run->expires_at);
	assert_null(run->status);
	assert_null(run->artifacts);
	assert_int_equal(run->n_artifacts, 0);
}

static void assert_starts_with(const char *text, const char *prefix)
{
	if (strncmp(text, prefix, strlen(prefix)) != 0)
		fail_msg("\"%s\" does not start with \"%s\"", text, prefix);
}

/*
 * The fixture with one top-level field replaced by value (removed if value
 * is NULL), as jansson writes it.  value is stolen.
 */
static char *fixture_with(const char *key, json_t *value)
{
	json_t *root = json_loads(fixture, 0, NULL);
	char *doc;

	assert_non_null(root);
	if (value)
		assert_int_equal(json_object_set_new(root, key, value), 0);
	else
		assert_int_equal(json_object_del(root, key), 0);
	doc = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	assert_non_null(doc);
	json_decref(root);
	return doc;
}

/* The same for a field of artifacts[index]. */
static char *fixture_with_artifact(size_t index, const char *key, json_t *value)
{
	json_t *root = json_loads(fixture, 0, NULL);
	json_t *entry;
	char *doc;

	assert_non_null(root);
	entry = json_array_get(json_object_get(root, "artifacts"), index);
	assert_non_null(entry);
	if (value)
		assert_int_equal(json_object_set_new(entry, key, value), 0);
	else
		assert_int_equal(json_object_del(entry, key), 0);
	doc = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	assert_non_null(doc);
	json_decref(root);
	return doc;
}

/* Parses doc, expecting -EINVAL and exactly the problem want. */
static void expect_problem(char *doc, const char *want, struct meta_run *run)
{
	char problem[PROBLEM_SIZE];

	assert_int_equal(parse_text(doc, run, problem), -EINVAL);
	assert_string_equal(problem, want);
	free(doc);
}

static void test_parse_fixture(void **state)
{
	struct meta_run run;
	char problem[PROBLEM_SIZE] = "stale";

	assert_int_equal(meta_parse(fixture, strlen(fixture), &run, problem,
				    sizeof(problem)), 0);
	assert_string_equal(problem, "");
	assert_string_equal(run.run_id, "0f8fad5b-d9cb-469f-a165-70867728950e");
	assert_string_equal(run.workflow_id, "wf-7d1c");
	assert_string_equal(run.user_directive, fixture_directive);
	assert_string_equal(run.created_at, "2026-02-07T06:00:37.123456789+00:00");
	assert_string_equal(run.expires_at, "2026-02-14T06:00:37.123456789+00:00");
	assert_string_equal(run.status, "active");
	assert_int_equal(run.n_artifacts, 2);
	assert_string_equal(run.artifacts[0].filename, "chart.png");
	assert_string_equal(run.artifacts[0].agent_id, "agent-plotter");
	assert_string_equal(run.artifacts[0].generated_at,
			    "2026-02-07T06:01:02.500+00:00");
	assert_true(run.artifacts[0].has_size_bytes);
	assert_int_equal(run.artifacts[0].size_bytes, 48213);
	assert_string_equal(run.artifacts[0].content_type, "image/png");
	assert_string_equal(run.artifacts[1].filename, "report.md");
	assert_string_equal(run.artifacts[1].agent_id, "agent-writer");
	assert_string_equal(run.artifacts[1].generated_at,
			    "2026-02-07T06:02:10.250123+00:00");
	assert_true(run.artifacts[1].has_size_bytes);
	assert_int_equal(run.artifacts[1].size_bytes, 0);
	assert_string_equal(run.artifacts[1].content_type, "text/markdown");
	meta_run_release(&run);
	assert_run_empty(&run);
	/* Releasing twice, or a zeroed struct, is harmless. */
	meta_run_release(&run);
	meta_run_release(NULL);
}

static void test_parse_no_problem_buffer(void **state)
{
	struct meta_run run;
	char tiny[8];

	assert_int_equal(meta_parse(fixture, strlen(fixture), &run, NULL, 0), 0);
	meta_run_release(&run);
	assert_int_equal(meta_parse("[]", 2, &run, NULL, 0), -EBADMSG);
	meta_run_release(&run);
	/* A short buffer gets a cut but terminated problem. */
	memset(tiny, 'x', sizeof(tiny));
	assert_int_equal(meta_parse("[]", 2, &run, tiny, sizeof(tiny)), -EBADMSG);
	assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
	assert_memory_equal(tiny, "documen", sizeof(tiny));
	meta_run_release(&run);
}

static void test_format_fixture(void **state)
{
	struct meta_run run;
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(meta_parse(fixture, strlen(fixture), &run, NULL, 0), 0);
	assert_int_equal(meta_format(&run, &out, &len), 0);
	assert_non_null(out);
	assert_int_equal(len, strlen(fixture));
	assert_int_equal(strlen(out), len);
	assert_string_equal(out, fixture);
	free(out);
	meta_run_release(&run);
}

static void test_format_empty_artifacts(void **state)
{
	static const char want[] =
		"{\n"
		"  \"run_id\": \"r\",\n"
		"  \"workflow_id\": \"w\",\n"
		"  \"user_directive\": \"\",\n"
		"  \"created_at\": \"c\",\n"
		"  \"expires_at\": \"e\",\n"
		"  \"artifacts\": [],\n"
		"  \"status\": \"active\"\n"
		"}";
	struct meta_run run = {
		.run_id = "r", .workflow_id = "w", .user_directive = "",
		.created_at = "c", .expires_at = "e", .status = "active",
	};
	struct meta_run back;
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(meta_format(&run, &out, &len), 0);
	assert_string_equal(out, want);
	assert_int_equal(len, sizeof(want) - 1);
	assert_int_equal(meta_parse(out, len, &back, NULL, 0), 0);
	assert_int_equal(back.n_artifacts, 0);
	assert_string_equal(back.user_directive, "");
	meta_run_release(&back);
	free(out);
}

static void test_format_escapes(void **state)
{
	static const char want[] =
		"{\n"
		"  \"run_id\": \"a/b\",\n"
		"  \"workflow_id\": \"\",\n"
		"  \"user_directive\": \"\\u0001\\b\\t\\n\\u000b\\f\\r\\u000e\\u001a\\u001f \\\"q\\\" \\\\ / \x7f \xc3\xa9 \xf0\x9f\x98\x80 \xe2\x80\xa8\",\n"
		"  \"created_at\": \"c\",\n"
		"  \"expires_at\": \"e\",\n"
		"  \"artifacts\": [\n"
		"    {\n"
		"      \"filename\": \"\\\"quoted\\\".txt\",\n"
		"      \"agent_id\": \"\",\n"
		"      \"generated_at\": \"g\",\n"
		"      \"size_bytes\": 18446744073709551615,\n"
		"      \"content_type\": \"application/octet-stream\"\n"
		"    }\n"
		"  ],\n"
		"  \"status\": \"active\"\n"
		"}";
	struct meta_artifact artifact = {
		.filename = "\"quoted\".txt", .agent_id = "", .generated_at = "g",
		.content_type = "application/octet-stream",
		.has_size_bytes = true, .size_bytes = UINT64_MAX,
	};
	struct meta_run run = {
		.run_id = "a/b",
		.workflow_id = "",
		.user_directive = "\x01\b\t\n\v\f\r\x0e\x1a\x1f \"q\" \\ / \x7f \xc3\xa9 "
				  "\xf0\x9f\x98\x80 \xe2\x80\xa8",
		.created_at = "c", .expires_at = "e", .status = "active",
		.artifacts = &artifact, .n_artifacts = 1,
	};
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(meta_format(&run, &out, &len), 0);
	assert_string_equal(out, want);
	assert_int_equal(len, sizeof(want) - 1);
	free(out);
}

/*
 * Each byte that needs a look, at every place of a word and past it: the
 * formatter skips plain ASCII eight bytes at a time, and must stop at any
 * of them, wherever it falls.  jansson reads the text back.
 */
static void test_format_escapes_anywhere(void **state)
{
	static const char *const specials[] = {
		"\"", "\\", "\n", "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xf0\x9f\x98\x80",
	};
	struct meta_run run = {
		.run_id = "r", .workflow_id = "w", .created_at = "c", .expires_at = "e",
		.status = "s",
	};
	char text[64], *out;
	size_t len;

	for (size_t k = 0; k < sizeof(specials) / sizeof(specials[0]); k++) {
		for (size_t at = 0; at < 20; at++) {
			json_error_t error;
			json_t *doc;

			memset(text, 'a', at);
			snprintf(text + at, sizeof(text) - at, "%s%s", specials[k], "bcdefghijk");
			run.user_directive = text;
			assert_int_equal(meta_format(&run, &out, &len), 0);
			doc = json_loadb(out, len, 0, &error);
			assert_non_null(doc);
			assert_string_equal(json_string_value(json_object_get(doc, "user_directive")),
					    text);
			json_decref(doc);
			free(out);

			/* Bytes that are no UTF-8 at the same place are refused. */
			memset(text, 'a', at);
			snprintf(text + at, sizeof(text) - at, "\xff%s", "bcdefghijk");
			assert_int_equal(meta_format(&run, &out, &len), -EINVAL);
			text[at] = (char)0x85;	/* a lone continuation byte */
			assert_int_equal(meta_format(&run, &out, &len), -EINVAL);
		}
	}
}

static void test_format_invalid(void **state)
{
	struct meta_artifact artifact = {
		.filename = "f", .agent_id = "a", .generated_at = "g",
		.content_type = "t", .has_size_bytes = true, .size_bytes = 1,
	};
	struct meta_run good = {
		.run_id = "r", .workflow_id = "w", .user_directive = "u",
		.created_at = "c", .expires_at = "e", .status = "s",
		.artifacts = &artifact, .n_artifacts = 1,
	};
	struct meta_run run;
	struct meta_artifact bad;
	char *out = (char *)"untouched";
	size_t len = 7;

	assert_int_equal(meta_format(&good, &out, &len), 0);
	free(out);

	run = good;
	run.status = NULL;
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);
	assert_null(out);
	assert_int_equal(len, 0);

	run = good;
	run.run_id = NULL;
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);

	run = good;
	run.user_directive = "bad \xc0\xaf utf-8";
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);

	run = good;
	run.created_at = "truncated \xe2\x82";
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);

	run = good;
	run.artifacts = NULL;
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);

	run = good;
	run.artifacts = &bad;
	bad = artifact;
	bad.has_size_bytes = false;
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);
	bad = artifact;
	bad.agent_id = NULL;
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);
	bad = artifact;
	bad.content_type = NULL;
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);
	bad = artifact;
	bad.filename = "\xed\xa0\x80";	/* a surrogate */
	assert_int_equal(meta_format(&run, &out, &len), -EINVAL);

	assert_int_equal(meta_format(NULL, &out, &len), -EINVAL);
	assert_int_equal(meta_format(&good, NULL, &len), -EINVAL);
	assert_int_equal(meta_format(&good, &out, NULL), -EINVAL);
}

static void assert_runs_equal(const struct meta_run *a, const struct meta_run *b)
{
	assert_string_equal(a->run_id, b->run_id);
	assert_string_equal(a->workflow_id, b->workflow_id);
	assert_string_equal(a->user_directive, b->user_directive);
	assert_string_equal(a->created_at, b->created_at);
	assert_string_equal(a->expires_at, b->expires_at);
	assert_string_equal(a->status, b->status);
	assert_int_equal(a->n_artifacts, b->n_artifacts);
	for (size_t i = 0; i < a->n_artifacts; i++) {
		assert_string_equal(a->artifacts[i].filename, b->artifacts[i].filename);
		assert_string_equal(a->artifacts[i].agent_id, b->artifacts[i].agent_id);
		assert_string_equal(a->artifacts[i].generated_at,
				    b->artifacts[i].generated_at);
		assert_string_equal(a->artifacts[i].content_type,
				    b->artifacts[i].content_type);
		assert_int_equal(a->artifacts[i].has_size_bytes,
				 b->artifacts[i].has_size_bytes);
		assert_true(a->artifacts[i].size_bytes == b->artifacts[i].size_bytes);
	}
}

static void test_round_trip(void **state)
{
	char all_controls[32];
	struct meta_artifact artifacts[3] = {
		{ .filename = "a", .agent_id = "x", .generated_at = "g",
		  .content_type = "text/plain", .has_size_bytes = true,
		  .size_bytes = 0 },
		{ .filename = "b \xe2\x82\xac \"/\\", .agent_id = all_controls,
		  .generated_at = "2026-02-07T06:00:37+00:00",
		  .content_type = "text/csv", .has_size_bytes = true,
		  .size_bytes = (uint64_t)INT64_MAX },
		{ .filename = "c", .agent_id = "", .generated_at = "",
		  .content_type = "", .has_size_bytes = true, .size_bytes = 1 },
	};
	struct meta_run run = {
		.run_id = "r", .workflow_id = "w",
		.user_directive = "line 1\nline 2\r\n\ttab \x7f \xf4\x8f\xbf\xbf",
		.created_at = "2026-02-07T06:00:37.123456789+00:00",
		.expires_at = "2026-02-14T06:00:37.123456789+00:00",
		.status = "active", .artifacts = artifacts, .n_artifacts = 3,
	};
	struct meta_run back;
	char *out = NULL, *again = NULL;
	size_t len = 0, again_len = 0;

	for (int i = 1; i < 32; i++)
		all_controls[i - 1] = (char)i;
	all_controls[31] = '\0';

	assert_int_equal(meta_format(&run, &out, &len), 0);
	assert_int_equal(meta_parse(out, len, &back, NULL, 0), 0);
	assert_runs_equal(&run, &back);
	assert_int_equal(meta_format(&back, &again, &again_len), 0);
	assert_int_equal(again_len, len);
	assert_string_equal(again, out);
	/* jansson agrees that it is JSON, and reads the same values. */
	{
		json_t *root = json_loadb(out, len, 0, NULL);

		assert_non_null(root);
		assert_string_equal(json_string_value(json_object_get(root, "user_directive")),
				    run.user_directive);
		json_decref(root);
	}
	free(again);
	free(out);
	meta_run_release(&back);
}

static void test_missing_fields(void **state)
{
	static const char *const keys[] = {
		"run_id", "workflow_id", "user_directive", "created_at",
		"expires_at", "artifacts", "status",
	};
	char want[PROBLEM_SIZE];
	struct meta_run run;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "field '%s' is missing", keys[i]);
		expect_problem(fixture_with(keys[i], NULL), want, &run);
		/* Everything else is still there. */
		assert_true(strcmp(keys[i], "run_id") == 0 || run.run_id);
		assert_true(strcmp(keys[i], "status") == 0 ||
			    (run.status && strcmp(run.status, "active") == 0));
		assert_int_equal(run.n_artifacts,
				 strcmp(keys[i], "artifacts") == 0 ? 0 : 2);
		if (strcmp(keys[i], "user_directive") == 0)
			assert_null(run.user_directive);
		else
			assert_string_equal(run.user_directive, fixture_directive);
		meta_run_release(&run);
	}
}

static void test_missing_artifact_fields(void **state)
{
	static const char *const keys[] = {
		"agent_id", "generated_at", "size_bytes", "content_type",
	};
	char want[PROBLEM_SIZE];
	struct meta_run run;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "field 'artifacts[1].%s' is missing",
			 keys[i]);
		expect_problem(fixture_with_artifact(1, keys[i], NULL), want, &run);
		/* The entry is kept, only the field is absent. */
		assert_int_equal(run.n_artifacts, 2);
		assert_string_equal(run.artifacts[1].filename, "report.md");
		assert_true(run.artifacts[1].has_size_bytes ==
			    (strcmp(keys[i], "size_bytes") != 0));
		if (strcmp(keys[i], "agent_id") == 0)
			assert_null(run.artifacts[1].agent_id);
		else
			assert_string_equal(run.artifacts[1].agent_id, "agent-writer");
		assert_non_null(run.run_id);
		assert_non_null(run.status);
		meta_run_release(&run);
	}

	/* Without a filename the entry cannot be served: it is dropped. */
	expect_problem(fixture_with_artifact(0, "filename", NULL),
		       "field 'artifacts[0].filename' is missing", &run);
	assert_int_equal(run.n_artifacts, 1);
	assert_string_equal(run.artifacts[0].filename, "report.md");
	assert_true(run.artifacts[0].has_size_bytes);
	meta_run_release(&run);
}

static void test_wrong_types(void **state)
{
	static const char *const keys[] = {
		"run_id", "workflow_id", "user_directive", "created_at",
		"expires_at", "status",
	};
	char want[PROBLEM_SIZE];
	struct meta_run run;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(want, sizeof(want), "field '%s' is not a string", keys[i]);
		expect_problem(fixture_with(keys[i], json_integer(1)), want, &run);
		meta_run_release(&run);
		expect_problem(fixture_with(keys[i], json_null()), want, &run);
		meta_run_release(&run);
		expect_problem(fixture_with(keys[i], json_pack("[s]", "x")), want, &run);
		assert_int_equal(run.n_artifacts, 2);
		meta_run_release(&run);
	}

	expect_problem(fixture_with("artifacts", json_object()),
		       "field 'artifacts' is not an array", &run);
	assert_int_equal(run.n_artifacts, 0);
	assert_null(run.artifacts);
	assert_string_equal(run.status, "active");
	meta_run_release(&run);
	expect_problem(fixture_with("artifacts", json_string("[]")),
		       "field 'artifacts' is not an array", &run);
	meta_run_release(&run);

	expect_problem(fixture_with_artifact(0, "filename", json_integer(3)),
		       "field 'artifacts[0].filename' is not a string", &run);
	assert_int_equal(run.n_artifacts, 1);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(1, "agent_id", json_true()),
		       "field 'artifacts[1].agent_id' is not a string", &run);
	assert_null(run.artifacts[1].agent_id);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(1, "generated_at", json_real(1.5)),
		       "field 'artifacts[1].generated_at' is not a string", &run);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(0, "content_type", json_object()),
		       "field 'artifacts[0].content_type' is not a string", &run);
	assert_null(run.artifacts[0].content_type);
	assert_string_equal(run.artifacts[0].agent_id, "agent-plotter");
	meta_run_release(&run);
}

static void test_size_bytes(void **state)
{
	struct meta_run run;
	char problem[PROBLEM_SIZE];
	char *doc;

	expect_problem(fixture_with_artifact(0, "size_bytes", json_integer(-1)),
		       "field 'artifacts[0].size_bytes' is negative", &run);
	assert_false(run.artifacts[0].has_size_bytes);
	assert_int_equal(run.n_artifacts, 2);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(1, "size_bytes", json_string("12")),
		       "field 'artifacts[1].size_bytes' is not an integer", &run);
	assert_false(run.artifacts[1].has_size_bytes);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(1, "size_bytes", json_real(12.0)),
		       "field 'artifacts[1].size_bytes' is not an integer", &run);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(1, "size_bytes", json_null()),
		       "field 'artifacts[1].size_bytes' is not an integer", &run);
	meta_run_release(&run);

	/* The largest size jansson can hold. */
	doc = fixture_with_artifact(0, "size_bytes", json_integer(INT64_MAX));
	assert_int_equal(parse_text(doc, &run, problem), 0);
	assert_true(run.artifacts[0].size_bytes == (uint64_t)INT64_MAX);
	free(doc);
	meta_run_release(&run);

	/*
	 * Beyond it neither jansson nor the index holds the value: that one
	 * field is lost, the rest of the document is kept.
	 */
	{
		static const char big[] =
			"{\"run_id\": \"r\", \"artifacts\": [{\"filename\": \"f\","
			" \"size_bytes\": 18446744073709551615}, {\"filename\": \"g\","
			" \"size_bytes\": 42}]}";

		assert_int_equal(parse_text(big, &run, problem), -EINVAL);
		assert_starts_with(problem, "line 1: too big integer");
		assert_string_equal(run.run_id, "r");
		assert_int_equal(run.n_artifacts, 2);
		assert_false(run.artifacts[0].has_size_bytes);
		assert_true(run.artifacts[1].has_size_bytes);
		assert_true(run.artifacts[1].size_bytes == 42);
		meta_run_release(&run);
	}
}

static void test_not_an_object(void **state)
{
	static const char *const docs[] = {
		"[]", "[{\"run_id\": \"r\"}]", "\"text\"", "42", "null", "true",
		" \n[1, 2]\n",
	};
	struct meta_run run;
	char problem[PROBLEM_SIZE];

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		assert_int_equal(parse_text(docs[i], &run, problem), -EBADMSG);
		assert_string_equal(problem, "document is not a JSON object");
		assert_run_empty(&run);
		meta_run_release(&run);
	}
	/* An empty object is an object with every field missing. */
	assert_int_equal(parse_text("{}", &run, problem), -EINVAL);
	assert_string_equal(problem, "field 'run_id' is missing");
	assert_run_empty(&run);
	meta_run_release(&run);
}

static void test_invalid_json(void **state)
{
	static const char *const docs[] = {
		"", "   ", "{", "{\"run_id\": }", "{\"run_id\": \"r\",}",
		"{\"run_id\": \"unterminated}", "{} {}", "{}x", "{'a': 1}",
		"\xef\xbb\xbf{}",	/* a byte-order mark: serde refuses it too */
	};
	static const char three_lines[] =
		"{\n  \"run_id\": \"r\",\n  oops\n}";
	struct meta_run run;
	char problem[PROBLEM_SIZE];

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		assert_int_equal(parse_text(docs[i], &run, problem), -EBADMSG);
		assert_starts_with(problem, "line ");
		assert_non_null(strstr(problem, ": invalid JSON: "));
		assert_run_empty(&run);
		meta_run_release(&run);
	}
	assert_int_equal(parse_text(three_lines, &run, problem), -EBADMSG);
	assert_starts_with(problem, "line 3: invalid JSON: ");
	assert_run_empty(&run);
	meta_run_release(&run);

	/* A NULL buffer of length 0 is an empty document, not a crash. */
	assert_int_equal(meta_parse(NULL, 0, &run, problem, sizeof(problem)), -EBADMSG);
	assert_starts_with(problem, "line 1: invalid JSON: ");
	meta_run_release(&run);
	assert_int_equal(meta_parse(NULL, 5, &run, problem, sizeof(problem)), -EINVAL);
	assert_run_empty(&run);
	meta_run_release(&run);

	/* The length is honoured: what follows it is not read. */
	assert_int_equal(meta_parse(fixture, strlen(fixture) - 1, &run, problem,
				    sizeof(problem)), -EBADMSG);
	assert_run_empty(&run);
	meta_run_release(&run);
	{
		char *doc = malloc(strlen(fixture) + 3);

		assert_non_null(doc);
		memcpy(doc, fixture, strlen(fixture));
		memcpy(doc + strlen(fixture), "xyz", 3);
		assert_int_equal(meta_parse(doc, strlen(fixture), &run, problem,
					    sizeof(problem)), 0);
		meta_run_release(&run);
		free(doc);
	}
}

static void test_invalid_utf8(void **state)
{
	static const char *const docs[] = {
		"{\"run_id\": \"bad \xff byte\"}",
		"{\"run_id\": \"overlong \xc0\xaf\"}",
		"{\"run_id\": \"surrogate \xed\xa0\x80\"}",
		"{\"run_id\": \"too high \xf4\x90\x80\x80\"}",
		"{\"run_id\": \"truncated \xe2\x82\"}",
		"{\"run_id\xff\": \"key\"}",
	};
	struct meta_run run;
	char problem[PROBLEM_SIZE];

	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		assert_int_equal(parse_text(docs[i], &run, problem), -EBADMSG);
		assert_starts_with(problem, "line 1: invalid JSON: ");
		assert_run_empty(&run);
		meta_run_release(&run);
	}
}

static void test_nul_in_string(void **state)
{
	struct meta_run run;

	/* serde reads "\u0000"; a C string cannot hold it: that field only. */
	expect_problem(fixture_with("workflow_id", json_stringn("a\0b", 3)),
		       "field 'workflow_id' contains a NUL character", &run);
	assert_null(run.workflow_id);
	assert_non_null(run.run_id);
	assert_int_equal(run.n_artifacts, 2);
	meta_run_release(&run);
	expect_problem(fixture_with_artifact(0, "filename", json_stringn("x\0y", 3)),
		       "field 'artifacts[0].filename' contains a NUL character", &run);
	assert_int_equal(run.n_artifacts, 1);
	assert_string_equal(run.artifacts[0].filename, "report.md");
	meta_run_release(&run);
}

static void test_too_large(void **state)
{
	size_t fixture_len = strlen(fixture);
	char *doc = malloc(META_MAX_BYTES + 1);
	struct meta_run run;
	char problem[PROBLEM_SIZE];

	assert_non_null(doc);
	/* Exactly the limit: the fixture, then trailing white space. */
	memcpy(doc, fixture, fixture_len);
	memset(doc + fixture_len, ' ', META_MAX_BYTES + 1 - fixture_len);
	assert_int_equal(meta_parse(doc, META_MAX_BYTES, &run, problem,
				    sizeof(problem)), 0);
	assert_int_equal(run.n_artifacts, 2);
	meta_run_release(&run);

	/* One byte more is refused before it is read. */
	assert_int_equal(meta_parse(doc, META_MAX_BYTES + 1, &run, problem,
				    sizeof(problem)), -EFBIG);
	assert_string_equal(problem,
			    "document is 16777217 bytes, more than the limit of 16777216");
	assert_run_empty(&run);
	meta_run_release(&run);
	free(doc);
}

static void test_duplicate_filenames(void **state)
{
	static const char doc[] =
		"{\"run_id\": \"r\", \"workflow_id\": \"w\", \"user_directive\": \"\","
		" \"created_at\": \"c\", \"expires_at\": \"e\", \"status\": \"active\","
		" \"artifacts\": ["
		"{\"filename\": \"a\", \"agent_id\": \"first\", \"generated_at\": \"g1\","
		" \"size_bytes\": 1, \"content_type\": \"text/plain\"},"
		"{\"filename\": \"b\", \"agent_id\": \"other\", \"generated_at\": \"g2\","
		" \"size_bytes\": 2, \"content_type\": \"text/csv\"},"
		"{\"filename\": \"a\", \"agent_id\": \"second\", \"generated_at\": \"g3\","
		" \"size_bytes\": 3, \"content_type\": \"image/png\"},"
		"{\"filename\": \"a\", \"agent_id\": \"third\", \"generated_at\": \"g4\","
		" \"size_bytes\": 4, \"content_type\": \"text/markdown\"}"
		"]}";
	struct meta_run run;
	char problem[PROBLEM_SIZE];

	/* What the kernel-server writes on re-promotion: valid, deduplicated. */
	assert_int_equal(parse_text(doc, &run, problem), 0);
	assert_int_equal(run.n_artifacts, 2);
	assert_int_equal(run.n_duplicates, 2);	/* counted, for a repair to fold them */
	assert_ptr_equal(meta_find_artifact(&run, "b"), &run.artifacts[1]);
	assert_ptr_equal(meta_find_artifact(&run, "a"), &run.artifacts[0]);
	assert_null(meta_find_artifact(&run, "c"));
	/* The last content, in the first entry's place. */
	assert_string_equal(run.artifacts[0].filename, "a");
	assert_string_equal(run.artifacts[0].agent_id, "third");
	assert_string_equal(run.artifacts[0].generated_at, "g4");
	assert_int_equal(run.artifacts[0].size_bytes, 4);
	assert_string_equal(run.artifacts[0].content_type, "text/markdown");
	assert_string_equal(run.artifacts[1].filename, "b");
	assert_string_equal(run.artifacts[1].agent_id, "other");
	assert_int_equal(run.artifacts[1].size_bytes, 2);
	meta_run_release(&run);

	/* A later duplicate with a bad field still replaces the earlier one. */
	{
		char *bad = fixture_with_artifact(1, "filename", json_string("chart.png"));
		char *p = strstr(bad, "\"size_bytes\": 0");

		assert_non_null(p);
		memcpy(p, "\"size_bytes\":-1", 15);
		expect_problem(bad, "field 'artifacts[1].size_bytes' is negative", &run);
		assert_int_equal(run.n_artifacts, 1);
		assert_string_equal(run.artifacts[0].agent_id, "agent-writer");
		assert_false(run.artifacts[0].has_size_bytes);
		meta_run_release(&run);
	}
}

static void test_duplicate_keys(void **state)
{
	static const char doc[] =
		"{\"run_id\": \"r\", \"workflow_id\": \"w\", \"user_directive\": \"\",\n"
		" \"created_at\": \"c\", \"expires_at\": \"e\", \"artifacts\": [],\n"
		" \"status\": \"active\", \"status\": \"gone\"}";
	struct meta_run run;
	char problem[PROBLEM_SIZE];

	/* serde refuses a repeated field; the rest is still read. */
	assert_int_equal(parse_text(doc, &run, problem), -EINVAL);
	assert_starts_with(problem, "line 3: invalid JSON: duplicate object key");
	assert_string_equal(run.run_id, "r");
	assert_string_equal(run.status, "gone");
	meta_run_release(&run);
}

static void test_unknown_fields(void **state)
{
	static const char doc[] =
		"{\"version\": 2, \"run_id\": \"r\", \"workflow_id\": \"w\","
		" \"user_directive\": \"d\", \"created_at\": \"c\", \"expires_at\": \"e\","
		" \"extra\": {\"nested\": [1, null, {\"x\": 1.5}]},"
		" \"artifacts\": [{\"filename\": \"f\", \"agent_id\": \"a\","
		" \"generated_at\": \"g\", \"size_bytes\": 7, \"content_type\": \"t\","
		" \"sha256\": \"00ff\", \"tags\": []}],"
		" \"status\": \"active\", \"owner\": null}";
	struct meta_run run;
	char problem[PROBLEM_SIZE];
	char *out = NULL;
	size_t len = 0;

	assert_int_equal(parse_text(doc, &run, problem), 0);
	assert_string_equal(problem, "");
	assert_int_equal(run.n_artifacts, 1);
	assert_int_equal(run.artifacts[0].size_bytes, 7);
	/* Written back in the kernel-server's own form, without them. */
	assert_int_equal(meta_format(&run, &out, &len), 0);
	assert_null(strstr(out, "extra"));
	assert_null(strstr(out, "sha256"));
	free(out);
	meta_run_release(&run);
}

static void test_first_problem(void **state)
{
	json_t *root = json_loads(fixture, 0, NULL);
	struct meta_run run;
	char *doc;

	/* Schema order decides, not the order of the keys in the file. */
	assert_non_null(root);
	json_object_set_new(root, "status", json_integer(1));
	json_object_del(root, "workflow_id");
	json_object_set_new(json_array_get(json_object_get(root, "artifacts"), 0),
			    "size_bytes", json_integer(-5));
	doc = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	assert_non_null(doc);
	expect_problem(doc, "field 'workflow_id' is missing", &run);
	assert_null(run.workflow_id);
	assert_null(run.status);
	assert_false(run.artifacts[0].has_size_bytes);
	assert_true(run.artifacts[1].has_size_bytes);
	meta_run_release(&run);

	/* Entries that are not objects are dropped and named by index. */
	expect_problem(strdup("{\"run_id\": \"r\", \"workflow_id\": \"w\","
			      " \"user_directive\": \"\", \"created_at\": \"c\","
			      " \"expires_at\": \"e\", \"artifacts\": [\"x\","
			      " {\"filename\": \"f\"}, 3], \"status\": \"active\"}"),
		       "field 'artifacts[0]' is not an object", &run);
	assert_int_equal(run.n_artifacts, 1);
	assert_string_equal(run.artifacts[0].filename, "f");
	assert_null(run.artifacts[0].agent_id);
	assert_false(run.artifacts[0].has_size_bytes);
	meta_run_release(&run);
}

static int64_t parse_time_ok(const char *text)
{
	int64_t seconds = 42;

	if (meta_parse_time(text, &seconds) != 0)
		fail_msg("meta_parse_time refused \"%s\"", text);
	return seconds;
}

static void test_parse_time(void **state)
{
	const int64_t t = 1770444037;	/* 2026-02-07T06:00:37Z */

	assert_int_equal(parse_time_ok("1970-01-01T00:00:00Z"), 0);
	assert_int_equal(parse_time_ok("1970-01-01T00:00:00+00:00"), 0);
	assert_int_equal(parse_time_ok("1969-12-31T23:59:59Z"), -1);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37+00:00"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37Z"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37.123+00:00"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37.123456+00:00"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37.123456789+00:00"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37.999999999Z"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37.5Z"), t);
	/* chrono reads any number of digits, and so does this. */
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37.1234567891234Z"), t);
	/* 08:00 at +02:00 and 00:30 at -05:30 are both 06:00 UTC. */
	assert_int_equal(parse_time_ok("2026-02-07T08:00:37+02:00"), t);
	assert_int_equal(parse_time_ok("2026-02-07T00:30:37-05:30"), t);
	assert_int_equal(parse_time_ok("2026-02-07T00:30:37.250-05:30"), t);
	assert_int_equal(parse_time_ok("2026-02-06T23:00:37-07:00"), t);
	assert_int_equal(parse_time_ok("2026-02-07T06:00:37-00:00"), t);
	assert_int_equal(parse_time_ok("2026-02-08T05:59:37+23:59"), t);
	/* Leap days. */
	assert_int_equal(parse_time_ok("2024-02-29T12:00:00Z"), 1709208000);
	assert_int_equal(parse_time_ok("2000-02-29T00:00:00Z"), 951782400);
	assert_int_equal(parse_time_ok("2024-03-01T00:00:00Z") -
			 parse_time_ok("2024-02-28T00:00:00Z"), 2 * 86400);
	assert_int_equal(parse_time_ok("2023-03-01T00:00:00Z") -
			 parse_time_ok("2023-02-28T00:00:00Z"), 86400);
	/* The ends of four-digit years. */
	assert_int_equal(parse_time_ok("0000-01-01T00:00:00Z"), -62167219200LL);
	assert_int_equal(parse_time_ok("9999-12-31T23:59:59Z"), 253402300799LL);
	assert_int_equal(parse_time_ok("2026-12-31T23:59:59Z") + 1,
			 parse_time_ok("2027-01-01T00:00:00Z"));
}

static void test_parse_time_matches_timegm(void **state)
{
	char text[64];

	/* Every month's first and last day over a 400-year cycle and more. */
	for (int year = 1899; year <= 2401; year += 3) {
		for (int month = 1; month <= 12; month++) {
			struct tm tm = {
				.tm_year = year - 1900, .tm_mon = month - 1,
				.tm_mday = 1, .tm_hour = 13, .tm_min = 7, .tm_sec = 59,
			};

			snprintf(text, sizeof(text), "%04d-%02d-01T13:07:59Z",
				 year, month);
			assert_int_equal(parse_time_ok(text), (int64_t)timegm(&tm));
		}
	}
}

static void test_parse_time_bad(void **state)
{
	static const char *const bad[] = {
		"", "2026", "2026-02-07", "2026-02-07T06:00:37",
		"2026-02-07T06:00", "2026-02-07T06:00Z",
		"2026-02-07 06:00:37Z", "2026-02-07t06:00:37Z",
		"2026-02-07T06:00:37z", "2026-02-07T06:00:37 Z",
		" 2026-02-07T06:00:37Z", "2026-02-07T06:00:37Z ",
		"2026-02-07T06:00:37Zjunk", "2026-02-07T06:00:37+00:00x",
		"26-02-07T06:00:37Z", "2026-2-7T06:00:37Z", "2026-02-07T6:00:37Z",
		"+2026-02-07T06:00:37Z", "12026-02-07T06:00:37Z",
		"2026/02/07T06:00:37Z", "2026-02-07T06.00.37Z",
		"2026-00-07T06:00:37Z", "2026-13-07T06:00:37Z",
		"2026-02-00T06:00:37Z", "2026-01-32T06:00:37Z",
		"2026-04-31T06:00:37Z", "2026-06-31T06:00:37Z",
		"2026-09-31T06:00:37Z", "2026-11-31T06:00:37Z",
		"2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
		"2024-02-30T00:00:00Z",
		"2026-02-07T24:00:00Z", "2026-02-07T06:60:00Z",
		"2026-02-07T06:00:60Z", "2026-02-07T06:00:99Z",
		"2026-02-07T06:00:37.Z", "2026-02-07T06:00:37.+00:00",
		"2026-02-07T06:00:37,5Z", "2026-02-07T06:00:37.5.5Z",
		"2026-02-07T06:00:37+0200", "2026-02-07T06:00:37+02",
		"2026-02-07T06:00:37+2:00", "2026-02-07T06:00:37+02:0",
		"2026-02-07T06:00:37+24:00", "2026-02-07T06:00:37+02:60",
		"2026-02-07T06:00:37 +02:00", "2026-02-07T06:00:37UTC",
		/* U+2212 minus; octal, as a hex escape would eat the "02" */
		"2026-02-07T06:00:37\342\210\22202:00",
		"2026-02-07T06:00:37+02:00Z", "2026-02-07T06:00:37Z+02:00",
		"x026-02-07T06:00:37Z", "2026-02-07T06:00:37+0x:00",
	};
	int64_t seconds = 42;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (meta_parse_time(bad[i], &seconds) != -EINVAL)
			fail_msg("meta_parse_time accepted \"%s\"", bad[i]);
	}
	assert_int_equal(seconds, 42);
	assert_int_equal(meta_parse_time(NULL, &seconds), -EINVAL);
	assert_int_equal(meta_parse_time("2026-02-07T06:00:37Z", NULL), -EINVAL);
}

static void assert_time_text(int64_t seconds, long ns, const char *want)
{
	char buf[META_TIME_SIZE];

	memset(buf, 'x', sizeof(buf));
	meta_format_time(seconds, ns, buf);
	assert_string_equal(buf, want);
}

static void test_format_time(void **state)
{
	assert_time_text(0, 0, "1970-01-01T00:00:00.000000000+00:00");
	assert_time_text(1770444037, 123456789, "2026-02-07T06:00:37.123456789+00:00");
	assert_time_text(1770444037, 5, "2026-02-07T06:00:37.000000005+00:00");
	assert_time_text(1770444037, 999999999, "2026-02-07T06:00:37.999999999+00:00");
	assert_time_text(-1, 500000000, "1969-12-31T23:59:59.500000000+00:00");
	assert_time_text(-86400, 0, "1969-12-31T00:00:00.000000000+00:00");
	assert_time_text(1709208000, 0, "2024-02-29T12:00:00.000000000+00:00");
	assert_time_text(951782400, 1, "2000-02-29T00:00:00.000000001+00:00");
	assert_time_text(253402300799LL, 0, "9999-12-31T23:59:59.000000000+00:00");
	assert_time_text(-62167219200LL, 0, "0000-01-01T00:00:00.000000000+00:00");
	/* chrono's form outside four-digit years. */
	assert_time_text(253402300800LL, 0, "+10000-01-01T00:00:00.000000000+00:00");
	assert_time_text(-62167219201LL, 0, "-0001-12-31T23:59:59.000000000+00:00");
	/* Nanoseconds out of range carry into the seconds. */
	assert_time_text(0, 1500000000L, "1970-01-01T00:00:01.500000000+00:00");
	assert_time_text(0, -1, "1969-12-31T23:59:59.999999999+00:00");
}

static void test_format_time_extremes(void **state)
{
	char buf[META_TIME_SIZE + 8];

	/* Times chrono cannot hold are clamped to its range, and still fit. */
	memset(buf, 'x', sizeof(buf));
	meta_format_time(INT64_MAX, 999999999, buf);
	assert_string_equal(buf, "+262143-12-31T23:59:59.999999999+00:00");
	assert_true(strlen(buf) < META_TIME_SIZE);
	assert_int_equal(buf[META_TIME_SIZE], 'x');
	meta_format_time(INT64_MIN, -999999999, buf);
	assert_string_equal(buf, "-262144-01-01T00:00:00.000000000+00:00");
	assert_true(strlen(buf) < META_TIME_SIZE);
	/* The last representable second is not clamped. */
	meta_format_time(8210298412799LL, 7, buf);
	assert_string_equal(buf, "+262143-12-31T23:59:59.000000007+00:00");
}

static void test_time_round_trip(void **state)
{
	char buf[META_TIME_SIZE];
	int64_t back;

	/* A prime step crosses every hour, day and leap day pattern. */
	for (int64_t t = -62167219200LL; t <= 253402300799LL; t += 86399 * 977) {
		meta_format_time(t, 123000000, buf);
		assert_int_equal(meta_parse_time(buf, &back), 0);
		assert_int_equal(back, t);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_fixture),
		cmocka_unit_test(test_parse_no_problem_buffer),
		cmocka_unit_test(test_format_fixture),
		cmocka_unit_test(test_format_empty_artifacts),
		cmocka_unit_test(test_format_escapes),
		cmocka_unit_test(test_format_escapes_anywhere),
		cmocka_unit_test(test_format_invalid),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_missing_fields),
		cmocka_unit_test(test_missing_artifact_fields),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_size_bytes),
		cmocka_unit_test(test_not_an_object),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_nul_in_string),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_duplicate_filenames),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_unknown_fields),
		cmocka_unit_test(test_first_problem),
		cmocka_unit_test(test_parse_time),
		cmocka_unit_test(test_parse_time_matches_timegm),
		cmocka_unit_test(test_parse_time_bad),
		cmocka_unit_test(test_format_time),
		cmocka_unit_test(test_format_time_extremes),
		cmocka_unit_test(test_time_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
