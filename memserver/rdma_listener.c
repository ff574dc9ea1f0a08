/* rdma_listener.c — the memserver's rdma:// listener (see rdma_listener.h).
 *
 * One epoll set holds the rdma_cm event channel, one completion channel
 * per RDMA device and a 1 s timer; the memserver's loop polls its fd and
 * calls ms_rdma_process().  Per connection: an RC queue pair, a CQ, a few
 * small receive buffers for request frames (the largest request, a PING,
 * is under 300 bytes) and send buffers big enough for a LIST reply.  The
 * session code appends replies to the connection's ms_buf; they go out as
 * SENDs as send buffers free up, so a client within its credit
 * (FM_RDMA_CTRL_DEPTH) is never refused and one beyond it is only slowed.
 */
#include "rdma_listener.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "log.h"
#include "transport_rdma.h"

#define RL_RECV_DEPTH     FM_RDMA_CTRL_DEPTH
#define RL_RECV_BUF       1024u
#define RL_SEND_DEPTH     (2 * FM_RDMA_CTRL_DEPTH)
#define RL_SEND_BUF       FM_RDMA_MSG_MAX
#define RL_SQ_DEPTH       (RL_SEND_DEPTH + FM_RDMA_CTRL_DEPTH + 8)  /* sends + binds */
#define RL_GRANT_BUCKETS  256
#define RL_AUTH_MS        10000
#define RL_SWEEP_MS       1000
#define RL_MAX_CONNS      1024
#define RL_RD_ATOMIC      16

_Static_assert(RL_SEND_DEPTH <= 32, "send buffers are tracked in a 32-bit mask");
_Static_assert(RL_RECV_BUF >= FM_HDR_SIZE + FM_PING_MAX + FM_CHAN_TAG_LEN,
	       "a tagged PING request fits");

enum { WR_RECV = 1, WR_SEND, WR_BIND };
#define WR_ID(kind, idx)  ((uint64_t)(kind) << 32 | (uint32_t)(idx))
#define WR_KIND(id)       ((unsigned)((id) >> 32))
#define WR_IDX(id)        ((uint32_t)(id))

/* epoll data of the two fixed fds; devices use their own address. */
#define EP_CM     1u
#define EP_TIMER  2u

struct rl_dev {
	struct ibv_context *verbs;
	struct ibv_pd *pd;
	struct ibv_mr *mr;               /* the whole pool */
	struct ibv_comp_channel *cch;
	int windows;                     /* type-2 memory windows work */
	int max_rd_atom;
	struct rl_dev *next;
};

struct rl_grant {
	uint64_t seg_id;
	uint8_t *addr;
	struct ibv_mw *mw;               /* NULL: the whole-pool key */
	uint32_t rkey;
	uint32_t size;
	struct rl_grant *next;
};

struct rl_conn {
	struct ms_rdma *l;
	struct rdma_cm_id *id;
	struct rl_dev *dev;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	uint8_t *mem;                    /* receive buffers, then send buffers */
	size_t mem_len;
	uint32_t send_free;              /* bit i: send buffer i is free */
	unsigned sends_out;
	unsigned cq_unacked;
	struct ms_session sess;
	struct ms_buf out;
	int close_after_flush;
	int linked;                      /* on l->conns */
	uint64_t auth_deadline;
	struct rl_grant *grants[RL_GRANT_BUCKETS];
	struct rl_conn *prev, *next;
};

struct ms_rdma {
	struct ms_ctx *ctx;
	char name[ADDR_HOST_MAX + 32];
	int epfd, timerfd;
	struct rdma_event_channel *ech;
	struct rdma_cm_id *listen_id;
	struct rl_dev *devs;
	struct rl_conn *conns;
	unsigned nconns;
	struct ms_rdma_stats stats;
	struct ms_free_hook free_hook; /* in ctx->free_hooks while we live */
};

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static int watch(struct ms_rdma *l, int fd, uint64_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = tag };

	return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* ---- devices: the pool registered once per RDMA device ---- */

static void dev_free(struct rl_dev *d)
{
	if (d->mr)
		ibv_dereg_mr(d->mr);
	if (d->cch)
		ibv_destroy_comp_channel(d->cch);
	if (d->pd)
		ibv_dealloc_pd(d->pd);
	free(d);
}

