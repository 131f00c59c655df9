/*
 * metaedit.h - changing a run's metadata.json: reading it for a change,
 * editing entries, and writing it back without losing what a writer that
 * takes no lock (the kernel-server) wrote meanwhile.
 *
 * Callers hold the run lock (exclusive, see store_lock_run()) from the read to the write, so writers that take it (every
 * artifactfs daemon, artifactctl) never lose each other's entries; the
 * kernel-server takes none, which metaedit_apply() answers by reading
 * again and applying the edit again when the file changed underneath.
 * Functions return 0 or a negative errno; those that take reason set it
 * (AUDIT_REASON_SIZE bytes) to one line for the audit trail on failure.
 */
#ifndef ARTIFACTFS_METAEDIT_H
#define ARTIFACTFS_METAEDIT_H

#include <stdbool.h>
#include <stddef.h>

#include "meta.h"
#include "metafile.h"
#include "writer.h"

/*
 * Reads the run's metadata.json into *meta (and what it was: *version),
 * waiting while a writer that takes no lock is halfway through rewriting
 * it.  Returns 0; -ENOENT for a missing file (*version->present false);
 * -EIO when the file does not follow the schema, stays unparsable or
 * cannot be read: such a file is never rewritten, rewriting would lose
 * what its writer wrote; -ENOMEM.
 */
int metaedit_read(int run_fd, struct meta_run *meta, struct metafile_version *version,
		  char *reason);

/*
 * A change to a run's metadata: edits *meta in place.  Returns 0, 1 when
 * there is nothing to write, or -ENOMEM.
 */
typedef int (*metaedit_fn)(struct meta_run *meta, const void *ctx);

/*
 * Applies edit to *meta, the run's metadata.json as read (*version), and
 * writes the result (a draft in the writer's work dir, fsync'd, renamed
 * over metadata.json, the run dir fsync'd; mode and owner kept).  When
 * the file changed since it was read, reads it again and applies the
 * edit again, for up to METAEDIT_RETRY_MS.  On success *meta and *version
 * are what the file now holds.  Returns 0 or -errno (-EIO, -ENOMEM).
 */
#define METAEDIT_RETRY_MS 10000
int metaedit_apply(struct writer *writer, int run_fd, struct meta_run *meta,
		   struct metafile_version *version, metaedit_fn edit, const void *ctx,
		   char *reason);

/*
 * What an ordered change (metaedit_apply_ordered()) does between drafting
 * metadata.json and installing the draft: make durable, all at once
 * (flush_all()), the n descriptors of durable (the draft and the work dir
 * holding its name) together with what the new entries describe, then put
 * those in place (a landing renames its files into the run).  Returns 0;
 * 1 when some of it could not be done and the edit must be applied again
 * without it (the edit's ctx knows what failed); -errno, with reason set,
 * when nothing was moved.
 */
typedef int (*metaedit_before_fn)(void *ctx, const int *durable, size_t n, char *reason);

/*
 * metaedit_apply() for a change whose entries describe files that are
 * about to appear, so that no crash leaves a file in the run without its
 * entry: the first draft is written as an intent of run in the writer's
 * work dir (writer_intent_name()), then before() runs, once, and makes
 * it durable, name included, with its own files before it moves them;
 * then the draft (or, if the file changed meanwhile, a new one) replaces
 * metadata.json and the run dir is fsync'd, one flush for everything
 * before() renamed into it as well.  The intent goes once the change is
 * whole; if the change fails after before() ran, it stays for
 * landing_recover().  Returns what metaedit_apply() returns, or
 * before()'s -errno.
 */
int metaedit_apply_ordered(struct writer *writer, int run_fd, const char *run,
			   struct meta_run *meta, struct metafile_version *version,
			   metaedit_fn edit, const void *ctx, metaedit_before_fn before,
			   void *before_ctx, char *reason);

/*
 * Puts a copy of entry into *meta, in place of the entries of its
 * filename (duplicates go too), or appended.  Returns 0 or -ENOMEM.
 */
int metaedit_put_entry(struct meta_run *meta, const struct meta_artifact *entry);

/* Drops every entry of name from *meta.  Returns whether one was there. */
bool metaedit_remove_entry(struct meta_run *meta, const char *name);

/*
 * Gives the entry of from the name to, dropping to's own entries.
 * Returns 0, 1 when from has no entry, -ENOMEM.
 */
int metaedit_rename_entry(struct meta_run *meta, const char *from, const char *to);

/* A malloc'd copy of text ("" for NULL), or NULL with *ret set to -ENOMEM. */
char *metaedit_copy_text(const char *text, int *ret);

#endif
