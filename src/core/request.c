/*
 * request.c - parsing promotion requests (see request.h).
 *
 * jansson does the JSON; this file only checks the shape.  Nesting depth
 * is bounded by jansson itself (JSON_PARSER_MAX_DEPTH), so a hostile
 * document cannot exhaust the stack.
 */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

static int refuse(char *problem, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int refuse(char *problem, size_t size, const char *fmt, ...)
{
	va_list ap;

	if (problem && size) {
		va_start(ap, fmt);
		vsnprintf(problem, size, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/*
 * Copies a JSON string.  Returns 0, -EINVAL, -ENOMEM.  (No string holds a
 * NUL: jansson refuses "\u0000" unless asked not to.)
 */
static int take_string(json_t *value, char **out)
{
	if (!json_is_string(value))
		return -EINVAL;
	*out = strdup(json_string_value(value));
	return *out ? 0 : -ENOMEM;
}

static int take_optional(json_t *root, const char *key, char **out,
			 char *problem, size_t size)
{
	json_t *value = json_object_get(root, key);
	int ret;

	if (!value)
		return 0;
	ret = take_string(value, out);
	if (ret == -EINVAL)
		return refuse(problem, size, "field '%s' is not a string", key);
	return ret;
}

static int take_files(json_t *root, struct request *request, char *problem, size_t size)
{
	json_t *files = json_object_get(root, "files");
	json_t *filename = json_object_get(root, "filename");
	json_t *item;
	size_t i;
	int ret;

	if (files && filename)
		return refuse(problem, size, "give either 'files' or 'filename', not both");
	if (filename) {
		request->files = calloc(1, sizeof(*request->files));
		if (!request->files)
			return -ENOMEM;
		ret = take_string(filename, &request->files[0]);
		if (ret == -EINVAL)
			return refuse(problem, size, "field 'filename' is not a string");
		if (ret == 0)
			request->n_files = 1;
		return ret;
	}
	if (!json_is_array(files) || json_array_size(files) == 0)
		return refuse(problem, size, "field 'files' is missing or not a non-empty array");
	if (json_array_size(files) > REQUEST_FILES_MAX)
		return refuse(problem, size, "field 'files' names more than %d files",
			      REQUEST_FILES_MAX);
	request->files = calloc(json_array_size(files), sizeof(*request->files));
	if (!request->files)
		return -ENOMEM;
	json_array_foreach(files, i, item) {
		ret = take_string(item, &request->files[i]);
		if (ret == -EINVAL)
			return refuse(problem, size, "field 'files[%zu]' is not a string", i);
		if (ret < 0)
			return ret;
		request->n_files = i + 1;
	}
	return 0;
}

int request_parse(const char *buf, size_t len, struct request *request,
		  char *problem, size_t problem_size)
{
	static const char *const known[] = {
		"run_id", "files", "filename", "workflow_id", "agent_id", "user_directive",
	};
	json_error_t error;
	const char *key;
	json_t *root, *value;
	int ret;

	memset(request, 0, sizeof(*request));
	if (problem && problem_size)
		problem[0] = '\0';
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &error);
	if (!root)
		return refuse(problem, problem_size, "invalid JSON at line %d: %s",
			      error.line, error.text);
	if (!json_is_object(root)) {
		ret = refuse(problem, problem_size, "the request is not a JSON object");
		goto out;
	}
	json_object_foreach(root, key, value) {
		size_t i;
		for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (i == sizeof(known) / sizeof(known[0])) {
			/* %.64s: the key is the agent's, keep the line short. */
			ret = refuse(problem, problem_size, "unknown field '%.64s'", key);
			goto out;
		}
	}
	ret = take_string(json_object_get(root, "run_id"), &request->run_id);
	if (ret == -EINVAL)
		ret = refuse(problem, problem_size, "field 'run_id' is missing or not a string");
	if (ret < 0)
		goto out;
	if ((ret = take_files(root, request, problem, problem_size)) < 0 ||
	    (ret = take_optional(root, "workflow_id", &request->workflow_id, problem, problem_size)) < 0 ||
	    (ret = take_optional(root, "agent_id", &request->agent_id, problem, problem_size)) < 0 ||
	    (ret = take_optional(root, "user_directive", &request->user_directive, problem, problem_size)) < 0)
		goto out;
	ret = 0;
out:
	json_decref(root);
	return ret;
}

void request_release(struct request *request)
{
	free(request->run_id);
	if (request->files)
		for (size_t i = 0; i < request->n_files; i++)
			free(request->files[i]);
	free(request->files);
	free(request->workflow_id);
	free(request->agent_id);
	free(request->user_directive);
	memset(request, 0, sizeof(*request));
}
