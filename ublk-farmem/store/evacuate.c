/* evacuate.c — move copies off a server that asked for them back.
 *
 * A memserver whose host needs its memory, or one being drained, sends
 * a NOTICE: these segments of yours (or all of them) must leave by a
 * deadline.  The transport hands it to evacuate_notice_cb(), which only
 * marks what is to move (no allocation, no remote call: it runs on the
 * transport's thread).  The maintenance thread then does what repair
 * does for a lost copy — copy the sealed segment to another server that
 * holds none of it — but swaps the new copy in for the noticed one and
 * FREEs that one on the server that asked.  Open segments with a copy
 * to move are sealed first, like degraded ones.
 *
 * A notice is trusted only as far as it can do no harm: ids the server
 * does not hold for us (by the replica table) are ignored, so a server
 * can only ask about its own copies, and moving a copy never lowers the
 * number of copies.  If no other server has room, the copy stays and
 * the server's deadline decides (its FREE then shows up as a lost copy,
 * which repair replaces when it can).
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "internal.h"

#define READERS_WAIT_MS 2000

static int evac_all(const struct store_server *v)
{
	return __atomic_load_n(&v->evac_all, __ATOMIC_ACQUIRE);
}

/* Replica r of g to move?  Lock held. */
static int rep_to_move(const struct store *s, const struct seg *g, int r)
{
	const struct seg_rep *p = &g->rep[r];

	if (p->server < 0 || rep_stale(s, p))
		return 0;
	return (g->flags & (SEGF_EVAC << r)) || evac_all(&s->srv[p->server]);
}

/* The first replica of g to move, or -1.  Lock held. */
static int first_to_move(const struct store *s, const struct seg *g)
{
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (rep_to_move(s, g, r))
			return r;
	return -1;
}

static int open_seg_to_move(const struct store *s, const struct seg *g)
{
	return first_to_move(s, g) >= 0;
}

/* Mark the replicas on server v whose ids the notice names.  Returns
 * how many ids named nothing of ours there.  Lock held. */
static unsigned mark_ids(struct store *s, int server, const struct fm_notice *n)
{
	unsigned unknown = 0;

	for (unsigned k = 0; k < n->count; k++) {
		uint64_t id = fm_notice_id(n, k);
		int found = 0;

		for (uint32_t i = 0; i < s->hdr->nsegs && !found; i++) {
			struct seg *g = &s->segs[i];

			if (g->state == SEG_FREE)
				continue;
			for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
				if (g->rep[r].server != server || g->rep[r].remote_id != id ||
				    rep_stale(s, &g->rep[r]))
					continue;
				g->flags |= SEGF_EVAC << r;
				found = 1;
				break;
			}
		}
		unknown += !found;
	}
	return unknown;
}

void evacuate_notice_cb(void *arg, const struct fm_notice *n)
{
	struct store_server *v = arg;
	struct store *s = v->s;
	unsigned unknown = 0;

	__atomic_store_n(&v->evac_deadline_ns,
			 fm_mono_ns() + (uint64_t)n->deadline_ms * 1000000ull, __ATOMIC_RELEASE);
	if (n->flags & FM_NOTICE_ALL) {
		if (!__atomic_exchange_n(&v->evac_all, 1, __ATOMIC_ACQ_REL))
			log_info("server %s: asked to move every segment away within "
				 "%u ms (drain)", v->addr, n->deadline_ms);
	} else {
		pthread_mutex_lock(&s->lock);
		unknown = mark_ids(s, v->idx, n);
		pthread_mutex_unlock(&s->lock);
		log_info("server %s: asked to move %u segment(s) away within %u ms "
			 "(it needs its memory back)", v->addr, n->count - unknown,
			 n->deadline_ms);
		if (unknown)
			log_warn("server %s: NOTICE named %u segment(s) it does not "
				 "hold for us; ignored", v->addr, unknown);
	}
	maint_kick(s);
}

/* A sealed segment with a copy to move: *idx, *r.  Also clears
 * evac_all on servers that hold nothing of ours any more. */
static int find_work(struct store *s, uint32_t *idx, int *rep)
{
	int holds[STORE_MAX_SERVERS] = { 0 };
	int found = 0;

	pthread_mutex_lock(&s->lock);
	/* From a cursor: a segment whose copy has nowhere to go does not
	 * hide the ones after it. */
	for (uint32_t step = 0, n = s->hdr->nsegs; step < n; step++) {
		uint32_t i = (s->evac_cursor + step) % n;
		struct seg *g = &s->segs[i];
		int r;

		if (g->state == SEG_FREE)
			continue;
		for (int k = 0; k < STORE_MAX_REPLICAS; k++)
			if (g->rep[k].server >= 0)
				holds[g->rep[k].server] = 1;
		if (found || g->state != SEG_SEALED || (r = first_to_move(s, g)) < 0)
			continue;
		*idx = i;
		*rep = r;
		found = 1;
	}
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < s->nservers; i++)
		if (!holds[i] && evac_all(&s->srv[i]) &&
		    __atomic_exchange_n(&s->srv[i].evac_all, 0, __ATOMIC_ACQ_REL))
			log_info("server %s: every segment moved away", s->srv[i].addr);
	return found;
}