/* Type-2 windows need no more than allocating one to find out. */
static int probe_windows(struct ibv_pd *pd)
{
	struct ibv_mw *mw = ibv_alloc_mw(pd, IBV_MW_TYPE_2);

	if (!mw)
		return 0;
	ibv_dealloc_mw(mw);
	return 1;
}

static struct rl_dev *dev_get(struct ms_rdma *l, struct ibv_context *verbs)
{
	const char *dname = ibv_get_device_name(verbs->device);
	struct ms_segtab *t = &l->ctx->segs;
	size_t len = (size_t)ms_segtab_pool_bytes(t);
	struct ibv_device_attr da;
	struct rl_dev *d;
	int access;

	for (d = l->devs; d; d = d->next)
		if (d->verbs == verbs)
			return d;
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->verbs = verbs;
	d->max_rd_atom = RL_RD_ATOMIC;
	if (ibv_query_device(verbs, &da) == 0 && da.max_qp_rd_atom < d->max_rd_atom)
		d->max_rd_atom = da.max_qp_rd_atom;
	d->pd = ibv_alloc_pd(verbs);
	if (!d->pd) {
		log_err("%s: %s: cannot allocate a protection domain: %s", l->name, dname,
			strerror(errno));
		goto fail;
	}
	d->windows = probe_windows(d->pd);
	/* With windows the region itself grants no remote access: only a
	 * window bound to one queue pair over one segment does. */
	access = IBV_ACCESS_LOCAL_WRITE |
		 (d->windows ? IBV_ACCESS_MW_BIND
			     : IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);
	d->mr = ibv_reg_mr(d->pd, t->base, len, access);
	if (!d->mr) {
		log_err("%s: %s: cannot register the %zu-byte pool: %s (is the memlock "
			"limit high enough?)", l->name, dname, len, strerror(errno));
		goto fail;
	}
	d->cch = ibv_create_comp_channel(verbs);
	if (!d->cch || set_nonblock(d->cch->fd) || watch(l, d->cch->fd, (uintptr_t)d)) {
		log_err("%s: %s: cannot set up a completion channel: %s", l->name, dname,
			strerror(errno));
		goto fail;
	}
	if (d->windows)
		log_info("%s: %s: pool registered; each client gets a memory window per "
			 "segment, bound to its own queue pair", l->name, dname);
	else
		log_warn("%s: %s has no type-2 memory windows: every client's key covers "
			 "the whole pool (only the shared secret keeps peers apart)",
			 l->name, dname);
	d->next = l->devs;
	l->devs = d;
	return d;
fail:
	dev_free(d);
	return NULL;
}

/* ---- grants ---- */

static struct rl_grant **grant_slot(struct rl_conn *c, uint64_t seg_id)
{
	struct rl_grant **pp = &c->grants[(seg_id ^ (seg_id >> 32)) % RL_GRANT_BUCKETS];

	while (*pp && (*pp)->seg_id != seg_id)
		pp = &(*pp)->next;
	return pp;
}

static void grant_drop(struct rl_conn *c, struct rl_grant **pp)
{
	struct rl_grant *g = *pp;

	*pp = g->next;
	/* Deallocating a bound window invalidates it. */
	if (g->mw)
		ibv_dealloc_mw(g->mw);
	c->l->stats.revokes += g->mw != NULL;
	free(g);
}

static void grants_drop_all(struct rl_conn *c)
{
	for (int b = 0; b < RL_GRANT_BUCKETS; b++)
		while (c->grants[b])
			grant_drop(c, &c->grants[b]);
}

/* The pool address and size of the session's own segment seg_id, or
 * -ENOENT when it is not (or no longer) the session's. */
static int own_segment(struct rl_conn *c, uint64_t seg_id, uint8_t **addr, uint32_t *size)
{
	struct ms_segtab *t = &c->l->ctx->segs;
	int rc;

	if (c->sess.state != MS_READY || !c->sess.dev)
		return -ENOENT;
	rc = ms_segtab_range(t, c->sess.dev->id, seg_id, 0, FM_PAGE, addr);
	if (rc)
		return -ENOENT;
	/* A segment id is generation << 32 | slot (memserver.h). */
	*size = t->slots[(uint32_t)seg_id].size;
	return 0;
}

