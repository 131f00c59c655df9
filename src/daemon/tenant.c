/*
 * tenant.c - the set of tenants a mount serves (see tenant.h).
 *
 * The set's mutex guards its array; it is held while a tenant is made
 * (the first reconcile and the promoter's recovery), so two lookups of a
 * new tenant never make it twice.  Lock order: the set, then what a
 * tenant's view and promoter lock inside (the index, the promoter).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inode.h"
#include "log.h"
#include "tenant.h"

struct tenant_set {
	struct tenant_config config;
	struct ino_cipher cipher;	/* the store's key: backing numbers */
	pthread_mutex_t lock;		/* guards tenants and count */
	struct tenant **tenants;	/* sorted by client */
	size_t count, capacity;
};

int tenant_set_new(const struct tenant_config *config, struct tenant_set **out)
{
	struct tenant_set *set = calloc(1, sizeof(*set));

	if (!set)
		return -ENOMEM;
	set->config = *config;
	ino_cipher_init(&set->cipher, config->inode_key);
	pthread_mutex_init(&set->lock, NULL);
	*out = set;
	return 0;
}

void tenant_set_free(struct tenant_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->count; i++) {
		promote_close(set->tenants[i]->promoter);
		free(set->tenants[i]);
	}
	free(set->tenants);
	pthread_mutex_destroy(&set->lock);
	free(set);
}

/* A number in the view's own range for name, keyed by names. */
static ino_t view_ino(const struct ino_cipher *names, const char *name)
{
	return INO_CIPHER_VIEW_FIRST + ino_cipher_hash_name(names, name) % INO_CIPHER_STAGED_RUNS_COUNT;
}

ino_t tenant_view_ino(const struct tenant *tenant, const char *name)
{
	return view_ino(&tenant->names, name);
}

/* The key of client's own numbers in an all-tenants mount: the store's key and its name. */
static void derive_names_key(struct tenant_set *set, const char *client,
			     struct ino_cipher *names)
{
	names->k0 = ino_cipher_hash_name(&set->cipher, client);
	names->k1 = ino_cipher_siphash(&set->cipher, names->k0);
}

ino_t tenant_dir_ino(struct tenant_set *set, const char *client)
{
	struct ino_cipher names;

	derive_names_key(set, client, &names);
	return view_ino(&names, "/");
}

/*
 * A tenant's own numbers.  At the root, those every single-tenant mount
 * always showed; in a directory of its own, numbers keyed by its name,
 * which no run name can give ('/' is in no name): the same for as long as
 * the store keeps its key, whatever becomes of the backing directory.
 */
static void number_tenant(struct tenant_set *set, struct tenant *tenant)
{
	if (!set->config.all_tenants) {
		tenant->names = set->cipher;
		tenant->dir_ino = INODE_ROOT_INO;
		tenant->promote_ino = INODE_PROMOTE_INO;
		tenant->status_ino = INODE_STATUS_INO;
		return;
	}
	derive_names_key(set, tenant->client, &tenant->names);
	tenant->dir_ino = tenant_view_ino(tenant, "/");
	tenant->promote_ino = tenant_view_ino(tenant, "/promote");
	tenant->status_ino = tenant_view_ino(tenant, "/status");
}

/* Binary search: the tenant's index in the array, or where it would go. */
static size_t find_slot(struct tenant_set *set, const char *client, bool *found)
{
	size_t low = 0, high = set->count;

	while (low < high) {
		size_t middle = low + (high - low) / 2;
		int order = strcmp(set->tenants[middle]->client, client);

		if (order == 0) {
			*found = true;
			return middle;
		}
		if (order < 0)
			low = middle + 1;
		else
			high = middle;
	}
	*found = false;
	return low;
}

/* Makes client's tenant.  Set locked.  Returns 0 and *out, or -errno (logged). */
static int make_tenant(struct tenant_set *set, const char *client, const struct stat *backing,
		       struct tenant **out)
{
	const struct tenant_config *config = &set->config;
	struct tenant *tenant = calloc(1, sizeof(*tenant));
	int ret;

