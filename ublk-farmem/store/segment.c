/* segment.c — segment life cycle (open, seal, drop a replica, free) and
 * the request slots and waiter every remote call goes through.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "placement.h"
#include "internal.h"

void waiter_init(struct waiter *w)
{
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->pending = 0;
	w->fiber = NULL;
}

void waiter_destroy(struct waiter *w)
{
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cv);
}

void waiter_add(struct waiter *w, unsigned n)
{
	pthread_mutex_lock(&w->lock);
	w->pending += n;
	pthread_mutex_unlock(&w->lock);
}

/* The wake happens under the lock, so once the waiter sees pending at
 * 0 (under the same lock) nobody touches it or its fiber any more. */
static void waiter_done(struct waiter *w)
{
	pthread_mutex_lock(&w->lock);
	if (--w->pending == 0) {
		if (w->fiber)
			fm_fiber_wake(w->fiber);
		w->fiber = NULL;
		pthread_cond_broadcast(&w->cv);
	}
	pthread_mutex_unlock(&w->lock);
}

/* No timeout here on purpose: every transport fails a request after its
 * own timeout_ms, so done() always comes, and the slot must not be
 * reused before it has. */
void waiter_wait(struct waiter *w)
{
	struct fm_fiber *f = fm_fiber_self();

	pthread_mutex_lock(&w->lock);
	while (w->pending) {
		if (!f) {
			pthread_cond_wait(&w->cv, &w->lock);
			continue;
		}
		w->fiber = f;
		pthread_mutex_unlock(&w->lock);
		fm_fiber_park();
		pthread_mutex_lock(&w->lock);
	}
	w->fiber = NULL;
	pthread_mutex_unlock(&w->lock);
}

static void req_done(struct fm_req *r, int status)
{
	struct qreq *q = r->priv;

	q->status = status;
	waiter_done(q->w);
}

int is_conn_error(int err)
{
	return err == -ECONNRESET || err == -ETIMEDOUT || err == -ENOTCONN ||
	       err == -ECANCELED || err == -EPIPE || err == -ECONNREFUSED ||
	       err == -EHOSTUNREACH;
}

int is_transient_error(int err)
{
	return is_conn_error(err) && err != -ECANCELED;
}

#define RETRY_BACKOFF_MAX_MS 1000u


uint64_t io_deadline_ns(const struct store *s)
{
	return fm_mono_after_ms(s->retry_ms);
}

void servers_refresh(struct store *s)
{
	for (int i = 0; i < s->nservers; i++) {
		struct store_server *v = &s->srv[i];
		struct fm_conn *c = __atomic_load_n(&v->conn, __ATOMIC_ACQUIRE);

		/* need_sweep stays set: maint still sweeps it once up. */
		if (c && !srv_up(v) && fm_conn_is_up(c) &&
		    !__atomic_exchange_n(&v->up, 1, __ATOMIC_ACQ_REL))
			log_info("server %s: back up", v->addr);
	}
}

static void retry_sleep(struct store *s, const struct timespec *ts)
{
	pthread_mutex_lock(&s->retry_lock);
	if (!__atomic_load_n(&s->closing, __ATOMIC_ACQUIRE))
		pthread_cond_timedwait(&s->retry_cv, &s->retry_lock, ts);
	pthread_mutex_unlock(&s->retry_lock);
}

int io_retry_wait(struct store *s, uint64_t deadline_ns, unsigned *backoff_ms)
{
	uint64_t now = fm_mono_ns(), wait_ns;
	struct timespec ts;

	if (__atomic_load_n(&s->closing, __ATOMIC_ACQUIRE))
		return -ECANCELED;
	if (now >= deadline_ns)
		return -ETIMEDOUT;
	wait_ns = (uint64_t)*backoff_ms * 1000000ull;
	if (wait_ns > deadline_ns - now)
		wait_ns = deadline_ns - now;
	ts = fm_mono_abstime(now + wait_ns);
	/* An early wake-up (a server came back, or a spurious one) only
	 * brings the next round forward.  A fiber sleeps its backoff out
	 * without holding its thread. */
	if (fm_fiber_self())
		fm_fiber_sleep_ns(wait_ns);
	else
		retry_sleep(s, &ts);
	*backoff_ms = *backoff_ms * 2 > RETRY_BACKOFF_MAX_MS ? RETRY_BACKOFF_MAX_MS
							     : *backoff_ms * 2;
	if (__atomic_load_n(&s->closing, __ATOMIC_ACQUIRE))
		return -ECANCELED;
	servers_refresh(s);
	return 0;
}

