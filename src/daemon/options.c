/*
 * options.c - parsing and checking the command line.
 *
 * Everything that can be checked before mounting is checked here, so a
 * mistake costs one line on stderr and leaves nothing mounted.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "names.h"
#include "options.h"

enum { KEY_READ_ONLY = 1 };

#define OPTION(template, field, value) \
	{ template, offsetof(struct options, field), value }

static const struct fuse_opt option_spec[] = {
	OPTION("client=%s", client, 0),
	OPTION("--client=%s", client, 0),
	OPTION("all_tenants", all_tenants, 1),
	OPTION("index=%s", index_path, 0),
	OPTION("uid=%u", uid, 0),
	OPTION("uid=", uid_set, 1),
	OPTION("gid=%u", gid, 0),
	OPTION("gid=", gid_set, 1),
	OPTION("show_expired", show_expired, 1),
	OPTION("ready_fd=%d", ready_fd, 0),
	OPTION("cache_timeout=%lf", cache_timeout, 0),
	OPTION("max_cached_files=%lu", max_cached_files, 0),
	OPTION("read_ahead_kb=%u", read_ahead_kb, 0),
	OPTION("loglevel=%s", log_level_name, 0),
	OPTION("passthrough=%s", passthrough_name, 0),
	OPTION("watch=%s", watch_name, 0),
	OPTION("poll_ms=%u", poll_ms, 0),
	OPTION("agent=%s", agent_id, 0),
	OPTION("workflow=%s", workflow_id, 0),
	OPTION("directive=%s", user_directive, 0),
	OPTION("retention=%u", promote.retention_days, 0),
	OPTION("file_mode=%o", promote.file_mode, 0),
	OPTION("temporary_idle=%u", promote.temporary_idle, 0),
	OPTION("quota_bytes=%llu", promote.quota_bytes, 0),
	OPTION("quota_files=%llu", promote.quota_files, 0),
	OPTION("run=%s", only_run, 0),
	OPTION("nodelete", no_delete, 1),
	/* Kept for the kernel as well: it then refuses every write itself. */
	FUSE_OPT_KEY("ro", KEY_READ_ONLY),
	FUSE_OPT_END
};

/*
 * Takes STORE, the first positional argument.  MOUNTPOINT is left for
 * libfuse, but checked here first so that a bad one gets our message.
 */
