/* server_conn.c — the shared connection to each server: how every
 * connection to a server is opened, and (re)connecting the shared one.
 * store_open() connects at start, maint reconnects a lost one later;
 * both come here, so neither calls into the other. */
#include <string.h>

#include "log.h"
#include "store_internal.h"

void server_conn_params(struct store *s, int i, struct fm_conn_params *p)
{
	memset(p, 0, sizeof(*p));
	p->addr = s->srv[i].fa;
	p->secret = &s->cfg.secret;
	memcpy(p->uuid, s->cfg.uuid, FM_UUID_LEN);
	p->timeout_ms = s->timeout_ms;
	/* Every queue may have one request per page in flight to a server,
	 * plus the maintenance thread's. */
	p->max_inflight = (unsigned)(s->nqueues + 1) * (s->max_io / STORE_PAGE) + 16;
	p->reconnect = 1;
	p->ops = s->cfg.transport;
}

int server_connect(struct store *s, int i)
{
	struct store_server *v = &s->srv[i];
	struct fm_conn_params p;
	struct fm_conn *c;
	int rc;

	server_conn_params(s, i, &p);
	p.state_cb = store_server_state_cb;
	p.state_arg = v;
	rc = fm_conn_open(&p, &c);
	if (rc < 0) {
		log_warn("server %s: connect: %s", v->addr, strerror(-rc));
		return rc;
	}
	__atomic_store_n(&v->conn, c, __ATOMIC_RELEASE);
	__atomic_store_n(&v->up, 1, __ATOMIC_RELEASE);
	return 0;
}
