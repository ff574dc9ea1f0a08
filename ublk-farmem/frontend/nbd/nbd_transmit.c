/* nbd_transmit.c — the transmission phase of one connection.
 *
 * The slot's workers take turns at the socket: one at a time reads a
 * request header, checks every field before anything is done with it,
 * reads a write's payload into its own buffer, and lets go of the socket;
 * then it runs the request and sends the reply.  So up to `workers`
 * requests of one connection run at once, replies go out in completion
 * order (the cookie matches them up), and no request is passed between
 * threads.  On a plain socket the replies of one loop turn leave in one
 * sendmsg at the start of the next, and requests are read ahead
 * (nbd_io.rbuf): a client with 32 requests in flight costs a few system
 * calls and wake-ups per batch, not three per request. */
#include "nbd_int.h"
#include "nbd_proto.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "clock.h"
#include "iov.h"
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

/* ---- replies ---- */

enum { REPLY_IDLE, REPLY_QUEUED, REPLY_SENT, REPLY_FINISH };

static void put_reply_head(uint8_t *h, uint64_t cookie, int err)
{
	nbd_put32(h, NBD_SIMPLE_REPLY_MAGIC);
	nbd_put32(h + 4, wire_errno(err));
	nbd_put64(h + 8, cookie);
}

/* The reply could not be sent: the client is gone (or stopped reading),
 * so stop the reader too. */
static void send_failed(struct nbd_slot *slot, int rc)
{
	if (rc == -ETIMEDOUT)
		log_info("nbd conn %u: client took no reply for %llums, closing",
			 slot->conn_id, (unsigned long long)(slot->io->idle_ns / 1000000u));
	slot->send_failed = 1;
	shutdown(slot->io->fd, SHUT_RD);
}

/* Direct: one reply, written before the worker goes on (TLS). */
static int send_now(struct nbd_slot *slot, struct iovec *iov, int n)
{
	int rc = 0;

	fm_mutex_lock(&slot->send_lock);
	if (!slot->send_failed) {
		rc = nbd_writev_full(slot->io, iov, n);
		if (rc < 0)
			send_failed(slot, rc);
	}
	fm_mutex_unlock(&slot->send_lock);
	return rc;
}

/* Every worker in the batch learns how it went and runs on. */
static void batch_release(struct nbd_slot *slot, int rc)
{
	for (int i = 0; i < slot->npend_w; i++) {
		struct nbd_worker *w = slot->pend_w[i];

		w->reply_rc = rc;
		w->reply_state = REPLY_SENT;
		fm_fiber_wake(w->fiber);
	}
	slot->npend = slot->npend_w = 0;
}

/* Start of a loop turn: send the batch without waiting.  What the socket
 * does not take, the batch's first worker writes in its own fiber (it
 * may wait there; a hook may not). */
