/* registry.c — a memserver's membership in etcd (memserver.h).
 *
 * One thread: grant a lease of LEASE_TTL_S, put the member key with it,
 * then every REFRESH_MS send a keep-alive and, when the free bytes
 * changed, put the value again.  A lease that expired (etcd was away
 * longer than the TTL) is granted anew and the key put again; etcd being
 * unreachable is logged once per outage and retried, and never touches
 * the event loop, which goes on serving the clients it has.
 */
#include "memserver.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "metrics_pool.h"

#define LEASE_TTL_S    5      /* a dead server is gone from etcd this soon */
#define REFRESH_MS     1000   /* keep-alive well inside the TTL */
#define CALL_TIMEOUT_MS 1500  /* each etcd call, per endpoint */

struct ms_registry {
	struct etcd *etcd;
	struct metrics_pool_snap *snap;
	char key[ETCD_KEY_MAX];
	struct etcd_member me;
	int64_t lease;            /* 0: none held */
	uint64_t published_free;
	uint64_t published_size;
	int down;                 /* etcd unreachable (logged once) */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cv;        /* CLOCK_MONOTONIC */
	int stop;
};

uint64_t ms_registry_pool_size(const struct fm_stat *st)
{
	return st->pool_bytes;
}

static void read_stats(struct ms_registry *g)
{
	pthread_mutex_lock(&g->snap->lock);
	if (g->snap->valid) {
		g->me.size = ms_registry_pool_size(&g->snap->st);
		g->me.free = g->snap->st.free_bytes;
	}
	pthread_mutex_unlock(&g->snap->lock);
	if (g->me.free > g->me.size)
		g->me.free = g->me.size;
}

static int publish(struct ms_registry *g)
{
	char value[ETCD_VALUE_MAX];
	int rc = etcd_member_encode(&g->me, value, sizeof(value));

	if (rc == 0)
		rc = etcd_put(g->etcd, g->key, value, g->lease);
	if (rc == 0) {
		g->published_free = g->me.free;
		g->published_size = g->me.size;
	}
	return rc;
}

static int register_new(struct ms_registry *g)
{
	int rc = etcd_lease_grant(g->etcd, LEASE_TTL_S, &g->lease);

	if (rc < 0) {
		g->lease = 0;
		return rc;
	}
	rc = publish(g);
	if (rc == 0)
		log_info("etcd: registered %s (lease %" PRIx64 ", %d s) at %s", g->key,
			 (uint64_t)g->lease, LEASE_TTL_S, etcd_endpoint(g->etcd));
	return rc;
}

/* One round: keep the registration alive and current. */
static int refresh(struct ms_registry *g)
{
	int rc;

	read_stats(g);
	if (!g->lease)
		return register_new(g);
	rc = etcd_lease_keepalive(g->etcd, g->lease);
	if (rc == -ENOENT) {
		log_warn("etcd: lease %" PRIx64 " expired; registering again",
			 (uint64_t)g->lease);
		g->lease = 0;
		return register_new(g);
	}
	if (rc == 0 && (g->me.free != g->published_free || g->me.size != g->published_size))
		rc = publish(g);
	return rc;
}

static void note(struct ms_registry *g, int rc)
{
	if (rc < 0 && !g->down)
		log_warn("etcd: cannot register or keep alive: %s; retrying (clients "
			 "already connected are served as before)", etcd_last_error(g->etcd));
	else if (rc == 0 && g->down)
		log_info("etcd: reachable again at %s", etcd_endpoint(g->etcd));
	g->down = rc < 0;
}

static void *registry_main(void *arg)
{
	struct ms_registry *g = arg;

	pthread_mutex_lock(&g->lock);
	while (!g->stop) {
		struct timespec at;

		pthread_mutex_unlock(&g->lock);
		note(g, refresh(g));
		at = fm_mono_abstime_in_ms(REFRESH_MS);
		pthread_mutex_lock(&g->lock);
		if (!g->stop)
			pthread_cond_timedwait(&g->cv, &g->lock, &at);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int ms_registry_start(const struct ms_settings *s, const struct ms_resolved *r,
		      struct metrics_pool_snap *snap, struct ms_registry **out)
{
	struct ms_registry *g;
	char prefix[ETCD_CLUSTER_MAX + 24], err[256] = "";
	int rc;

	*out = NULL;
	if (!s->etcd[0])
		return 0;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->snap = snap;
	snprintf(g->me.addr, sizeof(g->me.addr), "%s", r->advertise);
	snprintf(g->me.zone, sizeof(g->me.zone), "%s", s->zone);
	etcd_members_prefix(s->cluster, prefix, sizeof(prefix));
	snprintf(g->key, sizeof(g->key), "%s%s", prefix, g->me.addr);
	pthread_mutex_init(&g->lock, NULL);
	rc = fm_cond_init_mono(&g->cv);
	if (rc == 0)
		rc = etcd_open(&r->etcd, CALL_TIMEOUT_MS, &g->etcd, err, sizeof(err));
	if (rc == 0)
		rc = -pthread_create(&g->thread, NULL, registry_main, g);
	if (rc < 0) {
		log_err("etcd: %s", err[0] ? err : strerror(-rc));
		etcd_close(g->etcd);
		free(g);
		return rc;
	}
	*out = g;
	return 0;
}

void ms_registry_stop(struct ms_registry *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stop = 1;
	pthread_cond_signal(&g->cv);
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thread, NULL);
	/* Clients see the key go now rather than after the TTL. */
	if (g->lease && etcd_lease_revoke(g->etcd, g->lease) == 0)
		log_info("etcd: deregistered %s", g->key);
	else if (g->lease)
		log_warn("etcd: cannot deregister (%s); the key goes when its lease "
			 "ends", etcd_last_error(g->etcd));
	etcd_close(g->etcd);
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->lock);
	free(g);
}
