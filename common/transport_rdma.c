/* transport_rdma.c — the memserver client connection over RDMA.
 *
 * One connection = one RC queue pair (librdmacm sets it up) + one
 * completion thread, or, for a connection that belongs to an event loop
 * (fiber.h), one link fiber of that loop.
 *
 *  - Submitters (any thread) take a request slot under `lock` and post
 *    the work request themselves: a READ or WRITE becomes one RDMA READ /
 *    RDMA WRITE straight against the segment's remote address, a control
 *    op one SEND of its frame.  No hand-off to another thread per page.
 *  - The completion thread owns the endpoint's lifetime: it sleeps on the
 *    completion channel (and the rdma_cm event channel, for disconnects)
 *    with a bounded timeout, completes requests from work completions,
 *    enforces deadlines, drops the connection on any loss, protocol
 *    violation or failed work request, and reconnects with backoff.
 *  - Loop mode runs that same code as the loop's link fiber: it polls
 *    the completion queue, and when the queue is empty it waits for the
 *    completion channel's fd through the loop's ring, so a queue's
 *    requests are posted, completed and resumed in its one thread.
 *    Submitters are the loop's fibers; one that finds no free slot or
 *    bounce unit gives the thread to the others until one is freed.
 *
 * Every buffer the NIC touches is allocated at open and registered once
 * per established connection: bounce units that requests borrow as their
 * length needs (a page takes one, the connection's largest I/O at most
 * RD_MAX_SGE, listed in one scatter/gather work request) and the receive
 * buffers for control replies.  Nothing is allocated per request.  Units
 * are sized by the largest I/O the opener announced (params max_io): a
 * queue's connection (128 KiB) pins about 0.5 MiB, one for FM_MAX_IO 3 MiB.
 *
 * A READ/WRITE of a segment whose (remote_addr, rkey) this connection
 * does not know yet first sends GRANT (transport_rdma.h); the completion
 * thread posts the data transfer when the grant arrives.  That happens
 * once per segment per connection.
 *
 * Lock order: only `lock`.  Submitters post under it and only while `up`;
 * the completion thread clears `up` under it before it destroys the queue
 * pair, so nobody posts to a dead one.
 */
#include "transport_rdma.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "chan.h"
#include "fiber.h"
#include "log.h"
#include "transport_common.h"

/* Registered bounce memory comes in units; a request takes as many as
 * its length needs and the work request lists them (scatter/gather), so
 * a page costs one unit and the largest I/O fits RD_MAX_SGE of them.  A
 * unit is at least RD_UNIT_MIN (a stored page with its record header),
 * in whole pages. */
#define RD_MAX_SGE              16u
#define RD_UNIT_MIN             (8u * 1024)
#define RD_UNIT_ALIGN           4096u
/* Units beyond this many slots wait.  Each unit is registered and so
 * pinned: at 128 a client's three maintenance connections alone pinned
 * 30 MiB of a 256 MiB guest.  32 in flight per connection (plus one
 * largest frame) is more than a queue's fibers keep busy. */
#define RD_UNITS_SHARED         32u
#define RD_RECV_BUF             (64u * 1024)
/* A data-only connection (no LIST) receives at most this: a PING echo,
 * STAT, HELLO or an ALLOC/GRANT reply, with header and channel tag. */
#define RD_RECV_SMALL           1024u
#define RD_GRANT_CAP            4096u
#define RD_TICK_MS              100u
#define RD_POLL_BATCH           32
#define RD_RD_ATOMIC            16      /* outstanding RDMA READs we ask for */

_Static_assert(RD_RECV_BUF >= FM_RDMA_MSG_MAX, "receive buffer holds a LIST reply");
_Static_assert(RD_UNIT_MIN >= FM_HDR_SIZE + FM_PING_MAX + FM_CHAN_TAG_LEN,
	       "a unit holds a tagged request frame");
_Static_assert(RD_RECV_SMALL >= FM_HDR_SIZE + FM_PING_MAX + FM_CHAN_TAG_LEN &&
	       RD_RECV_SMALL >= FM_HDR_SIZE + FM_STAT_WIRE + FM_CHAN_TAG_LEN &&
	       RD_RECV_SMALL >= FM_HDR_SIZE + FM_HELLO_REP_LEN + FM_CHAN_TAG_LEN &&
	       RD_RECV_SMALL >= FM_HDR_SIZE + FM_ALLOC_REP_LEN + FM_CHAN_TAG_LEN,
	       "a small receive buffer holds every reply but LIST's");
_Static_assert(FM_RDMA_MSG_MAX >= FM_HDR_SIZE + 4u + FM_LIST_MAX * FM_LIST_ENTRY_LEN +
	       FM_CHAN_TAG_LEN, "a message holds a tagged LIST reply");
_Static_assert(FM_MAX_IO / RD_MAX_SGE % RD_UNIT_ALIGN == 0, "FM_MAX_IO in RD_MAX_SGE units");

/* What a work request is, in the top byte of its wr_id; the low 32 bits
 * are the slot's tag (or the receive buffer's index). */
enum { WR_RECV = 1, WR_SEND, WR_DATA };
#define WR_ID(kind, tag)  ((uint64_t)(kind) << 56 | (uint32_t)(tag))
#define WR_KIND(id)       ((unsigned)((id) >> 56))
#define WR_TAG(id)        ((uint32_t)(id))

enum slot_state { SLOT_FREE, SLOT_CTRL, SLOT_GRANT, SLOT_DATA };

struct rd_slot {
	struct fm_req *req;   /* NULL when free */
	uint16_t gen;         /* bumped per use, so a stale tag never matches */
	uint8_t state;        /* enum slot_state */
	uint8_t nu;           /* bounce units held */
	uint16_t u[RD_MAX_SGE];
};

/* One established connection's verbs objects; rebuilt on every connect. */
struct rd_ep {
	struct rdma_event_channel *ech;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cch;
	struct ibv_cq *cq;
	struct ibv_mr *mr_units, *mr_recv;
	unsigned cq_unacked;
	int has_qp;
};

struct rd_conn {
	struct fm_conn base;

	/* Fixed at open. */
	struct fm_tc_conf cf;
	int wake_fd;                  /* eventfd: close() kicks the thread */
	pthread_t thread;
	/* Loop mode: the completion "thread" is a fiber of this loop's
	 * thread (the link fiber); it sets fiber_done as it ends. */
	struct fm_loop *loop;
	int fiber_done;
	uint8_t *units_mem;           /* nunits x unit */
	uint8_t *recv_mem;            /* FM_RDMA_CTRL_DEPTH x recv_buf */
	uint32_t unit;                /* bytes per bounce unit */
	uint32_t recv_buf;            /* bytes per receive buffer */
	size_t units_len, recv_len;
	unsigned nunits;

	/* Under lock. */
	pthread_mutex_t lock;
	pthread_cond_t slot_cv;       /* a slot, buffer or credit freed; state changed */
	struct rd_slot *slots;
	uint32_t *free_idx;
	unsigned nfree;
	uint16_t *unit_free;          /* stack of free unit indexes */
	unsigned nunit_free;
	unsigned ctrl_used;           /* control messages awaiting a reply */
	int up;
	int stop;
	struct fm_rdma_grants grants;
	struct ibv_qp *qp;            /* valid while up */
	uint32_t lkey_units;
	/* The channel (chan.h): control messages are tagged in the order
	 * they are posted and checked in the order they complete, both
	 * under lock.  One-sided transfers carry no tag. */
	struct fm_chan chan;

