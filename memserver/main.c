/* main.c — farmem-memserver: parse, validate, run. */
#include "memserver.h"
#include "keyfile.h"
#include "log.h"
#include "metrics_http.h"
#include "metrics_pool.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef FARMEM_VERSION
#define FARMEM_VERSION "0.0.0"
#endif

enum {
	OPT_CHECK = 256, OPT_STAT, OPT_JSON, OPT_VERSION, OPT_FOREGROUND,
	OPT_ALLOW_UNLOCKED, OPT_CLIENT_KEY,
	OPT_HANDSHAKE_TIMEOUT, OPT_IDLE_TIMEOUT, OPT_MAX_HANDSHAKES,
	OPT_MAX_HANDSHAKES_PER_SOURCE, OPT_ALLOW_SHARED_RKEY,
	OPT_ETCD, OPT_CLUSTER, OPT_ADVERTISE, OPT_ZONE,
	OPT_RESERVE, OPT_MIN_SIZE, OPT_DRAIN, OPT_TIMEOUT,
};

/* Flags that set a config key: long name, key. */
static const struct {
	const char *flag;
	const char *key;
} flag_keys[] = {
	{ "size", "memserver:size" },
	{ "secret-file", "memserver:secret-file" },
	{ "segment-size", "memserver:segment-size" },
	{ "lease", "memserver:lease" },
	{ "hugepages", "memserver:hugepages" },
	{ "log", "memserver:log" },
	{ "pid-file", "memserver:pid-file" },
	{ "metrics", "memserver:metrics" },
	{ "quota", "memserver:quota" },
	{ "quota-clients", "memserver:quota-clients" },
	{ "handshake-timeout", "memserver:handshake-timeout" },
	{ "idle-timeout", "memserver:idle-timeout" },
	{ "max-handshakes", "memserver:max-handshakes" },
	{ "max-handshakes-per-source", "memserver:max-handshakes-per-source" },
	{ "etcd", "memserver:etcd" },
	{ "cluster", "memserver:cluster" },
	{ "advertise", "memserver:advertise" },
	{ "zone", "memserver:zone" },
	{ "reserve", "memserver:reserve" },
	{ "min-size", "memserver:min-size" },
};

