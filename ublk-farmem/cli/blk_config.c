/* blk_config.c — farmem.conf [device]/[serve] and the matching flags,
 * checked into a struct store_config. */
#include "blk_config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli_text.h"
#include "auth.h"
#include "codec.h"
#include "config.h"
#include "frontend/nbd/nbd_psk.h"
#include "keyfile.h"
#include "metrics_http.h"

#define S(field) offsetof(struct blk_settings, field)
#define SZ(field) sizeof(((struct blk_settings *)0)->field)

/* zstd accepts levels down to -(1 << 17) ("fast" levels) and up to 22. */
#define ZSTD_LEVEL_MIN (-131072)
#define ZSTD_LEVEL_MAX 22
#define LZ4_LEVEL_MAX 12
#define SEGMENT_MIN (64u << 10)
#define SEGMENT_MAX (1u << 30)
#define TIMEOUT_MAX_MS (3600u * 1000u)
#define SERVE_HANDSHAKE_DEFAULT_MS 10000u
#define SERVE_IDLE_DEFAULT_MS (600u * 1000u)
#define SERVE_IDLE_MAX_MS (7u * 24 * 3600 * 1000)

static const struct cfg_key blk_keys[] = {
	{ "device:servers", CFG_STRING, S(servers), SZ(servers), 0, 0,
	  "memservers, comma-separated tcp://host:port or rdma://host:port, or "
	  "etcd://HOST:PORT[,HOST:PORT...]/CLUSTER" },
	{ "device:secret-file", CFG_STRING, S(secret_file), SZ(secret_file), 0, 0,
	  "file holding the shared secret (>= 16 bytes): the cluster's identity" },
	{ "device:key-file", CFG_STRING, S(key_file), SZ(key_file), 0, 0,
	  "client key file (farmem-memserver --client-key NAME): act as NAME" },
	{ "device:size", CFG_SIZE, S(size), 0, 0, 0,
	  "device size, multiple of 4096 (K/M/G/T suffixes)" },
	{ "device:replicas", CFG_U64, S(replicas), 0, 0, STORE_MAX_REPLICAS,
	  "copies of each page (default 2 with >= 2 servers, else 1)" },
	{ "device:compress", CFG_STRING, S(compress), SZ(compress), 0, 0,
	  "zstd (default), lz4 or none" },
	{ "device:level", CFG_I64, S(level), 0, ZSTD_LEVEL_MIN, ZSTD_LEVEL_MAX,
	  "compression level (zstd: negative = faster; 0 = default, zstd 1)" },
	{ "device:queues", CFG_U64, S(queues), 0, 0, STORE_MAX_QUEUES,
	  "ublk: hardware queues; nbd: connections (default: online CPUs, <= 8)" },
	{ "device:depth", CFG_U64, S(depth), 0, 0, 4096,
	  "ublk: tags per queue; nbd: worker contexts per connection" },
	{ "device:segment-size", CFG_SIZE, S(segment_size), 0, 0, 0,
	  "remote segment size (default 4M)" },
	{ "device:timeout", CFG_DURATION, S(timeout_ms), 0, 0, 0,
	  "per remote request (default 5s)" },
	{ "device:uuid", CFG_STRING, S(uuid), SZ(uuid), 0, 0,
	  "device identity (default: generated)" },
	{ "device:state-dir", CFG_STRING, S(state_dir), SZ(state_dir), 0, 0,
	  "where the page map lives (default /run/farmem)" },
	{ "device:frontend", CFG_STRING, S(frontend), SZ(frontend), 0, 0,
	  "add: ublk (default) or nbd" },
	{ "device:metrics", CFG_STRING, S(metrics), SZ(metrics), 0, 0,
	  "Prometheus metrics at http://HOST:PORT/metrics (default off)" },
	{ "serve:nbd", CFG_STRING, S(nbd), SZ(nbd), 0, 0,
	  "serve: NBD listen address, unix:/path or tcp://host:port" },
	{ "serve:tls-psk", CFG_STRING, S(tls_psk), SZ(tls_psk), 0, 0,
	  "serve: require TLS with these pre-shared keys (username:hexkey lines)" },
	{ "serve:tls-cert", CFG_STRING, S(tls_cert), SZ(tls_cert), 0, 0,
	  "serve: require TLS with this x509 certificate (PEM; with tls-key)" },
	{ "serve:tls-key", CFG_STRING, S(tls_key), SZ(tls_key), 0, 0,
	  "serve: the certificate's private key (PEM)" },
	{ "serve:handshake-timeout", CFG_DURATION, S(handshake_timeout_ms), 0, 100,
	  TIMEOUT_MAX_MS, "serve: a client's whole NBD handshake (default 10s)" },
	{ "serve:idle-timeout", CFG_DURATION, S(idle_timeout_ms), 0, 0,
	  SERVE_IDLE_MAX_MS, "serve: close after this long without requests (default 10m; 0: never)" },
	{ "serve:insecure", CFG_BOOL, S(insecure), 0, 0, 0,
	  "serve: allow tcp:// beyond loopback without TLS (default no)" },
	{ "swap:priority", CFG_I64, S(swap_priority), 0, -1, 32767,
	  "farmem-swap@: swapon priority (default 100)" },
	{ "swap:discard", CFG_STRING, S(swap_discard), SZ(swap_discard), 0, 0,
	  "farmem-swap@: pages (default), once, both or none" },
	{ "device:encrypt", CFG_STRING, S(encrypt), SZ(encrypt), 0, 0,
	  "records sealed with: auto (default: aes256gcm with AES-NI, else "
	  "xchacha20poly1305), aes256gcm, xchacha20poly1305 or none" },
	{ "offload:cgroup", CFG_STRING, S(offload_cgroup), SZ(offload_cgroup), 0, 0,
	  "offload: cgroup v2 directories, comma-separated" },
	{ "offload:cgroup-root", CFG_STRING, S(offload_cgroup_root),
	  SZ(offload_cgroup_root), 0, 0,
	  "offload: relative cgroup paths start here (default /sys/fs/cgroup)" },
	{ "offload:interval", CFG_STRING, S(offload_interval), SZ(offload_interval), 0, 0,
	  "offload: time between steps (default 6s)" },
	{ "offload:pressure", CFG_STRING, S(offload_pressure), SZ(offload_pressure), 0, 0,
	  "offload: memory pressure target, share of wall time (default 0.1%)" },
	{ "offload:max-step", CFG_STRING, S(offload_max_step), SZ(offload_max_step), 0, 0,
	  "offload: largest step, share of memory.current (default 1%)" },
	{ "offload:min", CFG_STRING, S(offload_min), SZ(offload_min), 0, 0,
	  "offload: never reclaim a cgroup below this (default: its unreclaimable memory + 16M)" },
	{ "offload:metrics", CFG_STRING, S(offload_metrics), SZ(offload_metrics), 0, 0,
	  "offload: Prometheus metrics at http://HOST:PORT/metrics (default off)" },
};
#define NKEYS (sizeof(blk_keys) / sizeof(blk_keys[0]))

