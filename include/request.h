/*
 * request.h - promotion requests: the JSON an agent writes into promote/.
 *
 *   {"run_id": "...", "files": ["...", ...], "workflow_id": "...",
 *    "agent_id": "...", "user_directive": "..."}
 *
 * ("filename": "..." may stand for a one-file "files").  Parsing is
 * strict about types and tolerant of nothing else: the document comes
 * from an untrusted agent.  Names are checked by the promoter, not here.
 */
#ifndef ARTIFACTFS_REQUEST_H
#define ARTIFACTFS_REQUEST_H

#include <stddef.h>

/* Most files one request may name. */
#define REQUEST_FILES_MAX 10000

struct request {
	char *run_id;
	char **files;
	size_t n_files;
	char *workflow_id;	/* NULL when absent: the mount's default */
	char *agent_id;		/* NULL when absent */
	char *user_directive;	/* NULL when absent */
};

/*
 * Parses a request of len bytes.  Returns 0; -EINVAL for anything but an
 * object with a string run_id and either a non-empty array of strings
 * "files" or a string "filename" (not both), optional string fields, no
 * other field, at most REQUEST_FILES_MAX files;
 * -ENOMEM.  On -EINVAL a one-line reason goes to problem.
 * Release *request with request_release() after any return.
 */
int request_parse(const char *buf, size_t len, struct request *request,
		  char *problem, size_t problem_size);
void request_release(struct request *request);

#endif