	/* Completion thread (or open, before the thread exists) only. */
	struct rd_ep ep;
	struct fm_req *culprit;       /* request whose reply broke the protocol */
	uint32_t segment_max;
	/* The session the last handshake authenticated (auth.h): the key
	 * and both nonces per-frame MACs derive their keys from. */
	struct fm_auth_session auth;
	struct fm_chan hs_chan;       /* the last handshake's keys, until installed */
	uint64_t next_scan_ns;
	int quiet;                    /* retrying: connect failures are debug noise */
};

/* Connect-path errors: said once, then at debug level while retrying. */
static void __attribute__((format(printf, 2, 3)))
conn_log(const struct rd_conn *c, const char *fmt, ...)
{
	enum log_level lvl = c->quiet ? LOG_LVL_DEBUG : LOG_LVL_ERR;
	va_list ap;

	if (lvl > log_get_level())
		return;
	va_start(ap, fmt);
	log_vmsg(lvl, fmt, ap);
	va_end(ap);
}

static int conn_stopping(struct rd_conn *c)
{
	return fm_tc_stopping(&c->stop);
}

/* ---- shared helpers (also used by memserver/rdma_listener.c) ---- */

int fm_rdma_msg_decode(const uint8_t *msg, size_t msg_len, struct fm_hdr *h)
{
	uint8_t tmp[FM_HDR_SIZE];
	uint8_t op;
	int rc;

	if (msg_len < FM_HDR_SIZE)
		return -EPROTO;
	memcpy(tmp, msg, FM_HDR_SIZE);
	op = tmp[5];
	/* GRANT is not in protocol.c's op list: check the rest of the
	 * header with a stand-in op of the same direction. */
	if ((op & (uint8_t)~FM_OP_REPLY) == FM_OP_RDMA_GRANT)
		tmp[5] = (uint8_t)(FM_OP_FREE | (op & FM_OP_REPLY));
	rc = fm_hdr_decode(tmp, FM_HDR_SIZE, h);
	if (rc)
		return rc;
	h->op = op;
	if (h->len != msg_len - FM_HDR_SIZE)
		return -EPROTO;
	return 0;
}

int fm_rdma_device_check(const char *what)
{
	struct ibv_device **list;
	int n = 0;

	list = ibv_get_device_list(&n);
	if (list)
		ibv_free_device_list(list);
	if (!list || n <= 0) {
		log_err("%s: no RDMA device (%s)", what, FM_RDMA_CHECK_HINT);
		return -ENODEV;
	}
	return 0;
}

#define cm_log(lvl, ...) do { if ((lvl) <= LOG_LVL_DEBUG) log_msg(lvl, __VA_ARGS__); } while (0)

int fm_rdma_cm_error(const char *name, const char *stage, int event, int status,
		     enum log_level lvl)
{
	int err = status < 0 ? -status : status;

	if (lvl > log_get_level())
		lvl = LOG_LVL_DEBUG + 1;   /* below every threshold: say nothing */

	switch (event) {
	case RDMA_CM_EVENT_ADDR_ERROR:
	case RDMA_CM_EVENT_ROUTE_ERROR:
		cm_log(lvl, "%s: %s failed (%s): the address is not reachable through an "
			"RDMA device (%s)", name, stage, err ? strerror(err) : "no route",
			FM_RDMA_CHECK_HINT);
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_REJECTED:
		/* No listener on the port comes back as a reject, too. */
		cm_log(lvl, "%s: %s: connection refused (is a memserver listening on "
			"rdma:// there?)", name, stage);
		return -ECONNREFUSED;
	case RDMA_CM_EVENT_UNREACHABLE:
		cm_log(lvl, "%s: %s: peer unreachable (%s)", name, stage, FM_RDMA_CHECK_HINT);
		return -EHOSTUNREACH;
	case RDMA_CM_EVENT_CONNECT_ERROR:
	case RDMA_CM_EVENT_DISCONNECTED:
		cm_log(lvl, "%s: %s: connection lost (%s)", name, stage,
			err ? strerror(err) : "disconnected");
		return -ECONNRESET;
	default:
		cm_log(lvl, "%s: %s: unexpected %s (status %d)", name, stage,
			rdma_event_str((enum rdma_cm_event_type)event), status);
		return err ? -err : -EPROTO;
	}
}

/* ---- grant cache ---- */

int fm_rdma_grants_init(struct fm_rdma_grants *g, uint32_t cap)
{
	uint32_t c = 16;

	while (c < cap)
		c <<= 1;
	g->tab = calloc(c, sizeof(*g->tab));
	if (!g->tab)
		return -ENOMEM;
	g->cap = c;
	g->count = 0;
	g->resets = 0;
	return 0;
}

void fm_rdma_grants_fini(struct fm_rdma_grants *g)
{
	free(g->tab);
	g->tab = NULL;
	g->cap = g->count = 0;
}

static uint32_t grant_hash(uint64_t id, uint32_t cap)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return (uint32_t)id & (cap - 1);
}

const struct fm_rdma_grant *fm_rdma_grants_find(const struct fm_rdma_grants *g,
						uint64_t seg_id)
{
	uint32_t i = grant_hash(seg_id, g->cap);

	for (uint32_t n = 0; n < g->cap && g->tab[i].used; n++, i = (i + 1) & (g->cap - 1))
		if (g->tab[i].seg_id == seg_id)
			return &g->tab[i];
	return NULL;
}

void fm_rdma_grants_clear(struct fm_rdma_grants *g)
{
	memset(g->tab, 0, (size_t)g->cap * sizeof(*g->tab));
	g->count = 0;
}

void fm_rdma_grants_put(struct fm_rdma_grants *g, uint64_t seg_id, uint64_t addr,
			uint32_t rkey, uint32_t size)
{
	struct fm_rdma_grant *e = (struct fm_rdma_grant *)fm_rdma_grants_find(g, seg_id);
	uint32_t i;

	if (!e) {
		/* Keep probes short: at 3/4 full, forget and start over. */
		if (g->count + 1 > g->cap / 4 * 3) {
			fm_rdma_grants_clear(g);
			g->resets++;
		}
		for (i = grant_hash(seg_id, g->cap); g->tab[i].used; i = (i + 1) & (g->cap - 1))
			;
		e = &g->tab[i];
		g->count++;
	}
	e->seg_id = seg_id;
	e->addr = addr;
	e->rkey = rkey;
	e->size = size;
	e->used = 1;
}

/* Linear probing deletion: shift later members of the run back so no
 * lookup stops early at the hole. */
void fm_rdma_grants_del(struct fm_rdma_grants *g, uint64_t seg_id)
{
	struct fm_rdma_grant *e = (struct fm_rdma_grant *)fm_rdma_grants_find(g, seg_id);
	uint32_t mask = g->cap - 1, hole, j;

	if (!e)
		return;
	hole = (uint32_t)(e - g->tab);
	g->tab[hole].used = 0;
	g->count--;
	for (j = (hole + 1) & mask; g->tab[j].used; j = (j + 1) & mask) {
		uint32_t home = grant_hash(g->tab[j].seg_id, g->cap);

		/* Entry j may move to the hole when its home is not in (hole, j]. */
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			g->tab[hole] = g->tab[j];
			g->tab[j].used = 0;
			hole = j;
		}
	}
}

