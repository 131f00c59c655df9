/*
 * metafile.c - reading and replacing a run's metadata.json beside writers
 * that take no lock (see metafile.h for why).
 *
 * "Still changing" is judged by the file's ctime, which every write,
 * truncate and rename moves: the reader needs no memory of earlier reads,
 * and a file left broken long ago is refused at once, with no wait.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "metafile.h"
#include "names.h"
#include "store.h"

/* How often a half-written file is read again. */
#define RETRY_INTERVAL_MS 10
/* Reads again of a metadata.json replaced meanwhile (ESTALE) before giving up. */
#define METAFILE_STALE_RETRIES 16

/* How long the file has gone unchanged, by the clock the file system stamps with. */
static int64_t unchanged_for_ms(const struct stat *st)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (store_time_ns(&now) - store_time_ns(&st->st_ctim)) / 1000000;
}

static void set_version(struct metafile_version *version, const struct stat *st)
{
	version->present = true;
	version->ino = (int64_t)st->st_ino;
	version->size = st->st_size;
	version->mtime_ns = store_time_ns(&st->st_mtim);
	version->ctime_ns = store_time_ns(&st->st_ctim);
	version->mode = st->st_mode & 07777;
	version->uid = st->st_uid;
	version->gid = st->st_gid;
}

static bool is_version(const struct metafile_version *version, const struct stat *st)
{
	return version->present && S_ISREG(st->st_mode) && version->ino == (int64_t)st->st_ino &&
	       version->size == st->st_size &&
	       version->mtime_ns == store_time_ns(&st->st_mtim) &&
	       version->ctime_ns == store_time_ns(&st->st_ctim);
}

int metafile_read(int run_fd, bool wait, struct meta_run *meta,
		  struct metafile_version *version, char *problem, size_t problem_size)
{
	const struct timespec pause = { .tv_nsec = RETRY_INTERVAL_MS * 1000000L };
	int64_t started = clock_monotonic_ms();
	unsigned int stale = 0;
	struct stat st;
	size_t len;
	char *buf;
	int ret;

	for (;;) {
		memset(version, 0, sizeof(*version));
		meta_run_release(meta);
		ret = store_read_file(run_fd, NAMES_METADATA_FILE, META_MAX_BYTES, &buf, &len, &st);
		/*
		 * On a network file system, a file another host replaced while
		 * we opened or read it: read the one now under the name.
		 */
		if (ret == -ESTALE && stale++ < METAFILE_STALE_RETRIES)
			continue;
		if (ret == -EFBIG && problem)
			snprintf(problem, problem_size, "it is larger than %u bytes", META_MAX_BYTES);
		/* A directory or a FIFO of that name is broken, not a file to parse. */
		if ((ret == -EINVAL || ret == -ELOOP) && problem)
			snprintf(problem, problem_size, "it is not a regular file");
		if (ret == -EINVAL || ret == -ELOOP)
			return -EBADMSG;
		if (ret < 0)
			return ret;
		set_version(version, &st);
		ret = meta_parse(buf, len, meta, problem, problem_size);
		free(buf);
		if (ret != -EBADMSG)
			return ret;
		/*
		 * Truncated and being written again, or left that way for good?
		 * Read it again only once it changed: parsing the same bytes
		 * again (up to 16 MiB) would tell nothing new.
		 */
		for (;;) {
			struct stat now;

			if (unchanged_for_ms(&st) >= METAFILE_SETTLE_MS)
				return -EBADMSG;
			if (!wait)
				return -EAGAIN;
			if (clock_monotonic_ms() - started >= METAFILE_WAIT_MAX_MS)
				return -EBADMSG;
			nanosleep(&pause, NULL);
			if (fstatat(run_fd, NAMES_METADATA_FILE, &now, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !is_version(version, &now))
				break;
		}
	}
}

bool metafile_unchanged(int run_fd, const struct metafile_version *version)
{
	struct stat st;

	if (fstatat(run_fd, NAMES_METADATA_FILE, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT && !version->present;
	return is_version(version, &st);
}

/*
 * Gives the draft the mode, owner and group of the file it replaces, so
 * that whoever could read metadata.json still can.  Owner and group are
 * kept only where we may set them (root may; anyone else then leaves the
 * file its own).
 */
static int keep_mode_and_owner(int fd, const struct metafile_version *version)
{
	if (fchmod(fd, version->present ? version->mode : 0644) < 0)
		return -errno;
	if (version->present && (version->uid != geteuid() || version->gid != getegid()) &&
	    fchown(fd, version->uid, version->gid) < 0 && errno != EPERM)
		return -errno;
	return 0;
}

int metafile_draft(int work_fd, const char *draft, const struct meta_run *meta,
		   const struct metafile_version *version, bool flush, struct stat *drafted)
{
	char *text = NULL;
	size_t len;
	int fd, ret;

	ret = meta_format(meta, &text, &len);
	if (ret < 0)
		return ret;
	fd = openat(work_fd, draft, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if ((ret = keep_mode_and_owner(fd, version)) == 0 &&
	    (ret = store_write_all(fd, text, len)) == 0 &&
	    ((flush && fsync(fd) < 0) || fstat(fd, drafted) < 0))
		ret = -errno;
	/* Closed before it lands: a close after writing, seen in the run dir, means a rewrite. */
	close(fd);
	if (ret < 0)
		unlinkat(work_fd, draft, 0);
out:
	free(text);
	return ret;
}

int metafile_install(int run_fd, int work_fd, const char *draft,
		     const struct metafile_version *version, const struct stat *drafted,
		     struct metafile_version *written)
{
	struct stat landed;

	if (written)
		memset(written, 0, sizeof(*written));
	if (!metafile_unchanged(run_fd, version))
		return -ESTALE;
	if (renameat(work_fd, draft, run_fd, NAMES_METADATA_FILE) < 0)
		return -errno;
	/* Ours, and not written since (a rename moves only the ctime)? */
	if (written && fstatat(run_fd, NAMES_METADATA_FILE, &landed, AT_SYMLINK_NOFOLLOW) == 0 &&
	    landed.st_ino == drafted->st_ino && landed.st_size == drafted->st_size &&
	    store_time_ns(&landed.st_mtim) == store_time_ns(&drafted->st_mtim))
		set_version(written, &landed);
	return 0;
}

int metafile_write(int run_fd, int work_fd, const char *draft, const struct meta_run *meta,
		   const struct metafile_version *version, struct metafile_version *written)
{
	struct stat drafted;
	int ret;

	if (written)
		memset(written, 0, sizeof(*written));
	ret = metafile_draft(work_fd, draft, meta, version, true, &drafted);
	if (ret < 0)
		return ret;
	ret = metafile_install(run_fd, work_fd, draft, version, &drafted, written);
	if (ret < 0) {
		unlinkat(work_fd, draft, 0);
		return ret;
	}
	return fsync(run_fd) < 0 ? -errno : 0;
}
