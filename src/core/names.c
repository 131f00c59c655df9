/*
 * names.c - the rules for client ids, run ids and artifact file names.
 *
 * Every name used as a path component under the store passes one of these
 * checks first, so nothing here may depend on the locale, allocate or log:
 * the callers decide what to say, using the reason phrase returned here.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "names.h"

static int names_reject(const char **reason, const char *why)
{
	if (reason)
		*reason = why;
	return -EINVAL;
}

static bool names_is_dot_or_dotdot(const char *name)
{
	return strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
}

/* Spelled out rather than isalnum(): a locale must not widen the set. */
static bool names_is_id_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

int names_check_id(const char *name, const char **reason)
{
	size_t len;

	if (!name)
		return names_reject(reason, "is missing");
	/* strnlen: an over-long name is not read further than needed. */
	len = strnlen(name, NAMES_ID_MAX + 1);
	if (len == 0)
		return names_reject(reason, "is empty");
	if (len > NAMES_ID_MAX)
		return names_reject(reason, "is longer than 128 bytes");
	/* Both are made of allowed characters, so they need their own test. */
	if (names_is_dot_or_dotdot(name))
		return names_reject(reason, "is '.' or '..'");
	if (strchr(name, '/'))
		return names_reject(reason, "contains '/'");
	for (size_t i = 0; i < len; i++) {
		if (!names_is_id_char((unsigned char)name[i]))
			return names_reject(reason,
					    "contains a character other than letters, digits, '-', '_' and '.'");
	}
	return 0;
}

int names_check_run(const char *name, const char **reason)
{
	int ret;

	ret = names_check_id(name, reason);
	if (ret)
		return ret;
	if (strcmp(name, NAMES_PROMOTE_DIR) == 0)
		return names_reject(reason, "is reserved");
	return 0;
}

/*
 * Decodes one UTF-8 sequence at s (at most avail bytes, avail >= 1) into
 * *cp and returns its length, or 0 if it is not a well-formed sequence.
 * The ranges are those of Unicode's table of well-formed byte sequences,
 * which rule out overlong forms, surrogates and code points above U+10FFFF
 * by the second byte alone.
 */
static size_t names_utf8_decode(const unsigned char *s, size_t avail,
				unsigned int *cp)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		n = 2;
		*cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		n = 3;
		*cp = s[0] & 0x0f;
		if (s[0] == 0xe0)
			lo = 0xa0;
		else if (s[0] == 0xed)
			hi = 0x9f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		n = 4;
		*cp = s[0] & 0x07;
		if (s[0] == 0xf0)
			lo = 0x90;
		else if (s[0] == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = s[i];

		if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf))
			return 0;
		*cp = (*cp << 6) | (c & 0x3f);
	}
	return n;
}

static bool names_is_control(unsigned int cp)
{
	return cp <= 0x1f || (cp >= 0x7f && cp <= 0x9f);
}

int names_check_text(const char *text, size_t len, const char **reason)
{
	const unsigned char *s = (const unsigned char *)text;
	unsigned int cp;
	size_t n;

	/* One pass; the reason is that of the first offending character. */
	for (size_t i = 0; i < len; i += n) {
		n = names_utf8_decode(s + i, len - i, &cp);
		if (n == 0)
			return names_reject(reason, "is not valid UTF-8");
		if (names_is_control(cp))
			return names_reject(reason, "contains a control character");
	}
	return 0;
}

/* An artifact's name, or with temporary set a name that may start with '.'. */
static int check_file_name(const char *name, bool temporary, const char **reason)
{
	const char *slash;
	size_t len;

	if (!name)
		return names_reject(reason, "is missing");
	len = strnlen(name, NAMES_FILE_MAX + 1);
	if (len == 0)
		return names_reject(reason, "is empty");
	if (len > NAMES_FILE_MAX)
		return names_reject(reason, "is longer than 255 bytes");
	/* Caught by the leading '.' rule too, but this says it better. */
	if (names_is_dot_or_dotdot(name))
		return names_reject(reason, "is '.' or '..'");
	/* The reason is that of the first offending character. */
	slash = memchr(name, '/', len);
	if (names_check_text(name, slash ? (size_t)(slash - name) : len, reason) < 0)
		return -EINVAL;
	if (slash)
		return names_reject(reason, "contains '/'");
	/* Hidden files would not show in listings, and "." and ".." escape. */
	if (name[0] == '.' && !temporary)
		return names_reject(reason, "starts with '.'");
	if (strcmp(name, NAMES_METADATA_FILE) == 0)
		return names_reject(reason, "is reserved");
	return 0;
}

int names_check_artifact(const char *name, const char **reason)
{
	return check_file_name(name, false, reason);
}

int names_check_upload(const char *name, const char **reason)
{
	return check_file_name(name, true, reason);
}

static bool ends_with(const char *name, const char *suffix)
{
	size_t len = strlen(name), n = strlen(suffix);

	return len > n && strcmp(name + len - n, suffix) == 0;
}

bool names_is_temporary(const char *name)
{
	return name[0] == '.' || ends_with(name, "-journal") || ends_with(name, "-wal") ||
	       ends_with(name, "-shm");
}

void names_make_printable(const char *text, char *out, size_t out_size)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t len = strlen(text), used = 0, n;
	unsigned int cp;

	if (out_size == 0)
		return;
	for (size_t i = 0; i < len && used + 1 < out_size; i += n) {
		n = names_utf8_decode(s + i, len - i, &cp);
		if (n == 0 || names_is_control(cp) || used + n >= out_size) {
			out[used++] = '?';
			n = n ? n : 1;
			continue;
		}
		memcpy(out + used, s + i, n);
		used += n;
	}
	out[used] = '\0';
}
