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
 *
 * What a stranger can hold.  Until a connection authenticates it has the
 * queue pair and CQ (needed to carry the handshake), its receive buffers
 * and two small send buffers: about 18 KiB registered, not the 1.5 MiB of
 * LIST-sized send buffers, which are registered only once it has
 * authenticated.  So is the pool itself when the listener was not bound
 * to one device.  Connections still in the handshake count against the
 * same caps as tcp's (per source and in all, ms_ctx.admit; over them a
 * connect request is rejected) and must finish within handshake_ms.
 * The idle timeout does not apply here: the data path is one-sided, so a
 * busy client's control channel is quiet.  What an authenticated peer
 * can make us queue is bounded as on tcp: with RL_OUT_HIGH reply bytes
 * waiting for send buffers, receive buffers are not reposted, so a peer
 * that ignores its credit and never takes its replies stalls on RNR.
 *
 * A device without type-2 memory windows would make every client's key
 * cover the whole pool: such a device is refused (at listen when the
 * address names it, else at its first connection) unless
 * allow_shared_rkey is set.
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
#define RL_HS_SEND_DEPTH  2         /* before authentication: HELLO and AUTH replies */
#define RL_HS_SEND_BUF    RL_RECV_BUF
#define RL_SQ_DEPTH       (RL_SEND_DEPTH + RL_HS_SEND_DEPTH + FM_RDMA_CTRL_DEPTH + 8)  /* sends + binds */
#define RL_GRANT_BUCKETS  256
/* Replies queued beyond the send buffers: above this, receive buffers are
 * not reposted, so a peer that sends past its credit without taking its
 * replies stalls on RNR instead of growing our queue. */
#define RL_OUT_HIGH       (256u << 10)
#define RL_SWEEP_MS       1000
#define RL_MAX_CONNS      1024
#define RL_RD_ATOMIC      16

_Static_assert(RL_SEND_DEPTH <= 32, "send buffers are tracked in a 32-bit mask");
_Static_assert(RL_RECV_DEPTH <= 32, "held receive buffers are tracked in a 32-bit mask");
_Static_assert(RL_RECV_BUF >= FM_HDR_SIZE + FM_PING_MAX + FM_CHAN_TAG_LEN,
	       "a tagged PING request fits");

enum { WR_RECV = 1, WR_SEND, WR_BIND, WR_HS_SEND };
#define WR_ID(kind, idx)  ((uint64_t)(kind) << 32 | (uint32_t)(idx))
#define WR_KIND(id)       ((unsigned)((id) >> 32))
#define WR_IDX(id)        ((uint32_t)(id))

/* epoll data of the two fixed fds; devices use their own address. */
#define EP_CM     1u
#define EP_TIMER  2u

