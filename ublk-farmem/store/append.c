/* append.c — appending encoded records to segments on every replica:
 * runs of records that fit the stream's open segment become one WRITE
 * per replica.  The write path appends fresh records, the cleaner moves
 * live ones; both come here, so the cleaner does not reach into the
 * write path. */
#include <errno.h>
#include <string.h>

#include "internal.h"

static void chunk_submit(struct store *s, struct ioctx *io, struct wchunk *c,
			 unsigned *nreq)
{
	struct seg_rep reps[STORE_MAX_REPLICAS];

	pthread_mutex_lock(&s->lock);
	memcpy(reps, s->segs[c->seg].rep, sizeof(reps));
	pthread_mutex_unlock(&s->lock);
	c->req0 = (int)*nreq;
	c->nreq = 0;
	for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
		if (reps[r].server < 0)
			continue;
		struct qreq *q = &io->reqs[(*nreq)++];

		memset(&q->req, 0, sizeof(q->req));
		q->iov.iov_base = io->buf + c->buf_off;
		q->iov.iov_len = c->len;
		q->req.op = FM_OP_WRITE;
		q->req.seg_id = reps[r].remote_id;
		q->req.offset = c->seg_off;
		q->req.len = c->len;
		q->req.iov = &q->iov;
		q->req.iovcnt = 1;
		c->nreq++;
		req_submit(s, io, q, reps[r].server);
	}
}

/* Wait for every chunk; a record is written when at least one replica
 * took it (a replica that failed it is dropped from the segment, so
 * "every live replica has it" holds). */
static void chunks_reap(struct store *s, struct ioctx *io, int nchunks)
{
	waiter_wait(&io->w);
	for (int k = 0; k < nchunks; k++) {
		struct wchunk *c = &io->chunks[k];
		int good = 0, flaky = 0;

		for (int j = 0; j < c->nreq; j++) {
			if (io->reqs[c->req0 + j].status == 0)
				good++;
			else if (is_transient_error(io->reqs[c->req0 + j].status))
				flaky++;
		}
		/* Reached no replica, each failing only on its transport: the
		 * caller may try again once they are back.  (No replica at all
		 * left in the segment is not that.) */
		if (!good && c->nreq && flaky == c->nreq)
			io->transient = 1;
		for (int j = 0; j < c->nreq; j++) {
			struct qreq *q = &io->reqs[c->req0 + j];

			if (q->status == 0)
				continue;
			server_failed(s, q->server, q->status, "write");
			/* A copy that missed records others have is dropped;
			 * but when every copy missed them, each still holds
			 * everything acknowledged before: keep them all, and
			 * stop appending to the segment. */
			if (good)
				seg_drop_replica(s, c->seg, q->server);
			else
				seg_retire(s, c->seg);
		}
		for (int i = c->first; i <= c->last; i++)
			if (io->pio[i].rec_len && !io->pio[i].ok) {
				io->pio[i].ok = good > 0;
				io->pio[i].seg = c->seg;
				io->pio[i].seg_off = c->seg_off +
					(io->pio[i].rec_off - c->buf_off);
			}
		/* Records this chunk wrote reach the map only after the
		 * caller applies them: until then the segment looks empty,
		 * so it must not seal (and be freed as such) yet.  A chunk
		 * that wrote nothing holds nothing.  Each held chunk made
		 * a record ok for good, so at most npages are held. */
		if (good && io->nheld < io->npages)
			io->held[io->nheld++] = c->seg;
		else
			seg_write_done(s, c->seg);
	}
}

void records_settle(struct store *s, struct ioctx *io)
{
	for (unsigned k = 0; k < io->nheld; k++)
		seg_write_done(s, io->held[k]);
	io->nheld = 0;
}

/* Append every not-yet-written record: runs of records that fit the
 * stream's open segment become one WRITE per replica, all in flight at
 * once, even across a segment change. */
int records_append(struct store *s, struct ioctx *io, unsigned n)
{
	unsigned nreq = 0;
	int nchunks = 0, rc = 0;

	io->transient = 0;
	for (unsigned i = 0; i < n; ) {
		struct wchunk *c;

		if (!io->pio[i].rec_len || io->pio[i].ok) {
			i++;
			continue;
		}
		c = &io->chunks[nchunks];
		rc = stream_reserve(s, io, i, n, c);
		if (rc < 0)
			break;
		nchunks++;
		chunk_submit(s, io, c, &nreq);
		i = (unsigned)c->last + 1;
	}
	if (nchunks)
		chunks_reap(s, io, nchunks);
	return rc;
}