enum {
	OPT_CONFIG = 0x100, OPT_HELP, OPT_CHECK, OPT_KEY_BASE = 0x200,
};

/* Flag name -> key; the flag's val is OPT_KEY_BASE + index here. */
static const struct { const char *flag; const char *key; } flag_keys[] = {
	{ "servers", "device:servers" },
	{ "secret-file", "device:secret-file" },
	{ "size", "device:size" },
	{ "replicas", "device:replicas" },
	{ "compress", "device:compress" },
	{ "level", "device:level" },
	{ "queues", "device:queues" },
	{ "depth", "device:depth" },
	{ "segment-size", "device:segment-size" },
	{ "timeout", "device:timeout" },
	{ "uuid", "device:uuid" },
	{ "state-dir", "device:state-dir" },
	{ "frontend", "device:frontend" },
	{ "nbd", "serve:nbd" },
	{ "tls-psk", "serve:tls-psk" },
	{ "tls-cert", "serve:tls-cert" },
	{ "tls-key", "serve:tls-key" },
	{ "handshake-timeout", "serve:handshake-timeout" },
	{ "idle-timeout", "serve:idle-timeout" },
	{ "insecure", "serve:insecure" },
	{ "metrics", "device:metrics" },
	{ "key-file", "device:key-file" },
	{ "encrypt", "device:encrypt" },
};
#define NFLAGS (sizeof(flag_keys) / sizeof(flag_keys[0]))
_Static_assert(NFLAGS <= 32, "from_flags has one bit per flag");
#define MAX_EXTRA 32

int blk_compress_level(const struct blk_config *cfg)
{
	/* store.c asserts the two enums agree. */
	return fm_codec_level((enum fm_codec_algo)cfg->store.compress, cfg->store.level);
}

const char *blk_compress_name(enum store_compress c)
{
	switch (c) {
	case STORE_COMPRESS_NONE: return "none";
	case STORE_COMPRESS_ZSTD: return "zstd";
	case STORE_COMPRESS_LZ4: return "lz4";
	}
	return "?";
}

void blk_config_defaults(struct blk_config *cfg, enum blk_command command)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->command = command;
	snprintf(cfg->set.compress, sizeof(cfg->set.compress), "zstd");
	snprintf(cfg->set.state_dir, sizeof(cfg->set.state_dir), "/run/farmem");
	snprintf(cfg->set.swap_discard, sizeof(cfg->set.swap_discard), "pages");
	snprintf(cfg->set.encrypt, sizeof(cfg->set.encrypt), "auto");
	cfg->set.swap_priority = 100;
	cfg->set.handshake_timeout_ms = SERVE_HANDSHAKE_DEFAULT_MS;
	cfg->set.idle_timeout_ms = SERVE_IDLE_DEFAULT_MS;
}

int blk_config_load_file(struct blk_config *cfg, const char *file,
			 char *err, size_t errlen)
{
	int rc = cfg_load(file, blk_keys, NKEYS, &cfg->set, err, errlen);

	if (rc == 0)
		snprintf(cfg->config_file, sizeof(cfg->config_file), "%s", file);
	return rc;
}

int blk_config_set(struct blk_config *cfg, const char *key, const char *value,
		   const char *origin, char *err, size_t errlen)
{
	return cfg_set(blk_keys, NKEYS, &cfg->set, key, value, origin, err, errlen);
}

