/*
 * log.h - the one place for messages to operators, of the daemon and
 * of artifactctl.
 *
 * Every failure that reaches a user gets exactly one line here, saying what
 * failed, where (tenant, run, file) and why.  Lines go to stderr until
 * log_use_syslog() is called (after daemonizing), then to syslog.
 */
#ifndef ARTIFACTFS_LOG_H
#define ARTIFACTFS_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

/*
 * Messages above this level are dropped; LOG_LEVEL_INFO unless set.  Any
 * thread may set it (a reload does) while others log.
 */
void log_set_level(enum log_level level);

/* The level named "error", "warning", "info" or "debug".  Returns 0 or -EINVAL. */
int log_parse_level(const char *name, enum log_level *level);

/* Reconnects to syslog, when lines go there (a SIGHUP asks for it). */
void log_reopen(void);

/* The name lines start with ("artifactfs"; the admin tool's own). Static string. */
void log_set_program(const char *name);

/* Sends every later message to syslog (ident "artifactfs") instead of stderr. */
void log_use_syslog(void);

void log_message(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) log_message(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_message(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_message(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_message(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
