/*
 * view.h - one tenant's view of the store, and its index.
 *
 * A struct view binds a client id to the store and the index; it decides
 * which runs the tenant sees and keeps the index in step with the store.
 * It is FUSE-free: the daemon, the admin tools and the tests use it alike,
 * and a daemon serving several tenants holds one view per tenant.
 */
#ifndef ARTIFACTFS_VIEW_H
#define ARTIFACTFS_VIEW_H

#include <stdbool.h>
#include <sys/stat.h>

#include "index.h"
#include "store.h"

struct view {
	const char *client;	/* valid by names_check_id() */
	struct store *store;
	struct index *index;
	bool show_expired;	/* also show runs past their expires_at */
};

/*
 * Brings the index up to date with the tenant's directory: every run dir
 * whose stamp (see index.h) changed is parsed again, runs that vanished
 * are dropped.  A malformed metadata.json costs one warning, never the run.
 * Returns 0, or -errno when the tenant directory cannot be listed or the
 * index cannot be written (logged).
 */
int view_reconcile(struct view *view);

/* How view_sync_run() and view_index_run() go about a run. */
enum view_sync_flags {
	VIEW_SYNC_FORCE = 1,	/* parse it even if its stamp is unchanged */
	VIEW_SYNC_WAIT = 2,	/* wait out a metadata.json caught half written */
};

/*
 * Re-indexes one run after a change was noticed: parses it again when
 * VIEW_SYNC_FORCE is set or its stamp changed, drops it when it is gone.
 * Reads under the run's lock, shared (store_lock_run()): promoters take
 * it exclusively.  A metadata.json caught half written (see metafile.h) is
 * waited for with VIEW_SYNC_WAIT; without, the index stays as it was and
 * the call returns -EAGAIN: call again once it has settled.  One that
 * stays unparsable keeps the metadata the index last had for the run.
 * *incomplete (may be NULL) is set when the run was parsed and holds a
 * regular file without an entry, or duplicate entries: see
 * promote_repair_run().
 * Returns 0, -EAGAIN, or -errno (logged).
 */
int view_sync_run(struct view *view, const char *run, unsigned int flags, bool *incomplete);

/* The regular files of a run dir, metadata.json excluded. */
struct view_file_list {
	struct index_file *files;	/* filenames malloc'd */
	size_t count, capacity;
};

/*
 * Lists the regular files of run_fd (O_RDONLY or O_PATH), never following
 * a symlink.  Returns 0 or -errno; release *list after either.
 */
int view_list_run_files(int run_fd, struct view_file_list *list);
void view_file_list_release(struct view_file_list *list);

/* Reads a run dir's stamp (see index.h) from its fd. */
void view_stamp_run(int run_fd, struct index_run_stamp *stamp);

/*
 * view_sync_run() for a caller that already holds run_fd (O_RDONLY) and
 * the run's lock, as a promoter does while it commits.
 */
int view_index_run(struct view *view, const char *run, int run_fd, unsigned int flags,
		   bool *incomplete);

/*
 * Whether run is shown: a valid, unreserved run name that has not
 * expired (or expired runs are shown).
 */
bool view_run_visible(struct view *view, const char *run);

/*
 * Opens the run dir of a visible run, O_PATH, and stats it.
 * Returns the fd, or -ENOENT when the run is not visible or not a
 * directory, or another -errno.
 */
int view_open_run(struct view *view, const char *run, struct stat *st);

#endif