/* Where a key's value came from, for messages: the flag when one was
 * given on this run, else the file. */
static const char *origin_of(const struct blk_config *cfg, const char *flag,
			     char *buf, size_t len)
{
	for (size_t i = 0; i < NFLAGS; i++) {
		if (strcmp(flag_keys[i].flag, flag))
			continue;
		if (!(cfg->from_flags & (1u << i)) && cfg->config_file[0])
			snprintf(buf, len, "%s: key '%s'", cfg->config_file,
				 flag_keys[i].key);
		else
			snprintf(buf, len, "--%s", flag);
		return buf;
	}
	snprintf(buf, len, "--%s", flag);
	return buf;
}

/* etcd://HOST:PORT[,HOST:PORT...]/CLUSTER: the store finds the servers
 * (membership.c) when it opens; none are known here. */
static int finish_etcd(struct blk_config *cfg, const char *o, char *err, size_t errlen)
{
	struct store_config *sc = &cfg->store;
	char why[300];

	if (etcd_url_parse(cfg->set.servers, &sc->etcd, sc->cluster, sizeof(sc->cluster),
			   why, sizeof(why)) < 0)
		return cli_fail(err, errlen, "%s: %s", o, why);
	sc->nservers = 0;
	return 0;
}

static int finish_servers(struct blk_config *cfg, char *err, size_t errlen)
{
	char text[BLK_SERVERS_TEXT_MAX], o[PATH_MAX + 32];
	char *items[STORE_MAX_SERVERS + 1];
	struct store_config *sc = &cfg->store;
	int n;

	origin_of(cfg, "servers", o, sizeof(o));
	if (!cfg->set.servers[0])
		return cli_fail(err, errlen, "%s: no memservers given "
			    "(e.g. --servers tcp://10.0.0.2:7070,tcp://10.0.0.3:7070)", o);
	if (etcd_url_is(cfg->set.servers))
		return finish_etcd(cfg, o, err, errlen);
	snprintf(text, sizeof(text), "%s", cfg->set.servers);
	n = split_list(text, items, STORE_MAX_SERVERS + 1);
	if (n < 0 || n > STORE_MAX_SERVERS)
		return cli_fail(err, errlen, "%s: more than %d servers", o, STORE_MAX_SERVERS);
	for (int i = 0; i < n; i++) {
		if (parse_addr(items[i], 0, &sc->servers[i]) < 0)
			return cli_fail(err, errlen, "%s: server '%s' is not "
				    "tcp://host:port or rdma://host:port", o, items[i]);
		for (int j = 0; j < i; j++)
			if (sc->servers[j].kind == sc->servers[i].kind &&
			    sc->servers[j].port == sc->servers[i].port &&
			    !strcmp(sc->servers[j].host, sc->servers[i].host))
				return cli_fail(err, errlen, "%s: server '%s' is listed twice",
					    o, items[i]);
	}
	if (n == 0)
		return cli_fail(err, errlen, "%s: no memservers given", o);
	sc->nservers = n;
	return 0;
}

static int finish_replicas(struct blk_config *cfg, char *err, size_t errlen)
{
	struct store_config *sc = &cfg->store;
	char o[PATH_MAX + 32];
	uint64_t r = cfg->set.replicas;

	origin_of(cfg, "replicas", o, sizeof(o));
	if (sc->etcd.n) {
		/* Checked against the members found when the store opens. */
		if (r > STORE_MAX_REPLICAS)
			return cli_fail(err, errlen, "%s: %llu replicas: at most %d", o,
				    (unsigned long long)r, STORE_MAX_REPLICAS);
		sc->replicas = (int)r;
		return 0;
	}
	if (r == 0)
		r = sc->nservers >= 2 ? 2 : 1;
	if (r > (uint64_t)sc->nservers)
		return cli_fail(err, errlen, "%s: %llu replicas need at least %llu "
			    "servers, got %d", o, (unsigned long long)r,
			    (unsigned long long)r, sc->nservers);
	sc->replicas = (int)r;
	return 0;
}

static int finish_size(struct blk_config *cfg, char *err, size_t errlen)
{
	char o[PATH_MAX + 32];
	uint64_t seg = cfg->set.segment_size;

	origin_of(cfg, "size", o, sizeof(o));
	if (cfg->set.size == 0)
		return cli_fail(err, errlen, "%s: device size missing or 0 (e.g. --size 1G)", o);
	if (cfg->set.size % STORE_PAGE)
		return cli_fail(err, errlen, "%s: size %llu is not a multiple of %u",
			    o, (unsigned long long)cfg->set.size, STORE_PAGE);
	cfg->store.size = cfg->set.size;
	origin_of(cfg, "segment-size", o, sizeof(o));
	if (seg && (seg % STORE_PAGE || seg < SEGMENT_MIN || seg > SEGMENT_MAX))
		return cli_fail(err, errlen, "%s: segment size %llu must be a multiple "
			    "of %u between 64K and 1G", o, (unsigned long long)seg,
			    STORE_PAGE);
	cfg->store.segment_size = (uint32_t)seg;
	return 0;
}

