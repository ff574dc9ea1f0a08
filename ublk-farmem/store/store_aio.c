/* store_aio.c — the store's asynchronous API (store.h): each submitted
 * I/O runs the synchronous path in a fiber of the caller's loop, on a
 * store queue of its own, and reports back through done().
 *
 * The fiber is what makes it asynchronous: where the I/O waits for a
 * memserver, it parks and the thread goes on with the next submission
 * or completion.  Nothing is allocated: the queues' buffers and the
 * fibers' stacks exist from store_open() and fm_loop_create().
 */
#include <errno.h>

#include "internal.h"

static int aio_run(struct store_aio *a)
{
	uint32_t len = (uint32_t)a->len;

	switch (a->op) {
	case STORE_OP_READ:
		return a->len > a->s->max_io ? -EINVAL :
		       store_read(a->s, a->queue, a->off, len, a->buf);
	case STORE_OP_WRITE:
		return a->len > a->s->max_io ? -EINVAL :
		       store_write(a->s, a->queue, a->off, len, a->buf);
	case STORE_OP_DISCARD:
		return store_discard(a->s, a->queue, a->off, a->len);
	case STORE_OP_FLUSH:
		return store_flush(a->s, a->queue);
	}
	return -EINVAL;
}

static void aio_fiber(void *arg)
{
	struct store_aio *a = arg;
	struct store_lconns *lc = a->lc;
	int rc = aio_run(a);

	/* The queue is free before done(), which may submit again. */
	lc->idle_q[lc->nidle++] = a->queue;
	a->done(a, rc);
}

/* The calling thread's loop, attached to this store. */
static struct store_lconns *current_lconns(struct store *s)
{
	struct fm_loop *loop = fm_loop_current();

	for (int q = 0; loop && q < s->nqueues; q++)
		if (s->q[q].lc && s->q[q].lc->loop == loop)
			return s->q[q].lc;
	return NULL;
}

int store_submit(struct store *s, struct store_aio *a)
{
	struct store_lconns *lc = current_lconns(s);
	int rc;

	if (!lc || !a->done)
		return -EINVAL;
	if (!lc->nidle)
		return -EBUSY;
	a->s = s;
	a->lc = lc;
	a->queue = lc->idle_q[--lc->nidle];
	rc = fm_loop_spawn(lc->loop, aio_fiber, a);
	if (rc < 0)
		lc->idle_q[lc->nidle++] = a->queue;
	return rc == -EAGAIN ? -EBUSY : rc;
}
