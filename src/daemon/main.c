/*
 * main.c - the daemon's life: options, index, mount, loop, shutdown.
 *
 * Order matters.  Everything that can fail on bad input (options, store,
 * index, the first reconcile) happens before mounting, so a mistake leaves
 * nothing mounted.  Threads start only after daemonizing (fork keeps only
 * the calling thread).  Readiness is announced last, once the kernel can
 * reach the filesystem and the index is current.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "index.h"
#include "inode.h"
#include "log.h"
#include "loop.h"
#include "options.h"
#include "promote.h"
#include "reload.h"
#include "service.h"
#include "store.h"
#include "tenant.h"
#include "view.h"
#include "watch.h"

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *field)
{
	char *in = field, *out = field;

	while (*in) {
		if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' &&
		    in[2] <= '7' && in[3] >= '0' && in[3] <= '7') {
			*out++ = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
			in += 4;
		} else {
			*out++ = *in++;
		}
	}
	*out = '\0';
}

/*
 * Finds the "MAJOR:MINOR" of what is mounted on real_mountpoint (an
 * absolute path without symlinks, resolved before the mount; the last
 * mount there is ours, just made) from /proc/self/mountinfo.  Not stat()
 * or realpath() now: they may ask our own file system, whose loop is not
 * running yet.  Leaves bdi empty when it finds nothing.
 */
static void find_mount_device(const char *real_mountpoint, char *bdi, size_t size)
{
	char *line = NULL;
	size_t capacity = 0;
	FILE *mounts = fopen("/proc/self/mountinfo", "re");

	bdi[0] = '\0';
	while (real_mountpoint && mounts && getline(&line, &capacity, mounts) > 0) {
		char device[32], point[PATH_MAX];

		/* mount id, parent id, MAJOR:MINOR, root, mount point, ... */
		if (sscanf(line, "%*u %*u %31s %*s %4095s", device, point) != 2)
			continue;
		unescape_mountinfo(point);
		if (strcmp(point, real_mountpoint) == 0)
			snprintf(bdi, size, "%s", device);
	}
	free(line);
	if (mounts)
		fclose(mounts);
}


/*
 * One fd per run the kernel holds: lift the soft limit to the hard one so
 * a large store does not run out.
 */
static void raise_fd_limit(void)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
		limit.rlim_cur = limit.rlim_max;
		setrlimit(RLIMIT_NOFILE, &limit);
	}
}

static void announce_ready(int fd)
{
	static const char ready[] = "ready\n";

	if (fd < 0)
		return;
	if (write(fd, ready, sizeof(ready) - 1) != (ssize_t)sizeof(ready) - 1)
		log_warning("cannot write the readiness signal to fd %d: %s", fd, strerror(errno));
	close(fd);
}

/*
 * Why FUSE passthrough cannot be asked for, or NULL when it can (the
 * kernel then says in INIT whether it offers it).  Registering a backing
 * file takes CAP_SYS_ADMIN, so it is checked here, at start, not at the
 * first open.
 */
static const char *passthrough_off_reason(const struct options *opts)
{
#ifdef HAVE_PASSTHROUGH
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];

	if (!opts->passthrough)
		return "is off (-o passthrough=off)";
	if (syscall(SYS_capget, &header, caps) < 0 ||
	    !(caps[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective & CAP_TO_MASK(CAP_SYS_ADMIN)))
		return "needs CAP_SYS_ADMIN, which the daemon lacks";
	return NULL;
#else
	return "is not built in (libfuse older than 3.16, or -Dpassthrough=disabled)";
#endif
}

static void reload_tenant(void *ctx, struct tenant *tenant)
{
	if (tenant->promoter)
		promote_reload(tenant->promoter);
}

/* SIGHUP: every promoter reads the MIME table again. */
static void reload_config(void *ctx)
{
	tenant_for_each(ctx, reload_tenant, NULL);
}

/*
 * Serves requests until the mount ends.  Returns 0 when unmounted, the
 * number of the signal that stopped it (SIGTERM, SIGINT), LOOP_STOPPED
 * when a signal did and the loop cannot tell which, or -errno.
 */
