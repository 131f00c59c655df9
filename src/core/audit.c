/*
 * audit.c - the audit trail's log lines, rows and JSON form.
 */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "log.h"
#include "meta.h"
#include "names.h"

const char *audit_errno_name(int error)
{
	const char *name = strerrorname_np(error);

	return name ? name : "EIO";
}

void audit_record(struct view *view, enum index_action action, const char *run,
		  const char *name, int64_t size, const char *sha256, int error,
		  const char *reason)
{
	char run_text[NAMES_ID_MAX * 4 + 1], name_text[NAMES_FILE_MAX * 4 + 1];
	char reason_text[AUDIT_REASON_SIZE];
	struct timespec now;
	struct index_audit row = {
		.client = view->client,
		.action = action,
		.run = run ? run_text : NULL,
		.filename = name ? name_text : NULL,
		.size = size,
		.sha256 = sha256,
		.error = error,
		.reason = reason ? reason_text : NULL,
	};
	const char *verb = action == INDEX_ACTION_PROMOTE ? "promotion" :
			   action == INDEX_ACTION_DELETE ? "deletion" : "repair";

	clock_gettime(CLOCK_REALTIME, &now);
	row.time_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	/* Names come from agents: what is logged and shown must be plain text. */
	if (run)
		names_make_printable(run, run_text, sizeof(run_text));
	if (name)
		names_make_printable(name, name_text, sizeof(name_text));
	if (reason)
		names_make_printable(reason, reason_text, sizeof(reason_text));

	/* The verdict first: a long name may cut the line, never the outcome. */
	if (error)
		log_warning("%s refused (%s): %s; client %s run %s file %s", verb,
			    audit_errno_name(error), row.reason ? row.reason : strerror(error),
			    view->client, row.run ? row.run : "-",
			    row.filename ? row.filename : "-");
	else
		log_info("%s done: client %s run %s file %s%s%s", verb, view->client,
			 row.run ? row.run : "-", row.filename ? row.filename : "-",
			 row.reason ? ": " : "", row.reason ? row.reason : "");
	index_add_audit(view->index, &row);
}

int audit_format_row(const struct index_audit *row, bool with_client, char **line)
{
	char time_text[META_TIME_SIZE];
	json_t *doc;

	meta_format_time(row->time_ns / 1000000000, (long)(row->time_ns % 1000000000), time_text);
	doc = json_pack("{s:s, s:s*, s:s, s:s?, s:s?, s:s, s:s}",
			"time", time_text,
			"client", with_client ? row->client : NULL,
			"action", index_action_name(row->action),
			"run", row->run, "file", row->filename,
			"result", row->error ? audit_errno_name(row->error) : "ok",
			"reason", row->reason ? row->reason :
				  row->action == INDEX_ACTION_PROMOTE ? "promoted" :
				  row->action == INDEX_ACTION_DELETE ? "deleted" : "repaired");
	if (!doc)
		return -ENOMEM;
	if (row->sha256)
		json_object_set_new(doc, "sha256", json_string(row->sha256));
	if (row->size >= 0)
		json_object_set_new(doc, "size", json_integer(row->size));
	*line = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(doc);
	return *line ? 0 : -ENOMEM;
}
