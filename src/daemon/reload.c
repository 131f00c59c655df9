/*
 * reload.c - SIGHUP, SIGUSR1 and SIGUSR2 while the mount is served.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "reload.h"
#include "service.h"

struct reload {
	void (*reload_config)(void *ctx);	/* SIGHUP's work beyond syslog */
	void *ctx;
	enum log_level level;	/* the thread's alone once started */
	int signals;		/* signalfd of the handled signals, read by the thread */
	int stop;		/* eventfd, written once by reload_stop() */
	pthread_t thread;
};

/* SIGHUP, SIGUSR1 and SIGUSR2. */
static void handled_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	sigaddset(set, SIGUSR2);
}

int reload_block_signals(void)
{
	sigset_t set;

	handled_signals(&set);
	return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static const char *const level_names[] = { "error", "warning", "info", "debug" };

static void handle(struct reload *r, int signum)
{
	if (signum == SIGHUP) {
		service_notify_reloading(false);
		log_reopen();
		r->reload_config(r->ctx);
		log_info("reloaded on SIGHUP: syslog reconnected, content types read again");
		service_notify_reloading(true);
		return;
	}
	if (signum == SIGUSR1 && r->level < LOG_LEVEL_DEBUG)
		r->level++;
	else if (signum == SIGUSR2 && r->level > LOG_LEVEL_ERROR)
		r->level--;
	/* Said at the level that shows it, or as a warning when going quieter. */
	log_set_level(r->level > LOG_LEVEL_WARNING ? r->level : LOG_LEVEL_WARNING);
	log_warning("log level is now %s (%s)", level_names[r->level],
		    signum == SIGUSR1 ? "SIGUSR1" : "SIGUSR2");
	log_set_level(r->level);
}

static void *serve(void *arg)
{
	struct reload *r = arg;
	struct pollfd fds[2] = { { .fd = r->signals, .events = POLLIN },
				 { .fd = r->stop, .events = POLLIN } };
	struct signalfd_siginfo info;

	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("signals are no longer handled: %s", strerror(errno));
			break;
		}
		if (fds[1].revents)
			break;
		if (read(r->signals, &info, sizeof(info)) == sizeof(info))
			handle(r, (int)info.ssi_signo);
	}
	return NULL;
}

int reload_start(void (*reload_config)(void *ctx), void *ctx, enum log_level level,
		 struct reload **out)
{
	struct reload *r = calloc(1, sizeof(*r));
	sigset_t set;
	int ret;

	if (!r)
		return -ENOMEM;
	r->reload_config = reload_config;
	r->ctx = ctx;
	r->level = level;
	r->stop = -1;
	handled_signals(&set);
	r->signals = signalfd(-1, &set, SFD_CLOEXEC);
	if (r->signals < 0 || (r->stop = eventfd(0, EFD_CLOEXEC)) < 0) {
		ret = -errno;
		log_error("cannot handle SIGHUP, SIGUSR1 and SIGUSR2: %s", strerror(-ret));
		goto fail;
	}
	ret = -pthread_create(&r->thread, NULL, serve, r);
	if (ret < 0) {
		log_error("cannot start the reload thread: %s", strerror(-ret));
		goto fail;
	}
	*out = r;
	return 0;
fail:
	if (r->signals >= 0)
		close(r->signals);
	if (r->stop >= 0)
		close(r->stop);
	free(r);
	return ret;
}

void reload_stop(struct reload *r)
{
	uint64_t one = 1;

	if (!r)
		return;
	/* The signals stay blocked: one that comes while unmounting waits, unread, for the exit. */
	(void)!write(r->stop, &one, sizeof(one));
	pthread_join(r->thread, NULL);
	close(r->signals);
	close(r->stop);
	free(r);
}
