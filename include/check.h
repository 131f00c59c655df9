/*
 * check.h - how a tenant's runs compare with their metadata.json and the
 * index, as data (artifactctl verify), and the repairs of metadata.json
 * where the files tell the truth (artifactctl repair; the daemon, after
 * a writer that takes no lock, the kernel-server, lost an entry).
 *
 * Repairs never delete a data file: they add entries for files that lack
 * one, fold duplicate entries, and with CHECK_REPAIR_ALL also drop
 * entries whose file is gone, correct size_bytes from the file, and
 * rebuild a metadata.json that is unparsable (the broken one is kept as
 * STORE/.artifactfs/repairs/<client>/<run>.metadata.json.<s>.<ns>).  Every repair is audited
 * (action "repair") and logged.
 */
#ifndef ARTIFACTFS_CHECK_H
#define ARTIFACTFS_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "view.h"
#include "writer.h"

/* What is wrong.  Names (check_kind_name()) are part of artifactctl's --json. */
enum check_kind {
	CHECK_UNPARSABLE,	/* "unparsable": metadata.json is not JSON (half written?) */
	CHECK_SCHEMA,		/* "schema": it is JSON that breaks the schema */
	CHECK_NO_METADATA,	/* "no_metadata": a run with files and no metadata.json */
	CHECK_MISSING_ENTRY,	/* "missing_entry": a file without an entry */
	CHECK_MISSING_FILE,	/* "missing_file": an entry without its file */
	CHECK_DUPLICATE_ENTRY,	/* "duplicate_entry": entries of one name, folded */
	CHECK_SIZE_MISMATCH,	/* "size_mismatch": size_bytes is not the file's size */
	CHECK_HASH_MISMATCH,	/* "hash_mismatch": the bytes are not the recorded SHA-256 */
	CHECK_INDEX_STALE,	/* "index_stale": the index does not describe the run */
	CHECK_LEGACY_RUN,	/* "legacy_run": artifacts/<run>/, from before tenants */
	CHECK_KIND_COUNT
};

struct check_problem {
	enum check_kind kind;
	char *client;		/* malloc'd; NULL for a legacy run */
	char *run;		/* malloc'd */
	char *file;		/* malloc'd, NULL when about the run */
	char *detail;		/* malloc'd, one line */
	bool repairable;	/* check_repair_run(CHECK_REPAIR_ALL) mends it */
};

/* What a check found, and how much it looked at. */
struct check_report {
	struct check_problem *problems;
	size_t count, capacity;
	uint64_t runs, files;		/* checked */
	uint64_t bytes_hashed;		/* read with CHECK_READ_DATA */
};

enum check_flags {
	CHECK_READ_DATA = 1,	/* hash every file that has a recorded SHA-256 */
};

/* "unparsable", "missing_entry", ... */
const char *check_kind_name(enum check_kind kind);

/*
 * Checks one run of view's tenant against its metadata.json and the
 * index, appending what is wrong to *report.  Takes the run lock shared,
 * so it sees no landing half done; changes nothing.  A metadata.json that
 * cannot be read or parsed is a problem of the run, not a failure; so is
 * one that breaks the schema, and what is found beside it is then not
 * repairable (a repair leaves such a file alone).  Files with names no
 * artifact may have (names_check_artifact(): dot-files, temporaries) are
 * not artifacts and not checked; a run dir named like promote/ is not a
 * run.  Returns 0 (also when the run is gone), -ENOMEM, -EIO (the
 * index), or the -errno of opening the run dir (-EACCES).
 */
int check_run(struct view *view, const char *run, unsigned int flags,
	      struct check_report *report);

/* Appends a CHECK_LEGACY_RUN problem for each legacy run of the store. */
int check_legacy_runs(const struct store *store, struct check_report *report);

/* Frees the problems and zeroes *report. */
void check_report_release(struct check_report *report);

enum check_repair_flags {
	/* Also drop entries without a file, correct sizes, rebuild unparsable files. */
	CHECK_REPAIR_ALL = 1,
};

/* What one repair changed. */
struct check_repair_result {
	unsigned int added;	/* entries made for files without one */
	unsigned int folded;	/* duplicate entries folded */
	unsigned int dropped;	/* entries without a file dropped */
	unsigned int resized;	/* size_bytes corrected */
	unsigned int rebuilt;	/* unparsable metadata.json files rebuilt */
	bool reindexed;		/* the index's rows of the run rebuilt */
	int error;		/* 0, or the -errno of a repair that failed (audited) */
};

/*
 * Repairs one run of the writer's tenant under the run lock, once
 * metadata.json and the files have gone unchanged for grace_ms (a writer
 * that copied a file in may be about to add its entry).  An entry made
 * for a file without one comes from the index where an artifactfs
 * promotion recorded it (an entry another writer dropped), else from the
 * file: agent_id "unknown", generated_at its mtime, content_type by
 * name.  A metadata.json that is absent is never made up; one that does
 * not follow the schema is left alone.  *result (may be NULL) adds up
 * what changed, over calls.  Returns 0 (done, nothing to do, or failed and audited), or
 * how many milliseconds to wait before the run may be repaired.
 */
unsigned int check_repair_run(struct writer *writer, const char *run, unsigned int grace_ms,
			      unsigned int flags, struct check_repair_result *result);

#endif
