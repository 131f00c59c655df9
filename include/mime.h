/*
 * mime.h - content types of artifacts, from the system's MIME table.
 *
 * The table is Debian's /etc/mime.types (package media-types), read once
 * at start; artifactfs keeps no list of its own.
 */
#ifndef ARTIFACTFS_MIME_H
#define ARTIFACTFS_MIME_H

/* The type given to names the table does not know. */
#define MIME_DEFAULT_TYPE "application/octet-stream"

struct mime_table;

/*
 * Reads a mime.types file ("type ext ext ...", '#' comments).  Later
 * lines do not override an extension seen earlier.  A missing file gives
 * an empty table and one warning, not an error: every name then gets
 * MIME_DEFAULT_TYPE.  Returns 0 and *out, or -ENOMEM.
 */
int mime_table_load(const char *path, struct mime_table **out);
void mime_table_free(struct mime_table *table);

/*
 * The content type of a file name, by its last extension, compared
 * without regard to ASCII case ("report.PDF" is application/pdf); names
 * without an extension, or with one the table lacks, get
 * MIME_DEFAULT_TYPE.  The string belongs to the table.
 */
const char *mime_type_of(const struct mime_table *table, const char *filename);

#endif
