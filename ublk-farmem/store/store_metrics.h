/* store_metrics.h — a store's counters as Prometheus text over HTTP, for
 * `farmem-blk serve --metrics` and the device daemon's `[device] metrics`.
 *
 * The provider only reads counters the store keeps anyway
 * (store_get_stats), never a lock the I/O path holds for long.  A caller
 * that times its requests (serve: per NBD request) passes two latency
 * histograms; the device daemon passes none and the
 * farmem_blk_io_latency_seconds family is left out. */
#ifndef FARMEM_STORE_METRICS_H
#define FARMEM_STORE_METRICS_H

#include "metrics_http.h"

struct store;

struct store_metrics {
	struct store *st;
	/* Both NULL: no latency histogram family. */
	const struct metrics_hist *lat_read, *lat_write;
	const char *lat_help;    /* HELP text of the latency family */
};

/* metrics_provider_fn; arg is a struct store_metrics. */
void store_metrics_provide(struct metrics_buf *b, void *arg);

/* Starts the metrics server on listen_addr ("HOST:PORT") serving m, which
 * must outlive it.  0 or -errno (logged by metrics_server_start).  Stop
 * with metrics_server_stop() before the store is closed. */
int store_metrics_start(const char *listen_addr, struct store_metrics *m,
			struct metrics_server **out);

#endif
