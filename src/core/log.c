/*
 * log.c - operator messages: stderr while in the foreground, syslog once
 * daemonized.  A message is formatted into one buffer and written with one
 * call so that lines from concurrent threads never interleave.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "log.h"

static _Atomic enum log_level max_level = LOG_LEVEL_INFO;
static const char *program = "artifactfs";
static bool to_syslog;

static const char *const level_names[] = {
	[LOG_LEVEL_ERROR] = "error",
	[LOG_LEVEL_WARNING] = "warning",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_DEBUG] = "debug",
};

static const int syslog_priorities[] = {
	[LOG_LEVEL_ERROR] = LOG_ERR,
	[LOG_LEVEL_WARNING] = LOG_WARNING,
	[LOG_LEVEL_INFO] = LOG_INFO,
	[LOG_LEVEL_DEBUG] = LOG_DEBUG,
};

void log_set_level(enum log_level level)
{
	max_level = level;
}

int log_parse_level(const char *name, enum log_level *level)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(name, level_names[i]) == 0) {
			*level = (enum log_level)i;
			return 0;
		}
	return -EINVAL;
}

void log_reopen(void)
{
	/* syslog's socket may have gone with a restarted journal: connect anew. */
	if (to_syslog) {
		closelog();
		openlog(program, LOG_PID, LOG_DAEMON);
	}
}

void log_set_program(const char *name)
{
	program = name;
}

void log_use_syslog(void)
{
	openlog(program, LOG_PID, LOG_DAEMON);
	to_syslog = true;
}

void log_message(enum log_level level, const char *fmt, ...)
{
	char line[1024];
	int prefix, body;
	va_list ap;

	if (level > max_level)
		return;

	va_start(ap, fmt);
	if (to_syslog) {
		vsyslog(syslog_priorities[level], fmt, ap);
		va_end(ap);
		return;
	}
	prefix = snprintf(line, sizeof(line), "%s: %s: ", program, level_names[level]);
	body = vsnprintf(line + prefix, sizeof(line) - prefix - 1, fmt, ap);
	va_end(ap);
	if (body < 0)
		return;
	/* A message longer than the buffer is cut, but still ends its line. */
	size_t len = (size_t)prefix + (size_t)body;
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	(void)!write(STDERR_FILENO, line, len);
}
