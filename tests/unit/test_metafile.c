/*
 * test_metafile.c - metadata.json read and replaced beside a writer that
 * truncates and rewrites it in place, as the kernel-server does: a half
 * written file is waited for, a file broken for good is refused, and a
 * replacement never lands over a version it did not read.
 */
#include "test_helpers.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>

#include "metafile.h"
#include "store.h"

static const char document[] =
	"{\n"
	"  \"run_id\": \"run-1\",\n"
	"  \"workflow_id\": \"wf\",\n"
	"  \"user_directive\": \"\",\n"
	"  \"created_at\": \"2026-02-07T06:00:37.123456789+00:00\",\n"
	"  \"expires_at\": \"2026-02-14T06:00:37.123456789+00:00\",\n"
	"  \"artifacts\": [\n"
	"    {\n"
	"      \"filename\": \"a.txt\",\n"
	"      \"agent_id\": \"agent\",\n"
	"      \"generated_at\": \"2026-02-07T06:01:02.500+00:00\",\n"
	"      \"size_bytes\": 3,\n"
	"      \"content_type\": \"text/plain\"\n"
	"    }\n"
	"  ],\n"
	"  \"status\": \"active\"\n"
	"}";

struct fixture {
	char dir[64];
	int run_fd, work_fd;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char path[128];

