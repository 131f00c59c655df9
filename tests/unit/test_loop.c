/*
 * test_loop.c - how the request loop (src/daemon/loop.c) ends, over a
 * session whose reads of the device are scripted (libfuse's custom I/O):
 * an unmount, an unmount that raced a read, and a real abort.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"

/* What each read of the device does: fail with these errnos in turn, then ENODEV. */
struct script {
	int errors[4];
	size_t n_errors, reads;
};

static ssize_t scripted_read(int fd, void *buf, size_t len, void *userdata)
{
	struct script *script = userdata;
	size_t at = script->reads++;

	(void)fd;
	(void)buf;
	(void)len;
	errno = at < script->n_errors ? script->errors[at] : ENODEV;
	return -1;
}

static ssize_t unused_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)fd;
	(void)iov;
	(void)count;
	(void)userdata;
	return -EIO;
}

/*
 * Runs the loop over a session that reads as script says, on a device
 * whose other end is closed, as after an unmount.  Returns loop_run()'s
 * result.
 */
static int run_script(struct script *script)
{
	static const struct fuse_lowlevel_ops no_ops;
	char *argv[] = { "test_loop", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(1, argv);
	struct fuse_custom_io io = { .read = scripted_read, .writev = unused_writev };
	struct fuse_session *session;
	int device[2], ret;

	assert_int_equal(pipe2(device, O_CLOEXEC), 0);
	close(device[1]);
	session = fuse_session_new(&args, &no_ops, sizeof(no_ops), script);
	fuse_opt_free_args(&args);
	assert_non_null(session);
	/* The session owns device[0] from here on. */
	assert_int_equal(fuse_session_custom_io(session, &io, device[0]), 0);
	ret = loop_run(session, 1, 1);
	fuse_session_destroy(session);
	return ret;
}

static void test_unmount_ends_the_loop_cleanly(void **state)
{
	struct script script = { .n_errors = 0 };

	(void)state;
	assert_int_equal(run_script(&script), 0);
	assert_int_equal(script.reads, 1);
}

/* The race of an unmount with a read: ECONNABORTED, then ENODEV. */
static void test_unmount_racing_a_read_ends_the_loop_cleanly(void **state)
{
	struct script script = { .errors = { ECONNABORTED }, .n_errors = 1 };

	(void)state;
	assert_int_equal(run_script(&script), 0);
	assert_int_equal(script.reads, 2);
}

/* An abort answers every read so: the loop ends with the error. */
static void test_abort_ends_the_loop_with_its_error(void **state)
{
	struct script script = { .errors = { ECONNABORTED, ECONNABORTED }, .n_errors = 2 };

	(void)state;
	assert_int_equal(run_script(&script), -ECONNABORTED);
	assert_int_equal(script.reads, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unmount_ends_the_loop_cleanly),
		cmocka_unit_test(test_unmount_racing_a_read_ends_the_loop_cleanly),
		cmocka_unit_test(test_abort_ends_the_loop_with_its_error),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
