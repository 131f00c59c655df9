/*
 * mkfiles DIR COUNT [SIZE] - creates COUNT files f0000000, f0000001, ...
 * in DIR (O_EXCL), each SIZE bytes long (sparse; default 0), as fast as
 * the file system allows.  For the tests that need huge run directories.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	char name[32];
	long count, size;
	int dir;

	if (argc < 3) {
		fprintf(stderr, "usage: mkfiles DIR COUNT [SIZE]\n");
		return 2;
	}
	dir = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dir < 0) {
		perror(argv[1]);
		return 1;
	}
	count = atol(argv[2]);
	size = argc > 3 ? atol(argv[3]) : 0;
	for (long i = 0; i < count; i++) {
		int fd;

		snprintf(name, sizeof(name), "f%07ld", i);
		fd = openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (fd < 0 || (size && ftruncate(fd, size) < 0)) {
			perror(name);
			return 1;
		}
		close(fd);
	}
	return 0;
}
