/*
 * meta.c - a run's metadata.json: the kernel-server's schema, read strictly
 * and written byte for byte as the kernel-server (serde_json's pretty
 * printer) writes it, plus the chrono-style RFC 3339 timestamps it holds.
 *
 * Nothing here logs: parse problems go back to the caller as one line.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "meta.h"

/* Where the first problem of a document is reported. */
struct meta_report {
	char *text;
	size_t size;
	bool noted;
	bool ints_as_reals;	/* reloaded so an integer beyond int64 fits */
};

static void meta_note(struct meta_report *report, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Keeps only the first problem: later ones are often its consequences. */
static void meta_note(struct meta_report *report, const char *fmt, ...)
{
	va_list ap;

	if (report->noted)
		return;
	report->noted = true;
	if (!report->text || report->size == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(report->text, report->size, fmt, ap);
	va_end(ap);
}

void meta_artifact_release(struct meta_artifact *artifact)
{
	free(artifact->filename);
	free(artifact->agent_id);
	free(artifact->generated_at);
	free(artifact->content_type);
	memset(artifact, 0, sizeof(*artifact));
}

struct meta_artifact *meta_find_artifact(const struct meta_run *run, const char *filename)
{
	for (size_t i = 0; i < run->n_artifacts; i++)
		if (strcmp(run->artifacts[i].filename, filename) == 0)
			return &run->artifacts[i];
	return NULL;
}

void meta_run_release(struct meta_run *run)
{
	if (!run)
		return;
	for (size_t i = 0; i < run->n_artifacts; i++)
		meta_artifact_release(&run->artifacts[i]);
	free(run->artifacts);
	free(run->run_id);
	free(run->workflow_id);
	free(run->user_directive);
	free(run->created_at);
	free(run->expires_at);
	free(run->status);
	memset(run, 0, sizeof(*run));
}

/*
 * Copies the string field key of obj into *out.  A missing or mistyped
 * field leaves *out NULL and is noted; prefix ("" or "artifacts[N].")
 * makes the field's name in the note.  Returns 0 or -ENOMEM.
 */
static int meta_take_string(struct meta_report *report, json_t *obj,
			    const char *prefix, const char *key, char **out)
{
	json_t *value = json_object_get(obj, key);
	const char *text;
	size_t len;

	*out = NULL;
	if (!value) {
		meta_note(report, "field '%s%s' is missing", prefix, key);
		return 0;
	}
	if (!json_is_string(value)) {
		meta_note(report, "field '%s%s' is not a string", prefix, key);
		return 0;
	}
	text = json_string_value(value);
	len = json_string_length(value);
	/* Valid JSON ("\u0000") and valid for serde, but not a C string. */
	if (memchr(text, '\0', len)) {
		meta_note(report, "field '%s%s' contains a NUL character",
			  prefix, key);
		return 0;
	}
	*out = strdup(text);
	return *out ? 0 : -ENOMEM;
}

static void meta_take_size(struct meta_report *report, json_t *obj,
			   const char *prefix, struct meta_artifact *artifact)
{
	json_t *value = json_object_get(obj, "size_bytes");
	json_int_t size;

	if (!value) {
		meta_note(report, "field '%ssize_bytes' is missing", prefix);
		return;
	}
	if (report->ints_as_reals && json_is_real(value)) {
		/*
		 * jansson holds integers as int64, and so does the index: a size
		 * beyond that costs this field, not the document.
		 */
		double real = json_real_value(value);
		if (real < 0 || real >= 0x1p63 || real != (double)(int64_t)real) {
			meta_note(report, "field '%ssize_bytes' is out of range", prefix);
			return;
		}
		artifact->size_bytes = (uint64_t)real;
		artifact->has_size_bytes = true;
		return;
	}
	/* serde will not read 1.0 or 1e3 into a u64 either. */
	if (!json_is_integer(value)) {
		meta_note(report, "field '%ssize_bytes' is not an integer", prefix);
		return;
	}
	size = json_integer_value(value);
	if (size < 0) {
		meta_note(report, "field '%ssize_bytes' is negative", prefix);
		return;
	}
	artifact->size_bytes = (uint64_t)size;
	artifact->has_size_bytes = true;
}

/*
 * Reads entry index of the artifacts array into *artifact (zeroed first).
 * An entry that is not an object or has no usable filename is noted and
 * comes back with a NULL filename: the caller drops it.
 * Returns 0 or -ENOMEM (then *artifact is empty).
 */
static int meta_take_artifact(struct meta_report *report, json_t *entry,
			      size_t index, struct meta_artifact *artifact)
{
	char prefix[48];
	int ret;

	memset(artifact, 0, sizeof(*artifact));
	if (!json_is_object(entry)) {
		meta_note(report, "field 'artifacts[%zu]' is not an object", index);
		return 0;
	}
	snprintf(prefix, sizeof(prefix), "artifacts[%zu].", index);
	/* Schema order, so that the first problem noted is the first field's. */
	ret = meta_take_string(report, entry, prefix, "filename", &artifact->filename);
	if (ret || !artifact->filename)
		goto out;
	ret = meta_take_string(report, entry, prefix, "agent_id", &artifact->agent_id);
	if (ret)
		goto out;
	ret = meta_take_string(report, entry, prefix, "generated_at",
			       &artifact->generated_at);
	if (ret)
		goto out;
	meta_take_size(report, entry, prefix, artifact);
	ret = meta_take_string(report, entry, prefix, "content_type",
			       &artifact->content_type);
out:
	if (ret)
		meta_artifact_release(artifact);
	return ret;
}

/*
 * Reads the artifacts array into run.  The kernel-server appends a second
 * entry when a file is promoted again, so a later entry for a filename
 * replaces the earlier one's content, in the earlier one's place: one entry
 * per file, holding what was promoted last, in first-promotion order.
 * This is not a schema problem (serde reads such a document), so it is not
 * noted.  Returns 0 or -ENOMEM.
 */
static int meta_take_artifacts(struct meta_report *report, json_t *root,
			       struct meta_run *run)
{
	json_t *array = json_object_get(root, "artifacts");
	json_t *seen = NULL;	/* filename -> index in run->artifacts */
	size_t count;
	int ret = 0;

	if (!array) {
		meta_note(report, "field 'artifacts' is missing");
		return 0;
	}
	if (!json_is_array(array)) {
		meta_note(report, "field 'artifacts' is not an array");
		return 0;
	}
	count = json_array_size(array);
	if (count == 0)
		return 0;
	run->artifacts = calloc(count, sizeof(*run->artifacts));
	seen = json_object();
	if (!run->artifacts || !seen) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		struct meta_artifact artifact;
		json_t *slot;

		ret = meta_take_artifact(report, json_array_get(array, i), i, &artifact);
		if (ret)
			goto out;
		if (!artifact.filename)
			continue;
		slot = json_object_get(seen, artifact.filename);
		if (slot) {
			struct meta_artifact *earlier =
				&run->artifacts[json_integer_value(slot)];

			meta_artifact_release(earlier);
			*earlier = artifact;
			run->n_duplicates++;
			continue;
		}
		if (json_object_set_new(seen, artifact.filename,
					json_integer((json_int_t)run->n_artifacts))) {
			meta_artifact_release(&artifact);
			ret = -ENOMEM;
			goto out;
		}
		run->artifacts[run->n_artifacts++] = artifact;
	}
out:
	json_decref(seen);
	return ret;
}

/*
 * Unknown fields are not a problem: the kernel-server's structs do not use
 * deny_unknown_fields, so serde skips them, and so do we.
 */
int meta_parse(const char *buf, size_t len, struct meta_run *run,
	       char *problem, size_t problem_size)
{
	/*
	 * Any top-level value, so that "not an object" gets its own message;
	 * NUL inside strings so that it costs one field, not the document.
	 */
	const size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
	struct meta_report report = { .text = problem, .size = problem_size };
	json_error_t error;
	json_t *root = NULL;
	int ret;

	if (problem && problem_size)
		problem[0] = '\0';
	if (!run)
		return -EINVAL;
	memset(run, 0, sizeof(*run));
	if (!buf) {
		if (len) {
			meta_note(&report, "no document");
			return -EINVAL;
		}
		buf = "";
	}
	if (len > META_MAX_BYTES) {
		meta_note(&report, "document is %zu bytes, more than the limit of %u",
			  len, META_MAX_BYTES);
		return -EFBIG;
	}

	/*
	 * serde refuses a document repeating a field; jansson can only refuse
	 * repeated keys of any object.  Either way it is noted, and a second
	 * load (where the last value wins) still gives the caller the rest.
	 */
	root = json_loadb(buf, len, flags | JSON_REJECT_DUPLICATES, &error);
	if (!root && json_error_code(&error) == json_error_duplicate_key) {
		meta_note(&report, "line %d: invalid JSON: %s", error.line, error.text);
		root = json_loadb(buf, len, flags, &error);
	}
	if (!root && json_error_code(&error) == json_error_numeric_overflow) {
		meta_note(&report, "line %d: %s", error.line, error.text);
		report.ints_as_reals = true;
		root = json_loadb(buf, len, flags | JSON_DECODE_INT_AS_REAL, &error);
	}
	if (!root) {
		if (json_error_code(&error) == json_error_out_of_memory) {
			ret = -ENOMEM;
			goto out;
		}
		if (error.line > 0)
			meta_note(&report, "line %d: invalid JSON: %s",
				  error.line, error.text);
		else
			meta_note(&report, "invalid JSON: %s", error.text);
		ret = -EBADMSG;
		goto out;
	}
	if (!json_is_object(root)) {
		meta_note(&report, "document is not a JSON object");
		ret = -EBADMSG;
		goto out;
	}

	ret = meta_take_string(&report, root, "", "run_id", &run->run_id);
	if (ret)
		goto out;
	ret = meta_take_string(&report, root, "", "workflow_id", &run->workflow_id);
	if (ret)
		goto out;
	ret = meta_take_string(&report, root, "", "user_directive",
			       &run->user_directive);
	if (ret)
		goto out;
	ret = meta_take_string(&report, root, "", "created_at", &run->created_at);
	if (ret)
		goto out;
	ret = meta_take_string(&report, root, "", "expires_at", &run->expires_at);
	if (ret)
		goto out;
	ret = meta_take_artifacts(&report, root, run);
	if (ret)
		goto out;
	ret = meta_take_string(&report, root, "", "status", &run->status);
	if (ret)
		goto out;
	ret = report.noted ? -EINVAL : 0;
out:
	json_decref(root);
	if (ret == -ENOMEM)
		meta_run_release(run);
	return ret;
}

/*
 * A growing output buffer; the first failed allocation sticks, and so does
 * a string that is not UTF-8 (invalid).
 */
struct meta_out {
	char *data;
	size_t len;
	size_t cap;
	bool failed;
	bool invalid;
};

/* Makes room for len more bytes and a NUL.  Returns false once failed. */
static bool meta_out_reserve(struct meta_out *out, size_t len)
{
	size_t cap = out->cap ? out->cap : 1024;
	char *data;

	if (out->failed)
		return false;
	if (out->len + len + 1 <= out->cap)
		return true;
	while (out->len + len + 1 > cap)
		cap *= 2;
	data = realloc(out->data, cap);
	if (!data) {
		out->failed = true;
		return false;
	}
	out->data = data;
	out->cap = cap;
	return true;
}

static void meta_out_add(struct meta_out *out, const char *text, size_t len)
{
	if (!meta_out_reserve(out, len))
		return;
	memcpy(out->data + out->len, text, len);
	out->len += len;
	out->data[out->len] = '\0';
}

static inline void meta_out_text(struct meta_out *out, const char *text)
{
	meta_out_add(out, text, strlen(text));
}

/* A string literal, its length counted by the compiler. */
#define meta_out_literal(out, literal) meta_out_add((out), (literal), sizeof(literal) - 1)

/* A member whose value is a string: lead is the literal up to the value. */
#define meta_out_member(out, lead, value) \
	(meta_out_literal((out), lead), meta_out_string((out), (value)))

/* n in decimal, as serde writes a u64. */
static void meta_out_u64(struct meta_out *out, uint64_t n)
{
	char digits[20];
	size_t at = sizeof(digits);

	do
		digits[--at] = (char)('0' + n % 10);
	while ((n /= 10) != 0);
	meta_out_add(out, digits + at, sizeof(digits) - at);
}

/*
 * The length of the well-formed UTF-8 sequence that starts with the
 * non-ASCII byte at p, or 0 when it is not one (serde's strings always
 * are, and the kernel-server would refuse the whole file over one bad
 * byte).
 */
static size_t meta_utf8_sequence(const unsigned char *p)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		lo = p[0] == 0xe0 ? 0xa0 : 0x80;	/* overlong */
		hi = p[0] == 0xed ? 0x9f : 0xbf;	/* surrogates */
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		lo = p[0] == 0xf0 ? 0x90 : 0x80;	/* overlong */
		hi = p[0] == 0xf4 ? 0x8f : 0xbf;	/* > U+10FFFF */
	} else {
		return 0;
	}
	if (p[1] < lo || p[1] > hi)
		return 0;
	/* A NUL fails these tests, so nothing past it is read. */
	for (size_t i = 2; i < n; i++) {
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	}
	return n;
}