static int finish_compress(struct blk_config *cfg, char *err, size_t errlen)
{
	const char *c = cfg->set.compress;
	int64_t lvl = cfg->set.level;
	char o[PATH_MAX + 32];

	origin_of(cfg, "compress", o, sizeof(o));
	if (!strcasecmp(c, "zstd"))
		cfg->store.compress = STORE_COMPRESS_ZSTD;
	else if (!strcasecmp(c, "lz4"))
		cfg->store.compress = STORE_COMPRESS_LZ4;
	else if (!strcasecmp(c, "none"))
		cfg->store.compress = STORE_COMPRESS_NONE;
	else
		return cli_fail(err, errlen, "%s: unknown compression '%s' "
			    "(zstd, lz4 or none)", o, c);
	origin_of(cfg, "level", o, sizeof(o));
	if (cfg->store.compress == STORE_COMPRESS_LZ4 && (lvl < 0 || lvl > LZ4_LEVEL_MAX))
		return cli_fail(err, errlen, "%s: lz4 level %lld out of range 0..%d",
			    o, (long long)lvl, LZ4_LEVEL_MAX);
	if (cfg->store.compress == STORE_COMPRESS_NONE && lvl != 0)
		return cli_fail(err, errlen, "%s: level %lld given with compress none",
			    o, (long long)lvl);
	cfg->store.level = (int)lvl;
	return 0;
}

/* On by default; an algorithm this CPU cannot run is refused here. */
static int finish_encrypt(struct blk_config *cfg, char *err, size_t errlen)
{
	enum store_encrypt resolved;
	char o[PATH_MAX + 32];

	origin_of(cfg, "encrypt", o, sizeof(o));
	if (store_encrypt_parse(cfg->set.encrypt, &cfg->store.encrypt) < 0)
		return cli_fail(err, errlen, "%s: unknown encryption '%s' (auto, "
			    "aes256gcm, xchacha20poly1305 or none)", o, cfg->set.encrypt);
	if (store_encrypt_resolve(cfg->store.encrypt, &resolved) < 0)
		return cli_fail(err, errlen, "%s: '%s' needs AES-NI, which this CPU "
			    "lacks (auto or xchacha20poly1305)", o, cfg->set.encrypt);
	return 0;
}

static int finish_frontend(struct blk_config *cfg, char *err, size_t errlen)
{
	const char *f = cfg->set.frontend;
	char o[PATH_MAX + 32];

	origin_of(cfg, "frontend", o, sizeof(o));
	if (!f[0])
		cfg->frontend = cfg->command == BLK_CMD_SERVE ? BLK_FRONTEND_NBD
							      : BLK_FRONTEND_UBLK;
	else if (!(cfg->frontend = blk_frontend_by_name(f)))
		return cli_fail(err, errlen, "%s: unknown frontend '%s' (ublk or nbd)", o, f);
	if (cfg->command == BLK_CMD_SERVE && cfg->frontend != BLK_FRONTEND_NBD)
		return cli_fail(err, errlen, "%s: serve always exports NBD; "
			    "frontend '%s' is for add", o, f);
	return 0;
}

int blk_default_queues(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > BLK_DEFAULT_QUEUES_MAX ? BLK_DEFAULT_QUEUES_MAX : (int)n;
}

/* Clients open several connections at once (qemu-img keeps a probe open
 * while it opens more); fewer than this would refuse them on a small
 * machine. */
#define SERVE_MIN_CONNS 4

/* A queue per CPU lets each CPU swap through its own; serve's connections
 * (a loop each) get at least SERVE_MIN_CONNS, and each takes depth store
 * queues, so there the default gives way to fit. */
static uint64_t default_queues(int nbd, uint64_t depth)
{
	uint64_t q = (uint64_t)blk_default_queues();

	if (nbd && q < SERVE_MIN_CONNS)
		q = SERVE_MIN_CONNS;

	if (nbd && q * depth > STORE_MAX_QUEUES)
		q = depth < STORE_MAX_QUEUES ? STORE_MAX_QUEUES / depth : 1;
	return q;
}

/* queues/depth and how many store queues they take (header comment). */
static int finish_queues(struct blk_config *cfg, char *err, size_t errlen)
{
	int nbd = cfg->command == BLK_CMD_SERVE;
	uint64_t q = cfg->set.queues, d = cfg->set.depth, storeq;
	char o[PATH_MAX + 32];

	if (d == 0)
		d = nbd ? 16 : 64;
	if (q == 0)
		q = default_queues(nbd, d);
	storeq = nbd ? q * d : q;
	origin_of(cfg, cfg->set.depth && !cfg->set.queues ? "depth" : "queues", o, sizeof(o));
	if (storeq > STORE_MAX_QUEUES)
		return cli_fail(err, errlen, nbd ?
			    "%s: %llu connections x %llu workers = %llu store "
			    "queues, more than %d" :
			    "%s: %llu queues (x%llu) = %llu store queues, more than %d",
			    o, (unsigned long long)q, (unsigned long long)d,
			    (unsigned long long)storeq, STORE_MAX_QUEUES);
	cfg->queues = (int)q;
	cfg->depth = (int)d;
	cfg->store.queues = (int)storeq;
	return 0;
}

