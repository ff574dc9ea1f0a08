/* nbd_store.h — the store behind the NBD server: the one piece of glue
 * that `serve` and the kernel-NBD frontend share.  Reads and writes are
 * timed into histograms (for --metrics); each connection's loop gets its
 * own memserver connections (store_loop_attach). */
#ifndef FARMEM_NBD_STORE_H
#define FARMEM_NBD_STORE_H

#include "metrics_text.h"
#include "nbd.h"

struct store;

struct nbd_store_glue {
	struct store *st;
	struct metrics_hist lat_read, lat_write;
};

/* Fill be so the NBD server calls the store through g (g must outlive
 * the server); requests are split at max_io. */
void nbd_store_backend(struct nbd_store_glue *g, struct store *st,
		       uint32_t max_io, struct nbd_backend *be);

#endif