	if (!tenant) {
		log_error("client %s: out of memory", client);
		return -ENOMEM;
	}
	snprintf(tenant->client, sizeof(tenant->client), "%s", client);
	tenant->view = (struct view){
		.client = tenant->client,
		.store = config->store,
		.index = config->index,
		.show_expired = config->show_expired,
	};
	tenant->uid = config->owner_from_store && backing ? backing->st_uid : config->uid;
	tenant->gid = config->owner_from_store && backing ? backing->st_gid : config->gid;
	tenant->dir_mode = config->owner_from_store ? 0700 : 0755;
	number_tenant(set, tenant);
	ret = view_reconcile(&tenant->view);
	if (ret == 0 && config->promote)
		ret = promote_open(&tenant->view, config->promote, &tenant->promoter);
	if (ret < 0) {
		free(tenant);
		return ret;
	}
	*out = tenant;
	return 0;
}

int tenant_get(struct tenant_set *set, const char *client, const struct stat *backing,
	       struct tenant **out)
{
	struct tenant *tenant;
	size_t slot;
	bool found;
	int ret = 0;

	pthread_mutex_lock(&set->lock);
	slot = find_slot(set, client, &found);
	if (found) {
		*out = set->tenants[slot];
		goto out;
	}
	if (set->count == set->capacity) {
		size_t bigger = set->capacity ? set->capacity * 2 : 16;
		struct tenant **grown = realloc(set->tenants, bigger * sizeof(*grown));

		if (!grown) {
			log_error("client %s: out of memory", client);
			ret = -ENOMEM;
			goto out;
		}
		set->tenants = grown;
		set->capacity = bigger;
	}
	ret = make_tenant(set, client, backing, &tenant);
	if (ret < 0)
		goto out;
	memmove(&set->tenants[slot + 1], &set->tenants[slot],
		(set->count - slot) * sizeof(*set->tenants));
	set->tenants[slot] = tenant;
	set->count++;
	if (set->config.all_tenants)
		log_info("client %s: now served", client);
	*out = tenant;
out:
	pthread_mutex_unlock(&set->lock);
	return ret;
}

struct tenant *tenant_find(struct tenant_set *set, const char *client)
{
	struct tenant *tenant = NULL;
	size_t slot;
	bool found;

	pthread_mutex_lock(&set->lock);
	slot = find_slot(set, client, &found);
	if (found)
		tenant = set->tenants[slot];
	pthread_mutex_unlock(&set->lock);
	return tenant;
}

int tenant_stat_dir(struct tenant_set *set, const char *client, struct stat *st)
{
	int fd, ret = 0;

	if (names_check_id(client, NULL) < 0 || store_is_legacy_run(set->config.store, client))
		return -ENOENT;
	fd = store_open_tenant(set->config.store, client, O_PATH);
	if (fd < 0)
		return fd == -ENOTDIR || fd == -ELOOP || fd == -EINVAL ? -ENOENT : fd;
	if (fstat(fd, st) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

static void reconcile_tenant(void *ctx, struct tenant *tenant)
{
	view_reconcile(&tenant->view);
}

void tenant_reconcile_all(struct tenant_set *set)
{
	tenant_for_each(set, reconcile_tenant, NULL);
}

void tenant_for_each(struct tenant_set *set, void (*fn)(void *ctx, struct tenant *tenant),
		     void *ctx)
{
	struct tenant **snapshot;
	size_t count;

	pthread_mutex_lock(&set->lock);
	count = set->count;
	snapshot = malloc((count ? count : 1) * sizeof(*snapshot));
	if (snapshot && count)
		memcpy(snapshot, set->tenants, count * sizeof(*snapshot));
	pthread_mutex_unlock(&set->lock);
	if (!snapshot) {
		log_error("out of memory: cannot visit the %zu tenants", count);
		return;
	}
	for (size_t i = 0; i < count; i++)
		fn(ctx, snapshot[i]);
	free(snapshot);
}
