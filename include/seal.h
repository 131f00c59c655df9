/*
 * seal.h - what a promoted file says of itself: its seal.
 *
 * A landing writes, on the staged file, before the flush that makes its
 * bytes durable, an xattr (SEAL_XATTR) naming the run and name it lands
 * as, its generation time, size, mtime and SHA-256.  The seal follows the
 * file into the run and stays there.  Recovery (landing.h) uses it to tell
 * the file a landing describes; the index (view.h) takes the SHA-256 from
 * it, so that the hash is a property of the file, the same on every host
 * and after an index rebuild, not of the index of the host that promoted
 * it.
 */
#ifndef ARTIFACTFS_SEAL_H
#define ARTIFACTFS_SEAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#define SEAL_XATTR "user.artifactfs.landing"
/* 64 hex digits and a NUL. */
#define SEAL_SHA256_HEX_SIZE 65

/* A seal, parsed; the strings point into doc. */
struct seal {
	json_t *doc;
	const char *run, *name, *generated_at, *sha256;
	int64_t size, mtime_ns;
};

/*
 * Seals fd for run/name, generated at generated_at, holding bytes of that
 * sha256 (its size and mtime are fstat()'s now: seal after the last
 * write).  Not durable by itself: fsync fd after.  Returns 0, -ENOTSUP
 * (the file system keeps no user xattrs), -ENOMEM or -errno.
 */
int seal_write(int fd, const char *run, const char *name, const char *generated_at,
	       const char *sha256);

/* Reads fd's seal into *seal.  Returns 0, -ENODATA (none, or not one of ours) or -errno. */
int seal_read(int fd, struct seal *seal);

/*
 * seal_read() of dir_fd's entry name, without opening the file (and never
 * through a symlink).  Returns what seal_read() returns.
 */
int seal_read_at(int dir_fd, const char *name, struct seal *seal);

/* Frees what *seal holds and zeroes it.  Safe on a zeroed struct. */
void seal_release(struct seal *seal);

/*
 * Whether the seal still describes a file of that size and mtime, so
 * that the sealed SHA-256 can be trusted without hashing the bytes
 * (artifactctl verify --read-data hashes them).
 */
bool seal_describes(const struct seal *seal, int64_t size, int64_t mtime_ns);

#endif
