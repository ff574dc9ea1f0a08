/* transport_tcp.c — the memserver client connection over TCP.
 *
 * One connection = one socket + one receiver thread.
 *
 *  - Submitters (any thread) take a request slot under `lock`, then write
 *    the whole frame with one sendmsg loop under `send_lock`.
 *  - The receiver thread owns the socket's lifetime and its read side:
 *    it reads replies, matches their tags to slots, lands READ data
 *    straight in the caller's buffer, enforces request deadlines, drops
 *    the connection on any loss or protocol violation (failing every
 *    in-flight request) and, when asked to, reconnects with backoff.
 *
 * Slots, the receive buffer and the reply scratch are allocated at open:
 * nothing is allocated per request.
 *
 * Every frame after the handshake carries a channel tag (chan.h).  A
 * frame's tag is made where its place in the stream is fixed: under
 * send_lock right before the sendmsg (thread mode), or at the flush
 * that starts the loop's next turn, after consecutive WRITEs were merged
 * (loop mode, frame_batch.h), into the slot's trailer.  A reply's tag is
 * checked before the request completes.
 *
 * Contract details transport.h leaves open, as this file settles them:
 *  - submit returning 0 means done() runs exactly once, possibly before
 *    submit returns; a nonzero return means it never runs.
 *  - With every slot busy, submit waits up to timeout_ms for one, then
 *    fails with -ETIMEDOUT (-ENOTCONN at once if the connection drops).
 *  - A request's deadline counts from the moment it gets its slot.
 *  - state_cb reports changes after open (the open's own success is its
 *    return value), from the receiver thread.
 *  - PING sends iov/len and, when buf is set, lands the echo there.
 *
 * Lock order: `lock` and `send_lock` are never held together.  The
 * receiver closes the socket only while holding `send_lock`, after
 * shutdown() has kicked out any sender blocked in sendmsg, so a sender
 * holding `send_lock` with a matching epoch always writes to a live fd.
 */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "fiber.h"
#include "frame_batch.h"
#include "log.h"
#include "transport_common.h"

#define TCP_MAX_INFLIGHT         65536u  /* tag = generation << 16 | slot */
#define TCP_IOV_MAX              64      /* data iovecs per WRITE */
#define TCP_RBUF_SIZE            (64u * 1024)
/* Largest reply payload we decode from scratch: a full LIST reply. */
#define TCP_PBUF_SIZE            (4u + FM_LIST_MAX * FM_LIST_ENTRY_LEN)
/* Reads at least this long go straight into the caller's buffer. */
#define TCP_DIRECT_MIN           (16u * 1024)
/* How often the receiver looks at deadlines while replies keep coming. */
#define TCP_TICK_MS              100u
/* A frame's header and small payload. */
#define TCP_HEAD_MAX             FM_FB_HEAD_MAX

struct tcp_slot {
	struct fm_req *req;   /* NULL when free */
	uint16_t gen;         /* bumped per use, so a stale tag never matches */
};

struct tcp_conn {
	struct fm_conn base;

	/* Fixed at open. */
	struct fm_tc_conf cf;
	int wake_fd;                  /* eventfd: close() kicks the receiver */
	pthread_t thread;

	/* Under lock. */
	pthread_mutex_t lock;
	pthread_cond_t slot_cv;       /* a slot freed, or the state changed */
	struct tcp_slot *slots;
	uint32_t *free_idx;           /* stack of free slot indexes */
	unsigned nfree;
	int up;
	int stop;
	uint64_t epoch;               /* bumped for every new socket */

	/* With a loop, the receiver is a fiber of the owner's thread (the
	 * link fiber) instead of a thread; it sets fiber_done as it ends. */
	struct fm_loop *loop;
	int fiber_done;
	/* Loop mode: the frames submitted during a turn leave together, in
	 * one sendmsg at the start of the next (flush_hook): one system
	 * call and one wake-up of the server per batch, not per frame, and
	 * a queue's consecutive WRITEs merged into one (frame_batch.h).
	 * Loop thread only. */
	struct fm_loop_hook flush_hook;
	struct fm_frame_batch fb;
	struct fm_loop_op out_op;     /* POLLOUT armed: the socket was full */
	int out_armed;

	/* Under send_lock (written by the receiver, read by senders).  An
	 * fm_mutex: a sender fiber that must wait for room in the socket
	 * parks holding it. */
	struct fm_mutex send_lock;
	int fd;
	uint64_t fd_epoch;
	/* The socket's channel keys (chan.h): chan.tx under send_lock (loop
	 * mode: the loop thread), tags computed in the order frames leave;
	 * chan.rx the receiver's.  Set with the socket by conn_install. */
	struct fm_chan chan;

	/* Receiver thread only. */
	uint8_t *rbuf;
	size_t rpos, rlen;
	/* The last recv took less than it asked for: the socket was empty
	 * then.  In loop mode with no request awaiting a reply, the next
	 * read waits for data first instead of trying a recv that would
	 * only say EAGAIN (one system call per reply at queue depth 1).
	 * With requests out, replies keep coming, and the recv that finds
	 * one saves a trip through the ring. */
	int drained;
	uint8_t *pbuf;
	uint64_t next_scan_ns;
	struct fm_req *culprit;       /* request whose reply broke the protocol */
	uint32_t segment_max;
	/* The session the last handshake authenticated (auth.h): the key
	 * and both nonces per-frame MACs derive their keys from. */
	struct fm_auth_session auth;
};