/*
 * Whether any of the 8 bytes at p asks meta_out_string() to look closer:
 * a control, '"', '\\' or a non-ASCII byte.  Most of a document is plain
 * ASCII, skipped this way a word at a time.
 */
static bool meta_word_special(const unsigned char *p)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t word, quote, backslash;

	memcpy(&word, p, sizeof(word));
	quote = word ^ (ones * '"');		/* 0 where a byte is '"' */
	backslash = word ^ (ones * '\\');
	/* A byte below 0x20, or a 0 byte, sets its high bit when 1 or 0x20 is taken away. */
	return ((word - ones * 0x20) | (quote - ones) | (backslash - ones) | word) & highs;
}

/*
 * Writes text as a JSON string exactly as serde_json does: only '"', '\\'
 * and U+0000-U+001F are escaped, the latter as \b \t \n \f \r or \u00xx
 * with lowercase hex.  '/', DEL and non-ASCII go out as they are (jansson
 * differs here: it writes \u001F in uppercase), non-ASCII once checked to
 * be UTF-8 (else out->invalid): a document is checked as it is written.
 */
static void meta_out_string(struct meta_out *out, const char *text)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)text;
	const unsigned char *plain = p;	/* start of the bytes not yet written */
	const unsigned char *end = p + strlen(text);

	meta_out_literal(out, "\"");
	while (*p) {
		unsigned char c = *p;
		char escape[7];
		const char *seq;

		if (end - p >= 8 && !meta_word_special(p)) {
			p += 8;
			continue;
		}

		if (c >= 0x80) {
			size_t n = meta_utf8_sequence(p);

			if (!n) {
				out->invalid = true;
				return;
			}
			p += n;
			continue;
		}
		if (c >= 0x20 && c != '"' && c != '\\') {
			p++;
			continue;
		}
		switch (c) {
		case '"':  seq = "\\\""; break;
		case '\\': seq = "\\\\"; break;
		case '\b': seq = "\\b"; break;
		case '\t': seq = "\\t"; break;
		case '\n': seq = "\\n"; break;
		case '\f': seq = "\\f"; break;
		case '\r': seq = "\\r"; break;
		default:
			snprintf(escape, sizeof(escape), "\\u00%c%c", hex[c >> 4], hex[c & 0xf]);
			seq = escape;
			break;
		}
		meta_out_add(out, (const char *)plain, (size_t)(p - plain));
		meta_out_text(out, seq);
		plain = ++p;
	}
	meta_out_add(out, (const char *)plain, (size_t)(p - plain));
	meta_out_add(out, "\"", 1);
}

