/* settings.c — memserver.conf keys, flag overrides, the "complete" pass.
 *
 * Types are checked as each value is set (common/config.c); what needs
 * several keys, an address parser or the secret file is checked once in
 * ms_settings_complete().  Every message names where the value came from
 * (the file, or the flag that overrode it), the key and the value.
 */
#include "memserver.h"
#include "log.h"
#include "metrics_http.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define KEY(n, t, f, sz, lo, hi, h) \
	{ "memserver:" n, t, offsetof(struct ms_settings, f), sz, lo, hi, h }

/* Order matters: the index is the origin[] slot (see K_* below). */
const struct cfg_key ms_cfg_keys[] = {
	KEY("listen", CFG_STRING, listen, sizeof(((struct ms_settings *)0)->listen), 0, 0,
	    "addresses to listen on, comma-separated (tcp://host:port)"),
	KEY("size", CFG_SIZE, size, 0, 1 << 20, 1ll << 50,
	    "pool size, allocated and locked at start (K/M/G/T)"),
	KEY("secret-file", CFG_STRING, secret_file, sizeof(((struct ms_settings *)0)->secret_file), 0, 0,
	    "file holding the shared secret (at least 16 bytes, mode 0600)"),
	KEY("segment-size", CFG_SIZE, segment_size, 0, 64 << 10, 1 << 30,
	    "largest segment handed out; the pool is cut in slots of this size"),
	KEY("lease", CFG_DURATION, lease_ms, 0, 0, 0,
	    "how long a disconnected device keeps its segments (e.g. 60s)"),
	KEY("hugepages", CFG_STRING, hugepages, sizeof(((struct ms_settings *)0)->hugepages), 0, 0,
	    "auto (hugetlb, else transparent), yes (hugetlb or fail), no"),
	KEY("allow-unlocked", CFG_BOOL, allow_unlocked, 0, 0, 0,
	    "run even when the pool cannot be locked in memory (yes/no)"),
	KEY("log", CFG_STRING, log, sizeof(((struct ms_settings *)0)->log), 0, 0,
	    "stderr or syslog"),
	KEY("pid-file", CFG_STRING, pid_file, sizeof(((struct ms_settings *)0)->pid_file), 0, 0,
	    "write the process id here once listening"),
	KEY("metrics", CFG_STRING, metrics, sizeof(((struct ms_settings *)0)->metrics), 0, 0,
	    "serve Prometheus metrics over HTTP on HOST:PORT (empty: off)"),
	KEY("quota", CFG_STRING, quota, sizeof(((struct ms_settings *)0)->quota), 0, 0,
	    "most one client may hold: none (default), N% of the pool, or a size"),
	KEY("quota-clients", CFG_STRING, quota_clients, sizeof(((struct ms_settings *)0)->quota_clients), 0, 0,
	    "per-client limits overriding quota: NAME:LIMIT, NAME:LIMIT ..."),
	/* Listener bounds (admit.c, server.c, rdma_listener.c). */
	KEY("handshake-timeout", CFG_DURATION, handshake_ms, 0, 100, 600000,
	    "a connection must finish HELLO and AUTH this soon after it opens (default 10s)"),
	KEY("idle-timeout", CFG_DURATION, idle_ms, 0, 0, 0,
	    "tcp: close an authenticated connection idle this long (default 0: never; "
	    "clients send nothing while idle, so a value cuts idle clients, which reconnect)"),
	KEY("max-handshakes", CFG_U64, max_handshakes, 0, 1, 65536,
	    "connections not yet authenticated, from all sources; more are refused (default 256)"),
	KEY("max-handshakes-per-source", CFG_U64, max_handshakes_per_source, 0, 1, 65536,
	    "connections not yet authenticated from one IPv4 address or IPv6 /64 (default 32)"),
	KEY("allow-shared-rkey", CFG_BOOL, allow_shared_rkey, 0, 0, 0,
	    "rdma: serve on a device without type-2 memory windows, where every client's "
	    "key covers the whole pool (yes/no, default no)"),
	/* Membership through etcd (registry.c). */
	KEY("etcd", CFG_STRING, etcd, sizeof(((struct ms_settings *)0)->etcd), 0, 0,
	    "register in etcd at these endpoints, comma-separated http://HOST:PORT (empty: off)"),
	KEY("cluster", CFG_STRING, cluster, sizeof(((struct ms_settings *)0)->cluster), 0, 0,
	    "etcd: the cluster this server joins (keys under /farmem/NAME/, default farmem)"),
	KEY("advertise", CFG_STRING, advertise, sizeof(((struct ms_settings *)0)->advertise), 0, 0,
	    "etcd: the address clients use (tcp://HOST:PORT); needed when listening on a wildcard"),
	KEY("zone", CFG_STRING, zone, sizeof(((struct ms_settings *)0)->zone), 0, 0,
	    "etcd: failure domain (rack, room); copies of a segment go to distinct zones"),
	/* The elastic pool (shrink.c, pressure.c). */
	KEY("reserve", CFG_SIZE, reserve, 0, 0, 1ll << 50,
	    "keep at least this much MemAvailable (and cgroup headroom) on the host: "
	    "below it the pool gives memory back, down to min-size (default 0: off)"),
	KEY("min-size", CFG_SIZE, min_size, 0, 0, 1ll << 50,
	    "the pool never shrinks below this under pressure (default 0)"),
	KEY("pressure-interval", CFG_DURATION, pressure_interval_ms, 0, 100, 3600000,
	    "how often the host's memory is looked at when reserve is set (default 1s)"),
	KEY("notice-deadline", CFG_DURATION, notice_ms, 0, 1000, 86400000,
	    "how long clients get to move segments off a shrinking pool before "
	    "those are freed (default 30s)"),
};
const size_t ms_cfg_nkeys = sizeof(ms_cfg_keys) / sizeof(ms_cfg_keys[0]);