/* Bind a window over the segment to this connection's queue pair (or
 * hand out the whole-pool key) and remember it. */
static int grant(struct rl_conn *c, uint64_t seg_id, struct fm_alloc_rep *rep)
{
	struct rl_grant **pp = grant_slot(c, seg_id), *g = *pp;
	uint8_t *addr;
	uint32_t size;
	int rc;

	rc = own_segment(c, seg_id, &addr, &size);
	if (rc)
		return rc;
	if (g && (g->addr != addr || g->size != size)) {
		grant_drop(c, pp);         /* stale: the slot was reused */
		g = NULL;
	}
	if (!g) {
		g = calloc(1, sizeof(*g));
		if (!g)
			return -ENOMEM;
		g->seg_id = seg_id;
		g->addr = addr;
		g->size = size;
		g->rkey = c->dev->mr->rkey;
		if (c->dev->windows) {
			struct ibv_send_wr wr = { .wr_id = WR_ID(WR_BIND, 0),
						  .opcode = IBV_WR_BIND_MW,
						  .send_flags = IBV_SEND_SIGNALED }, *bad;

			g->mw = ibv_alloc_mw(c->dev->pd, IBV_MW_TYPE_2);
			if (!g->mw) {
				log_err("%s: cannot allocate a memory window: %s",
					c->sess.peer, strerror(errno));
				free(g);
				return -ENOMEM;
			}
			g->rkey = ibv_inc_rkey(g->mw->rkey);
			wr.bind_mw.mw = g->mw;
			wr.bind_mw.rkey = g->rkey;
			wr.bind_mw.bind_info.mr = c->dev->mr;
			wr.bind_mw.bind_info.addr = (uintptr_t)addr;
			wr.bind_mw.bind_info.length = size;
			wr.bind_mw.bind_info.mw_access_flags =
				IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
			/* Posted before the reply on the same send queue, so the
			 * window is bound before the client can learn its key. */
			rc = ibv_post_send(c->id->qp, &wr, &bad);
			if (rc) {
				log_err("%s: binding a memory window failed: %s",
					c->sess.peer, strerror(rc));
				ibv_dealloc_mw(g->mw);
				free(g);
				return -EIO;
			}
		}
		g->next = NULL;
		*pp = g;
		c->l->stats.grants++;
	}
	rep->seg_id = seg_id;
	rep->size = size;
	rep->rkey = g->rkey;
	rep->remote_addr = (uint64_t)(uintptr_t)addr;
	return 0;
}

void ms_rdma_on_free(void *arg, uint64_t seg_id)
{
	struct ms_rdma *l = arg;

	for (struct rl_conn *c = l->conns; c; c = c->next) {
		struct rl_grant **pp = grant_slot(c, seg_id);

		if (*pp)
			grant_drop(c, pp);
	}
}

/* ---- one connection ---- */

static uint8_t *recv_buf(struct rl_conn *c, uint32_t i)
{
	return c->mem + (size_t)i * RL_RECV_BUF;
}

static uint8_t *send_buf(struct rl_conn *c, uint32_t i)
{
	return c->mem + (size_t)RL_RECV_DEPTH * RL_RECV_BUF + (size_t)i * RL_SEND_BUF;
}

static int post_recv(struct rl_conn *c, uint32_t i)
{
	struct ibv_sge sge = { .addr = (uintptr_t)recv_buf(c, i), .length = RL_RECV_BUF,
			       .lkey = c->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = WR_ID(WR_RECV, i), .sg_list = &sge,
				  .num_sge = 1 }, *bad;

	return -ibv_post_recv(c->id->qp, &wr, &bad);
}

static void conn_destroy(struct ms_rdma *l, struct rl_conn *c)
{
	ms_session_end(l->ctx, &c->sess);
	grants_drop_all(c);
	if (c->id && c->id->qp) {
		rdma_disconnect(c->id);
		rdma_destroy_qp(c->id);
	}
	if (c->cq) {
		if (c->cq_unacked)
			ibv_ack_cq_events(c->cq, c->cq_unacked);
		ibv_destroy_cq(c->cq);
	}
	if (c->mr)
		ibv_dereg_mr(c->mr);
	if (c->mem)
		munmap(c->mem, c->mem_len);
	ms_buf_free(&c->out);
	if (c->id)
		rdma_destroy_id(c->id);
	if (c->linked) {
		if (c->prev)
			c->prev->next = c->next;
		else
			l->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		l->nconns--;
	}
	log_debug("%s: disconnected", c->sess.peer);
	free(c);
}