static int conn_stopping(struct tcp_conn *c)
{
	return fm_tc_stopping(&c->stop);
}

/* ---- blocking-with-deadline socket helpers (dial and handshake) ---- */

/* Wait for events on fd until deadline; the wake fd (when >= 0) aborts.
 * A link fiber waits through its loop's ring (fm_tc_poll). */
static int wait_fd(int fd, short events, uint64_t deadline, int wake_fd)
{
	struct pollfd pfd[2] = {
		{ .fd = fd, .events = events },
		{ .fd = wake_fd, .events = POLLIN },
	};

	for (;;) {
		int ms = fm_mono_ms_until(deadline);
		int n;

		if (ms == 0)
			return -ETIMEDOUT;
		n = fm_tc_poll(pfd, wake_fd >= 0 ? 2 : 1, ms);
		if (n < 0)
			return n;
		if (wake_fd >= 0 && pfd[1].revents)
			return -ECANCELED;
		if (n > 0 && pfd[0].revents)
			return 0;
	}
}

static int read_full(int fd, void *buf, size_t len, uint64_t deadline, int wake_fd)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0)
			return -ECONNRESET;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_fd(fd, POLLIN, deadline, wake_fd);

		if (rc)
			return rc;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len, uint64_t deadline, int wake_fd)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int rc = wait_fd(fd, POLLOUT, deadline, wake_fd);

		if (rc)
			return rc;
	}
	return 0;
}

/* ---- dial ---- */

static int dial_one(const struct fm_sockaddr *a, uint64_t deadline, int wake_fd, int *out)
{
	int fd, rc, err = 0;
	socklen_t elen = sizeof(err);

	fd = socket(a->family, a->socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, fm_sockaddr_ptr(a), a->len) < 0) {
		if (errno != EINPROGRESS) {
			rc = -errno;
			goto fail;
		}
		rc = wait_fd(fd, POLLOUT, deadline, wake_fd);
		if (rc)
			goto fail;
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) {
			rc = -errno;
			goto fail;
		}
		if (err) {
			rc = -err;
			goto fail;
		}
	}
	*out = fd;
	return 0;
fail:
	close(fd);
	return rc;
}

