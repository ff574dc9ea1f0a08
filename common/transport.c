/* transport.c — picks a transport for an address and dispatches to it.
 *
 * The transports themselves live in transport_<name>.c behind
 * fm_transport_ops; this file only chooses one and offers the blocking
 * convenience fm_conn_call() on top of the asynchronous interface.
 */
#include "transport.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>

#include "log.h"
#include "transport_rdma.h"

/* Every transport, by the address kind that selects it.  A new transport
 * is a new file plus one line here. */
static const struct {
	enum addr_kind kind;
	const struct fm_transport_ops *ops;
} transports[] = {
	{ ADDR_TCP,  &fm_transport_tcp },
	{ ADDR_RDMA, &fm_transport_rdma },
};

static const struct fm_transport_ops *ops_for(const struct fm_conn_params *p)
{
	char a[ADDR_HOST_MAX + 32];

	if (p->ops)
		return p->ops;
	for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++)
		if (transports[i].kind == p->addr.kind)
			return transports[i].ops;
	log_err("%s: not a memserver address (want tcp:// or rdma://)",
		addr_str(&p->addr, a, sizeof(a)));
	return NULL;
}

int fm_conn_open(const struct fm_conn_params *p, struct fm_conn **out)
{
	const struct fm_transport_ops *ops;

	*out = NULL;
	if (!p || (!p->secret && !p->identity))
		return -EINVAL;
	ops = ops_for(p);
	if (!ops)
		return -EINVAL;
	return ops->open(p, out);
}

int fm_conn_submit(struct fm_conn *c, struct fm_req *r)
{
	return c->ops->submit(c, r);
}

int fm_conn_is_up(struct fm_conn *c)
{
	return c->ops->is_up(c);
}

uint64_t fm_conn_boot_id(struct fm_conn *c)
{
	return c ? __atomic_load_n(&c->boot_id, __ATOMIC_ACQUIRE) : 0;
}

void fm_conn_close(struct fm_conn *c)
{
	if (c)
		c->ops->close(c);
}

/* fm_conn_call() borrows the request's done/priv while it waits; the
 * waiter lives on the caller's stack, so nothing is allocated. */
struct call_wait {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int done;
	int status;
};

static void call_done(struct fm_req *r, int status)
{
	struct call_wait *w = r->priv;

	pthread_mutex_lock(&w->lock);
	w->status = status;
	w->done = 1;
	/* Signal under the lock: the waiter may destroy w as soon as it
	 * sees done, so w must not be touched after the unlock. */
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->lock);
}

int fm_conn_call(struct fm_conn *c, struct fm_req *r)
{
	struct call_wait w = { .done = 0, .status = 0 };
	void (*user_done)(struct fm_req *, int) = r->done;
	void *user_priv = r->priv;
	int rc;

	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cv, NULL);
	r->done = call_done;
	r->priv = &w;
	rc = fm_conn_submit(c, r);
	if (rc == 0) {
		/* The transport guarantees done() (it enforces the request
		 * timeout itself), so this wait ends. */
		pthread_mutex_lock(&w.lock);
		while (!w.done)
			pthread_cond_wait(&w.cv, &w.lock);
		pthread_mutex_unlock(&w.lock);
		rc = w.status;
	}
	r->done = user_done;
	r->priv = user_priv;
	pthread_cond_destroy(&w.cv);
	pthread_mutex_destroy(&w.lock);
	return rc;
}