static const struct option options[] = {
	{ "config", required_argument, NULL, 'c' },
	{ "listen", required_argument, NULL, 'l' },
	{ "size", required_argument, NULL, 's' },
	{ "secret-file", required_argument, NULL, 'k' },
	{ "segment-size", required_argument, NULL, 'S' },
	{ "lease", required_argument, NULL, 'L' },
	{ "hugepages", required_argument, NULL, 'H' },
	{ "log", required_argument, NULL, 'g' },
	{ "pid-file", required_argument, NULL, 'p' },
	{ "metrics", required_argument, NULL, 'M' },
	{ "quota", required_argument, NULL, 'Q' },
	{ "quota-clients", required_argument, NULL, 'C' },
	{ "client-key", required_argument, NULL, OPT_CLIENT_KEY },
	{ "allow-unlocked", no_argument, NULL, OPT_ALLOW_UNLOCKED },
	{ "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
	{ "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
	{ "max-handshakes", required_argument, NULL, OPT_MAX_HANDSHAKES },
	{ "max-handshakes-per-source", required_argument, NULL, OPT_MAX_HANDSHAKES_PER_SOURCE },
	{ "allow-shared-rkey", no_argument, NULL, OPT_ALLOW_SHARED_RKEY },
	{ "etcd", required_argument, NULL, OPT_ETCD },
	{ "cluster", required_argument, NULL, OPT_CLUSTER },
	{ "advertise", required_argument, NULL, OPT_ADVERTISE },
	{ "zone", required_argument, NULL, OPT_ZONE },
	{ "reserve", required_argument, NULL, OPT_RESERVE },
	{ "min-size", required_argument, NULL, OPT_MIN_SIZE },
	{ "drain", required_argument, NULL, OPT_DRAIN },
	{ "timeout", required_argument, NULL, OPT_TIMEOUT },
	{ "check-config", no_argument, NULL, OPT_CHECK },
	{ "stat", required_argument, NULL, OPT_STAT },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "foreground", no_argument, NULL, OPT_FOREGROUND },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

#define MAX_SET 32

struct args {
	const char *config;
	char listen[2048];        /* every --listen, comma-joined */
	const char *set_key[MAX_SET];  /* other flags, applied after the file */
	const char *set_val[MAX_SET];
	const char *set_flag[MAX_SET];
	int nset;
	int check, json, verbose, allow_unlocked, allow_shared_rkey;
	const char *stat_addr;
	const char *client_key;
	const char *drain_addr;
	const char *timeout;      /* --drain's; NULL: the default */
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: farmem-memserver --listen tcp://HOST:PORT --size SIZE --secret-file FILE\n"
"                        [--config FILE] [options]\n"
"       farmem-memserver --check-config [--config FILE] [options]\n"
"       farmem-memserver --stat tcp://HOST:PORT|rdma://HOST:PORT --secret-file FILE [--json]\n"
"       farmem-memserver --client-key NAME --secret-file FILE > NAME.key\n"
"       farmem-memserver --drain tcp://HOST:PORT --secret-file FILE [--timeout DURATION]\n"
"\n"
"Serves a pinned memory pool to farmem-blk clients.  Flags override the\n"
"config file (which is read only when --config names it).\n"
"\n"
"  -c, --config FILE        iniparser file, section [memserver]\n"
"  -l, --listen ADDR        address to listen on (repeat for several)\n"
"  -s, --size SIZE          pool size (K/M/G/T), allocated and locked at start\n"
"      --secret-file FILE   shared secret (at least 16 bytes)\n"
"      --segment-size SIZE  largest segment handed out (default 4M)\n"
"      --lease DURATION     keep a disconnected device's segments (default 60s)\n"
"      --hugepages MODE     auto, yes or no (default auto)\n"
"      --allow-unlocked     run even if the pool cannot be mlock()ed\n"
"      --log stderr|syslog  where log lines go (default stderr)\n"
"      --pid-file FILE      write the pid once listening\n"
"      --metrics HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
"      --quota LIMIT        most one client may hold: none, N%% or a size\n"
"      --quota-clients LIST per-client limits: NAME:LIMIT,NAME:LIMIT...\n"
"      --client-key NAME    print the key file of client NAME, then exit\n"
"      --reserve SIZE       keep this much MemAvailable on the host: below it\n"
"                           the pool gives memory back (default 0: off)\n"
"      --min-size SIZE      never shrink the pool below this (default 0)\n"
"      --drain ADDR         ask a running server to move every segment away\n"
"                           and take no new ones; exit 0 once it holds none,\n"
"                           1 on timeout, 2 when it cannot be asked (ADDR\n"
"                           'local': the first tcp listen address of --config)\n"
"      --timeout DURATION   how long --drain waits (default 5m)\n"
"      --handshake-timeout DURATION  HELLO+AUTH must be done this soon (default 10s)\n"
"      --idle-timeout DURATION       tcp: close authenticated connections idle\n"
"                           this long (default 0: never)\n"
"      --max-handshakes N   connections not yet authenticated (default 256)\n"
"      --max-handshakes-per-source N  ... from one address or IPv6 /64 (default 32)\n"
"      --allow-shared-rkey  rdma: serve a device without memory windows (every\n"
"                           client's key then covers the whole pool)\n"
"      --etcd URL[,URL...]  register in etcd (http://HOST:PORT) so clients find\n"
"                           this server; kept alive under a lease\n"
"      --cluster NAME       etcd: the cluster to join (default farmem)\n"
"      --advertise ADDR     etcd: address clients use (tcp://HOST:PORT or HOST);\n"
"                           required when listening on a wildcard\n"
"      --zone NAME          etcd: failure domain; copies go to distinct zones\n"
"      --foreground         stay in the foreground (always; for unit files)\n"
"      --check-config       validate the settings and the secret, then exit\n"
"      --stat ADDR          print a running server's statistics (--json)\n"
"  -v, --verbose            debug logging\n"
"  -h, --help               this text\n"
"      --version            print the version\n");
	if (f == stdout) {
		printf("\nconfig keys (--config FILE):\n");
		cfg_print_keys(ms_cfg_keys, ms_cfg_nkeys);
	}
}

static int add_listen(struct args *a, const char *addr)
{
	size_t used = strlen(a->listen);

	if (used + strlen(addr) + 2 > sizeof(a->listen)) {
		fprintf(stderr, "farmem-memserver: too many --listen addresses\n");
		return -1;
	}
	snprintf(a->listen + used, sizeof(a->listen) - used, "%s%s",
		 used ? "," : "", addr);
	return 0;
}

static int add_set(struct args *a, const char *flag, const char *val)
{
	for (size_t i = 0; i < sizeof(flag_keys) / sizeof(flag_keys[0]); i++) {
		if (strcmp(flag_keys[i].flag, flag) == 0) {
			/* A repeated flag: the last one wins (applied last). */
			if (a->nset == MAX_SET) {
				fprintf(stderr, "farmem-memserver: too many flags\n");
				return -1;
			}
			a->set_key[a->nset] = flag_keys[i].key;
			a->set_flag[a->nset] = flag;
			a->set_val[a->nset++] = val;
			return 0;
		}
	}
	return -1;
}

static const char *flag_of(int opt)
{
	for (const struct option *o = options; o->name; o++)
		if (o->val == opt)
			return o->name;
	return "?";
}

/* Returns -1 to continue, else the exit status. */
static int parse_args(int argc, char **argv, struct args *a)
{
	int opt, idx;

	while ((opt = getopt_long(argc, argv, "c:l:s:vh", options, &idx)) != -1) {
		switch (opt) {
		case 'c': a->config = optarg; break;
		case 'l':
			if (add_listen(a, optarg) < 0)
				return 2;
			break;
		case 's': case 'k': case 'S': case 'L': case 'H': case 'g': case 'p': case 'M':
		case 'Q': case 'C':
		case OPT_HANDSHAKE_TIMEOUT: case OPT_IDLE_TIMEOUT: case OPT_MAX_HANDSHAKES:
		case OPT_MAX_HANDSHAKES_PER_SOURCE: case OPT_RESERVE: case OPT_MIN_SIZE:
		case OPT_ETCD: case OPT_CLUSTER: case OPT_ADVERTISE: case OPT_ZONE:
			/* options[idx] is only set for long options. */
			if (add_set(a, flag_of(opt), optarg) < 0)
				return 2;
			break;
		case OPT_ALLOW_UNLOCKED: a->allow_unlocked = 1; break;
		case OPT_ALLOW_SHARED_RKEY: a->allow_shared_rkey = 1; break;
		case OPT_CHECK: a->check = 1; break;
		case OPT_STAT: a->stat_addr = optarg; break;
		case OPT_CLIENT_KEY: a->client_key = optarg; break;
		case OPT_DRAIN: a->drain_addr = optarg; break;
		case OPT_TIMEOUT: a->timeout = optarg; break;
		case OPT_JSON: a->json = 1; break;
		case OPT_FOREGROUND: break;
		case 'v': a->verbose = 1; break;
		case 'h': usage(stdout); return 0;
		case OPT_VERSION: printf("farmem-memserver %s\n", FARMEM_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "farmem-memserver: unexpected argument '%s'\n",
			argv[optind]);
		usage(stderr);
		return 2;
	}
	return -1;
}

/* File first, then flags over it, each through the same checks. */
static int build_settings(const struct args *a, struct ms_settings *s,
			  char *err, size_t errlen)
{
	static char flagname[MAX_SET][32];

	ms_settings_defaults(s);
	if (a->config && ms_settings_load(s, a->config, err, errlen) < 0)
		return -1;
	if (a->listen[0] && ms_settings_set(s, "memserver:listen", a->listen,
					    "--listen", err, errlen) < 0)
		return -1;
	if (a->allow_unlocked &&
	    ms_settings_set(s, "memserver:allow-unlocked", "yes",
			    "--allow-unlocked", err, errlen) < 0)
		return -1;
	if (a->allow_shared_rkey &&
	    ms_settings_set(s, "memserver:allow-shared-rkey", "yes",
			    "--allow-shared-rkey", err, errlen) < 0)
		return -1;
	for (int i = 0; i < a->nset; i++) {
		snprintf(flagname[i], sizeof(flagname[i]), "--%s", a->set_flag[i]);
		if (ms_settings_set(s, a->set_key[i], a->set_val[i], flagname[i],
				    err, errlen) < 0)
			return -1;
	}
	return 0;
}

/* --metrics: publish a first snapshot (so no scrape ever shows made-up
 * zeros), then serve /metrics from its own thread.  --etcd reads the
 * same snapshot (registry.c), so it is kept for either. */
static int metrics_start(const struct ms_settings *s, struct ms_ctx *ctx,
			 struct metrics_server **out)
{
	static struct metrics_pool_snap snap;
	struct fm_stat st;

	if (!s->metrics[0] && !s->etcd[0])
		return 0;
	metrics_pool_snap_init(&snap);
	ms_ctx_stat(ctx, &st);
	metrics_pool_publish(&snap, &st);
	ms_elastic_publish(ctx, &snap);
	ctx->metrics = &snap;
	if (!s->metrics[0])
		return 0;
	return metrics_server_start(s->metrics, metrics_pool_provide, &snap, out);
}

/* reserve/min-size: how the pool follows the host (shrink.c).  The
 * pressure files are read under FARMEM_TEST_PRESSURE_ROOT when set: a
 * test-only hook (a fake /proc/meminfo), not a setting. */
static void elastic_setup(const struct ms_settings *s, struct ms_ctx *ctx,
			  const struct ms_pool *pool)
{
	const char *root = getenv("FARMEM_TEST_PRESSURE_ROOT");

	ctx->segs.mem.release = ms_pool_release;
	ctx->segs.mem.restore = ms_pool_restore;
	ctx->segs.mem.locked = pool->locked;
	if (pool->huge == 1 && ctx->segs.seg_max % (2u << 20)) {
		/* Huge pages cannot be given back in pieces smaller than one. */
		ctx->segs.mem.release = NULL;
		ctx->segs.mem.restore = NULL;
		if (s->reserve)
			log_warn("pool: hugetlb pages with %u KiB segments: a "
				 "shrinking pool refuses segments but cannot give "
				 "their memory back", ctx->segs.seg_max >> 10);
	}
	ctx->el.reserve = s->reserve;
	ctx->el.min_bytes = s->min_size;
	ctx->el.interval_ms = s->pressure_interval_ms;
	ctx->el.notice_ms = s->notice_ms;
	ctx->el.root = root ? root : "";
	if (s->reserve)
		log_info("pool: keeping %llu MiB available on the host, shrinking "
			 "down to %llu MiB when it is not%s%s",
			 (unsigned long long)(s->reserve >> 20),
			 (unsigned long long)(s->min_size >> 20),
			 root ? "; test pressure root " : "", root ? root : "");
}

static int run(struct ms_settings *s, const struct ms_resolved *r,
	       struct ms_ctx *ctx)
{
	struct metrics_server *metrics = NULL;
	struct ms_registry *registry = NULL;
	struct ms_pool pool;
	int rc;

	if (ms_signals_block() < 0)
		log_warn("cannot hold SIGTERM/SIGINT during start-up");
	rc = ms_pool_create(&pool, s->size, r->huge, s->allow_unlocked);
	if (rc < 0)
		return 1;
	rc = ms_segtab_init(&ctx->segs, pool.base, pool.size,
			    (uint32_t)s->segment_size);
	if (rc < 0) {
		log_err("segment table for %zu bytes: %s", pool.size, strerror(-rc));
		ms_pool_destroy(&pool);
		return 1;
	}
	ms_ctx_new_boot(ctx);
	elastic_setup(s, ctx, &pool);
	ms_devtab_init(&ctx->devs, s->lease_ms);
	ms_devtab_set_quota(&ctx->devs, &r->quota, ctx->segs.nslots,
			    ctx->segs.seg_max);
	ctx->pool_locked = pool.locked;
	ctx->now_ms = ms_now_ms;
	log_info("pool %zu MiB (%u segments of %u KiB), %s, %s pages, lease %llu ms, "
		 "quota %s, boot id %016llx",
		 pool.size >> 20, ctx->segs.nslots, ctx->segs.seg_max >> 10,
		 pool.locked ? "locked" : "NOT locked",
		 pool.huge == 1 ? "hugetlb" : pool.huge == 2 ? "transparent huge" : "small",
		 (unsigned long long)s->lease_ms, s->quota,
		 (unsigned long long)ctx->boot_id);
	rc = metrics_start(s, ctx, &metrics);
	if (rc == 0)
		rc = ms_registry_start(s, r, ctx->metrics, &registry);
	if (rc == 0)
		rc = ms_server_run(ctx, r, s->pid_file);
	ms_registry_stop(registry);
	metrics_server_stop(metrics);
	ms_devtab_fini(&ctx->devs);
	ms_segtab_fini(&ctx->segs);
	ms_pool_destroy(&pool);
	return rc < 0 ? 1 : 0;
}

static int stat_mode(const struct args *a, struct ms_settings *s)
{
	static struct fm_secret secret;
	char err[CFG_ERR_LEN];

	if (s->secret_file[0] == '\0') {
		fprintf(stderr, "farmem-memserver: --stat needs --secret-file "
			"(or a --config naming secret-file)\n");
		return 2;
	}
	if (fm_secret_load(s->secret_file, &secret, err, sizeof(err)) < 0) {
		fprintf(stderr, "farmem-memserver: %s\n", err);
		return 1;
	}
	return ms_stat_client(a->stat_addr, &secret, a->json) < 0 ? 1 : 0;
}

/* --drain local: this host's own server, as its settings say (the
 * systemd unit's ExecStop): the first tcp listen address, a wildcard
 * host reached through loopback.  0, or -EINVAL (explained). */
static int local_addr(const struct ms_settings *s, char *out, size_t len)
{
	char first[sizeof(s->listen)], *comma;
	struct fm_addr a;

	snprintf(first, sizeof(first), "%s", s->listen);
	comma = strchr(first, ',');
	if (comma)
		*comma = '\0';
	if (parse_addr(first, 0, &a) < 0 || a.kind != ADDR_TCP) {
		fprintf(stderr, "farmem-memserver: --drain local: listen '%s' does not "
			"start with a tcp://HOST:PORT address\n", s->listen);
		return -EINVAL;
	}
	if (strcmp(a.host, "0.0.0.0") == 0 || a.host[0] == '\0')
		snprintf(a.host, sizeof(a.host), "127.0.0.1");
	else if (strcmp(a.host, "::") == 0)
		snprintf(a.host, sizeof(a.host), "::1");
	addr_str(&a, out, len);
	return 0;
}

/* --drain ADDR: needs only the secret (the cluster identity). */
static int drain_mode(const struct args *a, const struct ms_settings *s)
{
	static struct fm_secret secret;
	char err[CFG_ERR_LEN], local[320];
	const char *addr = a->drain_addr;
	uint64_t timeout_ms = MS_DRAIN_TIMEOUT_DEFAULT_MS;
	int rc;

	if (s->secret_file[0] == '\0') {
		fprintf(stderr, "farmem-memserver: --drain needs --secret-file "
			"(or a --config naming secret-file)\n");
		return 2;
	}
	if (a->timeout && (parse_duration_ms(a->timeout, &timeout_ms) < 0 ||
			   timeout_ms == 0 || timeout_ms > FM_NOTICE_DEADLINE_MAX)) {
		fprintf(stderr, "farmem-memserver: --timeout '%s': not a duration "
			"between 1ms and 24h (e.g. 90s, 5m)\n", a->timeout);
		return 2;
	}
	if (strcmp(addr, "local") == 0) {
		if (local_addr(s, local, sizeof(local)) < 0)
			return 2;
		addr = local;
	}
	if (fm_secret_load(s->secret_file, &secret, err, sizeof(err)) < 0) {
		fprintf(stderr, "farmem-memserver: %s\n", err);
		return 2;
	}
	rc = ms_drain_client(addr, &secret, timeout_ms);
	fm_wipe(&secret, sizeof(secret));
	return rc;
}

/* --client-key NAME: the key file of client NAME on stdout.  Needs the
 * secret, not the rest of the settings. */
static int client_key_mode(const struct args *a, const struct ms_settings *s)
{
	static struct fm_secret secret;
	struct fm_identity id;
	char err[CFG_ERR_LEN], text[512];
	int rc;

	if (s->secret_file[0] == '\0') {
		fprintf(stderr, "farmem-memserver: --client-key needs --secret-file "
			"(or a --config naming secret-file)\n");
		return 2;
	}
	if (strcmp(a->client_key, FM_CLUSTER_NAME) == 0 ||
	    fm_client_name_check(a->client_key, strlen(a->client_key)) < 0) {
		fprintf(stderr, "farmem-memserver: --client-key '%s': %s\n", a->client_key,
			strcmp(a->client_key, FM_CLUSTER_NAME) == 0 ?
			"reserved for clients holding the secret itself" :
			"not a client name (1..32 of a-z 0-9 . _ -, starting with a "
			"letter or digit)");
		return 2;
	}
	if (fm_secret_load(s->secret_file, &secret, err, sizeof(err)) < 0) {
		fprintf(stderr, "farmem-memserver: %s\n", err);
		return 1;
	}
	rc = fm_identity_derive(&secret, a->client_key, &id);
	fm_wipe(&secret, sizeof(secret));
	if (rc == 0)
		rc = fm_keyfile_format(&id, text, sizeof(text));
	fm_wipe(&id, sizeof(id));
	if (rc < 0 || fputs(text, stdout) == EOF || fflush(stdout) != 0) {
		fm_wipe(text, sizeof(text));
		fprintf(stderr, "farmem-memserver: --client-key: cannot write the key file\n");
		return 1;
	}
	fm_wipe(text, sizeof(text));
	return 0;
}

int main(int argc, char **argv)
{
	static struct args a;
	static struct ms_settings s;
	static struct ms_resolved r;
	static struct ms_ctx ctx;
	char err[CFG_ERR_LEN];
	int rc;

	log_init("farmem-memserver", LOG_LVL_INFO);
	rc = parse_args(argc, argv, &a);
	if (rc >= 0)
		return rc;
	if (a.verbose)
		log_set_level(LOG_LVL_DEBUG);
	if (fm_auth_init() < 0) {
		fprintf(stderr, "farmem-memserver: libsodium failed to start\n");
		return 1;
	}
	if (build_settings(&a, &s, err, sizeof(err)) < 0) {
		fprintf(stderr, "farmem-memserver: %s\n", err);
		return 1;
	}
	if (a.stat_addr)
		return stat_mode(&a, &s);
	if (a.client_key)
		return client_key_mode(&a, &s);
	if (a.drain_addr)
		return drain_mode(&a, &s);
	if (a.timeout) {
		fprintf(stderr, "farmem-memserver: --timeout is for --drain\n");
		return 2;
	}
	if (ms_settings_complete(&s, &r, &ctx.secret, err, sizeof(err)) < 0) {
		fprintf(stderr, "farmem-memserver: %s\n", err);
		return 1;
	}
	if (a.check) {
		/* A warning only: the service may run with other limits. */
		if (!s.allow_unlocked &&
		    ms_pool_lock_check(s.size, err, sizeof(err)) < 0)
			fprintf(stderr, "farmem-memserver: warning: %s\n", err);
		printf("farmem-memserver: configuration OK\n");
		return 0;
	}
	if (r.use_syslog)
		log_use_syslog();
	return run(&s, &r, &ctx);
}
