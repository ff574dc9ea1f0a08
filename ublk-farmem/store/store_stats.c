/* store_stats.c — what the store reports about itself: counters, the
 * segments on each server, membership.  Read by status, metrics and the
 * maintenance thread's log lines; it changes nothing. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static void stats_segments(struct store *s, struct store_stats *st)
{
	for (uint32_t i = 0; i < s->hdr->nsegs; i++) {
		const struct seg *g = &s->segs[i];
		int nrep = 0;

		if (g->state == SEG_FREE || g->state == SEG_ALLOCATING)
			continue;
		st->segments++;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
			if (g->rep[r].server < 0)
				continue;
			nrep++;
			st->server[g->rep[r].server].segments++;
			st->server[g->rep[r].server].bytes += s->seg_size;
		}
		st->bytes_remote += (uint64_t)nrep * s->seg_size;
		if (seg_live_replicas(s, g) < s->replicas)
			st->degraded_segments++;
	}
}

void store_get_stats(struct store *s, struct store_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->size = s->cfg.size;
	st->replicas = s->replicas;
	st->nservers = __atomic_load_n(&s->nservers, __ATOMIC_ACQUIRE);
	for (int i = 0; i < st->nservers; i++) {
		struct store_server_stats *v = &st->server[i];

		snprintf(v->addr, sizeof(v->addr), "%s", s->srv[i].addr);
		v->up = srv_up(&s->srv[i]);
		v->reads = atomic_get64(&s->srv[i].reads);
		v->writes = atomic_get64(&s->srv[i].writes);
		v->errors = atomic_get64(&s->srv[i].errors);
	}
	pthread_mutex_lock(&s->lock);
	st->pages_stored = s->hdr->pages_stored;
	st->zero_pages = s->hdr->zero_pages;
	st->bytes_logical = st->pages_stored * STORE_PAGE;
	st->bytes_stored = s->hdr->bytes_stored;
	st->cleaned_segments = s->hdr->cleaned_segments;
	st->rereplicated_segments = s->hdr->rereplicated_segments;
	stats_segments(s, st);
	pthread_mutex_unlock(&s->lock);
	st->checksum_errors = atomic_get64(&s->hdr->checksum_errors);
	st->auth_errors = atomic_get64(&s->hdr->auth_errors);
	st->encrypt = key_encrypt(s);
	st->reads = atomic_get64(&s->reads);
	st->writes = atomic_get64(&s->writes);
	st->discards = atomic_get64(&s->discards);
	st->read_errors = atomic_get64(&s->read_errors);
	st->write_errors = atomic_get64(&s->write_errors);
	for (int q = 0; q < s->nqueues; q++)
		st->incompressible_pages += __atomic_load_n(&s->q[q].codec.skipped,
							    __ATOMIC_RELAXED);
	membership_stats(s->mem, st);
}

uint64_t store_size(const struct store *s)
{
	return s->cfg.size;
}
