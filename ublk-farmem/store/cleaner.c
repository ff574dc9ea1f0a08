/* cleaner.c — compact sparse segments so remote memory tracks live data.
 *
 * Overwrites and discards leave dead records behind.  When the dead
 * bytes exceed a quarter of the live ones (and at least two segments'
 * worth), the cleaner takes the sealed segment with the lowest live
 * fraction, re-appends its still-live records to its own open segment
 * on every replica, switches each map entry only if it still points at
 * the old record, and frees the old segment once no read uses it.
 * Records move as they are: a sealed record's associated data holds no
 * location, so it opens the same in its new home (record.h).
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "internal.h"

/* Lock held. */
static int pressure(const struct store *s)
{
	uint64_t used = 0, live = 0;
	uint32_t nfree = 0;

	for (uint32_t i = 0; i < s->hdr->nsegs; i++) {
		const struct seg *g = &s->segs[i];

		if (g->state == SEG_FREE) {
			nfree++;
			continue;
		}
		used += g->used;
		live += g->live;
	}
	if (used <= live)
		return 0;
	/* Open segments belong to streams (a few), not to queues: an NBD
	 * export has one queue per worker, hundreds, and reserving two
	 * segments per queue kept a small export cleaning all the time. */
	if (nfree < 2 * (uint32_t)s->nstreams + 8 || s->clean_urgent)
		return 1;
	uint64_t slack = live / 4 > 2ull * s->seg_size ? live / 4 : 2ull * s->seg_size;
	return used - live > slack;
}