/* A queued reply's tag: every reply carries one but HELLO's and AUTH's,
 * the only ones sent before the channel is up (anything else before
 * AUTH closes the connection unanswered). */
static size_t reply_trailer(const uint8_t *f)
{
	uint8_t base = f[5] & (uint8_t)~FM_OP_REPLY;

	return base == FM_OP_HELLO || base == FM_OP_AUTH ? 0 : FM_CHAN_TAG_LEN;
}

/* Send queued replies while send buffers are free. */
static int flush_out(struct rl_conn *c)
{
	while (c->out.len >= FM_HDR_SIZE && c->send_free) {
		const uint8_t *f = c->out.data + c->out.head;
		size_t n = FM_HDR_SIZE + (size_t)get_le32(f + 16) + reply_trailer(f);
		uint32_t i = (uint32_t)__builtin_ctz(c->send_free);
		struct ibv_sge sge = { .addr = (uintptr_t)send_buf(c, i),
				       .length = (uint32_t)n, .lkey = c->mr->lkey };
		struct ibv_send_wr wr = { .wr_id = WR_ID(WR_SEND, i), .sg_list = &sge,
					  .num_sge = 1, .opcode = IBV_WR_SEND,
					  .send_flags = IBV_SEND_SIGNALED }, *bad;
		int rc;

		if (n > RL_SEND_BUF || n > c->out.len) {
			log_err("%s: closing: a %zu-byte reply does not fit a message",
				c->sess.peer, n);
			return -EMSGSIZE;
		}
		memcpy(send_buf(c, i), f, n);
		rc = ibv_post_send(c->id->qp, &wr, &bad);
		if (rc) {
			log_warn("%s: closing: posting a reply failed: %s", c->sess.peer,
				 strerror(rc));
			return -EIO;
		}
		c->send_free &= ~(1u << i);
		c->sends_out++;
		ms_buf_consume(&c->out, n);
	}
	if (c->close_after_flush && c->out.len == 0 && c->sends_out == 0)
		return -ECONNRESET;   /* the last reply is out: close now */
	return 0;
}

static int reply_status(struct rl_conn *c, const struct fm_hdr *req, int32_t status,
			const uint8_t *payload, uint32_t plen)
{
	struct fm_hdr h = { .op = (uint8_t)(req->op | FM_OP_REPLY), .tag = req->tag,
			    .status = status, .len = plen };
	uint8_t *p = ms_buf_reserve(&c->out, FM_HDR_SIZE + plen);

	if (!p)
		return -ENOMEM;
	fm_hdr_encode(p, &h);
	if (plen)
		memcpy(p + FM_HDR_SIZE, payload, plen);
	ms_buf_commit(&c->out, FM_HDR_SIZE + plen);
	return 0;
}

static int on_grant(struct rl_conn *c, const struct fm_hdr *h, const uint8_t *pl)
{
	uint8_t rep_buf[FM_GRANT_REP_LEN];
	struct fm_alloc_rep rep;
	uint64_t seg_id;
	int rc;

	if ((h->op & FM_OP_REPLY) || c->sess.state != MS_READY) {
		log_warn("%s: closing: GRANT %s", c->sess.peer,
			 c->sess.state != MS_READY ? "before authentication" : "as a reply");
		return -EPROTO;
	}
	if (fm_free_req_decode(pl, h->len, &seg_id) < 0) {
		log_warn("%s: closing: malformed GRANT (%u bytes)", c->sess.peer, h->len);
		return -EPROTO;
	}
	rc = grant(c, seg_id, &rep);
	if (rc == -ENOENT || rc == -ENOMEM)
		return reply_status(c, h, rc, NULL, 0);
	if (rc)
		return rc;
	fm_alloc_rep_encode(rep_buf, &rep);
	return reply_status(c, h, 0, rep_buf, FM_GRANT_REP_LEN);
}

