/*
 * names.h - which names artifactfs accepts for tenants, runs and artifacts.
 *
 * Pure functions, no I/O.  Every name that comes from a request, the
 * command line or the store passes one of these checks before it is used
 * as a path component, so no name can climb out of its directory.
 */
#ifndef ARTIFACTFS_NAMES_H
#define ARTIFACTFS_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/* Longest client or run id, in bytes. */
#define NAMES_ID_MAX 128
/* Longest artifact file name, in bytes (NAME_MAX). */
#define NAMES_FILE_MAX 255

/* The view's reserved top-level directory: never a run. */
#define NAMES_PROMOTE_DIR "promote"
/* The run's metadata file: never an artifact. */
#define NAMES_METADATA_FILE "metadata.json"

/*
 * Checks a client id or a run id: 1 to NAMES_ID_MAX bytes of ASCII letters,
 * digits, '-', '_' and '.', and neither "." nor "..".
 * Returns 0, or -EINVAL with *reason (if reason is not NULL) set to a static
 * phrase such as "is empty" or "contains a character other than letters,
 * digits, '-', '_' and '.'", fit to follow the name in a message.
 */
int names_check_id(const char *name, const char **reason);

/*
 * Checks a run id as a directory of the view: names_check_id() and not the
 * reserved NAMES_PROMOTE_DIR.  Same return and reason as names_check_id().
 */
int names_check_run(const char *name, const char **reason);

/*
 * Checks the file name of an artifact being promoted: 1 to NAMES_FILE_MAX
 * bytes of valid UTF-8 (no overlong forms, surrogates or code points above
 * U+10FFFF), no '/', no control character (U+0000-U+001F, U+007F-U+009F),
 * not starting with '.' (which also excludes "." and ".."), and not
 * NAMES_METADATA_FILE.  Same return and reason as names_check_id().
 */
int names_check_artifact(const char *name, const char **reason);

/*
 * Checks a name written in promote/<run>/: an artifact name, or a
 * temporary one (see names_is_temporary()), which may start with '.' but
 * is not "." or "..".  Same return and reason as names_check_id().
 */
int names_check_upload(const char *name, const char **reason);

/*
 * Whether a name that passed names_check_upload() is a temporary one: a
 * file tools write, then rename or delete, never meant as an artifact.
 * Dot-files (rsync's ".name.XXXXXX", ".out.tmp") and SQLite's sidecars
 * ("-journal", "-wal", "-shm" after a name).
 */
bool names_is_temporary(const char *name);

/*
 * Checks len bytes of text (a value, not a name): valid UTF-8 as above,
 * with no control character (NUL included).  Same return and reason as
 * names_check_id().
 */
int names_check_text(const char *text, size_t len, const char **reason);

/*
 * Copies text into out (out_size bytes, always NUL-terminated) with each
 * byte that is not valid UTF-8, and each control character, replaced by
 * '?': a name an agent chose, made safe for a log line or a JSON string.
 */
void names_make_printable(const char *text, char *out, size_t out_size);

#endif
