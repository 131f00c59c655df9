/*
 * deletion.h - taking artifacts and runs out of a tenant's store, each in
 * one step: the file and its metadata.json entry and index row together;
 * a run and everything in it.
 *
 * Both take the run lock, so they never cut into a landing (landing.h)
 * or a repair, from this process or another.  Each outcome is logged and
 * audited (action "delete") with why, which the caller gives: "rm",
 * "expired", ...  Policy (a mount's nodelete, a rmdir's emptiness rule)
 * is the caller's.
 */
#ifndef ARTIFACTFS_DELETION_H
#define ARTIFACTFS_DELETION_H

#include "writer.h"

/*
 * Deletes the artifact name of run: its metadata.json entry first (a
 * crash then leaves a file without entry, which a repair puts back,
 * never an entry without its file), then the file; or metadata.json
 * itself.  A metadata.json that cannot be rewritten (not ours to fix) is
 * left as it is, with a warning.  Returns 0, -ENOENT, -errno.
 */
int deletion_delete_file(struct writer *writer, const char *run, const char *name);

/* How deletion_delete_run() goes about a run that still holds artifacts. */
enum deletion_run_flags {
	DELETION_ONLY_EMPTY = 1,	/* -ENOTEMPTY while a regular file is left (rmdir) */
	DELETION_ONLY_EXPIRED = 2,	/* -ESTALE unless expires_at has passed (gc) */
};

/*
 * Deletes run, with everything in it (what the view hides too), and its
 * index rows; the run's owner row stays (the id remains the tenant's).
 * The flags' conditions are checked under the run lock, so a file landed
 * or an expiry moved meanwhile is seen.  why (may be NULL) goes into the
 * audit row.  Returns 0, -ENOENT, -ENOTEMPTY (DELETION_ONLY_EMPTY; not
 * audited), -ESTALE (DELETION_ONLY_EXPIRED; not audited), -errno.
 */
int deletion_delete_run(struct writer *writer, const char *run, unsigned int flags,
			const char *why);

#endif
