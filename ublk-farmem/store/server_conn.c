/* server_conn.c — the shared connection to each server: how every
 * connection to a server is opened, and (re)connecting the shared one.
 * store_open() connects at start, maint reconnects a lost one later;
 * both come here, so neither calls into the other.
 *
 * Also which run of a server a replica lives in: every replica records
 * the boot id its server had when it handed the segment out.  A
 * memserver that restarted has lost its pool, and its new segments may
 * reuse ids; a replica from an earlier boot is dropped (and so
 * re-replicated) rather than read, written or freed. */
#include <string.h>

#include "log.h"
#include "store_internal.h"

void server_conn_params(struct store *s, int i, struct fm_conn_params *p)
{
	memset(p, 0, sizeof(*p));
	p->addr = s->srv[i].fa;
	p->secret = &s->cfg.secret;
	if (s->cfg.identity.name[0])
		p->identity = &s->cfg.identity;
	memcpy(p->uuid, s->cfg.uuid, FM_UUID_LEN);
	p->timeout_ms = s->timeout_ms;
	/* Every queue may have one request per page in flight to a server,
	 * plus the maintenance thread's. */
	p->max_inflight = (unsigned)(s->nqueues + 1) * (s->max_io / STORE_PAGE) + 16;
	p->reconnect = 1;
	p->ops = s->cfg.transport;
	/* Every connection: a server may send its NOTICE on any of them. */
	p->notice_cb = evacuate_notice_cb;
	p->notice_arg = &s->srv[i];
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

uint32_t server_boot_tag(const struct store *s, int i)
{
	return boot_tag(fm_conn_boot_id(srv_conn(&s->srv[i])));
}

int rep_stale(const struct store *s, const struct seg_rep *r)
{
	uint32_t now;

	if (r->server < 0 || r->boot == 0)
		return 0;
	now = server_boot_tag(s, r->server);
	return now && now != r->boot;
}

uint32_t server_drop_stale(struct store *s, int i)
{
	uint32_t n = 0;

	for (uint32_t k = 0; k < s->hdr->nsegs; k++) {
		struct seg *g = &s->segs[k];

		if (g->state == SEG_FREE)
			continue;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++) {
			if (g->rep[r].server != i || !rep_stale(s, &g->rep[r]))
				continue;
			g->rep[r].server = -1;
			g->flags |= SEGF_DEGRADED;
			n++;
		}
	}
	return n;
}
