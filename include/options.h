/*
 * options.h - the daemon's command line.
 *
 * artifactfs [options] STORE MOUNTPOINT: our own -o options are taken out
 * of the argument list here; what remains (FUSE's and the kernel's mount
 * options) is left for libfuse, which rejects what it does not know.
 */
#ifndef ARTIFACTFS_OPTIONS_H
#define ARTIFACTFS_OPTIONS_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <sys/types.h>

#include "log.h"
#include "promote_options.h"
#include "watch.h"

/* Beyond this, read-ahead only fills memory no reader asked for. */
#define READ_AHEAD_KB_MAX 65536
/* -o max_cached_files below this would drop files as soon as they are looked up. */
#define MAX_CACHED_FILES_MIN 16

struct options {
	char *store;		/* STORE, as given */
	char *client;		/* -o client=ID or --client=ID; NULL with all_tenants */
	int all_tenants;	/* -o all_tenants: every tenant in /<client>/ */
	char *index_path;	/* -o index=PATH, NULL for the default */
	unsigned int uid, gid;	/* -o uid=N,gid=N */
	int uid_set, gid_set;
	int show_expired;	/* -o show_expired */
	int ready_fd;		/* -o ready_fd=N, -1 when not given */
	double cache_timeout;	/* -o cache_timeout=SECONDS */
	unsigned long max_cached_files;	/* -o max_cached_files=N */
	unsigned int read_ahead_kb;	/* -o read_ahead_kb=N, 0: the kernel's */
	char *watch_name;	/* -o watch=auto|inotify|poll */
	enum watch_mode watch;	/* that, parsed (auto by default) */
	unsigned int poll_ms;	/* -o poll_ms=N: the store polled every N ms */
	char *passthrough_name;	/* -o passthrough=auto|off */
	bool passthrough;	/* that, parsed: auto (true, the default) or off */
	char *log_level_name;	/* -o loglevel=error|warning|info|debug */
	enum log_level log_level;	/* that, parsed (info; debug with -d) */
	/*
	 * promote/ and deletion: -o retention=, file_mode=, temporary_idle=,
	 * quota_bytes=, quota_files= go straight in; the strings below,
	 * owned here, stand in for its defaults once given.
	 */
	struct promote_options promote;
	char *agent_id;		/* -o agent=ID */
	char *workflow_id;	/* -o workflow=ID */
	char *user_directive;	/* -o directive=TEXT */
	char *only_run;		/* -o run=RUN */
	int read_only;		/* -o ro: no promote/, no deletion */
	int no_delete;		/* -o nodelete */
	struct fuse_cmdline_opts fuse;	/* -f, -d, -s, -h, -V, MOUNTPOINT, ... */
};

/*
 * Parses argv into *opts, leaving in *args what libfuse must see.
 * Returns 0 when the daemon should go on, 1 when it is done (help or
 * version printed), or -EINVAL after printing one line saying what is
 * wrong.  Release with options_release() in every case.
 */
int options_parse(struct fuse_args *args, struct options *opts);
void options_release(struct options *opts);

/* Prints the usage text, our options and FUSE's, to stdout. */
void options_print_help(const char *program);

#endif