static int finish_uuid(struct blk_config *cfg, char *err, size_t errlen)
{
	char o[PATH_MAX + 32];

	origin_of(cfg, "uuid", o, sizeof(o));
	if (cfg->set.uuid[0]) {
		if (fm_uuid_parse(cfg->set.uuid, cfg->store.uuid) < 0)
			return cli_fail(err, errlen, "%s: '%s' is not a UUID "
				    "(xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", o,
				    cfg->set.uuid);
	} else {
		/* libsodium's generator wants sodium_init() first. */
		if (fm_auth_init() < 0)
			return cli_fail(err, errlen, "cannot initialise libsodium");
		fm_uuid_generate(cfg->store.uuid);
		cfg->uuid_generated = 1;
	}
	fm_uuid_format(cfg->store.uuid, cfg->uuid_text);
	if (cfg->set.state_dir[0] && cfg->command == BLK_CMD_ADD) {
		int n = snprintf(cfg->state_path, sizeof(cfg->state_path),
				 "%s/%s.state", cfg->set.state_dir, cfg->uuid_text);

		if (n < 0 || (size_t)n >= sizeof(cfg->state_path))
			return cli_fail(err, errlen, "--state-dir: '%s' is too long",
				    cfg->set.state_dir);
		cfg->store.state_path = cfg->state_path;
	}
	return 0;
}

static int finish_nbd(struct blk_config *cfg, char *err, size_t errlen)
{
	char o[PATH_MAX + 32];

	origin_of(cfg, "nbd", o, sizeof(o));
	if (!cfg->set.nbd[0]) {
		if (cfg->command == BLK_CMD_SERVE)
			return cli_fail(err, errlen, "%s: no NBD listen address "
				    "(e.g. --nbd unix:/run/farmem/nbd0.sock or "
				    "--nbd tcp://127.0.0.1:10809)", o);
		return 0;
	}
	if (parse_addr(cfg->set.nbd, 1, &cfg->nbd) < 0 || cfg->nbd.kind == ADDR_RDMA)
		return cli_fail(err, errlen, "%s: '%s' is not unix:/path or "
			    "tcp://host:port", o, cfg->set.nbd);
	return 0;
}

/* 1 when every address host resolves to is a loopback one (127.0.0.0/8,
 * ::1): nobody on another machine can connect. */
static int host_is_loopback(const char *host)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res, *ai;
	int all = 1;

	if (!host[0] || getaddrinfo(host, NULL, &hints, &res))
		return 0;
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)ai->ai_addr;

			all &= (ntohl(a->sin_addr.s_addr) >> 24) == 127;
		} else if (ai->ai_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)ai->ai_addr;

			all &= IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
		} else {
			all = 0;
		}
	}
	freeaddrinfo(res);
	return all;
}

/* serve's TLS files and its refusal of an open TCP listener. */
static int finish_serve_tls(struct blk_config *cfg, int load, char *err, size_t errlen)
{
	const struct blk_settings *set = &cfg->set;
	int tls = set->tls_psk[0] || set->tls_cert[0] || set->tls_key[0];
	char o[PATH_MAX + 32], why[PATH_MAX + 256];
	struct nbd_psk_table t;

	if (cfg->command != BLK_CMD_SERVE)
		return 0;
	if (!set->tls_cert[0] != !set->tls_key[0])
		return cli_fail(err, errlen, "%s: an x509 certificate needs its key: give "
			    "both --tls-cert and --tls-key", origin_of(cfg,
			    set->tls_cert[0] ? "tls-cert" : "tls-key", o, sizeof(o)));
	if (load && set->tls_psk[0]) {
		if (nbd_psk_load(set->tls_psk, &t, why, sizeof(why)) < 0)
			return cli_fail(err, errlen, "%s: %s",
				    origin_of(cfg, "tls-psk", o, sizeof(o)), why);
		nbd_psk_free(&t);
	}
	if (cfg->nbd.kind == ADDR_TCP && !tls && !set->insecure &&
	    !host_is_loopback(cfg->nbd.host))
		return cli_fail(err, errlen, "%s: '%s' can be reached from other machines "
			    "and NBD has no authentication without TLS: give --tls-psk "
			    "FILE (or --tls-cert and --tls-key), listen on 127.0.0.1 or "
			    "a unix socket, or add --insecure to serve in the clear",
			    origin_of(cfg, "nbd", o, sizeof(o)), set->nbd);
	return 0;
}

/* Keys we only check: [device] metrics (its server is started by the
 * command) and [swap] (read by the farmem-swap helper). */
static int finish_extras(struct blk_config *cfg, char *err, size_t errlen)
{
	static const char *const discards[] = { "pages", "once", "both", "none" };
	char o[PATH_MAX + 32], host[ADDR_HOST_MAX];
	uint16_t port;
	int ok = 0;

	origin_of(cfg, "metrics", o, sizeof(o));
	if (cfg->set.metrics[0] &&
	    metrics_parse_listen(cfg->set.metrics, host, sizeof(host), &port) < 0)
		return cli_fail(err, errlen, "%s: '%s' is not HOST:PORT", o, cfg->set.metrics);
	for (size_t i = 0; i < sizeof(discards) / sizeof(discards[0]); i++)
		ok |= !strcmp(cfg->set.swap_discard, discards[i]);
	if (!ok)
		return cli_fail(err, errlen, "%s%s: key 'swap:discard' value '%s': "
			    "pages, once, both or none",
			    cfg->config_file[0] ? cfg->config_file : "config",
			    "", cfg->set.swap_discard);
	return 0;
}