/* Whether every field a document needs is there (their text is checked as written). */
static bool meta_run_complete(const struct meta_run *run)
{
	if (!run->run_id || !run->workflow_id || !run->user_directive || !run->created_at ||
	    !run->expires_at || !run->status)
		return false;
	if (run->n_artifacts && !run->artifacts)
		return false;
	for (size_t i = 0; i < run->n_artifacts; i++) {
		const struct meta_artifact *a = &run->artifacts[i];

		if (!a->filename || !a->agent_id || !a->generated_at || !a->content_type ||
		    !a->has_size_bytes)
			return false;
	}
	return true;
}

int meta_format(const struct meta_run *run, char **out, size_t *len)
{
	struct meta_out doc = { 0 };
	int ret;

	if (!run || !out || !len)
		return -EINVAL;
	*out = NULL;
	*len = 0;
	if (!meta_run_complete(run))
		return -EINVAL;
	/* About what an entry takes, so that a run of thousands is not copied over and over. */
	meta_out_reserve(&doc, 512 + run->n_artifacts * 256);

	/*
	 * serde's PrettyFormatter: "\n" and the indent before each member.
	 * The keys are the schema's, plain ASCII, written with what comes
	 * before them as one literal: only the values need escaping.
	 */
	meta_out_member(&doc, "{\n  \"run_id\": ", run->run_id);
	meta_out_member(&doc, ",\n  \"workflow_id\": ", run->workflow_id);
	meta_out_member(&doc, ",\n  \"user_directive\": ", run->user_directive);
	meta_out_member(&doc, ",\n  \"created_at\": ", run->created_at);
	meta_out_member(&doc, ",\n  \"expires_at\": ", run->expires_at);
	meta_out_literal(&doc, ",\n  \"artifacts\": [");
	for (size_t i = 0; i < run->n_artifacts; i++) {
		const struct meta_artifact *a = &run->artifacts[i];

		if (i)
			meta_out_literal(&doc, ",");
		meta_out_member(&doc, "\n    {\n      \"filename\": ", a->filename);
		meta_out_member(&doc, ",\n      \"agent_id\": ", a->agent_id);
		meta_out_member(&doc, ",\n      \"generated_at\": ", a->generated_at);
		meta_out_literal(&doc, ",\n      \"size_bytes\": ");
		meta_out_u64(&doc, a->size_bytes);
		meta_out_member(&doc, ",\n      \"content_type\": ", a->content_type);
		meta_out_literal(&doc, "\n    }");
	}
	/* An empty array is "[]", with nothing between the brackets. */
	if (run->n_artifacts)
		meta_out_literal(&doc, "\n  ]");
	else
		meta_out_literal(&doc, "]");
	meta_out_member(&doc, ",\n  \"status\": ", run->status);
	meta_out_literal(&doc, "\n}");

	if (doc.failed || doc.invalid) {
		ret = doc.failed ? -ENOMEM : -EINVAL;
		goto out;
	}
	*out = doc.data;
	*len = doc.len;
	doc.data = NULL;
	ret = 0;
out:
	free(doc.data);
	return ret;
}

