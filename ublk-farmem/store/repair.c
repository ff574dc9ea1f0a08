/* repair.c — bring segments that lost a copy back to R replicas.
 *
 * A replica on a down server is dropped from its segment; the segment is
 * then copied from a surviving replica onto another up server that does
 * not hold it yet, and the new replica is added only once the copy is
 * complete.  Only sealed segments are repaired (their bytes no longer
 * change), so open segments that lost a copy are sealed first.  A copy
 * on a server that restarted since it was made (another boot id) is
 * lost like one on a down server, and is never a source.
 */
#include <errno.h>
#include <string.h>

#include "log.h"
#include "placement.h"
#include "internal.h"

/* Could another server take a copy of g?  Lock held. */
static int can_add_replica(const struct store *s, const struct seg *g)
{
	for (int i = 0; i < s->nservers; i++) {
		int holds = 0;

		if (!srv_conn(&s->srv[i]) || !srv_up(&s->srv[i]))
			continue;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			holds |= g->rep[r].server == i;
		if (!holds)
			return 1;
	}
	return 0;
}

/* Needs a new copy (and can get one)?  Lock held. */
static int needs_repair(const struct store *s, const struct seg *g)
{
	int live = seg_live_replicas(s, g);

	return live > 0 && live < s->replicas && can_add_replica(s, g);
}

/* Open segments of idle streams would otherwise stay short of copies.
 * A busy stream is skipped: it checks its segment itself on every
 * append, and its holder may be waiting for the cleaner. */
void repair_seal_degraded(struct store *s)
{
	for (int i = 0; i < s->nstreams; i++)
		stream_retire_if(s, &s->streams[i], needs_repair, 0);
	stream_retire_if(s, &s->maint_stream, needs_repair, 0);
}

/* Drop replicas on down servers and pick one segment to repair. */
static int find_victim(struct store *s, uint32_t *out)
{
	int found = 0;

	pthread_mutex_lock(&s->lock);
	for (uint32_t i = 0; i < s->hdr->nsegs && !found; i++) {
		struct seg *g = &s->segs[i];

		if (g->state != SEG_SEALED || !needs_repair(s, g))
			continue;
		/* Forget copies on down servers only now that a new copy can
		 * take their place: a segment whose every holder is down
		 * keeps its replicas for when they come back. */
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			if (g->rep[r].server >= 0 && (!srv_up(&s->srv[g->rep[r].server]) ||
						      rep_stale(s, &g->rep[r]))) {
				g->rep[r].server = -1;
				g->flags |= SEGF_DEGRADED;
			}
		{
			*out = i;
			found = 1;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

int repair_alloc_target(struct store *s, struct ioctx *io, const struct seg_rep *reps,
			struct seg_rep *out)
{
	/* Zeroed: a server membership adds meanwhile is not usable yet. */
	int usable[STORE_MAX_SERVERS] = { 0 }, exclude[STORE_MAX_REPLICAS], nex = 0, pick;
	unsigned cursor;

	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (reps[r].server >= 0)
			exclude[nex++] = reps[r].server;
	for (int i = 0; i < s->nservers; i++)
		usable[i] = srv_placeable(&s->srv[i]);
	for (int attempt = 0; attempt < s->nservers; attempt++) {
		struct qreq *q = &io->reqs[0];

		pthread_mutex_lock(&s->lock);
		cursor = s->place_cursor++;
		pthread_mutex_unlock(&s->lock);
		if (place_pick_hinted(usable, s->nservers, 1, &cursor, exclude, nex,
				      &s->hints, &pick) != 1)
			return -ENOSPC;
		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_ALLOC;
		q->req.arg = s->seg_size;
		req_submit(s, io, q, pick);
		waiter_wait(&io->w);
		if (q->status == 0 && q->req.rep.alloc.size >= s->seg_size) {
			out->server = pick;
			out->remote_id = q->req.rep.alloc.seg_id;
			out->boot = boot_tag(q->boot);
			return 0;
		}
		server_failed(s, pick, q->status ? q->status : -EPROTO, "alloc for repair");
		usable[pick] = 0;
	}
	return -ENOSPC;
}

static int write_range(struct store *s, struct ioctx *io, const struct seg_rep *to,
		       uint32_t off, const void *buf, uint32_t len)
{
	int rc = write_copy_sync(s, io, to, off, buf, len);

	if (rc < 0)
		server_failed(s, to->server, rc, "write for repair");
	return rc;
}

/* Copy the segment to the target from a replica whose records verify,
 * so a damaged copy is not what gets multiplied; only when none scans
 * clean (a hole, or damage everywhere) are raw bytes copied. */
int repair_copy(struct store *s, struct ioctx *io, uint32_t idx,
			const struct seg_rep *reps, const struct seg_rep *to)
{
	uint8_t *buf = s->maint_seg_buf;
	uint32_t used;
	int rc = seg_load(s, idx, &used);

	if (rc == -EIO) {
		for (int r = 0; r < STORE_MAX_REPLICAS && rc < 0; r++)
			if (reps[r].server >= 0 && srv_up(&s->srv[reps[r].server]) &&
			    !rep_stale(s, &reps[r]))
				rc = seg_read_range(s, io, &reps[r], 0, used, buf);
		if (rc < 0)
			return rc;
	}
	for (uint32_t off = 0; off < used; ) {
		uint32_t n = used - off > FM_MAX_IO ? FM_MAX_IO : used - off;

		rc = write_range(s, io, to, off, buf + off, n);
		if (rc < 0)
			return rc;
		off += n;
	}
	return 0;
}

int repair_run(struct store *s)
{
	struct ioctx *io = &s->maint_io;
	struct seg_rep reps[STORE_MAX_REPLICAS], to;
	uint32_t idx;
	int rc, live;

	if (!find_victim(s, &idx))
		return 0;
	memset(&to, 0, sizeof(to));
	pthread_mutex_lock(&s->lock);
	memcpy(reps, s->segs[idx].rep, sizeof(reps));
	pthread_mutex_unlock(&s->lock);
	rc = repair_alloc_target(s, io, reps, &to);
	if (rc < 0)
		return 0;
	rc = repair_copy(s, io, idx, reps, &to);
	if (rc < 0) {
		log_warn("store: segment %u: repair copy failed: %s", idx, strerror(-rc));
		struct qreq *q = &io->reqs[0];
		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_FREE;
		q->req.seg_id = to.remote_id;
		req_submit(s, io, q, to.server);
		waiter_wait(&io->w);
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (s->segs[idx].rep[r].server < 0) {
			s->segs[idx].rep[r] = to;
			/* A move asked of the copy that was here is not this
			 * new copy's. */
			s->segs[idx].flags &= ~(SEGF_EVAC << r);
			break;
		}
	live = seg_live_replicas(s, &s->segs[idx]);
	if (live >= s->replicas)
		s->segs[idx].flags &= ~SEGF_DEGRADED;
	s->hdr->rereplicated_segments++;
	pthread_mutex_unlock(&s->lock);
	log_debug("store: segment %u: new copy on %s (%d of %d)", idx, s->srv[to.server].addr,
		 live, s->replicas);
	return 1;
}
