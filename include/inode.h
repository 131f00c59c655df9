/*
 * inode.h - the daemon's inodes: what each FUSE node id stands for.
 *
 * A node id is the address of a struct inode (FUSE_ROOT_ID for the root),
 * valid from the lookup that created it until the kernel forgets it.  An
 * inode's number is a different thing: for runs and files it is the
 * backing file's own st_ino, which identifies it here; the kernel is
 * shown its image through ino_cipher.h, stable across remounts and index
 * rebuilds whatever node id the kernel happens to hold.
 *
 * Inodes are found by (parent, name).  When a name comes to mean another
 * backing file (the store replaced it), a new inode is made: the kernel
 * must not see one node id change identity under it.
 */
#ifndef ARTIFACTFS_INODE_H
#define ARTIFACTFS_INODE_H

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ino_cipher.h"

struct tenant;

enum inode_kind {
	INODE_TENANTS,		/* the root with all_tenants: lists the tenants */
	INODE_TENANT,		/* a tenant (the root without): lists runs and promote/ */
	INODE_PROMOTE,		/* promote/ */
	INODE_RUN,		/* a run dir */
	INODE_FILE,		/* a regular file in a run dir */
	INODE_STATUS,		/* promote/.status */
	INODE_STAGED_RUN,	/* promote/<run> */
	INODE_UPLOAD,		/* promote/<run>/<file> or promote/<request> */
};

/*
 * Numbers of what has no backing file, shown as they are: the root, and a
 * single tenant's promote/ and promote/.status (with all_tenants, each
 * tenant has its own: see tenant.h).
 */
#define INODE_ROOT_INO ((ino_t)INO_CIPHER_ROOT)
#define INODE_PROMOTE_INO ((ino_t)INO_CIPHER_PROMOTE)
#define INODE_STATUS_INO ((ino_t)INO_CIPHER_STATUS)

struct inode {
	struct inode *parent;	/* NULL for the root */
	enum inode_kind kind;
	struct tenant *tenant;	/* whose it is; NULL for INODE_TENANTS */
	ino_t ino;		/* the backing st_ino; one of the above for the rest */
	int fd;			/* INODE_RUN: O_PATH fd of the run dir; else -1 */
	/*
	 * References, guarded by the table: the kernel's lookups, one per
	 * child inode (a child keeps its parent), and the daemon's holds
	 * (inode_hold_child()).  The inode is freed when none are left.
	 */
	uint64_t lookups;
	/* Guarded by the table, like the lookups. */
	union {
		/* INODE_FILE: least recently looked up last. */
		struct {
			struct inode *lru_prev, *lru_next;
		};
		/*
		 * INODE_RUN: how many of its files are on that list, and
		 * when one of them was last looked up (inode_collect_stale()
		 * counts lookups as its clock).
		 */
		struct {
			size_t cached_files;
			uint64_t last_lookup;
		};
	};
	/*
	 * The backing file the kernel was last handed for this inode's open
	 * files (FUSE passthrough: an INODE_FILE read, an INODE_UPLOAD
	 * written), which its next opens share; NULL: none.  Guarded by
	 * fs->backing_lock.
	 */
	struct backing *backing;
	char name[];		/* in the parent; "" for the root */
};

struct inode_table;

/*
 * Makes a table holding the root: INODE_TENANT of tenant, or with tenant
 * NULL, INODE_TENANTS.  max_files bounds the file inodes kept (see
 * inode_collect_stale()).  Returns 0 or -ENOMEM.
 */
int inode_table_new(size_t max_files, struct tenant *tenant, struct inode_table **out);
void inode_table_free(struct inode_table *table);

struct inode *inode_root(struct inode_table *table);

/* Node ids and inodes, both ways.  A node id must be one the kernel holds. */
fuse_ino_t inode_to_nodeid(const struct inode *inode);
struct inode *inode_from_nodeid(struct inode_table *table, fuse_ino_t nodeid);

/*
 * Finds or makes the inode for (parent, name) standing for inode number
 * ino, of parent's tenant, and counts one kernel reference to it.  Takes
 * ownership of fd (an INODE_RUN's O_PATH fd, or -1): it is closed when an
 * inode already held it.  Returns 0 and *out, or -ENOMEM (fd closed).
 */
int inode_get(struct inode_table *table, struct inode *parent, enum inode_kind kind,
	      const char *name, ino_t ino, int fd, struct inode **out);

/* inode_get() of tenant's directory in the INODE_TENANTS root. */
int inode_get_tenant(struct inode_table *table, struct tenant *tenant, struct inode **out);

/* Counts one more kernel reference to an inode the kernel already holds. */
void inode_ref(struct inode_table *table, struct inode *inode);

/* Drops n kernel references; frees the inode when none are left. */
void inode_forget(struct inode_table *table, struct inode *inode, uint64_t n);

/*
 * Holds the inode the table has for (parent, name), if any: the daemon's
 * own reference.  A node id is the inode's address, so an inode freed
 * (the kernel forgot it) and its memory reused would give its id to
 * another inode, and a notification naming it would reach the wrong
 * node (the kernel answers ENOTDIR when that one is a file).  Held, the
 * id stays this inode's; if the kernel forgot it meanwhile, a
 * notification naming it only finds nothing to drop.
 * Returns the inode, to give back with inode_release(), or NULL.
 */
struct inode *inode_hold_child(struct inode_table *table, struct inode *parent,
			       const char *name);

/*
 * Holds every inode whose parent is parent.  *children is malloc'd (NULL
 * when there are none); release each, then free it.  Returns 0 or -ENOMEM
 * (nothing held).
 */
int inode_hold_children(struct inode_table *table, struct inode *parent,
			struct inode ***children, size_t *count);

/* Gives back a hold; the inode is freed if nothing else references it. */
void inode_release(struct inode_table *table, struct inode *inode);

/* How many file inodes are held: what max_files bounds. */
size_t inode_cached_files(struct inode_table *table);

/* Whether more file inodes are held than the table's max_files. */
bool inode_over_limit(struct inode_table *table);

/*
 * Whether more are held than seven eighths of max_files: the moment to
 * prune where it costs the kernel least (fs_prune_before_listing()),
 * before the bound forces it at any moment.
 */
bool inode_near_limit(struct inode_table *table);

/*
 * The daemon's memory must not grow with the store: beyond max_files, the
 * least recently looked-up files are offered here (up to max victims,
 * each held: see inode_hold_child()), down to three quarters of
 * max_files, for the kernel to be asked to drop their entries; it then
 * forgets them and, once released, they are freed.  Where such a file's
 * run has gone cold (none of its files looked up in the last
 * max_files / 2 lookups), the victim is the run directory instead: one
 * invalidation drops all its files.  Why runs, and why in large rounds:
 * each time the kernel evicts an inode while a LOOKUP or READDIRPLUS is
 * in flight, it distrusts the attributes of the new inodes that reply
 * brings, and asks again with a GETATTR.  Pruning file by file, a little
 * after every lookup over the bound, cost a walk one GETATTR per file;
 * hence also the moment chosen (fs_prune_before_listing()).
 * Files still in use stay (the kernel keeps them; they are offered again
 * later).  Returns how many victims.
 */
size_t inode_collect_stale(struct inode_table *table, struct inode **victims, size_t max);

#endif