void server_failed(struct store *s, int server, int err, const char *what)
{
	struct store_server *v = &s->srv[server];

	atomic_add64(&v->errors, 1);
	if (!is_conn_error(err)) {
		log_warn("server %s: %s: %s", v->addr, what, strerror(-err));
		return;
	}
	__atomic_store_n(&v->need_sweep, 1, __ATOMIC_RELEASE);
	if (__atomic_exchange_n(&v->up, 0, __ATOMIC_ACQ_REL)) {
		log_warn("server %s: %s: %s; marked down", v->addr, what, strerror(-err));
		maint_kick(s);
	}
}

void req_submit(struct store *s, struct ioctx *io, struct qreq *q, int server)
{
	req_submit_w(s, io, &io->w, q, server);
}

int write_copy_sync(struct store *s, struct ioctx *io, const struct seg_rep *rep,
		    uint32_t off, const void *buf, uint32_t len)
{
	struct qreq *q = &io->reqs[0];

	memset(&q->req, 0, sizeof(q->req));
	q->iov.iov_base = (void *)buf;
	q->iov.iov_len = len;
	q->req.op = FM_OP_WRITE;
	q->req.seg_id = rep->remote_id;
	q->req.offset = off;
	q->req.len = len;
	q->req.iov = &q->iov;
	q->req.iovcnt = 1;
	req_submit(s, io, q, rep->server);
	waiter_wait(&io->w);
	return q->status;
}

/* The queue's own connection when its loop has one that is up (reply
 * and wake-up stay in this thread) and it carries this request (the data
 * path's ops and sizes), else the shared one. */
static struct fm_conn *pick_conn(struct store *s, struct ioctx *io, const struct fm_req *r,
				 int server)
{
	struct store_lconns *lc = io ? io->lc : NULL;

	if (lc && lc->conn[server] && lc->loop == fm_loop_current() &&
	    r->op != FM_OP_LIST && r->len <= lc->max_io && fm_conn_is_up(lc->conn[server]))
		return lc->conn[server];
	return srv_conn(&s->srv[server]);
}

void req_submit_w(struct store *s, struct ioctx *io, struct waiter *w,
		  struct qreq *q, int server)
{
	struct store_server *v = &s->srv[server];
	struct fm_conn *c = pick_conn(s, io, &q->req, server);
	int rc = -ENOTCONN;

	q->w = w;
	q->server = server;
	q->status = 0;
	q->req.done = req_done;
	q->req.priv = q;
	q->boot = fm_conn_boot_id(c);
	waiter_add(w, 1);
	if (c && srv_up(v))
		rc = fm_conn_submit(c, &q->req);
	if (rc < 0) {
		q->status = rc;
		waiter_done(w);
		return;
	}
	if (q->req.op == FM_OP_READ)
		atomic_add64(&v->reads, 1);
	else if (q->req.op == FM_OP_WRITE)
		atomic_add64(&v->writes, 1);
}

int seg_live_replicas(const struct store *s, const struct seg *g)
{
	int n = 0;

	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (g->rep[r].server >= 0 && srv_up(&s->srv[g->rep[r].server]) &&
		    !rep_stale(s, &g->rep[r]))
			n++;
	return n;
}

/* Slots only the maintenance thread may take: the cleaner needs a
 * segment to move live records into before it can free any. */
#define MAINT_RESERVE 4u

static int slot_take_locked(struct store *s, uint32_t *out, uint32_t reserve)
{
	uint32_t nfree = 0, pick = SEG_NONE;
	struct seg *g;

	for (uint32_t i = 0; i < s->hdr->nsegs; i++)
		if (s->segs[i].state == SEG_FREE && nfree++ == 0)
			pick = i;
	if (nfree <= reserve)
		return -ENOSPC;
	g = &s->segs[pick];
	memset(g, 0, sizeof(*g));
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		g->rep[r].server = -1;
	g->state = SEG_ALLOCATING;
	*out = pick;
	return 0;
}

