/* store_io.c — the I/O path: write, read, discard, flush.
 *
 * Everything here uses the queue's preallocated context; nothing is
 * allocated.  The store lock is taken only for map lookups and updates.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_internal.h"

/* A compressed page must save at least this much to be stored
 * compressed; otherwise the raw page is cheaper to decode. */
#define RAW_THRESHOLD (STORE_PAGE - STORE_PAGE / 32)
#define READ_RETRIES  3

int ioctx_init(struct store *s, struct ioctx *io, int id)
{
	int rc;

	memset(io, 0, sizeof(*io));
	io->id = id;
	io->npages = s->max_io / STORE_PAGE;
	io->buf_len = (size_t)io->npages * REC_MAX_LEN;
	/* One spare record at the end: the landing area for one-page
	 * retries, which must not clobber records still to be decoded. */
	io->buf = malloc(io->buf_len + REC_MAX_LEN);
	io->pio = calloc(io->npages, sizeof(*io->pio));
	io->chunks = calloc(io->npages, sizeof(*io->chunks));
	io->nreqs = io->npages * (unsigned)s->replicas + STORE_MAX_REPLICAS;
	io->reqs = calloc(io->nreqs, sizeof(*io->reqs));
	pthread_mutex_init(&io->lock, NULL);
	waiter_init(&io->w);
	waiter_init(&io->cw);
	if (!io->buf || !io->pio || !io->chunks || !io->reqs) {
		ioctx_fini(io);
		return -ENOMEM;
	}
	rc = fm_codec_init(&io->codec, (enum fm_codec_algo)s->cfg.compress, s->cfg.level);
	if (rc < 0) {
		ioctx_fini(io);
		return rc;
	}
	return 0;
}

void ioctx_fini(struct ioctx *io)
{
	fm_codec_fini(&io->codec);
	free(io->buf);
	free(io->pio);
	free(io->chunks);
	free(io->reqs);
	pthread_mutex_destroy(&io->lock);
	waiter_destroy(&io->w);
	waiter_destroy(&io->cw);
	memset(io, 0, sizeof(*io));
}

static int check_range(struct store *s, int queue, uint64_t off, uint64_t len,
		       uint64_t maxlen)
{
	if (queue < 0 || queue >= s->nqueues)
		return -EINVAL;
	if (off % STORE_PAGE || len % STORE_PAGE || len > maxlen ||
	    off > s->cfg.size || len > s->cfg.size - off)
		return -EINVAL;
	return 0;
}

