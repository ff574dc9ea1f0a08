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
#include <errno.h>
#include <string.h>

#include "checksum.h"
#include "log.h"
#include "transport_rdma.h"
#include "internal.h"

unsigned server_conn_slots(const struct store *s, int i, int queues)
{
	unsigned n = (unsigned)queues * (s->max_io / STORE_PAGE) + 16;

	/* Over rdma, bounce units bound what is in flight well below this. */
	if (s->srv[i].fa.kind == ADDR_RDMA && n > FM_RDMA_MAX_INFLIGHT)
		n = FM_RDMA_MAX_INFLIGHT;
	return n;
}

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
	p->max_inflight = server_conn_slots(s, i, s->nqueues + 1);
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

int server_find(const struct store *s, const char *addr)
{
	int n = __atomic_load_n(&s->nservers, __ATOMIC_ACQUIRE);

	for (int i = 0; i < n; i++)
		if (!strcmp(s->srv[i].addr, addr))
			return i;
	return -1;
}

int server_add(struct store *s, const struct fm_addr *fa)
{
	int i = s->nservers;      /* only membership appends: no race here */
	struct store_server *v;

	if (i >= STORE_MAX_SERVERS)
		return -ENOSPC;
	v = &s->srv[i];
	memset(v, 0, sizeof(*v));
	v->fa = *fa;
	v->s = s;
	v->idx = i;
	v->need_sweep = 1;
	addr_str(fa, v->addr, sizeof(v->addr));
	/* Connected before anyone sees it, so maint (which connects servers
	 * that have none) never races this; if it cannot be reached now,
	 * maint tries again later. */
	if (server_connect(s, i) < 0)
		v->retry_ns = fm_mono_ns() + 1000000000ull;
	pthread_mutex_lock(&s->lock);
	s->hdr->server_hash[i] = fm_xxh3(v->addr, strlen(v->addr));
	s->hdr->nservers = (uint32_t)i + 1;
	pthread_mutex_unlock(&s->lock);
	__atomic_store_n(&s->nservers, i + 1, __ATOMIC_RELEASE);
	maint_kick(s);
	return i;
}

/* Recover with etcd: the members come in any order and some may have
 * left, but a replica names its server by index.  Each index the state
 * file knows gets the member with that address hash back; an index
 * whose member is no longer registered gets a stand-in that is gone
 * (never connected, never picked: repair copies its segments away);
 * members new to the device go after. */
void server_order_from_state(struct store *s, struct state_hdr *h)
{
	static struct store_server found[STORE_MAX_SERVERS];
	int nfound = s->nservers, used[STORE_MAX_SERVERS] = { 0 }, n;

	memcpy(found, s->srv, sizeof(found));
	n = h->nservers <= STORE_MAX_SERVERS ? (int)h->nservers : STORE_MAX_SERVERS;
	for (int i = 0; i < n; i++) {
		struct store_server *v = &s->srv[i];
		int j;

		for (j = 0; j < nfound; j++)
			if (!used[j] && fm_xxh3(found[j].addr, strlen(found[j].addr)) ==
			    h->server_hash[i])
				break;
		if (j < nfound) {
			*v = found[j];
			used[j] = 1;
		} else {
			memset(v, 0, sizeof(*v));
			snprintf(v->addr, sizeof(v->addr), "(left the cluster, #%d)", i);
			v->fa.kind = ADDR_TCP;
			v->retry_ns = UINT64_MAX;   /* maint never connects it */
			s->hints.gone[i] = 1;
			log_warn("state: server #%d is no longer registered in etcd: "
				 "its copies are lost", i);
		}
		v->s = s;
		v->idx = i;
	}
	for (int j = 0; j < nfound && n < STORE_MAX_SERVERS; j++) {
		if (used[j] || !found[j].fa.port)   /* a stand-in: nobody to add */
			continue;
		s->srv[n] = found[j];
		s->srv[n].s = s;
		s->srv[n].idx = n;
		h->server_hash[n] = fm_xxh3(found[j].addr, strlen(found[j].addr));
		n++;
	}
	s->nservers = n;
	h->nservers = (uint32_t)n;
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

/* A transport says the server went up or down: count it, let retries
 * go at once, and wake maintenance (sweep, repair). */
void store_server_state_cb(void *arg, int up)
{
	struct store_server *v = arg;
	int was = __atomic_exchange_n(&v->up, up ? 1 : 0, __ATOMIC_ACQ_REL);

	if (was != (up ? 1 : 0))
		log_info("server %s: %s", v->addr, up ? "up" : "down");
	if (!up) {
		__atomic_store_n(&v->need_sweep, 1, __ATOMIC_RELEASE);
	} else {
		/* I/O waiting to retry may go at once. */
		pthread_mutex_lock(&v->s->retry_lock);
		pthread_cond_broadcast(&v->s->retry_cv);
		pthread_mutex_unlock(&v->s->retry_lock);
	}
	maint_kick(v->s);
}
