/*
 * promote_options.c - the promotion defaults and their validation.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "promote_options.h"

#define RETENTION_DAYS_MAX 36500
#define TEMPORARY_IDLE_MAX (86400u * 365)

void promote_options_init(struct promote_options *options)
{
	*options = (struct promote_options){
		.agent_id = "artifactfs",
		.workflow_id = "",
		.user_directive = "",
		.retention_days = 7,
		.file_mode = 0644,
		.temporary_idle = 3600,
	};
}

int promote_options_validate(const struct promote_options *o,
			     const char *const option_names[PROMOTE_OPTION_COUNT],
			     char *problem, size_t size)
{
	static const char *const field_names[PROMOTE_OPTION_COUNT] = {
		"agent_id", "workflow_id", "user_directive", "retention_days",
		"file_mode", "only_run", "temporary_idle",
	};
	const char *const *names = option_names ? option_names : field_names;
	/* They land in metadata.json: plain text, as the kernel-server writes it. */
	const char *const texts[] = { o->agent_id, o->workflow_id, o->user_directive };
	const char *reason;

	for (int i = PROMOTE_OPTION_AGENT; i <= PROMOTE_OPTION_DIRECTIVE; i++)
		if (!texts[i] || names_check_text(texts[i], strlen(texts[i]), &reason) < 0) {
			snprintf(problem, size, "invalid %s value: it %s", names[i],
				 texts[i] ? reason : "is missing");
			return -EINVAL;
		}
	if (o->retention_days == 0 || o->retention_days > RETENTION_DAYS_MAX) {
		snprintf(problem, size, "invalid %s %u: use 1 to %u days",
			 names[PROMOTE_OPTION_RETENTION], o->retention_days, RETENTION_DAYS_MAX);
		return -EINVAL;
	}
	/* The kernel-server must be able to read what lands: the owner at least. */
	if (o->file_mode > 0777 || !(o->file_mode & 0400)) {
		snprintf(problem, size, "invalid %s %o: use an octal mode up to 0777 that the "
			 "owner can read (default 0644)", names[PROMOTE_OPTION_FILE_MODE],
			 (unsigned int)o->file_mode);
		return -EINVAL;
	}
	if (o->only_run && names_check_run(o->only_run, &reason) < 0) {
		snprintf(problem, size, "invalid run id '%s' in %s: it %s", o->only_run,
			 names[PROMOTE_OPTION_RUN], reason);
		return -EINVAL;
	}
	if (o->temporary_idle == 0 || o->temporary_idle > TEMPORARY_IDLE_MAX) {
		snprintf(problem, size, "invalid %s %u: use 1 to %u seconds",
			 names[PROMOTE_OPTION_TEMPORARY_IDLE], o->temporary_idle,
			 TEMPORARY_IDLE_MAX);
		return -EINVAL;
	}
	return 0;
}
