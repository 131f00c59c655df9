/*
 * clock.h - the time as one number, for records and for waits.
 */
#ifndef ARTIFACTFS_CLOCK_H
#define ARTIFACTFS_CLOCK_H

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

#endif