/* Who the device authenticates as: the client a key file names, or,
 * with the secret itself, the cluster's own identity.  One of the two:
 * with both, which one acts would be a guess. */
static int finish_secret(struct blk_config *cfg, int load, char *err, size_t errlen)
{
	char o[PATH_MAX + 32], k[PATH_MAX + 32], why[PATH_MAX + 256];
	int rc;

	origin_of(cfg, "secret-file", o, sizeof(o));
	origin_of(cfg, "key-file", k, sizeof(k));
	if (cfg->set.key_file[0] && cfg->set.secret_file[0])
		return cli_fail(err, errlen, "%s '%s' and %s '%s': give a key file or "
			    "the secret, not both", k, cfg->set.key_file, o,
			    cfg->set.secret_file);
	if (!cfg->set.secret_file[0] && !cfg->set.key_file[0])
		return cli_fail(err, errlen, "%s: no key file given (--key-file, made by "
			    "farmem-memserver --client-key NAME), nor %s "
			    "(the memservers' secret)", k, o);
	if (!load)
		return 0;
	if (cfg->set.key_file[0]) {
		rc = fm_keyfile_load(cfg->set.key_file, &cfg->store.identity, why,
				     sizeof(why));
		if (rc < 0)
			snprintf(err, errlen, "%s: %s", k, why);
		return rc;
	}
	rc = fm_secret_load(cfg->set.secret_file, &cfg->store.secret, why, sizeof(why));
	if (rc == 0 && fm_identity_derive(&cfg->store.secret, FM_CLUSTER_NAME,
					  &cfg->store.identity) < 0)
		rc = -EINVAL;
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", o, why);
		return rc;
	}
	return 0;
}

int blk_config_finish(struct blk_config *cfg, int load_secret,
		      char *err, size_t errlen)
{
	char o[PATH_MAX + 32];
	int rc;

	memset(&cfg->store, 0, sizeof(cfg->store));
	cfg->store.timeout_ms = (uint32_t)cfg->set.timeout_ms;
	if (cfg->set.timeout_ms > TIMEOUT_MAX_MS)
		return cli_fail(err, errlen, "%s: timeout %llums is more than an hour",
			    origin_of(cfg, "timeout", o, sizeof(o)),
			    (unsigned long long)cfg->set.timeout_ms);
	if ((rc = finish_servers(cfg, err, errlen)) < 0 ||
	    (rc = finish_replicas(cfg, err, errlen)) < 0 ||
	    (rc = finish_size(cfg, err, errlen)) < 0 ||
	    (rc = finish_compress(cfg, err, errlen)) < 0 ||
	    (rc = finish_encrypt(cfg, err, errlen)) < 0 ||
	    (rc = finish_frontend(cfg, err, errlen)) < 0 ||
	    (rc = finish_queues(cfg, err, errlen)) < 0 ||
	    (rc = finish_nbd(cfg, err, errlen)) < 0 ||
	    (rc = finish_serve_tls(cfg, load_secret, err, errlen)) < 0 ||
	    (rc = finish_uuid(cfg, err, errlen)) < 0 ||
	    (rc = finish_extras(cfg, err, errlen)) < 0 ||
	    (rc = finish_secret(cfg, load_secret, err, errlen)) < 0)
		return rc;
	return 0;
}

/* Strings go in double quotes for iniparser (values holding '"' are
 * refused at parse time anyway, as no key accepts them). */
char *blk_settings_text(const struct blk_settings *set)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return NULL;
	fprintf(f, "; written by farmem-blk add; read by recover, status, del\n"
		"[device]\n");
	fprintf(f, "servers = \"%s\"\n", set->servers);
	if (set->secret_file[0])
		fprintf(f, "secret-file = \"%s\"\n", set->secret_file);
	if (set->key_file[0])
		fprintf(f, "key-file = \"%s\"\n", set->key_file);
	fprintf(f, "size = %llu\n", (unsigned long long)set->size);
	if (set->replicas)
		fprintf(f, "replicas = %llu\n", (unsigned long long)set->replicas);
	fprintf(f, "compress = \"%s\"\n", set->compress);
	fprintf(f, "level = %lld\n", (long long)set->level);
	if (set->queues)
		fprintf(f, "queues = %llu\n", (unsigned long long)set->queues);
	if (set->depth)
		fprintf(f, "depth = %llu\n", (unsigned long long)set->depth);
	if (set->segment_size)
		fprintf(f, "segment-size = %llu\n", (unsigned long long)set->segment_size);
	if (set->timeout_ms)
		fprintf(f, "timeout = %llums\n", (unsigned long long)set->timeout_ms);
	fprintf(f, "uuid = \"%s\"\n", set->uuid);
	fprintf(f, "state-dir = \"%s\"\n", set->state_dir);
	if (set->frontend[0])
		fprintf(f, "frontend = \"%s\"\n", set->frontend);
	if (set->metrics[0])
		fprintf(f, "metrics = \"%s\"\n", set->metrics);
	if (set->encrypt[0])
		fprintf(f, "encrypt = \"%s\"\n", set->encrypt);
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

