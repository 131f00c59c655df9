/*
 * inode.c - the table of inodes the kernel holds references to.
 *
 * One mutex guards the search tree and the lookup counts; it is held for
 * a tree operation only, never across I/O, so it is cheap on the lookup
 * path and absent from the read path (reads go straight to the open fd).
 */
#include <errno.h>
#include <pthread.h>
#include <search.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inode.h"
#include "tenant.h"

struct inode_table {
	pthread_mutex_t lock;
	void *tree;		/* inodes by (parent, name); see compare_inodes() */
	struct inode *root;	/* never freed before the table */
	/* File inodes, most recently looked up first. */
	struct inode *lru_first, *lru_last;
	size_t files, max_files;
	uint64_t file_lookups;	/* the clock of a run's last_lookup */
};

/* Takes a file inode out of the recency list.  Locked. */
static void lru_unlink(struct inode_table *table, struct inode *inode)
{
	if (inode->kind != INODE_FILE)
		return;
	if (inode->lru_prev)
		inode->lru_prev->lru_next = inode->lru_next;
	else if (table->lru_first == inode)
		table->lru_first = inode->lru_next;
	else
		return;	/* not on the list */
	if (inode->lru_next)
		inode->lru_next->lru_prev = inode->lru_prev;
	else
		table->lru_last = inode->lru_prev;
	inode->lru_prev = inode->lru_next = NULL;
	table->files--;
	if (inode->parent->kind == INODE_RUN)
		inode->parent->cached_files--;
}

/* Puts a file inode first in the recency list.  Locked. */
static void lru_touch(struct inode_table *table, struct inode *inode)
{
	if (inode->kind != INODE_FILE)
		return;
	lru_unlink(table, inode);
	inode->lru_next = table->lru_first;
	if (table->lru_first)
		table->lru_first->lru_prev = inode;
	table->lru_first = inode;
	if (!table->lru_last)
		table->lru_last = inode;
	table->files++;
	if (inode->parent->kind == INODE_RUN)
		inode->parent->cached_files++;
}

static int compare_inodes(const void *a, const void *b)
{
	const struct inode *x = a, *y = b;

	if (x->parent != y->parent)
		return x->parent < y->parent ? -1 : 1;
	return strcmp(x->name, y->name);
}

static struct inode *inode_new(struct inode *parent, enum inode_kind kind,
			       struct tenant *tenant, const char *name, ino_t ino, int fd)
{
	size_t len = strlen(name);
	struct inode *inode = malloc(sizeof(*inode) + len + 1);

	if (!inode)
		return NULL;
	inode->parent = parent;
	inode->kind = kind;
	inode->tenant = tenant;
	inode->ino = ino;
	inode->fd = fd;
	inode->lookups = 0;
	if (kind == INODE_RUN) {
		inode->cached_files = 0;
		inode->last_lookup = 0;
	} else {
		inode->lru_prev = inode->lru_next = NULL;
	}
	inode->backing = NULL;
	memcpy(inode->name, name, len + 1);
	return inode;
}

static void inode_free(struct inode *inode)
{
	if (inode->fd >= 0)
		close(inode->fd);
	free(inode);
}

int inode_table_new(size_t max_files, struct tenant *tenant, struct inode_table **out)
{
	struct inode_table *table = calloc(1, sizeof(*table));

	if (!table)
		return -ENOMEM;
	table->max_files = max_files;
	pthread_mutex_init(&table->lock, NULL);
	table->root = inode_new(NULL, tenant ? INODE_TENANT : INODE_TENANTS, tenant, "",
				INODE_ROOT_INO, -1);
	if (!table->root) {
		inode_table_free(table);
		return -ENOMEM;
	}
	*out = table;
	return 0;
}

static void free_node(void *node)
{
	inode_free(node);
}

void inode_table_free(struct inode_table *table)
{
	if (!table)
		return;
	/*
	 * Inodes replaced in the tree but still referenced by the kernel
	 * are not in the tree; at unmount the kernel has forgotten them all
	 * except what it never tells us, a bounded leak at exit only.
	 */
	tdestroy(table->tree, free_node);
	free(table->root);
	pthread_mutex_destroy(&table->lock);
	free(table);
}

struct inode *inode_root(struct inode_table *table)
{
	return table->root;
}

fuse_ino_t inode_to_nodeid(const struct inode *inode)
{
	return inode->parent ? (fuse_ino_t)(uintptr_t)inode : FUSE_ROOT_ID;
}

struct inode *inode_from_nodeid(struct inode_table *table, fuse_ino_t nodeid)
{
	return nodeid == FUSE_ROOT_ID ? table->root : (struct inode *)(uintptr_t)nodeid;
}

/* Whether inode is the one the tree holds for its (parent, name). */
static bool in_tree(struct inode_table *table, struct inode *inode)
{
	void *found = tfind(inode, &table->tree, compare_inodes);

	return found && *(struct inode **)found == inode;
}

static int get_inode(struct inode_table *table, struct inode *parent, enum inode_kind kind,
		     struct tenant *tenant, const char *name, ino_t ino, int fd,
		     struct inode **out)
{
	struct inode *inode, *fresh;
	void *slot;
	int ret;

