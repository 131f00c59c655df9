/*
 * promote_options.h - how files are promoted into a tenant's store: the
 * defaults they land with and the limits they are held to.  The daemon
 * (-o options) and artifactctl (command-line flags) fill the same struct,
 * from the same initialiser, through the same validation.
 */
#ifndef ARTIFACTFS_PROMOTE_OPTIONS_H
#define ARTIFACTFS_PROMOTE_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct promote_options {
	const char *agent_id;		/* agent_id of files that name none */
	const char *workflow_id;	/* workflow_id of a run a promotion makes */
	const char *user_directive;	/* user_directive of a run a promotion makes */
	unsigned int retention_days;	/* expires_at = created_at + this */
	mode_t file_mode;		/* of every file that lands */
	uint64_t quota_bytes;		/* per tenant; 0 for no limit */
	uint64_t quota_files;		/* per tenant; 0 for no limit */
	const char *only_run;		/* promote into this run only, or NULL */
	bool no_delete;			/* deletion refused with EPERM */
	unsigned int temporary_idle;	/* seconds an unheld temporary stays */
};

/* The defaults: agent "artifactfs", 7 days, 0644, no quota, 3600 s. */
void promote_options_init(struct promote_options *options);

/*
 * Checks every field: texts that land in metadata.json must be plain
 * text (names_check_text()), only_run a valid run id, retention 1 to
 * 36500 days, file_mode at most 0777 and readable by its owner (the
 * kernel-server reads what lands), temporary_idle 1 s to a year.
 * Returns 0, or -EINVAL with one line naming the option and what is
 * wrong in problem (NUL-terminated).  option_names maps a field to how
 * the caller spells it (e.g. "-o retention=" or "--retention"): it is
 * indexed by enum promote_option, may be NULL for the field names.
 */
enum promote_option {
	PROMOTE_OPTION_AGENT, PROMOTE_OPTION_WORKFLOW, PROMOTE_OPTION_DIRECTIVE,
	PROMOTE_OPTION_RETENTION, PROMOTE_OPTION_FILE_MODE, PROMOTE_OPTION_RUN,
	PROMOTE_OPTION_TEMPORARY_IDLE, PROMOTE_OPTION_COUNT
};
int promote_options_validate(const struct promote_options *options,
			     const char *const option_names[PROMOTE_OPTION_COUNT],
			     char *problem, size_t size);

#endif