int fm_rdma_grant_range(const struct fm_rdma_grant *e, uint32_t offset,
			uint32_t len, uint64_t *remote)
{
	if ((uint64_t)offset + len > e->size)
		return -ERANGE;
	*remote = e->addr + offset;
	return 0;
}

/* ---- endpoint: set-up and tear-down of one connection ---- */

/* Wait for one rdma_cm event of type want within the deadline.  Any
 * other event is a failure, reported with stage. */
static int cm_wait(struct rd_conn *c, struct rd_ep *ep, enum rdma_cm_event_type want,
		   const char *stage, uint64_t deadline, int wake_fd)
{
	struct pollfd pfd[2] = {
		{ .fd = ep->ech->fd, .events = POLLIN },
		{ .fd = wake_fd, .events = POLLIN },
	};
	struct rdma_cm_event *ev;
	int type, status;

	for (;;) {
		if (rdma_get_cm_event(ep->ech, &ev) == 0)
			break;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		int ms = fm_mono_ms_until(deadline);

		if (ms == 0) {
			conn_log(c, "%s: %s timed out after %u ms", c->cf.name, stage,
				c->cf.connect_timeout_ms);
			return -ETIMEDOUT;
		}
		int rc = fm_tc_poll(pfd, wake_fd >= 0 ? 2 : 1, ms);

		if (rc < 0)
			return rc;
		if (wake_fd >= 0 && (pfd[1].revents & POLLIN))
			return -ECANCELED;
	}
	type = ev->event;
	status = ev->status;
	rdma_ack_cm_event(ev);
	if ((int)type == (int)want)
		return 0;
	return fm_rdma_cm_error(c->cf.name, stage, type, status,
				c->quiet ? LOG_LVL_DEBUG : LOG_LVL_ERR);
}

static void ep_destroy(struct rd_ep *ep)
{
	if (ep->id && ep->has_qp) {
		rdma_disconnect(ep->id);
		rdma_destroy_qp(ep->id);
	}
	ep->has_qp = 0;
	if (ep->cq) {
		if (ep->cq_unacked)
			ibv_ack_cq_events(ep->cq, ep->cq_unacked);
		ibv_destroy_cq(ep->cq);
	}
	if (ep->cch)
		ibv_destroy_comp_channel(ep->cch);
	if (ep->mr_units)
		ibv_dereg_mr(ep->mr_units);
	if (ep->mr_recv)
		ibv_dereg_mr(ep->mr_recv);
	if (ep->pd)
		ibv_dealloc_pd(ep->pd);
	if (ep->id)
		rdma_destroy_id(ep->id);
	if (ep->ech)
		rdma_destroy_event_channel(ep->ech);
	memset(ep, 0, sizeof(*ep));
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

static int ep_post_recv(struct rd_conn *c, struct rd_ep *ep, uint32_t idx)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(c->recv_mem + (size_t)idx * c->recv_buf),
		.length = c->recv_buf,
		.lkey = ep->mr_recv->lkey,
	};
	struct ibv_recv_wr wr = { .wr_id = WR_ID(WR_RECV, idx), .sg_list = &sge,
				  .num_sge = 1 }, *bad;

	return -ibv_post_recv(ep->id->qp, &wr, &bad);
}

/* From the address resolved at open (the first one, as ever) to a route
 * through an RDMA device. */
static int resolve(struct rd_conn *c, struct rd_ep *ep, uint64_t deadline, int wake_fd)
{
	struct sockaddr_storage dst = c->cf.peer.a[0].ss;   /* rdma_cm takes it non-const */
	int rc;

	rc = rdma_resolve_addr(ep->id, NULL, (struct sockaddr *)&dst,
			       (int)c->cf.connect_timeout_ms);
	if (rc) {
		rc = -errno;
		conn_log(c, "%s: resolving the address over RDMA failed: %s (%s)", c->cf.name,
			strerror(-rc), FM_RDMA_CHECK_HINT);
		return rc == -ENODEV || rc == -EADDRNOTAVAIL ? -EHOSTUNREACH : rc;
	}
	rc = cm_wait(c, ep, RDMA_CM_EVENT_ADDR_RESOLVED, "resolving the address",
		     deadline, wake_fd);
	if (rc)
		return rc;
	if (rdma_resolve_route(ep->id, (int)c->cf.connect_timeout_ms)) {
		rc = -errno;
		conn_log(c, "%s: resolving the route failed: %s", c->cf.name, strerror(-rc));
		return rc;
	}
	return cm_wait(c, ep, RDMA_CM_EVENT_ROUTE_RESOLVED, "resolving the route",
		       deadline, wake_fd);
}

/* Work requests posted and not yet completed: every data transfer holds
 * at least one bounce unit, every control SEND a credit, so nunits +
 * FM_RDMA_CTRL_DEPTH bound them; a SEND's completion may come after its
 * reply gave the credit back, hence a second FM_RDMA_CTRL_DEPTH.  Not
 * slots: a shared connection has thousands, and the provider allocates
 * (and rxe maps) the send queue whole. */
static unsigned send_queue_depth(const struct rd_conn *c)
{
	return c->nunits + 2 * FM_RDMA_CTRL_DEPTH + 8;
}

/* Protection domain, CQ with its channel, the queue pair and the
 * registrations of our preallocated buffers, on the device the route
 * chose. */
