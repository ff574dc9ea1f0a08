/* metrics_pool.h — a memserver's statistics (struct fm_stat, the same
 * numbers `farmem-memserver --stat` shows) as Prometheus metrics.
 *
 * The memserver's event loop owns its counters and is single-threaded, so
 * the metrics thread never reads them directly: the loop publishes a
 * snapshot (a copy under a mutex, a few dozen bytes) and the provider
 * formats the latest one.
 */
#ifndef FARMEM_METRICS_POOL_H
#define FARMEM_METRICS_POOL_H

#include <pthread.h>

#include "metrics_text.h"
#include "protocol.h"

/* The elastic pool (memserver reserve/min-size, drain): what STAT does
 * not carry.  state indexes metrics_pool_states. */
struct metrics_pool_elastic {
	uint64_t size_max;       /* the configured size */
	uint64_t reserve;        /* 0: off */
	uint64_t host_avail;     /* as last read (0: not read) */
	uint64_t noticed;        /* segments clients were asked to move */
	uint64_t forced;         /* freed after a missed deadline */
	unsigned state;
};

#define METRICS_POOL_NSTATES 4
extern const char *const metrics_pool_states[METRICS_POOL_NSTATES];

struct metrics_pool_snap {
	pthread_mutex_t lock;
	struct fm_stat st;
	int valid;           /* 0 until the first publish */
	struct metrics_pool_elastic el;
	int el_valid;
};

void metrics_pool_snap_init(struct metrics_pool_snap *s);
void metrics_pool_snap_destroy(struct metrics_pool_snap *s);
/* From the event loop, e.g. once per loop iteration. */
void metrics_pool_publish(struct metrics_pool_snap *s, const struct fm_stat *st);
void metrics_pool_publish_elastic(struct metrics_pool_snap *s,
				  const struct metrics_pool_elastic *el);
/* Formats one fm_stat (farmem_memserver_* families). */
void metrics_pool_write(struct metrics_buf *b, const struct fm_stat *st);
/* metrics_provider_fn for metrics_server_start(); arg is the snapshot. */
void metrics_pool_provide(struct metrics_buf *b, void *snap);

#endif
