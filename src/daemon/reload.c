/*
 * reload.c - SIGHUP, SIGUSR1 and SIGUSR2 while the mount is served.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reload.h"
#include "service.h"

struct reload {
	void (*reload_config)(void *ctx);	/* SIGHUP's work beyond syslog */
	void *ctx;
	enum log_level level;	/* the thread's alone once started */
	int pipe[2];		/* [1] written by the handlers, [0] read by the thread */
	pthread_t thread;
};

/* The write end, for the handlers: a signal handler has no context argument. */
static _Atomic int signal_pipe = -1;

static void on_signal(int signum)
{
	int saved = errno;
	unsigned char byte = (unsigned char)signum;
	int fd = signal_pipe;

	/* A full pipe drops the signal: one reload pending is enough. */
	if (fd >= 0)
		(void)!write(fd, &byte, 1);
	errno = saved;
}

static const int handled[] = { SIGHUP, SIGUSR1, SIGUSR2 };

static void set_handlers(void (*handler)(int))
{
	struct sigaction action = { .sa_handler = handler };

	sigemptyset(&action.sa_mask);
	action.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++)
		sigaction(handled[i], &action, NULL);
}

static const char *const level_names[] = { "error", "warning", "info", "debug" };

static void *serve(void *arg)
{
	struct reload *r = arg;
	unsigned char signum;

	while (read(r->pipe[0], &signum, 1) == 1 && signum != 0) {
		if (signum == SIGHUP) {
			service_notify_reloading(false);
			log_reopen();
			r->reload_config(r->ctx);
			log_info("reloaded on SIGHUP: syslog reconnected, content types read again");
			service_notify_reloading(true);
			continue;
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
	return NULL;
}

int reload_start(void (*reload_config)(void *ctx), void *ctx, enum log_level level,
		 struct reload **out)
{
	struct reload *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return -ENOMEM;
	r->reload_config = reload_config;
	r->ctx = ctx;
	r->level = level;
	if (pipe2(r->pipe, O_CLOEXEC) < 0) {
		ret = -errno;
		free(r);
		log_error("cannot handle SIGHUP: %s", strerror(-ret));
		return ret;
	}
	fcntl(r->pipe[1], F_SETFL, O_NONBLOCK);
	ret = -pthread_create(&r->thread, NULL, serve, r);
	if (ret < 0) {
		close(r->pipe[0]);
		close(r->pipe[1]);
		free(r);
		log_error("cannot start the reload thread: %s", strerror(-ret));
		return ret;
	}
	signal_pipe = r->pipe[1];
	set_handlers(on_signal);
	*out = r;
	return 0;
}

void reload_stop(struct reload *r)
{
	static const unsigned char stop = 0;

	if (!r)
		return;
	/* Ignored, not default: a SIGHUP while unmounting must not kill us mid-way. */
	set_handlers(SIG_IGN);
	signal_pipe = -1;
	while (write(r->pipe[1], &stop, 1) < 0 && errno == EAGAIN)
		usleep(1000);	/* the thread is draining a full pipe */
	pthread_join(r->thread, NULL);
	close(r->pipe[0]);
	/*
	 * The write end stays open until exit: a handler that began before
	 * the sigaction above may still be about to write to it, and must not
	 * hit a closed (or reused) descriptor.
	 */
	free(r);
}
