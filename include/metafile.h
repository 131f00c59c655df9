/*
 * metafile.h - a run's metadata.json as a file that others write too.
 *
 * The RARO kernel-server rewrites metadata.json in place and without a
 * lock: it truncates the file, then writes it again.  A reader can meet
 * it empty or half written, and a writer that read it, added an entry and
 * renamed its own version over it can throw away what the kernel-server
 * wrote in between.  This module reads and replaces the file with both in
 * mind: a file that does not parse is given time while it is still
 * changing, and a replacement is refused when the file changed since it
 * was read, so that the caller merges again.  (An in-place writer can
 * still slip in between that check and the rename: see
 * promote_repair_run().)
 *
 * FUSE-free.  Functions return 0 or a negative errno.
 */
#ifndef ARTIFACTFS_METAFILE_H
#define ARTIFACTFS_METAFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "meta.h"

/*
 * How long a metadata.json that does not parse must have gone unchanged
 * (by its ctime) before it counts as broken rather than half written.
 */
#define METAFILE_SETTLE_MS 1000
/* The longest metafile_read() waits on a file that keeps changing unparsable. */
#define METAFILE_WAIT_MAX_MS 10000

/* Which metadata.json was read: to tell whether it changed since. */
struct metafile_version {
	bool present;		/* false: there was no metadata.json */
	int64_t ino, size, mtime_ns, ctime_ns;
	mode_t mode;		/* kept by metafile_write() */
	uid_t uid;
	gid_t gid;
};

/*
 * Reads and parses run_fd's metadata.json into *meta, and which file that
 * was into *version.  A file that does not parse but changed within the
 * last METAFILE_SETTLE_MS is being written: with wait set it is read
 * again every few milliseconds until it parses or has stood still that
 * long (at most METAFILE_WAIT_MAX_MS in all); without, -EAGAIN at once.
 *
 * Returns 0 (it follows the schema); -EINVAL (it parses but breaks the
 * schema: *meta holds what could be read); -ENOENT (no metadata.json:
 * version->present is false); -EAGAIN (see above); -EBADMSG (it does not
 * parse and has stood still, or is not a regular file: broken); -EFBIG (over META_MAX_BYTES);
 * -ENOMEM; or the -errno of reading it.  For -EINVAL, -EAGAIN, -EBADMSG
 * and -EFBIG a one-line reason goes to problem (may be NULL).
 * *meta must be released with meta_run_release() after every return.
 */
int metafile_read(int run_fd, bool wait, struct meta_run *meta,
		  struct metafile_version *version, char *problem, size_t problem_size);

/* Whether run_fd's metadata.json is still version (or still absent). */
bool metafile_unchanged(int run_fd, const struct metafile_version *version);

/*
 * Replaces run_fd's metadata.json with *meta, if it is still the version
 * read: metafile_draft(), metafile_install(), then an fsync of run_fd.
 * *written (may be NULL) then describes the new file; written->present is
 * false when it was changed again at once, before it could be described.
 * Returns 0; -ESTALE when the file changed since it was read (nothing was
 * replaced: read it again and merge); -EINVAL when *meta cannot be
 * formatted; -ENOMEM; or the -errno of the write.
 */
int metafile_write(int run_fd, int work_fd, const char *draft, const struct meta_run *meta,
		   const struct metafile_version *version, struct metafile_version *written);

/*
 * The first half of metafile_write(): writes *meta as a draft named draft
 * in work_fd (on the store's file system), with the mode, owner and group
 * of the version read (0644 and the caller's for a new file; owner and
 * group only where the caller may set them), and with flush fsyncs it
 * (without, the caller must, before installing it); *drafted is its
 * stat.  On failure no draft is left.  Returns 0, -EINVAL (cannot be
 * formatted), -ENOMEM or the -errno of the write.
 */
int metafile_draft(int work_fd, const char *draft, const struct meta_run *meta,
		   const struct metafile_version *version, bool flush, struct stat *drafted);

/*
 * The second half: renames the draft over run_fd's metadata.json if that
 * is still version, and describes what landed in *written (may be NULL)
 * as metafile_write() does.  Does not fsync run_fd: the caller does, once
 * for everything it renamed into the run.  On failure the draft stays.
 * Returns 0, -ESTALE (changed since read) or -errno.
 */
int metafile_install(int run_fd, int work_fd, const char *draft,
		     const struct metafile_version *version, const struct stat *drafted,
		     struct metafile_version *written);

#endif