enum { K_LISTEN, K_SIZE, K_SECRET, K_SEGSIZE, K_LEASE, K_HUGE, K_UNLOCKED,
       K_LOG, K_PID, K_METRICS, K_QUOTA, K_QUOTA_CLIENTS,
       K_HANDSHAKE, K_IDLE, K_MAXHS, K_MAXHS_SRC, K_SHARED_RKEY,
       K_ETCD, K_CLUSTER, K_ADVERTISE, K_ZONE,
       K_RESERVE, K_MINSIZE, K_PRESSURE_INT, K_NOTICE };

_Static_assert(sizeof(ms_cfg_keys) / sizeof(ms_cfg_keys[0]) <=
	       sizeof(((struct ms_settings *)0)->origin) / sizeof(const char *),
	       "an origin slot per key");

void ms_settings_defaults(struct ms_settings *s)
{
	memset(s, 0, sizeof(*s));
	s->segment_size = 4u << 20;
	s->lease_ms = 60000;
	snprintf(s->hugepages, sizeof(s->hugepages), "auto");
	snprintf(s->log, sizeof(s->log), "stderr");
	snprintf(s->quota, sizeof(s->quota), "none");
	s->handshake_ms = MS_HANDSHAKE_MS_DEFAULT;
	s->max_handshakes = MS_MAX_HANDSHAKES_DEFAULT;
	s->max_handshakes_per_source = MS_MAX_HANDSHAKES_PER_SOURCE_DEFAULT;
	snprintf(s->cluster, sizeof(s->cluster), "farmem");
	s->pressure_interval_ms = 1000;
	s->notice_ms = 30000;
}

static size_t field_size(const struct cfg_key *k)
{
	if (k->type == CFG_STRING)
		return k->size;
	return k->type == CFG_BOOL ? sizeof(int) : sizeof(uint64_t);
}

int ms_settings_load(struct ms_settings *s, const char *file, char *err,
		     size_t errlen)
{
	struct ms_settings before = *s;
	int rc = cfg_load(file, ms_cfg_keys, ms_cfg_nkeys, s, err, errlen);

	if (rc < 0)
		return rc;
	/* A field that changed came from the file. */
	for (size_t i = 0; i < ms_cfg_nkeys; i++) {
		size_t off = ms_cfg_keys[i].offset;

		if (memcmp((char *)s + off, (char *)&before + off,
			   field_size(&ms_cfg_keys[i])))
			s->origin[i] = file;
	}
	return 0;
}

int ms_settings_set(struct ms_settings *s, const char *key, const char *value,
		    const char *origin, char *err, size_t errlen)
{
	int rc = cfg_set(ms_cfg_keys, ms_cfg_nkeys, s, key, value, origin,
			 err, errlen);

	if (rc < 0)
		return rc;
	for (size_t i = 0; i < ms_cfg_nkeys; i++)
		if (strcmp(ms_cfg_keys[i].name, key) == 0)
			s->origin[i] = origin;
	return 0;
}

static const char *origin_of(const struct ms_settings *s, int k)
{
	return s->origin[k] ? s->origin[k] : "default";
}

#define BAD(k, val, ...) do { \
	int n_ = snprintf(err, errlen, "%s: key '%s' value '%s': ", \
			  origin_of(s, k), ms_cfg_keys[k].name, val); \
	if (n_ >= 0 && (size_t)n_ < errlen) \
		snprintf(err + n_, errlen - (size_t)n_, __VA_ARGS__); \
	return -EINVAL; } while (0)

