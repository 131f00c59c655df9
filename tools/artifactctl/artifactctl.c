/*
 * artifactctl.c - the admin tool: inspects, verifies, repairs, migrates
 * and expires a RARO store without mounting it.
 *
 * A thin front end on the core, as the daemon is: it takes the same run
 * locks, writes the same audit trail and uses the same index (the
 * store's default, or --index), so it is safe beside mounted daemons,
 * which see its changes through their watchers.  Each command prints
 * text for people, or with --json one JSON document (fields documented
 * in artifactctl(8)) on stdout.  Exit codes: see enum exit_code.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "check.h"
#include "deletion.h"
#include "index.h"
#include "landing.h"
#include "log.h"
#include "meta.h"
#include "names.h"
#include "promote_options.h"
#include "store.h"
#include "view.h"
#include "writer.h"

/* What artifactctl exits with; artifactctl(8) documents them. */
enum exit_code {
	EXIT_OK = 0,		/* done; verify: nothing wrong */
	EXIT_PROBLEMS = 1,	/* verify found problems; some change was refused or failed */
	EXIT_USAGE = 2,		/* bad command line */
	EXIT_ENVIRONMENT = 3,	/* the store or the index cannot be opened */
};

/* The command line, as parsed. */
struct ctl_args {
	const char *command;
	char **operands;
	int n_operands;
	const char *store_path;
	const char *index_path;
	const char *client;
	const char *run;
	const char *sha256, *workflow, *agent;
	const char *to;
	const char *since;
	int64_t since_seconds;	/* --since, parsed */
	bool json, read_data, dry_run, expired, verbose;
	struct promote_options promote;
	unsigned int given;	/* which of the options below were given (bits) */
};

/* Options some commands take; each command lists those it accepts. */
enum ctl_option {
	OPT_CLIENT = 1 << 0, OPT_RUN = 1 << 1, OPT_SHA256 = 1 << 2, OPT_WORKFLOW = 1 << 3,
	OPT_AGENT = 1 << 4, OPT_TO = 1 << 5, OPT_SINCE = 1 << 6, OPT_READ_DATA = 1 << 7,
	OPT_DRY_RUN = 1 << 8, OPT_EXPIRED = 1 << 9, OPT_DIRECTIVE = 1 << 10,
	OPT_RETENTION = 1 << 11, OPT_FILE_MODE = 1 << 12,
};

static const char *const option_names[] = {
	"--client", "--run", "--sha256", "--workflow", "--agent", "--to", "--since",
	"--read-data", "--dry-run", "--expired", "--directive", "--retention", "--file-mode",
};

/* What every command works with. */
struct ctl {
	struct ctl_args *args;
	struct store store;
	struct index *index;
	bool progress;		/* stderr is a terminal: redraw one status line */
	json_t *out;		/* the --json document being built */
	int status;		/* enum exit_code so far */
};

/* --- messages -------------------------------------------------------------- */

