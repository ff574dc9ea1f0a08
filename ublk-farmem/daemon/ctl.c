/* ctl.c — the control socket: a server thread in the daemon and the
 * client side used by list, status and del. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "ctl.h"
#include "log.h"

/* A client gets this long to send its line: the server thread is
 * single-threaded and must not be held by a silent peer. */
#define CTL_READ_TIMEOUT_MS 1000

struct ctl_server {
	int listen_fd;
	int stop_pipe[2];
	pthread_t thread;
	ctl_handler handler;
	void *arg;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static int unix_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

/* Read until a newline, EOF or the deadline.  Returns bytes read. */
static ssize_t read_until(int fd, char *buf, size_t len, int timeout_ms, int line)
{
	uint64_t deadline = fm_mono_after_ms(timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
	size_t got = 0;

	while (got + 1 < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = fm_mono_ms_until(deadline);
		ssize_t n;

		if (left <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, left) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (!p.revents)
			continue;
		n = read(fd, buf + got, len - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
		if (line && memchr(buf, '\n', got))
			break;
	}
	buf[got] = '\0';
	return (ssize_t)got;
}

static void serve_one(struct ctl_server *s, int fd)
{
	char line[CTL_LINE_MAX];
	ssize_t n = read_until(fd, line, sizeof(line), CTL_READ_TIMEOUT_MS, 1);
	FILE *f;
	int keep;

	if (n <= 0) {
		close(fd);
		return;
	}
	line[strcspn(line, "\r\n")] = '\0';
	f = fdopen(dup(fd), "w");
	if (!f) {
		close(fd);
		return;
	}
	keep = s->handler(s->arg, line, f, fd);
	fclose(f);
	if (!keep)
		close(fd);
}

static void *server_thread(void *arg)
{
	struct ctl_server *s = arg;

	for (;;) {
		struct pollfd p[2] = {
			{ .fd = s->listen_fd, .events = POLLIN },
			{ .fd = s->stop_pipe[0], .events = POLLIN },
		};
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("control socket %s: poll: %s", s->path, strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		serve_one(s, fd);
	}
	return NULL;
}

int ctl_server_start(const char *path, ctl_handler h, void *arg,
		     struct ctl_server **out)
{
	struct ctl_server *s = calloc(1, sizeof(*s));
	struct sockaddr_un sa;
	int ret;

	if (!s)
		return -ENOMEM;
	s->listen_fd = -1;
	s->stop_pipe[0] = s->stop_pipe[1] = -1;
	s->handler = h;
	s->arg = arg;
	ret = unix_addr(path, &sa);
	if (ret < 0)
		goto fail;
	snprintf(s->path, sizeof(s->path), "%s", path);
	s->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->listen_fd < 0 || pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
		ret = -errno;
		goto fail;
	}
	unlink(path); /* a previous daemon's socket, never a live one: the
		       * device has one daemon at a time */
	if (bind(s->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(path, 0600) < 0 || listen(s->listen_fd, 8) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = -pthread_create(&s->thread, NULL, server_thread, s);
	if (ret < 0)
		goto fail;
	*out = s;
	return 0;
fail:
	log_err("control socket %s: %s", path, strerror(-ret));
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	if (s->stop_pipe[0] >= 0) {
		close(s->stop_pipe[0]);
		close(s->stop_pipe[1]);
	}
	free(s);
	return ret;
}

void ctl_server_stop(struct ctl_server *s)
{
	if (!s)
		return;
	if (write(s->stop_pipe[1], "x", 1) < 0)
		log_warn("control socket %s: stop: %s", s->path, strerror(errno));
	pthread_join(s->thread, NULL);
	close(s->listen_fd);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	unlink(s->path);
	free(s);
}

int ctl_request(const char *path, const char *cmd, char *reply, size_t len,
		int timeout_ms)
{
	struct sockaddr_un sa;
	char line[CTL_LINE_MAX];
	int fd, ret, n;
	ssize_t got;

	ret = unix_addr(path, &sa);
	if (ret < 0)
		return ret;
	n = snprintf(line, sizeof(line), "%s\n", cmd);
	if (n < 0 || n >= (int)sizeof(line))
		return -EINVAL;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, line, (size_t)n) != n) {
		ret = -errno;
		close(fd);
		return ret;
	}
	shutdown(fd, SHUT_WR);
	got = read_until(fd, reply, len, timeout_ms, 0);
	close(fd);
	return got < 0 ? (int)got : (int)got;
}