static int complete_listen(struct ms_settings *s, struct ms_resolved *r,
			   char *err, size_t errlen)
{
	char copy[sizeof(s->listen)];
	char *items[MS_LISTEN_MAX];
	int n;

	memcpy(copy, s->listen, sizeof(copy));
	n = split_list(copy, items, MS_LISTEN_MAX);
	if (n == -E2BIG)
		BAD(K_LISTEN, s->listen, "more than %d addresses", MS_LISTEN_MAX);
	if (n <= 0)
		BAD(K_LISTEN, s->listen, "no address to listen on (give "
		    "--listen tcp://HOST:PORT)");
	for (int i = 0; i < n; i++) {
		char *end = items[i] + strlen(items[i]);

		while (end > items[i] && (end[-1] == ' ' || end[-1] == '\t'))
			*--end = '\0';
		if (parse_addr(items[i], 0, &r->listen[i]) < 0)
			BAD(K_LISTEN, items[i], "not an address (tcp://HOST:PORT)");
		if (r->listen[i].kind != ADDR_TCP && r->listen[i].kind != ADDR_RDMA)
			BAD(K_LISTEN, items[i], "want tcp://HOST:PORT or rdma://HOST:PORT");
	}
	r->nlisten = n;
	return 0;
}

static int complete_enums(struct ms_settings *s, struct ms_resolved *r,
			  char *err, size_t errlen)
{
	int b;

	if (strcmp(s->hugepages, "auto") == 0)
		r->huge = MS_HUGE_AUTO;
	else if (parse_bool(s->hugepages, &b) == 0)
		r->huge = b ? MS_HUGE_YES : MS_HUGE_NO;
	else
		BAD(K_HUGE, s->hugepages, "use auto, yes or no");
	if (strcmp(s->log, "stderr") == 0)
		r->use_syslog = 0;
	else if (strcmp(s->log, "syslog") == 0)
		r->use_syslog = 1;
	else
		BAD(K_LOG, s->log, "use stderr or syslog");
	return 0;
}

static int complete_sizes(struct ms_settings *s, char *err, size_t errlen)
{
	char v[32];

	snprintf(v, sizeof(v), "%llu", (unsigned long long)s->segment_size);
	if (s->segment_size % FM_PAGE)
		BAD(K_SEGSIZE, v, "not a multiple of %u", FM_PAGE);
	snprintf(v, sizeof(v), "%llu", (unsigned long long)s->size);
	if (s->size == 0)
		BAD(K_SIZE, v, "no pool size (give --size, e.g. 1G)");
	if (s->size < s->segment_size)
		BAD(K_SIZE, v, "smaller than one segment (segment-size %llu)",
		    (unsigned long long)s->segment_size);
	snprintf(v, sizeof(v), "%llu", (unsigned long long)s->min_size);
	if (s->min_size > s->size)
		BAD(K_MINSIZE, v, "above the pool size (size %llu)",
		    (unsigned long long)s->size);
	return 0;
}

/* A limit that allows not one segment would refuse every ALLOC of that
 * client: a mistake (1M quota with 4M segments), not a policy. */
static int limit_fits(const struct ms_settings *s, const struct ms_limit *l)
{
	uint32_t nslots = (uint32_t)(s->size / s->segment_size);

	return ms_limit_segments(l, nslots, (uint32_t)s->segment_size) > 0;
}

static int complete_quota(struct ms_settings *s, struct ms_resolved *r,
			  char *err, size_t errlen)
{
	char why[160];

	if (ms_limit_parse(s->quota, &r->quota.dflt) < 0)
		BAD(K_QUOTA, s->quota, "use none, a share of the pool (25%%) or a "
		    "size (2G)");
	if (!limit_fits(s, &r->quota.dflt))
		BAD(K_QUOTA, s->quota, "less than one segment (segment-size %llu, "
		    "pool %llu bytes)", (unsigned long long)s->segment_size,
		    (unsigned long long)s->size);
	if (ms_quota_parse_rules(s->quota_clients, &r->quota, why, sizeof(why)) < 0)
		BAD(K_QUOTA_CLIENTS, s->quota_clients, "%s (want NAME:LIMIT, "
		    "NAME:LIMIT ...; LIMIT none, N%% or a size)", why);
	for (int i = 0; i < r->quota.nrules; i++)
		if (!limit_fits(s, &r->quota.rule[i].limit))
			BAD(K_QUOTA_CLIENTS, s->quota_clients, "client '%s': less "
			    "than one segment (segment-size %llu)",
			    r->quota.rule[i].name,
			    (unsigned long long)s->segment_size);
	return 0;
}

