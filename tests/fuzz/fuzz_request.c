/*
 * fuzz_request.c - libFuzzer target for the promotion request parser
 * (src/request.c): the JSON an untrusted agent writes into promote/.
 *
 * For any input: request_parse() returns 0, -EINVAL or -ENOMEM; a refusal
 * comes with a NUL-terminated one-line reason; request_release() leaves a
 * zeroed struct.  An accepted request has a run_id and 1 to
 * REQUEST_FILES_MAX file names, all C strings.  Then the checks the
 * promoter applies before any name reaches a path (names_check_run,
 * names_check_artifact, names_check_text on the optional fields) and the
 * printable copy used for .status are run on whatever the agent sent.
 */
#include <errno.h>
#include <string.h>

#include "fuzz_common.h"
#include "names.h"
#include "request.h"

static void check_name_use(const char *name)
{
	char printable[NAMES_FILE_MAX * 4 + 1];

	FUZZ_CHECK(name != NULL);
	(void)names_check_run(name, NULL);
	if (names_check_artifact(name, NULL) == 0) {
		/* An accepted file name never leaves its directory. */
		FUZZ_CHECK(strchr(name, '/') == NULL && name[0] != '.');
		FUZZ_CHECK(strlen(name) <= NAMES_FILE_MAX);
	}
	names_make_printable(name, printable, sizeof(printable));
	FUZZ_CHECK(fuzz_plain_text(printable, strlen(printable)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct request r;
	char problem[256];
	int ret;

	memset(problem, 'x', sizeof(problem));
	ret = request_parse((const char *)data, size, &r, problem, sizeof(problem));
	FUZZ_CHECK(ret == 0 || ret == -EINVAL || ret == -ENOMEM);
	FUZZ_CHECK(memchr(problem, '\0', sizeof(problem)) != NULL);
	if (ret == -EINVAL) {
		char shown[sizeof(problem)];

		FUZZ_CHECK(problem[0] != '\0');
		/*
		 * The reason may quote the agent's own key (control characters
		 * and all): what .status and the log show is its printable copy.
		 */
		names_make_printable(problem, shown, sizeof(shown));
		FUZZ_CHECK(fuzz_plain_text(shown, strlen(shown)));
	}
	if (ret == 0) {
		FUZZ_CHECK(r.run_id != NULL);
		FUZZ_CHECK(r.n_files >= 1 && r.n_files <= REQUEST_FILES_MAX);
		FUZZ_CHECK(r.files != NULL);
		check_name_use(r.run_id);
		for (size_t i = 0; i < r.n_files; i++)
			check_name_use(r.files[i]);
		if (r.agent_id)
			(void)names_check_text(r.agent_id, strlen(r.agent_id), NULL);
		if (r.workflow_id)
			(void)names_check_text(r.workflow_id, strlen(r.workflow_id), NULL);
		if (r.user_directive)
			(void)names_check_text(r.user_directive, strlen(r.user_directive), NULL);
	}
	request_release(&r);
	FUZZ_CHECK(r.run_id == NULL && r.files == NULL && r.n_files == 0 &&
		   r.agent_id == NULL && r.workflow_id == NULL && r.user_directive == NULL);
	return 0;
}
