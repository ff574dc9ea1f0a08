/* nbd_sock.c — whole-buffer socket reads and writes for the NBD server. */
#include "nbd_int.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

/* After recv/send failed with err: 0 to try again, else -errno.  A
 * worker fiber's socket is non-blocking: on EAGAIN park until it is
 * ready.  In a plain thread (the handshake) EAGAIN is SO_RCVTIMEO
 * expiring, an error. */
static int retry_after(int err, int fd, short events)
{
	int ev;

	if (err == EINTR)
		return 0;
	if (err != EAGAIN || !fm_fiber_self())
		return -err;
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
			int rc = retry_after(errno, fd, POLLIN);

			if (rc < 0)
				return rc;
			continue;
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
			int rc = retry_after(errno, fd, POLLOUT);

			if (rc < 0)
				return rc;
			continue;
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
