/*
 * fuzz_names.c - libFuzzer target for the name rules (src/names.c).
 *
 * Input: byte 0 picks the output size for names_make_printable(); the rest
 * is the name or text under test (NUL bytes included: names_check_text()
 * takes a length, the name checks take a C string and stop at the first
 * NUL).  Every rule is checked against an independent statement of it:
 *
 *   names_check_id      1..128 bytes of [A-Za-z0-9._-], not "." or ".."
 *   names_check_run     names_check_id and not "promote"
 *   names_check_artifact 1..255 bytes of plain text (valid UTF-8, no
 *                       control character), no '/', no leading '.', not
 *                       "metadata.json"
 *   names_check_text    plain text, compared with a reference decoder
 *   names_make_printable always NUL-terminated within its buffer, always
 *                       plain text, and the input itself when the input is
 *                       plain text that fits
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "names.h"

static bool ref_id(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > NAMES_ID_MAX || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'))
			return false;
	}
	return true;
}

static bool ref_artifact(const char *name)
{
	size_t len = strlen(name);

	return len >= 1 && len <= NAMES_FILE_MAX && !strchr(name, '/') && name[0] != '.' &&
	       strcmp(name, "metadata.json") != 0 && fuzz_plain_text(name, len);
}

static void check_printable(const char *text, size_t out_size)
{
	char *out = malloc(out_size + 1);
	size_t len;

	FUZZ_CHECK(out != NULL);
	/* A canary past the buffer: nothing may be written there. */
	out[out_size] = (char)0x5a;
	names_make_printable(text, out, out_size);
	FUZZ_CHECK(out[out_size] == (char)0x5a);
	if (out_size > 0) {
		len = strnlen(out, out_size);
		FUZZ_CHECK(len < out_size);		/* NUL-terminated inside */
		FUZZ_CHECK(fuzz_plain_text(out, len));	/* safe for a log or JSON */
		if (fuzz_plain_text(text, strlen(text)) && strlen(text) < out_size)
			FUZZ_CHECK(strcmp(out, text) == 0);	/* plain text kept as is */
	}
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *reason = NULL;
	size_t out_size;
	char *text;
	int ret;

	if (size == 0)
		return 0;
	out_size = data[0];
	text = fuzz_cstring(data + 1, size - 1);

	/* Length-delimited text: embedded NULs must be refused (controls). */
	ret = names_check_text(text, size - 1, &reason);
	FUZZ_CHECK(ret == 0 || ret == -EINVAL);
	FUZZ_CHECK((ret == 0) == fuzz_plain_text(text, size - 1));
	FUZZ_CHECK(ret == 0 || reason != NULL);

	reason = NULL;
	ret = names_check_id(text, &reason);
	FUZZ_CHECK(ret == 0 || (ret == -EINVAL && reason != NULL));
	FUZZ_CHECK((ret == 0) == ref_id(text));

	ret = names_check_run(text, &reason);
	FUZZ_CHECK(ret == 0 || ret == -EINVAL);
	FUZZ_CHECK((ret == 0) == (ref_id(text) && strcmp(text, "promote") != 0));

	reason = NULL;
	ret = names_check_artifact(text, &reason);
	FUZZ_CHECK(ret == 0 || (ret == -EINVAL && reason != NULL));
	FUZZ_CHECK((ret == 0) == ref_artifact(text));

	/* NULL reason pointers are allowed. */
	(void)names_check_id(text, NULL);
	(void)names_check_artifact(text, NULL);
	(void)names_check_text(text, size - 1, NULL);

	check_printable(text, out_size);
	check_printable(text, 0);
	check_printable(text, 1);
	check_printable(text, strlen(text) + 1);
	free(text);
	return 0;
}