	/* Allocate before locking: the common case of a new name pays no wait. */
	fresh = inode_new(parent, kind, tenant, name, ino, fd);
	if (!fresh) {
		if (fd >= 0)
			close(fd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&table->lock);
	slot = tsearch(fresh, &table->tree, compare_inodes);
	if (!slot) {
		ret = -ENOMEM;
		pthread_mutex_unlock(&table->lock);
		inode_free(fresh);
		return ret;
	}
	inode = *(struct inode **)slot;
	if (inode != fresh && inode->ino != ino) {
		/* The name now means another backing file: a new node id. */
		*(struct inode **)slot = fresh;
		inode = fresh;
	}
	if (inode == fresh) {
		/* A child keeps its parent (and so the parent's fd) alive. */
		parent->lookups++;
		fresh = NULL;
	}
	inode->lookups++;
	lru_touch(table, inode);
	if (kind == INODE_FILE && parent->kind == INODE_RUN)
		parent->last_lookup = ++table->file_lookups;
	pthread_mutex_unlock(&table->lock);
	if (fresh)
		inode_free(fresh);	/* closes the caller's duplicate fd */
	*out = inode;
	return 0;
}

int inode_get(struct inode_table *table, struct inode *parent, enum inode_kind kind,
	      const char *name, ino_t ino, int fd, struct inode **out)
{
	return get_inode(table, parent, kind, parent->tenant, name, ino, fd, out);
}

int inode_get_tenant(struct inode_table *table, struct tenant *tenant, struct inode **out)
{
	return get_inode(table, table->root, INODE_TENANT, tenant, tenant->client,
			 tenant->dir_ino, -1, out);
}

void inode_ref(struct inode_table *table, struct inode *inode)
{
	pthread_mutex_lock(&table->lock);
	inode->lookups++;
	pthread_mutex_unlock(&table->lock);
}

void inode_forget(struct inode_table *table, struct inode *inode, uint64_t n)
{
	/* Releasing a child drops the reference it held on its parent. */
	while (inode) {
		struct inode *release = NULL;

		pthread_mutex_lock(&table->lock);
		inode->lookups = n > inode->lookups ? 0 : inode->lookups - n;
		if (inode->lookups == 0 && inode->parent) {
			if (in_tree(table, inode))
				tdelete(inode, &table->tree, compare_inodes);
			lru_unlink(table, inode);
			release = inode;
		}
		pthread_mutex_unlock(&table->lock);
		if (!release)
			return;
		inode = release->parent;
		n = 1;
		inode_free(release);
	}
}

struct inode *inode_hold_child(struct inode_table *table, struct inode *parent,
			       const char *name)
{
	struct inode *key = inode_new(parent, INODE_FILE, NULL, name, 0, -1);
	struct inode *held = NULL;
	void *slot;

	if (!key)
		return NULL;
	pthread_mutex_lock(&table->lock);
	slot = tfind(key, &table->tree, compare_inodes);
	if (slot) {
		held = *(struct inode **)slot;
		held->lookups++;
	}
	pthread_mutex_unlock(&table->lock);
	free(key);
	return held;
}

void inode_release(struct inode_table *table, struct inode *inode)
{
	inode_forget(table, inode, 1);
}

size_t inode_cached_files(struct inode_table *table)
{
	size_t files;

	pthread_mutex_lock(&table->lock);
	files = table->files;
	pthread_mutex_unlock(&table->lock);
	return files;
}

bool inode_over_limit(struct inode_table *table)
{
	return inode_cached_files(table) > table->max_files;	/* max_files never changes */
}

bool inode_near_limit(struct inode_table *table)
{
	return inode_cached_files(table) > table->max_files - table->max_files / 8;
}

/* Whether a whole run may go: none of its files looked up lately.  Locked. */
static bool run_is_cold(const struct inode_table *table, const struct inode *run)
{
	return run->kind == INODE_RUN &&
	       table->file_lookups - run->last_lookup >= table->max_files / 2;
}

size_t inode_collect_stale(struct inode_table *table, struct inode **victims, size_t max)
{
	/* Down to three quarters: fewer, larger rounds (inode.h says why). */
	size_t keep = table->max_files - table->max_files / 4;
	size_t n = 0, offered = 0, looked = 0;

	pthread_mutex_lock(&table->lock);
	while (n < max && table->files > keep &&
	       offered < table->files - keep && looked++ < table->files) {
		struct inode *file = table->lru_last, *victim = file;

		if (run_is_cold(table, file->parent))
			victim = file->parent;
		/* First again: one still in use is not offered at every turn. */
		lru_touch(table, file);
		if (n > 0 && victims[n - 1] == victim)
			continue;	/* its run, offered already */
		offered += victim == file ? 1 : victim->cached_files;
		victim->lookups++;	/* held until the kernel has been told */
		victims[n++] = victim;
	}
	pthread_mutex_unlock(&table->lock);
	return n;
}

struct child_walk {
	struct inode *parent;
	struct inode **children;
	size_t count, capacity;
	bool failed;
};

/* Holds one child of walk->parent.  Table locked. */
static void hold_child(const void *node, VISIT which, void *closure)
{
	struct inode *inode = *(struct inode *const *)node;
	struct child_walk *walk = closure;

	if ((which != postorder && which != leaf) || inode->parent != walk->parent || walk->failed)
		return;
	if (walk->count == walk->capacity) {
		size_t bigger = walk->capacity ? walk->capacity * 2 : 64;
		struct inode **grown = realloc(walk->children, bigger * sizeof(*grown));
		if (!grown) {
			walk->failed = true;
			return;
		}
		walk->children = grown;
		walk->capacity = bigger;
	}
	inode->lookups++;
	walk->children[walk->count++] = inode;
}

int inode_hold_children(struct inode_table *table, struct inode *parent,
			struct inode ***children, size_t *count)
{
	struct child_walk walk = { .parent = parent };

	pthread_mutex_lock(&table->lock);
	twalk_r(table->tree, hold_child, &walk);
	pthread_mutex_unlock(&table->lock);
	if (walk.failed) {
		for (size_t i = 0; i < walk.count; i++)
			inode_release(table, walk.children[i]);
		free(walk.children);
		return -ENOMEM;
	}
	*children = walk.children;
	*count = walk.count;
	return 0;
}