/* The session has just appended an ALLOC reply at offset `at` of out:
 * fill in where the segment lives and the key to it. */
static int alloc_patch(struct rl_conn *c, size_t at)
{
	uint8_t *f = c->out.data + c->out.head + at;
	struct fm_alloc_rep rep;
	struct fm_hdr h;
	int rc;

	if (c->out.len - at < FM_HDR_SIZE + FM_ALLOC_REP_LEN ||
	    fm_hdr_decode(f, FM_HDR_SIZE, &h) || h.status != 0 || h.len != FM_ALLOC_REP_LEN)
		return 0;   /* an error reply: nothing to grant */
	if (fm_alloc_rep_decode(f + FM_HDR_SIZE, FM_ALLOC_REP_LEN, &rep) < 0)
		return 0;
	rc = grant(c, rep.seg_id, &rep);
	if (rc) {
		/* The segment stays the device's (a later GRANT may work). */
		log_err("%s: closing: cannot grant new seg %llu: %s", c->sess.peer,
			(unsigned long long)rep.seg_id, strerror(-rc));
		return rc;
	}
	fm_alloc_rep_encode(f + FM_HDR_SIZE, &rep);
	return 0;
}

/* A request the channel let through: its reply goes to out. */
static int on_request(struct rl_conn *c, const struct fm_hdr *h, const uint8_t *pl,
		      size_t at)
{
	uint8_t base = h->op & (uint8_t)~FM_OP_REPLY;
	int rc;

	if (base == FM_OP_RDMA_GRANT)
		return on_grant(c, h, pl);
	if ((base == FM_OP_READ || base == FM_OP_WRITE) && c->sess.state == MS_READY &&
	    !(h->op & FM_OP_REPLY))
		return reply_status(c, h, -EOPNOTSUPP, NULL, 0); /* one-sided only */
	rc = ms_session_frame(c->l->ctx, &c->sess, h, pl, &c->out);
	if (rc < 0)
		return rc;
	if (rc == MS_CLOSE_AFTER_FLUSH)
		c->close_after_flush = 1;
	if (h->op == FM_OP_ALLOC)
		return alloc_patch(c, at);
	return 0;
}

/* One request message; after AUTH its last FM_CHAN_TAG_LEN bytes are
 * its tag (session_chan.c).  Nonzero: close the connection. */
static int on_msg(struct rl_conn *c, const uint8_t *msg, uint32_t len)
{
	enum ms_sess_state before = c->sess.state;
	size_t trailer = ms_session_trailer(&c->sess), at = c->out.len;
	struct fm_hdr h;
	int rc;

	c->l->stats.ctrl_msgs++;
	if (len < trailer || fm_rdma_msg_decode(msg, len - trailer, &h)) {
		log_warn("%s: closing: malformed message (%u bytes)", c->sess.peer, len);
		return -EPROTO;
	}
	rc = ms_session_chan_check(&c->sess, &h, msg);
	if (rc == 0)
		rc = on_request(c, &h, msg + FM_HDR_SIZE, at);
	if (rc == 0)
		rc = ms_session_chan_seal(&c->sess, &c->out, at);
	if (rc == 0)
		ms_session_chan_after(c->l->ctx, &c->sess, before);
	return rc;
}

static int on_wc(struct rl_conn *c, const struct ibv_wc *wc)
{
	unsigned kind = WR_KIND(wc->wr_id);
	uint32_t i = WR_IDX(wc->wr_id);
	int rc;

	if (wc->status != IBV_WC_SUCCESS) {
		if (wc->status != IBV_WC_WR_FLUSH_ERR)
			log_warn("%s: closing: work request failed: %s", c->sess.peer,
				 ibv_wc_status_str(wc->status));
		return -EIO;
	}
	switch (kind) {
	case WR_RECV:
		if (i >= RL_RECV_DEPTH)
			return -EPROTO;
		rc = on_msg(c, recv_buf(c, i), wc->byte_len);
		return rc ? rc : post_recv(c, i);
	case WR_SEND:
		if (i < RL_SEND_DEPTH && !(c->send_free & (1u << i))) {
			c->send_free |= 1u << i;
			c->sends_out--;
		}
		return 0;
	default:
		return 0;   /* a window bound */
	}
}

