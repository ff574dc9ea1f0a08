/* sweep.c — free segments a server holds for this device that the
 * segment table no longer knows.
 *
 * They appear when a replica is dropped while its server still has it
 * (a failed write, a server that was down and came back after repair)
 * and after a restart (allocations whose replies died with the old
 * process).  A server is swept when the store opens and whenever it
 * comes back up.  A server that came back with another boot id
 * restarted: every copy it held for us is gone, whatever its LIST says,
 * and those copies are dropped first (repair re-replicates them).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "internal.h"

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* LIST every segment of ours on server i into s->sweep_ids; *complete
 * is 0 when they did not all fit. */
static int list_server(struct store *s, int i, uint32_t *count, int *complete)
{
	struct qreq *q = &s->maint_io.reqs[0];
	uint32_t n = 0;

	*complete = 0;
	for (;;) {
		if (n + FM_LIST_MAX > s->sweep_cap)
			break;     /* the rest waits for the next sweep */
		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_LIST;
		q->req.arg = n;
		q->req.rep.list.seg_ids = s->sweep_ids + n;
		q->req.rep.list.sizes = s->sweep_sizes;
		req_submit(s, &s->maint_io, q, i);
		waiter_wait(&s->maint_io.w);
		if (q->status < 0) {
			server_failed(s, i, q->status, "list");
			return q->status;
		}
		if (q->req.rep.list.count > FM_LIST_MAX)
			return -EPROTO;
		n += q->req.rep.list.count;
		if (q->req.rep.list.count < FM_LIST_MAX) {
			*complete = 1;
			break;
		}
	}
	*count = n;
	return 0;
}

/* Replicas the table puts on server i that the server does not have
 * (it restarted, or its lease ran out) are dropped, so repair replaces
 * them.  Only valid when the list is complete and no segment was
 * allocated since it was taken.  Lock held. */
static void drop_missing(struct store *s, int i, uint32_t n)
{
	qsort(s->sweep_ids, n, sizeof(uint64_t), cmp_u64);
	for (uint32_t k = 0; k < s->hdr->nsegs; k++) {
		struct seg *g = &s->segs[k];

		if (g->state == SEG_FREE)
			continue;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			if (g->rep[r].server == i &&
			    !bsearch(&g->rep[r].remote_id, s->sweep_ids, n, sizeof(uint64_t),
				     cmp_u64)) {
				log_warn("server %s: lost segment %u's copy; re-replicating",
					 s->srv[i].addr, k);
				g->rep[r].server = -1;
				g->flags |= SEGF_DEGRADED;
			}
	}
}

/* Keep only ids no segment references; -EAGAIN while an allocation is
 * in flight or happened since the list was taken (its id may be listed
 * but not yet recorded, or recorded but not listed). */
static int keep_orphans(struct store *s, int i, uint32_t *count, uint64_t gen,
			int complete)
{
	uint32_t nref = 0, n = 0;

	pthread_mutex_lock(&s->lock);
	if (s->alloc_gen != gen) {
		pthread_mutex_unlock(&s->lock);
		return -EAGAIN;
	}
	for (uint32_t k = 0; k < s->hdr->nsegs; k++) {
		const struct seg *g = &s->segs[k];

		if (g->state == SEG_ALLOCATING) {
			pthread_mutex_unlock(&s->lock);
			return -EAGAIN;
		}
		if (g->state == SEG_FREE)
			continue;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			if (g->rep[r].server == i)
				s->sweep_ref[nref++] = g->rep[r].remote_id;
	}
	if (complete)
		drop_missing(s, i, *count);
	pthread_mutex_unlock(&s->lock);
	qsort(s->sweep_ref, nref, sizeof(uint64_t), cmp_u64);
	for (uint32_t k = 0; k < *count; k++)
		if (!bsearch(&s->sweep_ids[k], s->sweep_ref, nref, sizeof(uint64_t), cmp_u64))
			s->sweep_ids[n++] = s->sweep_ids[k];
	*count = n;
	return 0;
}

int sweep_server(struct store *s, int i)
{
	struct qreq *q = &s->maint_io.reqs[0];
	uint32_t n = 0, freed = 0;
	int rc, complete;
	uint64_t gen;

	pthread_mutex_lock(&s->lock);
	gen = s->alloc_gen;
	n = server_drop_stale(s, i);
	pthread_mutex_unlock(&s->lock);
	if (n) {
		log_warn("server %s: restarted (new boot id): its %u segment copies "
			 "are lost; re-replicating", s->srv[i].addr, n);
		maint_kick(s);
	}
	n = 0;
	rc = list_server(s, i, &n, &complete);
	if (rc == 0)
		rc = keep_orphans(s, i, &n, gen, complete);
	if (rc < 0)
		return rc;
	for (uint32_t k = 0; k < n; k++) {
		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_FREE;
		q->req.seg_id = s->sweep_ids[k];
		req_submit(s, &s->maint_io, q, i);
		waiter_wait(&s->maint_io.w);
		freed += q->status == 0;
	}
	if (n)
		log_info("server %s: freed %u of %u segments no longer in use", s->srv[i].addr,
			 freed, n);
	return 0;
}
