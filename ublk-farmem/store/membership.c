/* membership.c — the store's servers as etcd's members of a cluster.
 *
 * At open, the members registered under /farmem/CLUSTER/members/ are the
 * servers.  A thread then follows the cluster: it reads every member
 * (range), waits for a change (a watch bounded to WATCH_MS), reads
 * again.  A member not yet known is appended (server_add) and placement
 * uses it for new segments at once; a known server whose key is gone
 * (lease expired: the memserver died or lost etcd; or it stopped) is
 * marked gone: placement gives it new segments only as a last resort,
 * and it is marked down so repair moves its segments' copies elsewhere.  Free bytes and zones feed placement.
 *
 * etcd unreachable changes nothing: the last view stays, I/O goes on,
 * and the state (STORE_ETCD_UNREACHABLE, the error) is shown by stats
 * until a call succeeds again.  The thread is never on the I/O path.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "internal.h"

#define CALL_TIMEOUT_MS 1500   /* each etcd call, per endpoint */
#define WATCH_MS        1000   /* a quiet watch ends this soon (stop is bounded) */
#define RETRY_MS        1000   /* between attempts while etcd is away */
#define MEMBERS_MAX     (2 * STORE_MAX_SERVERS)

_Static_assert(PLACE_MAX_SERVERS == STORE_MAX_SERVERS, "a hint per server");

struct membership {
	struct store *s;
	struct etcd *etcd;
	char prefix[ETCD_CLUSTER_MAX + 24];
	char cluster[ETCD_CLUSTER_MAX];
	struct etcd_kv kvs[MEMBERS_MAX];
	struct etcd_member members[MEMBERS_MAX];
	int nmembers;
	int64_t rev;
	pthread_t thread;
	int running;
	pthread_mutex_t lock;     /* stop, cv, and the stats below */
	pthread_cond_t cv;        /* CLOCK_MONOTONIC */
	int stop;
	enum store_etcd_state state;
	char endpoint[ETCD_URL_MAX];
	char error[160];
	uint64_t errors, joined, lost;
	char zone[STORE_MAX_SERVERS][ETCD_ZONE_MAX];  /* by server index, for stats */
};