/* Lowest live fraction among sealed segments worth cleaning. */
static int pick_victim(struct store *s, uint32_t *out)
{
	int found = 0, press;
	double best = 2.0;

	pthread_mutex_lock(&s->lock);
	press = pressure(s);
	for (uint32_t i = 0; i < s->hdr->nsegs; i++) {
		const struct seg *g = &s->segs[i];
		double f;

		if (g->state != SEG_SEALED || (g->flags & SEGF_NOCLEAN) ||
		    seg_live_replicas(s, g) == 0)
			continue;
		/* Empty segments are free to drop, pressure or not. */
		if (g->live == 0) {
			*out = i;
			found = 1;
			break;
		}
		if (!press || g->used - g->live < s->seg_size / 8)
			continue;
		f = (double)g->live / (double)g->used;
		if (f < best) {
			best = f;
			*out = i;
			found = 1;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

/* Write the staged records, then move map entries still at the old home. */
static void flush_moves(struct store *s, uint32_t victim, unsigned n)
{
	struct ioctx *io = &s->maint_io;

	if (!n)
		return;
	records_append(s, io, n);
	pthread_mutex_lock(&s->lock);
	for (unsigned k = 0; k < n; k++) {
		struct page_io *p = &io->pio[k];
		struct pm_entry *e = &s->map[p->page];

		if (!p->ok || memcmp(e, &p->e, sizeof(*e)))
			continue;
		*e = pm_make(PM_STORED, p->seg, p->seg_off, pm_plen(&p->e), pm_version(&p->e));
		s->segs[victim].live -= p->rec_len;
		s->segs[p->seg].live += p->rec_len;
	}
	pthread_mutex_unlock(&s->lock);
	records_settle(s, io);
}

/* Is the record at off of victim what the map says page h->page is? */
static int record_live(struct store *s, uint32_t victim, uint32_t off,
		       const struct rec_hdr *h, struct pm_entry *e)
{
	int live;

	if (h->page >= s->npages)
		return 0;
	pthread_mutex_lock(&s->lock);
	*e = s->map[h->page];
	live = pm_state(e) == PM_STORED && e->seg == victim && e->off == off &&
	       pm_version(e) == (h->version & PM_VERSION_MASK);
	pthread_mutex_unlock(&s->lock);
	return live;
}

/* seg_load_opening()'s filter: open only what move_live() will move. */
static int record_worth_opening(struct store *s, uint32_t victim, uint32_t off,
				const struct rec_hdr *h)
{
	struct pm_entry e;

	return record_live(s, victim, off, h, &e);
}

static int move_live(struct store *s, uint32_t victim, uint32_t used)
{
	struct ioctx *io = &s->maint_io;
	unsigned n = 0;
	uint32_t pos = 0;

	for (uint32_t off = 0; off < used; ) {
		struct rec_hdr h;
		struct pm_entry e;
		uint32_t len;

		rec_parse(&s->rkey, s->maint_seg_buf + off, used - off, &h); /* live: opened by load */
		len = rec_len(h.plen);
		if (record_live(s, victim, off, &h, &e)) {
			if (n == io->npages || pos + len > io->buf_len) {
				flush_moves(s, victim, n);
				n = 0;
				pos = 0;
			}
			memcpy(io->buf + pos, s->maint_seg_buf + off, len);
			io->pio[n] = (struct page_io){ .rec_off = pos, .rec_len = len,
						       .version = h.version, .e = e,
						       .page = h.page };
			pos += len;
			n++;
		}
		off += len;
	}
	flush_moves(s, victim, n);
	return 0;
}

/* Fetch one live record from whichever replica has a good copy. */
static int fetch_record(struct store *s, uint32_t victim, const struct page_io *p,
			uint8_t *dst)
{
	struct seg_rep reps[STORE_MAX_REPLICAS];
	const uint8_t *payload;
	struct rec_hdr h;

	pthread_mutex_lock(&s->lock);
	memcpy(reps, s->segs[victim].rep, sizeof(reps));
	pthread_mutex_unlock(&s->lock);
	for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
		if (reps[r].server < 0 || !srv_up(&s->srv[reps[r].server]))
			continue;
		if (seg_read_range(s, &s->maint_io, &reps[r], p->e.off, p->rec_len, dst) < 0)
			continue;
		if (rec_open(&s->rkey, dst, p->rec_len, &h, s->maint_io.clear, &payload) == 0 &&
		    h.page == p->page &&
		    (h.version & PM_VERSION_MASK) == pm_version(&p->e) &&
		    h.plen == pm_plen(&p->e))
			return 0;
		count_bad_copy(s);
	}
	log_err("store: segment %u: page %llu has no good copy to move",
		victim, (unsigned long long)p->page);
	return -EIO;
}

/* Fallback when no replica scans clean end to end (a hole left by an
 * append that reached no replica, or damage somewhere on every copy):
 * take the live records from the page map instead, each verified on its
 * own.  -EIO when a live record has no good copy: the segment stays. */
static int move_live_by_map(struct store *s, uint32_t victim)
{
	struct ioctx *io = &s->maint_io;
	uint64_t page = 0;
	int lost = 0;

	while (page < s->npages) {
		unsigned n = 0;
		uint32_t pos = 0;

		pthread_mutex_lock(&s->lock);
		for (; page < s->npages && n < io->npages; page++) {
			const struct pm_entry *e = &s->map[page];

			if (pm_state(e) == PM_STORED && e->seg == victim)
				io->pio[n++] = (struct page_io){ .e = *e, .page = page,
					.rec_len = rec_len(pm_plen(e)),
					.version = pm_version(e) };
		}
		pthread_mutex_unlock(&s->lock);
		for (unsigned k = 0; k < n; k++) {
			struct page_io *p = &io->pio[k];

			if (fetch_record(s, victim, p, io->buf + pos) < 0) {
				p->rec_len = 0;   /* neither appended nor switched */
				lost++;
				continue;
			}
			p->rec_off = pos;
			pos += p->rec_len;
		}
		flush_moves(s, victim, n);
	}
	return lost ? -EIO : 0;
}

/* Wait (bounded) for reads pinned on the segment to finish. */
static int drain_readers(struct store *s, uint32_t victim)
{
	struct timespec ts;
	int ok;

	ts = fm_mono_abstime_in_ms(2000ull * (s->timeout_ms / 1000 + 1));
	pthread_mutex_lock(&s->lock);
	while (s->segs[victim].readers &&
	       pthread_cond_timedwait(&s->seg_cv, &s->lock, &ts) == 0)
		;
	ok = s->segs[victim].readers == 0 && s->segs[victim].live == 0;
	if (ok)
		s->segs[victim].state = SEG_FREEING;
	pthread_mutex_unlock(&s->lock);
	return ok;
}

int cleaner_wanted(struct store *s)
{
	int p;

	pthread_mutex_lock(&s->lock);
	p = pressure(s);
	pthread_mutex_unlock(&s->lock);
	return p;
}

/* Live bytes left in victim after a move.  Besides a move that found no
 * place, this is a walk that skipped a live record: a dead record's
 * header, never opened, was forged to span it (seg_load_opening). */
static uint32_t victim_live(struct store *s, uint32_t victim)
{
	uint32_t live;

	pthread_mutex_lock(&s->lock);
	live = s->segs[victim].live;
	pthread_mutex_unlock(&s->lock);
	return live;
}

int cleaner_run(struct store *s)
{
	uint32_t live;
	uint32_t victim, used;

	if (!pick_victim(s, &victim)) {
		pthread_mutex_lock(&s->lock);
		s->clean_urgent = 0;
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	live = victim_live(s, victim);   /* map_release() lowers it under the lock */
	if (live) {
		int moved = seg_load_opening(s, victim, &used, record_worth_opening) == 0;

		if (moved) {
			move_live(s, victim, used);
			moved = victim_live(s, victim) == 0;
		}
		if (!moved && move_live_by_map(s, victim) < 0) {
			pthread_mutex_lock(&s->lock);
			s->segs[victim].flags |= SEGF_NOCLEAN;
			pthread_mutex_unlock(&s->lock);
			return 0;
		}
	}
	/* A record that could not be moved (no segment or no replica
	 * took it) keeps the segment: it still holds the only copy.  The
	 * next pass tries again. */
	if (!drain_readers(s, victim))
		return 0;
	seg_free_remote(s, &s->maint_io, victim);
	pthread_mutex_lock(&s->lock);
	s->hdr->cleaned_segments++;
	pthread_mutex_unlock(&s->lock);
	return 1;
}
