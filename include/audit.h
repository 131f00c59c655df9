/*
 * audit.h - the audit trail: every change a user asked of a tenant's store
 * (a promotion, a refusal, a deletion, a repair) becomes one log line and
 * one row in the index's audit table, and has one JSON form, shown by
 * promote/.status and artifactctl alike.
 */
#ifndef ARTIFACTFS_AUDIT_H
#define ARTIFACTFS_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "index.h"
#include "view.h"

/* Room for the one-line reason of an audit row, NUL included. */
#define AUDIT_REASON_SIZE 256

/*
 * Logs the outcome (a warning for a refusal, info otherwise) and appends
 * the audit row for view's tenant.  run, name and reason may be NULL;
 * they come from agents and are made printable before they are logged or
 * stored.  error is 0 or a positive errno; size is -1 when unknown.
 */
void audit_record(struct view *view, enum index_action action, const char *run,
		  const char *name, int64_t size, const char *sha256, int error,
		  const char *reason);

/* The errno's symbolic name ("EDQUOT"), "EIO" for one without a name. */
const char *audit_errno_name(int error);

/*
 * Formats row as one line of compact JSON, without a newline: time
 * (RFC 3339), client (with_client only), action, run, file, result ("ok"
 * or the errno name), reason, and sha256 and size when known; absent
 * values are left out.  *line is malloc'd.  Returns 0 or -ENOMEM.
 */
int audit_format_row(const struct index_audit *row, bool with_client, char **line);

#endif