struct rl_dev {
	struct ibv_context *verbs;
	struct ibv_pd *pd;
	struct ibv_mr *mr;               /* the whole pool; NULL until needed */
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
	uint8_t *mem;                    /* receive buffers, then handshake send buffers */
	size_t mem_len;
	struct ibv_mr *send_mr;          /* after authentication: */
	uint8_t *send_mem;               /* RL_SEND_DEPTH LIST-sized send buffers */
	size_t send_len;
	uint32_t send_free;              /* bit i: send buffer i is free */
	uint32_t hs_send_free;           /* the same for handshake send buffers */
	uint32_t recv_held;              /* bit i: receive buffer i waits for the queue to drain */
	unsigned sends_out;
	int admitted;                    /* holds a handshake slot (ms_ctx.admit) */
	struct sockaddr_storage sa;
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

static int allow_shared_rkey(const struct ms_rdma *l)
{
	return l->ctx->limits && l->ctx->limits->allow_shared_rkey;
}

/* No windows: only with allow-shared-rkey, and then with a warning. */
static int windows_check(struct ms_rdma *l, const char *dname, int windows)
{
	if (windows)
		return 0;
	if (!allow_shared_rkey(l)) {
		log_err_rl("%s: %s has no type-2 memory windows: every client's key would "
			   "cover the whole pool; refusing to serve it (allow-shared-rkey, "
			   "--allow-shared-rkey, accepts that)", l->name, dname);
		return -EOPNOTSUPP;
	}
	log_warn_rl("%s: %s has no type-2 memory windows: every client's key covers "
		    "the whole pool (allow-shared-rkey is set; only the secret keeps "
		    "peers apart)", l->name, dname);
	return 0;
}

/* The pool, registered on d when first needed: at listen when the address
 * names d, else when a connection on d authenticates. */
static int dev_register_pool(struct ms_rdma *l, struct rl_dev *d)
{
	const char *dname = ibv_get_device_name(d->verbs->device);
	struct ms_segtab *t = &l->ctx->segs;
	/* The whole table, retired slots too: a shrunk pool grows back,
	 * and its slots were never moved, so the current size is no bound. */
	size_t len = (size_t)t->nslots * t->seg_max;
	/* With windows the region itself grants no remote access: only a
	 * window bound to one queue pair over one segment does. */
	int access = IBV_ACCESS_LOCAL_WRITE |
		     (d->windows ? IBV_ACCESS_MW_BIND
				 : IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE);

	if (d->mr)
		return 0;
	d->mr = ibv_reg_mr(d->pd, t->base, len, access);
	/* Registered pages stay pinned for the device: giving a slot back
	 * would free nothing, and the card would keep reading pages the
	 * CPU no longer sees.  Slots still retire; their memory stays. */
	if (d->mr)
		t->mem.pinned_by_device = 1;
	if (!d->mr) {
		log_err_rl("%s: %s: cannot register the %zu-byte pool: %s (is the memlock "
			   "limit high enough?)", l->name, dname, len, strerror(errno));
		return -ENOMEM;
	}
	if (d->windows)
		log_info("%s: %s: pool registered; each client gets a memory window per "
			 "segment, bound to its own queue pair", l->name, dname);
	return 0;
}

/* The device's state, set up on first use: -EOPNOTSUPP for a device
 * without memory windows (unless allowed), -ENOMEM/-EIO otherwise. */
static int dev_get(struct ms_rdma *l, struct ibv_context *verbs, struct rl_dev **out)
{
	const char *dname = ibv_get_device_name(verbs->device);
	struct ibv_device_attr da;
	struct rl_dev *d;
	int rc = -EIO;

	for (d = l->devs; d; d = d->next) {
		if (d->verbs == verbs) {
			*out = d;
			return 0;
		}
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
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
	rc = windows_check(l, dname, d->windows);
	if (rc)
		goto fail;
	rc = -EIO;
	d->cch = ibv_create_comp_channel(verbs);
	if (!d->cch || set_nonblock(d->cch->fd) || watch(l, d->cch->fd, (uintptr_t)d)) {
		log_err("%s: %s: cannot set up a completion channel: %s", l->name, dname,
			strerror(errno));
		goto fail;
	}
	d->next = l->devs;
	l->devs = d;
	*out = d;
	return 0;
fail:
	dev_free(d);
	return rc;
}

/* A listener on every address: the windows rule, checked at start for
 * every device, so a bad one stops the start-up, not its clients. */
static int windows_check_all(struct ms_rdma *l)
{
	struct ibv_context **ctxs;
	int n = 0, rc = 0;

	ctxs = rdma_get_devices(&n);
	if (!ctxs)
		return 0;   /* none: fm_rdma_device_check() said so already */
	for (int i = 0; i < n && rc == 0; i++) {
		struct ibv_pd *pd = ibv_alloc_pd(ctxs[i]);

		if (!pd)
			continue;   /* unusable anyway; its connections will say */
		rc = windows_check(l, ibv_get_device_name(ctxs[i]->device),
				   probe_windows(pd));
		ibv_dealloc_pd(pd);
	}
	rdma_free_devices(ctxs);
	return rc;
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

static uint8_t *hs_send_buf(struct rl_conn *c, uint32_t i)
{
	return c->mem + (size_t)RL_RECV_DEPTH * RL_RECV_BUF + (size_t)i * RL_HS_SEND_BUF;
}

static uint8_t *send_buf(struct rl_conn *c, uint32_t i)
{
	return c->send_mem + (size_t)i * RL_SEND_BUF;
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
	if (c->admitted && l->ctx->admit)
		fm_admit_put(l->ctx->admit, (struct sockaddr *)&c->sa);
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
	if (c->send_mr)
		ibv_dereg_mr(c->send_mr);
	if (c->send_mem)
		munmap(c->send_mem, c->send_len);
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

/* A free send buffer: LIST-sized once authenticated, else a handshake one.
 * Fills its address, size, key and work request id; -EAGAIN when none. */
static int send_slot(struct rl_conn *c, uint8_t **buf, size_t *cap, uint32_t *lkey,
		     uint64_t *wr_id)
{
	uint32_t *mask = c->send_mem ? &c->send_free : &c->hs_send_free;
	uint32_t i;

	if (!*mask)
		return -EAGAIN;
	i = (uint32_t)__builtin_ctz(*mask);
	*mask &= ~(1u << i);
	if (c->send_mem) {
		*buf = send_buf(c, i);
		*cap = RL_SEND_BUF;
		*lkey = c->send_mr->lkey;
		*wr_id = WR_ID(WR_SEND, i);
	} else {
		*buf = hs_send_buf(c, i);
		*cap = RL_HS_SEND_BUF;
		*lkey = c->mr->lkey;
		*wr_id = WR_ID(WR_HS_SEND, i);
	}
	return 0;
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
	while (c->out.len >= FM_HDR_SIZE) {
		const uint8_t *f = c->out.data + c->out.head;
		size_t n = FM_HDR_SIZE + (size_t)get_le32(f + 16) + reply_trailer(f), cap;
		struct ibv_sge sge = { .length = (uint32_t)n };
		struct ibv_send_wr wr = { .sg_list = &sge, .num_sge = 1,
					  .opcode = IBV_WR_SEND,
					  .send_flags = IBV_SEND_SIGNALED }, *bad;
		uint8_t *buf;
		int rc;

		if (send_slot(c, &buf, &cap, &sge.lkey, &wr.wr_id))
			break;
		if (n > cap || n > c->out.len) {
			log_err("%s: closing: a %zu-byte reply does not fit a message",
				c->sess.peer, n);
			return -EMSGSIZE;
		}
		sge.addr = (uintptr_t)buf;
		memcpy(buf, f, n);
		rc = ibv_post_send(c->id->qp, &wr, &bad);
		if (rc) {
			log_warn("%s: closing: posting a reply failed: %s", c->sess.peer,
				 strerror(rc));
			return -EIO;
		}
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

/* Authenticated: give back the handshake slot, then register what only a
 * client may hold — LIST-sized send buffers and (once per device) the
 * pool.  Before the AUTH reply goes out, so the client never sees a
 * connection that cannot serve it. */
static int conn_authenticated(struct rl_conn *c)
{
	struct ms_rdma *l = c->l;

	if (c->admitted && l->ctx->admit) {
		fm_admit_put(l->ctx->admit, (struct sockaddr *)&c->sa);
		c->admitted = 0;
	}
	if (dev_register_pool(l, c->dev) < 0)
		return -ENOMEM;
	c->send_len = (size_t)RL_SEND_DEPTH * RL_SEND_BUF;
	c->send_mem = mmap(NULL, c->send_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c->send_mem == MAP_FAILED) {
		c->send_mem = NULL;
		log_err_rl("%s: closing: no memory for send buffers", c->sess.peer);
		return -ENOMEM;
	}
	c->send_mr = ibv_reg_mr(c->dev->pd, c->send_mem, c->send_len,
				IBV_ACCESS_LOCAL_WRITE);
	if (!c->send_mr) {
		log_err_rl("%s: closing: cannot register send buffers: %s", c->sess.peer,
			   strerror(errno));
		munmap(c->send_mem, c->send_len);
		c->send_mem = NULL;
		return -ENOMEM;
	}
	l->stats.send_areas++;
	return 0;
}

/* A request the channel let through: its reply goes to out. */
static int on_request(struct rl_conn *c, const struct fm_hdr *h, const uint8_t *pl,
		      size_t at)
{
	uint8_t base = h->op & (uint8_t)~FM_OP_REPLY;
	enum ms_sess_state was;
	int rc;

	if (base == FM_OP_RDMA_GRANT)
		return on_grant(c, h, pl);
	if ((base == FM_OP_READ || base == FM_OP_WRITE) && c->sess.state == MS_READY &&
	    !(h->op & FM_OP_REPLY))
		return reply_status(c, h, -EOPNOTSUPP, NULL, 0); /* one-sided only */
	was = c->sess.state;
	rc = ms_session_frame(c->l->ctx, &c->sess, h, pl, &c->out);
	if (rc < 0)
		return rc;
	if (was != MS_READY && c->sess.state == MS_READY && conn_authenticated(c) < 0)
		return -ENOMEM;
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
		if (rc)
			return rc;
		if (c->out.len >= RL_OUT_HIGH) {
			c->recv_held |= 1u << i;
			return 0;
		}
		return post_recv(c, i);
	case WR_SEND:
		if (i < RL_SEND_DEPTH && !(c->send_free & (1u << i))) {
			c->send_free |= 1u << i;
			c->sends_out--;
		}
		return 0;
	case WR_HS_SEND:
		if (i < RL_HS_SEND_DEPTH && !(c->hs_send_free & (1u << i))) {
			c->hs_send_free |= 1u << i;
			c->sends_out--;
		}
		return 0;
	default:
		return 0;   /* a window bound */
	}
}

/* The queue drained below RL_OUT_HIGH: take requests again. */
static int recv_release(struct rl_conn *c)
{
	while (c->recv_held && c->out.len < RL_OUT_HIGH) {
		uint32_t i = (uint32_t)__builtin_ctz(c->recv_held);
		int rc = post_recv(c, i);

		if (rc)
			return rc;
		c->recv_held &= ~(1u << i);
	}
	return 0;
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
	if (rc == 0)
		rc = recv_release(c);
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

static uint64_t handshake_ms(const struct ms_rdma *l)
{
	return l->ctx->limits ? l->ctx->limits->handshake_ms : MS_HANDSHAKE_MS_DEFAULT;
}

/* A handshake slot for a connect request from sa (ms_ctx.admit): 0, or
 * -EBUSY/-EAGAIN over a cap (logged, rate-limited). */
static int admit(struct ms_rdma *l, struct rdma_cm_id *id, struct sockaddr_storage *sa)
{
	struct sockaddr *peer = rdma_get_peer_addr(id);
	char name[80];
	int rc;

	memset(sa, 0, sizeof(*sa));
	if (!l->ctx->admit || !peer)
		return 0;
	memcpy(sa, peer, peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						     : sizeof(struct sockaddr_in));
	rc = fm_admit_take(l->ctx->admit, peer);
	if (rc == 0 || rc == -EAFNOSUPPORT)
		return 0;
	peer_name(id, name, sizeof(name));
	log_warn_rl("%s: refusing %s: %s", l->name, name,
		    rc == -EBUSY ? "too many handshakes from that source in progress "
				   "(max-handshakes-per-source)"
				 : "too many handshakes in progress (max-handshakes)");
	l->stats.refused++;
	return rc;
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
	c->auth_deadline = l->ctx->now_ms() + handshake_ms(l);
	c->send_free = RL_SEND_DEPTH == 32 ? ~0u : (1u << RL_SEND_DEPTH) - 1;
	c->hs_send_free = (1u << RL_HS_SEND_DEPTH) - 1;
	/* Only what the handshake needs: see the top of the file. */
	c->mem_len = (size_t)RL_RECV_DEPTH * RL_RECV_BUF +
		     (size_t)RL_HS_SEND_DEPTH * RL_HS_SEND_BUF;
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
	struct sockaddr_storage sa;
	struct rl_conn *c = NULL;
	struct rl_dev *d;
	int rc = -ENOMEM;

	if (l->nconns >= RL_MAX_CONNS) {
		log_warn_rl("%s: refusing a connection: %u already open", l->name, l->nconns);
		goto reject;
	}
	if (admit(l, id, &sa) < 0)
		goto reject;
	d = NULL;
	rc = dev_get(l, id->verbs, &d);
	c = calloc(1, sizeof(*c));
	if (rc || !c) {
		if (l->ctx->admit && sa.ss_family)
			fm_admit_put(l->ctx->admit, (struct sockaddr *)&sa);
		free(c);
		c = NULL;
		goto reject;
	}
	c->l = l;
	c->id = id;
	c->dev = d;
	c->sa = sa;
	c->admitted = sa.ss_family != 0;
	id->context = c;
	rc = conn_setup(l, c);
	if (rc) {
		log_err_rl("%s: cannot set up a connection from %s: %s", l->name,
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
			log_warn_rl("%s: closing: handshake not done within %llu ms "
				    "(handshake-timeout)", c->sess.peer,
				    (unsigned long long)handshake_ms(l));
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
	/* Bound to one device's address: check it and register the pool now,
	 * so a failure stops the start-up instead of each client. */
	if (l->listen_id->verbs) {
		struct rl_dev *d;

		rc = dev_get(l, l->listen_id->verbs, &d);
		if (rc == 0)
			rc = dev_register_pool(l, d);
	} else {
		rc = windows_check_all(l);
	}
	if (rc)
		goto fail;
	log_info("listening on %s", l->name);
	*out = l;
	return 0;
fail:
	ms_rdma_close(l);
	return rc;
}
