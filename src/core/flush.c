/*
 * flush.c - fsync()s submitted together, through Linux AIO
 * (IOCB_CMD_FSYNC), which runs them concurrently: ext4 and XFS then
 * commit their journal once for all of them.  Each thread keeps its own
 * AIO context (io_getevents() would otherwise take another thread's
 * completions), made at its first flush and destroyed when it exits.
 */
#include <errno.h>
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "flush.h"
#include "log.h"

/* At most this many fsyncs in flight per thread; more wait for a turn. */
#define FLUSH_BATCH 64

static pthread_key_t context_key;
static pthread_once_t context_once = PTHREAD_ONCE_INIT;
/* Set once, when AIO turns out to be unusable here; read by every thread. */
static _Atomic bool aio_unusable;

static void destroy_context(void *value)
{
	syscall(SYS_io_destroy, (aio_context_t)(uintptr_t)value);
}

static void make_key(void)
{
	if (pthread_key_create(&context_key, destroy_context) != 0)
		aio_unusable = true;
}

/* This thread's AIO context, or 0 when there is none to be had. */
static aio_context_t thread_context(void)
{
	aio_context_t context = 0;

	pthread_once(&context_once, make_key);
	if (aio_unusable)
		return 0;
	context = (aio_context_t)(uintptr_t)pthread_getspecific(context_key);
	if (context)
		return context;
	if (syscall(SYS_io_setup, FLUSH_BATCH, &context) < 0) {
		/* EAGAIN: the host's aio-max-nr is used up; try again next time. */
		if (errno != EAGAIN) {
			aio_unusable = true;
			log_info("fsyncs run one after another: no Linux AIO here (%s)",
				 strerror(errno));
		}
		return 0;
	}
	if (pthread_setspecific(context_key, (void *)(uintptr_t)context) != 0) {
		syscall(SYS_io_destroy, context);
		return 0;
	}
	return context;
}

static int flush_one(int fd)
{
	return fsync(fd) < 0 ? -errno : 0;
}

/*
 * Submits up to FLUSH_BATCH fsyncs and waits for them.  Returns how many
 * were submitted (the rest are the caller's), with *ret the first error.
 */
static size_t flush_batch(aio_context_t context, const int *fds, size_t n, int *ret)
{
	struct iocb iocbs[FLUSH_BATCH], *submit[FLUSH_BATCH];
	struct io_event events[FLUSH_BATCH];
	long submitted, done = 0;

	if (n > FLUSH_BATCH)
		n = FLUSH_BATCH;
	memset(iocbs, 0, sizeof(iocbs[0]) * n);
	for (size_t i = 0; i < n; i++) {
		iocbs[i].aio_lio_opcode = IOCB_CMD_FSYNC;
		iocbs[i].aio_fildes = (uint32_t)fds[i];
		submit[i] = &iocbs[i];
	}
	submitted = syscall(SYS_io_submit, context, (long)n, submit);
	if (submitted <= 0)
		return 0;	/* not taken (a file system without AIO fsync): one by one */
	while (done < submitted) {
		long got = syscall(SYS_io_getevents, context, submitted - done,
				   submitted - done, events, NULL);

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			/* Cannot happen with a valid context; never leave fsyncs behind. */
			log_error("cannot wait for fsyncs: %s", strerror(errno));
			*ret = -EIO;
			return (size_t)submitted;
		}
		for (long i = 0; i < got; i++)
			if ((long long)events[i].res < 0 && *ret == 0)
				*ret = (int)events[i].res;
		done += got;
	}
	return (size_t)submitted;
}

int flush_all(const int *fds, size_t n)
{
	aio_context_t context = n > 1 ? thread_context() : 0;
	size_t i = 0;
	int ret = 0;

	while (context && i < n) {
		size_t submitted = flush_batch(context, fds + i, n - i, &ret);

		if (!submitted)
			break;
		i += submitted;
	}
	for (; i < n; i++) {
		int one = flush_one(fds[i]);

		if (one < 0 && ret == 0)
			ret = one;
	}
	return ret;
}
