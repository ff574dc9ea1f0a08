/* proc_text.c — values out of the text of /proc and cgroup files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proc_text.h"

const char *fm_line_after(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	const char *p = text;

	while (p && *p) {
		if (strncmp(p, prefix, n) == 0)
			return p + n;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

int fm_meminfo_field(const char *text, const char *name, uint64_t *bytes)
{
	char prefix[64];
	const char *p;
	unsigned long long kib;
	char unit[8];

	if ((size_t)snprintf(prefix, sizeof(prefix), "%s:", name) >= sizeof(prefix))
		return -EINVAL;
	p = fm_line_after(text, prefix);
	if (!p)
		return -ENOENT;
	if (sscanf(p, "%llu %7s", &kib, unit) != 2 || strcmp(unit, "kB") != 0 ||
	    kib > UINT64_MAX / 1024)
		return -EINVAL;
	*bytes = (uint64_t)kib * 1024;
	return 0;
}

int fm_read_small_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got < len - 1) {
		ssize_t r = read(fd, buf + got, len - 1 - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;

			close(fd);
			return -e;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	buf[got] = '\0';
	if (got == len - 1) {
		char c;

		if (read(fd, &c, 1) == 1) {
			close(fd);
			return -EFBIG;
		}
	}
	close(fd);
	return (int)got;
}