/* Try the addresses resolved at open, in order. */
static int tcp_dial(struct tcp_conn *c, uint64_t deadline, int wake_fd, int *out)
{
	int rc = -EHOSTUNREACH, one = 1;

	for (unsigned i = 0; i < c->cf.peer.n; i++) {
		rc = dial_one(&c->cf.peer.a[i], deadline, wake_fd, out);
		if (rc == 0 || rc == -ECANCELED || rc == -ETIMEDOUT)
			break;
	}
	if (rc)
		return rc;
	/* Small request frames must not wait for Nagle. */
	setsockopt(*out, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

/* ---- handshake ---- */

/* Read one handshake reply of op (tag 0) with exactly want payload bytes. */
static int hs_reply(struct tcp_conn *c, int fd, uint8_t op, uint8_t *payload,
		    size_t want, uint64_t deadline, int wake_fd)
{
	uint8_t hb[FM_HDR_SIZE];
	struct fm_hdr h;
	int rc;

	rc = read_full(fd, hb, sizeof(hb), deadline, wake_fd);
	if (rc)
		return rc;
	if (fm_hdr_decode(hb, sizeof(hb), &h) < 0) {
		log_err("server %s: %s reply has a bad header: not a farmem memserver?",
			c->cf.name, fm_op_name(op));
		return -EPROTO;
	}
	if (h.op != (op | FM_OP_REPLY) || h.tag != 0) {
		log_err("server %s: expected a %s reply (tag 0), got op 0x%02x tag %u",
			c->cf.name, fm_op_name(op), h.op, h.tag);
		return -EPROTO;
	}
	if (h.status < 0) {
		log_err("server %s: %s refused: %s", c->cf.name, fm_op_name(op),
			strerror(-h.status));
		return h.status < -4095 ? -EPROTO : h.status;
	}
	if (h.status > 0 || h.len != want) {
		log_err("server %s: %s reply: status %d len %u (want 0, %zu)",
			c->cf.name, fm_op_name(op), h.status, h.len, want);
		return -EPROTO;
	}
	return read_full(fd, payload, want, deadline, wake_fd);
}

static int hs_send(int fd, uint8_t op, const uint8_t *payload, uint32_t len,
		   uint64_t deadline, int wake_fd)
{
	uint8_t frame[FM_HDR_SIZE + FM_HELLO_REQ_MAX];
	struct fm_hdr h = { .op = op, .tag = 0, .status = 0, .len = len };

	if (len > sizeof(frame) - FM_HDR_SIZE)
		return -EINVAL;
	fm_hdr_encode(frame, &h);
	memcpy(frame + FM_HDR_SIZE, payload, len);
	return write_full(fd, frame, FM_HDR_SIZE + len, deadline, wake_fd);
}

/* HELLO, then AUTH; both sides prove they hold the key (the server
 * derives ours from the secret and our name).  On success c->auth is
 * the session, and *ch the channel keys derived from its key and both
 * nonces. */
static int tcp_handshake(struct tcp_conn *c, int fd, uint64_t deadline, int wake_fd,
			 struct fm_chan *ch)
{
	struct fm_tc_hs hs;
	uint8_t buf[FM_HELLO_REP_LEN], mac[FM_MAC_LEN];
	int rc;

	fm_tc_hs_hello(&c->cf, &hs);
	if (hs.hello_len == 0)
		return -EINVAL;
	rc = hs_send(fd, FM_OP_HELLO, hs.hello, (uint32_t)hs.hello_len, deadline, wake_fd);
	if (rc == 0)
		rc = hs_reply(c, fd, FM_OP_HELLO, buf, FM_HELLO_REP_LEN, deadline, wake_fd);
	if (rc == 0)
		rc = fm_tc_hs_auth(&c->cf, &hs, buf, FM_HELLO_REP_LEN, mac);
	if (rc == 0)
		rc = hs_send(fd, FM_OP_AUTH, mac, FM_MAC_LEN, deadline, wake_fd);
	if (rc)
		goto out;
	rc = hs_reply(c, fd, FM_OP_AUTH, mac, FM_MAC_LEN, deadline, wake_fd);
	if (rc == -ECONNRESET || rc == -EPIPE) {
		/* The server closes on a MAC it does not accept. */
		log_err("server %s: closed the connection at AUTH: wrong key or secret "
			"(client %s)?", c->cf.name, c->cf.id.name);
		rc = -EACCES;
	}
	if (rc == -EPERM)
		rc = -EACCES;
	if (rc == 0)
		rc = fm_tc_hs_verify(&c->cf, &hs, mac);
	if (rc == 0) {
		c->segment_max = hs.segment_max;
		c->auth = hs.sess;
		/* The key that authenticated the handshake, and its nonces. */
		fm_chan_init(ch, FM_CHAN_CLIENT, hs.sess.key, FM_KEY_LEN,
			     hs.sess.client_nonce, hs.sess.server_nonce);
		fm_tc_hs_done(&c->cf, &c->base, &hs);
	}
out:
	fm_wipe(&hs, sizeof(hs));
	return rc;
}

/* Dial and authenticate within connect_timeout; the socket comes back
 * blocking (senders rely on it; the receiver polls and uses MSG_DONTWAIT). */
static int tcp_connect(struct tcp_conn *c, int wake_fd, int *out, struct fm_chan *ch)
{
	uint64_t deadline = fm_mono_after_ms(c->cf.connect_timeout_ms);
	int fd = -1, rc;

	rc = tcp_dial(c, deadline, wake_fd, &fd);
	if (rc)
		return rc;
	rc = tcp_handshake(c, fd, deadline, wake_fd, ch);
	/* A loop's senders are fibers: they wait for room through the ring. */
	if (rc == 0 && !c->loop &&
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		rc = -errno;
	if (rc) {
		close(fd);
		return rc;
	}
	*out = fd;
	return 0;
}

/* ---- slots ---- */

static int slot_take(struct tcp_conn *c, struct fm_req *r, uint32_t *tag,
		     uint64_t *epoch)
{
	uint64_t slot_deadline = fm_mono_after_ms(c->cf.timeout_ms);
	struct tcp_slot *s;
	uint32_t idx;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		if (c->stop) {
			rc = -ECANCELED;
			break;
		}
		if (!c->up) {
			rc = -ENOTCONN;
			break;
		}
		if (c->nfree)
			break;
		/* All slots busy: wait for one, as long as a request may take. */
		rc = fm_tc_slot_wait(&c->lock, &c->slot_cv, c->loop, slot_deadline);
		if (rc == -ETIMEDOUT)
			log_warn("server %s: no free request slot in %u ms (%u in flight)",
				 c->cf.name, c->cf.timeout_ms, c->cf.nslots);
		if (rc)
			break;
	}
	if (rc < 0) {
		pthread_mutex_unlock(&c->lock);
		return rc;
	}
	idx = c->free_idx[--c->nfree];
	s = &c->slots[idx];
	s->gen++;
	s->req = r;
	*tag = fm_tc_tag(s->gen, idx);
	fm_tc_req_start(r, *tag, c->cf.timeout_ms);
	*epoch = c->epoch;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* Receiver only: release the slot and run done() outside the lock. */
static void slot_complete(struct tcp_conn *c, uint32_t idx, int status)
{
	struct fm_req *r;

	pthread_mutex_lock(&c->lock);
	r = c->slots[idx].req;
	c->slots[idx].req = NULL;
	c->free_idx[c->nfree++] = idx;
	pthread_cond_signal(&c->slot_cv);
	pthread_mutex_unlock(&c->lock);
	r->done(r, status);
}

/* Receiver only: a reply came for slot idx's frame, which in loop mode
 * may have carried other requests' WRITEs (frame_batch.h): they end the
 * same way. */
static void reply_complete(struct tcp_conn *c, uint32_t idx, int status)
{
	uint32_t next = c->loop ? fm_fb_take_rider(&c->fb, idx) : FM_FB_NONE;

	slot_complete(c, idx, status);
	while (next != FM_FB_NONE) {
		uint32_t after = fm_fb_take_rider(&c->fb, next);

		slot_complete(c, next, status);
		next = after;
	}
}

/* Earliest deadline among in-flight requests (UINT64_MAX when none);
 * *expired says whether one has passed. */
static uint64_t slots_earliest(struct tcp_conn *c, uint64_t now, int *expired)
{
	uint64_t min = UINT64_MAX;

	pthread_mutex_lock(&c->lock);
	if (c->nfree < c->cf.nslots) {
		for (unsigned i = 0; i < c->cf.nslots; i++) {
			struct fm_req *r = c->slots[i].req;

			if (r && r->t_deadline_ns < min)
				min = r->t_deadline_ns;
		}
	}
	pthread_mutex_unlock(&c->lock);
	*expired = min <= now;
	return min;
}

/* ---- sending ---- */

/* Build header and small payload in head, the data in iov[1..]; checks
 * the request.  Returns the iovec count or -EINVAL. */
static int frame_build(const struct fm_tc_conf *cf, const struct fm_req *r, uint8_t *head,
		       struct iovec *iov, int iov_max)
{
	struct fm_hdr h = { .op = r->op };
	struct fm_range range = { .seg_id = r->seg_id, .offset = r->offset, .len = r->len };
	size_t small = 0, data = 0;
	int n = 1;

	switch (r->op) {
	case FM_OP_ALLOC:
		small = fm_alloc_req_encode(head + FM_HDR_SIZE, r->arg);
		break;
	case FM_OP_FREE:
		small = fm_u64_encode(head + FM_HDR_SIZE, r->seg_id);
		break;
	case FM_OP_READ:
		if (r->len > cf->max_io || (r->len && !r->buf))
			return -EINVAL;
		small = fm_range_encode(head + FM_HDR_SIZE, &range);
		break;
	case FM_OP_STAT:
		break;
	case FM_OP_DRAIN:
		small = fm_drain_req_encode(head + FM_HDR_SIZE, r->arg);
		break;
	case FM_OP_LIST:
		if (cf->data_only)
			return -EOPNOTSUPP;
		if (!r->rep.list.seg_ids || !r->rep.list.sizes)
			return -EINVAL;
		small = fm_list_req_encode(head + FM_HDR_SIZE, r->arg);
		break;
	case FM_OP_WRITE:
		if (r->len > cf->max_io)
			return -EINVAL;
		small = fm_range_encode(head + FM_HDR_SIZE, &range);
		/* fallthrough */
	case FM_OP_PING:
		if (r->op == FM_OP_PING && r->len > FM_PING_MAX)
			return -EINVAL;
		if (r->iovcnt < 0 || r->iovcnt > iov_max - 1 || (r->iovcnt && !r->iov))
			return -EINVAL;
		for (int i = 0; i < r->iovcnt; i++) {
			if (r->iov[i].iov_len == 0)
				continue;
			data += r->iov[i].iov_len;
			iov[n++] = r->iov[i];
		}
		if (data != r->len)
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	h.len = (uint32_t)(small + data);
	fm_hdr_encode(head, &h);
	iov[0].iov_base = head;
	iov[0].iov_len = FM_HDR_SIZE + small;
	return n;
}

static int send_all(int fd, struct iovec *iov, int n)
{
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)n };

	while (m.msg_iovlen) {
		ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN && fm_fiber_self()) {
			int ev = fm_fiber_poll(fd, POLLOUT);

			if (ev < 0)
				return ev;
			continue;
		}
		if (w < 0)
			return -errno;
		/* Partial write: step over what went out. */
		while (m.msg_iovlen && (size_t)w >= m.msg_iov->iov_len) {
			w -= (ssize_t)m.msg_iov->iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen) {
			m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + w;
			m.msg_iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

/* Write one frame on the socket of the given epoch.  Failures do not go
 * back to the caller: the request already has a slot, so the receiver
 * fails it with the rest when it sees the socket go down. */
static void frame_send(struct tcp_conn *c, uint64_t epoch, struct iovec *iov, int n)
{
	uint8_t tag[FM_CHAN_TAG_LEN];
	int rc;

	fm_mutex_lock(&c->send_lock);
	if (c->fd >= 0 && c->fd_epoch == epoch) {
		/* Tagged under the lock: tags number frames in send order. */
		fm_chan_seal_iov(&c->chan.tx, iov, n, tag);
		iov[n] = (struct iovec){ .iov_base = tag, .iov_len = sizeof(tag) };
		rc = send_all(c->fd, iov, n + 1);
		if (rc) {
			log_warn("server %s: send failed: %s", c->cf.name, strerror(-rc));
			/* A half-written frame poisons the stream: end it. */
			shutdown(c->fd, SHUT_RDWR);
		}
	}
	fm_mutex_unlock(&c->send_lock);
}

/* ---- loop mode: batched sends ---- */

static void out_ready(struct fm_loop_op *op, int res, unsigned flags)
{
	struct tcp_conn *c = (struct tcp_conn *)((char *)op - offsetof(struct tcp_conn, out_op));

	(void)res;
	(void)flags;
	c->out_armed = 0;   /* the next turn's flush tries again */
}

/* Send what is queued, merged and sealed first (frame_batch.h); on a
 * full socket, poll for room through the ring and leave the rest for a
 * later turn.  A send error ends the stream (the link fiber then fails
 * every request in flight). */
static void tcp_flush(struct tcp_conn *c)
{
	while (c->fd >= 0) {
		fm_fb_seal(&c->fb, &c->chan.tx);
		if (!c->fb.nwire)
			break;
		struct msghdr m = { .msg_iov = c->fb.wire, .msg_iovlen = (size_t)c->fb.nwire };
		ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w >= 0) {
			fm_fb_sent(&c->fb, (size_t)w);
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct io_uring_sqe *sqe = c->out_armed ? NULL : fm_loop_sqe(c->loop);

			if (sqe) {
				io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
				io_uring_sqe_set_data(sqe, &c->out_op);
				c->out_armed = 1;
			}
			return;
		}
		log_warn("server %s: send failed: %s", c->cf.name, strerror(errno));
		shutdown(c->fd, SHUT_RDWR);
		break;
	}
	if (c->fd < 0)
		fm_fb_clear(&c->fb);
}

static void flush_hook(struct fm_loop_hook *h)
{
	tcp_flush((struct tcp_conn *)((char *)h - offsetof(struct tcp_conn, flush_hook)));
}

/* Stage a frame for the next flush, which merges and seals it; a fiber
 * waits for room when the batch is full. */
static void frame_queue(struct tcp_conn *c, uint32_t idx, uint64_t epoch,
			const struct fm_fb_span *span, struct iovec *iov, int n)
{
	for (;;) {
		if (c->fd < 0 || c->fd_epoch != epoch)
			return;     /* dropped: the link fiber fails the request */
		if (fm_fb_has_room(&c->fb, n))
			break;
		tcp_flush(c);
		if (!fm_fb_has_room(&c->fb, n) && fm_fiber_poll(c->fd, POLLOUT) < 0)
			return;
	}
	fm_fb_stage(&c->fb, idx, span, iov, n);
}

static int tcp_submit(struct fm_conn *base, struct fm_req *r)
{
	struct tcp_conn *c = (struct tcp_conn *)base;
	uint8_t head[FM_HDR_SIZE + FM_RANGE_LEN];
	struct iovec iov[TCP_IOV_MAX + 2];   /* head, data, tag */
	uint64_t epoch;
	uint32_t tag;
	int n, rc;

	if (!r || !r->done)
		return -EINVAL;
	/* Everything is read from r before it gets a slot: from then on the
	 * receiver may complete it at any time. */
	const struct fm_fb_span span = { .op = r->op, .seg_id = r->seg_id,
					 .offset = r->offset, .len = r->len };
	n = frame_build(&c->cf, r, head, iov, TCP_IOV_MAX + 1);
	if (n < 0)
		return n;
	rc = slot_take(c, r, &tag, &epoch);
	if (rc)
		return rc;
	put_le32(head + 8, tag);
	if (c->loop)
		frame_queue(c, fm_tc_tag_idx(tag), epoch, &span, iov, n);
	else
		frame_send(c, epoch, iov, n);
	return 0;
}

/* ---- receiving ---- */

/* Deadlines, checked without scanning every slot on every wakeup: a scan
 * happens when the cached next-check time has come (at the latest one
 * tick after the previous scan, or at the earliest deadline it found).
 * Requests submitted since then have later deadlines than anything the
 * scan saw, so they can only be a tick late.  Returns -ETIMEDOUT when a
 * request has expired, -ECANCELED when closing. */
static int rx_deadlines(struct tcp_conn *c, uint64_t now)
{
	uint64_t tick = now + TCP_TICK_MS * 1000000ull, first;
	int expired;

	if (conn_stopping(c))
		return -ECANCELED;
	if (now < c->next_scan_ns)
		return 0;
	first = slots_earliest(c, now, &expired);
	if (expired)
		return -ETIMEDOUT;
	c->next_scan_ns = first < tick ? first : tick;
	return 0;
}

/* Wait for the socket to become readable, enforcing deadlines. */
static int rx_wait(struct tcp_conn *c)
{
	struct pollfd pfd[2] = {
		{ .fd = c->fd, .events = POLLIN },
		{ .fd = c->wake_fd, .events = POLLIN },
	};

	for (;;) {
		int rc = rx_deadlines(c, fm_mono_ns());

		if (rc)
			return rc;
		int ms = fm_mono_ms_until(c->next_scan_ns);

		if (c->loop) {
			/* The stop flag is looked at by rx_deadlines() at
			 * least every tick. */
			int ev = fm_fiber_poll_timeout(c->fd, POLLIN,
						       (uint64_t)(ms > 0 ? ms : 1) * 1000000ull);

			if (ev < 0)
				return ev;
			if (ev > 0)
				return 0;
			continue;
		}
		int k = poll(pfd, 2, ms > 0 ? ms : 1);

		if (k < 0 && errno != EINTR)
			return -errno;
		if (k > 0 && pfd[1].revents && conn_stopping(c))
			return -ECANCELED;
		if (k > 0 && pfd[0].revents)
			return 0;
	}
}

/* One recv into buf; never returns 0. */
static ssize_t rx_some(struct tcp_conn *c, void *buf, size_t cap)
{
	for (;;) {
		/* Replies may keep coming while one request never gets its
		 * own: deadlines are looked at here too, not only when idle. */
		int rc = rx_deadlines(c, fm_mono_ns());

		if (rc)
			return rc;
		if (c->drained && c->loop && c->nfree == c->cf.nslots) {
			c->drained = 0;
			rc = rx_wait(c);
			if (rc)
				return rc;
		}
		ssize_t n = recv(c->fd, buf, cap, MSG_DONTWAIT);

		if (n > 0) {
			c->drained = (size_t)n < cap;
			return n;
		}
		if (n == 0) {
			log_warn("server %s: closed the connection", c->cf.name);
			return -ECONNRESET;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			int e = errno;

			log_warn("server %s: receive failed: %s", c->cf.name, strerror(e));
			return -e;
		}
		rc = rx_wait(c);
		if (rc)
			return rc;
	}
}

/* Exactly len bytes from the stream into dst (buffered; long reads go
 * straight into dst). */
static int rx_read(struct tcp_conn *c, void *dst, size_t len)
{
	uint8_t *p = dst;

	while (len) {
		if (c->rpos < c->rlen) {
			size_t k = c->rlen - c->rpos;

			if (k > len)
				k = len;
			memcpy(p, c->rbuf + c->rpos, k);
			c->rpos += k;
			p += k;
			len -= k;
			continue;
		}
		if (len >= TCP_DIRECT_MIN) {
			ssize_t n = rx_some(c, p, len);

			if (n < 0)
				return (int)n;
			p += n;
			len -= (size_t)n;
			continue;
		}
		ssize_t n = rx_some(c, c->rbuf, TCP_RBUF_SIZE);

		if (n < 0)
			return (int)n;
		c->rpos = 0;
		c->rlen = (size_t)n;
	}
	return 0;
}

/* Exactly len bytes into dst, fed to the frame's tag. */
static int rx_read_mac(struct tcp_conn *c, void *dst, size_t len, struct fm_chan_mac *m)
{
	int rc = rx_read(c, dst, len);

	if (rc == 0)
		fm_chan_mac_update(m, dst, len);
	return rc;
}

static int rx_discard(struct tcp_conn *c, size_t len, struct fm_chan_mac *m)
{
	while (len) {
		size_t k = len < TCP_PBUF_SIZE ? len : TCP_PBUF_SIZE;
		int rc = rx_read_mac(c, c->pbuf, k, m);

		if (rc)
			return rc;
		len -= k;
	}
	return 0;
}

/* Decode a small reply payload (already in pbuf) into the request. */
static int rx_decode(struct tcp_conn *c, struct fm_req *r, uint32_t len)
{
	uint32_t count;

	switch (r->op) {
	case FM_OP_ALLOC:
		return fm_alloc_rep_decode(c->pbuf, len, &r->rep.alloc);
	case FM_OP_STAT:
		return fm_stat_decode(c->pbuf, len, &r->rep.stat);
	case FM_OP_LIST:
		if (fm_list_rep_decode(c->pbuf, len, &count) < 0 || count > FM_LIST_MAX)
			return -EPROTO;
		for (uint32_t i = 0; i < count; i++)
			fm_list_rep_entry(c->pbuf, i, &r->rep.list.seg_ids[i],
					  &r->rep.list.sizes[i]);
		r->rep.list.count = count;
		return 0;
	case FM_OP_FREE:
	case FM_OP_WRITE:
	case FM_OP_DRAIN:
		return len == 0 ? 0 : -EPROTO;
	default:
		return -EPROTO;
	}
}

static int rx_protocol_error(struct tcp_conn *c, struct fm_req *r, const char *what,
			     const struct fm_hdr *h)
{
	log_err("server %s: bad reply (%s): op 0x%02x tag 0x%08x status %d len %u; "
		"dropping the connection", c->cf.name, what, h->op, h->tag, h->status, h->len);
	c->culprit = r;
	return -EPROTO;
}

/* The tag after a reply: nothing of the reply counts until it checks. */
static int rx_tag(struct tcp_conn *c, struct fm_req *r, const struct fm_hdr *h,
		  struct fm_chan_mac *m)
{
	uint8_t tag[FM_CHAN_TAG_LEN];
	int rc = rx_read(c, tag, sizeof(tag));

	if (rc)
		return rc;
	if (fm_chan_mac_check(m, &c->chan.rx, tag) == 0)
		return 0;
	fm_chan_count_reject();
	return rx_protocol_error(c, r, "fails its channel check: forged, replayed or "
				 "reordered", h);
}

/* A NOTICE (server-sent, tag 0, never answered): it takes its number
 * in the server-to-client direction like a reply, so its tag is checked
 * the same way; only then is it decoded and delivered. */
static int rx_notice(struct tcp_conn *c, const uint8_t *hb, const struct fm_hdr *h)
{
	struct fm_chan_mac m;
	int rc;

	if (!c->chan.up || h->tag != 0 || h->status != 0 ||
	    h->len > FM_NOTICE_LEN(FM_NOTICE_MAX))
		return rx_protocol_error(c, NULL, "NOTICE out of bounds", h);
	fm_chan_mac_begin(&m, &c->chan.rx);
	fm_chan_mac_update(&m, hb, FM_HDR_SIZE);
	rc = rx_read_mac(c, c->pbuf, h->len, &m);
	if (rc == 0)
		rc = rx_tag(c, NULL, h, &m);
	if (rc)
		return rc;
	fm_tc_notice(&c->cf, c->pbuf, h->len);
	return 0;
}

/* Read and complete one reply.  Nonzero means the connection must go. */
static int rx_one(struct tcp_conn *c)
{
	uint8_t hb[FM_HDR_SIZE];
	struct fm_hdr h;
	struct fm_req *r = NULL;
	struct fm_chan_mac m;
	uint32_t idx;
	int rc;

	rc = rx_read(c, hb, sizeof(hb));
	if (rc)
		return rc;
	rc = fm_hdr_decode(hb, sizeof(hb), &h);
	if (rc) {
		log_err("server %s: reply header rejected (%s); dropping the connection",
			c->cf.name, strerror(-rc));
		return -EPROTO;
	}
	if (h.op == FM_OP_NOTICE)
		return rx_notice(c, hb, &h);
	idx = fm_tc_tag_idx(h.tag);
	pthread_mutex_lock(&c->lock);
	if (idx < c->cf.nslots && c->slots[idx].gen == fm_tc_tag_gen(h.tag))
		r = c->slots[idx].req;
	pthread_mutex_unlock(&c->lock);
	/* Only this thread frees slots, so r stays ours after the unlock. */
	if (!r)
		return rx_protocol_error(c, NULL, "unknown tag", &h);
	if (h.op != (r->op | FM_OP_REPLY))
		return rx_protocol_error(c, r, "op does not match the request", &h);
	if (h.status > 0 || h.status < -4095)
		return rx_protocol_error(c, r, "status out of range", &h);

	fm_chan_mac_begin(&m, &c->chan.rx);
	fm_chan_mac_update(&m, hb, sizeof(hb));
	if (h.status < 0) {
		rc = rx_discard(c, h.len, &m);
		if (rc == 0)
			rc = rx_tag(c, r, &h, &m);
		if (rc)
			return rc;
		reply_complete(c, idx, h.status);
		return 0;
	}
	/* READ data lands in the caller's buffer before its tag is checked;
	 * a bad tag fails the request, so the caller never uses it. */
	if (r->op == FM_OP_READ || (r->op == FM_OP_PING && r->buf)) {
		if (h.len != r->len)
			return rx_protocol_error(c, r, "data length differs from the request", &h);
		rc = rx_read_mac(c, r->buf, h.len, &m);
	} else if (r->op == FM_OP_PING) {
		if (h.len != r->len)
			return rx_protocol_error(c, r, "echo length differs", &h);
		rc = rx_discard(c, h.len, &m);
	} else {
		if (h.len > TCP_PBUF_SIZE)
			return rx_protocol_error(c, r, "payload too long", &h);
		rc = rx_read_mac(c, c->pbuf, h.len, &m);
	}
	if (rc == 0)
		rc = rx_tag(c, r, &h, &m);
	if (rc)
		return rc;
	if (r->op != FM_OP_READ && r->op != FM_OP_PING && rx_decode(c, r, h.len) < 0)
		return rx_protocol_error(c, r, "payload does not decode", &h);
	reply_complete(c, idx, 0);
	return 0;
}

/* ---- connection state ---- */

static void conn_install(struct tcp_conn *c, int fd, struct fm_chan *ch)
{
	uint64_t epoch = c->epoch + 1;   /* only this thread writes epoch */

	fm_mutex_lock(&c->send_lock);
	c->fd = fd;
	c->fd_epoch = epoch;
	c->chan = *ch;
	fm_mutex_unlock(&c->send_lock);
	fm_chan_wipe(ch);
	c->rpos = c->rlen = 0;
	c->drained = 0;
	c->next_scan_ns = 0;
	pthread_mutex_lock(&c->lock);
	c->epoch = epoch;
	c->up = 1;
	pthread_mutex_unlock(&c->lock);
}

/* Tear the socket down and fail every in-flight request: the expired
 * ones with -ETIMEDOUT when why is -ETIMEDOUT, a protocol culprit with
 * -EPROTO, closing with -ECANCELED, everything else -ECONNRESET. */
static void conn_drop(struct tcp_conn *c, int why)
{
	struct fm_req *list = NULL;
	uint64_t now = fm_mono_ns();
	unsigned failed = 0;
	int was_up;

	pthread_mutex_lock(&c->lock);
	was_up = c->up;
	c->up = 0;
	for (unsigned i = 0; i < c->cf.nslots; i++) {
		struct fm_req *r = c->slots[i].req;

		if (!r)
			continue;
		r->t_next = list;
		list = r;
		c->slots[i].req = NULL;
		c->free_idx[c->nfree++] = i;
	}
	pthread_cond_broadcast(&c->slot_cv);
	pthread_mutex_unlock(&c->lock);

	if (c->fd >= 0) {
		/* shutdown() first: it frees a sender stuck in sendmsg, which
		 * holds send_lock. */
		shutdown(c->fd, SHUT_RDWR);
		fm_mutex_lock(&c->send_lock);
		close(c->fd);
		c->fd = -1;
		fm_mutex_unlock(&c->send_lock);
	}
	c->rpos = c->rlen = 0;
	c->drained = 0;
	if (c->loop)
		fm_fb_clear(&c->fb);   /* frames of the old stream: their requests fail below */

	while (list) {
		struct fm_req *r = list;
		int status = fm_tc_drop_status(&c->cf, r, why, c->culprit, now);

		list = r->t_next;
		failed++;
		r->done(r, status);
	}
	c->culprit = NULL;
	fm_tc_report_down(&c->cf, was_up, why, failed);
}

static void conn_reconnect(struct tcp_conn *c, struct fm_tc_backoff *b)
{
	struct fm_chan ch;
	int fd, rc;

	if (fm_tc_sleep_or_stop(c->wake_fd, &c->stop, b->ms))
		return;
	rc = tcp_connect(c, c->wake_fd, &fd, &ch);
	if (rc) {
		/* tcp_connect logs little on its own: retries go to debug. */
		fm_tc_backoff_failed(b, &c->cf, rc, 1);
		return;
	}
	conn_install(c, fd, &ch);
	fm_tc_backoff_succeeded(b, &c->cf);
}

static void *conn_thread(void *arg)
{
	struct tcp_conn *c = arg;
	struct fm_tc_backoff backoff;

	fm_tc_backoff_init(&backoff);

	while (!conn_stopping(c)) {
		if (c->fd >= 0) {
			int rc = rx_one(c);

			if (rc)
				conn_drop(c, rc);
		} else if (c->cf.reconnect) {
			conn_reconnect(c, &backoff);
		} else {
			fm_tc_sleep_or_stop(c->wake_fd, &c->stop, 60000);
		}
	}
	conn_drop(c, -ECANCELED);
	return NULL;
}

/* The receiver as a fiber of the owner's loop. */
static void link_fiber(void *arg)
{
	struct tcp_conn *c = arg;

	conn_thread(c);
	c->fiber_done = 1;
}

/* close(): the link fiber has ended and no send is armed in the ring. */
static int link_ended(void *arg)
{
	const struct tcp_conn *c = arg;

	return c->fiber_done && !c->out_armed;
}

/* ---- open / close ---- */

static void conn_free(struct tcp_conn *c)
{
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	pthread_cond_destroy(&c->slot_cv);
	pthread_mutex_destroy(&c->lock);
	fm_mutex_destroy(&c->send_lock);
	free(c->slots);
	free(c->free_idx);
	free(c->rbuf);
	free(c->pbuf);
	fm_fb_fini(&c->fb);
	fm_chan_wipe(&c->chan);
	fm_tc_conf_fini(&c->cf);
	fm_wipe(&c->auth, sizeof(c->auth));
	free(c);
}

static struct tcp_conn *conn_alloc(const struct fm_conn_params *p)
{
	struct tcp_conn *c = calloc(1, sizeof(*c));
	int cv_rc, fb_rc = 0;

	if (!c)
		return NULL;
	c->base.ops = &fm_transport_tcp;
	c->loop = p->loop;
	fm_tc_conf_init(&c->cf, p, "server ");
	c->fd = -1;
	c->wake_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	fm_mutex_init(&c->send_lock);
	cv_rc = fm_cond_init_mono(&c->slot_cv);

	c->slots = calloc(c->cf.nslots, sizeof(*c->slots));
	c->free_idx = calloc(c->cf.nslots, sizeof(*c->free_idx));
	c->rbuf = malloc(TCP_RBUF_SIZE);
	c->pbuf = malloc(TCP_PBUF_SIZE);
	if (c->loop) {
		fb_rc = fm_fb_init(&c->fb, c->cf.nslots);
		c->flush_hook.fn = flush_hook;
		c->out_op.cb = out_ready;
	}
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cv_rc || !c->slots || !c->free_idx || !c->rbuf || !c->pbuf || c->wake_fd < 0 ||
	    fb_rc) {
		conn_free(c);
		return NULL;
	}
	fm_tc_free_stack_init(c->free_idx, c->cf.nslots);
	c->nfree = c->cf.nslots;
	return c;
}

static int tcp_open(const struct fm_conn_params *p, struct fm_conn **out)
{
	struct tcp_conn *c;
	struct fm_chan ch;
	int fd, rc;

	*out = NULL;
	if (p->addr.kind != ADDR_TCP || (!p->secret && !p->identity)) {
		log_err("tcp transport: needs a tcp:// address and a key or secret");
		return -EINVAL;
	}
	if (p->max_inflight > TCP_MAX_INFLIGHT) {
		log_err("tcp transport: max_inflight %u is above %u (tags carry 16 bits of slot)",
			p->max_inflight, TCP_MAX_INFLIGHT);
		return -EINVAL;
	}
	c = conn_alloc(p);
	if (!c) {
		log_err("tcp transport: out of memory opening a connection");
		return -ENOMEM;
	}
	rc = fm_tc_resolve(&c->cf);
	if (rc == 0)
		rc = tcp_connect(c, -1, &fd, &ch);
	if (rc) {
		log_err("server %s: cannot connect: %s", c->cf.name, strerror(-rc));
		conn_free(c);
		return rc;
	}
	conn_install(c, fd, &ch);
	if (c->loop) {
		rc = fm_loop_spawn(c->loop, link_fiber, c);
		if (rc == 0)
			fm_loop_hook_add(c->loop, &c->flush_hook);
	} else
		rc = fm_tc_start_thread(&c->thread, conn_thread, c);
	if (rc) {
		log_err("server %s: cannot start the receiver thread: %s", c->cf.name,
			strerror(-rc));
		close(fd);
		conn_free(c);
		return rc;
	}
	log_debug("server %s: connected (segment_max %u, %u slots)", c->cf.name,
		  c->segment_max, c->cf.nslots);
	*out = &c->base;
	return 0;
}

static int tcp_is_up(struct fm_conn *base)
{
	struct tcp_conn *c = (struct tcp_conn *)base;

	return fm_tc_locked_flag(&c->lock, &c->up);
}

static void tcp_close(struct fm_conn *base)
{
	struct tcp_conn *c = (struct tcp_conn *)base;

	fm_tc_request_stop(&c->cf, &c->lock, &c->slot_cv, &c->stop, c->wake_fd, "receiver");
	if (!c->loop)
		pthread_join(c->thread, NULL);
	/* The link fiber sees stop within a tick and fails what is left. */
	if (c->loop)
		fm_tc_loop_wait(c->loop, link_ended, c);
	if (c->loop)
		fm_loop_hook_del(c->loop, &c->flush_hook);
	conn_free(c);
}

const struct fm_transport_ops fm_transport_tcp = {
	.name = "tcp",
	.open = tcp_open,
	.submit = tcp_submit,
	.is_up = tcp_is_up,
	.close = tcp_close,
};
