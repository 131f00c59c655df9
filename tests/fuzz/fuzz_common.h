/*
 * fuzz_common.h - what the libFuzzer targets share: a failed invariant
 * aborts (libFuzzer then saves the input as a crash), and an independent
 * UTF-8 reference decoder to check the names module against.
 */
#ifndef ARTIFACTFS_FUZZ_COMMON_H
#define ARTIFACTFS_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "%s:%d: invariant failed: %s\n",        \
				__FILE__, __LINE__, #cond);                     \
			abort();                                                \
		}                                                               \
	} while (0)

/*
 * Decodes one code point the naive way (length from the lead byte, then
 * range checks on the value) -- deliberately not the table-driven method
 * of names.c, so the two can be compared.  Returns the sequence length,
 * or 0 for an ill-formed sequence (overlong, surrogate, > U+10FFFF,
 * truncated, stray continuation byte).
 */
static inline size_t fuzz_utf8_next(const unsigned char *s, size_t avail, uint32_t *cp)
{
	size_t n;
	uint32_t v, min;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		n = 2; v = s[0] & 0x1f; min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		n = 3; v = s[0] & 0x0f; min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		n = 4; v = s[0] & 0x07; min = 0x10000;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return n;
}

static inline bool fuzz_is_control(uint32_t cp)
{
	return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f);
}

/* Valid UTF-8 with no control character (NUL included) in len bytes. */
static inline bool fuzz_plain_text(const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	uint32_t cp;

	for (size_t i = 0, n; i < len; i += n) {
		n = fuzz_utf8_next(s + i, len - i, &cp);
		if (n == 0 || fuzz_is_control(cp))
			return false;
	}
	return true;
}

/* A NUL-terminated copy of data (for the APIs that take C strings). */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
	char *copy = malloc(size + 1);

	FUZZ_CHECK(copy != NULL);
	for (size_t i = 0; i < size; i++)
		copy[i] = (char)data[i];
	copy[size] = '\0';
	return copy;
}

#endif
