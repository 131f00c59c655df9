/*
 * seal.c - a promoted file's seal: the xattr that says what landing made
 * it (see seal.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "seal.h"
#include "store.h"

/* Seals are small JSON documents; anything larger is not ours. */
#define SEAL_MAX 1024

int seal_write(int fd, const char *run, const char *name, const char *generated_at,
	       const char *sha256)
{
	char *value = NULL;
	struct stat st;
	json_t *doc;
	int ret = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	doc = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "run", run, "name", name,
			"generated_at", generated_at, "sha256", sha256,
			"size", (json_int_t)st.st_size,
			"mtime_ns", (json_int_t)store_time_ns(&st.st_mtim));
	value = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!value)
		return -ENOMEM;
	if (fsetxattr(fd, SEAL_XATTR, value, strlen(value), 0) < 0)
		ret = errno == EOPNOTSUPP ? -ENOTSUP : -errno;
	free(value);
	return ret;
}

/* Parses a seal of len bytes.  Returns 0 or -ENODATA. */
static int parse(const char *value, size_t len, struct seal *seal)
{
	json_int_t size, mtime_ns;

	memset(seal, 0, sizeof(*seal));
	seal->doc = json_loadb(value, len, 0, NULL);
	if (!seal->doc ||
	    json_unpack(seal->doc, "{s:s, s:s, s:s, s:s, s:I, s:I}", "run", &seal->run,
			"name", &seal->name, "generated_at", &seal->generated_at,
			"sha256", &seal->sha256, "size", &size, "mtime_ns", &mtime_ns) < 0 ||
	    strlen(seal->sha256) != SEAL_SHA256_HEX_SIZE - 1) {
		seal_release(seal);
		return -ENODATA;
	}
	seal->size = size;
	seal->mtime_ns = mtime_ns;
	return 0;
}

int seal_read(int fd, struct seal *seal)
{
	char value[SEAL_MAX];
	ssize_t len;

	memset(seal, 0, sizeof(*seal));
	len = fgetxattr(fd, SEAL_XATTR, value, sizeof(value));
	if (len < 0)
		return errno == ERANGE || errno == ENOTSUP ? -ENODATA : -errno;
	return parse(value, (size_t)len, seal);
}

int seal_read_at(int dir_fd, const char *name, struct seal *seal)
{
	char path[64 + 256], value[SEAL_MAX];
	ssize_t len;

	memset(seal, 0, sizeof(*seal));
	if (strchr(name, '/'))
		return -EINVAL;
	/* The magic link is dir_fd itself; lgetxattr() follows no final symlink. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dir_fd, name);
	len = lgetxattr(path, SEAL_XATTR, value, sizeof(value));
	if (len < 0)
		return errno == ERANGE || errno == ENOTSUP ? -ENODATA : -errno;
	return parse(value, (size_t)len, seal);
}

void seal_release(struct seal *seal)
{
	json_decref(seal->doc);
	memset(seal, 0, sizeof(*seal));
}

bool seal_describes(const struct seal *seal, int64_t size, int64_t mtime_ns)
{
	return seal->doc && seal->size == size && seal->mtime_ns == mtime_ns;
}