static void slot_put(struct store *s, uint32_t idx)
{
	pthread_mutex_lock(&s->lock);
	s->segs[idx].state = SEG_FREE;
	pthread_cond_broadcast(&s->seg_cv);
	pthread_mutex_unlock(&s->lock);
}

#define SLOT_POLL_NS (5u * 1000000u)

/* Wait on seg_cv (s->lock held) at most ns; 0 or ETIMEDOUT. */
static int seg_cv_wait(struct store *s, uint64_t ns)
{
	struct timespec deadline = fm_mono_abstime(fm_mono_ns() + ns);

	return pthread_cond_timedwait(&s->seg_cv, &s->lock, &deadline);
}

/* A free table slot; when none is left, let the cleaner make one.  We
 * wait as long as the cleaner keeps freeing slots (others may win
 * them), and give up after a few request timeouts without any. */
static int slot_get(struct store *s, uint32_t *out, int may_wait)
{
	uint32_t reserve = may_wait ? MAINT_RESERVE : 0;
	uint64_t limit_ns = 2ull * (s->timeout_ms / 1000 + 1) * 1000000000ull;
	uint64_t give_up = 0;
	int rc;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		rc = slot_take_locked(s, out, reserve);
		if (rc == 0) {
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
		maint_kick(s);
		if (!s->maint_running || !may_wait)
			break;
		if (fm_fiber_self()) {
			/* A fiber polls (its thread serves the others); each
			 * freed slot restarts the wait in the thread version,
			 * here the overall bound is from the first miss. */
			if (!give_up)
				give_up = fm_mono_ns() + limit_ns;
			else if (fm_mono_ns() >= give_up)
				break;
			pthread_mutex_unlock(&s->lock);
			fm_fiber_sleep_ns(SLOT_POLL_NS);
			pthread_mutex_lock(&s->lock);
			continue;
		}
		if (seg_cv_wait(s, limit_ns) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&s->lock);
	log_err("store: segment table full (%u segments)", s->hdr->nsegs);
	return -ENOSPC;
}

/* Allocates a segment on up to R distinct up servers (placement decides
 * which), trying other servers when one refuses.  Uses the context's
 * last STORE_MAX_REPLICAS slots and its control waiter, because the
 * caller may have appends of the same request in flight. */
int seg_open(struct store *s, struct ioctx *io, uint32_t *out)
{
	/* Zeroed: a server membership adds meanwhile is not usable yet. */
	int usable[STORE_MAX_SERVERS] = { 0 }, tried[STORE_MAX_SERVERS], pick[STORE_MAX_REPLICAS];
	int ntried = 0, got = 0, anyup = 0, nospc = 0, hard = 0;
	struct seg_rep reps[STORE_MAX_REPLICAS];
	struct qreq *ctl = &io->reqs[io->nreqs - STORE_MAX_REPLICAS];
	uint32_t idx;
	int rc;

	memset(reps, 0, sizeof(reps));
	/* The maintenance thread is who frees slots: it must not wait. */
	rc = slot_get(s, &idx, io != &s->maint_io);
	if (rc < 0)
		return rc;
	for (int i = 0; i < s->nservers; i++) {
		usable[i] = srv_placeable(&s->srv[i]);
		anyup |= srv_conn(&s->srv[i]) && srv_up(&s->srv[i]);
	}
	while (got < s->replicas) {
		unsigned cursor;
		int n;

		pthread_mutex_lock(&s->lock);
		cursor = s->place_cursor;
		n = place_pick_hinted(usable, s->nservers, s->replicas - got, &cursor,
				      tried, ntried, &s->hints, pick);
		/* Only a fresh segment advances the rotation. */
		if (got == 0 && ntried == 0)
			s->place_cursor = cursor;
		pthread_mutex_unlock(&s->lock);
		if (n == 0)
			break;
		for (int k = 0; k < n; k++) {
			struct qreq *q = &ctl[k];

			memset(&q->req, 0, sizeof(q->req));
			q->req.op = FM_OP_ALLOC;
			q->req.arg = s->seg_size;
			req_submit_w(s, io, &io->cw, q, pick[k]);
			tried[ntried++] = pick[k];
		}
		waiter_wait(&io->cw);
		for (int k = 0; k < n; k++) {
			struct qreq *q = &ctl[k];

			if (q->status == 0 && q->req.rep.alloc.size >= s->seg_size) {
				reps[got].server = pick[k];
				reps[got].remote_id = q->req.rep.alloc.seg_id;
				reps[got].boot = boot_tag(q->boot);
				got++;
				continue;
			}
			/* Out of quota is a full server to us: the
			 * cleaner makes room, other servers may have some. */
			nospc |= q->status == -ENOSPC || q->status == -EDQUOT;
			hard |= !is_transient_error(q->status);
			server_failed(s, pick[k], q->status ? q->status : -EPROTO, "alloc");
		}
	}
	if (got == 0) {
		if (nospc) {
			/* Make the cleaner give back whatever dead space it can. */
			pthread_mutex_lock(&s->lock);
			s->clean_urgent = 1;
			pthread_mutex_unlock(&s->lock);
			maint_kick(s);
		}
		slot_put(s, idx);
		/* Nobody up, or every ALLOC lost to the transport: a caller
		 * may wait for the servers to come back. */
		if (!hard) {
			io->transient = 1;
			log_debug("store: no server up to allocate a segment (yet)");
		} else {
			log_err("store: no server could allocate a %u-byte segment", s->seg_size);
		}
		return anyup && nospc ? -ENOSPC : -EIO;
	}
	pthread_mutex_lock(&s->lock);
	for (int r = 0; r < got; r++)
		s->segs[idx].rep[r] = reps[r];
	s->segs[idx].state = SEG_OPEN;
	s->alloc_gen++;
	pthread_mutex_unlock(&s->lock);
	if (got < s->replicas)
		log_warn("store: segment %u opened with %d of %d replicas", idx, got,
			 s->replicas);
	*out = idx;
	return 0;
}

void seg_retire(struct store *s, uint32_t idx)
{
	pthread_mutex_lock(&s->lock);
	if (s->segs[idx].state == SEG_OPEN)
		s->segs[idx].state = s->segs[idx].writers ? SEG_FULL : SEG_SEALED;
	pthread_mutex_unlock(&s->lock);
}

void seg_write_done(struct store *s, uint32_t idx)
{
	pthread_mutex_lock(&s->lock);
	if (--s->segs[idx].writers == 0 && s->segs[idx].state == SEG_FULL)
		s->segs[idx].state = SEG_SEALED;
	pthread_mutex_unlock(&s->lock);
}

void seg_drop_replica(struct store *s, uint32_t idx, int server)
{
	/* If the server still has the copy, the next sweep frees it. */
	__atomic_store_n(&s->srv[server].need_sweep, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&s->lock);
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (s->segs[idx].rep[r].server == server) {
			s->segs[idx].rep[r].server = -1;
			s->segs[idx].flags |= SEGF_DEGRADED;
		}
	pthread_mutex_unlock(&s->lock);
}

/* FREEs the segment on every replica it has and returns the slot.  The
 * caller made sure no map entry and no reader uses it any more. */
void seg_free_remote(struct store *s, struct ioctx *io, uint32_t idx)
{
	struct seg_rep reps[STORE_MAX_REPLICAS];
	int n = 0;

	pthread_mutex_lock(&s->lock);
	memcpy(reps, s->segs[idx].rep, sizeof(reps));
	pthread_mutex_unlock(&s->lock);
	for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
		if (reps[r].server < 0)
			continue;
		struct qreq *q = &io->reqs[n++];

		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_FREE;
		q->req.seg_id = reps[r].remote_id;
		req_submit(s, io, q, reps[r].server);
	}
	waiter_wait(&io->w);
	for (int k = 0; k < n; k++)
		if (io->reqs[k].status < 0 && io->reqs[k].status != -ENOTCONN)
			log_warn("server %s: free segment %llu: %s",
				 s->srv[io->reqs[k].server].addr,
				 (unsigned long long)io->reqs[k].req.seg_id,
				 strerror(-io->reqs[k].status));
	pthread_mutex_lock(&s->lock);
	memset(&s->segs[idx], 0, sizeof(s->segs[idx]));
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		s->segs[idx].rep[r].server = -1;
	s->segs[idx].state = SEG_FREE;
	pthread_cond_broadcast(&s->seg_cv);
	pthread_mutex_unlock(&s->lock);
}

