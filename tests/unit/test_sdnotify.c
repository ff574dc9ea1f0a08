/* test_sdnotify.c — sd_notify_state() against a real datagram socket. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "sdnotify.h"
#include "tap.h"

/* Binds a datagram socket at path (abstract when path starts with '@'). */
static int listen_at(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
	size_t len = strlen(path);
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	if (fd < 0 || len >= sizeof(sa.sun_path))
		return -1;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(fd, (struct sockaddr *)&sa,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int recv_text(int fd, char *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len - 1, 0);

	if (n < 0)
		return -1;
	buf[n] = '\0';
	return (int)n;
}

static int test_unset_is_noop(void)
{
	unsetenv("NOTIFY_SOCKET");
	CHECK(sd_notify_state("READY=1") == 0);
	setenv("NOTIFY_SOCKET", "", 1);
	CHECK(sd_notify_state("READY=1") == 0);
	return 0;
}

static int test_path_socket(void)
{
	char dir[] = "/tmp/sdnotify.XXXXXX", path[64], buf[64];
	int fd;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/notify", dir);
	fd = listen_at(path);
	CHECK(fd >= 0);
	setenv("NOTIFY_SOCKET", path, 1);
	CHECK(sd_notify_state("READY=1") == 1);
	CHECK(recv_text(fd, buf, sizeof(buf)) == 7);
	CHECK(strcmp(buf, "READY=1") == 0);
	CHECK(sd_notify_state("STATUS=serving 4 GiB") == 1);
	CHECK(recv_text(fd, buf, sizeof(buf)) > 0);
	CHECK(strcmp(buf, "STATUS=serving 4 GiB") == 0);
	close(fd);
	unlink(path);
	rmdir(dir);
	return 0;
}

static int test_abstract_socket(void)
{
	char name[64], buf[64];
	int fd;

	snprintf(name, sizeof(name), "@farmem-test-sdnotify-%d", (int)getpid());
	fd = listen_at(name);
	CHECK(fd >= 0);
	setenv("NOTIFY_SOCKET", name, 1);
	CHECK(sd_notify_state("STOPPING=1") == 1);
	CHECK(recv_text(fd, buf, sizeof(buf)) > 0);
	CHECK(strcmp(buf, "STOPPING=1") == 0);
	close(fd);
	return 0;
}

static int test_bad_socket_reports_error(void)
{
	setenv("NOTIFY_SOCKET", "relative/path", 1);
	CHECK(sd_notify_state("READY=1") == -EAFNOSUPPORT);
	/* Nobody listens there: the send fails, and says so. */
	setenv("NOTIFY_SOCKET", "/nonexistent/farmem/notify", 1);
	CHECK(sd_notify_state("READY=1") == -ENOENT);
	unsetenv("NOTIFY_SOCKET");
	return 0;
}

static const struct tap_case cases[] = {
	{ "no NOTIFY_SOCKET: nothing sent", test_unset_is_noop },
	{ "path socket receives the state", test_path_socket },
	{ "abstract socket receives the state", test_abstract_socket },
	{ "bad NOTIFY_SOCKET is an error", test_bad_socket_reports_error },
};

TAP_MAIN(cases)