static int take_positional(void *data, const char *arg, int key, struct fuse_args *args)
{
	struct options *opts = data;
	struct stat st;

	if (key == KEY_READ_ONLY)
		opts->read_only = 1;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (!opts->store) {
		opts->store = strdup(arg);
		return opts->store ? 0 : -1;
	}
	/*
	 * mount.fuse3 -o drop_privileges mounts first and hands over the FUSE
	 * connection as /dev/fd/N, which libfuse serves without mounting.
	 */
	if (strncmp(arg, "/dev/fd/", strlen("/dev/fd/")) == 0)
		return 1;
	if (stat(arg, &st) < 0) {
		log_error("cannot mount on '%s': %s", arg, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("cannot mount on '%s': not a directory", arg);
		return -1;
	}
	return 1;
}

void options_print_help(const char *program)
{
	printf("usage: %s [options] STORE MOUNTPOINT\n"
	       "\n"
	       "Mounts one tenant's view of a RARO artifact store, or every tenant's.\n"
	       "\n"
	       "artifactfs options:\n"
	       "    -o client=ID           the tenant whose runs are shown at the root\n"
	       "                           (also --client=ID)\n"
	       "    -o all_tenants         instead, every tenant in /<client>/, each with\n"
	       "                           its own promote/ (bind-mount one per sandbox)\n"
	       "    -o index=PATH          SQLite index (default STORE/.artifactfs/index.db)\n"
	       "    -o uid=N,gid=N         owner shown for every entry (default: the\n"
	       "                           user who mounts; with all_tenants, the owner\n"
	       "                           of each tenant's directory in the store)\n"
	       "    -o show_expired        also show runs past their expires_at\n"
	       "    -o cache_timeout=S     kernel attribute and entry cache, seconds\n"
	       "                           (default 3600; changes are pushed out at once)\n"
	       "    -o max_cached_files=N  files the kernel may keep looked up before the\n"
	       "                           least recently used are dropped (default 200000,\n"
	       "                           at least 16)\n"
	       "    -o read_ahead_kb=N     sequential read-ahead of the mount, KiB (default\n"
	       "                           4096; 0 keeps the kernel's 128)\n"
	       "    -o ready_fd=N          write \"ready\\n\" to fd N once mounted\n"
	       "    -o loglevel=LEVEL      error, warning, info (default) or debug; SIGUSR1\n"
	       "                           and SIGUSR2 turn it up and down while mounted\n"
	       "    -o passthrough=MODE    auto (default): the kernel reads artifacts from\n"
	       "                           the store itself (FUSE passthrough) where it and\n"
	       "                           the daemon can; off: every read through the daemon\n"
	       "    -o watch=MODE          how changes others make to the store are seen:\n"
	       "                           inotify (this host's), poll (every host's, by\n"
	       "                           polling), auto (default: poll on a network file\n"
	       "                           system, inotify otherwise)\n"
	       "    -o poll_ms=N           with watch=poll, the store is polled every N ms\n"
	       "                           (default 1000, 100 to 60000)\n"
	       "\n"
	       "promotion and deletion:\n"
	       "    -o agent=ID            agent_id of direct uploads (default artifactfs)\n"
	       "    -o workflow=ID         workflow_id of runs made by uploads (default \"\")\n"
	       "    -o directive=TEXT      user_directive of runs made by uploads (default \"\")\n"
	       "    -o retention=DAYS      expires_at = created_at + DAYS (default 7)\n"
	       "    -o file_mode=MODE      mode of promoted files, octal (default 0644)\n"
	       "    -o temporary_idle=S    an unused temporary file in promote/ goes after S\n"
	       "                           seconds (default 3600)\n"
	       "    -o quota_bytes=N       bytes the tenant may store (default: no limit)\n"
	       "    -o quota_files=N       files the tenant may store (default: no limit)\n"
	       "    -o run=RUN             promote/ serves this run only\n"
	       "    -o nodelete            deleting artifacts and runs fails with EPERM\n"
	       "    -o ro                  no promote/, no deletion\n"
	       "\n"
	       "request threads (these replace libfuse's meaning below, except with\n"
	       "clone_fd, which runs libfuse's own loop):\n"
	       "    -o max_threads=N       threads serving requests at once (default 10)\n"
	       "    -o max_idle_threads=N  threads waiting in the kernel for the next\n"
	       "                           request (default 2); the others wait in the\n"
	       "                           daemon, and none ends before the mount\n"
	       "\n", program);
	fuse_cmdline_help();
	fuse_lowlevel_help();
}

/* How the daemon spells the promotion options, in its messages. */
static const char *const promote_option_names[PROMOTE_OPTION_COUNT] = {
	[PROMOTE_OPTION_AGENT] = "-o agent=",
	[PROMOTE_OPTION_WORKFLOW] = "-o workflow=",
	[PROMOTE_OPTION_DIRECTIVE] = "-o directive=",
	[PROMOTE_OPTION_RETENTION] = "retention",
	[PROMOTE_OPTION_FILE_MODE] = "file_mode",
	[PROMOTE_OPTION_RUN] = "-o run=",
	[PROMOTE_OPTION_TEMPORARY_IDLE] = "temporary_idle",
};

int options_parse(struct fuse_args *args, struct options *opts)
{
	char problem[256];
	const char *reason;

	memset(opts, 0, sizeof(*opts));
	opts->ready_fd = -1;
	opts->cache_timeout = 3600;
	opts->max_cached_files = 200000;
	opts->read_ahead_kb = 4096;
	promote_options_init(&opts->promote);
	opts->log_level = LOG_LEVEL_INFO;
	opts->passthrough = true;
	opts->watch = WATCH_AUTO;
	opts->poll_ms = WATCH_POLL_MS_DEFAULT;
	if (fuse_opt_parse(args, opts, option_spec, take_positional) < 0)
		return -EINVAL;	/* libfuse said why */
	if (fuse_parse_cmdline(args, &opts->fuse) < 0)
		return -EINVAL;

	if (opts->fuse.show_help) {
		options_print_help(args->argv[0]);
		return 1;
	}
	if (opts->fuse.show_version) {
		printf("artifactfs version %s\n", ARTIFACTFS_VERSION);
		fuse_lowlevel_version();
		return 1;
	}
	if (opts->log_level_name && log_parse_level(opts->log_level_name, &opts->log_level) < 0) {
		log_error("invalid loglevel '%s': use error, warning, info or debug",
			  opts->log_level_name);
		return -EINVAL;
	}
	if (opts->fuse.debug)
		opts->log_level = LOG_LEVEL_DEBUG;
	if (opts->passthrough_name) {
		if (strcmp(opts->passthrough_name, "auto") != 0 &&
		    strcmp(opts->passthrough_name, "off") != 0) {
			log_error("invalid passthrough '%s': use auto or off", opts->passthrough_name);
			return -EINVAL;
		}
		opts->passthrough = strcmp(opts->passthrough_name, "auto") == 0;
	}
	if (opts->watch_name && watch_parse_mode(opts->watch_name, &opts->watch) < 0) {
		log_error("invalid watch '%s': use auto, inotify or poll", opts->watch_name);
		return -EINVAL;
	}
	if (opts->poll_ms < WATCH_POLL_MS_MIN || opts->poll_ms > WATCH_POLL_MS_MAX) {
		log_error("invalid poll_ms %u: use %u to %u", opts->poll_ms, WATCH_POLL_MS_MIN,
			  WATCH_POLL_MS_MAX);
		return -EINVAL;
	}
	if (!opts->store) {
		log_error("no STORE given; usage: artifactfs [options] STORE MOUNTPOINT");
		return -EINVAL;
	}
	if (!opts->fuse.mountpoint) {
		log_error("no MOUNTPOINT given; usage: artifactfs [options] STORE MOUNTPOINT");
		return -EINVAL;
	}
	if (!opts->client && !opts->all_tenants) {
		log_error("no client id given: use -o client=ID (or -o all_tenants)");
		return -EINVAL;
	}
	if (opts->client && opts->all_tenants) {
		log_error("-o client=%s and -o all_tenants exclude each other: one tenant "
			  "at the root, or every tenant in a directory of its own", opts->client);
		return -EINVAL;
	}
	if (opts->only_run && opts->all_tenants) {
		log_error("-o run=%s serves one run of one tenant: it needs -o client=ID, "
			  "not -o all_tenants", opts->only_run);
		return -EINVAL;
	}
	if (opts->client && names_check_id(opts->client, &reason) < 0) {
		log_error("invalid client id '%s': it %s", opts->client, reason);
		return -EINVAL;
	}
	if (opts->index_path && !*opts->index_path) {
		log_error("invalid index path: it is empty");
		return -EINVAL;
	}
	if (!(opts->cache_timeout >= 0 && opts->cache_timeout <= 86400 * 365)) {
		log_error("invalid cache_timeout %g: use 0 to 31536000 seconds",
			  opts->cache_timeout);
		return -EINVAL;
	}
	if (opts->max_cached_files < MAX_CACHED_FILES_MIN) {
		log_error("invalid max_cached_files %lu: use at least %u", opts->max_cached_files,
			  MAX_CACHED_FILES_MIN);
		return -EINVAL;
	}
	if (opts->read_ahead_kb > READ_AHEAD_KB_MAX) {
		log_error("invalid read_ahead_kb %u: use 0 to %u", opts->read_ahead_kb,
			  READ_AHEAD_KB_MAX);
		return -EINVAL;
	}
	/* The strings fuse_opt allocated stand in for the defaults. */
	if (opts->agent_id)
		opts->promote.agent_id = opts->agent_id;
	if (opts->workflow_id)
		opts->promote.workflow_id = opts->workflow_id;
	if (opts->user_directive)
		opts->promote.user_directive = opts->user_directive;
	opts->promote.only_run = opts->only_run;
	opts->promote.no_delete = opts->no_delete;
	if (promote_options_validate(&opts->promote, promote_option_names, problem,
				     sizeof(problem)) < 0) {
		log_error("%s", problem);
		return -EINVAL;
	}
	if (!opts->uid_set)
		opts->uid = getuid();
	if (!opts->gid_set)
		opts->gid = getgid();
	return 0;
}

void options_release(struct options *opts)
{
	free(opts->store);
	free(opts->client);
	free(opts->index_path);
	free(opts->log_level_name);
	free(opts->passthrough_name);
	free(opts->watch_name);
	free(opts->agent_id);
	free(opts->workflow_id);
	free(opts->user_directive);
	free(opts->only_run);
	free(opts->fuse.mountpoint);
	memset(opts, 0, sizeof(*opts));
}