static void batch_flush(struct fm_loop_hook *h)
{
	struct nbd_slot *slot = (struct nbd_slot *)((char *)h - offsetof(struct nbd_slot, flush_hook));

	if (!slot->npend_w || slot->flushing)
		return;
	slot->io->send_start_ns = fm_mono_ns();
	while (slot->npend) {
		struct msghdr m = { .msg_iov = slot->pend, .msg_iovlen = (size_t)slot->npend };
		ssize_t sent = sendmsg(slot->io->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (sent >= 0) {
			slot->npend = fm_iov_consume(slot->pend, slot->npend, (size_t)sent);
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			slot->flushing = 1;
			slot->pend_w[0]->reply_state = REPLY_FINISH;
			fm_fiber_wake(slot->pend_w[0]->fiber);
			return;
		}
		send_failed(slot, -errno);
		batch_release(slot, -errno);
		return;
	}
	batch_release(slot, 0);
}

/* This worker's turn to write the rest of the batch, waiting for room
 * within the connection's bound; replies queued meanwhile go too. */
static void batch_finish(struct nbd_slot *slot)
{
	int done = 0, rc = 0;

	while (rc == 0 && done < slot->npend) {
		int n = slot->npend - done;

		rc = nbd_writev_full(slot->io, slot->pend + done, n);
		done += n;
	}
	if (rc < 0)
		send_failed(slot, rc);
	slot->flushing = 0;
	batch_release(slot, rc);
}

/* Batched: join the turn's batch and wait until it has left. */
static int send_batched(struct nbd_worker *w, struct iovec *iov, int n)
{
	struct nbd_slot *slot = w->slot;

	if (slot->send_failed)
		return -EPIPE;
	memcpy(&slot->pend[slot->npend], iov, (size_t)n * sizeof(*iov));
	slot->npend += n;
	slot->pend_w[slot->npend_w++] = w;
	w->fiber = fm_fiber_self();
	w->reply_state = REPLY_QUEUED;
	while (w->reply_state == REPLY_QUEUED)
		fm_fiber_park();
	if (w->reply_state == REPLY_FINISH)
		batch_finish(slot);
	w->reply_state = REPLY_IDLE;
	return w->reply_rc;
}

static int send_reply(struct nbd_worker *w, uint64_t cookie, int err,
		      const void *data, uint32_t len)
{
	struct nbd_slot *slot = w->slot;
	struct iovec iov[2] = {
		{ w->reply_head, NBD_REPLY_SIZE }, { (void *)data, data ? len : 0 },
	};
	int n = data && len ? 2 : 1;

	put_reply_head(w->reply_head, cookie, err);
	slot->requests++;
	slot->errors += err != 0;
	return slot->batched ? send_batched(w, iov, n) : send_now(slot, iov, n);
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

/* A refused request: drain its payload if it has one, answer it.
 * Returns -errno when the connection has to close. */
static int refuse(struct nbd_worker *w, const struct nbd_req *r, int err)
{
	struct nbd_slot *slot = w->slot;

	log_debug("nbd conn %u: request type %u off %llu len %u refused: %s",
		  slot->conn_id, r->type, (unsigned long long)r->off, r->len,
		  strerror(-err));
	if (r->type == NBD_CMD_WRITE) {
		if (r->len > NBD_DISCARD_MAX) {
			log_warn("nbd conn %u: write of %u bytes is beyond any "
				 "limit, closing", slot->conn_id, r->len);
			return -EMSGSIZE;
		}
		int rc = nbd_discard_bytes(slot->io, r->len);

		if (rc < 0)
			return rc;
	}
	return send_reply(w, r->cookie, err, NULL, 0);
}

/* Read the next request into r (a write's data into w->buf).  Called
 * under read_lock.  1: run it; 0: answered already; -errno or DISC
 * (-ESHUTDOWN here): the connection ends. */
static int read_request(struct nbd_worker *w, struct nbd_req *r)
{
	struct nbd_slot *slot = w->slot;
	uint8_t b[NBD_REQUEST_SIZE];
	int rc = nbd_read_full(slot->io, b, sizeof(b));

	if (rc < 0)
		return rc;
	if (nbd_get32(b) != NBD_REQUEST_MAGIC) {
		log_warn("nbd conn %u: bad request magic 0x%08x, closing",
			 slot->conn_id, nbd_get32(b));
		return -EPROTO;
	}
	parse_req(b, r);
	if (r->type == NBD_CMD_DISC)
		return -ESHUTDOWN;
	rc = check_req(slot->srv, r);
	if (rc < 0)
		return refuse(w, r, rc) < 0 ? -EPROTO : 0;
	if (r->type == NBD_CMD_WRITE) {
		rc = nbd_read_full(slot->io, w->buf + r->off % PAGE, r->len);
		return rc < 0 ? rc : 1;
	}
	return 1;
}

static void worker_serve_once(struct nbd_worker *w);

/* A worker fiber: serve, then count itself out (the loop also runs the
 * store's link fibers, which outlive the workers). */
static void worker_serve(void *arg)
{
	struct nbd_worker *w = arg;

	worker_serve_once(w);
	w->slot->active--;
}

static void worker_serve_once(struct nbd_worker *w)
{
	struct nbd_slot *slot = w->slot;

	for (;;) {
		struct nbd_req r;
		int rc;

		fm_mutex_lock(&slot->read_lock);
		if (slot->closing) {
			fm_mutex_unlock(&slot->read_lock);
			return;
		}
		rc = read_request(w, &r);
		if (rc < 0) {
			slot->closing = 1;
			slot->close_rc = rc == -ESHUTDOWN ? 0 : rc;
		}
		fm_mutex_unlock(&slot->read_lock);
		if (rc < 0)
			return;
		if (rc == 0)
			continue;
		/* In flight: the reader waiting for the next request does
		 * not count the connection idle (nbd_sock.c). */
		slot->io->inflight++;
		slot->io->last_active_ns = fm_mono_ns();
		rc = nbd_exec(w, &r);
		send_reply(w, r.cookie, rc,
			   r.type == NBD_CMD_READ && rc == 0 ? w->buf + r.off % PAGE : NULL,
			   r.type == NBD_CMD_READ && rc == 0 ? r.len : 0);
		slot->io->inflight--;
		slot->io->last_active_ns = fm_mono_ns();
	}
}

/* Run the slot's workers as fibers of this thread until each is out. */
static int run_workers(struct nbd_slot *slot)
{
	int rc = fm_loop_attach(slot->loop);

	if (rc < 0) {
		log_err("nbd conn %u: io_uring setup: %s", slot->conn_id, strerror(-rc));
		return rc;
	}
	const struct nbd_backend *be = &slot->srv->be;
	int n = slot->srv->p.workers, first = slot->index * n;

	if (be->attach && be->attach(be->ctx, slot->loop, first, n) < 0)
		log_warn("nbd conn %u: no connections of its own; using the shared ones",
			 slot->conn_id);
	slot->active = 0;
	slot->batched = !slot->io->tls;
	slot->npend = slot->npend_w = slot->flushing = 0;
	if (slot->batched)
		fm_loop_hook_add(slot->loop, &slot->flush_hook);
	for (int i = 0; i < n && rc == 0; i++) {
		rc = fm_loop_spawn(slot->loop, worker_serve, &slot->workers[i]);
		slot->active += rc == 0;
	}
	while (slot->active) {
		int trc = fm_loop_turn(slot->loop);

		if (trc < 0) {
			/* The workers cannot be abandoned mid-request: their
			 * store calls own buffers.  Keep turning. */
			log_err("nbd conn %u: io_uring_enter: %s", slot->conn_id,
				strerror(-trc));
		}
	}
	if (slot->batched)
		fm_loop_hook_del(slot->loop, &slot->flush_hook);
	if (be->detach)
		be->detach(be->ctx, first, n);
	fm_loop_detach(slot->loop);
	return rc;
}

void nbd_transmit(struct nbd_slot *slot, struct nbd_io *io)
{
	unsigned id = io->id;
	int rc;

	slot->io = io;
	slot->conn_id = id;
	slot->closing = 0;
	slot->close_rc = 0;
	slot->send_failed = 0;
	slot->requests = slot->errors = 0;
	slot->flush_hook.fn = batch_flush;
	if (!io->tls) {
		io->rbuf = slot->rbuf;
		io->rcap = NBD_READ_AHEAD;
		io->rpos = io->rlen = 0;
		io->drained = 0;
	}
	rc = run_workers(slot);
	io->rbuf = NULL;
	if (rc < 0 && !slot->close_rc)
		slot->close_rc = rc;
	slot->io = NULL;
	rc = slot->close_rc;
	if (rc == -ETIMEDOUT)
		log_info("nbd conn %u: idle for %llums, closing", id,
			 (unsigned long long)(io->idle_ns / 1000000u));
	else if (rc < 0 && rc != -EPIPE && rc != -ECONNRESET)
		log_info("nbd conn %u: closing after error: %s", id, strerror(-rc));
	log_info("nbd conn %u: %s after %llu requests (%llu failed)", id,
		 rc == 0 ? "disconnected" : "closed",
		 (unsigned long long)slot->requests, (unsigned long long)slot->errors);
}
