/*
 * writer.h - what a process needs before it changes one tenant's store.
 *
 * A struct writer holds a staging instance on the store's own file system
 * (so that what is prepared there lands by an atomic rename):
 *   STORE/.artifactfs/staging/<client>/<instance>/      locked while alive
 *       lock                  WRITER_INSTANCE_LOCK
 *       runs/<run>/<name>     uploads in flight (promote.h)
 *       requests/<name>       request documents in flight (promote.h)
 *       work/                 intents and metadata.json drafts
 * with the promotion options, the MIME table and the metadata.json each
 * run last got from this writer.  landing.h, deletion.h, check.h and
 * promote.h work through one; reading the store (view.h, index.h) needs
 * none, so artifactctl's read-only commands never open one.
 *
 * An instance holds a lock file, WRITER_INSTANCE_LOCK, locked (an OFD
 * lock, shared by every host of a network store) for the life of its
 * writer: an instance whose lock is free belongs to a process that died,
 * see landing_recover().  Instance names carry the host name, the process
 * id and the time, so two processes never share one, on one host or
 * several.
 */
#ifndef ARTIFACTFS_WRITER_H
#define ARTIFACTFS_WRITER_H

#include <pthread.h>
#include <stddef.h>

#include "meta.h"
#include "metafile.h"
#include "mime.h"
#include "names.h"
#include "promote_options.h"
#include "view.h"

/* The file of an instance whose lock says the instance is alive. */
#define WRITER_INSTANCE_LOCK "lock"

/* The staging area of every tenant, below the store's private directory. */
#define WRITER_STAGING_AREA "staging"
#define WRITER_STAGING_DIR STORE_PRIVATE_DIR "/" WRITER_STAGING_AREA

/*
 * The metadata.json a writer last wrote into a run, parsed, with what
 * stat() said of the file then.  Parsing the document is what made a
 * commit into a run of a thousand files slow; while the file is still the
 * very one written (same inode, size, times), the parsed copy is as good.
 */
struct writer_cached_metadata {
	char run[NAMES_ID_MAX + 1];	/* "" when unused */
	struct metafile_version version;	/* of the file as it was written */
	struct meta_run meta;
	unsigned long last_used;
};

#define WRITER_CACHED_RUNS 8

struct landing_job;
struct landing_group;

struct writer {
	struct view *view;
	struct promote_options options;	/* strings are the caller's, outliving this */
	/* Guards mime: writer_reload_mime() swaps it while landings read it. */
	pthread_rwlock_t mime_lock;
	struct mime_table *mime;
	int staging_fd;		/* the tenant's staging area, holding the instances */
	int instance_fd;
	int instance_lock;	/* WRITER_INSTANCE_LOCK's, held for the life of the writer */
	int runs_fd, requests_fd, work_fd;
	char instance[64];
	/* Makes names in work/ unique; atomic, any thread takes one. */
	_Atomic unsigned long serial;
	/*
	 * Guards cache and cache_clock.  Held for memory updates only; a
	 * cached entry is taken out while its run is locked, so no two
	 * threads ever work on one.
	 */
	pthread_mutex_t cache_lock;
	struct writer_cached_metadata cache[WRITER_CACHED_RUNS];
	unsigned long cache_clock;
	/*
	 * The group commit of landings (landing.c).  landing_lock guards
	 * landings_waiting, landings_leading and the result of each waiting
	 * landing; it is held for list updates only, never across I/O, and
	 * no lock is taken while it is held (a caller may hold an upload's).
	 */
	pthread_mutex_t landing_lock;
	pthread_cond_t landings_done;	/* a group landed: look at your result */
	struct landing_job *landings_waiting;	/* oldest first, not yet taken */
	struct landing_group *landings_leading;	/* the runs being landed now */
};

/*
 * Makes a staging instance for view's tenant and reads the MIME table.
 * options is copied (its strings are not).  Does not recover what dead
 * instances left: call landing_recover() for that.
 * Returns 0 and *out, or -errno (logged).
 */
int writer_open(struct view *view, const struct promote_options *options,
		struct writer **out);

/*
 * Removes the staging instance and frees the writer; an instance that
 * still holds intents (landings whose entry a failure left unwritten) is
 * kept, with a warning, for landing_recover().  NULL is a no-op.
 */
void writer_close(struct writer *writer);

/* The content type of file name name, copied into type (size bytes). */
void writer_content_type(struct writer *writer, const char *name, char *type, size_t size);

/*
 * Reads /etc/mime.types again (an operator changed it): later landings
 * use the new table.  On failure the old one stays.  Returns 0 or -errno
 * (logged).
 */
int writer_reload_mime(struct writer *writer);

/* Room for any name writer_work_name() or writer_intent_name() makes. */
#define WRITER_WORK_NAME_SIZE (sizeof("intent..") + 20 + NAMES_ID_MAX)

/* A name for a new file in work/: "<prefix>.<serial>". */
void writer_work_name(struct writer *writer, const char *prefix, char *name, size_t size);

/*
 * A name for a new intent of run in work/: "intent.<serial>.<run>"
 * (landing_recover() reads the run back from it).
 */
void writer_intent_name(struct writer *writer, const char *run, char *name, size_t size);

/*
 * Moves the cached metadata of run into *meta when run_fd's metadata.json
 * is still the file it was parsed from.  run_fd is locked by the caller.
 * Returns whether it did.
 */
bool writer_take_metadata(struct writer *writer, int run_fd, const char *run,
			  struct meta_run *meta, struct metafile_version *version);

/*
 * Keeps *meta, just written as run's metadata.json (*version), for the
 * next change of run; it takes *meta over, leaving it empty.
 */
void writer_keep_metadata(struct writer *writer, const char *run,
			  const struct metafile_version *version, struct meta_run *meta);

#endif