/*
 * Days between 1970-01-01 and a proleptic Gregorian date, and back
 * (H. Hinnant's algorithms).  Done by hand rather than with timegm() and
 * gmtime_r() so that neither the width of time_t nor TZ can matter.
 */
static int64_t meta_days_from_civil(int64_t year, unsigned int month,
				    unsigned int day)
{
	int64_t era;
	unsigned int yoe, doy, doe;

	year -= month <= 2;
	era = (year >= 0 ? year : year - 399) / 400;
	yoe = (unsigned int)(year - era * 400);
	doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void meta_civil_from_days(int64_t days, int64_t *year,
				 unsigned int *month, unsigned int *day)
{
	int64_t era;
	unsigned int doe, yoe, doy, mp;

	days += 719468;
	era = (days >= 0 ? days : days - 146096) / 146097;
	doe = (unsigned int)(days - era * 146097);
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*day = doy - (153 * mp + 2) / 5 + 1;
	*month = mp < 10 ? mp + 3 : mp - 9;
	*year = (int64_t)yoe + era * 400 + (*month <= 2);
}

static bool meta_is_leap(int year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int meta_days_in_month(int year, int month)
{
	static const int days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return month == 2 && meta_is_leap(year) ? 29 : days[month - 1];
}

/*
 * Reads exactly n digits at *p and advances past them.  Stops at the first
 * non-digit, so it never reads past the terminating NUL.
 */
static bool meta_read_digits(const char **p, int n, int *value)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		char c = (*p)[i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*value = v;
	return true;
}

static bool meta_read_char(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

/*
 * Accepts what chrono's parse_from_rfc3339 does, less the lenient parts
 * chrono adds to RFC 3339 (lowercase 't'/'z', a leap second 60).  Like
 * chrono it takes a fraction of any length; it does not change the
 * seconds, so it is only checked to be digits.
 */
int meta_parse_time(const char *text, int64_t *seconds)
{
	int year, month, day, hour, minute, second;
	int off_hour = 0, off_minute = 0, sign = 0;
	const char *p = text;
	int64_t t;

	if (!text || !seconds)
		return -EINVAL;
	if (!meta_read_digits(&p, 4, &year) || !meta_read_char(&p, '-') ||
	    !meta_read_digits(&p, 2, &month) || !meta_read_char(&p, '-') ||
	    !meta_read_digits(&p, 2, &day) || !meta_read_char(&p, 'T') ||
	    !meta_read_digits(&p, 2, &hour) || !meta_read_char(&p, ':') ||
	    !meta_read_digits(&p, 2, &minute) || !meta_read_char(&p, ':') ||
	    !meta_read_digits(&p, 2, &second))
		return -EINVAL;
	if (meta_read_char(&p, '.')) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (meta_read_char(&p, 'Z')) {
		sign = 0;
	} else {
		if (*p == '+')
			sign = 1;
		else if (*p == '-')
			sign = -1;
		else
			return -EINVAL;
		p++;
		if (!meta_read_digits(&p, 2, &off_hour) || !meta_read_char(&p, ':') ||
		    !meta_read_digits(&p, 2, &off_minute))
			return -EINVAL;
	}
	if (*p != '\0')
		return -EINVAL;
	if (month < 1 || month > 12 || day < 1 ||
	    day > meta_days_in_month(year, month) || hour > 23 ||
	    minute > 59 || second > 59 || off_hour > 23 || off_minute > 59)
		return -EINVAL;

	t = meta_days_from_civil(year, (unsigned int)month, (unsigned int)day) * 86400 +
	    hour * 3600 + minute * 60 + second;
	/* 10:00+02:00 is 08:00 UTC. */
	t -= sign * (off_hour * 3600 + off_minute * 60);
	*seconds = t;
	return 0;
}

/* chrono's range of years: what the kernel-server can read back. */
#define META_YEAR_MIN (-262144)
#define META_YEAR_MAX 262143

void meta_format_time(int64_t seconds, long nanoseconds, char *buf)
{
	const long ns_per_s = 1000000000L;
	const int64_t first = meta_days_from_civil(META_YEAR_MIN, 1, 1) * 86400;
	const int64_t last = meta_days_from_civil(META_YEAR_MAX, 12, 31) * 86400 + 86399;
	unsigned int month, day, rem;
	int64_t days, year, rem64;
	char text[96];
	int len;

	/* A timespec never needs it, but any nanoseconds carry into seconds. */
	if (nanoseconds < 0 || nanoseconds >= ns_per_s) {
		long carry = nanoseconds / ns_per_s;

		nanoseconds %= ns_per_s;
		if (nanoseconds < 0) {
			nanoseconds += ns_per_s;
			carry--;
		}
		if (__builtin_add_overflow(seconds, carry, &seconds))
			seconds = carry < 0 ? INT64_MIN : INT64_MAX;
	}
	/*
	 * Clamped rather than cut: a time beyond chrono's range is nonsense
	 * anyway, and this way the text always fits and always parses.
	 */
	if (seconds < first) {
		seconds = first;
		nanoseconds = 0;
	} else if (seconds > last) {
		seconds = last;
		nanoseconds = ns_per_s - 1;
	}
	/* Floor division: the second before the epoch is 23:59:59 of day -1. */
	days = seconds / 86400;
	rem64 = seconds % 86400;
	if (rem64 < 0) {
		rem64 += 86400;
		days--;
	}
	rem = (unsigned int)rem64;
	meta_civil_from_days(days, &year, &month, &day);
	/* chrono's way with years outside 0..9999: a sign, at least 4 digits. */
	len = snprintf(text, sizeof(text),
		       year >= 0 && year <= 9999 ?
		       "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%09ld+00:00" :
		       "%+05" PRId64 "-%02u-%02uT%02u:%02u:%02u.%09ld+00:00",
		       year, month, day, rem / 3600, rem / 60 % 60, rem % 60,
		       nanoseconds);
	/* At most "-262144" and 31 more bytes: always fits, checked anyway. */
	if (len < 0 || len >= META_TIME_SIZE)
		len = 0;
	memcpy(buf, text, (size_t)len);
	buf[len] = '\0';
}