static void conn_poll(struct ms_rdma *l, struct rl_conn *c)
{
	struct ibv_wc wc[16];
	int n, rc = 0;

	if (ibv_req_notify_cq(c->cq, 0))
		rc = -EIO;
	while (rc == 0 && (n = ibv_poll_cq(c->cq, 16, wc)) != 0) {
		if (n < 0) {
			rc = -EIO;
			break;
		}
		for (int i = 0; i < n && rc == 0; i++)
			rc = on_wc(c, &wc[i]);
	}
	if (rc == 0)
		rc = flush_out(c);
	if (rc)
		conn_destroy(l, c);
}

static void peer_name(struct rdma_cm_id *id, char *out, size_t len)
{
	struct sockaddr *sa = rdma_get_peer_addr(id);
	char host[64], port[8];

	if (!sa || getnameinfo(sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
							       : sizeof(struct sockaddr_in),
			       host, sizeof(host), port, sizeof(port),
			       NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(out, len, "rdma peer");
	else if (sa->sa_family == AF_INET6)
		snprintf(out, len, "rdma [%s]:%s", host, port);
	else
		snprintf(out, len, "rdma %s:%s", host, port);
}

/* Queue pair, CQ, buffers; the caller accepts or rejects. */
static int conn_setup(struct ms_rdma *l, struct rl_conn *c)
{
	struct ibv_qp_init_attr qa = {
		.cap = { .max_send_wr = RL_SQ_DEPTH, .max_recv_wr = RL_RECV_DEPTH,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 1,
	};
	char peer[sizeof(c->sess.peer)];

	peer_name(c->id, peer, sizeof(peer));
	ms_session_init(&c->sess, peer);
	c->auth_deadline = l->ctx->now_ms() + RL_AUTH_MS;
	c->send_free = RL_SEND_DEPTH == 32 ? ~0u : (1u << RL_SEND_DEPTH) - 1;
	c->mem_len = (size_t)RL_RECV_DEPTH * RL_RECV_BUF + (size_t)RL_SEND_DEPTH * RL_SEND_BUF;
	c->mem = mmap(NULL, c->mem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	if (c->mem == MAP_FAILED) {
		c->mem = NULL;
		return -ENOMEM;
	}
	c->mr = ibv_reg_mr(c->dev->pd, c->mem, c->mem_len, IBV_ACCESS_LOCAL_WRITE);
	c->cq = ibv_create_cq(c->id->verbs, RL_SQ_DEPTH + RL_RECV_DEPTH, c, c->dev->cch, 0);
	if (!c->mr || !c->cq)
		return -errno ? -errno : -ENOMEM;
	qa.send_cq = qa.recv_cq = c->cq;
	if (rdma_create_qp(c->id, c->dev->pd, &qa))
		return -errno;
	for (uint32_t i = 0; i < RL_RECV_DEPTH; i++)
		if (post_recv(c, i))
			return -EIO;
	if (ibv_req_notify_cq(c->cq, 0))
		return -EIO;
	return 0;
}

static void on_connect_request(struct ms_rdma *l, struct rdma_cm_id *id,
			       const struct rdma_conn_param *req)
{
	struct rdma_conn_param cp = { .rnr_retry_count = 7 };
	struct rl_conn *c = NULL;
	struct rl_dev *d;
	int rc = -ENOMEM;

	if (l->nconns >= RL_MAX_CONNS) {
		log_warn("%s: refusing a connection: %u already open", l->name, l->nconns);
		goto reject;
	}
	d = dev_get(l, id->verbs);
	c = calloc(1, sizeof(*c));
	if (!d || !c)
		goto reject;
	c->l = l;
	c->id = id;
	c->dev = d;
	id->context = c;
	rc = conn_setup(l, c);
	if (rc) {
		log_err("%s: cannot set up a connection from %s: %s", l->name,
			c->sess.peer, strerror(-rc));
		goto reject;
	}
	/* The event's fields are already from our side's point of view:
	 * responder_resources is the RDMA READ depth the client asked for. */
	cp.responder_resources = req->responder_resources < d->max_rd_atom
				 ? req->responder_resources : (uint8_t)d->max_rd_atom;
	if (rdma_accept(id, &cp)) {
		log_warn("%s: accepting %s failed: %s", l->name, c->sess.peer, strerror(errno));
		conn_destroy(l, c);   /* also destroys id */
		return;
	}
	c->next = l->conns;
	if (l->conns)
		l->conns->prev = c;
	l->conns = c;
	c->linked = 1;
	l->nconns++;
	l->stats.conns++;
	log_debug("%s: connected", c->sess.peer);
	return;
reject:
	rdma_reject(id, NULL, 0);
	if (c) {
		conn_destroy(l, c);
	} else {
		rdma_destroy_id(id);
	}
}

static void on_cm_events(struct ms_rdma *l)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(l->ech, &ev) == 0) {
		enum rdma_cm_event_type type = ev->event;
		struct rdma_cm_id *id = ev->id;
		struct rdma_conn_param param = ev->param.conn;
		struct rl_conn *c = id == l->listen_id ? NULL : id->context;

		/* Ack before acting: destroying an id waits for its acks. */
		rdma_ack_cm_event(ev);
		switch (type) {
		case RDMA_CM_EVENT_CONNECT_REQUEST:
			on_connect_request(l, id, &param);
			break;
		case RDMA_CM_EVENT_ESTABLISHED:
			break;
		case RDMA_CM_EVENT_DISCONNECTED:
		case RDMA_CM_EVENT_REJECTED:
		case RDMA_CM_EVENT_CONNECT_ERROR:
		case RDMA_CM_EVENT_UNREACHABLE:
			if (c)
				conn_destroy(l, c);
			break;
		case RDMA_CM_EVENT_DEVICE_REMOVAL:
			log_err("%s: the RDMA device went away", l->name);
			if (c)
				conn_destroy(l, c);
			break;
		default:
			log_debug("%s: rdma_cm event %s", l->name, rdma_event_str(type));
			break;
		}
	}
}

static void on_cq_events(struct ms_rdma *l, struct rl_dev *d)
{
	struct ibv_cq *cq;
	void *cq_ctx;

	(void)l;
	while (ibv_get_cq_event(d->cch, &cq, &cq_ctx) == 0) {
		struct rl_conn *c = cq_ctx;

		if (++c->cq_unacked >= 64) {
			ibv_ack_cq_events(c->cq, c->cq_unacked);
			c->cq_unacked = 0;
		}
		conn_poll(c->l, c);
	}
}

/* Once a second: authentication deadlines, and grants of segments that
 * were freed behind our back (over tcp, or by a lease ending). */
static void sweep(struct ms_rdma *l)
{
	uint64_t now = l->ctx->now_ms();
	struct rl_conn *c = l->conns;
	uint64_t ticks;

	if (read(l->timerfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		log_debug("%s: timer read: %s", l->name, strerror(errno));
	while (c) {
		struct rl_conn *next = c->next;

		if (c->sess.state != MS_READY && now >= c->auth_deadline) {
			log_warn("%s: closing: not authenticated within %d ms", c->sess.peer,
				 RL_AUTH_MS);
			conn_destroy(l, c);
			c = next;
			continue;
		}
		for (int b = 0; b < RL_GRANT_BUCKETS; b++) {
			struct rl_grant **pp = &c->grants[b];

			while (*pp) {
				uint8_t *addr;
				uint32_t size;

				if (own_segment(c, (*pp)->seg_id, &addr, &size) ||
				    addr != (*pp)->addr || size != (*pp)->size)
					grant_drop(c, pp);
				else
					pp = &(*pp)->next;
			}
		}
		c = next;
	}
}

void ms_rdma_process(struct ms_rdma *l)
{
	struct epoll_event evs[16];
	int n = epoll_wait(l->epfd, evs, 16, 0);

	for (int i = 0; i < n; i++) {
		if (evs[i].data.u64 == EP_CM)
			on_cm_events(l);
		else if (evs[i].data.u64 == EP_TIMER)
			sweep(l);
		else
			on_cq_events(l, (struct rl_dev *)(uintptr_t)evs[i].data.u64);
	}
}

uint16_t ms_rdma_port(const struct ms_rdma *l)
{
	return ntohs(rdma_get_src_port(l->listen_id));
}

int ms_rdma_fd(const struct ms_rdma *l)
{
	return l->epfd;
}

void ms_rdma_get_stats(const struct ms_rdma *l, struct ms_rdma_stats *st)
{
	*st = l->stats;
	st->windows = l->devs ? l->devs->windows : 0;
}

void ms_rdma_close(struct ms_rdma *l)
{
	if (!l)
		return;
	for (struct ms_free_hook **pp = &l->ctx->free_hooks; *pp; pp = &(*pp)->next) {
		if (*pp == &l->free_hook) {
			*pp = l->free_hook.next;
			break;
		}
	}
	while (l->conns)
		conn_destroy(l, l->conns);
	if (l->listen_id)
		rdma_destroy_id(l->listen_id);
	while (l->devs) {
		struct rl_dev *d = l->devs;

		l->devs = d->next;
		dev_free(d);
	}
	if (l->ech)
		rdma_destroy_event_channel(l->ech);
	if (l->timerfd >= 0)
		close(l->timerfd);
	if (l->epfd >= 0)
		close(l->epfd);
	free(l);
}

/* Bind and listen; a clear message for the usual ways this fails. */
static int bind_listen(struct ms_rdma *l, const struct fm_addr *a)
{
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *res;
	char port[8];
	int rc;

	snprintf(port, sizeof(port), "%u", a->port);
	rc = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &res);
	if (rc) {
		log_err("listen %s: %s", l->name, gai_strerror(rc));
		return -EADDRNOTAVAIL;
	}
	rc = rdma_bind_addr(l->listen_id, res->ai_addr) ? -errno : 0;
	freeaddrinfo(res);
	if (rc == -EADDRINUSE) {
		log_err("listen %s: address already in use", l->name);
		return rc;
	}
	if (rc) {
		log_err("listen %s: %s is not an address of an RDMA device: %s (%s)", l->name,
			a->host, strerror(-rc), FM_RDMA_CHECK_HINT);
		return -ENODEV;
	}
	if (rdma_listen(l->listen_id, 128)) {
		rc = -errno;
		log_err("listen %s: %s", l->name, strerror(-rc));
		return rc;
	}
	return 0;
}

int ms_rdma_listen(struct ms_ctx *ctx, const struct fm_addr *addr, struct ms_rdma **out)
{
	struct itimerspec its = { .it_interval = { .tv_sec = RL_SWEEP_MS / 1000 },
				  .it_value = { .tv_sec = RL_SWEEP_MS / 1000 } };
	struct ms_rdma *l;
	int rc;

	*out = NULL;
	if (addr->kind != ADDR_RDMA)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ctx = ctx;
	l->epfd = l->timerfd = -1;
	l->free_hook = (struct ms_free_hook){ .fn = ms_rdma_on_free, .arg = l,
					      .next = ctx->free_hooks };
	ctx->free_hooks = &l->free_hook;
	addr_str(addr, l->name, sizeof(l->name));
	rc = fm_rdma_device_check(l->name);
	if (rc)
		goto fail;
	l->ech = rdma_create_event_channel();
	if (!l->ech) {
		log_err("listen %s: no RDMA device (cannot open the rdma_cm channel: %s; %s)",
			l->name, strerror(errno), FM_RDMA_CHECK_HINT);
		rc = -ENODEV;
		goto fail;
	}
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (l->epfd < 0 || l->timerfd < 0 || set_nonblock(l->ech->fd) ||
	    watch(l, l->ech->fd, EP_CM) || watch(l, l->timerfd, EP_TIMER) ||
	    timerfd_settime(l->timerfd, 0, &its, NULL) ||
	    rdma_create_id(l->ech, &l->listen_id, l, RDMA_PS_TCP)) {
		rc = errno ? -errno : -EIO;
		log_err("listen %s: %s", l->name, strerror(-rc));
		goto fail;
	}
	rc = bind_listen(l, addr);
	if (rc)
		goto fail;
	/* Bound to one device's address: register the pool now, so a
	 * registration failure stops the start-up instead of each client. */
	if (l->listen_id->verbs && !dev_get(l, l->listen_id->verbs)) {
		rc = -ENOMEM;
		goto fail;
	}
	log_info("listening on %s", l->name);
	*out = l;
	return 0;
fail:
	ms_rdma_close(l);
	return rc;
}