int seg_read_range(struct store *s, struct ioctx *io, const struct seg_rep *r,
		   uint32_t off, uint32_t len, void *buf)
{
	while (len) {
		uint32_t n = len > FM_MAX_IO ? FM_MAX_IO : len;
		struct qreq *q = &io->reqs[0];

		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_READ;
		q->req.seg_id = r->remote_id;
		q->req.offset = off;
		q->req.len = n;
		q->req.buf = buf;
		req_submit(s, io, q, r->server);
		waiter_wait(&io->w);
		if (q->status < 0) {
			server_failed(s, r->server, q->status, "read");
			return q->status;
		}
		off += n;
		len -= n;
		buf = (uint8_t *)buf + n;
	}
	return 0;
}

void map_release(struct store *s, const struct pm_entry *e)
{
	struct state_hdr *h = s->hdr;

	switch (pm_state(e)) {
	case PM_ZERO:
		h->zero_pages--;
		break;
	case PM_STORED:
		s->segs[e->seg].live -= rec_len(pm_plen(e));
		h->pages_stored--;
		h->bytes_stored -= rec_len(pm_plen(e));
		break;
	default:
		break;
	}
}

/* Read the whole segment into s->maint_seg_buf from a replica whose
 * records all verify.  -ENODATA: the scan met a hole (zeroes where a
 * record should start, left by an append that reached no replica); the
 * buffer holds that replica's bytes.  -EIO: no replica read and verified. */