static const char *serve_intro =
"usage: farmem-blk serve --servers LIST --key-file FILE|--secret-file FILE --size SIZE\n"
"                        --nbd unix:/PATH|tcp://HOST:PORT [OPTIONS]\n"
"\n"
"Export a farmem store over the NBD protocol in the foreground until\n"
"SIGTERM or SIGINT (in-flight requests finish first).  SIGUSR1 prints the\n"
"store's counters on stderr.  Clients: nbdinfo, nbdcopy, qemu-img, fio (nbd\n"
"engine), nbd-client.  Any export name is accepted.  Example:\n"
"  farmem-blk serve --servers tcp://10.0.0.2:7070,tcp://10.0.0.3:7070 \\\n"
"      --secret-file /etc/farmem/secret --size 8G --nbd unix:/run/farmem/nbd0.sock\n"
"  nbdinfo 'nbd+unix:///?socket=/run/farmem/nbd0.sock'\n";

static const char *add_intro =
"usage: farmem-blk add --servers LIST --key-file FILE|--secret-file FILE --size SIZE\n"
"                      [OPTIONS]\n"
"\n"
"Create a ublk block device (or an NBD one with --frontend nbd) whose\n"
"pages live in the given memservers.\n";

void blk_config_usage(FILE *f, enum blk_command command,
		      const struct blk_extra_opts *extra)
{
	fputs(command == BLK_CMD_SERVE ? serve_intro : add_intro, f);
	fprintf(f,
"\noptions (each overrides the same key of the config file):\n"
"  --config FILE        config file (default " BLK_CONFIG_DEFAULT_FILE " if present)\n"
"  --servers LIST       memservers: tcp://host:port[,tcp://host:port...], or\n"
"                       etcd://HOST:PORT[,HOST:PORT...]/CLUSTER: the memservers\n"
"                       registered there (farmem-memserver --etcd), followed\n"
"                       as they join and leave\n"
"  --secret-file FILE   shared secret, the same file as the memservers'\n"
"                       (acts as the cluster's own identity)\n"
"  --key-file FILE      act as the client this key file names (made by\n"
"                       farmem-memserver --client-key NAME); instead of\n"
"                       --secret-file\n"
"  --size SIZE          device size, a multiple of 4096 (K/M/G/T suffixes)\n"
"  --replicas N         copies of each page, 1..%d, <= servers\n"
"                       (default 2 with at least 2 servers)\n"
"  --compress C         zstd (default), lz4 or none\n"
"  --level N            compression level (default: zstd 1, lz4 1);\n"
"                       zstd allows negative (faster, larger)\n"
"  --queues N           %s\n"
"  --depth N            %s\n"
"  --segment-size SIZE  remote segment size (default 4M)\n"
"  --timeout DURATION   per remote request, e.g. 5s, 500ms (default 5s)\n"
"  --uuid UUID          device identity (default: a new one each run)\n"
"  --state-dir DIR      page map directory for add/recover (default /run/farmem)\n"
"  --frontend F         add: ublk (default) or nbd\n"
"  --nbd ADDR           serve: listen on unix:/path or tcp://host:port\n"
"  --metrics HOST:PORT  serve Prometheus metrics at http://HOST:PORT/metrics\n"
"  --tls-psk FILE       serve: require TLS, keys from FILE (username:hexkey\n"
"                       lines, as psktool writes)\n"
"  --tls-cert FILE      serve: require TLS with this x509 certificate (PEM)\n"
"  --tls-key FILE       serve: the certificate's private key (PEM)\n"
"  --insecure           serve: allow tcp:// beyond loopback without TLS\n"
"  --handshake-timeout DURATION  serve: a client's whole handshake (default 10s)\n"
"  --idle-timeout DURATION       serve: close a connection without requests\n"
"                       this long (default 10m; 0: never)\n"
"  --encrypt ALG        records in memservers: auto (default), aes256gcm,\n"
"                       xchacha20poly1305, or none (plain, checksummed)\n"
"  --check-config       check the settings, print them, and exit\n"
"  --help               this text\n",
		STORE_MAX_REPLICAS,
		command == BLK_CMD_SERVE ? "most NBD connections at once (default: one per\n"
"                       online CPU, 4 to 8, and queues x depth <= 64)"
					 : "ublk hardware queues (default: one per online\n"
"                       CPU, at most 8)",
		command == BLK_CMD_SERVE ? "worker contexts per connection (default 16)"
					 : "ublk tags per queue (default 64)");
	if (extra && extra->usage)
		fputs(extra->usage, f);
	fprintf(f, "\nconfig file keys:\n");
	cfg_print_keys(blk_keys, NKEYS);
}

