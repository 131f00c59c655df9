/*
 * clock.h - the time as one number, for records and for waits.
 */
#ifndef ARTIFACTFS_CLOCK_H
#define ARTIFACTFS_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Nanoseconds by clock: CLOCK_REALTIME for records, CLOCK_MONOTONIC for waits. */
static inline int64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Milliseconds of CLOCK_MONOTONIC. */
static inline int64_t clock_monotonic_ms(void)
{
	return clock_ns(CLOCK_MONOTONIC) / 1000000;
}

/* The CLOCK_MONOTONIC moment ns from now, as a timed wait takes it. */
static inline struct timespec clock_monotonic_after(int64_t ns)
{
	int64_t at = clock_ns(CLOCK_MONOTONIC) + ns;

	return (struct timespec){ .tv_sec = at / 1000000000, .tv_nsec = at % 1000000000 };
}

/*
 * Makes cond a condition variable whose timed waits count on
 * CLOCK_MONOTONIC (clock_monotonic_after()), which a change of the
 * system's time does not move.
 */
static inline void clock_cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t monotonic;

	pthread_condattr_init(&monotonic);
	pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
	pthread_cond_init(cond, &monotonic);
	pthread_condattr_destroy(&monotonic);
}

#endif