static int page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (unsigned i = 0; i < STORE_PAGE / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

/* Compress and frame every non-zero page into the staging buffer. */
static void encode_pages(struct store *s, struct ioctx *io, uint64_t first,
			 unsigned n, const uint8_t *buf)
{
	uint64_t ver = __atomic_fetch_add(&s->hdr->next_version, n, __ATOMIC_RELAXED);
	uint32_t pos = 0;

	for (unsigned i = 0; i < n; i++) {
		const uint8_t *page = buf + (size_t)i * STORE_PAGE;
		struct page_io *p = &io->pio[i];
		uint8_t *payload = io->buf + pos + REC_HDR_SIZE;
		uint8_t algo = FM_CODEC_NONE;
		ssize_t c = 0;

		p->version = ver + i;
		p->ok = 0;
		p->rec_off = pos;
		p->rec_len = 0;
		if (page_is_zero(page)) {
			p->ok = 1;
			continue;
		}
		if (io->codec.algo != FM_CODEC_NONE)
			c = fm_codec_compress(&io->codec, page, STORE_PAGE, payload, RAW_THRESHOLD);
		if (c > 0) {
			algo = (uint8_t)io->codec.algo;
		} else {
			memcpy(payload, page, STORE_PAGE);
			c = STORE_PAGE;
		}
		p->rec_len = rec_seal(io->buf + pos, first + i, p->version, algo, (uint16_t)c);
		pos += p->rec_len;
	}
}

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
 * took it (every replica that failed is dropped from the segment, so
 * "every live replica has it" holds). */
static void chunks_reap(struct store *s, struct ioctx *io, int nchunks)
{
	waiter_wait(&io->w);
	for (int k = 0; k < nchunks; k++) {
		struct wchunk *c = &io->chunks[k];
		int good = 0;

		for (int j = 0; j < c->nreq; j++) {
			struct qreq *q = &io->reqs[c->req0 + j];

			if (q->status == 0) {
				good++;
				continue;
			}
			server_failed(s, q->server, q->status, "write");
			seg_drop_replica(s, c->seg, q->server);
		}
		for (int i = c->first; i <= c->last; i++)
			if (io->pio[i].rec_len && !io->pio[i].ok) {
				io->pio[i].ok = good > 0;
				io->pio[i].seg = c->seg;
				io->pio[i].seg_off = c->seg_off +
					(io->pio[i].rec_off - c->buf_off);
			}
		seg_write_done(s, c->seg);
	}
}

/* Append every not-yet-written record: runs of records that fit the
 * stream's open segment become one WRITE per replica, all in flight at
 * once, even across a segment change. */
int records_append(struct store *s, struct ioctx *io, unsigned n)
{
	unsigned nreq = 0;
	int nchunks = 0, rc = 0;

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

/* Point the map at the new records; a page whose entry already carries
 * a newer version (a later write or discard finished first) keeps it. */
static void map_apply(struct store *s, struct ioctx *io, uint64_t first, unsigned n)
{
	struct state_hdr *h = s->hdr;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < n; i++) {
		struct page_io *p = &io->pio[i];
		struct pm_entry *e = &s->map[first + i];

		if (!p->ok || !pm_newer(e, p->version))
			continue;
		map_release(s, e);
		if (!p->rec_len) {
			*e = pm_make(PM_ZERO, 0, 0, 0, p->version);
			h->zero_pages++;
			continue;
		}
		*e = pm_make(PM_STORED, p->seg, p->seg_off, p->rec_len - REC_HDR_SIZE, p->version);
		s->segs[p->seg].live += p->rec_len;
		h->pages_stored++;
		h->bytes_stored += p->rec_len;
	}
	pthread_mutex_unlock(&s->lock);
}

int store_write(struct store *s, int queue, uint64_t off, uint32_t len, const void *buf)
{
	struct ioctx *io;
	unsigned n;
	int rc;

	rc = check_range(s, queue, off, len, s->max_io);
	if (rc < 0)
		return rc;
	io = &s->q[queue];
	n = len / STORE_PAGE;
	pthread_mutex_lock(&io->lock);
	encode_pages(s, io, off / STORE_PAGE, n, buf);
	for (int attempt = 0; attempt < 3; attempt++) {
		rc = records_append(s, io, n);
		if (rc < 0)
			break;
		rc = 0;
		for (unsigned i = 0; i < n; i++)
			if (!io->pio[i].ok)
				rc = -EIO;
		if (rc == 0)
			break;
		/* Some chunk reached no replica: its failed replicas were
		 * dropped, so the retry appends to a fresh segment placed on
		 * servers that are still up. */
	}
	map_apply(s, io, off / STORE_PAGE, n);
	pthread_mutex_unlock(&io->lock);
	atomic_add64(&s->writes, 1);
	if (rc < 0) {
		atomic_add64(&s->write_errors, 1);
		log_err("store: write %llu+%u: %s", (unsigned long long)off, len, strerror(-rc));
	}
	return rc;
}

/* Verify a fetched record against the map entry and decode it. */
static int record_decode(struct ioctx *io, const uint8_t *rec, uint64_t page,
			 const struct pm_entry *e, void *out)
{
	struct rec_hdr h;

	if (rec_check(rec, rec_len(pm_plen(e)), &h) < 0 || h.page != page ||
	    (h.version & PM_VERSION_MASK) != pm_version(e) || h.plen != pm_plen(e))
		return -EBADMSG;
	return fm_codec_decompress(&io->codec, (enum fm_codec_algo)h.algo,
				   rec + REC_HDR_SIZE, h.plen, out, STORE_PAGE);
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
	struct qreq *q = &io->reqs[0];

	memset(&q->req, 0, sizeof(q->req));
	q->iov.iov_base = (void *)rec;
	q->iov.iov_len = len;
	q->req.op = FM_OP_WRITE;
	q->req.seg_id = rep->remote_id;
	q->req.offset = off;
	q->req.len = len;
	q->req.iov = &q->iov;
	q->req.iovcnt = 1;
	req_submit(s, io, q, rep->server);
	waiter_wait(&io->w);
	if (q->status == 0)
		log_info("server %s: rewrote bad copy at offset %u", s->srv[rep->server].addr, off);
}

/* One page, every replica in turn (skipping the one the batched read
 * already found bad), re-reading the map if the record moved meanwhile. */
static int read_page_slow(struct store *s, struct ioctx *io, uint64_t page,
			  uint8_t *landing, void *out, int skip_server)
{
	struct seg_rep reps[STORE_MAX_REPLICAS];
	struct pm_entry e, again;

	for (int tries = 0; tries < READ_RETRIES; tries++) {
		unsigned bad = 0;

		lookup_pin(s, page, &e, reps);
		if (pm_state(&e) != PM_STORED) {
			memset(out, 0, STORE_PAGE);
			return 0;
		}
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			if (reps[r].server >= 0 && reps[r].server == skip_server)
				bad |= 1u << r;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
			int rc;

			if (reps[r].server < 0 || reps[r].server == skip_server)
				continue;
			rc = seg_read_range(s, io, &reps[r], e.off, rec_len(pm_plen(&e)), landing);
			if (rc == -ENOENT)
				seg_drop_replica(s, e.seg, reps[r].server);
			if (rc < 0)
				continue;
			if (record_decode(io, landing, page, &e, out) == 0) {
				for (int b = 0; b < STORE_MAX_REPLICAS; b++)
					if (bad & (1u << b))
						heal_copy(s, io, &reps[b], e.off, landing,
							  rec_len(pm_plen(&e)));
				readers_put(s, e.seg);
				return 0;
			}
			bad |= 1u << r;
			atomic_add64(&s->hdr->checksum_errors, 1);
			atomic_add64(&s->srv[reps[r].server].errors, 1);
			log_warn("server %s: page %llu: bad copy in segment %u offset %u",
				 s->srv[reps[r].server].addr, (unsigned long long)page,
				 e.seg, e.off);
		}
		readers_put(s, e.seg);
		skip_server = -1;
		pthread_mutex_lock(&s->lock);
		again = s->map[page];
		pthread_mutex_unlock(&s->lock);
		if (!memcmp(&again, &e, sizeof(e)))
			break;
	}
	log_err("store: page %llu: no good copy left", (unsigned long long)page);
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
	int rc = 0;

	rc = check_range(s, queue, off, len, s->max_io);
	if (rc < 0)
		return rc;
	io = &s->q[queue];
	n = len / STORE_PAGE;
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
		    record_decode(io, io->buf + p->rec_off, first + i, &p->e, out) == 0) {
			readers_put(s, p->e.seg);
			continue;
		}
		if (p->status == 0) {
			atomic_add64(&s->hdr->checksum_errors, 1);
			atomic_add64(&s->srv[p->server].errors, 1);
			log_warn("server %s: page %llu: bad copy in segment %u offset %u",
				 s->srv[p->server].addr, (unsigned long long)(first + i),
				 p->e.seg, p->e.off);
		} else if (p->server >= 0) {
			server_failed(s, p->server, p->status, "read");
			if (p->status == -ENOENT)  /* server lost it (restart) */
				seg_drop_replica(s, p->e.seg, p->server);
		}
		readers_put(s, p->e.seg);
		r = read_page_slow(s, io, first + i, io->buf + io->buf_len, out,
				   p->status == 0 ? p->server : -1);
		if (r < 0)
			rc = r;
	}
	pthread_mutex_unlock(&io->lock);
	atomic_add64(&s->reads, 1);
	if (rc < 0)
		atomic_add64(&s->read_errors, 1);
	return rc;
}

int store_discard(struct store *s, int queue, uint64_t off, uint64_t len)
{
	uint64_t first = off / STORE_PAGE, n = len / STORE_PAGE, ver;
	int rc;

	rc = check_range(s, queue, off, len, s->cfg.size);
	if (rc < 0)
		return rc;
	ver = __atomic_fetch_add(&s->hdr->next_version, 1, __ATOMIC_RELAXED);
	/* Batches keep the lock hold short on a whole-device discard. */
	for (uint64_t b = 0; b < n; b += 4096) {
		uint64_t end = b + 4096 < n ? b + 4096 : n;

		pthread_mutex_lock(&s->lock);
		for (uint64_t i = b; i < end; i++) {
			struct pm_entry *e = &s->map[first + i];

			if (!pm_newer(e, ver))
				continue;
			map_release(s, e);
			*e = pm_make(PM_UNMAPPED, 0, 0, 0, ver);
		}
		pthread_mutex_unlock(&s->lock);
	}
	atomic_add64(&s->discards, 1);
	if (n)
		maint_kick(s);
	return 0;
}

int store_flush(struct store *s, int queue)
{
	if (queue < 0 || queue >= s->nqueues)
		return -EINVAL;
	return 0;
}