static void print_config(const struct blk_config *cfg)
{
	char a[400];

	printf("config-file  %s\n", cfg->config_file[0] ? cfg->config_file : "(none)");
	if (cfg->store.etcd.n)
		printf("servers      %s (members of etcd cluster %s)\n", cfg->set.servers,
		       cfg->store.cluster);
	for (int i = 0; i < cfg->store.nservers; i++)
		printf("server       %s\n", addr_str(&cfg->store.servers[i], a, sizeof(a)));
	printf("size         %llu\n", (unsigned long long)cfg->store.size);
	printf("replicas     %d\n", cfg->store.replicas);
	printf("compress     %s level %d\n", blk_compress_name(cfg->store.compress),
	       blk_compress_level(cfg));
	printf("encrypt      %s\n", store_encrypt_name(cfg->store.encrypt));
	printf("queues       %d\ndepth        %d\n", cfg->queues, cfg->depth);
	printf("uuid         %s%s\n", cfg->uuid_text,
	       cfg->uuid_generated ? " (generated)" : "");
	if (cfg->store.identity.name[0])
		printf("client       %s\n", cfg->store.identity.name);
	if (cfg->set.nbd[0])
		printf("nbd          %s\n", addr_str(&cfg->nbd, a, sizeof(a)));
	if (cfg->command == BLK_CMD_SERVE)
		printf("tls          %s%s%s\n", cfg->set.tls_psk[0] ? "psk " : "",
		       cfg->set.tls_psk, cfg->set.tls_cert[0] ? " x509" :
		       cfg->set.tls_psk[0] ? "" : "off");
}

/* A yes/no key's flag takes no value (--insecure). */
static int flag_is_bool(size_t flag)
{
	for (size_t k = 0; k < NKEYS; k++)
		if (!strcmp(blk_keys[k].name, flag_keys[flag].key))
			return blk_keys[k].type == CFG_BOOL;
	return 0;
}

/* Builds the getopt table: shared flags, then the caller's extras. */
static void build_options(struct option *o, size_t max,
			  const struct blk_extra_opts *extra)
{
	size_t n = 0;

	o[n++] = (struct option){ "config", required_argument, NULL, OPT_CONFIG };
	o[n++] = (struct option){ "help", no_argument, NULL, OPT_HELP };
	o[n++] = (struct option){ "check-config", no_argument, NULL, OPT_CHECK };
	for (size_t i = 0; i < NFLAGS; i++)
		o[n++] = (struct option){ flag_keys[i].flag,
					  flag_is_bool(i) ? no_argument : required_argument,
					  NULL, OPT_KEY_BASE + (int)i };
	for (size_t i = 0; extra && extra->opts && extra->opts[i].name &&
	     n + 1 < max; i++)
		o[n++] = extra->opts[i];
	o[n] = (struct option){ 0 };
}

struct pending { int flag; const char *value; };

int blk_config_parse(int argc, char **argv, enum blk_command command,
		     const struct blk_extra_opts *extra, struct blk_config *cfg,
		     int *first_arg, char *err, size_t errlen)
{
	struct option opts[4 + NFLAGS + MAX_EXTRA];
	struct pending flags[128];
	const char *config = NULL;
	int nflags = 0, check = 0, c, rc;

	blk_config_defaults(cfg, command);
	build_options(opts, sizeof(opts) / sizeof(opts[0]), extra);
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		if (c == OPT_HELP) {
			blk_config_usage(stdout, command, extra);
			return 1;
		} else if (c == OPT_CONFIG) {
			config = optarg;
		} else if (c == OPT_CHECK) {
			check = 1;
		} else if (c >= OPT_KEY_BASE && c < OPT_KEY_BASE + (int)NFLAGS) {
			if (nflags == (int)(sizeof(flags) / sizeof(flags[0])))
				return cli_fail(err, errlen, "too many flags");
			flags[nflags++] = (struct pending){ c - OPT_KEY_BASE,
							    optarg ? optarg : "yes" };
		} else if (c >= 0x1000 && extra && extra->handle) {
			rc = extra->handle(extra->arg, c, optarg, err, errlen);
			if (rc < 0)
				return rc;
		} else if (c == ':') {
			return cli_fail(err, errlen, "%s needs a value", argv[optind - 1]);
		} else {
			return cli_fail(err, errlen, "unknown option '%s' (see --help)",
				    argv[optind - 1]);
		}
	}
	if (config || access(BLK_CONFIG_DEFAULT_FILE, F_OK) == 0) {
		rc = blk_config_load_file(cfg, config ? config : BLK_CONFIG_DEFAULT_FILE,
					  err, errlen);
		if (rc < 0)
			return rc == -ENOENT ? -ENOENT : -EINVAL;
	}
	for (int i = 0; i < nflags; i++) {
		char origin[64];

		snprintf(origin, sizeof(origin), "--%s", flag_keys[flags[i].flag].flag);
		rc = blk_config_set(cfg, flag_keys[flags[i].flag].key,
				    flags[i].value, origin, err, errlen);
		if (rc < 0)
			return rc;
		cfg->from_flags |= 1u << flags[i].flag;
	}
	rc = blk_config_finish(cfg, 1, err, errlen);
	if (rc < 0)
		return rc;
	if (first_arg)
		*first_arg = optind;
	if (check) {
		print_config(cfg);
		return 1;
	}
	return 0;
}
