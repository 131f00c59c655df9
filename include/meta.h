/*
 * meta.h - a run's metadata.json: strict parsing and writing.
 *
 * The file is a contract with the RARO kernel-server (see docs/index.md and
 * the store reference): seven run fields and five per-artifact fields, all
 * required.  Parsing is tolerant of what the store may hold (the caller
 * still serves the run) but reports every departure from the schema;
 * writing produces exactly the kernel-server's format.
 */
#ifndef ARTIFACTFS_META_H
#define ARTIFACTFS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* metadata.json files larger than this are not parsed (memory bound). */
#define META_MAX_BYTES (16u * 1024 * 1024)

/* One ArtifactFile entry.  A NULL string is a field missing or mistyped. */
struct meta_artifact {
	char *filename;		/* never NULL: entries without one are dropped */
	char *agent_id;
	char *generated_at;
	char *content_type;
	bool has_size_bytes;
	uint64_t size_bytes;
};

/* One ArtifactMetadata document.  A NULL string is a field missing or mistyped. */
struct meta_run {
	char *run_id;
	char *workflow_id;
	char *user_directive;
	char *created_at;
	char *expires_at;
	char *status;
	struct meta_artifact *artifacts;
	size_t n_artifacts;
	/* Entries the parser folded into a later one of the same filename. */
	size_t n_duplicates;
};

/*
 * Parses a metadata.json document of len bytes (not NUL-terminated).
 *
 * Returns 0 when the document follows the schema exactly.
 * Returns -EINVAL when it is a JSON object that does not: *run then holds
 * every field that was present with the right type (the others NULL), and
 * artifacts entries that are objects with a string "filename" (later
 * duplicates of a filename replace earlier ones, as they were appended
 * later).  Returns -EBADMSG when buf is not JSON, not valid UTF-8 or not
 * an object, -EFBIG when len > META_MAX_BYTES, -ENOMEM; *run is then empty.
 * On -EINVAL, -EBADMSG and -EFBIG a one-line description of the first problem, such
 * as "field 'status' is not a string" or "line 3: invalid JSON: ...", is
 * written to problem (always NUL-terminated, may be NULL).
 * In every case *run must be released with meta_run_release().
 */
int meta_parse(const char *buf, size_t len, struct meta_run *run,
	       char *problem, size_t problem_size);

/* Frees what *run owns and zeroes it.  Safe on a zeroed struct. */
void meta_run_release(struct meta_run *run);

/* Frees the strings of one entry and zeroes it.  Safe on a zeroed struct. */
void meta_artifact_release(struct meta_artifact *artifact);

/*
 * The entry of filename in *run, or NULL.  A parsed run has one entry per
 * filename (meta_parse() folds duplicates), so the first is the one.
 */
struct meta_artifact *meta_find_artifact(const struct meta_run *run, const char *filename);

/*
 * Formats *run as the kernel-server writes metadata.json: serde's pretty
 * printer (2-space indent, "key": value), fields in schema order, followed
 * by no trailing newline.  Every string field of the run and its artifacts
 * must be non-NULL and every has_size_bytes true, else -EINVAL.
 * On success *out is a malloc'd NUL-terminated string of *len bytes.
 * Returns 0, -EINVAL or -ENOMEM.
 */
int meta_format(const struct meta_run *run, char **out, size_t *len);

/*
 * Parses an RFC 3339 timestamp as chrono prints it
 * ("2026-02-07T06:00:37.123456789+00:00"; any fraction length or none;
 * offset "+HH:MM", "-HH:MM" or "Z") into seconds since the epoch (UTC).
 * Returns 0 or -EINVAL.
 */
int meta_parse_time(const char *text, int64_t *seconds);

/*
 * Formats a time as chrono's to_rfc3339() does for UTC:
 * "YYYY-MM-DDTHH:MM:SS.NNNNNNNNN+00:00" (nanoseconds, 9 digits).
 * buf must hold at least META_TIME_SIZE bytes.
 */
#define META_TIME_SIZE 40
void meta_format_time(int64_t seconds, long nanoseconds, char *buf);

#endif