	assert_non_null(f);
	make_temp_dir(f->dir, sizeof(f->dir));
	snprintf(path, sizeof(path), "%s/work", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	f->run_fd = open(f->dir, O_RDONLY | O_DIRECTORY);
	f->work_fd = open(path, O_RDONLY | O_DIRECTORY);
	assert_true(f->run_fd >= 0 && f->work_fd >= 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	close(f->run_fd);
	close(f->work_fd);
	remove_tree(f->dir);
	free(f);
	return 0;
}

/* Writes metadata.json in place, as the kernel-server does (truncate, write). */
static void write_in_place(int run_fd, const char *text, size_t len)
{
	int fd = openat(run_fd, "metadata.json", O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static char *read_whole(int run_fd)
{
	char *buf;
	size_t len;
	struct stat st;

	assert_int_equal(store_read_file(run_fd, "metadata.json", 1 << 20, &buf, &len, &st), 0);
	return buf;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

static void test_absent_file(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version;
	struct meta_run meta = { 0 };

	assert_int_equal(metafile_read(f->run_fd, true, &meta, &version, NULL, 0), -ENOENT);
	assert_false(version.present);
	assert_true(metafile_unchanged(f->run_fd, &version));
	meta_run_release(&meta);
}

static void test_valid_file_and_its_version(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct stat st;

	write_in_place(f->run_fd, document, strlen(document));
	assert_int_equal(metafile_read(f->run_fd, false, &meta, &version, NULL, 0), 0);
	assert_string_equal(meta.run_id, "run-1");
	assert_int_equal(fstatat(f->run_fd, "metadata.json", &st, 0), 0);
	assert_true(version.present);
	assert_int_equal(version.ino, (int64_t)st.st_ino);
	assert_int_equal(version.size, st.st_size);
	assert_true(metafile_unchanged(f->run_fd, &version));
	nanosleep(&(struct timespec){ .tv_nsec = 20000000 }, NULL);	/* past a timestamp tick */
	write_in_place(f->run_fd, document, strlen(document));	/* same bytes, new ctime */
	assert_false(metafile_unchanged(f->run_fd, &version));
	meta_run_release(&meta);
}

static void test_half_written_is_a_moment_then_broken(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version;
	struct meta_run meta = { 0 };
	char problem[256] = "";
	struct timespec start;

	/* Cut where the writer's truncate-then-write can leave it. */
	write_in_place(f->run_fd, document, strlen(document) / 2);
	assert_int_equal(metafile_read(f->run_fd, false, &meta, &version, problem, sizeof(problem)),
			 -EAGAIN);
	assert_true(problem[0]);
	/* Still broken a second later, with no writer: broken for good, found without a wait. */
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_int_equal(metafile_read(f->run_fd, true, &meta, &version, problem, sizeof(problem)),
			 -EBADMSG);
	assert_true(seconds_since(&start) >= METAFILE_SETTLE_MS / 1000.0 - 0.1);
	assert_true(seconds_since(&start) < METAFILE_SETTLE_MS / 1000.0 + 1.0);
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_int_equal(metafile_read(f->run_fd, true, &meta, &version, NULL, 0), -EBADMSG);
	assert_true(seconds_since(&start) < 0.1);
	meta_run_release(&meta);
}

static void test_empty_file_being_written(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version;
	struct meta_run meta = { 0 };

	write_in_place(f->run_fd, "", 0);	/* just truncated */
	assert_int_equal(metafile_read(f->run_fd, false, &meta, &version, NULL, 0), -EAGAIN);
	meta_run_release(&meta);
}

struct late_writer {
	int run_fd;
	unsigned int delay_ms;
};

static void *finish_later(void *arg)
{
	struct late_writer *w = arg;
	struct timespec pause = { .tv_sec = w->delay_ms / 1000,
				  .tv_nsec = (long)(w->delay_ms % 1000) * 1000000L };

	nanosleep(&pause, NULL);
	write_in_place(w->run_fd, document, strlen(document));
	return NULL;
}

static void test_waits_for_the_writer_to_finish(void **state)
{
	struct fixture *f = *state;
	struct late_writer writer = { f->run_fd, 300 };
	struct metafile_version version;
	struct meta_run meta = { 0 };
	struct timespec start;
	pthread_t thread;

	write_in_place(f->run_fd, document, 40);
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_int_equal(pthread_create(&thread, NULL, finish_later, &writer), 0);
	assert_int_equal(metafile_read(f->run_fd, true, &meta, &version, NULL, 0), 0);
	assert_int_equal(pthread_join(thread, NULL), 0);
	assert_string_equal(meta.artifacts[0].filename, "a.txt");
	assert_true(seconds_since(&start) >= 0.25);
	assert_true(metafile_unchanged(f->run_fd, &version));
	meta_run_release(&meta);
}

static void test_write_replaces_the_version_read_keeping_its_mode(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version, written;
	struct meta_run meta = { 0 };
	char *text, *expected;
	size_t len;
	struct stat st;

	write_in_place(f->run_fd, document, strlen(document));
	assert_int_equal(fchmodat(f->run_fd, "metadata.json", 0640, 0), 0);
	assert_int_equal(metafile_read(f->run_fd, false, &meta, &version, NULL, 0), 0);
	free(meta.workflow_id);
	meta.workflow_id = strdup("changed");
	assert_int_equal(metafile_write(f->run_fd, f->work_fd, "draft", &meta, &version, &written),
			 0);
	assert_int_equal(meta_format(&meta, &expected, &len), 0);
	text = read_whole(f->run_fd);
	assert_string_equal(text, expected);
	assert_int_equal(fstatat(f->run_fd, "metadata.json", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_true(written.present);
	assert_int_equal(written.ino, (int64_t)st.st_ino);
	assert_true(metafile_unchanged(f->run_fd, &written));
	assert_int_equal(faccessat(f->work_fd, "draft", F_OK, 0), -1);	/* no draft left */
	free(text);
	free(expected);
	meta_run_release(&meta);
}

static void test_write_refuses_a_file_changed_since_read(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version;
	struct meta_run meta = { 0 };
	static const char other[] = "{\"written\": \"by someone else\"}";
	char *text;

	write_in_place(f->run_fd, document, strlen(document));
	assert_int_equal(metafile_read(f->run_fd, false, &meta, &version, NULL, 0), 0);
	write_in_place(f->run_fd, other, strlen(other));	/* the kernel-server, meanwhile */
	assert_int_equal(metafile_write(f->run_fd, f->work_fd, "draft", &meta, &version, NULL),
			 -ESTALE);
	text = read_whole(f->run_fd);
	assert_string_equal(text, other);
	assert_int_equal(faccessat(f->work_fd, "draft", F_OK, 0), -1);
	free(text);
	meta_run_release(&meta);
}

static void test_write_of_a_new_file(void **state)
{
	struct fixture *f = *state;
	struct metafile_version version, absent;
	struct meta_run meta = { 0 };
	struct stat st;

	write_in_place(f->run_fd, document, strlen(document));
	assert_int_equal(metafile_read(f->run_fd, false, &meta, &version, NULL, 0), 0);
	assert_int_equal(unlinkat(f->run_fd, "metadata.json", 0), 0);
	assert_int_equal(metafile_read(f->run_fd, false, &(struct meta_run){ 0 }, &absent,
				       NULL, 0), -ENOENT);
	/* Created by someone else after we found none: not ours to replace. */
	write_in_place(f->run_fd, document, strlen(document));
	assert_int_equal(metafile_write(f->run_fd, f->work_fd, "draft", &meta, &absent, NULL),
			 -ESTALE);
	assert_int_equal(unlinkat(f->run_fd, "metadata.json", 0), 0);
	umask(077);	/* a daemon's restrictive umask must not hide the file */
	assert_int_equal(metafile_write(f->run_fd, f->work_fd, "draft", &meta, &absent, NULL), 0);
	umask(022);
	assert_int_equal(fstatat(f->run_fd, "metadata.json", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	meta_run_release(&meta);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_absent_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_valid_file_and_its_version, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_written_is_a_moment_then_broken, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_empty_file_being_written, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waits_for_the_writer_to_finish, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_write_replaces_the_version_read_keeping_its_mode,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_refuses_a_file_changed_since_read, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_write_of_a_new_file, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
