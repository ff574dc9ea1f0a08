/* nbd_sock.c — whole-buffer reads and writes on an NBD connection, plain
 * or through TLS, each wait bounded as struct nbd_io says.
 *
 * The socket is non-blocking throughout: where a recv or send would
 * block, a worker fiber parks in its loop (fm_fiber_poll_timeout) and a
 * plain thread (the handshake) polls, both only until the bound that
 * applies.  GnuTLS reaches the socket through nbd_sock_recv/send too
 * (nbd_tls.c), so a TLS connection waits the same way and never blocks
 * its loop. */
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
static int io_wait(struct nbd_io *io, short events)
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

ssize_t nbd_sock_recv(struct nbd_io *io, void *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(io->fd, buf, len, 0);
		int rc;

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if ((rc = io_wait(io, POLLIN)) < 0)
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
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		if ((rc = io_wait(io, POLLOUT)) < 0)
			return rc;
	}
}

int nbd_read_full(struct nbd_io *io, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = io->tls ? nbd_tls_recv(io, p, len)
				    : nbd_sock_recv(io, p, len);

		if (n == 0)
			return -EPIPE;
		if (n < 0)
			return (int)n;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One buffer out; the caller has set send_start_ns. */
static int write_all(struct nbd_io *io, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = io->tls ? nbd_tls_send(io, p, len)
				    : nbd_sock_send(io, p, len);

		if (n < 0)
			return (int)n;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int nbd_write_full(struct nbd_io *io, const void *buf, size_t len)
{
	io->send_start_ns = fm_mono_ns();
	return write_all(io, buf, len);
}

/* Plain: one sendmsg for header and data where the socket takes it. */
static int sendmsg_all(struct nbd_io *io, struct iovec *iov, int n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };

	while (m.msg_iovlen) {
		ssize_t sent = sendmsg(io->fd, &m, MSG_NOSIGNAL);

		if (sent < 0) {
			int rc;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			if ((rc = io_wait(io, POLLOUT)) < 0)
				return rc;
			continue;
		}
		while (m.msg_iovlen && (size_t)sent >= m.msg_iov->iov_len) {
			sent -= (ssize_t)m.msg_iov->iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen) {
			m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + sent;
			m.msg_iov->iov_len -= (size_t)sent;
		}
	}
	return 0;
}

int nbd_writev_full(struct nbd_io *io, struct iovec *iov, int n)
{
	int rc = 0;

	io->send_start_ns = fm_mono_ns();
	if (!io->tls)
		return sendmsg_all(io, iov, n);
	for (int i = 0; i < n && rc == 0; i++)
		rc = write_all(io, iov[i].iov_base, iov[i].iov_len);
	return rc;
}

/* Read and drop len bytes (a payload we refuse but must get past). */
int nbd_discard_bytes(struct nbd_io *io, uint64_t len)
{
	uint8_t sink[16384];

	while (len) {
		size_t chunk = len < sizeof(sink) ? (size_t)len : sizeof(sink);
		int rc = nbd_read_full(io, sink, chunk);

		if (rc < 0)
			return rc;
		len -= chunk;
	}
	return 0;
}
