/*
 * fuzz_meta.c - libFuzzer target for the metadata.json parser and writer
 * (src/meta.c).
 *
 * For any input: meta_parse() returns one of its documented codes, its
 * problem text is NUL-terminated, and *run is released cleanly.  When the
 * document follows the schema (0), the round trip must hold:
 * meta_format() succeeds, its output parses with 0 to the very same
 * values, and formatting that again gives the same bytes.  A document that
 * is off-schema (-EINVAL) may still be formattable: if so, it must then
 * re-parse with 0.  Timestamps that meta_parse_time() accepts must survive
 * meta_format_time() and a second parse.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "meta.h"

static bool same_text(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_same(const struct meta_run *a, const struct meta_run *b)
{
	FUZZ_CHECK(same_text(a->run_id, b->run_id));
	FUZZ_CHECK(same_text(a->workflow_id, b->workflow_id));
	FUZZ_CHECK(same_text(a->user_directive, b->user_directive));
	FUZZ_CHECK(same_text(a->created_at, b->created_at));
	FUZZ_CHECK(same_text(a->expires_at, b->expires_at));
	FUZZ_CHECK(same_text(a->status, b->status));
	FUZZ_CHECK(a->n_artifacts == b->n_artifacts);
	for (size_t i = 0; i < a->n_artifacts; i++) {
		const struct meta_artifact *x = &a->artifacts[i], *y = &b->artifacts[i];

		FUZZ_CHECK(same_text(x->filename, y->filename));
		FUZZ_CHECK(same_text(x->agent_id, y->agent_id));
		FUZZ_CHECK(same_text(x->generated_at, y->generated_at));
		FUZZ_CHECK(same_text(x->content_type, y->content_type));
		FUZZ_CHECK(x->has_size_bytes == y->has_size_bytes);
		FUZZ_CHECK(!x->has_size_bytes || x->size_bytes == y->size_bytes);
	}
}

static void check_round_trip(const struct meta_run *run, bool must_format)
{
	struct meta_run again = { 0 };
	char problem[160];
	char *text = NULL, *text2 = NULL;
	size_t len = 0, len2 = 0;
	int ret;

	ret = meta_format(run, &text, &len);
	if (!must_format && ret == -EINVAL)
		return;
	FUZZ_CHECK(ret == 0);
	FUZZ_CHECK(text != NULL && strlen(text) == len);

	ret = meta_parse(text, len, &again, problem, sizeof(problem));
	if (ret != 0)
		fprintf(stderr, "re-parse: %d (%s)\n%s\n", ret, problem, text);
	FUZZ_CHECK(ret == 0);
	check_same(run, &again);

	FUZZ_CHECK(meta_format(&again, &text2, &len2) == 0);
	FUZZ_CHECK(len2 == len && memcmp(text, text2, len) == 0);

	meta_run_release(&again);
	free(text);
	free(text2);
}

static void check_time(const char *text)
{
	char formatted[META_TIME_SIZE];
	int64_t seconds, again;

	if (!text || meta_parse_time(text, &seconds) != 0)
		return;
	/* Years 0000..9999: the ones meta_parse_time() reads back. */
	if (seconds < -62167219200LL || seconds > 253402300799LL)
		return;
	meta_format_time(seconds, 0, formatted);
	FUZZ_CHECK(strnlen(formatted, META_TIME_SIZE) < META_TIME_SIZE);
	FUZZ_CHECK(meta_parse_time(formatted, &again) == 0);
	FUZZ_CHECK(again == seconds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct meta_run run;
	char problem[160];
	char *cstring;
	int ret;

	memset(problem, 'x', sizeof(problem));
	ret = meta_parse((const char *)data, size, &run, problem, sizeof(problem));
	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -EBADMSG || ret == -EFBIG ||
		   ret == -ENOMEM);
	FUZZ_CHECK(memchr(problem, '\0', sizeof(problem)) != NULL);
	if (ret == 0)
		FUZZ_CHECK(problem[0] == '\0');
	else if (ret != -ENOMEM)
		FUZZ_CHECK(problem[0] != '\0');
	if (ret == -EBADMSG || ret == -EFBIG)
		FUZZ_CHECK(run.run_id == NULL && run.n_artifacts == 0);
	for (size_t i = 0; i < run.n_artifacts; i++)
		FUZZ_CHECK(run.artifacts[i].filename != NULL);

	if (ret == 0 || ret == -EINVAL)
		check_round_trip(&run, ret == 0);
	check_time(run.created_at);
	check_time(run.expires_at);
	for (size_t i = 0; i < run.n_artifacts; i++)
		check_time(run.artifacts[i].generated_at);
	meta_run_release(&run);
	FUZZ_CHECK(run.run_id == NULL && run.artifacts == NULL && run.n_artifacts == 0);

	/* The timestamp parser on its own, for short inputs. */
	if (size < 64) {
		cstring = fuzz_cstring(data, size);
		check_time(cstring);
		free(cstring);
	}
	return 0;
}