static void usage_error(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr for a command line that cannot be carried out. */
static void usage_error(const char *format, ...)
{
	va_list args;

	fputs("artifactctl: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputs(" (artifactctl --help for usage)\n", stderr);
}

/*
 * Reports progress of long work: on a terminal, one line redrawn in
 * place; otherwise a plain line for each step (done true), so logs stay
 * readable.
 */
static void progress(struct ctl *ctl, bool done, const char *format, ...)
	__attribute__((format(printf, 3, 4)));

static void progress(struct ctl *ctl, bool done, const char *format, ...)
{
	va_list args;

	if (!ctl->progress && !done)
		return;
	fputs(ctl->progress ? "\r\033[K" : "artifactctl: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	if (!ctl->progress)
		fputc('\n', stderr);
	fflush(stderr);
}

/* Ends a progress line on a terminal. */
static void progress_end(struct ctl *ctl)
{
	if (ctl->progress)
		fputs("\r\033[K", stderr);
}

/* Sets a string member, or null, of a JSON object. */
static void json_set_text(json_t *object, const char *key, const char *value)
{
	json_object_set_new(object, key, value ? json_string(value) : json_null());
}

static json_t *json_list(struct ctl *ctl, const char *key)
{
	json_t *list = json_object_get(ctl->out, key);

	if (!list) {
		list = json_array();
		json_object_set_new(ctl->out, key, list);
	}
	return list;
}

static void print_text_or_dash(const char *text)
{
	fputs(text && *text ? text : "-", stdout);
}

/* --- opening views ------------------------------------------------------------ */

static struct view view_of(struct ctl *ctl, const char *client)
{
	return (struct view){
		.client = client,
		.store = &ctl->store,
		.index = ctl->index,
		.show_expired = true,
	};
}

/* Calls fn for the --client, or for every tenant of the store. */
static int for_each_client(struct ctl *ctl, int (*fn)(void *ctx, const char *client),
			   void *ctx)
{
	return ctl->args->client ? fn(ctx, ctl->args->client) :
	       store_for_each_tenant(&ctl->store, fn, ctx);
}

/* Brings the index up to date with one tenant's area, as a mount does at start. */
static int refresh_client(void *ctx, const char *client)
{
	struct ctl *ctl = ctx;
	struct view view = view_of(ctl, client);

	progress(ctl, false, "indexing client %s", client);
	return view_reconcile(&view) < 0 ? -EIO : 0;
}

/* Indexes the --client, or every tenant. */
static int refresh(struct ctl *ctl)
{
	int ret = for_each_client(ctl, refresh_client, ctl);

	progress_end(ctl);
	return ret;
}


/* --- ls, show, find --------------------------------------------------------------- */

/* Adds up a client's runs for ls without --client. */
struct client_totals {
	int64_t runs, files, bytes;
};

static int add_run_totals(void *ctx, const struct index_run_row *row)
{
	struct client_totals *totals = ctx;

	totals->runs++;
	totals->files += row->files;
	totals->bytes += row->bytes;
	return 0;
}

static int list_client(void *ctx, const char *client)
{
	struct ctl *ctl = ctx;
	struct client_totals totals = { 0 };
	int ret = index_for_each_run(ctl->index, client, add_run_totals, &totals);

	if (ret < 0)
		return ret;
	if (ctl->out)
		json_array_append_new(json_list(ctl, "clients"),
				      json_pack("{s:s, s:I, s:I, s:I}", "client", client,
						"runs", (json_int_t)totals.runs,
						"files", (json_int_t)totals.files,
						"bytes", (json_int_t)totals.bytes));
	else
		printf("%-32s %6lld runs %8lld files %14lld bytes\n", client,
		       (long long)totals.runs, (long long)totals.files, (long long)totals.bytes);
	return 0;
}

static bool has_expired(const struct index_run_row *row)
{
	return row->expires_at_unix != INT64_MIN && row->expires_at_unix <= time(NULL);
}

static int list_run(void *ctx, const struct index_run_row *row)
{
	struct ctl *ctl = ctx;

	if (ctl->out) {
		json_t *run = json_pack("{s:s, s:s}", "client", row->client, "run", row->run);

		json_set_text(run, "workflow_id", row->workflow_id);
		json_set_text(run, "created_at", row->created_at);
		json_set_text(run, "expires_at", row->expires_at);
		json_set_text(run, "status", row->status);
		json_object_set_new(run, "expired", json_boolean(has_expired(row)));
		json_object_set_new(run, "metadata_valid", json_boolean(row->metadata_valid));
		json_object_set_new(run, "files", json_integer(row->files));
		json_object_set_new(run, "bytes", json_integer(row->bytes));
		json_array_append_new(json_list(ctl, "runs"), run);
		return 0;
	}
	printf("%-40s %6lld files %14lld bytes  ", row->run, (long long)row->files,
	       (long long)row->bytes);
	print_text_or_dash(row->created_at);
	fputs(has_expired(row) ? "  expired\n" : "\n", stdout);
	return 0;
}

static int command_ls(struct ctl *ctl)
{
	int ret = refresh(ctl);

	if (ret < 0)
		return ret;
	if (ctl->out)
		json_list(ctl, ctl->args->client ? "runs" : "clients");
	if (ctl->args->client)
		return index_for_each_run(ctl->index, ctl->args->client, list_run, ctl);
	return store_for_each_tenant(&ctl->store, list_client, ctl);
}

/* One artifact, for show and find. */
static int list_artifact(void *ctx, const struct index_artifact_row *row)
{
	struct ctl *ctl = ctx;

	if (ctl->out) {
		json_t *artifact = json_pack("{s:s, s:s, s:s}", "client", row->client,
					     "run", row->run, "filename", row->filename);

		json_set_text(artifact, "agent_id", row->agent_id);
		json_set_text(artifact, "generated_at", row->generated_at);
		json_set_text(artifact, "content_type", row->content_type);
		json_object_set_new(artifact, "size_bytes", row->size_bytes < 0 ? json_null() :
				    json_integer(row->size_bytes));
		json_object_set_new(artifact, "file_size", row->file_size < 0 ? json_null() :
				    json_integer(row->file_size));
		json_set_text(artifact, "sha256", row->sha256);
		json_array_append_new(json_list(ctl, "artifacts"), artifact);
		return 0;
	}
	if (strcmp(ctl->args->command, "find") == 0)
		printf("%s/%s/", row->client, row->run);
	printf("%s  %lld bytes  ", row->filename, (long long)row->file_size);
	print_text_or_dash(row->agent_id);
	fputs("  ", stdout);
	print_text_or_dash(row->content_type);
	fputs("  ", stdout);
	print_text_or_dash(row->sha256);
	fputc('\n', stdout);
	return 0;
}

/* The run's own fields, for show; the walk finds one row. */
static int show_run_fields(void *ctx, const struct index_run_row *row)
{
	struct ctl *ctl = ctx;

	if (strcmp(row->run, ctl->args->operands[0]) != 0)
		return 0;
	if (ctl->out) {
		json_set_text(ctl->out, "client", row->client);
		json_set_text(ctl->out, "run", row->run);
		json_set_text(ctl->out, "workflow_id", row->workflow_id);
		json_set_text(ctl->out, "user_directive", row->user_directive);
		json_set_text(ctl->out, "created_at", row->created_at);
		json_set_text(ctl->out, "expires_at", row->expires_at);
		json_set_text(ctl->out, "status", row->status);
		json_object_set_new(ctl->out, "expired", json_boolean(has_expired(row)));
		json_object_set_new(ctl->out, "metadata_valid", json_boolean(row->metadata_valid));
		json_list(ctl, "artifacts");
	} else {
		printf("run %s of client %s\n  workflow_id %s\n  created_at %s\n  expires_at %s%s\n"
		       "  status %s\n", row->run, row->client,
		       row->workflow_id ? row->workflow_id : "-",
		       row->created_at ? row->created_at : "-",
		       row->expires_at ? row->expires_at : "-",
		       has_expired(row) ? " (expired)" : "", row->status ? row->status : "-");
	}
	return 1;	/* found: stop */
}

static int command_show(struct ctl *ctl)
{
	const char *run = ctl->args->operands[0];
	struct view view = view_of(ctl, ctl->args->client);
	int ret;

	ret = view_sync_run(&view, run, VIEW_SYNC_WAIT, NULL);
	if (ret < 0)
		return ret;
	ret = index_for_each_run(ctl->index, ctl->args->client, show_run_fields, ctl);
	if (ret == 0) {
		fprintf(stderr, "artifactctl: client %s has no run %s\n", ctl->args->client, run);
		ctl->status = EXIT_PROBLEMS;
		return 0;
	}
	if (ret < 0)
		return ret;
	return index_for_each_artifact(ctl->index, ctl->args->client, run, list_artifact, ctl);
}

static int command_find(struct ctl *ctl)
{
	struct index_artifact_query query = {
		.client = ctl->args->client,
		.sha256 = ctl->args->sha256,
		.agent_id = ctl->args->agent,
		.workflow_id = ctl->args->workflow,
	};
	int ret = refresh(ctl);

	if (ret < 0)
		return ret;
	if (ctl->out)
		json_list(ctl, "artifacts");
	return index_find_artifacts(ctl->index, &query, list_artifact, ctl);
}

/* --- reindex ---------------------------------------------------------------------- */

struct reindex {
	struct ctl *ctl;
	struct view view;
	unsigned long runs;
};

static int reindex_run(void *ctx, const char *run)
{
	struct reindex *r = ctx;

	progress(r->ctl, false, "reindexing client %s: %lu runs", r->view.client, r->runs);
	r->runs++;
	/* Forced: parsed again even where the stamps agree; unchanged files keep their hash. */
	return view_sync_run(&r->view, run, VIEW_SYNC_FORCE | VIEW_SYNC_WAIT, NULL) < 0 ? -EIO : 0;
}

static int reindex_client(void *ctx, const char *client)
{
	struct ctl *ctl = ctx;
	struct reindex r = { .ctl = ctl, .view = view_of(ctl, client) };
	int ret;

	ret = store_for_each_run(&ctl->store, client, reindex_run, &r);
	if (ret == 0)
		ret = view_reconcile(&r.view);	/* drops the runs that are gone */
	progress(ctl, true, "reindexed client %s: %lu runs", client, r.runs);
	if (ctl->out)
		json_array_append_new(json_list(ctl, "clients"),
				      json_pack("{s:s, s:I}", "client", client,
						"runs", (json_int_t)r.runs));
	else
		printf("%s: %lu runs indexed\n", client, r.runs);
	return ret < 0 ? -EIO : 0;
}

static int command_reindex(struct ctl *ctl)
{
	int ret;

	if (ctl->out)
		json_list(ctl, "clients");
	ret = for_each_client(ctl, reindex_client, ctl);

	progress_end(ctl);
	return ret;
}

/* --- verify, repair ----------------------------------------------------------------- */

struct verify {
	struct ctl *ctl;
	struct view view;
	struct check_report *report;
};

static int verify_run(void *ctx, const char *run)
{
	struct verify *v = ctx;

	progress(v->ctl, false, "verifying client %s: run %s", v->view.client, run);
	return check_run(&v->view, run, v->ctl->args->read_data ? CHECK_READ_DATA : 0,
			 v->report);
}

static int verify_client(void *ctx, const char *client)
{
	struct verify *v = ctx;
	uint64_t runs = v->report->runs;
	int ret;

	v->view = view_of(v->ctl, client);
	ret = store_for_each_run(&v->ctl->store, client, verify_run, v);
	progress(v->ctl, true, "verified client %s: %llu runs", client,
		 (unsigned long long)(v->report->runs - runs));
	return ret;
}

static void print_problems(struct ctl *ctl, const struct check_report *report)
{
	for (size_t i = 0; i < report->count; i++) {
		const struct check_problem *p = &report->problems[i];

		if (ctl->out) {
			json_t *problem = json_pack("{s:s, s:s}", "kind", check_kind_name(p->kind),
						    "run", p->run);

			json_set_text(problem, "client", p->client);
			json_set_text(problem, "file", p->file);
			json_set_text(problem, "detail", p->detail);
			json_object_set_new(problem, "repairable",
					    json_boolean(p->repairable));
			json_array_append_new(json_list(ctl, "problems"), problem);
			continue;
		}
		printf("%s: %s/%s%s%s: %s\n", check_kind_name(p->kind),
		       p->client ? p->client : "(legacy)", p->run, p->file ? "/" : "",
		       p->file ? p->file : "", p->detail);
	}
	if (ctl->out) {
		json_list(ctl, "problems");
		json_object_set_new(ctl->out, "runs", json_integer((json_int_t)report->runs));
		json_object_set_new(ctl->out, "files", json_integer((json_int_t)report->files));
		json_object_set_new(ctl->out, "bytes_hashed",
				    json_integer((json_int_t)report->bytes_hashed));
	} else {
		printf("%llu runs, %llu files checked%s: %zu problems\n",
		       (unsigned long long)report->runs, (unsigned long long)report->files,
		       ctl->args->read_data ? ", contents hashed" : "", report->count);
	}
}

static int command_verify(struct ctl *ctl)
{
	struct check_report report = { 0 };
	struct verify v = { .ctl = ctl, .report = &report };
	int ret;

	ret = for_each_client(ctl, verify_client, &v);
	if (ret == 0 && !ctl->args->client)
		ret = check_legacy_runs(&ctl->store, &report);
	progress_end(ctl);
	if (ret == 0) {
		print_problems(ctl, &report);
		if (report.count)
			ctl->status = EXIT_PROBLEMS;
	}
	check_report_release(&report);
	return ret;
}

/* How long repair waits for a run that was just written to settle, at most. */
#define REPAIR_WAIT_MS 10000
/* The grace of check_repair_run(): a writer that copied a file in adds its entry. */
#define REPAIR_GRACE_MS 2000

struct repair {
	struct ctl *ctl;
	struct writer *writer;
	struct check_repair_result total;
	unsigned long runs;
};

static int repair_run(void *ctx, const char *run)
{
	struct repair *r = ctx;
	struct check_repair_result result = { 0 };
	unsigned int waited = 0, again;

	progress(r->ctl, false, "repairing client %s: run %s", r->writer->view->client, run);
	while ((again = check_repair_run(r->writer, run, REPAIR_GRACE_MS, CHECK_REPAIR_ALL,
					 &result)) && waited < REPAIR_WAIT_MS) {
		usleep(again * 1000);
		waited += again;
	}
	if (again) {
		fprintf(stderr, "artifactctl: client %s run %s: still being written after %u ms; "
			"not repaired\n", r->writer->view->client, run, waited);
		r->ctl->status = EXIT_PROBLEMS;
	}
	if (result.error)
		r->ctl->status = EXIT_PROBLEMS;	/* logged and audited by the core */
	if (!result.reindexed)
		view_sync_run(r->writer->view, run, VIEW_SYNC_WAIT, NULL);
	r->runs++;
	r->total.added += result.added;
	r->total.folded += result.folded;
	r->total.dropped += result.dropped;
	r->total.resized += result.resized;
	r->total.rebuilt += result.rebuilt;
	return 0;
}

static int repair_client(void *ctx, const char *client)
{
	struct ctl *ctl = ctx;
	struct view view = view_of(ctl, client);
	struct repair r = { .ctl = ctl };
	unsigned int recovered;
	int ret;

	ret = writer_open(&view, &ctl->args->promote, &r.writer);
	if (ret < 0)
		return ret;
	/* Promotions a crash cut short come first: they add entries themselves. */
	recovered = landing_recover(r.writer);
	ret = store_for_each_run(&ctl->store, client, repair_run, &r);
	if (ret == 0)
		ret = view_reconcile(&view) < 0 ? -EIO : 0;
	writer_close(r.writer);
	progress(ctl, true, "repaired client %s: %lu runs", client, r.runs);
	if (ctl->out) {
		json_array_append_new(json_list(ctl, "clients"),
				      json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
						"client", client, "runs", (json_int_t)r.runs,
						"intents_completed", (json_int_t)recovered,
						"entries_added", (json_int_t)r.total.added,
						"duplicates_folded", (json_int_t)r.total.folded,
						"entries_dropped", (json_int_t)r.total.dropped,
						"sizes_corrected", (json_int_t)r.total.resized,
						"metadata_rebuilt", (json_int_t)r.total.rebuilt));
	} else {
		printf("%s: %lu runs; %u intents completed, %u entries added, %u duplicates "
		       "folded, %u entries dropped, %u sizes corrected, %u metadata.json rebuilt\n",
		       client, r.runs, recovered, r.total.added, r.total.folded, r.total.dropped,
		       r.total.resized, r.total.rebuilt);
	}
	return ret;
}

static int command_repair(struct ctl *ctl)
{
	int ret;

	if (ctl->out)
		json_list(ctl, "clients");
	ret = for_each_client(ctl, repair_client, ctl);

	progress_end(ctl);
	return ret;
}

/* --- migrate-legacy, gc --------------------------------------------------------------- */

/* One outcome of a change to a run, for migrate-legacy and gc. */
static void report_run_change(struct ctl *ctl, const char *client, const char *run,
			      const char *done, int ret, const char *reason)
{
	if (ret < 0)
		ctl->status = EXIT_PROBLEMS;
	if (ctl->out) {
		json_t *item = json_pack("{s:s, s:s, s:s}", "client", client, "run", run,
					 "result", ret < 0 ? audit_errno_name(-ret) :
					 ctl->args->dry_run ? "dry_run" : "ok");

		if (ret < 0)
			json_set_text(item, "reason", reason);
		json_array_append_new(json_list(ctl, "runs"), item);
	} else if (ret < 0) {
		printf("%s/%s: refused: %s\n", client, run, reason);
	} else {
		printf("%s/%s: %s%s\n", client, run, ctl->args->dry_run ? "would be " : "", done);
	}
}

static int migrate_run(void *ctx, const char *run)
{
	struct ctl *ctl = ctx;
	const char *client = ctl->args->to;
	struct view view = view_of(ctl, client);
	char reason[AUDIT_REASON_SIZE] = "";
	int ret = 0;

	ret = landing_migrate_legacy(&view, run, ctl->args->dry_run, reason);
	report_run_change(ctl, client, run, "moved from the legacy layout", ret, reason);
	return 0;
}

static int command_migrate_legacy(struct ctl *ctl)
{
	if (ctl->out)
		json_list(ctl, "runs");
	return store_for_each_legacy_run(&ctl->store, migrate_run, ctl);
}

/* The expired runs of one client, copied out of the index walk. */
struct expired_runs {
	char **runs;
	size_t count;
	int64_t now;
};

static int collect_expired(void *ctx, const struct index_run_row *row)
{
	struct expired_runs *e = ctx;
	char **grown;

	if (row->expires_at_unix == INT64_MIN || row->expires_at_unix > e->now)
		return 0;
	grown = realloc(e->runs, (e->count + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	e->runs = grown;
	grown[e->count] = strdup(row->run);
	return grown[e->count++] ? 0 : -ENOMEM;
}

static int collect_client(void *ctx, const char *client)
{
	struct ctl *ctl = ctx;
	struct expired_runs expired = { .now = time(NULL) };
	struct view view = view_of(ctl, client);
	struct writer *writer = NULL;
	int ret;

	ret = view_reconcile(&view) < 0 ? -EIO : 0;
	if (ret == 0)
		ret = index_for_each_run(ctl->index, client, collect_expired, &expired);
	if (ret == 0 && expired.count && !ctl->args->dry_run)
		ret = writer_open(&view, &ctl->args->promote, &writer);
	for (size_t i = 0; ret == 0 && i < expired.count; i++) {
		int deleted = 0;

		progress(ctl, false, "collecting client %s: run %s", client, expired.runs[i]);
		if (writer)
			deleted = deletion_delete_run(writer, expired.runs[i], DELETION_ONLY_EXPIRED,
						      "expired (artifactctl gc --expired)");
		report_run_change(ctl, client, expired.runs[i], "deleted (expired)", deleted,
				  deleted == -ESTALE ? "no longer expired" : strerror(-deleted));
	}
	writer_close(writer);
	for (size_t i = 0; i < expired.count; i++)
		free(expired.runs[i]);
	free(expired.runs);
	return ret;
}

static int command_gc(struct ctl *ctl)
{
	int ret;

	if (ctl->out)
		json_list(ctl, "runs");
	ret = for_each_client(ctl, collect_client, ctl);
	progress_end(ctl);
	return ret;
}

/* --- promote, audit ---------------------------------------------------------------- */

static int promote_file(struct ctl *ctl, struct writer *writer, const char *path)
{
	char reason[AUDIT_REASON_SIZE] = "", staged[64], *copy = strdup(path);
	const char *name = copy ? basename(copy) : NULL, *why;
	struct landing l = {
		.run = ctl->args->run,
		.agent_id = ctl->args->promote.agent_id,
		.workflow_id = ctl->args->promote.workflow_id,
		.user_directive = ctl->args->promote.user_directive,
	};
	struct timespec now;
	struct stat st;
	int fd = -1, ret;

	if (!name) {
		ret = -ENOMEM;
		goto out;
	}
	l.name = name;
	if (names_check_artifact(name, &why) < 0) {
		ret = -EINVAL;
		snprintf(reason, sizeof(reason), "file name %s", why);
		goto out;
	}
	/* Non-blocking: a FIFO named on the command line must not hang the tool. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ret = fd < 0 ? -errno : -EINVAL;
		snprintf(reason, sizeof(reason), "cannot read %s: %s", path,
			 fd < 0 ? strerror(-ret) : "not a regular file");
		goto out;
	}
	ret = landing_stage_copy(writer, fd, UINT64_MAX, staged, &l, reason);
	if (ret < 0)
		goto out;
	clock_gettime(CLOCK_REALTIME, &now);
	meta_format_time(now.tv_sec, now.tv_nsec, l.generated_at);
	ret = landing_land_file(writer, writer->work_fd, staged, &l, reason);
	if (ret < 0)
		unlinkat(writer->work_fd, staged, 0);
out:
	if (fd >= 0)
		close(fd);
	audit_record(writer->view, INDEX_ACTION_PROMOTE, ctl->args->run, name ? name : path,
		     ret == 0 ? (int64_t)l.size : -1, ret == 0 ? l.sha256 : NULL, -ret,
		     ret ? reason : NULL);
	if (ret < 0)
		ctl->status = EXIT_PROBLEMS;
	if (ctl->out) {
		json_t *item = json_pack("{s:s, s:s, s:s}", "path", path, "run", ctl->args->run,
					 "result", ret ? audit_errno_name(-ret) : "ok");

		json_set_text(item, "filename", name);
		if (ret == 0) {
			json_object_set_new(item, "size", json_integer((json_int_t)l.size));
			json_set_text(item, "sha256", l.sha256);
		} else {
			json_set_text(item, "reason", reason);
		}
		json_array_append_new(json_list(ctl, "promoted"), item);
	} else if (ret == 0) {
		printf("%s/%s/%s: %llu bytes, sha256 %s\n", ctl->args->client, ctl->args->run,
		       name, (unsigned long long)l.size, l.sha256);
	} else {
		fprintf(stderr, "artifactctl: %s: not promoted: %s\n", path, reason);
	}
	free(copy);
	return 0;
}

static int command_promote(struct ctl *ctl)
{
	struct view view = view_of(ctl, ctl->args->client);
	struct writer *writer;
	int ret;

	ret = writer_open(&view, &ctl->args->promote, &writer);
	if (ret < 0)
		return ret;
	if (ctl->out)
		json_list(ctl, "promoted");
	for (int i = 0; i < ctl->args->n_operands; i++)
		promote_file(ctl, writer, ctl->args->operands[i]);
	writer_close(writer);
	return 0;
}

static int list_audit_row(void *ctx, const struct index_audit *row)
{
	struct ctl *ctl = ctx;
	char *line;
	int ret;

	ret = audit_format_row(row, true, &line);
	if (ret < 0)
		return ret;
	if (ctl->out) {
		json_array_append_new(json_list(ctl, "audit"), json_loads(line, 0, NULL));
	} else {
		char time_text[META_TIME_SIZE];

		meta_format_time(row->time_ns / 1000000000, (long)(row->time_ns % 1000000000),
				 time_text);
		printf("%s %s %s %s/%s %s%s%s\n", time_text, row->client,
		       index_action_name(row->action), row->run ? row->run : "-",
		       row->filename ? row->filename : "-",
		       row->error ? audit_errno_name(row->error) : "ok",
		       row->reason ? ": " : "", row->reason ? row->reason : "");
	}
	free(line);
	return 0;
}

static int command_audit(struct ctl *ctl)
{
	if (ctl->out)
		json_list(ctl, "audit");
	return index_for_each_audit(ctl->index, ctl->args->client,
				    ctl->args->since_seconds * 1000000000, list_audit_row, ctl);
}

/* --- the command line --------------------------------------------------------------- */

struct command {
	const char *name;
	int (*run)(struct ctl *ctl);
	unsigned int accepts;	/* enum ctl_option bits */
	unsigned int requires;	/* of those, the ones that must be given */
	int min_operands, max_operands;
	const char *synopsis;
};

static const struct command commands[] = {
	{ "ls", command_ls, OPT_CLIENT, 0, 0, 0, "ls [--client C]" },
	{ "show", command_show, OPT_CLIENT, OPT_CLIENT, 1, 1, "show --client C RUN" },
	{ "find", command_find, OPT_CLIENT | OPT_SHA256 | OPT_WORKFLOW | OPT_AGENT, 0, 0, 0,
	  "find [--client C] --sha256 H | --workflow W | --agent A" },
	{ "reindex", command_reindex, OPT_CLIENT, 0, 0, 0, "reindex [--client C]" },
	{ "verify", command_verify, OPT_CLIENT | OPT_READ_DATA, 0, 0, 0,
	  "verify [--client C] [--read-data]" },
	{ "repair", command_repair, OPT_CLIENT, 0, 0, 0, "repair [--client C]" },
	{ "migrate-legacy", command_migrate_legacy, OPT_TO | OPT_DRY_RUN, 0, 0, 0,
	  "migrate-legacy [--to CLIENT] [--dry-run]" },
	{ "gc", command_gc, OPT_EXPIRED | OPT_DRY_RUN | OPT_CLIENT, OPT_EXPIRED, 0, 0,
	  "gc --expired [--dry-run] [--client C]" },
	{ "promote", command_promote,
	  OPT_CLIENT | OPT_RUN | OPT_AGENT | OPT_WORKFLOW | OPT_DIRECTIVE | OPT_RETENTION |
	  OPT_FILE_MODE, OPT_CLIENT | OPT_RUN, 1, INT32_MAX,
	  "promote --client C --run R [--agent A] [--workflow W] [--directive D] "
	  "[--retention DAYS] [--file-mode MODE] FILE..." },
	{ "audit", command_audit, OPT_CLIENT | OPT_SINCE, 0, 0, 0,
	  "audit [--client C] [--since TIME]" },
};

static void print_help(void)
{
	printf("usage: artifactctl [--store STORE] [--index PATH] [--json] [--verbose] "
	       "COMMAND ...\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  %s\n", commands[i].synopsis);
	printf("\nSTORE defaults to $ARTIFACTFS_STORE; the index to STORE/%s/%s.\n"
	       "Exit status: 0 done (verify: clean), 1 problems found or a change refused,\n"
	       "2 bad command line, 3 store or index unusable.  See artifactctl(8).\n",
	       STORE_PRIVATE_DIR, STORE_INDEX_FILE);
}

/* Parses an unsigned number option.  Returns 0 or -EINVAL (reported). */
static int parse_number(const char *option, const char *text, int base, unsigned long max,
			unsigned long *value)
{
	char *end;

	errno = 0;
	*value = strtoul(text, &end, base);
	if (errno || !*text || *end || *value > max || text[0] == '-') {
		usage_error("invalid %s '%s'", option, text);
		return -EINVAL;
	}
	return 0;
}

/* How artifactctl spells the promotion options, in its messages. */
static const char *const promote_option_names[PROMOTE_OPTION_COUNT] = {
	[PROMOTE_OPTION_AGENT] = "--agent",
	[PROMOTE_OPTION_WORKFLOW] = "--workflow",
	[PROMOTE_OPTION_DIRECTIVE] = "--directive",
	[PROMOTE_OPTION_RETENTION] = "--retention",
	[PROMOTE_OPTION_FILE_MODE] = "--file-mode",
	[PROMOTE_OPTION_RUN] = "--run",
	[PROMOTE_OPTION_TEMPORARY_IDLE] = "temporary_idle",
};

/* Parses --since: seconds since the epoch, or an RFC 3339 time.  Returns 0 or -EINVAL (reported). */
static int parse_since(const char *text, int64_t *seconds)
{
	char *end;

	errno = 0;
	*seconds = strtoll(text, &end, 10);
	if (*text && !*end && !errno && *seconds >= 0 && *seconds < INT64_MAX / 1000000000)
		return 0;
	if (meta_parse_time(text, seconds) == 0 && *seconds >= 0 &&
	    *seconds < INT64_MAX / 1000000000)
		return 0;
	usage_error("invalid --since '%s': use seconds since the epoch or an RFC 3339 time",
		    text);
	return -EINVAL;
}

/* Checks an id option.  Returns 0 or -EINVAL (reported). */
static int check_id_option(const char *option, const char *value)
{
	const char *reason;

	if (value && names_check_id(value, &reason) < 0) {
		usage_error("invalid %s '%s': it %s", option, value, reason);
		return -EINVAL;
	}
	return 0;
}

/*
 * Parses argv into *args and finds the command.  Returns the command,
 * or NULL after one line on stderr (or the help, with *help set).
 */
static const struct command *parse_args(int argc, char **argv, struct ctl_args *args,
					bool *help)
{
	/* Above the enum ctl_option bits, which are getopt codes too. */
	enum { LONG_STORE = 0x10000, LONG_INDEX, LONG_JSON, LONG_VERBOSE };
	static const struct option options[] = {
		{ "store", required_argument, NULL, LONG_STORE },
		{ "index", required_argument, NULL, LONG_INDEX },
		{ "json", no_argument, NULL, LONG_JSON },
		{ "verbose", no_argument, NULL, LONG_VERBOSE },
		{ "client", required_argument, NULL, OPT_CLIENT },
		{ "run", required_argument, NULL, OPT_RUN },
		{ "sha256", required_argument, NULL, OPT_SHA256 },
		{ "workflow", required_argument, NULL, OPT_WORKFLOW },
		{ "agent", required_argument, NULL, OPT_AGENT },
		{ "to", required_argument, NULL, OPT_TO },
		{ "since", required_argument, NULL, OPT_SINCE },
		{ "read-data", no_argument, NULL, OPT_READ_DATA },
		{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
		{ "expired", no_argument, NULL, OPT_EXPIRED },
		{ "directive", required_argument, NULL, OPT_DIRECTIVE },
		{ "retention", required_argument, NULL, OPT_RETENTION },
		{ "file-mode", required_argument, NULL, OPT_FILE_MODE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const struct command *command = NULL;
	char problem[256];
	unsigned long number;
	int c;

	promote_options_init(&args->promote);
	args->store_path = getenv("ARTIFACTFS_STORE");
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+hV", options, NULL)) != -1 || optind < argc) {
		if (c == -1) {
			/* An operand: the command, or one of its arguments. */
			if (!args->command)
				args->command = argv[optind];
			else
				argv[args->n_operands++] = argv[optind];
			optind++;
			continue;
		}
		if (c > 0 && c <= OPT_FILE_MODE && (c & (c - 1)) == 0)
			args->given |= (unsigned int)c;
		switch (c) {
		case 'h':
			*help = true;
			print_help();
			return NULL;
		case 'V':
			*help = true;
			printf("artifactctl version %s\n", ARTIFACTFS_VERSION);
			return NULL;
		case LONG_STORE: args->store_path = optarg; break;
		case LONG_INDEX: args->index_path = optarg; break;
		case LONG_JSON: args->json = true; break;
		case LONG_VERBOSE: args->verbose = true; break;
		case OPT_CLIENT: args->client = optarg; break;
		case OPT_RUN: args->run = optarg; break;
		case OPT_SHA256: args->sha256 = optarg; break;
		case OPT_WORKFLOW: args->workflow = optarg; break;
		case OPT_AGENT: args->agent = optarg; break;
		case OPT_TO: args->to = optarg; break;
		case OPT_SINCE: args->since = optarg; break;
		case OPT_READ_DATA: args->read_data = true; break;
		case OPT_DRY_RUN: args->dry_run = true; break;
		case OPT_EXPIRED: args->expired = true; break;
		case OPT_DIRECTIVE: args->promote.user_directive = optarg; break;
		case OPT_RETENTION:
			if (parse_number("--retention", optarg, 10, UINT32_MAX, &number) < 0)
				return NULL;
			args->promote.retention_days = (unsigned int)number;
			break;
		case OPT_FILE_MODE:
			if (parse_number("--file-mode", optarg, 8, 07777, &number) < 0)
				return NULL;
			args->promote.file_mode = (mode_t)number;
			break;
		default:
			usage_error("unknown option '%s'", argv[optind - 1]);
			return NULL;
		}
	}
	args->operands = argv;
	if (!args->command) {
		usage_error("no command given");
		return NULL;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, args->command) == 0)
			command = &commands[i];
	if (!command) {
		usage_error("unknown command '%s'", args->command);
		return NULL;
	}
	for (unsigned int bit = 0; bit < sizeof(option_names) / sizeof(option_names[0]); bit++) {
		unsigned int option = 1u << bit;

		if ((args->given & option) && !(command->accepts & option)) {
			usage_error("%s is not an option of %s", option_names[bit], command->name);
			return NULL;
		}
		if ((command->requires & option) && !(args->given & option)) {
			usage_error("%s needs %s; usage: artifactctl %s", command->name,
				    option_names[bit], command->synopsis);
			return NULL;
		}
	}
	if (args->n_operands < command->min_operands || args->n_operands > command->max_operands) {
		usage_error("wrong number of arguments; usage: artifactctl %s", command->synopsis);
		return NULL;
	}
	if (strcmp(command->name, "find") == 0 &&
	    !!args->sha256 + !!args->workflow + !!args->agent != 1) {
		usage_error("find needs exactly one of --sha256, --workflow, --agent");
		return NULL;
	}
	if (args->sha256 && (strlen(args->sha256) != 64 ||
			     strspn(args->sha256, "0123456789abcdef") != 64)) {
		usage_error("invalid --sha256 '%s': use 64 lowercase hex digits", args->sha256);
		return NULL;
	}
	if (!args->to)
		args->to = "public";
	if (check_id_option("--client", args->client) < 0 ||
	    check_id_option("--to", args->to) < 0)
		return NULL;
	if (args->run && names_check_run(args->run, NULL) < 0) {
		usage_error("invalid --run '%s': not a run id", args->run);
		return NULL;
	}
	/* For find they are what to look for; for promote, what lands. */
	if (strcmp(command->name, "promote") == 0) {
		if (args->agent)
			args->promote.agent_id = args->agent;
		if (args->workflow)
			args->promote.workflow_id = args->workflow;
	}
	if (args->since && parse_since(args->since, &args->since_seconds) < 0)
		return NULL;
	if (promote_options_validate(&args->promote, promote_option_names, problem,
				     sizeof(problem)) < 0) {
		usage_error("%s", problem);
		return NULL;
	}
	if (!args->store_path || !*args->store_path) {
		usage_error("no store given: use --store STORE or set ARTIFACTFS_STORE");
		return NULL;
	}
	if (args->index_path && !*args->index_path) {
		usage_error("invalid --index: it is empty");
		return NULL;
	}
	return command;
}

int main(int argc, char **argv)
{
	struct ctl_args args = { 0 };
	struct ctl ctl = { .args = &args };
	const struct command *command;
	char *index_path = NULL;
	bool help = false;
	int ret;

	log_set_program("artifactctl");
	command = parse_args(argc, argv, &args, &help);
	if (!command)
		return help ? EXIT_OK : EXIT_USAGE;
	/* The core's lines for each change are for daemons' logs; --verbose shows them. */
	log_set_level(args.verbose ? LOG_LEVEL_INFO : LOG_LEVEL_WARNING);
	ctl.progress = isatty(STDERR_FILENO);
	if (store_open(args.store_path, &ctl.store) < 0)
		return EXIT_ENVIRONMENT;
	index_path = store_resolve_index_path(&ctl.store, args.index_path);
	if (!index_path || index_open(index_path, &ctl.index) < 0) {
		store_close(&ctl.store);
		free(index_path);
		return EXIT_ENVIRONMENT;
	}
	if (args.json)
		ctl.out = json_object();
	ret = command->run(&ctl);
	if (ret < 0) {
		fprintf(stderr, "artifactctl: %s failed: %s\n", command->name, strerror(-ret));
		ctl.status = EXIT_ENVIRONMENT;
	}
	if (ctl.out) {
		json_object_set_new(ctl.out, "command", json_string(command->name));
		json_object_set_new(ctl.out, "exit_status", json_integer(ctl.status));
		json_dumpf(ctl.out, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		fputc('\n', stdout);
	}
	json_decref(ctl.out);
	index_close(ctl.index);
	store_close(&ctl.store);
	free(index_path);
	return ctl.status;
}
