/*
 * test_ino_cipher.c - the inode number permutation: SipHash's published
 * vector, a bijection that keeps in range, and no order leaking through.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "ino_cipher.h"

static struct ino_cipher reference_cipher(void)
{
	uint8_t key[INO_CIPHER_KEY_SIZE];
	struct ino_cipher cipher;

	for (int i = 0; i < INO_CIPHER_KEY_SIZE; i++)
		key[i] = (uint8_t)i;
	ino_cipher_init(&cipher, key);
	return cipher;
}

/* The SipHash paper's vector for key 00..0f and the 8-byte message 00..07. */
static void siphash_matches_the_reference_vector(void **state)
{
	struct ino_cipher cipher = reference_cipher();

	assert_true(ino_cipher_siphash(&cipher, UINT64_C(0x0706050403020100)) ==
		    UINT64_C(0x93f5f5799a932462));
}

static int compare_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Consecutive numbers, as a file system hands them out: all distinct, in range. */
static void consecutive_numbers_stay_distinct_and_in_range(void **state)
{
	struct ino_cipher cipher = reference_cipher();
	enum { COUNT = 200000 };
	uint64_t *shown = malloc(COUNT * sizeof(*shown));

	assert_non_null(shown);
	for (uint64_t i = 0; i < COUNT; i++) {
		shown[i] = ino_cipher_apply(&cipher, i + 2);
		assert_true(shown[i] > INO_CIPHER_ROOT);
		assert_true(shown[i] < (UINT64_C(1) << 63));
		assert_true(shown[i] != INO_CIPHER_PROMOTE && shown[i] != INO_CIPHER_STATUS);
		assert_true(shown[i] == ino_cipher_apply(&cipher, i + 2));	/* stable */
	}
	qsort(shown, COUNT, sizeof(*shown), compare_u64);
	for (size_t i = 1; i < COUNT; i++)
		assert_true(shown[i] != shown[i - 1]);
	free(shown);
}

/*
 * The gap between two images tells nothing of the gap between the
 * numbers: about half of successive pairs go down, and no difference
 * repeats (a shift or a stride would make them all equal).
 */
static void order_does_not_show_through(void **state)
{
	struct ino_cipher cipher = reference_cipher();
	enum { COUNT = 10000 };
	int descending = 0, equal_steps = 0;
	uint64_t previous = ino_cipher_apply(&cipher, 1000), previous_step = 0;

	for (uint64_t i = 1001; i < 1000 + COUNT; i++) {
		uint64_t shown = ino_cipher_apply(&cipher, i);
		uint64_t step = shown - previous;

		descending += shown < previous;
		equal_steps += step == previous_step;
		previous = shown;
		previous_step = step;
	}
	assert_in_range(descending, COUNT * 45 / 100, COUNT * 55 / 100);
	assert_int_equal(equal_steps, 0);
}

/* Another key, other numbers: the key is what keeps them opaque. */
static void another_key_gives_other_numbers(void **state)
{
	struct ino_cipher a = reference_cipher(), b;
	uint8_t key[INO_CIPHER_KEY_SIZE] = { 0 };
	int same = 0;

	key[0] = 1;
	ino_cipher_init(&b, key);
	for (uint64_t i = 2; i < 1002; i++)
		same += ino_cipher_apply(&a, i) == ino_cipher_apply(&b, i);
	assert_int_equal(same, 0);
}

/* Numbers no file has still map somewhere in range, without hanging. */
static void out_of_range_inputs_end_in_range(void **state)
{
	struct ino_cipher cipher = reference_cipher();
	const uint64_t inputs[] = { 0, 1, INO_CIPHER_PROMOTE, INO_CIPHER_STATUS,
				    UINT64_C(1) << 63, UINT64_MAX };

	for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
		uint64_t shown = ino_cipher_apply(&cipher, inputs[i]);

		assert_true(shown > INO_CIPHER_ROOT && shown < (UINT64_C(1) << 63));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(siphash_matches_the_reference_vector),
		cmocka_unit_test(consecutive_numbers_stay_distinct_and_in_range),
		cmocka_unit_test(order_does_not_show_through),
		cmocka_unit_test(another_key_gives_other_numbers),
		cmocka_unit_test(out_of_range_inputs_end_in_range),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
