/*
 * mime.c - content types by file name extension, from a mime.types file.
 *
 * The file is parsed once into an array of (extension, type) pairs sorted
 * by extension without regard to ASCII case, one pair per extension, and
 * every lookup is a binary search of it.  All the strings live in one
 * buffer owned by the table.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mime.h"

struct mime_entry {
	const char *ext;
	const char *type;
};

struct mime_table {
	struct mime_entry *entry;	/* sorted by ext, each ext once */
	size_t n;
	char *text;			/* every string, NUL-terminated */
};

/*
 * The table while it is read: the strings go into one growing buffer, so
 * the pairs hold offsets (the buffer moves) and become pointers at the end.
 */
struct pending {
	size_t ext;
	size_t type;
};

struct builder {
	struct pending *pending;
	size_t n, alloc;
	char *text;
	size_t len, size;
};

/* What separates words on a line ("\r" too: a file edited elsewhere). */
static const char blanks[] = " \t\r\n\v\f";

/*
 * strcasecmp() follows the locale, and in a Turkish one "GIF" is not
 * "gif": extensions are ASCII, so compare them as ASCII.
 */
static int ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int ascii_casecmp(const char *a, const char *b)
{
	const unsigned char *x = (const unsigned char *)a;
	const unsigned char *y = (const unsigned char *)b;

	while (*x && ascii_lower(*x) == ascii_lower(*y)) {
		x++;
		y++;
	}
	return ascii_lower(*x) - ascii_lower(*y);
}

/* Copies len bytes of s, NUL-terminated, into the buffer; *offset says where. */
static int builder_text(struct builder *b, const char *s, size_t len,
			size_t *offset)
{
	size_t size;
	char *text;

	if (b->size - b->len < len + 1) {
		size = b->size ? b->size : 16384;
		while (size - b->len < len + 1)
			size *= 2;
		text = realloc(b->text, size);
		if (!text)
			return -ENOMEM;
		b->text = text;
		b->size = size;
	}
	memcpy(b->text + b->len, s, len);
	b->text[b->len + len] = '\0';
	*offset = b->len;
	b->len += len + 1;
	return 0;
}

static int builder_pair(struct builder *b, size_t ext, size_t type)
{
	struct pending *grown;
	size_t alloc;

	if (b->n == b->alloc) {
		alloc = b->alloc ? b->alloc * 2 : 1024;
		grown = realloc(b->pending, alloc * sizeof(*grown));
		if (!grown)
			return -ENOMEM;
		b->pending = grown;
		b->alloc = alloc;
	}
	b->pending[b->n].ext = ext;
	b->pending[b->n].type = type;
	b->n++;
	return 0;
}

/*
 * Adds the pairs of one line: "type ext ext ...", words separated by
 * blanks; a word starting with '#' ends the line (a comment).  A line
 * whose first word is not "type/subtype" is skipped, so that no
 * extension gets something that is not a content type.
 */
static int builder_line(struct builder *b, const char *line)
{
	const char *word = line, *type_word = NULL;
	size_t len, type_len = 0, type = 0, ext;
	int ret;

	for (;;) {
		word += strspn(word, blanks);
		len = strcspn(word, blanks);
		if (len == 0 || word[0] == '#')
			return 0;
		if (!type_word) {
			if (!memchr(word, '/', len))
				return 0;
			type_word = word;
			type_len = len;
		} else {
			/* The type is copied with the first extension only:
			 * many lines list none. */
			if (type_len) {
				ret = builder_text(b, type_word, type_len, &type);
				if (ret < 0)
					return ret;
				type_len = 0;
			}
			ret = builder_text(b, word, len, &ext);
			if (ret == 0)
				ret = builder_pair(b, ext, type);
			if (ret < 0)
				return ret;
		}
		word += len;
	}
}

/* Orders by extension, and equal ones in file order. */
static int cmp_entry(const void *a, const void *b)
{
	const struct mime_entry *x = a, *y = b;
	int c = ascii_casecmp(x->ext, y->ext);

	/* Both point into one buffer, filled in file order. */
	return c ? c : (x->ext > y->ext) - (x->ext < y->ext);
}

static int cmp_key(const void *key, const void *elem)
{
	const struct mime_entry *entry = elem;

	return ascii_casecmp(key, entry->ext);
}

/* Turns what was read into the sorted table, each extension once. */
static int builder_finish(struct builder *b, struct mime_table *table)
{
	struct mime_entry *entry;
	size_t i, m = 0;

	if (b->n == 0)
		return 0;
	entry = malloc(b->n * sizeof(*entry));
	if (!entry)
		return -ENOMEM;
	for (i = 0; i < b->n; i++) {
		entry[i].ext = b->text + b->pending[i].ext;
		entry[i].type = b->text + b->pending[i].type;
	}
	qsort(entry, b->n, sizeof(*entry), cmp_entry);
	/* The first of equal extensions is the one seen first: it stays. */
	for (i = 0; i < b->n; i++) {
		if (m > 0 && ascii_casecmp(entry[m - 1].ext, entry[i].ext) == 0)
			continue;
		entry[m++] = entry[i];
	}
	table->entry = entry;
	table->n = m;
	table->text = b->text;
	b->text = NULL;
	return 0;
}

int mime_table_load(const char *path, struct mime_table **out)
{
	struct builder b = { 0 };
	struct mime_table *table;
	char *line = NULL;
	size_t line_size = 0;
	FILE *fp = NULL;
	int ret = 0, err;

	*out = NULL;
	table = calloc(1, sizeof(*table));
	if (!table)
		return -ENOMEM;
	fp = fopen(path, "re");
	if (!fp) {
		log_warning("mime types %s: cannot open: %s; every file will be %s",
			    path, strerror(errno), MIME_DEFAULT_TYPE);
		goto out;
	}
	for (;;) {
		errno = 0;
		if (getline(&line, &line_size, fp) < 0)
			break;
		ret = builder_line(&b, line);
		if (ret < 0)
			goto out;
	}
	err = errno;
	if (err == ENOMEM) {
		ret = -ENOMEM;
		goto out;
	}
	/* A directory opens, and fails here with EISDIR. */
	if (ferror(fp))
		log_warning("mime types %s: cannot read all of it: %s; the extensions not read will be %s",
			    path, strerror(err ? err : EIO), MIME_DEFAULT_TYPE);
	ret = builder_finish(&b, table);
out:
	if (fp)
		fclose(fp);
	free(line);
	free(b.pending);
	free(b.text);
	if (ret < 0) {
		mime_table_free(table);
		return ret;
	}
	*out = table;
	return 0;
}

void mime_table_free(struct mime_table *table)
{
	if (!table)
		return;
	free(table->entry);
	free(table->text);
	free(table);
}

const char *mime_type_of(const struct mime_table *table, const char *filename)
{
	const struct mime_entry *found;
	const char *base, *dot;

	if (!table || !filename || table->n == 0)
		return MIME_DEFAULT_TYPE;
	base = strrchr(filename, '/');
	base = base ? base + 1 : filename;
	/* Leading dots make a hidden name, not an extension: ".bashrc". */
	base += strspn(base, ".");
	dot = strrchr(base, '.');
	if (!dot || dot[1] == '\0')
		return MIME_DEFAULT_TYPE;
	found = bsearch(dot + 1, table->entry, table->n, sizeof(*table->entry),
			cmp_key);
	return found ? found->type : MIME_DEFAULT_TYPE;
}
