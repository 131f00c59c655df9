/*
 * tenant.h - the tenants a mount serves: one (-o client=ID), or every
 * client directory of the store (-o all_tenants), each with its own view,
 * promoter, owner and inode numbers.
 *
 * The tenant is a parameter of everything the daemon shows: each inode
 * names the tenant it belongs to (inode.h), and nothing below the set is
 * shared between tenants but the store, the index and the inode table.
 * A tenant is made the first time it is asked for and lives until the
 * set is freed, so an inode's pointer to it never dangles; the set
 * therefore grows with the client directories the store ever had, which
 * the store's own layout bounds.
 */
#ifndef ARTIFACTFS_TENANT_H
#define ARTIFACTFS_TENANT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ino_cipher.h"
#include "names.h"
#include "promote.h"
#include "view.h"

struct tenant {
	char client[NAMES_ID_MAX + 1];
	struct view view;		/* view.client is client above */
	struct promoter *promoter;	/* promote/ and deletion; NULL when read-only */
	uid_t uid;			/* owner of everything it shows */
	gid_t gid;
	/*
	 * Its directory's permissions: 0700 when each tenant has an owner of
	 * its own (then, with default_permissions, no other user enters it
	 * through the all-tenants root), else 0755 like every directory.
	 */
	mode_t dir_mode;
	/*
	 * The numbers of its own entries: its directory (the mount's root
	 * number when it is the root), promote/, promote/.status, and the key
	 * of its promote/<run> numbers (tenant_view_ino()): one tenant's never
	 * meet another's.
	 */
	ino_t dir_ino, promote_ino, status_ino;
	struct ino_cipher names;
	/*
	 * What was read through the mount, for operators and for proving
	 * that an incremental backup read nothing: the tenant directory's
	 * unlisted xattr "user.artifactfs.stats" shows them.
	 */
	struct tenant_stats {
		_Atomic uint64_t opens;		/* files opened for reading */
		_Atomic uint64_t reads;		/* read requests */
		_Atomic uint64_t read_bytes;	/* bytes asked for */
		/* opens whose reads the kernel serves itself: counted in none above */
		_Atomic uint64_t passthrough_opens;
	} stats;
};

/* How tenants are made: what the command line said, for every tenant alike. */
struct tenant_config {
	struct store *store;
	struct index *index;
	const uint8_t *inode_key;	/* INO_CIPHER_KEY_SIZE bytes */
	const struct promote_options *promote;	/* NULL: read-only, no promoter */
	bool show_expired;
	/*
	 * One tenant at the root (its numbers as before all_tenants existed),
	 * or every tenant in a directory of its own.
	 */
	bool all_tenants;
	/*
	 * The owner shown: fixed, or (all_tenants only) each tenant
	 * directory's owner in the store, so that each sandbox user owns
	 * its own tenant.
	 */
	bool owner_from_store;
	uid_t uid;
	gid_t gid;
};

struct tenant_set;

/* Makes an empty set; config is copied.  Returns 0 and *out, or -ENOMEM. */
int tenant_set_new(const struct tenant_config *config, struct tenant_set **out);

/* Closes every tenant's promoter and frees the set.  NULL is a no-op. */
void tenant_set_free(struct tenant_set *set);

/*
 * Finds client's tenant, making it the first time: brings the index up to
 * date with its directory and opens its promoter (staging, recovery of
 * what died staged).  client must be valid by names_check_id().  backing
 * is the tenant directory's stat (for its owner), NULL when it is served
 * at the root.  Returns 0 and *out, or -errno (logged).
 */
int tenant_get(struct tenant_set *set, const char *client, const struct stat *backing,
	       struct tenant **out);

/*
 * Stats client's directory in the store, if client is a tenant the
 * all-tenants root shows: a valid client id whose entry is a directory
 * and not a legacy run.  Returns 0, -ENOENT, or -errno.
 */
int tenant_stat_dir(struct tenant_set *set, const char *client, struct stat *st);

/* Calls fn for each tenant made so far, the set unlocked meanwhile. */
void tenant_for_each(struct tenant_set *set, void (*fn)(void *ctx, struct tenant *tenant),
		     void *ctx);

/*
 * Brings every tenant made so far up to date with its directory (see
 * view_reconcile()); the others are when they are made.
 */
void tenant_reconcile_all(struct tenant_set *set);

/* The tenant made for client, or NULL when there is none (yet). */
struct tenant *tenant_find(struct tenant_set *set, const char *client);

/*
 * The number promote/<run> (or any other name of its own) shows: a keyed
 * hash of name in the view's own range, the same across remounts.
 */
ino_t tenant_view_ino(const struct tenant *tenant, const char *name);

/* The number client's directory shows in the all-tenants root, made or not. */
ino_t tenant_dir_ino(struct tenant_set *set, const char *client);

#endif
