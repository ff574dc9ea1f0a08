/* nbd_sock.c — whole-buffer reads and writes on an NBD connection, plain
 * or through TLS, each wait bounded as struct nbd_io says (the single
 * socket calls and their waits are nbd_wait.c's). */
#include "nbd_int.h"

#include <errno.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"

/* Copy out what the read-ahead buffer holds, up to len. */
static size_t take_ahead(struct nbd_io *io, uint8_t *p, size_t len)
{
	size_t n = io->rlen - io->rpos;

	if (n > len)
		n = len;
	memcpy(p, io->rbuf + io->rpos, n);
	io->rpos += (uint32_t)n;
	return n;
}

/* One recv into the read-ahead buffer (empty when called): bytes, 0 at
 * EOF, -errno. */
static ssize_t fill_ahead(struct nbd_io *io)
{
	ssize_t n;

	if (io->drained) {
		int rc = nbd_io_wait(io, POLLIN);

		if (rc < 0)
			return rc;
		io->drained = 0;
	}
	n = nbd_sock_recv(io, io->rbuf, io->rcap);
	io->rpos = 0;
	io->rlen = n > 0 ? (uint32_t)n : 0;
	io->drained = n > 0 && (uint32_t)n < io->rcap;
	return n;
}

int nbd_read_full(struct nbd_io *io, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n;

		if (io->rbuf && io->rpos < io->rlen) {
			n = (ssize_t)take_ahead(io, p, len);
		} else if (io->rbuf && len < io->rcap / 2) {
			/* Small reads (headers, one page) go through the
			 * buffer; large payloads land in place. */
			n = fill_ahead(io);
			if (n > 0)
				continue;
		} else {
			n = io->tls ? nbd_tls_recv(io, p, len) : nbd_sock_recv(io, p, len);
		}
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
			int rc = nbd_io_retry(io, POLLOUT);

			if (rc < 0)
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
