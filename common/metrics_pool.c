/* metrics_pool.c — farmem_memserver_* metrics from a published fm_stat. */
#include <stdio.h>
#include <string.h>

#include "chan.h"
#include "metrics_pool.h"

void metrics_pool_snap_init(struct metrics_pool_snap *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
}

void metrics_pool_snap_destroy(struct metrics_pool_snap *s)
{
	pthread_mutex_destroy(&s->lock);
}

void metrics_pool_publish(struct metrics_pool_snap *s, const struct fm_stat *st)
{
	pthread_mutex_lock(&s->lock);
	s->st = *st;
	s->valid = 1;
	pthread_mutex_unlock(&s->lock);
}

const char *const metrics_pool_states[METRICS_POOL_NSTATES] = {
	"full", "shrunk", "shrinking", "draining",
};

void metrics_pool_publish_elastic(struct metrics_pool_snap *s,
				  const struct metrics_pool_elastic *el)
{
	pthread_mutex_lock(&s->lock);
	s->el = *el;
	s->el_valid = 1;
	pthread_mutex_unlock(&s->lock);
}

static void gauge_u64(struct metrics_buf *b, const char *name,
		      const char *help, uint64_t v)
{
	metrics_family(b, name, "gauge", help);
	metrics_sample_u64(b, name, NULL, v);
}

void metrics_pool_write(struct metrics_buf *b, const struct fm_stat *st)
{
	gauge_u64(b, "farmem_memserver_pool_bytes",
		  "Size of the memory pool.", st->pool_bytes);
	gauge_u64(b, "farmem_memserver_pool_used_bytes",
		  "Pool bytes held by clients' segments.", st->used_bytes);
	gauge_u64(b, "farmem_memserver_pool_free_bytes",
		  "Pool bytes free for new segments.", st->free_bytes);
	gauge_u64(b, "farmem_memserver_pool_locked",
		  "1 when the pool is locked in memory (mlock).", st->locked);
	gauge_u64(b, "farmem_memserver_segments",
		  "Segments allocated, all devices.", st->segments);
	gauge_u64(b, "farmem_memserver_segment_max_bytes",
		  "Largest segment the server hands out.", st->segment_max);
	gauge_u64(b, "farmem_memserver_clients",
		  "Authenticated client connections.", st->clients);
	gauge_u64(b, "farmem_memserver_devices",
		  "Device identities holding segments.", st->devices);
	gauge_u64(b, "farmem_memserver_leased_devices",
		  "Devices without a connection whose segments are kept until their lease ends.",
		  st->leased);
	metrics_counter(b, "farmem_memserver_reads_total",
			"Read requests served.", st->reads);
	metrics_counter(b, "farmem_memserver_writes_total",
			"Write requests served.", st->writes);
	metrics_counter(b, "farmem_memserver_read_bytes_total",
			"Bytes read by clients.", st->bytes_read);
	metrics_counter(b, "farmem_memserver_written_bytes_total",
			"Bytes written by clients.", st->bytes_written);
	/* Process-wide and atomic (chan.c): safe to read from here. */
	metrics_counter(b, "farmem_memserver_frames_rejected_total",
			"Frames whose channel tag failed (forged, replayed, reordered); "
			"each closed its connection.", fm_chan_rejected());
}

/* One sample per state, 1 for the current one: a query can select on
 * the label without knowing numbers. */
static void write_elastic(struct metrics_buf *b, const struct metrics_pool_elastic *el)
{
	char label[32];

	gauge_u64(b, "farmem_memserver_pool_size_max_bytes",
		  "The pool's configured size (it grows back to this).", el->size_max);
	gauge_u64(b, "farmem_memserver_reserve_bytes",
		  "MemAvailable the memserver keeps on its host (0: off).", el->reserve);
	gauge_u64(b, "farmem_memserver_host_available_bytes",
		  "MemAvailable (or cgroup headroom, if smaller) as last read.",
		  el->host_avail);
	metrics_family(b, "farmem_memserver_pool_state", "gauge",
		       "1 for the pool's state: full, shrunk, shrinking or draining.");
	for (unsigned i = 0; i < METRICS_POOL_NSTATES; i++) {
		snprintf(label, sizeof(label), "state=\"%s\"", metrics_pool_states[i]);
		metrics_sample_u64(b, "farmem_memserver_pool_state", label, el->state == i);
	}
	metrics_counter(b, "farmem_memserver_segments_noticed_total",
			"Segments clients were asked to move away (shrinking).", el->noticed);
	metrics_counter(b, "farmem_memserver_segments_forced_total",
			"Noticed segments freed after their deadline passed.", el->forced);
}

void metrics_pool_provide(struct metrics_buf *b, void *arg)
{
	struct metrics_pool_snap *s = arg;
	struct metrics_pool_elastic el;
	struct fm_stat st;
	int valid, el_valid;

	pthread_mutex_lock(&s->lock);
	st = s->st;
	valid = s->valid;
	el = s->el;
	el_valid = s->el_valid;
	pthread_mutex_unlock(&s->lock);
	if (valid && el_valid)
		write_elastic(b, &el);
	/* Before the first publish there is nothing true to say; an empty
	 * scrape is valid and better than zeros that look like an empty
	 * pool. */
	if (valid)
		metrics_pool_write(b, &st);
}