static int run_loop(struct fuse_session *session, const struct options *opts)
{
	struct fuse_loop_config *config;
	int ret;

	if (opts->fuse.singlethread)
		return fuse_session_loop(session);
	/* libfuse's own loop only for what ours does not do. */
	if (!opts->fuse.clone_fd)
		return loop_run(session, opts->fuse.max_threads != UINT_MAX ?
				opts->fuse.max_threads : LOOP_THREADS_DEFAULT,
				opts->fuse.max_idle_threads != UINT_MAX ?
				opts->fuse.max_idle_threads : LOOP_READING_DEFAULT);
	config = fuse_loop_cfg_create();
	if (!config)
		return -ENOMEM;
	fuse_loop_cfg_set_clone_fd(config, opts->fuse.clone_fd);
	/* UINT_MAX means "not given": libfuse's defaults then apply. */
	if (opts->fuse.max_threads != UINT_MAX)
		fuse_loop_cfg_set_max_threads(config, opts->fuse.max_threads);
	if (opts->fuse.max_idle_threads != UINT_MAX)
		fuse_loop_cfg_set_idle_threads(config, opts->fuse.max_idle_threads);
	ret = fuse_session_loop_mt(session, config);
	fuse_loop_cfg_destroy(config);
	return ret;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct store store = { .root_fd = -1 };
	struct fuse_session *session = NULL;
	struct index *index = NULL;
	struct watch *watch = NULL;
	struct tenant_set *tenants = NULL;
	struct tenant *single_tenant = NULL;
	struct reload *reload = NULL;
	struct tenant_config tenancy;
	struct options opts;
	struct fs fs = { 0 };
	uint8_t inode_key[INO_CIPHER_KEY_SIZE];
	char *index_path = NULL, *real_mountpoint = NULL, whom[NAMES_ID_MAX + 16];
	bool mounted = false;
	int ret, status = EXIT_FAILURE;

	ret = options_parse(&args, &opts);
	if (ret != 0) {
		status = ret > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
		goto out;
	}
	log_set_level(opts.log_level);
	raise_fd_limit();
	/* Before any thread starts: only the reload thread may take them. */
	if (reload_block_signals() < 0)
		goto out;

	if (store_open(opts.store, &store) < 0)
		goto out;
	index_path = store_resolve_index_path(&store, opts.index_path);
	if (!index_path || index_open(index_path, &index) < 0)
		goto out;

	if (store_load_key(&store, STORE_INODE_KEY_FILE, inode_key, sizeof(inode_key)) < 0)
		goto out;
	tenancy = (struct tenant_config){
		.store = &store,
		.index = index,
		.inode_key = inode_key,
		.promote = opts.read_only ? NULL : &opts.promote,
		.show_expired = opts.show_expired,
		.all_tenants = opts.all_tenants,
		.owner_from_store = opts.all_tenants && !opts.uid_set && !opts.gid_set,
		.uid = opts.uid,
		.gid = opts.gid,
	};
	if (tenant_set_new(&tenancy, &tenants) < 0) {
		log_error("out of memory");
		goto out;
	}
	/* All tenants: each is made (indexed, its staging recovered) when first asked for. */
	if (!opts.all_tenants && tenant_get(tenants, opts.client, NULL, &single_tenant) < 0)
		goto out;
	if (opts.all_tenants)
		snprintf(whom, sizeof(whom), "every tenant");
	else
		snprintf(whom, sizeof(whom), "client %s", opts.client);

	fs = (struct fs){
		.tenants = tenants,
		.single_tenant = single_tenant,
		.store = &store,
		.uid = opts.uid,
		.gid = opts.gid,
		.timeout = opts.cache_timeout,
		.keep_cache = opts.cache_timeout > 0,
		.read_ahead_kb = opts.read_ahead_kb,
		.passthrough_off = passthrough_off_reason(&opts),
		.prune_in_requests = !opts.fuse.singlethread && opts.fuse.max_threads >= 2,
	};
	clock_gettime(CLOCK_REALTIME, &fs.mounted_at);
	fs_size_requests(&fs);
	ino_cipher_init(&fs.ino_cipher, inode_key);
	pthread_mutex_init(&fs.open_lock, NULL);
	pthread_mutex_init(&fs.backing_lock, NULL);
	if (inode_table_new(opts.max_cached_files, single_tenant, &fs.inodes) < 0) {
		log_error("out of memory");
		goto out;
	}

	session = fuse_session_new(&args, &fs_operations, sizeof(fs_operations), &fs);
	if (!session)
		goto out;	/* libfuse said why (an unknown option, usually) */
	fs.session = session;
	if (fuse_set_signal_handlers(session) < 0)
		goto out;
	real_mountpoint = realpath(opts.fuse.mountpoint, NULL);
	if (fuse_session_mount(session, opts.fuse.mountpoint) < 0) {
		log_error("cannot mount %s on %s", whom, opts.fuse.mountpoint);
		goto out;
	}
	mounted = true;
	find_mount_device(real_mountpoint, fs.bdi, sizeof(fs.bdi));
	if (fuse_daemonize(opts.fuse.foreground) < 0)
		goto out;
	if (!opts.fuse.foreground)
		log_use_syslog();

	if (watch_start(&store, opts.client, opts.watch, opts.poll_ms, &fs_watch_handler, &fs,
			&watch) < 0 ||
	    fs_start_notifier(&fs) < 0 ||
	    reload_start(reload_config, tenants, opts.log_level, &reload) < 0)
		goto out;
	/* Catch what changed between the first reconcile and the watch. */
	tenant_reconcile_all(tenants);
	announce_ready(opts.ready_fd);
	opts.ready_fd = -1;
	service_notify_ready(whom, store.path, opts.fuse.mountpoint);
	log_info("serving %s of %s on %s", whom, store.path, opts.fuse.mountpoint);

	ret = run_loop(session, &opts);
	service_notify_stopping();
	/*
	 * A stop asked for by a signal is a success (systemd would restart a
	 * unit that exits 1 on "systemctl stop").
	 */
	status = ret == 0 || ret == SIGTERM || ret == SIGINT || ret == LOOP_STOPPED ?
		 EXIT_SUCCESS : EXIT_FAILURE;
	if (ret == SIGTERM || ret == SIGINT || ret == LOOP_STOPPED)
		log_info("stopping on %s: unmounting", ret == SIGTERM ? "SIGTERM" :
			 ret == SIGINT ? "SIGINT" : "a signal");
out:
	reload_stop(reload);
	fs_stop_notifier(&fs);
	watch_stop(watch);
	if (mounted)
		fuse_session_unmount(session);
	if (session) {
		fuse_remove_signal_handlers(session);
		fuse_session_destroy(session);
	}
	if (opts.ready_fd >= 0)
		close(opts.ready_fd);	/* closed unwritten: startup failed */
	inode_table_free(fs.inodes);
	fs_close_open_files(&fs);
	tenant_set_free(tenants);
	index_close(index);
	free(index_path);
	free(real_mountpoint);
	store_close(&store);
	options_release(&opts);
	fuse_opt_free_args(&args);
	return status;
}
