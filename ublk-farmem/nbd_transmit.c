/* nbd_transmit.c — the transmission phase of one connection: the reader
 * checks every request before anything is done with it and hands it to a
 * free worker; replies are written by whoever finishes, one at a time. */
#include "nbd_int.h"
#include "nbd_proto.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "log.h"

#define PAGE 4096u

static uint32_t wire_errno(int rc)
{
	switch (-rc) {
	case 0: return 0;
	case EPERM: case EROFS: return NBD_EPERM;
	case ENOMEM: return NBD_ENOMEM;
	case EINVAL: return NBD_EINVAL;
	case ENOSPC: return NBD_ENOSPC;
	case EOVERFLOW: return NBD_EOVERFLOW;
	case ENOTSUP: return NBD_ENOTSUP;
	case ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;
	}
}

static int send_iov(int fd, struct iovec *iov, int n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };

	while (m.msg_iovlen) {
		ssize_t sent = sendmsg(fd, &m, MSG_NOSIGNAL);

		if (sent < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
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

int nbd_send_reply(struct nbd_slot *slot, uint64_t cookie, int err,
		   const void *data, uint32_t len)
{
	uint8_t h[NBD_REPLY_SIZE];
	struct iovec iov[2] = {
		{ h, sizeof(h) }, { (void *)data, data ? len : 0 },
	};
	int rc = 0;

	nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(h + 4, wire_errno(err));
	nbd_put64(h + 8, cookie);
	pthread_mutex_lock(&slot->send_lock);
	if (!slot->send_failed) {
		rc = send_iov(slot->fd, iov, data && len ? 2 : 1);
		if (rc < 0) {
			/* The client is gone: stop the reader too. */
			slot->send_failed = 1;
			shutdown(slot->fd, SHUT_RD);
		}
	}
	pthread_mutex_unlock(&slot->send_lock);
	return rc;
}

static void parse_req(const uint8_t *b, struct nbd_req *r)
{
	r->flags = nbd_get16(b + 4);
	r->type = nbd_get16(b + 6);
	r->cookie = nbd_get64(b + 8);
	r->off = nbd_get64(b + 16);
	r->len = nbd_get32(b + 24);
}

/* 0 when the request may run, else the -errno to answer with. */
static int check_req(const struct nbd_server *srv, const struct nbd_req *r)
{
	uint16_t allowed = NBD_CMD_FLAG_FUA;
	uint64_t size = srv->be.size;
	int in_range = r->off <= size && r->len <= size - r->off;

	switch (r->type) {
	case NBD_CMD_READ:
		if (r->len == 0 || r->len > srv->p.max_block)
			return -EINVAL;
		if (!in_range)
			return -EINVAL;
		break;
	case NBD_CMD_WRITE:
		if (r->len == 0 || r->len > srv->p.max_block)
			return -EINVAL;
		if (!in_range)
			return -ENOSPC;
		break;
	case NBD_CMD_WRITE_ZEROES:
		allowed |= NBD_CMD_FLAG_NO_HOLE;
		if (!in_range)
			return -ENOSPC;
		break;
	case NBD_CMD_TRIM:
		if (!in_range)
			return -EINVAL;
		break;
	case NBD_CMD_FLUSH:
		break;
	default:
		return -EINVAL;
	}
	return r->flags & ~allowed ? -EINVAL : 0;
}

static struct nbd_worker *take_worker(struct nbd_slot *slot)
{
	struct nbd_worker *w;

	pthread_mutex_lock(&slot->lock);
	while (!slot->free_list)
		pthread_cond_wait(&slot->idle, &slot->lock);
	w = slot->free_list;
	slot->free_list = w->next_free;
	slot->inflight++;
	pthread_mutex_unlock(&slot->lock);
	return w;
}

static void give_back(struct nbd_slot *slot, struct nbd_worker *w)
{
	pthread_mutex_lock(&slot->lock);
	w->next_free = slot->free_list;
	slot->free_list = w;
	slot->inflight--;
	pthread_cond_signal(&slot->idle);
	pthread_mutex_unlock(&slot->lock);
}

static void dispatch(struct nbd_slot *slot, struct nbd_worker *w,
		     const struct nbd_req *r)
{
	pthread_mutex_lock(&slot->lock);
	w->req = *r;
	w->has_req = 1;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&slot->lock);
}

/* A refused request: drain its payload if it has one, answer it.
 * Returns -errno when the connection has to close. */
static int refuse(struct nbd_slot *slot, int fd, unsigned id,
		  const struct nbd_req *r, int err)
{
	log_debug("nbd conn %u: request type %u off %llu len %u refused: %s",
		  id, r->type, (unsigned long long)r->off, r->len, strerror(-err));
	if (r->type == NBD_CMD_WRITE) {
		if (r->len > NBD_DISCARD_MAX) {
			log_warn("nbd conn %u: write of %u bytes is beyond any "
				 "limit, closing", id, r->len);
			return -EMSGSIZE;
		}
		int rc = nbd_discard_bytes(fd, r->len);

		if (rc < 0)
			return rc;
	}
	return nbd_send_reply(slot, r->cookie, err, NULL, 0);
}

/* One request: 1 to go on, 0 at DISC, -errno to close. */
static int one_request(struct nbd_slot *slot, int fd, unsigned id)
{
	uint8_t b[NBD_REQUEST_SIZE];
	struct nbd_worker *w;
	struct nbd_req r;
	int rc = nbd_read_full(fd, b, sizeof(b));

	if (rc < 0)
		return rc;
	if (nbd_get32(b) != NBD_REQUEST_MAGIC) {
		log_warn("nbd conn %u: bad request magic 0x%08x, closing", id,
			 nbd_get32(b));
		return -EPROTO;
	}
	parse_req(b, &r);
	if (r.type == NBD_CMD_DISC)
		return 0;
	rc = check_req(slot->srv, &r);
	if (rc < 0)
		return refuse(slot, fd, id, &r, rc) < 0 ? -EPROTO : 1;
	w = take_worker(slot);
	if (r.type == NBD_CMD_WRITE) {
		rc = nbd_read_full(fd, w->buf + r.off % PAGE, r.len);
		if (rc < 0) {
			give_back(slot, w);
			return rc;
		}
	}
	dispatch(slot, w, &r);
	return 1;
}

void nbd_transmit(struct nbd_slot *slot, int fd, unsigned id)
{
	int rc;

	slot->fd = fd;
	do
		rc = one_request(slot, fd, id);
	while (rc > 0);
	if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		log_info("nbd conn %u: closing after error: %s", id, strerror(-rc));
	/* Finish what was accepted before saying goodbye. */
	pthread_mutex_lock(&slot->lock);
	while (slot->inflight)
		pthread_cond_wait(&slot->idle, &slot->lock);
	pthread_mutex_unlock(&slot->lock);
	log_info("nbd conn %u: %s after %llu requests (%llu failed)", id,
		 rc == 0 ? "disconnected" : "closed",
		 (unsigned long long)slot->requests, (unsigned long long)slot->errors);
}
