/* store_read.c — the read path: look pages up, fetch runs of adjacent
 * records from one healthy replica each, verify every record against
 * the map and its checksum or AEAD tag, fall back replica by replica,
 * rewrite a bad copy from a good one (sealed bytes, as stored).  Wrong
 * data is never returned: no good copy is -EIO.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "internal.h"

#define READ_RETRIES  3

/* Verify (or, sealed, open) a fetched record against the map entry and
 * decode it into out.  A sealed raw page is decrypted straight into
 * out; a compressed one through io->clear.  The algo byte chosen on is
 * authenticated with the rest: a changed one fails to open. */
static int record_decode(struct store *s, struct ioctx *io, const uint8_t *rec,
			 uint64_t page, const struct pm_entry *e, void *out)
{
	uint8_t *dst = rec[6] == FM_CODEC_NONE ? out : io->clear;
	const uint8_t *payload;
	struct rec_hdr h;
	int rc;

	if (rec_open(&s->rkey, rec, rec_len(pm_plen(e)), &h, dst, &payload) < 0 ||
	    h.page != page || (h.version & PM_VERSION_MASK) != pm_version(e) ||
	    h.plen != pm_plen(e)) {
		rc = -EBADMSG;
	} else if (payload == out) {
		rc = 0;
	} else {
		rc = fm_codec_decompress(&io->codec, (enum fm_codec_algo)h.algo,
					 payload, h.dlen, out, STORE_PAGE);
	}
	/* Nothing unverified is left where the caller's data goes. */
	if (rc < 0 && dst == out)
		memset(out, 0, STORE_PAGE);
	return rc;
}

static void readers_put(struct store *s, uint32_t seg)
{
	pthread_mutex_lock(&s->lock);
	if (--s->segs[seg].readers == 0)
		pthread_cond_broadcast(&s->seg_cv);
	pthread_mutex_unlock(&s->lock);
}

/* Look the page up and pin its segment against the cleaner. */
static void lookup_pin(struct store *s, uint64_t page, struct pm_entry *e,
		       struct seg_rep *reps)
{
	pthread_mutex_lock(&s->lock);
	*e = s->map[page];
	if (pm_state(e) == PM_STORED) {
		s->segs[e->seg].readers++;
		if (reps)
			memcpy(reps, s->segs[e->seg].rep, sizeof(s->segs[e->seg].rep));
	}
	pthread_mutex_unlock(&s->lock);
}

/* Rewrite a copy found bad with the verified bytes of a good one.  The
 * range was written once with exactly these bytes, so this cannot race
 * with anything that matters; the reader's pin keeps the segment. */
static void heal_copy(struct store *s, struct ioctx *io, const struct seg_rep *rep,
		      uint32_t off, const uint8_t *rec, uint32_t len)
{
	if (write_copy_sync(s, io, rep, off, rec, len) == 0)
		log_info("server %s: rewrote bad copy at offset %u", s->srv[rep->server].addr, off);
}

/* One page, every replica in turn (skipping the one the batched read of
 * entry *seen already found bad), re-reading the map if the record moved meanwhile.
 *
 * A copy that fails verification is never asked again (for this record),
 * so wrong data cannot come back and a page whose copies are all bad is
 * -EIO at once.  But when the copies left could not be read only because
 * of transport errors (a timeout on an overloaded host, a connection
 * being re-established), whole rounds are retried with a growing pause
 * until the request's deadline: a swap device's EIO kills a process. */
static int read_page_slow(struct store *s, struct ioctx *io, uint64_t page,
			  uint8_t *landing, void *out, const struct pm_entry *seen,
			  int skip_server, uint64_t deadline_ns)
{
	struct seg_rep reps[STORE_MAX_REPLICAS];
	struct pm_entry e, prev = *seen;
	uint32_t bad = 0, hard = 0;   /* servers: copy bad / failed for good */
	unsigned backoff_ms = 50;
	int moved = 0, rounds = 0, rc_wait = 0;

	if (skip_server >= 0)
		bad = 1u << skip_server;
	for (;; rounds++) {
		int transient = 0;

		lookup_pin(s, page, &e, reps);
		if (pm_state(&e) != PM_STORED) {
			memset(out, 0, STORE_PAGE);
			return 0;
		}
		/* The record moved (cleaner, repair) since it was last read:
		 * what we knew was about the old copies. */
		if (memcmp(&prev, &e, sizeof(e)))
			bad = hard = 0;
		prev = e;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
			int rc;

			if (reps[r].server < 0 ||
			    ((bad | hard) & (1u << reps[r].server)))
				continue;
			rc = seg_read_range(s, io, &reps[r], e.off, rec_len(pm_plen(&e)), landing);
			if (rc == -ENOENT)
				seg_drop_replica(s, e.seg, reps[r].server);
			if (rc < 0) {
				if (is_transient_error(rc))
					transient = 1;
				else
					hard |= 1u << reps[r].server;
				continue;
			}
			if (record_decode(s, io, landing, page, &e, out) == 0) {
				for (int b = 0; b < STORE_MAX_REPLICAS; b++)
					if (reps[b].server >= 0 &&
					    (bad & (1u << reps[b].server)))
						heal_copy(s, io, &reps[b], e.off, landing,
							  rec_len(pm_plen(&e)));
				readers_put(s, e.seg);
				if (rounds)
					log_info("store: page %llu: read after %d retry round(s)",
						 (unsigned long long)page, rounds);
				return 0;
			}
			bad |= 1u << reps[r].server;
			count_bad_copy(s);
			atomic_add64(&s->srv[reps[r].server].errors, 1);
			log_warn("server %s: page %llu: %s in segment %u offset %u",
				 s->srv[reps[r].server].addr, (unsigned long long)page,
				 bad_copy_text(s), e.seg, e.off);
		}
		readers_put(s, e.seg);
		pthread_mutex_lock(&s->lock);
		struct pm_entry again = s->map[page];
		pthread_mutex_unlock(&s->lock);
		if (memcmp(&again, &e, sizeof(e)) && ++moved < READ_RETRIES)
			continue;
		if (!transient)
			break;
		rc_wait = io_retry_wait(s, deadline_ns, &backoff_ms);
		if (rc_wait < 0)
			break;
	}
	log_err("store: page %llu: no good copy left%s", (unsigned long long)page,
		rc_wait == -ETIMEDOUT ? " (replicas unreachable until the retry deadline)" :
		rc_wait == -ECANCELED ? " (store closing)" : "");
	return -EIO;
}

