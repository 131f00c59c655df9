/*
 * fs_notify.c - what keeps the kernel's caches true and the daemon's
 * memory bounded: the watcher's handlers, which turn store changes into
 * cache invalidations, and the notifier thread, which shows promote/'s
 * landings for the requests and asks the kernel to forget the least
 * recently used files beyond max_files.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
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

/* --- the notifier thread ------------------------------------------------------- */

/*
 * How long a request waits for its landing to be shown
 * (fs_notify_landing()): long for the notifier, which takes microseconds
 * unless a listing of that directory waits for a request thread; then
 * the wait is what frees one, and short is better.
 */
#define LANDING_WAIT_NS 100000000L

#define PRUNE_BATCH 1024

/* A landing a request asked to show: the strings follow it, in text. */
struct landing_notice {
	struct landing_notice *next;
	const char *client, *run, *gone, *landed;	/* gone: NULL or a name renamed away */
	char text[];
};

static struct landing_notice *new_landing_notice(const char *client, const char *run,
						 const char *gone, const char *landed)
{
	const char *parts[] = { client, run, landed, gone ? gone : "" };
	size_t lengths[4], total = 0;
	struct landing_notice *notice;
	char *p;

	for (size_t i = 0; i < 4; i++) {
		lengths[i] = strlen(parts[i]) + 1;
		total += lengths[i];
	}
	notice = malloc(sizeof(*notice) + total);
	if (!notice)
		return NULL;
	p = notice->text;
	for (size_t i = 0; i < 4; i++) {
		memcpy(p, parts[i], lengths[i]);
		p += lengths[i];
	}
	notice->next = NULL;
	notice->client = notice->text;
	notice->run = notice->client + lengths[0];
	notice->landed = notice->run + lengths[1];
	notice->gone = gone ? notice->landed + lengths[2] : NULL;
	return notice;
}

/*
 * Notifies the kernel of a batch of landings, oldest first, and frees
 * them.  A run's own entry and listing once per batch: committers landing
 * into one run at once share that.
 */
static void show_landings(struct fs *fs, struct landing_notice *batch)
{
	for (struct landing_notice *notice = batch; notice; notice = notice->next) {
		bool run_shown = false;

		if (notice->gone)
			fs_notify_file(fs, notice->client, notice->run, notice->gone, true);
		fs_notify_file(fs, notice->client, notice->run, notice->landed, true);
		for (struct landing_notice *before = batch; before != notice && !run_shown;
		     before = before->next)
			run_shown = strcmp(before->run, notice->run) == 0 &&
				    strcmp(before->client, notice->client) == 0;
		if (!run_shown)
			fs_notify_run(fs, notice->client, notice->run);
	}
	while (batch) {
		struct landing_notice *next = batch->next;

		free(batch);
		batch = next;
	}
}

void fs_notify_landing(struct fs *fs, const char *client, const char *run, const char *gone,
		       const char *landed)
{
	struct fs_notifier *notifier = &fs->notifier;
	struct landing_notice *notice;
	struct timespec deadline;
	uint64_t ticket;

	if (!notifier->running)
		return;	/* no requests before the mount: the watcher shows it */
	notice = new_landing_notice(client, run, gone, landed);
	if (!notice)
		return;	/* the watcher shows it */
	deadline = clock_monotonic_after(LANDING_WAIT_NS);

	pthread_mutex_lock(&notifier->lock);
	*notifier->landings_tail = notice;
	notifier->landings_tail = &notice->next;
	ticket = ++notifier->landings_queued;
	pthread_cond_signal(&notifier->wake);
	while (notifier->landings_shown < ticket &&
	       pthread_cond_timedwait(&notifier->shown, &notifier->lock, &deadline) == 0)
		;
	pthread_mutex_unlock(&notifier->lock);
}

/*
 * Asks the kernel to drop the dentries of the least recently used files
 * beyond the limit, a whole run at a time where the run has gone cold
 * (inode_collect_stale() says why).  It forgets those not in use, and the
 * inodes are freed.  Called with fs->notifier.round held.
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
	} while (n == PRUNE_BATCH && !fs->notifier.stop);
}

/*
 * The notifier thread: shows landings, oldest first, and prunes past the
 * bound, where no OPENDIR came in time (a listing of one run larger than
 * the slack, lookups by name).  Landings first: a request waits for them.
 */
static void *notify(void *arg)
{
	struct fs *fs = arg;
	struct fs_notifier *notifier = &fs->notifier;

	pthread_mutex_lock(&notifier->lock);
	while (!notifier->stop) {
		if (notifier->landings) {
			struct landing_notice *batch = notifier->landings;
			uint64_t queued = notifier->landings_queued;

			notifier->landings = NULL;
			notifier->landings_tail = &notifier->landings;
			pthread_mutex_unlock(&notifier->lock);
			show_landings(fs, batch);
			pthread_mutex_lock(&notifier->lock);
			notifier->landings_shown = queued;
			pthread_cond_broadcast(&notifier->shown);
		} else if (notifier->prune_pending) {
			notifier->prune_pending = false;
			pthread_mutex_unlock(&notifier->lock);
			pthread_mutex_lock(&notifier->round);
			prune_round(fs);
			pthread_mutex_unlock(&notifier->round);
			pthread_mutex_lock(&notifier->lock);
		} else {
			pthread_cond_wait(&notifier->wake, &notifier->lock);
		}
	}
	pthread_mutex_unlock(&notifier->lock);
	return NULL;
}

void fs_prune_before_listing(struct fs *fs)
{
	if (!fs->prune_in_requests || !inode_near_limit(fs->inodes) ||
	    pthread_mutex_trylock(&fs->notifier.round) != 0)
		return;
	prune_round(fs);
	pthread_mutex_unlock(&fs->notifier.round);
}

void fs_ask_to_prune(struct fs *fs)
{
	struct fs_notifier *notifier = &fs->notifier;

	pthread_mutex_lock(&notifier->lock);
	if (!notifier->prune_pending) {
		notifier->prune_pending = true;
		pthread_cond_signal(&notifier->wake);
	}
	pthread_mutex_unlock(&notifier->lock);
}

int fs_start_notifier(struct fs *fs)
{
	struct fs_notifier *notifier = &fs->notifier;
	int ret;

	pthread_mutex_init(&notifier->round, NULL);
	pthread_mutex_init(&notifier->lock, NULL);
	pthread_cond_init(&notifier->wake, NULL);
	clock_cond_init_monotonic(&notifier->shown);
	notifier->landings_tail = &notifier->landings;
	ret = pthread_create(&notifier->thread, NULL, notify, fs);
	if (ret) {
		log_error("cannot start the notifier thread: %s", strerror(ret));
		return -ret;
	}
	notifier->running = true;
	return 0;
}

/* After the session: no request waits for a landing any more. */
void fs_stop_notifier(struct fs *fs)
{
	struct fs_notifier *notifier = &fs->notifier;
	struct landing_notice *left;

	if (!notifier->running)
		return;
	pthread_mutex_lock(&notifier->lock);
	notifier->stop = true;
	pthread_cond_signal(&notifier->wake);
	pthread_mutex_unlock(&notifier->lock);
	pthread_join(notifier->thread, NULL);
	notifier->running = false;
	while ((left = notifier->landings)) {
		notifier->landings = left->next;
		free(left);
	}
}
