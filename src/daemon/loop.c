/*
 * loop.c - the request loop: leader and followers over /dev/fuse (see
 * loop.h for why).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "loop.h"

/* The kernel's opcodes of the requests that get no reply and take no time. */
#define LOOP_OPCODE_FORGET 2
#define LOOP_OPCODE_BATCH_FORGET 42

/* How often the loop looks whether a signal ended the session. */
#define LOOP_CHECK_NS (100 * 1000000L)

struct loop {
	struct fuse_session *session;
	/*
	 * Guards everything below.  reading: threads in (or on their way
	 * into) the kernel's read, at most max_reading; waiting: threads
	 * waiting on turn for a place there; threads: started, their ids in
	 * ids; ended: the session is over and every thread leaves; error:
	 * why, if a read failed.
	 */
	pthread_mutex_t lock;
	pthread_cond_t turn;
	pthread_cond_t changed;	/* ended was set */
	bool ended;
	unsigned int reading, max_reading, waiting, threads, max_threads;
	pthread_t *ids;
	int error;
};

/* Whether buf is a FORGET or BATCH_FORGET: served by the reader itself. */
static bool is_forget(const struct fuse_buf *buf)
{
	uint32_t opcode;

	/* struct fuse_in_header: the request's length, then its opcode. */
	if ((buf->flags & FUSE_BUF_IS_FD) || buf->size < 2 * sizeof(uint32_t))
		return false;
	memcpy(&opcode, (const char *)buf->mem + sizeof(uint32_t), sizeof(opcode));
	return opcode == LOOP_OPCODE_FORGET || opcode == LOOP_OPCODE_BATCH_FORGET;
}

/*
 * Reads the next request.  A read the kernel ends with ECONNABORTED was
 * either aborted for real (fusectl's abort) or taken just as an unmount
 * shut the connection down: fuse_dev_do_read() answers both alike.  The
 * read after it tells them apart at once, the connection being down:
 * ENODEV after an unmount (libfuse then ends the session and returns 0),
 * ECONNABORTED again after an abort.
 */
static int receive(struct fuse_session *session, struct fuse_buf *buf)
{
	int res = fuse_session_receive_buf(session, buf);

	return res == -ECONNABORTED ? fuse_session_receive_buf(session, buf) : res;
}

/* Ends the loop: every thread leaves.  Locked. */
static void end_loop(struct loop *loop, int error)
{
	if (!loop->ended && error)
		loop->error = error;
	loop->ended = true;
	pthread_cond_broadcast(&loop->turn);
	pthread_cond_broadcast(&loop->changed);
}

static void free_buffer(void *mem)
{
	free(*(void **)mem);
}

static void *serve(void *arg);

/* Starts one more thread, if the bound allows.  Locked. */
static void start_thread(struct loop *loop)
{
	int ret;

	if (loop->threads >= loop->max_threads)
		return;
	ret = pthread_create(&loop->ids[loop->threads], NULL, serve, loop);
	if (ret == 0) {
		loop->threads++;
		return;
	}
	/* The threads there are go on serving: one at least is. */
	log_warning("cannot start a request thread (%u running): %s", loop->threads,
		    strerror(ret));
}

/*
 * Reads requests while there is room in the kernel for one more reader;
 * serves a FORGET itself and reads on.  For anything else, the last
 * reader to leave the kernel has another thread take its place first.
 * Cancelled (at the end, by loop_run()) only while it waits in the
 * kernel.
 */
static void *serve(void *arg)
{
	struct loop *loop = arg;
	struct fuse_buf buf = { .mem = NULL };
	int res = 0;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_push(free_buffer, &buf.mem);
	pthread_mutex_lock(&loop->lock);
	while (!loop->ended) {
		if (loop->reading >= loop->max_reading) {
			loop->waiting++;
			pthread_cond_wait(&loop->turn, &loop->lock);
			loop->waiting--;
			continue;
		}
		loop->reading++;
		pthread_mutex_unlock(&loop->lock);
		for (;;) {
			pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
			res = receive(loop->session, &buf);
			pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
			if (res <= 0 || !is_forget(&buf))
				break;
			fuse_session_process_buf(loop->session, &buf);
		}
		pthread_mutex_lock(&loop->lock);
		loop->reading--;
		if (loop->ended)
			break;
		if (fuse_session_exited(loop->session) || res == 0) {
			end_loop(loop, 0);
			break;
		}
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (res < 0) {
			log_error("cannot read a request from the kernel: %s", strerror(-res));
			end_loop(loop, res);
			break;
		}
		/* Someone must read the next request while this one is served. */
		if (loop->reading == 0) {
			if (loop->waiting)
				pthread_cond_signal(&loop->turn);
			else
				start_thread(loop);
		}
		pthread_mutex_unlock(&loop->lock);
		fuse_session_process_buf(loop->session, &buf);
		pthread_mutex_lock(&loop->lock);
	}
	pthread_mutex_unlock(&loop->lock);
	pthread_cleanup_pop(1);
	return NULL;
}

/*
 * Whether the kernel ended the connection (an unmount, an abort), rather
 * than a signal the session: a read that returns 0 cannot say, since
 * libfuse drops a request read once the session is ended.
 */
static bool connection_ended(struct fuse_session *session)
{
	struct pollfd device = { .fd = fuse_session_fd(session), .events = POLLIN };

	return poll(&device, 1, 0) == 1 && (device.revents & (POLLERR | POLLHUP));
}

int loop_run(struct fuse_session *session, unsigned int max_threads,
	     unsigned int max_reading)
{
	struct loop loop = {
		.session = session,
		.max_threads = max_threads ? max_threads : 1,
		.max_reading = max_reading ? max_reading : 1,
	};
	struct timespec deadline;
	unsigned int threads;
	int ret;

	loop.ids = calloc(loop.max_threads, sizeof(*loop.ids));
	if (!loop.ids)
		return -ENOMEM;
	pthread_mutex_init(&loop.lock, NULL);
	pthread_cond_init(&loop.turn, NULL);
	clock_cond_init_monotonic(&loop.changed);

	pthread_mutex_lock(&loop.lock);
	start_thread(&loop);
	if (loop.threads == 0)
		end_loop(&loop, -EAGAIN);
	/* A signal's fuse_session_exit() wakes no thread waiting in the kernel. */
	while (!loop.ended) {
		deadline = clock_monotonic_after(LOOP_CHECK_NS);
		pthread_cond_timedwait(&loop.changed, &loop.lock, &deadline);
		if (fuse_session_exited(session))
			end_loop(&loop, 0);
	}
	/*
	 * Threads waiting in the kernel are woken by nothing else.  Only
	 * they take a cancel: the rest leave on their own, never to enable
	 * it again.
	 */
	threads = loop.threads;	/* none starts once ended */
	for (unsigned int i = 0; i < threads; i++)
		pthread_cancel(loop.ids[i]);
	pthread_mutex_unlock(&loop.lock);
	for (unsigned int i = 0; i < threads; i++)
		pthread_join(loop.ids[i], NULL);
	ret = loop.error ? loop.error : connection_ended(session) ? 0 : LOOP_STOPPED;
	pthread_cond_destroy(&loop.changed);
	pthread_cond_destroy(&loop.turn);
	pthread_mutex_destroy(&loop.lock);
	free(loop.ids);
	return ret;
}