/* First replica that is up; -1 when none is. */
static int pick_replica(struct store *s, const struct seg_rep *reps)
{
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (reps[r].server >= 0 && srv_up(&s->srv[reps[r].server]))
			return r;
	return -1;
}

/* Issue one READ per run of records adjacent in the same segment. */
static void read_submit(struct store *s, struct ioctx *io, unsigned n, unsigned *nreq)
{
	uint32_t pos = 0;

	for (unsigned i = 0; i < n; ) {
		struct page_io *p = &io->pio[i];
		struct seg_rep reps[STORE_MAX_REPLICAS];
		unsigned j = i + 1;
		uint32_t len;
		int r;

		if (pm_state(&p->e) != PM_STORED) {
			i++;
			continue;
		}
		len = rec_len(pm_plen(&p->e));
		while (j < n && pm_state(&io->pio[j].e) == PM_STORED &&
		       io->pio[j].e.seg == p->e.seg &&
		       io->pio[j].e.off == p->e.off + len &&
		       len + rec_len(pm_plen(&io->pio[j].e)) <= FM_MAX_IO)
			len += rec_len(pm_plen(&io->pio[j++].e));
		pthread_mutex_lock(&s->lock);
		memcpy(reps, s->segs[p->e.seg].rep, sizeof(reps));
		pthread_mutex_unlock(&s->lock);
		r = pick_replica(s, reps);
		for (unsigned k = i; k < j; k++) {
			io->pio[k].rec_off = pos + (io->pio[k].e.off - p->e.off);
			io->pio[k].seg_off = (uint32_t)*nreq;  /* slot of its run */
		}
		struct qreq *q = &io->reqs[(*nreq)++];
		memset(&q->req, 0, sizeof(q->req));
		q->req.op = FM_OP_READ;
		q->req.seg_id = r >= 0 ? reps[r].remote_id : 0;
		q->req.offset = p->e.off;
		q->req.len = len;
		q->req.buf = io->buf + pos;
		if (r >= 0) {
			req_submit(s, io, q, reps[r].server);
		} else {
			q->status = -ENOTCONN;
			q->server = -1;
		}
		pos += len;
		i = j;
	}
}

int store_read(struct store *s, int queue, uint64_t off, uint32_t len, void *buf)
{
	uint64_t first = off / STORE_PAGE;
	unsigned n, nreq = 0;
	struct ioctx *io;
	uint64_t deadline;
	int rc = 0;

	rc = io_check_range(s, queue, off, len, s->max_io);
	if (rc < 0)
		return rc;
	io = &s->q[queue];
	n = len / STORE_PAGE;
	deadline = io_deadline_ns(s);
	pthread_mutex_lock(&io->lock);
	for (unsigned i = 0; i < n; i++)
		lookup_pin(s, first + i, &io->pio[i].e, NULL);
	read_submit(s, io, n, &nreq);
	waiter_wait(&io->w);
	/* Retries below reuse request slots: take the results out first. */
	for (unsigned i = 0; i < n; i++)
		if (pm_state(&io->pio[i].e) == PM_STORED) {
			io->pio[i].status = io->reqs[io->pio[i].seg_off].status;
			io->pio[i].server = io->reqs[io->pio[i].seg_off].server;
		}
	for (unsigned i = 0; i < n; i++) {
		struct page_io *p = &io->pio[i];
		uint8_t *out = (uint8_t *)buf + (size_t)i * STORE_PAGE;
		int r;

		if (pm_state(&p->e) != PM_STORED) {
			memset(out, 0, STORE_PAGE);
			continue;
		}
		if (p->status == 0 &&
		    record_decode(s, io, io->buf + p->rec_off, first + i, &p->e, out) == 0) {
			readers_put(s, p->e.seg);
			continue;
		}
		if (p->status == 0) {
			count_bad_copy(s);
			atomic_add64(&s->srv[p->server].errors, 1);
			log_warn("server %s: page %llu: %s in segment %u offset %u",
				 s->srv[p->server].addr, (unsigned long long)(first + i),
				 bad_copy_text(s), p->e.seg, p->e.off);
		} else if (p->server >= 0) {
			server_failed(s, p->server, p->status, "read");
			if (p->status == -ENOENT)  /* server lost it (restart) */
				seg_drop_replica(s, p->e.seg, p->server);
		}
		readers_put(s, p->e.seg);
		r = read_page_slow(s, io, first + i, io->buf + io->buf_len, out,
				   &p->e, p->status == 0 ? p->server : -1, deadline);
		if (r < 0)
			rc = r;
	}
	pthread_mutex_unlock(&io->lock);
	atomic_add64(&s->reads, 1);
	if (rc < 0)
		atomic_add64(&s->read_errors, 1);
	return rc;
}
