/*
 * flush.h - making several files and directories durable at once.
 *
 * A landing must have many things on disk before it renames anything
 * (landing.h): the staged files, the draft of metadata.json, their
 * directories.  One fsync() after another costs one journal commit each;
 * submitted together, the file system folds them into one.
 */
#ifndef ARTIFACTFS_FLUSH_H
#define ARTIFACTFS_FLUSH_H

#include <stddef.h>

/*
 * fsync()s every one of the n descriptors (files or directories), all
 * submitted at once where the kernel can take them so (Linux AIO), one
 * after another otherwise.  Returns 0 once all are durable, or the first
 * -errno (what did not fail is durable all the same).  Thread-safe.
 */
int flush_all(const int *fds, size_t n);

#endif
