/* stream.c — append streams: where queues' records go.
 *
 * Queues share a few streams (by default one per server, at most one per
 * queue) so the number of partly filled open segments, and so remote
 * memory not yet holding data, stays small however many queues there
 * are.  Appends reserve space under the store lock and are written in
 * parallel; a segment that fills becomes FULL and is sealed when its
 * last append lands, so cleaner and repair only ever see complete ones.
 */
#include <errno.h>

#include "log.h"
#include "internal.h"

void stream_init(struct stream *st)
{
	fm_mutex_init(&st->lock);
	st->open_seg = SEG_NONE;
}

void stream_fini(struct stream *st)
{
	fm_mutex_destroy(&st->lock);
}

/* Is the open segment still fit for appends?  s->lock held. */
static int seg_appendable(const struct store *s, const struct seg *g)
{
	if (g->state != SEG_OPEN || (g->flags & SEGF_DEGRADED))
		return 0;
	for (int r = 0; r < STORE_MAX_REPLICAS; r++)
		if (g->rep[r].server >= 0 && !srv_up(&s->srv[g->rep[r].server]))
			return 0;
	return 1;
}

int stream_reserve(struct store *s, struct ioctx *io, unsigned first, unsigned n,
		   struct wchunk *c)
{
	struct stream *st = io->st;
	uint32_t need = io->pio[first].rec_len;
	int rc;

	fm_mutex_lock(&st->lock);
	for (int tries = 0; ; tries++) {
		uint32_t idx = st->open_seg;

		if (idx != SEG_NONE) {
			pthread_mutex_lock(&s->lock);
			struct seg *g = &s->segs[idx];
			if (seg_appendable(s, g) && g->used + need <= s->seg_size) {
				uint32_t room = s->seg_size - g->used, len = 0;
				unsigned k = first;

				if (room > FM_MAX_IO)
					room = FM_MAX_IO;
				/* Whole records, contiguous in the staging buffer. */
				for (; k < n; k++) {
					const struct page_io *p = &io->pio[k];

					if (!p->rec_len || p->ok)
						continue;
					if (len + p->rec_len > room ||
					    p->rec_off != io->pio[first].rec_off + len)
						break;
					len += p->rec_len;
					c->last = (int)k;
				}
				c->seg = idx;
				c->seg_off = g->used;
				c->len = len;
				c->buf_off = io->pio[first].rec_off;
				c->first = (int)first;
				g->used += len;
				g->writers++;
				pthread_mutex_unlock(&s->lock);
				fm_mutex_unlock(&st->lock);
				return 0;
			}
			pthread_mutex_unlock(&s->lock);
			seg_retire(s, idx);
			st->open_seg = SEG_NONE;
		}
		if (tries >= 2)
			break;
		rc = seg_open(s, io, &idx);
		if (rc < 0) {
			fm_mutex_unlock(&st->lock);
			return rc;
		}
		st->open_seg = idx;
	}
	fm_mutex_unlock(&st->lock);
	log_err("store: no segment takes a %u-byte record", need);
	return -EIO;
}

void stream_retire_if(struct store *s, struct stream *st,
		      int (*pred)(const struct store *, const struct seg *), int wait)
{
	int retire;

	if (wait)
		fm_mutex_lock(&st->lock);
	else if (fm_mutex_trylock(&st->lock))
		return;
	if (st->open_seg != SEG_NONE) {
		pthread_mutex_lock(&s->lock);
		retire = !pred || !seg_appendable(s, &s->segs[st->open_seg]) ||
			 pred(s, &s->segs[st->open_seg]);
		pthread_mutex_unlock(&s->lock);
		if (retire) {
			seg_retire(s, st->open_seg);
			st->open_seg = SEG_NONE;
		}
	}
	fm_mutex_unlock(&st->lock);
}
