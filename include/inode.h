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

enum inode_kind {
	INODE_ROOT,		/* the tenant: lists runs and promote/ */
	INODE_PROMOTE,		/* promote/ */
	INODE_RUN,		/* a run dir */
	INODE_FILE,		/* a regular file in a run dir */
	INODE_STATUS,		/* promote/.status */
	INODE_STAGED_RUN,	/* promote/<run> */
	INODE_UPLOAD,		/* promote/<run>/<file> or promote/<request> */
};

/* Numbers of what has no backing file, shown as they are. */
#define INODE_ROOT_INO ((ino_t)INO_CIPHER_ROOT)
#define INODE_PROMOTE_INO ((ino_t)INO_CIPHER_PROMOTE)
#define INODE_STATUS_INO ((ino_t)INO_CIPHER_STATUS)

struct inode {
	struct inode *parent;	/* NULL for the root */
	enum inode_kind kind;
	ino_t ino;		/* the backing st_ino; one of the above for the rest */
	int fd;			/* INODE_RUN: O_PATH fd of the run dir; else -1 */
	uint64_t lookups;	/* kernel references; guarded by the table */
	/* INODE_FILE: least recently looked up last; guarded by the table. */
	struct inode *lru_prev, *lru_next;
	char name[];		/* in the parent; "" for the root */
};

/* An inode the kernel is asked to forget: see inode_collect_stale(). */
struct inode_victim {
	fuse_ino_t parent;
	char *name;		/* malloc'd */
};

struct inode_table;

/*
 * Makes a table holding the root and promote/.  max_files bounds the file
 * inodes kept (see inode_collect_stale()).  Returns 0 or -ENOMEM.
 */
int inode_table_new(size_t max_files, struct inode_table **out);
void inode_table_free(struct inode_table *table);

struct inode *inode_root(struct inode_table *table);
struct inode *inode_promote(struct inode_table *table);

/* Node ids and inodes, both ways.  A node id must be one the kernel holds. */
fuse_ino_t inode_to_nodeid(const struct inode *inode);
struct inode *inode_from_nodeid(struct inode_table *table, fuse_ino_t nodeid);

/*
 * Finds or makes the inode for (parent, name) standing for backing inode
 * ino, and counts one kernel reference to it.  Takes ownership of fd (an
 * INODE_RUN's O_PATH fd, or -1): it is closed when an inode already held it.
 * For promote/ and the root, pass the existing inode's identity.
 * Returns 0 and *out, or -ENOMEM (fd closed).
 */
int inode_get(struct inode_table *table, struct inode *parent, enum inode_kind kind,
	      const char *name, ino_t ino, int fd, struct inode **out);

/* Counts one more kernel reference to an inode the kernel already holds. */
void inode_ref(struct inode_table *table, struct inode *inode);

/* Drops n kernel references; frees the inode when none are left. */
void inode_forget(struct inode_table *table, struct inode *inode, uint64_t n);

/*
 * The node id currently known for (parent, name), or 0.  For the watcher,
 * which only passes the id on to the kernel: the inode may be forgotten
 * at any time after, and a stale id only makes the kernel drop nothing.
 */
fuse_ino_t inode_lookup_nodeid(struct inode_table *table, fuse_ino_t parent,
			       const char *name);

/* Whether more file inodes are held than the table's max_files. */
bool inode_over_limit(struct inode_table *table);

/*
 * The daemon's memory must not grow with the store: beyond max_files, the
 * least recently looked-up files are offered here (up to max of them,
 * parent and name copied into victims) for the kernel to be asked to
 * drop; it then forgets them and they are freed.  Files still in use stay
 * (the kernel keeps them; they are offered again later).  Returns how many.
 */
size_t inode_collect_stale(struct inode_table *table, struct inode_victim *victims, size_t max);

/*
 * Calls fn for every inode whose parent is parent, with the table locked:
 * fn must not call back into the table or block (copy what it needs).
 */
void inode_for_each_child(struct inode_table *table, fuse_ino_t parent,
			  void (*fn)(void *ctx, fuse_ino_t nodeid, const char *name),
			  void *ctx);

#endif
