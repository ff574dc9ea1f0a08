/* nbd_wait.c — one recv or send on an NBD connection's socket, waiting
 * within the connection's bounds (struct nbd_io) where it would block.
 *
 * The socket is non-blocking throughout: a worker fiber parks in its
 * loop (fm_fiber_poll_timeout), a plain thread (the handshake) polls,
 * both only until the bound that applies.  Below both nbd_sock.c's
 * whole-buffer I/O and GnuTLS's pull and push (nbd_tls.c), so a TLS
 * connection waits the same way and never blocks its loop. */
#include "nbd_int.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"

/* When the wait for events must end: 0 for never. */
static uint64_t bound_of(const struct nbd_io *io, short events)
{
	if (io->deadline_ns)
		return io->deadline_ns;
	if (!io->idle_ns)
		return 0;
	return events & POLLIN ? io->last_active_ns + io->idle_ns
			       : io->send_start_ns + io->idle_ns;
}

/* Wait for events on fd, at most timeout_ns (0: no bound).  >0 when
 * something happened (the caller retries its call), 0 when the time
 * ran out, -errno. */
static int wait_fd(int fd, short events, uint64_t timeout_ns)
{
	struct pollfd pf = { .fd = fd, .events = events };
	int rc;

	if (fm_fiber_self())
		return timeout_ns ? fm_fiber_poll_timeout(fd, events, timeout_ns)
				  : fm_fiber_poll(fd, events);
	rc = poll(&pf, 1, timeout_ns ? (int)((timeout_ns + 999999) / 1000000) : -1);
	if (rc < 0)
		return errno == EINTR ? 1 : -errno;
	return rc;
}

/* The socket would block: wait for it within the bounds.  0 to retry,
 * -ETIMEDOUT or -errno.  A reader past the idle bound while requests
 * are in flight is not idle: the bound starts again. */
int nbd_io_wait(struct nbd_io *io, short events)
{
	for (;;) {
		uint64_t bound = bound_of(io, events), now;
		int rc;

		if (!bound) {
			rc = wait_fd(io->fd, events, 0);
			return rc < 0 ? rc : 0;
		}
		now = fm_mono_ns();
		if (now >= bound) {
			if (io->deadline_ns || !(events & POLLIN) || !io->inflight)
				return -ETIMEDOUT;
			io->last_active_ns = now;
			continue;
		}
		rc = wait_fd(io->fd, events, bound - now);
		if (rc != 0)
			return rc < 0 ? rc : 0;
	}
}

int nbd_io_retry(struct nbd_io *io, short events)
{
	if (errno == EINTR)
		return 0;
	if (errno != EAGAIN)
		return -errno;
	return nbd_io_wait(io, events);
}

ssize_t nbd_sock_recv(struct nbd_io *io, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(io->fd, buf, len, 0);
		int rc;

		if (n >= 0)
			return n;
		if ((rc = nbd_io_retry(io, POLLIN)) < 0)
			return rc;
	}
}

ssize_t nbd_sock_send(struct nbd_io *io, const void *buf, size_t len)
{
	for (;;) {
		/* MSG_NOSIGNAL: a client that went away is an error, not SIGPIPE. */
		ssize_t n = send(io->fd, buf, len, MSG_NOSIGNAL);
		int rc;

		if (n >= 0)
			return n;
		if ((rc = nbd_io_retry(io, POLLOUT)) < 0)
			return rc;
	}
}
