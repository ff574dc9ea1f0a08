/* store_loop.c — a frontend loop's own connections to the servers.
 *
 * A reply that arrives on a shared connection is read by that
 * connection's receiver thread, which then has to wake the queue's
 * thread: two threads and a wake-up per remote request.  A loop that
 * owns its connections reads the reply itself, in a link fiber, and the
 * request's fiber runs on without the thread ever leaving.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "internal.h"
#include "record.h"

/* A link fiber per server, and one spare: a done() that submits again
 * runs while its own fiber is still busy. */
int store_loop_fibers(const struct store *s)
{
	return s->nservers + 1;
}

/* The longest READ a queue sends: a run of one request's records, each
 * at most a stored page with its header and tag.  Anything longer (a
 * segment's table, a repair's copy) takes the shared connection. */
static uint32_t loop_max_io(const struct store *s)
{
	uint64_t n = (uint64_t)(s->max_io / STORE_PAGE) * REC_MAX_LEN;

	return n < FM_MAX_IO ? (uint32_t)n : FM_MAX_IO;
}

/* A queue's own rdma connections (transport loop mode) are opt-in,
 * FARMEM_RDMA_QUEUE_CONNS=1: with them, recovery after a kill -9 of the
 * daemon over rdma:// between two guests hung in 2 of 14 runs (0 of 5
 * without), for a cause not found yet.  Without them a queue's rdma
 * requests complete on the shared connection's thread, as before. */
static int rdma_queue_conns(void)
{
	const char *v = getenv("FARMEM_RDMA_QUEUE_CONNS");

	return v && strcmp(v, "1") == 0;
}

static int queues_valid(const struct store *s, int first, int n)
{
	return first >= 0 && n > 0 && first + n <= s->nqueues;
}

int store_loop_attach(struct store *s, struct fm_loop *loop, int first, int n)
{
	struct store_lconns *lc;
	int opened = 0;

	if (!queues_valid(s, first, n))
		return -EINVAL;
	lc = calloc(1, sizeof(*lc));
	if (!lc)
		return -ENOMEM;
	lc->loop = loop;
	lc->first = first;
	lc->n = n;
	lc->max_io = loop_max_io(s);
	for (int i = 0; i < s->nservers; i++) {
		struct fm_conn_params p;

		if (s->cfg.transport)
			continue;   /* a test transport: no loop mode */
		if (s->srv[i].fa.kind == ADDR_RDMA && !rdma_queue_conns())
			continue;
		server_conn_params(s, i, &p);
		/* Only these queues' requests, plus slack for retries. */
		p.max_inflight = server_conn_slots(s, i, n);
		/* A queue's reads and writes: rdma then pins a fraction of
		 * what a connection for any request would. */
		p.max_io = lc->max_io;
		p.data_only = 1;
		p.loop = loop;
		/* The shared connection takes every NOTICE too: marking
		 * segments scans the table under the store's lock, work for
		 * maintenance, not for a queue's thread. */
		p.notice_cb = NULL;
		if (fm_conn_open(&p, &lc->conn[i]) == 0)
			opened++;
		else
			log_warn("server %s: queues %d-%d go through the shared "
				 "connection", s->srv[i].addr, first, first + n - 1);
	}
	for (int q = first; q < first + n; q++) {
		s->q[q].lc = lc;
		lc->idle_q[lc->nidle++] = first + n - 1 - (q - first);
	}
	log_debug("store: queues %d-%d: own connections to %d of %d servers",
		  first, first + n - 1, opened, s->nservers);
	return 0;
}

void store_loop_detach(struct store *s, int first, int n)
{
	struct store_lconns *lc;

	if (!queues_valid(s, first, n) || !(lc = s->q[first].lc))
		return;
	for (int q = first; q < first + n; q++)
		s->q[q].lc = NULL;
	for (int i = 0; i < s->nservers; i++)
		if (lc->conn[i])
			fm_conn_close(lc->conn[i]);
	free(lc);
}
