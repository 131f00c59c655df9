/*
 * ino_cipher.h - the inode numbers a tenant sees.
 *
 * A backing file system hands inode numbers out in order, so two of a
 * tenant's own numbers would tell how many files everyone else created
 * in between.  The view therefore shows each backing number through a
 * keyed permutation: distinct files keep distinct numbers, hard links
 * keep sharing one, and as the key lives in the store (see
 * store_load_key()) the numbers stay the same across remounts, index
 * rebuilds and hosts, which backup tools rely on.
 *
 * The permutation is a four-round Feistel network over 64 bits with
 * SipHash-2-4 as its round function, cycle-walked so that it never
 * yields 0, the root's 1, or the range kept for promote/'s entries.
 */
#ifndef ARTIFACTFS_INO_CIPHER_H
#define ARTIFACTFS_INO_CIPHER_H

#include <stdint.h>

#define INO_CIPHER_KEY_SIZE 16

/*
 * Numbers the view shows for itself, never the image of a backing one:
 * the root, and the range from INO_CIPHER_VIEW_FIRST up, which holds
 * promote/, promote/.status and the promote/<run> directories (below
 * INO_CIPHER_PROMOTE, 0xffffff00 of them).
 */
#define INO_CIPHER_ROOT ((uint64_t)1)
#define INO_CIPHER_VIEW_FIRST ((uint64_t)0x7fffffff00000000ULL)
#define INO_CIPHER_STAGED_RUNS_COUNT ((uint64_t)0xffffff00ULL)
#define INO_CIPHER_PROMOTE ((uint64_t)0x7fffffffffffff01ULL)
#define INO_CIPHER_STATUS ((uint64_t)0x7fffffffffffff02ULL)

struct ino_cipher {
	uint64_t k0, k1;	/* the key, as SipHash reads it */
};

void ino_cipher_init(struct ino_cipher *cipher, const uint8_t key[INO_CIPHER_KEY_SIZE]);

/*
 * The number shown for backing inode number ino: below
 * INO_CIPHER_VIEW_FIRST, never 0 nor 1.  A bijection over the numbers a
 * file system gives files (those below INO_CIPHER_VIEW_FIRST, but 0, 1).
 */
uint64_t ino_cipher_apply(const struct ino_cipher *cipher, uint64_t ino);

/* SipHash-2-4 of an 8-byte little-endian message: the round function. */
uint64_t ino_cipher_siphash(const struct ino_cipher *cipher, uint64_t message);

/*
 * A keyed hash of a string, the same on every host: what numbers a name
 * (promote/<run>) and derives one tenant's key from another.
 */
uint64_t ino_cipher_hash_name(const struct ino_cipher *cipher, const char *name);

#endif