static int ep_verbs(struct rd_conn *c, struct rd_ep *ep)
{
	struct ibv_context *ctx = ep->id->verbs;
	unsigned sq = send_queue_depth(c);
	struct ibv_qp_init_attr qa = {
		.cap = { .max_send_wr = sq, .max_recv_wr = FM_RDMA_CTRL_DEPTH,
			 .max_send_sge = RD_MAX_SGE, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
		.sq_sig_all = 1,
	};
	const char *what;

	what = "allocating a protection domain";
	ep->pd = ibv_alloc_pd(ctx);
	if (!ep->pd)
		goto fail;
	what = "creating a completion channel";
	ep->cch = ibv_create_comp_channel(ctx);
	if (!ep->cch || set_nonblock(ep->cch->fd))
		goto fail;
	what = "creating a completion queue";
	ep->cq = ibv_create_cq(ctx, (int)(sq + FM_RDMA_CTRL_DEPTH), NULL, ep->cch, 0);
	if (!ep->cq)
		goto fail;
	qa.send_cq = qa.recv_cq = ep->cq;
	what = "creating a queue pair";
	if (rdma_create_qp(ep->id, ep->pd, &qa))
		goto fail;
	ep->has_qp = 1;
	what = "registering buffers";
	ep->mr_units = ibv_reg_mr(ep->pd, c->units_mem, c->units_len, IBV_ACCESS_LOCAL_WRITE);
	ep->mr_recv = ibv_reg_mr(ep->pd, c->recv_mem, c->recv_len, IBV_ACCESS_LOCAL_WRITE);
	if (!ep->mr_units || !ep->mr_recv)
		goto fail;
	for (uint32_t i = 0; i < FM_RDMA_CTRL_DEPTH; i++) {
		what = "posting receives";
		if (ep_post_recv(c, ep, i))
			goto fail;
	}
	if (ibv_req_notify_cq(ep->cq, 0)) {
		what = "arming the completion queue";
		goto fail;
	}
	return 0;
fail:
	conn_log(c, "%s: %s on %s failed: %s", c->cf.name, what,
		ctx ? ibv_get_device_name(ctx->device) : "?", strerror(errno ? errno : EIO));
	return errno ? -errno : -EIO;
}

/* Up to max completions within the deadline; also watches the cm channel
 * (a disconnect while we wait) and the wake fd (close). */
static int ep_poll(struct rd_conn *c, struct rd_ep *ep, struct ibv_wc *wc, int max,
		   uint64_t deadline, int wake_fd)
{
	struct pollfd pfd[3] = {
		{ .fd = ep->cch->fd, .events = POLLIN },
		{ .fd = ep->ech->fd, .events = POLLIN },
		{ .fd = wake_fd, .events = POLLIN },
	};
	struct ibv_cq *cq;
	void *ctx;

	for (;;) {
		int n = ibv_poll_cq(ep->cq, max, wc);

		if (n != 0)
			return n < 0 ? -EIO : n;
		/* Empty: drain the channel, re-arm, and look once more so a
		 * completion that raced the arming is not slept through. */
		while (ibv_get_cq_event(ep->cch, &cq, &ctx) == 0)
			ep->cq_unacked++;
		if (ep->cq_unacked >= 64) {
			ibv_ack_cq_events(ep->cq, ep->cq_unacked);
			ep->cq_unacked = 0;
		}
		if (ibv_req_notify_cq(ep->cq, 0))
			return -EIO;
		n = ibv_poll_cq(ep->cq, max, wc);
		if (n != 0)
			return n < 0 ? -EIO : n;
		int ms = fm_mono_ms_until(deadline);

		if (ms == 0)
			return -ETIMEDOUT;
		int rc = fm_tc_poll(pfd, wake_fd >= 0 ? 3 : 2, ms);

		if (rc < 0)
			return rc;
		if (pfd[1].revents & POLLIN) {
			struct rdma_cm_event *ev;

			if (rdma_get_cm_event(ep->ech, &ev) == 0) {
				int type = ev->event;

				rdma_ack_cm_event(ev);
				if (type == RDMA_CM_EVENT_DISCONNECTED ||
				    type == RDMA_CM_EVENT_DEVICE_REMOVAL ||
				    type == RDMA_CM_EVENT_TIMEWAIT_EXIT)
					return -ECONNRESET;
				log_debug("%s: ignoring rdma_cm event %s", c->cf.name,
					  rdma_event_str((enum rdma_cm_event_type)type));
			}
		}
		if (wake_fd >= 0 && (pfd[2].revents & POLLIN))
			return -ECANCELED;
	}
}

/* ---- handshake: HELLO and AUTH as SEND/RECV, tag 0, slot 0's buffer ---- */

static int hs_send(struct rd_conn *c, struct rd_ep *ep, uint8_t op,
		   const uint8_t *payload, uint32_t len)
{
	struct fm_hdr h = { .op = op, .tag = 0, .len = len };
	struct ibv_sge sge = { .addr = (uintptr_t)c->units_mem,
			       .length = FM_HDR_SIZE + len, .lkey = ep->mr_units->lkey };
	struct ibv_send_wr wr = { .wr_id = WR_ID(WR_SEND, 0), .sg_list = &sge,
				  .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;

	fm_hdr_encode(c->units_mem, &h);
	memcpy(c->units_mem + FM_HDR_SIZE, payload, len);
	return -ibv_post_send(ep->id->qp, &wr, &bad);
}

static int hs_reply(struct rd_conn *c, struct rd_ep *ep, uint8_t op, uint8_t *payload,
		    size_t want, uint64_t deadline, int wake_fd)
{
	struct ibv_wc wc[4];
	struct fm_hdr h;

	for (;;) {
		int n = ep_poll(c, ep, wc, 4, deadline, wake_fd);

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			const uint8_t *msg;
			uint32_t idx;
			int rc;

			if (wc[i].status != IBV_WC_SUCCESS) {
				conn_log(c, "%s: %s: work request failed: %s", c->cf.name,
					fm_op_name(op), ibv_wc_status_str(wc[i].status));
				return -ECONNRESET;
			}
			if (WR_KIND(wc[i].wr_id) != WR_RECV)
				continue;
			idx = WR_TAG(wc[i].wr_id);
			msg = c->recv_mem + (size_t)idx * c->recv_buf;
			rc = fm_rdma_msg_decode(msg, wc[i].byte_len, &h);
			if (rc == 0 && (h.op != (op | FM_OP_REPLY) || h.tag != 0))
				rc = -EPROTO;
			if (rc) {
				conn_log(c, "%s: expected a %s reply, got something else: "
					"not a farmem memserver?", c->cf.name, fm_op_name(op));
				return -EPROTO;
			}
			if (h.status < 0) {
				conn_log(c, "%s: %s refused: %s", c->cf.name, fm_op_name(op),
					strerror(-h.status));
				return h.status;
			}
			if (h.len != want) {
				conn_log(c, "%s: %s reply has %u bytes, want %zu", c->cf.name,
					fm_op_name(op), h.len, want);
				return -EPROTO;
			}
			memcpy(payload, msg + FM_HDR_SIZE, want);
			return ep_post_recv(c, ep, idx);
		}
	}
}

/* HELLO, then AUTH (see tcp_handshake); on success c->auth is the
 * session: the key and both nonces the channel keys derive from. */
static int handshake(struct rd_conn *c, struct rd_ep *ep, uint64_t deadline, int wake_fd)
{
	struct fm_tc_hs hs;
	uint8_t buf[FM_HELLO_REP_LEN], mac[FM_MAC_LEN];
	int rc;

	fm_tc_hs_hello(&c->cf, &hs);
	if (hs.hello_len == 0)
		return -EINVAL;
	rc = hs_send(c, ep, FM_OP_HELLO, hs.hello, (uint32_t)hs.hello_len);
	if (rc == 0)
		rc = hs_reply(c, ep, FM_OP_HELLO, buf, FM_HELLO_REP_LEN, deadline, wake_fd);
	if (rc == 0)
		rc = fm_tc_hs_auth(&c->cf, &hs, buf, FM_HELLO_REP_LEN, mac);
	if (rc == 0)
		rc = hs_send(c, ep, FM_OP_AUTH, mac, FM_MAC_LEN);
	if (rc == 0)
		rc = hs_reply(c, ep, FM_OP_AUTH, mac, FM_MAC_LEN, deadline, wake_fd);
	if (rc == -ECONNRESET || rc == -EPERM) {
		conn_log(c, "%s: the server refused us at AUTH: wrong key or secret "
			 "(client %s)?", c->cf.name, c->cf.id.name);
		rc = -EACCES;
	}
	if (rc == 0)
		rc = fm_tc_hs_verify(&c->cf, &hs, mac);
	if (rc == 0) {
		c->segment_max = hs.segment_max;
		c->auth = hs.sess;
		/* The key that authenticated the handshake, and its nonces. */
		fm_chan_init(&c->hs_chan, FM_CHAN_CLIENT, hs.sess.key, FM_KEY_LEN,
			     hs.sess.client_nonce, hs.sess.server_nonce);
		fm_tc_hs_done(&c->cf, &c->base, &hs);
	}
	fm_wipe(&hs, sizeof(hs));
	return rc;
}

/* Resolve, set up verbs, connect and authenticate within connect_timeout. */
static int rd_connect(struct rd_conn *c, int wake_fd)
{
	uint64_t deadline = fm_mono_after_ms(c->cf.connect_timeout_ms);
	struct rd_ep *ep = &c->ep;
	struct rdma_conn_param cp = { .retry_count = 7, .rnr_retry_count = 7 };
	struct ibv_device_attr da;
	int rc;

	memset(ep, 0, sizeof(*ep));
	ep->ech = rdma_create_event_channel();
	if (!ep->ech) {
		rc = -errno;
		conn_log(c, "%s: no RDMA device (cannot open the rdma_cm channel: %s; %s)",
			c->cf.name, strerror(-rc), FM_RDMA_CHECK_HINT);
		return -ENODEV;
	}
	rc = set_nonblock(ep->ech->fd);
	if (rc == 0 && rdma_create_id(ep->ech, &ep->id, c, RDMA_PS_TCP))
		rc = -errno;
	if (rc == 0)
		rc = resolve(c, ep, deadline, wake_fd);
	if (rc == 0)
		rc = ep_verbs(c, ep);
	if (rc == 0) {
		cp.initiator_depth = RD_RD_ATOMIC;
		if (ibv_query_device(ep->id->verbs, &da) == 0 &&
		    da.max_qp_init_rd_atom < RD_RD_ATOMIC)
			cp.initiator_depth = (uint8_t)da.max_qp_init_rd_atom;
		if (rdma_connect(ep->id, &cp)) {
			rc = -errno;
			conn_log(c, "%s: rdma_connect: %s", c->cf.name, strerror(-rc));
		}
	}
	if (rc == 0)
		rc = cm_wait(c, ep, RDMA_CM_EVENT_ESTABLISHED, "connecting", deadline, wake_fd);
	if (rc == 0)
		rc = handshake(c, ep, deadline, wake_fd);
	if (rc)
		ep_destroy(ep);
	return rc;
}

/* ---- slots and posting ---- */

static uint32_t slot_tag(const struct rd_conn *c, uint32_t idx)
{
	return fm_tc_tag(c->slots[idx].gen, idx);
}

static int is_data(const struct fm_req *r)
{
	return r->op == FM_OP_READ || r->op == FM_OP_WRITE;
}

static uint8_t *unit_addr(const struct rd_conn *c, uint16_t u)
{
	return c->units_mem + (size_t)u * c->unit;
}

/* Bounce units len bytes take. */
static unsigned units_of(const struct rd_conn *c, uint32_t len)
{
	return (len + c->unit - 1) / c->unit;
}

static unsigned units_for(const struct rd_conn *c, const struct fm_req *r)
{
	return is_data(r) ? units_of(c, r->len) : 1;
}

/* Copy between the caller's bytes and the slot's units. */
static void units_gather(struct rd_conn *c, const struct rd_slot *s, const struct fm_req *r)
{
	size_t pos = 0;

	for (int i = 0; i < r->iovcnt; i++) {
		const uint8_t *src = r->iov[i].iov_base;
		size_t left = r->iov[i].iov_len;

		while (left) {
			size_t off = pos % c->unit, n = c->unit - off;

			if (n > left)
				n = left;
			memcpy(unit_addr(c, s->u[pos / c->unit]) + off, src, n);
			src += n;
			pos += n;
			left -= n;
		}
	}
}

static void units_scatter(struct rd_conn *c, const struct rd_slot *s, uint8_t *dst,
			  uint32_t len)
{
	for (unsigned i = 0; len; i++) {
		uint32_t n = len > c->unit ? c->unit : len;

		memcpy(dst, unit_addr(c, s->u[i]), n);
		dst += n;
		len -= n;
	}
}

/* Under lock: give the slot (and its bounce units) back. */
static void slot_release(struct rd_conn *c, uint32_t idx)
{
	struct rd_slot *s = &c->slots[idx];

	if (s->state == SLOT_CTRL || s->state == SLOT_GRANT)
		c->ctrl_used--;
	while (s->nu)
		c->unit_free[c->nunit_free++] = s->u[--s->nu];
	s->req = NULL;
	s->state = SLOT_FREE;
	c->free_idx[c->nfree++] = idx;
	pthread_cond_broadcast(&c->slot_cv);
}

/* Under lock: the one-sided transfer of a granted READ or WRITE.  A
 * WRITE's bytes are gathered here, not at submit: a WRITE that waited
 * for its GRANT sent that frame from the same bounce unit. */
static int post_data(struct rd_conn *c, uint32_t idx, const struct fm_rdma_grant *g)
{
	struct rd_slot *s = &c->slots[idx];
	struct fm_req *r = s->req;
	struct ibv_sge sge[RD_MAX_SGE];
	struct ibv_send_wr wr = { .wr_id = WR_ID(WR_DATA, slot_tag(c, idx)),
				  .sg_list = sge, .num_sge = s->nu,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	uint32_t left = r->len;
	uint64_t remote;
	int rc;

	rc = fm_rdma_grant_range(g, r->offset, r->len, &remote);
	if (rc)
		return rc;
	if (r->op == FM_OP_WRITE)
		units_gather(c, s, r);
	for (unsigned i = 0; i < s->nu; i++) {
		sge[i].addr = (uintptr_t)unit_addr(c, s->u[i]);
		sge[i].length = left > c->unit ? c->unit : left;
		sge[i].lkey = c->lkey_units;
		left -= sge[i].length;
	}
	wr.opcode = r->op == FM_OP_WRITE ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;
	wr.wr.rdma.remote_addr = remote;
	wr.wr.rdma.rkey = g->rkey;
	c->slots[idx].state = SLOT_DATA;
	rc = ibv_post_send(c->qp, &wr, &bad);
	if (rc) {
		log_err("%s: posting %s of seg %llu failed: %s", c->cf.name, fm_op_name(r->op),
			(unsigned long long)r->seg_id, strerror(rc));
		return -EIO;
	}
	return 0;
}

/* Under lock: SEND a control frame (for r->op, or GRANT) from the slot. */
static int post_ctrl(struct rd_conn *c, uint32_t idx, uint8_t op)
{
	struct fm_req *r = c->slots[idx].req;
	uint8_t *buf = unit_addr(c, c->slots[idx].u[0]);
	uint8_t *p = buf + FM_HDR_SIZE;
	struct fm_hdr h = { .op = op, .tag = slot_tag(c, idx) };
	struct ibv_sge sge = { .addr = (uintptr_t)buf, .lkey = c->lkey_units };
	struct ibv_send_wr wr = { .wr_id = WR_ID(WR_SEND, h.tag), .sg_list = &sge,
				  .num_sge = 1, .opcode = IBV_WR_SEND,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;
	struct iovec iov;
	size_t n = 0;
	int rc;

	switch (op) {
	case FM_OP_ALLOC:
		n = fm_alloc_req_encode(p, r->arg);
		break;
	case FM_OP_FREE:
	case FM_OP_RDMA_GRANT:
		n = fm_u64_encode(p, r->seg_id);
		break;
	case FM_OP_LIST:
		n = fm_list_req_encode(p, r->arg);
		break;
	case FM_OP_PING:
		for (int i = 0; i < r->iovcnt; i++) {
			memcpy(p + n, r->iov[i].iov_base, r->iov[i].iov_len);
			n += r->iov[i].iov_len;
		}
		break;
	default: /* STAT */
		break;
	}
	h.len = (uint32_t)n;
	fm_hdr_encode(buf, &h);
	/* Tagged under lock as it is posted: posting order is tag order. */
	iov = (struct iovec){ .iov_base = buf, .iov_len = FM_HDR_SIZE + n };
	fm_chan_seal_iov(&c->chan.tx, &iov, 1, buf + FM_HDR_SIZE + n);
	sge.length = (uint32_t)(FM_HDR_SIZE + n + FM_CHAN_TAG_LEN);
	c->slots[idx].state = op == FM_OP_RDMA_GRANT ? SLOT_GRANT : SLOT_CTRL;
	c->ctrl_used++;
	rc = ibv_post_send(c->qp, &wr, &bad);
	if (rc) {
		log_err("%s: posting %s failed: %s", c->cf.name, fm_op_name(op), strerror(rc));
		return -EIO;
	}
	return 0;
}

/* Everything about a request that can be checked before it is queued. */
static int req_check(const struct rd_conn *c, const struct fm_req *r)
{
	size_t sum = 0;

	if (!r || !r->done)
		return -EINVAL;
	switch (r->op) {
	case FM_OP_READ:
		return r->len && r->len <= c->cf.max_io && r->buf ? 0 : -EINVAL;
	case FM_OP_WRITE:
	case FM_OP_PING:
		if (r->len == 0 && r->op == FM_OP_WRITE)
			return -EINVAL;
		if (r->len > (r->op == FM_OP_PING ? FM_PING_MAX : c->cf.max_io))
			return -EINVAL;
		if (r->iovcnt < 0 || (r->iovcnt && !r->iov))
			return -EINVAL;
		for (int i = 0; i < r->iovcnt; i++)
			sum += r->iov[i].iov_len;
		return sum == r->len ? 0 : -EINVAL;
	case FM_OP_LIST:
		/* Its reply would not fit a small receive buffer. */
		if (c->cf.data_only)
			return -EOPNOTSUPP;
		return r->rep.list.seg_ids && r->rep.list.sizes ? 0 : -EINVAL;
	case FM_OP_ALLOC:
	case FM_OP_FREE:
	case FM_OP_STAT:
		return 0;
	default:
		return -EINVAL;
	}
}

/* Under lock: wait (at most one request timeout) until the request can
 * go: a slot, the bounce units its length needs, a control credit when it
 * needs a control message.  Returns 0, or -ENOTCONN/-ECANCELED/-ETIMEDOUT
 * (-EAGAIN: the owner loop's thread outside a fiber, fm_tc_slot_wait). */
static int wait_resources(struct rd_conn *c, const struct fm_req *r,
			  const struct fm_rdma_grant **g)
{
	uint64_t deadline = fm_mono_after_ms(c->cf.timeout_ms);
	unsigned need = units_for(c, r);

	for (;;) {
		int need_ctrl, rc;

		if (c->stop)
			return -ECANCELED;
		if (!c->up)
			return -ENOTCONN;
		*g = is_data(r) ? fm_rdma_grants_find(&c->grants, r->seg_id) : NULL;
		need_ctrl = !*g;
		if (c->nfree && c->nunit_free >= need &&
		    (!need_ctrl || c->ctrl_used < FM_RDMA_CTRL_DEPTH))
			return 0;
		rc = fm_tc_slot_wait(&c->lock, &c->slot_cv, c->loop, deadline);
		if (rc == -ETIMEDOUT)
			log_warn("%s: no free request slot in %u ms (%u in flight)",
				 c->cf.name, c->cf.timeout_ms, c->cf.nslots - c->nfree);
		if (rc)
			return rc;
	}
}

static int rd_submit(struct fm_conn *base, struct fm_req *r)
{
	struct rd_conn *c = (struct rd_conn *)base;
	const struct fm_rdma_grant *g;
	struct rd_slot *s;
	uint32_t idx;
	int rc;

	rc = req_check(c, r);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	rc = wait_resources(c, r, &g);
	if (rc)
		goto out;
	if (g) {
		uint64_t remote;

		/* The server would say the same; fail before using a slot. */
		rc = fm_rdma_grant_range(g, r->offset, r->len, &remote);
		if (rc)
			goto out;
	}
	idx = c->free_idx[--c->nfree];
	s = &c->slots[idx];
	s->gen++;
	s->req = r;
	for (s->nu = 0; s->nu < units_for(c, r); s->nu++)
		s->u[s->nu] = c->unit_free[--c->nunit_free];
	fm_tc_req_start(r, slot_tag(c, idx), c->cf.timeout_ms);
	if (!is_data(r))
		rc = post_ctrl(c, idx, r->op);
	else if (!g)
		rc = post_ctrl(c, idx, FM_OP_RDMA_GRANT);
	else
		rc = post_data(c, idx, g);
	if (rc)
		slot_release(c, idx);
out:
	pthread_mutex_unlock(&c->lock);
	return rc;
}

/* ---- completions (completion thread) ---- */

/* A finished request waits on this list until the lock is dropped; its
 * status rides in t_tag, which is ours and no longer needed. */
static void finish(struct rd_conn *c, uint32_t idx, int status, struct fm_req **done)
{
	struct fm_req *r = c->slots[idx].req;

	slot_release(c, idx);
	r->t_tag = (uint32_t)status;
	r->t_next = *done;
	*done = r;
}

static void run_done(struct fm_req *list)
{
	while (list) {
		struct fm_req *r = list;

		list = r->t_next;
		r->t_next = NULL;
		r->done(r, (int)r->t_tag);
	}
}

/* Under lock: a control reply's payload into the request. */
static int ctrl_decode(struct rd_conn *c, struct fm_req *r, const uint8_t *p, uint32_t len)
{
	uint32_t count;

	switch (r->op) {
	case FM_OP_ALLOC:
		if (fm_alloc_rep_decode(p, len, &r->rep.alloc) < 0)
			return -EPROTO;
		fm_rdma_grants_put(&c->grants, r->rep.alloc.seg_id, r->rep.alloc.remote_addr,
				   r->rep.alloc.rkey, r->rep.alloc.size);
		return 0;
	case FM_OP_FREE:
		if (len)
			return -EPROTO;
		fm_rdma_grants_del(&c->grants, r->seg_id);
		return 0;
	case FM_OP_STAT:
		return fm_stat_decode(p, len, &r->rep.stat);
	case FM_OP_LIST:
		if (fm_list_rep_decode(p, len, &count) < 0)
			return -EPROTO;
		for (uint32_t i = 0; i < count; i++)
			fm_list_rep_entry(p, i, &r->rep.list.seg_ids[i], &r->rep.list.sizes[i]);
		r->rep.list.count = count;
		return 0;
	case FM_OP_PING:
		if (len != r->len)
			return -EPROTO;
		if (r->buf)
			memcpy(r->buf, p, len);
		return 0;
	default:
		return -EPROTO;
	}
}

/* Under lock: a GRANT arrived; remember it and start the transfer. */
static int grant_arrived(struct rd_conn *c, uint32_t idx, const uint8_t *p, uint32_t len,
			 struct fm_req **done)
{
	struct fm_req *r = c->slots[idx].req;
	struct fm_alloc_rep g;
	const struct fm_rdma_grant *e;
	int rc;

	if (fm_alloc_rep_decode(p, len, &g) < 0 || g.seg_id != r->seg_id)
		return -EPROTO;
	fm_rdma_grants_put(&c->grants, g.seg_id, g.remote_addr, g.rkey, g.size);
	e = fm_rdma_grants_find(&c->grants, g.seg_id);
	c->ctrl_used--;                       /* its control message is answered */
	c->slots[idx].state = SLOT_DATA;
	rc = post_data(c, idx, e);
	if (rc == -ERANGE) {
		finish(c, idx, rc, done);
		return 0;
	}
	return rc;
}

/* Under lock: one control reply.  Nonzero: drop the connection. */
static int on_recv(struct rd_conn *c, uint32_t ridx, uint32_t byte_len, struct fm_req **done)
{
	const uint8_t *msg = c->recv_mem + (size_t)ridx * c->recv_buf;
	struct fm_hdr h;
	struct rd_slot *s = NULL;
	uint32_t idx;
	uint8_t want;
	int rc;

	if (byte_len < FM_CHAN_TAG_LEN ||
	    fm_rdma_msg_decode(msg, byte_len - FM_CHAN_TAG_LEN, &h)) {
		log_err("%s: reply message rejected (%u bytes); dropping the connection",
			c->cf.name, byte_len);
		return -EPROTO;
	}
	/* Nothing of a reply counts before its tag checks. */
	if (fm_chan_check_frame(&c->chan.rx, msg, byte_len - FM_CHAN_TAG_LEN,
				msg + byte_len - FM_CHAN_TAG_LEN) < 0) {
		fm_chan_count_reject();
		log_err("%s: reply op 0x%02x tag 0x%08x fails its channel check: forged, "
			"replayed or reordered; dropping the connection", c->cf.name, h.op,
			h.tag);
		return -EPROTO;
	}
	idx = fm_tc_tag_idx(h.tag);
	if (idx < c->cf.nslots && c->slots[idx].gen == fm_tc_tag_gen(h.tag))
		s = &c->slots[idx];
	if (!s || !s->req || (s->state != SLOT_CTRL && s->state != SLOT_GRANT)) {
		log_err("%s: reply with unknown tag 0x%08x op 0x%02x; dropping the connection",
			c->cf.name, h.tag, h.op);
		return -EPROTO;
	}
	want = s->state == SLOT_GRANT ? FM_OP_RDMA_GRANT : s->req->op;
	if (h.op != (want | FM_OP_REPLY)) {
		log_err("%s: reply op 0x%02x to a %s request; dropping the connection",
			c->cf.name, h.op, fm_op_name(want));
		c->culprit = s->req;
		return -EPROTO;
	}
	if (h.status < 0) {
		/* A segment gone from the server is not in our cache either. */
		if (h.status == -ENOENT && s->state == SLOT_GRANT)
			fm_rdma_grants_del(&c->grants, s->req->seg_id);
		finish(c, idx, h.status, done);
		rc = 0;
	} else if (s->state == SLOT_GRANT) {
		rc = grant_arrived(c, idx, msg + FM_HDR_SIZE, h.len, done);
	} else {
		rc = ctrl_decode(c, s->req, msg + FM_HDR_SIZE, h.len);
		if (rc == 0)
			finish(c, idx, 0, done);
	}
	if (rc == -EPROTO) {
		log_err("%s: %s reply does not decode (%u bytes); dropping the connection",
			c->cf.name, fm_op_name(want), h.len);
		c->culprit = s->req;
	}
	if (rc == 0)
		rc = ep_post_recv(c, &c->ep, ridx);
	return rc;
}

/* Under lock: one work completion.  Nonzero: drop the connection. */
static int on_wc(struct rd_conn *c, const struct ibv_wc *wc, struct fm_req **done)
{
	unsigned kind = WR_KIND(wc->wr_id);
	uint32_t tag = WR_TAG(wc->wr_id), idx = fm_tc_tag_idx(tag);
	struct rd_slot *s;

	if (wc->status != IBV_WC_SUCCESS) {
		log_err("%s: work request failed: %s (vendor error 0x%x); dropping the "
			"connection", c->cf.name, ibv_wc_status_str(wc->status), wc->vendor_err);
		if (kind == WR_DATA && idx < c->cf.nslots && c->slots[idx].req &&
		    slot_tag(c, idx) == tag)
			c->culprit = c->slots[idx].req;
		return -EIO;
	}
	if (kind == WR_RECV)
		return on_recv(c, tag, wc->byte_len, done);
	if (kind != WR_DATA)
		return 0;                 /* a SEND went out; its reply completes it */
	if (idx >= c->cf.nslots || slot_tag(c, idx) != tag || c->slots[idx].state != SLOT_DATA)
		return -EPROTO;
	s = &c->slots[idx];
	if (s->req->op == FM_OP_READ)
		units_scatter(c, s, s->req->buf, s->req->len);
	finish(c, idx, 0, done);
	return 0;
}

/* ---- connection state ---- */

static void conn_install(struct rd_conn *c)
{
	pthread_mutex_lock(&c->lock);
	c->qp = c->ep.id->qp;
	c->lkey_units = c->ep.mr_units->lkey;
	c->chan = c->hs_chan;
	fm_chan_wipe(&c->hs_chan);
	fm_rdma_grants_clear(&c->grants);
	c->up = 1;
	pthread_cond_broadcast(&c->slot_cv);
	pthread_mutex_unlock(&c->lock);
}

/* Tear the endpoint down and fail every in-flight request: expired ones
 * with -ETIMEDOUT when why is -ETIMEDOUT, a culprit with -EPROTO (-EIO
 * for a failed transfer), closing with -ECANCELED, the rest -ECONNRESET. */
static void conn_drop(struct rd_conn *c, int why)
{
	struct fm_req *list = NULL;
	uint64_t now = fm_mono_ns();
	unsigned failed = 0;
	int was_up;

	pthread_mutex_lock(&c->lock);
	was_up = c->up;
	c->up = 0;
	c->qp = NULL;
	for (uint32_t i = 0; i < c->cf.nslots; i++) {
		struct fm_req *r = c->slots[i].req;

		if (!r)
			continue;
		finish(c, i, fm_tc_drop_status(&c->cf, r, why, c->culprit, now), &list);
		failed++;
	}
	c->ctrl_used = 0;
	fm_rdma_grants_clear(&c->grants);
	pthread_cond_broadcast(&c->slot_cv);
	pthread_mutex_unlock(&c->lock);

	/* Nobody posts now: the queue pair can go. */
	ep_destroy(&c->ep);
	run_done(list);
	c->culprit = NULL;
	fm_tc_report_down(&c->cf, was_up, why, failed);
}

/* Earliest request deadline has passed? */
static int deadline_passed(struct rd_conn *c)
{
	uint64_t now = fm_mono_ns();
	int expired = 0;

	pthread_mutex_lock(&c->lock);
	for (uint32_t i = 0; i < c->cf.nslots && !expired; i++)
		if (c->slots[i].req && c->slots[i].req->t_deadline_ns <= now)
			expired = 1;
	pthread_mutex_unlock(&c->lock);
	return expired;
}

/* Wait for and handle completions for up to one tick.  Nonzero: drop. */
static int serve_once(struct rd_conn *c)
{
	struct ibv_wc wc[RD_POLL_BATCH];
	struct fm_req *done = NULL;
	int n, rc = 0;

	n = ep_poll(c, &c->ep, wc, RD_POLL_BATCH, fm_mono_after_ms(RD_TICK_MS), c->wake_fd);
	if (n == -ETIMEDOUT)
		n = 0;
	if (n < 0)
		return n;
	pthread_mutex_lock(&c->lock);
	for (int i = 0; i < n && rc == 0; i++)
		rc = on_wc(c, &wc[i], &done);
	pthread_mutex_unlock(&c->lock);
	run_done(done);
	/* Deadlines are coarse (a tick): scanning every slot per batch of
	 * completions would cost more than the completions. */
	if (rc == 0 && fm_mono_ns() >= c->next_scan_ns) {
		c->next_scan_ns = fm_mono_after_ms(RD_TICK_MS);
		if (deadline_passed(c))
			rc = -ETIMEDOUT;
	}
	return rc;
}

static void conn_reconnect(struct rd_conn *c, struct fm_tc_backoff *b)
{
	int rc;

	if (fm_tc_sleep_or_stop(c->wake_fd, &c->stop, b->ms))
		return;
	/* rd_connect says why it failed: once, not every 5 s. */
	c->quiet = b->tries > 0;
	rc = rd_connect(c, c->wake_fd);
	c->quiet = 0;
	if (rc) {
		/* rd_connect already logged a retry's cause at debug level. */
		fm_tc_backoff_failed(b, &c->cf, rc, 0);
		return;
	}
	conn_install(c);
	fm_tc_backoff_succeeded(b, &c->cf);
}

static void *conn_thread(void *arg)
{
	struct rd_conn *c = arg;
	struct fm_tc_backoff backoff;

	fm_tc_backoff_init(&backoff);

	while (!conn_stopping(c)) {
		if (c->ep.id) {
			int rc = serve_once(c);

			if (rc == -ECANCELED)
				break;
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

/* The completion thread as the link fiber of the owner's loop. */
static void link_fiber(void *arg)
{
	struct rd_conn *c = arg;

	conn_thread(c);
	c->fiber_done = 1;
}

static int link_ended(void *arg)
{
	const struct rd_conn *c = arg;

	return c->fiber_done;
}

/* ---- open / close ---- */

static void *alloc_pinned(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static void conn_free(struct rd_conn *c)
{
	if (c->wake_fd >= 0)
		close(c->wake_fd);
	pthread_cond_destroy(&c->slot_cv);
	pthread_mutex_destroy(&c->lock);
	free(c->slots);
	free(c->free_idx);
	free(c->unit_free);
	if (c->units_mem)
		munmap(c->units_mem, c->units_len);
	if (c->recv_mem)
		munmap(c->recv_mem, c->recv_len);
	fm_rdma_grants_fini(&c->grants);
	fm_chan_wipe(&c->chan);
	fm_chan_wipe(&c->hs_chan);
	fm_tc_conf_fini(&c->cf);
	fm_wipe(&c->auth, sizeof(c->auth));
	free(c);
}

/* The smallest unit in whole pages (at least RD_UNIT_MIN) that fits
 * max_io in RD_MAX_SGE of them. */
static uint32_t unit_size(uint32_t max_io)
{
	uint32_t u = (max_io + RD_MAX_SGE - 1) / RD_MAX_SGE;

	u = (u + RD_UNIT_ALIGN - 1) / RD_UNIT_ALIGN * RD_UNIT_ALIGN;
	return u < RD_UNIT_MIN ? RD_UNIT_MIN : u;
}

static struct rd_conn *conn_alloc(const struct fm_conn_params *p)
{
	struct rd_conn *c = calloc(1, sizeof(*c));
	int cv_rc;

	if (!c)
		return NULL;
	c->base.ops = &fm_transport_rdma;
	c->loop = p->loop;
	fm_tc_conf_init(&c->cf, p, "");
	/* A caller that allows slow requests (a loaded or emulated host)
	 * gets the same patience for the several round trips of a connect. */
	if (!p->connect_timeout_ms && c->cf.timeout_ms > c->cf.connect_timeout_ms)
		c->cf.connect_timeout_ms = c->cf.timeout_ms;
	c->wake_fd = -1;
	pthread_mutex_init(&c->lock, NULL);
	cv_rc = fm_cond_init_mono(&c->slot_cv);

	c->unit = unit_size(c->cf.max_io);
	c->recv_buf = c->cf.data_only ? RD_RECV_SMALL : RD_RECV_BUF;
	c->nunits = (c->cf.nslots < RD_UNITS_SHARED ? c->cf.nslots : RD_UNITS_SHARED) +
		    units_of(c, c->cf.max_io);
	c->units_len = (size_t)c->nunits * c->unit;
	c->recv_len = (size_t)FM_RDMA_CTRL_DEPTH * c->recv_buf;
	c->slots = calloc(c->cf.nslots, sizeof(*c->slots));
	c->free_idx = calloc(c->cf.nslots, sizeof(*c->free_idx));
	c->units_mem = alloc_pinned(c->units_len);
	c->unit_free = calloc(c->nunits, sizeof(*c->unit_free));
	c->recv_mem = alloc_pinned(c->recv_len);
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (cv_rc || !c->slots || !c->free_idx || !c->units_mem || !c->unit_free || !c->recv_mem ||
	    c->wake_fd < 0 || fm_rdma_grants_init(&c->grants, RD_GRANT_CAP)) {
		conn_free(c);
		return NULL;
	}
	fm_tc_free_stack_init(c->free_idx, c->cf.nslots);
	c->nfree = c->cf.nslots;
	for (unsigned i = 0; i < c->nunits; i++)
		c->unit_free[i] = (uint16_t)(c->nunits - 1 - i);
	c->nunit_free = c->nunits;
	return c;
}

static int rd_open(const struct fm_conn_params *p, struct fm_conn **out)
{
	char name[ADDR_HOST_MAX + 32];
	struct rd_conn *c;
	int rc;

	*out = NULL;
	if (!p || p->addr.kind != ADDR_RDMA || (!p->secret && !p->identity) || p->max_inflight > FM_RDMA_MAX_INFLIGHT)
		return -EINVAL;
	/* Fail fast, and say what to check, on a machine without RDMA. */
	rc = fm_rdma_device_check(addr_str(&p->addr, name, sizeof(name)));
	if (rc)
		return rc;
	c = conn_alloc(p);
	if (!c) {
		log_err("%s: out of memory opening a connection", name);
		return -ENOMEM;
	}
	rc = fm_tc_resolve(&c->cf);
	if (rc == 0)
		rc = rd_connect(c, -1);
	if (rc) {
		log_err("%s: cannot connect: %s", c->cf.name, strerror(-rc));
		conn_free(c);
		return rc;
	}
	conn_install(c);
	if (c->loop)
		rc = fm_loop_spawn(c->loop, link_fiber, c);
	else
		rc = fm_tc_start_thread(&c->thread, conn_thread, c);
	if (rc) {
		log_err("%s: cannot start the completion thread: %s", c->cf.name, strerror(-rc));
		ep_destroy(&c->ep);
		conn_free(c);
		return rc;
	}
	log_debug("%s: connected over RDMA (segment_max %u, %u slots, %zu KiB registered%s)",
		  c->cf.name, c->segment_max, c->cf.nslots, (c->units_len + c->recv_len) >> 10,
		  c->loop ? ", in the caller's loop" : "");
	*out = &c->base;
	return 0;
}

static int rd_is_up(struct fm_conn *base)
{
	struct rd_conn *c = (struct rd_conn *)base;

	return fm_tc_locked_flag(&c->lock, &c->up);
}

static void rd_close(struct fm_conn *base)
{
	struct rd_conn *c = (struct rd_conn *)base;

	fm_tc_request_stop(&c->cf, &c->lock, &c->slot_cv, &c->stop, c->wake_fd,
			   "completion thread");
	/* A link fiber sees stop within a slice and fails what is left. */
	if (c->loop)
		fm_tc_loop_wait(c->loop, link_ended, c);
	else
		pthread_join(c->thread, NULL);
	conn_free(c);
}

const struct fm_transport_ops fm_transport_rdma = {
	.name = "rdma",
	.open = rd_open,
	.submit = rd_submit,
	.is_up = rd_is_up,
	.close = rd_close,
};
