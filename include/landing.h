/*
 * landing.h - putting a file into a tenant's run for good, and finishing
 * what a crash cut short.
 *
 * A landing, durable when landing_land_file() returns, is:
 *  1. the staged file sealed (an xattr naming its run, name, generation
 *     time, size and SHA-256) and fsync'd, by its own thread;
 *  2. with every other landing into the same run that is waiting by then
 *     (a group: their threads share the flushes below), under the run
 *     lock: the new metadata.json drafted in work/ as an intent record
 *     of the run, fsync'd, and work/ and the staging dirs fsync'd;
 *  3. the files renamed into the run, the draft renamed over
 *     metadata.json (drafted again if the kernel-server wrote it
 *     meanwhile), one fsync of the run dir; the index updated; the
 *     record dropped.
 * A crash after step 2 leaves what landing_recover() completes, from this
 * process or any other that opens a writer for the tenant (artifactctl
 * repair does): files in the run whose entries the record holds, or
 * staged files whose entries reached metadata.json.  A crash before
 * leaves only staging, which landing_recover() removes.  Where the store
 * keeps no user xattrs, a landing writes an intent of its own instead of
 * a seal (two more flushes).  docs/promote.md argues each flush.
 *
 * Functions return 0 or a negative errno; those that take reason set it
 * (AUDIT_REASON_SIZE bytes) to one line for the audit trail on failure.
 * They log nothing and audit nothing themselves: the caller knows what
 * the user asked for.
 */
#ifndef ARTIFACTFS_LANDING_H
#define ARTIFACTFS_LANDING_H

#include <stdbool.h>
#include <stdint.h>

#include "meta.h"
#include "writer.h"

/* 64 hex digits and a NUL. */
#define LANDING_SHA256_HEX_SIZE 65

/* What lands in metadata.json for one file. */
struct landing {
	const char *run;
	const char *name;
	const char *agent_id;
	const char *workflow_id;	/* used when the run is new */
	const char *user_directive;	/* used when the run is new */
	uint64_t size;
	char sha256[LANDING_SHA256_HEX_SIZE];
	char generated_at[META_TIME_SIZE];
};

/*
 * Whether the writer's tenant may land files in run: its own run dir,
 * or a run no other tenant owns (by the index, or by a run dir of that id
 * in another tenant's area or in the legacy layout).
 * Returns 0, -EINVAL (invalid run id), -EACCES, -errno.
 */
int landing_check_run(struct writer *writer, const char *run);

/*
 * Lands the staged file (staged_dir, staged_name) as
 * l->run/l->name with the writer's file_mode, claiming the run for the
 * tenant and making it when it is new (its fields from l and the
 * writer's retention).  An existing file of that name is replaced.
 * On failure the store is as before for that file, except after the
 * rename (a metadata.json that cannot be written): the record then stays
 * for landing_recover().  Thread-safe: landings into one run from many
 * threads are grouped.  Returns 0 or -errno with reason set.
 */
int landing_land_file(struct writer *writer, int staged_dir, const char *staged_name,
		      const struct landing *l, char *reason);

/*
 * Copies src (from offset 0, at most limit bytes: the size a quota was
 * checked against, the source may grow meanwhile) into a new private
 * file of the writer's work dir and hashes it: l->size and
 * l->sha256 are set, and the file, staged_name (64 bytes) in
 * writer->work_fd, is ready for landing_land_file(), which makes it
 * durable.  On failure nothing
 * is left staged.  Returns 0 or -errno with reason set.
 */
int landing_stage_copy(struct writer *writer, int src, uint64_t limit, char *staged_name,
		       struct landing *l, char *reason);

/*
 * Moves the legacy run artifacts/<run>/ (from before tenants had areas)
 * into view's tenant area, artifacts/<client>/<run>/, in one rename that
 * replaces nothing, durably, under the run's lock; the tenant then owns
 * the run id in the index, and its rows are indexed.  Refuses when the
 * tenant has a run of that id (-EEXIST) or another tenant owns or holds
 * it (-EACCES), or when run is not a run id of a view (-EINVAL:
 * promote).  With dry_run, only checks, and audits nothing.  Returns 0,
 * -ENOENT (no such legacy run), -EEXIST, -EACCES, -EINVAL, -errno with
 * reason set.  Audited (action "repair").
 */
int landing_migrate_legacy(struct view *view, const char *run, bool dry_run, char *reason);

/*
 * Renames the artifact from of run to to, file and entry together, with
 * its recorded SHA-256, recorded by an intent so that a crash between
 * the two is completed by landing_recover().  no_replace: -EEXIST when
 * to exists.  Returns 0, -ENOENT (no such run or artifact), -EEXIST,
 * -errno with reason set.
 */
int landing_rename_artifact(struct writer *writer, const char *run, const char *from,
			    const char *to, bool no_replace, char *reason);

/*
 * Finishes what the tenant's dead staging instances left (those whose
 * lock is free: their process is gone, on whichever host): each file a record or an intent
 * describes that landed with the promised bytes gets its entry and index
 * row, each staged file whose entry landed without it is moved into its
 * run, each rename intent gets its entry moved; then the instance is
 * removed.  Live instances (a daemon or artifactctl at work) are left
 * alone.  Returns how many landings were completed; each is logged.
 */
unsigned int landing_recover(struct writer *writer);

/* The SHA-256 of what fd holds, read from offset 0, as hex.  Returns 0 or -errno. */
int landing_hash_file(int fd, char hex[LANDING_SHA256_HEX_SIZE]);

/* Files from this size up are flushed while landing_hash_and_flush() hashes them. */
#define LANDING_HASH_AND_FLUSH_MIN (8 << 20)

/*
 * landing_hash_file() of a file about to land, whose bytes the landing
 * must then flush: from LANDING_HASH_AND_FLUSH_MIN bytes up they are
 * sent to the disk (fdatasync) on a thread of their own while this one
 * hashes, so the landing's own flush finds little left, and a commit pays
 * for the longer of the two instead of both.  Returns 0, or the -errno of
 * the hash or of the flush.
 */
int landing_hash_and_flush(int fd, char hex[LANDING_SHA256_HEX_SIZE]);

/* A 32-byte digest as 64 lowercase hex digits and a NUL. */
void landing_hex_digest(const unsigned char *digest, char hex[LANDING_SHA256_HEX_SIZE]);

#endif