static void free_copy(struct store *s, struct ioctx *io, const struct seg_rep *rep)
{
	struct qreq *q = &io->reqs[0];

	memset(&q->req, 0, sizeof(q->req));
	q->req.op = FM_OP_FREE;
	q->req.seg_id = rep->remote_id;
	req_submit(s, io, q, rep->server);
	waiter_wait(&io->w);
	if (q->status < 0 && q->status != -ENOENT)
		log_warn("server %s: free of a moved segment: %s",
			 s->srv[rep->server].addr, strerror(-q->status));
}

/* Reads that picked the old copy before the swap finish first, as the
 * cleaner waits for them: a request's whole time out and more.  1 when
 * none is left. */
static int wait_readers(struct store *s, uint32_t idx)
{
	struct timespec ts = fm_mono_abstime_in_ms(READERS_WAIT_MS *
						   (s->timeout_ms / 1000 + 1));
	int drained;

	pthread_mutex_lock(&s->lock);
	while (s->segs[idx].readers &&
	       pthread_cond_timedwait(&s->seg_cv, &s->lock, &ts) == 0)
		;
	drained = s->segs[idx].readers == 0;
	pthread_mutex_unlock(&s->lock);
	return drained;
}

/* Put to in place of replica r if the segment is still as copied.
 * Lock taken here; 1 when swapped. */
static int swap_in(struct store *s, uint32_t idx, int r, const struct seg_rep *old,
		   const struct seg_rep *to)
{
	struct seg *g = &s->segs[idx];
	int ok;

	pthread_mutex_lock(&s->lock);
	ok = g->state == SEG_SEALED && g->rep[r].server == old->server &&
	     g->rep[r].remote_id == old->remote_id;
	if (ok) {
		g->rep[r] = *to;
		g->flags &= ~(SEGF_EVAC << r);
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

static void deadline_check(struct store *s, int server)
{
	uint64_t dl = __atomic_load_n(&s->srv[server].evac_deadline_ns, __ATOMIC_ACQUIRE);

	if (dl && fm_mono_ns() > dl)
		log_warn("server %s: still moving segments after the deadline it gave",
			 s->srv[server].addr);
}

int evacuate_run(struct store *s)
{
	struct ioctx *io = &s->maint_io;
	struct seg_rep reps[STORE_MAX_REPLICAS], to, old;
	uint32_t idx = 0;
	int r = 0;

	for (int i = 0; i < s->nstreams; i++)
		stream_retire_if(s, &s->streams[i], open_seg_to_move, 0);
	stream_retire_if(s, &s->maint_stream, open_seg_to_move, 0);
	if (!find_work(s, &idx, &r))
		return 0;
	pthread_mutex_lock(&s->lock);
	memcpy(reps, s->segs[idx].rep, sizeof(reps));
	pthread_mutex_unlock(&s->lock);
	old = reps[r];
	memset(&to, 0, sizeof(to));
	/* Excludes every server holding a copy, the noticing one too. */
	s->evac_cursor = idx + 1;   /* maint only */
	if (repair_alloc_target(s, io, reps, &to) < 0) {
		log_debug("store: segment %u: no other server has room for its copy "
			  "on %s", idx, s->srv[old.server].addr);
		deadline_check(s, old.server);
		return 0;
	}
	if (repair_copy(s, io, idx, reps, &to) < 0 || !swap_in(s, idx, r, &old, &to)) {
		log_warn("store: segment %u: moving its copy off %s failed; will retry",
			 idx, s->srv[old.server].addr);
		free_copy(s, io, &to);
		return 0;
	}
	if (wait_readers(s, idx)) {
		free_copy(s, io, &old);
	} else {
		/* A read still on the old copy must not find it gone (with one
		 * replica that is an EIO).  The copy is in no table now: the
		 * next sweep of that server frees it, or its deadline does. */
		__atomic_store_n(&s->srv[old.server].need_sweep, 1, __ATOMIC_RELEASE);
	}
	atomic_add64(&s->srv[old.server].evacuated, 1);
	log_debug("store: segment %u: copy moved from %s to %s", idx,
		  s->srv[old.server].addr, s->srv[to.server].addr);
	return 1;
}
