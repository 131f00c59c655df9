/*
 * fs_notify.c - what keeps the kernel's caches true and the daemon's
 * memory bounded: the watcher's handlers, which turn store changes into
 * cache invalidations, and the pruner, which asks the kernel to forget
 * the least recently used files beyond max_files.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fs_internal.h"
#include "log.h"
#include "metafile.h"

/* --- change notifications from the watcher ------------------------------------ */

static void invalidate_entry(struct fs *fs, fuse_ino_t parent, const char *name)
{
	/* -ENOENT only means the kernel had nothing cached. */
	fuse_lowlevel_notify_inval_entry(fs->session, parent, name, strlen(name));
}

static void invalidate_inode(struct fs *fs, fuse_ino_t nodeid)
{
	fuse_lowlevel_notify_inval_inode(fs->session, nodeid, 0, 0);
}

/*
 * Holds the inode of client's directory (the root for a single tenant),
 * or NULL.  The notifications below name inodes the daemon holds (inode.h
 * says why), and never with the table locked: the kernel may call us back
 * (FORGET) while we notify.
 */
static struct inode *hold_tenant_dir(struct fs *fs, const char *client)
{
	struct inode *root = inode_root(fs->inodes);

	if (!fs->single_tenant)
		return inode_hold_child(fs->inodes, root, client);
	if (strcmp(client, fs->single_tenant->client) != 0)
		return NULL;
	inode_ref(fs->inodes, root);
	return root;
}

void fs_notify_file(void *ctx, const char *client, const char *run, const char *file,
		    bool entry)
{
	struct fs *fs = ctx;
	struct inode *tenant_inode, *run_inode, *file_inode;

	tenant_inode = hold_tenant_dir(fs, client);
	if (!tenant_inode)
		return;	/* nothing below an unknown tenant can be cached */
	run_inode = inode_hold_child(fs->inodes, tenant_inode, run);
	inode_release(fs->inodes, tenant_inode);	/* the run holds it */
	if (!run_inode)
		return;	/* nothing below an unknown run can be cached */
	file_inode = inode_hold_child(fs->inodes, run_inode, file);
	if (file_inode) {
		invalidate_inode(fs, inode_to_nodeid(file_inode));	/* data and attributes */
		inode_release(fs->inodes, file_inode);
	}
	if (entry) {
		invalidate_entry(fs, inode_to_nodeid(run_inode), file);
		invalidate_inode(fs, inode_to_nodeid(run_inode));	/* listing and mtime */
	}
	inode_release(fs->inodes, run_inode);
}

void fs_notify_run(void *ctx, const char *client, const char *run)
{
	struct fs *fs = ctx;
	struct inode *tenant_inode = hold_tenant_dir(fs, client), *run_inode;

	if (!tenant_inode)
		return;
	run_inode = inode_hold_child(fs->inodes, tenant_inode, run);
	invalidate_entry(fs, inode_to_nodeid(tenant_inode), run);
	if (run_inode) {
		invalidate_inode(fs, inode_to_nodeid(run_inode));
		inode_release(fs->inodes, run_inode);
	}
	invalidate_inode(fs, inode_to_nodeid(tenant_inode));	/* listing and link count */
	inode_release(fs->inodes, tenant_inode);
}

/* Drops every cached entry and attribute below dir, then dir's own. */
static void invalidate_below(struct fs *fs, struct inode *dir, int depth)
{
	struct inode **children = NULL;
	size_t count = 0;

	/* Best effort without memory: the cache then lives out its timeout. */
	if (inode_hold_children(fs->inodes, dir, &children, &count) < 0)
		count = 0;
	for (size_t i = 0; i < count; i++) {
		if (depth > 0)
			invalidate_below(fs, children[i], depth - 1);
		else
			invalidate_inode(fs, inode_to_nodeid(children[i]));
		invalidate_entry(fs, inode_to_nodeid(dir), children[i]->name);
		inode_release(fs->inodes, children[i]);
	}
	free(children);
	invalidate_inode(fs, inode_to_nodeid(dir));
}

/*
 * Anything may have changed: drop every entry, attribute and page the
 * kernel holds (below the root: tenants with all_tenants, runs, files).
 */
static void invalidate_all(struct fs *fs)
{
	invalidate_below(fs, inode_root(fs->inodes), fs->single_tenant ? 1 : 2);
}

static void degrade(void *ctx)
{
	struct fs *fs = ctx;

	if (!atomic_exchange(&fs->degraded, true) && fs->timeout > 1.0)
		log_warning("client %s: store changes can no longer all be watched; "
			    "kernel caches now expire after 1 second",
			    fs->single_tenant ? fs->single_tenant->client : "(all tenants)");
	invalidate_all(fs);
}

/*
 * A tenant dir came or went, or events were lost: the index catches up
 * with the store (for tenants made so far: the others do when made), and
 * the kernel drops what it cached.
 */
