/*
 * ino_cipher.c - the keyed permutation of inode numbers (see ino_cipher.h).
 *
 * Why a Feistel network: it is a permutation whatever its round function,
 * so no two files can ever collide, and with four rounds of a keyed PRF
 * (SipHash) the output tells nothing about the input's order without the
 * key.  Cycle walking keeps the outputs in range without breaking that:
 * applying the permutation again until the value lands in range visits
 * the input's own cycle, which holds the input itself, so it ends.
 */
#include <stdbool.h>
#include <string.h>

#include "ino_cipher.h"

#define FEISTEL_ROUNDS 4
/*
 * Below 2^63, as some tools hold st_ino signed, and below the view's own
 * range (a range, not a few numbers, so that every promote/<run> has a
 * number of its own; widening it from two numbers changed the number of
 * about one file in 2^31).
 */
#define SHOWN_LIMIT INO_CIPHER_VIEW_FIRST

static uint64_t rotate_left(uint64_t x, int bits)
{
	return (x << bits) | (x >> (64 - bits));
}

static uint64_t read_le64(const uint8_t *bytes)
{
	uint64_t value = 0;

	for (int i = 7; i >= 0; i--)
		value = (value << 8) | bytes[i];
	return value;
}

void ino_cipher_init(struct ino_cipher *cipher, const uint8_t key[INO_CIPHER_KEY_SIZE])
{
	cipher->k0 = read_le64(key);
	cipher->k1 = read_le64(key + 8);
}

#define SIP_ROUND(v0, v1, v2, v3) do {					\
	v0 += v1; v1 = rotate_left(v1, 13); v1 ^= v0; v0 = rotate_left(v0, 32); \
	v2 += v3; v3 = rotate_left(v3, 16); v3 ^= v2;			\
	v0 += v3; v3 = rotate_left(v3, 21); v3 ^= v0;			\
	v2 += v1; v1 = rotate_left(v1, 17); v1 ^= v2; v2 = rotate_left(v2, 32); \
} while (0)

uint64_t ino_cipher_siphash(const struct ino_cipher *cipher, uint64_t message)
{
	uint64_t v0 = cipher->k0 ^ UINT64_C(0x736f6d6570736575);
	uint64_t v1 = cipher->k1 ^ UINT64_C(0x646f72616e646f6d);
	uint64_t v2 = cipher->k0 ^ UINT64_C(0x6c7967656e657261);
	uint64_t v3 = cipher->k1 ^ UINT64_C(0x7465646279746573);
	const uint64_t last = UINT64_C(8) << 56;	/* the length byte, no tail */

	v3 ^= message;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= message;
	v3 ^= last;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= last;
	v2 ^= 0xff;
	for (int i = 0; i < 4; i++)
		SIP_ROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t encrypt(const struct ino_cipher *cipher, uint64_t block)
{
	uint32_t left = (uint32_t)(block >> 32), right = (uint32_t)block;

	for (uint64_t round = 0; round < FEISTEL_ROUNDS; round++) {
		uint32_t mixed = left ^ (uint32_t)ino_cipher_siphash(cipher, round << 32 | right);

		left = right;
		right = mixed;
	}
	return (uint64_t)left << 32 | right;
}

static bool shown_in_range(uint64_t ino)
{
	return ino > INO_CIPHER_ROOT && ino < SHOWN_LIMIT;
}

uint64_t ino_cipher_apply(const struct ino_cipher *cipher, uint64_t ino)
{
	uint64_t shown = encrypt(cipher, ino);

	/*
	 * Ends for any input in range (its cycle holds it).  An input out of
	 * range could in theory sit on a cycle wholly out of range: bounded,
	 * as such an input is no file's number anyway.
	 */
	for (int walks = 0; !shown_in_range(shown) && walks < 4096; walks++)
		shown = encrypt(cipher, shown);
	return shown;
}

uint64_t ino_cipher_hash_name(const struct ino_cipher *cipher, const char *name)
{
	size_t len = strlen(name);
	uint64_t hash = 0;

	for (size_t i = 0; i < len; i += 8) {
		uint64_t chunk = 0;	/* little-endian, the same on every host */

		for (size_t j = 0; j < 8 && i + j < len; j++)
			chunk |= (uint64_t)(unsigned char)name[i + j] << (8 * j);
		hash = ino_cipher_siphash(cipher, hash ^ chunk);
	}
	return hash;
}
