/* nbd_store.c — the store as an NBD backend (nbd_store.h). */
#include "nbd_store.h"

#include <string.h>

#include "store/store.h"

static int be_read(void *ctx, int q, uint64_t off, uint32_t len, void *buf)
{
	struct nbd_store_glue *g = ctx;
	uint64_t t0 = metrics_now_ns();
	int rc = store_read(g->st, q, off, len, buf);

	metrics_hist_observe_ns(&g->lat_read, metrics_now_ns() - t0);
	return rc;
}

static int be_write(void *ctx, int q, uint64_t off, uint32_t len, const void *buf)
{
	struct nbd_store_glue *g = ctx;
	uint64_t t0 = metrics_now_ns();
	int rc = store_write(g->st, q, off, len, buf);

	metrics_hist_observe_ns(&g->lat_write, metrics_now_ns() - t0);
	return rc;
}

static int be_discard(void *ctx, int q, uint64_t off, uint64_t len)
{
	return store_discard(((struct nbd_store_glue *)ctx)->st, q, off, len);
}

static int be_flush(void *ctx, int q)
{
	return store_flush(((struct nbd_store_glue *)ctx)->st, q);
}

static int be_attach(void *ctx, struct fm_loop *loop, int first, int n)
{
	return store_loop_attach(((struct nbd_store_glue *)ctx)->st, loop, first, n);
}

static void be_detach(void *ctx, int first, int n)
{
	store_loop_detach(((struct nbd_store_glue *)ctx)->st, first, n);
}

void nbd_store_backend(struct nbd_store_glue *g, struct store *st,
		       uint32_t max_io, struct nbd_backend *be)
{
	g->st = st;
	memset(be, 0, sizeof(*be));
	be->ctx = g;
	be->size = store_size(st);
	be->max_io = max_io;
	be->read = be_read;
	be->write = be_write;
	be->discard = be_discard;
	be->flush = be_flush;
	be->attach = be_attach;
	be->detach = be_detach;
	be->extra_fibers = store_loop_fibers(st);
}