static void notify_tenant(void *ctx, const char *client)
{
	struct fs *fs = ctx;
	struct inode *tenant_inode;
	struct tenant *tenant;

	if (!client) {
		tenant_reconcile_all(fs->tenants);
		invalidate_all(fs);
		return;
	}
	/* None is made for a change: a tenant is indexed when it is made. */
	tenant = tenant_find(fs->tenants, client);
	if (tenant)
		view_reconcile(&tenant->view);
	if (!fs->single_tenant) {
		invalidate_entry(fs, FUSE_ROOT_ID, client);
		invalidate_inode(fs, FUSE_ROOT_ID);	/* listing and link count */
	}
	tenant_inode = hold_tenant_dir(fs, client);
	if (tenant_inode) {
		invalidate_below(fs, tenant_inode, 1);
		inode_release(fs->inodes, tenant_inode);
	}
}

static unsigned int settle_run(void *ctx, const char *client, const char *run, bool content)
{
	struct fs *fs = ctx;
	struct tenant *tenant = tenant_find(fs->tenants, client);
	unsigned int again = 0;
	bool was_visible, incomplete;

	if (!tenant)
		return 0;	/* indexed when it is made */
	was_visible = view_run_visible(&tenant->view, run);
	/* A commit of ours already indexed what it did: its stamp then matches. */
	if (view_sync_run(&tenant->view, run, content ? VIEW_SYNC_FORCE : 0, &incomplete) ==
	    -EAGAIN)
		again = METAFILE_SETTLE_MS / 4;	/* caught half written: look again */
	else if (incomplete && tenant->promoter)
		again = promote_repair_run(tenant->promoter, run);
	/* A rewritten metadata.json may have moved the run's expiry. */
	if (view_run_visible(&tenant->view, run) != was_visible)
		fs_notify_run(fs, client, run);
	if (tenant->promoter)
		fs_promote_tidy_run(tenant, run);
	return again;
}

const struct watch_handler fs_watch_handler = {
	.tenant_changed = notify_tenant,
	.run_changed = fs_notify_run,
	.file_changed = fs_notify_file,
	.run_settled = settle_run,
	.degraded = degrade,
};

/* --- keeping the daemon's memory bounded -------------------------------------- */

#define PRUNE_BATCH 1024

/*
 * Asks the kernel to drop the dentries of the least recently used files
 * beyond the limit, a whole run at a time where the run has gone cold
 * (inode_collect_stale() says why).  It forgets those not in use, and the
 * inodes are freed.  Called with fs->pruner.round held.
 */
static void prune_round(struct fs *fs)
{
	struct inode *victims[PRUNE_BATCH];
	size_t n;

	do {
		n = inode_collect_stale(fs->inodes, victims, PRUNE_BATCH);
		for (size_t i = 0; i < n; i++) {
			invalidate_entry(fs, inode_to_nodeid(victims[i]->parent),
					 victims[i]->name);
			inode_release(fs->inodes, victims[i]);
		}
	} while (n == PRUNE_BATCH && !fs->pruner.stop);
}

/*
 * The pruner thread: prunes past the bound, where no OPENDIR came in time
 * (a listing of one run larger than the slack, lookups by name).  A
 * thread of its own: the kernel may be waiting on us (a lookup in that
 * very directory) while we notify it.
 */
static void *prune(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&fs->pruner.lock);
	while (!fs->pruner.stop) {
		if (!fs->pruner.pending) {
			pthread_cond_wait(&fs->pruner.wake, &fs->pruner.lock);
			continue;
		}
		fs->pruner.pending = false;
		pthread_mutex_unlock(&fs->pruner.lock);
		pthread_mutex_lock(&fs->pruner.round);
		prune_round(fs);
		pthread_mutex_unlock(&fs->pruner.round);
		pthread_mutex_lock(&fs->pruner.lock);
	}
	pthread_mutex_unlock(&fs->pruner.lock);
	return NULL;
}

void fs_prune_before_listing(struct fs *fs)
{
	if (!inode_near_limit(fs->inodes) || pthread_mutex_trylock(&fs->pruner.round) != 0)
		return;
	prune_round(fs);
	pthread_mutex_unlock(&fs->pruner.round);
}

void fs_wake_pruner(struct fs *fs)
{
	pthread_mutex_lock(&fs->pruner.lock);
	if (!fs->pruner.pending) {
		fs->pruner.pending = true;
		pthread_cond_signal(&fs->pruner.wake);
	}
	pthread_mutex_unlock(&fs->pruner.lock);
}

int fs_start_pruner(struct fs *fs)
{
	int ret;

	pthread_mutex_init(&fs->pruner.round, NULL);
	pthread_mutex_init(&fs->pruner.lock, NULL);
	pthread_cond_init(&fs->pruner.wake, NULL);
	ret = pthread_create(&fs->pruner.thread, NULL, prune, fs);
	if (ret) {
		log_error("cannot start the pruner thread: %s", strerror(ret));
		return -ret;
	}
	fs->pruner.running = true;
	return 0;
}

void fs_stop_pruner(struct fs *fs)
{
	if (!fs->pruner.running)
		return;
	pthread_mutex_lock(&fs->pruner.lock);
	fs->pruner.stop = true;
	pthread_cond_signal(&fs->pruner.wake);
	pthread_mutex_unlock(&fs->pruner.lock);
	pthread_join(fs->pruner.thread, NULL);
	fs->pruner.running = false;
}