static int complete_limits(struct ms_settings *s, struct ms_resolved *r,
			   char *err, size_t errlen)
{
	char v[32];

	snprintf(v, sizeof(v), "%llu", (unsigned long long)s->max_handshakes_per_source);
	if (s->max_handshakes_per_source > s->max_handshakes)
		BAD(K_MAXHS_SRC, v, "above max-handshakes (%llu)",
		    (unsigned long long)s->max_handshakes);
	r->limits.handshake_ms = s->handshake_ms;
	r->limits.idle_ms = s->idle_ms;
	r->limits.max_handshakes = (unsigned)s->max_handshakes;
	r->limits.max_handshakes_per_source = (unsigned)s->max_handshakes_per_source;
	r->limits.allow_shared_rkey = s->allow_shared_rkey;
	return 0;
}

static int is_wildcard(const char *host)
{
	return !host[0] || !strcmp(host, "0.0.0.0") || !strcmp(host, "::") ||
	       !strcmp(host, "*");
}

/* The address published in etcd: --advertise (HOST, or tcp://HOST:PORT,
 * or rdma://HOST:PORT; a bare HOST takes the first listen address's
 * port), else the first listen address unless it is a wildcard. */
static int complete_advertise(struct ms_settings *s, struct ms_resolved *r,
			      char *err, size_t errlen)
{
	struct fm_addr a = r->listen[0];
	char buf[sizeof(s->advertise) + 16];

	if (!s->advertise[0]) {
		if (is_wildcard(a.host))
			BAD(K_ADVERTISE, "", "listening on a wildcard (%s) with etcd: give "
			    "--advertise ADDR, the address clients should use",
			    addr_str(&a, buf, sizeof(buf)));
	} else if (strstr(s->advertise, "://")) {
		if (parse_addr(s->advertise, 0, &a) < 0 ||
		    (a.kind != ADDR_TCP && a.kind != ADDR_RDMA))
			BAD(K_ADVERTISE, s->advertise, "want tcp://HOST:PORT, rdma://HOST:PORT or HOST");
	} else {
		snprintf(buf, sizeof(buf), "tcp://%s:1", s->advertise);
		if (strchr(s->advertise, ':') || parse_addr(buf, 0, &a) < 0)
			BAD(K_ADVERTISE, s->advertise, "want tcp://HOST:PORT, rdma://HOST:PORT or HOST");
		a.kind = r->listen[0].kind;
		a.port = r->listen[0].port;
	}
	if (is_wildcard(a.host) || a.port == 0)
		BAD(K_ADVERTISE, s->advertise, "clients cannot connect to a wildcard or port 0");
	addr_str(&a, r->advertise, sizeof(r->advertise));
	return 0;
}

static int complete_etcd(struct ms_settings *s, struct ms_resolved *r,
			 char *err, size_t errlen)
{
	char why[200];

	if (!s->etcd[0]) {
		if (s->advertise[0] || s->zone[0])
			log_warn("advertise and zone are only used with etcd (not set)");
		return 0;
	}
	if (etcd_endpoints_parse(s->etcd, &r->etcd, why, sizeof(why)) < 0)
		BAD(K_ETCD, s->etcd, "%s (want http://HOST:PORT[,http://HOST:PORT...])", why);
	if (!etcd_cluster_valid(s->cluster))
		BAD(K_CLUSTER, s->cluster, "want 1-63 of A-Z a-z 0-9 . _ -");
	if (!etcd_zone_valid(s->zone))
		BAD(K_ZONE, s->zone, "want up to 63 of A-Z a-z 0-9 . _ -");
	return complete_advertise(s, r, err, errlen);
}

int ms_settings_complete(struct ms_settings *s, struct ms_resolved *r,
			 struct fm_secret *secret, char *err, size_t errlen)
{
	char why[256];
	int rc;

	memset(r, 0, sizeof(*r));
	rc = complete_listen(s, r, err, errlen);
	if (rc == 0)
		rc = complete_enums(s, r, err, errlen);
	if (rc == 0)
		rc = complete_sizes(s, err, errlen);
	if (rc == 0)
		rc = complete_quota(s, r, err, errlen);
	if (rc == 0)
		rc = complete_limits(s, r, err, errlen);
	if (rc == 0)
		rc = complete_etcd(s, r, err, errlen);
	if (rc < 0)
		return rc;
	if (s->metrics[0]) {
		char host[ADDR_HOST_MAX];
		uint16_t port;

		if (metrics_parse_listen(s->metrics, host, sizeof(host), &port) < 0)
			BAD(K_METRICS, s->metrics, "not HOST:PORT");
	}
	if (s->secret_file[0] == '\0')
		BAD(K_SECRET, "", "no secret file (give --secret-file FILE)");
	if (fm_secret_load(s->secret_file, secret, why, sizeof(why)) < 0)
		BAD(K_SECRET, s->secret_file, "%s", why);
	return 0;
}