static uint32_t zone_hash(const char *zone)
{
	uint32_t h = 2166136261u;   /* FNV-1a: only equality matters */

	if (!zone[0])
		return 0;
	for (const char *p = zone; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h ? h : 1;
}

static void set_state(struct membership *m, int rc)
{
	pthread_mutex_lock(&m->lock);
	if (rc < 0 && m->state != STORE_ETCD_UNREACHABLE)
		log_warn("etcd %s: unreachable (%s); keeping the last view of %d servers",
			 m->cluster, etcd_last_error(m->etcd),
			 m->s ? __atomic_load_n(&m->s->nservers, __ATOMIC_ACQUIRE) : 0);
	else if (rc == 0 && m->state == STORE_ETCD_UNREACHABLE)
		log_info("etcd %s: reachable again at %s", m->cluster, etcd_endpoint(m->etcd));
	m->state = rc < 0 ? STORE_ETCD_UNREACHABLE : STORE_ETCD_OK;
	snprintf(m->endpoint, sizeof(m->endpoint), "%s", etcd_endpoint(m->etcd));
	if (rc < 0) {
		snprintf(m->error, sizeof(m->error), "%s", etcd_last_error(m->etcd));
		/* One line: status and the control socket are line-based. */
		for (char *p = m->error; *p; p++)
			if ((unsigned char)*p < 0x20)
				*p = ' ';
		m->errors++;
	}
	pthread_mutex_unlock(&m->lock);
}

/* Range the members into m->members (decoded, addresses canonical). */
static int read_members(struct membership *m)
{
	int n, rc = etcd_range_prefix(m->etcd, m->prefix, m->kvs, MEMBERS_MAX, &n, &m->rev);

	if (rc == -E2BIG)
		log_warn_rl("etcd %s: more than %d members; using the first",
			    m->cluster, MEMBERS_MAX);
	else if (rc < 0)
		return rc;
	m->nmembers = 0;
	for (int i = 0; i < n; i++) {
		struct etcd_member *e = &m->members[m->nmembers];
		struct fm_addr fa;

		if (etcd_member_decode(m->kvs[i].value, e) < 0 ||
		    parse_addr(e->addr, 0, &fa) < 0 ||
		    (fa.kind != ADDR_TCP && fa.kind != ADDR_RDMA)) {
			log_warn_rl("etcd %s: key %s: not a member value, ignored: %.80s",
				    m->cluster, m->kvs[i].key, m->kvs[i].value);
			continue;
		}
		addr_str(&fa, e->addr, sizeof(e->addr));
		m->nmembers++;
	}
	return 0;
}

int membership_open(const struct store_config *cfg, struct store_config *out,
		    struct membership **mp, char *err, size_t errlen)
{
	struct membership *m = calloc(1, sizeof(*m));
	char why[200] = "";
	int rc;

	*mp = NULL;
	*out = *cfg;
	if (!m)
		return -ENOMEM;
	snprintf(m->cluster, sizeof(m->cluster), "%s", cfg->cluster);
	etcd_members_prefix(cfg->cluster, m->prefix, sizeof(m->prefix));
	pthread_mutex_init(&m->lock, NULL);
	rc = fm_cond_init_mono(&m->cv) ? -ENOMEM : 0;
	if (rc == 0 && (rc = etcd_open(&cfg->etcd, CALL_TIMEOUT_MS, &m->etcd, why, sizeof(why))) < 0)
		snprintf(err, errlen, "etcd: %s", why);
	if (rc == 0 && (rc = read_members(m)) < 0)
		snprintf(err, errlen, "etcd: cannot read the members of cluster %s: %s",
			 cfg->cluster, etcd_last_error(m->etcd));
	if (rc == 0 && m->nmembers == 0) {
		snprintf(err, errlen, "etcd: no memserver registered in cluster %s (under %s "
			 "at %s)", cfg->cluster, m->prefix, etcd_endpoint(m->etcd));
		rc = -EHOSTUNREACH;
	}
	if (rc < 0) {
		membership_close(m);
		return rc;
	}
	out->nservers = 0;
	for (int i = 0; i < m->nmembers && out->nservers < STORE_MAX_SERVERS; i++)
		if (parse_addr(m->members[i].addr, 0, &out->servers[out->nservers]) == 0)
			out->nservers++;
	m->state = STORE_ETCD_OK;
	snprintf(m->endpoint, sizeof(m->endpoint), "%s", etcd_endpoint(m->etcd));
	*mp = m;
	return 0;
}

static void hint(struct membership *m, int i, const struct etcd_member *e)
{
	struct store *s = m->s;

	__atomic_store_n(&s->hints.free[i], e->free, __ATOMIC_RELAXED);
	__atomic_store_n(&s->hints.zone[i], zone_hash(e->zone), __ATOMIC_RELAXED);
	pthread_mutex_lock(&m->lock);
	snprintf(m->zone[i], sizeof(m->zone[i]), "%s", e->zone);
	pthread_mutex_unlock(&m->lock);
}

/* One member seen: a new server, one back, or fresh numbers. */
static int apply_member(struct membership *m, const struct etcd_member *e)
{
	struct store *s = m->s;
	int i = server_find(s, e->addr);

	if (i < 0) {
		struct fm_addr fa;

		if (parse_addr(e->addr, 0, &fa) < 0)
			return -1;
		i = server_add(s, &fa);
		if (i < 0) {
			log_warn_rl("etcd %s: %s joined, but this device already has %d "
				    "servers", m->cluster, e->addr, STORE_MAX_SERVERS);
			return -1;
		}
		log_info("etcd %s: server %s joined (zone %s, %llu MiB free)", m->cluster,
			 e->addr, e->zone[0] ? e->zone : "none",
			 (unsigned long long)(e->free >> 20));
		m->joined++;
	} else if (__atomic_load_n(&s->hints.gone[i], __ATOMIC_RELAXED)) {
		log_info("etcd %s: server %s is back", m->cluster, e->addr);
		__atomic_store_n(&s->hints.gone[i], 0, __ATOMIC_RELAXED);
		maint_kick(s);
	}
	hint(m, i, e);
	return i;
}

static void apply(struct membership *m)
{
	struct store *s = m->s;
	int seen[STORE_MAX_SERVERS] = { 0 };
	int n;

	for (int k = 0; k < m->nmembers; k++) {
		int i = apply_member(m, &m->members[k]);

		if (i >= 0)
			seen[i] = 1;
	}
	n = __atomic_load_n(&s->nservers, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++) {
		if (seen[i] || __atomic_load_n(&s->hints.gone[i], __ATOMIC_RELAXED))
			continue;
		__atomic_store_n(&s->hints.gone[i], 1, __ATOMIC_RELAXED);
		m->lost++;
		log_warn("etcd %s: server %s left the cluster (its key is gone): lost; "
			 "its copies are made again elsewhere", m->cluster, s->srv[i].addr);
		/* Down now, so repair drops its copies; if it still answers,
		 * maint lifts the mark and its copies stay readable, but
		 * placement avoids it for new segments. */
		store_server_state_cb(&s->srv[i], 0);
	}
}

/* Sleeps ms unless stopped; 1 when stopped. */
static int pause_ms(struct membership *m, unsigned ms)
{
	struct timespec at = fm_mono_abstime_in_ms(ms);
	int stop;

	pthread_mutex_lock(&m->lock);
	if (!m->stop)
		pthread_cond_timedwait(&m->cv, &m->lock, &at);
	stop = m->stop;
	pthread_mutex_unlock(&m->lock);
	return stop;
}

static int stopping(struct membership *m)
{
	int stop;

	pthread_mutex_lock(&m->lock);
	stop = m->stop;
	pthread_mutex_unlock(&m->lock);
	return stop;
}

static void *membership_main(void *arg)
{
	struct membership *m = arg;
	int fresh = 1;   /* membership_open just read the members */

	while (!stopping(m)) {
		int rc = fresh ? 0 : read_members(m);

		fresh = 0;
		if (rc == 0)
			apply(m);
		set_state(m, rc);
		if (rc < 0) {
			if (pause_ms(m, RETRY_MS))
				break;
			continue;
		}
		rc = etcd_watch_prefix(m->etcd, m->prefix, m->rev, WATCH_MS);
		if (rc < 0) {
			set_state(m, rc);
			if (pause_ms(m, RETRY_MS))
				break;
		}
	}
	return NULL;
}

int membership_start(struct membership *m, struct store *s)
{
	int rc;

	m->s = s;
	s->mem = m;
	for (int k = 0; k < m->nmembers; k++) {
		int i = server_find(s, m->members[k].addr);

		if (i >= 0)
			hint(m, i, &m->members[k]);
	}
	rc = -pthread_create(&m->thread, NULL, membership_main, m);
	m->running = rc == 0;
	return rc;
}

void membership_close(struct membership *m)
{
	if (!m)
		return;
	if (m->running) {
		pthread_mutex_lock(&m->lock);
		m->stop = 1;
		pthread_cond_signal(&m->cv);
		pthread_mutex_unlock(&m->lock);
		pthread_join(m->thread, NULL);
	}
	etcd_close(m->etcd);
	pthread_cond_destroy(&m->cv);
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void membership_stats(struct membership *m, struct store_stats *st)
{
	if (!m)
		return;
	pthread_mutex_lock(&m->lock);
	st->etcd = m->state;
	snprintf(st->etcd_endpoint, sizeof(st->etcd_endpoint), "%s", m->endpoint);
	if (m->state == STORE_ETCD_UNREACHABLE)
		snprintf(st->etcd_error, sizeof(st->etcd_error), "%s", m->error);
	st->etcd_errors = m->errors;
	st->members_joined = m->joined;
	st->members_lost = m->lost;
	for (int i = 0; i < st->nservers && i < STORE_MAX_SERVERS; i++) {
		snprintf(st->server[i].zone, sizeof(st->server[i].zone), "%s", m->zone[i]);
		st->server[i].pool_free = __atomic_load_n(&m->s->hints.free[i], __ATOMIC_RELAXED);
		st->server[i].gone = __atomic_load_n(&m->s->hints.gone[i], __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&m->lock);
}
