/* nbd_sock.c — whole-buffer socket reads and writes for the NBD server. */
#include "nbd_int.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

/* A worker fiber's socket is non-blocking: park until it is ready.  In
 * a plain thread (the handshake) EAGAIN is SO_RCVTIMEO expiring. */
static int wait_ready(int fd, short events)
{
	int ev;

	if (!fm_fiber_self())
		return -EAGAIN;
	ev = fm_fiber_poll(fd, events);

	return ev < 0 ? ev : 0;
}

int nbd_read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n == 0)
			return -EPIPE;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int rc = wait_ready(fd, POLLIN);

				if (rc < 0)
					return rc;
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int nbd_write_full(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		/* MSG_NOSIGNAL: a client that went away is an error, not SIGPIPE. */
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int rc = wait_ready(fd, POLLOUT);

				if (rc < 0)
					return rc;
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read and drop len bytes (a payload we refuse but must get past). */
int nbd_discard_bytes(int fd, uint64_t len)
{
	uint8_t sink[16384];

	while (len) {
		size_t chunk = len < sizeof(sink) ? (size_t)len : sizeof(sink);
		int rc = nbd_read_full(fd, sink, chunk);

		if (rc < 0)
			return rc;
		len -= chunk;
	}
	return 0;
}
