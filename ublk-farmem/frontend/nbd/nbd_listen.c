/* nbd_listen.c — the server's listening socket: a unix path or TCP.
 *
 * A unix socket's file takes its mode from the umask at bind() (0755
 * under umask 022 lets every local user connect), and a chmod after
 * bind leaves a window.  So the socket is bound inside a fresh private
 * directory (mkdtemp: mode 0700, nobody else can reach it), made 0600
 * there, and renamed into place: it appears at its path already 0600,
 * and the rename replaces a stale socket of an earlier run at once. */
#include "nbd_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

#define SOCK_MODE 0600

/* /run/farmem may not exist yet after a reboot (it is a tmpfs): make the
 * socket's directory, one level only. */
static void make_parent_dir(const char *path)
{
	char dir[ADDR_PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return;
	*slash = '\0';
	if (mkdir(dir, 0755) == 0)
		log_info("nbd: created %s", dir);
}

/* A private directory beside path: its name in tmpdir, the socket's
 * temporary name in tmpsock.  0 or -errno. */
static int private_dir(const char *path, char *tmpdir, char *tmpsock, size_t len)
{
	const char *slash = strrchr(path, '/');
	int dlen = slash ? (int)(slash - path) : 1;
	const char *dir = slash ? path : ".";
	int n;

	if (slash == path)
		dlen = 0;       /* a socket in / */
	n = snprintf(tmpdir, len, "%.*s/.nbd.XXXXXX", dlen, dir);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (!mkdtemp(tmpdir))
		return -errno;
	n = snprintf(tmpsock, len, "%s/s", tmpdir);
	if (n < 0 || (size_t)n >= len) {
		rmdir(tmpdir);
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Refuse to replace anything but a socket (a typo must not eat a file). */
static int check_target(const char *path)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		log_err("nbd: %s exists and is not a socket", path);
		return -EEXIST;
	}
	return 0;
}

static int bind_private(int fd, const char *path, char *tmpdir, char *tmpsock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int rc = private_dir(path, tmpdir, tmpsock, sizeof(sa.sun_path));

	if (rc < 0)
		return rc;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", tmpsock);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    chmod(tmpsock, SOCK_MODE) < 0 || listen(fd, 64) < 0 ||
	    rename(tmpsock, path) < 0) {
		rc = -errno;
		unlink(tmpsock);
	}
	rmdir(tmpdir);
	return rc;
}

int nbd_listen_unix(const char *path)
{
	struct sockaddr_un sa;
	char tmpdir[sizeof(sa.sun_path)], tmpsock[sizeof(sa.sun_path)];
	int fd, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_err("nbd: unix socket path %s is longer than %zu bytes", path,
			sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	make_parent_dir(path);
	if ((rc = check_target(path)) < 0)
		return rc;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = bind_private(fd, path, tmpdir, tmpsock);
	if (rc < 0) {
		log_err("nbd: listen on unix:%s: %s%s", path, strerror(-rc),
			rc == -ENAMETOOLONG ? " (with the private directory the "
			"socket is made in; use a shorter path)" : "");
		close(fd);
		return rc;
	}
	return fd;
}

int nbd_listen_tcp(const struct fm_addr *a, uint16_t *port)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res, *ai;
	char svc[8];
	int fd = -1, rc, one = 1, e = EADDRNOTAVAIL;

	snprintf(svc, sizeof(svc), "%u", a->port);
	rc = getaddrinfo(a->host, svc, &hints, &res);
	if (rc) {
		log_err("nbd: listen on %s:%u: %s", a->host, a->port, gai_strerror(rc));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		log_err("nbd: listen on tcp://%s:%u: %s", a->host, a->port, strerror(e));
		return -e;
	}
	{
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			*port = ntohs(ss.ss_family == AF_INET6 ?
				      ((struct sockaddr_in6 *)&ss)->sin6_port :
				      ((struct sockaddr_in *)&ss)->sin_port);
	}
	return fd;
}