int seg_load(struct store *s, uint32_t idx, uint32_t *used)
{
	return seg_load_opening(s, idx, used, NULL);
}

int seg_load_opening(struct store *s, uint32_t idx, uint32_t *used,
		     int (*must_open)(struct store *s, uint32_t idx, uint32_t off,
				      const struct rec_hdr *h))
{
	struct seg_rep reps[STORE_MAX_REPLICAS];

	pthread_mutex_lock(&s->lock);
	memcpy(reps, s->segs[idx].rep, sizeof(reps));
	*used = s->segs[idx].used;
	pthread_mutex_unlock(&s->lock);
	for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
		uint32_t off = 0;

		if (reps[r].server < 0 || !srv_up(&s->srv[reps[r].server]))
			continue;
		int rc = seg_read_range(s, &s->maint_io, &reps[r], 0, *used, s->maint_seg_buf);

		if (rc == -ENOENT)
			seg_drop_replica(s, idx, reps[r].server);
		if (rc < 0)
			continue;
		while (off < *used) {
			const uint8_t *payload;
			struct rec_hdr h;

			/* A record the caller has no use for is only
			 * parsed: its length is all the walk needs. */
			if (must_open &&
			    rec_parse(&s->rkey, s->maint_seg_buf + off, *used - off, &h) == 0 &&
			    !must_open(s, idx, off, &h)) {
				off += rec_len(h.plen);
				continue;
			}
			/* Sealed: opened, so the cleaner moves only records
			 * we wrote (into maint_io.clear, then dropped). */
			if (rec_open(&s->rkey, s->maint_seg_buf + off, *used - off, &h,
				     s->maint_io.clear, &payload) < 0)
				break;
			off += rec_len(h.plen);
		}
		if (off == *used)
			return 0;
		/* Zeroes where a record should start: space reserved for an
		 * append that reached no replica, not damage. */
		if (off + 4 <= *used && get_le32(s->maint_seg_buf + off) == 0) {
			log_debug("store: segment %u: unwritten hole at %u", idx, off);
			return -ENODATA;
		}
		count_bad_copy(s);
		log_warn("server %s: segment %u: bad record at %u while cleaning",
			 s->srv[reps[r].server].addr, idx, off);
	}
	return -EIO;
}
