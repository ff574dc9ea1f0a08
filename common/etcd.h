/* etcd.h — a small etcd v3 client over its JSON gateway (/v3/...).
 *
 * Used for membership (memserver/registry.c registers, the client's
 * store/membership.c discovers and watches).  Keys and values travel
 * base64-encoded in JSON (json-c); HTTP is libcurl, loaded with dlopen()
 * on first use (etcd_curl.c says why).  Every call is bounded by the
 * client's timeout; a failed call moves on to the next endpoint, so a
 * client given several endpoints survives any one of them going away.
 *
 * A client is one curl handle: use it from one thread at a time.
 */
#ifndef FARMEM_ETCD_H
#define FARMEM_ETCD_H

#include <stddef.h>
#include <stdint.h>

#define ETCD_MAX_ENDPOINTS 8
#define ETCD_URL_MAX       256
#define ETCD_KEY_MAX       512
#define ETCD_VALUE_MAX     1024
#define ETCD_CLUSTER_MAX   64

/* Endpoints as parsed from "http://h:p,https://h:p,h:p" (a bare h:p
 * means http). */
struct etcd_endpoints {
	char url[ETCD_MAX_ENDPOINTS][ETCD_URL_MAX];
	int n;
};

/* One key and its value (both text), as range and watch return them. */
struct etcd_kv {
	char key[ETCD_KEY_MAX];
	char value[ETCD_VALUE_MAX];
	int64_t mod_revision;
};

struct etcd;

/* ---- etcd_url.c: endpoint lists and etcd:// server URLs ---- */

/* "URL[,URL...]": 0, or -EINVAL with why (names the bad item). */
int etcd_endpoints_parse(const char *list, struct etcd_endpoints *out,
			 char *why, size_t whylen);
/* "etcd://HOST:PORT[,HOST:PORT...]/CLUSTER": endpoints (http) and the
 * cluster name; 0 or -EINVAL with why.  etcd_url_is() tells whether a
 * --servers value is one at all. */
int etcd_url_is(const char *s);
int etcd_url_parse(const char *url, struct etcd_endpoints *eps, char *cluster,
		   size_t clusterlen, char *why, size_t whylen);
/* A cluster name: 1..ETCD_CLUSTER_MAX-1 of [A-Za-z0-9._-]. */
int etcd_cluster_valid(const char *name);
/* The prefix every member key of a cluster starts with:
 * "/farmem/CLUSTER/members/". */
void etcd_members_prefix(const char *cluster, char *out, size_t len);

/* ---- etcd_json.c: request bodies and responses (no I/O) ---- */

struct json_object;
/* Serialises o into out (NUL-terminated) and frees it; rc != 0 only
 * frees it and is returned.  -ENOSPC if out is too small. */
int etcd_json_emit(struct json_object *o, int rc, char *out, size_t len);

/* base64 of len bytes into out (NUL-terminated); -ENOSPC if too small. */
int etcd_b64_encode(const void *in, size_t len, char *out, size_t outlen);
/* base64 text into out; *outlen in: room, out: bytes.  -EINVAL on bad
 * text, -ENOSPC when it does not fit. */
int etcd_b64_decode(const char *in, void *out, size_t *outlen);
/* The range_end that selects every key starting with prefix (prefix
 * with its last byte below 0xff incremented); len bytes, not text. */
int etcd_prefix_end(const char *prefix, char *out, size_t outlen, size_t *len);

/* Bodies, written into out (NUL-terminated); -ENOSPC if too small. */
int etcd_body_grant(int ttl_s, char *out, size_t len);
int etcd_body_lease_id(int64_t id, char *out, size_t len);  /* keepalive, revoke */
int etcd_body_put(const char *key, const char *value, int64_t lease, char *out, size_t len);
int etcd_body_range_prefix(const char *prefix, char *out, size_t len);
int etcd_body_watch_prefix(const char *prefix, int64_t start_rev, char *out, size_t len);

/* Responses.  Each returns 0, or -EPROTO for a body that is not what the
 * gateway sends, or -EIO for an error reply (why, when given, says). */
int etcd_parse_grant(const char *body, int64_t *id, int *ttl);
/* *ttl 0: the lease is gone (expired or revoked). */
int etcd_parse_keepalive(const char *body, int *ttl);
/* Up to max pairs into kvs (*n of them; -E2BIG when there were more),
 * and the store's revision. */
int etcd_parse_range(const char *body, struct etcd_kv *kvs, int max, int *n,
		     int64_t *revision);
/* One line of a watch stream: 1 when it carries events (something
 * changed), 0 for the "created" line or progress, -EPROTO otherwise. */
int etcd_parse_watch_line(const char *line);
/* The header's revision of any reply; 0 when absent. */
int64_t etcd_parse_revision(const char *body);

/* ---- etcd_member.c: what a memserver publishes about itself ----
 *
 * Key: /farmem/CLUSTER/members/ADDR (etcd_members_prefix() + address).
 * Value: {"addr":"tcp://10.0.0.2:7070","size":N,"free":N,"zone":"rack1"}
 * with sizes in bytes; zone is "" when not set. */
#define ETCD_ZONE_MAX 64

struct etcd_member {
	char addr[300];
	uint64_t size;          /* pool bytes it offers */
	uint64_t free;          /* of which unallocated */
	char zone[ETCD_ZONE_MAX];
};

int etcd_member_encode(const struct etcd_member *m, char *out, size_t len);
/* 0, or -EPROTO for a value that is not a member's (missing addr, a
 * field of the wrong type, free above size, too long). */
int etcd_member_decode(const char *value, struct etcd_member *m);
/* A zone name: 0..ETCD_ZONE_MAX-1 of [A-Za-z0-9._-]. */
int etcd_zone_valid(const char *zone);

/* ---- etcd.c: the calls ---- */

/* timeout_ms bounds every call (connect and transfer).  err: why not
 * (e.g. libcurl cannot be loaded). */
int etcd_open(const struct etcd_endpoints *eps, unsigned timeout_ms,
	      struct etcd **out, char *err, size_t errlen);
void etcd_close(struct etcd *e);
/* The endpoint the last call used, and what went wrong with it. */
const char *etcd_endpoint(const struct etcd *e);
const char *etcd_last_error(const struct etcd *e);

int etcd_lease_grant(struct etcd *e, int ttl_s, int64_t *id);
/* -ENOENT when the lease is gone (its keys with it). */
int etcd_lease_keepalive(struct etcd *e, int64_t id);
int etcd_lease_revoke(struct etcd *e, int64_t id);
int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease);
int etcd_range_prefix(struct etcd *e, const char *prefix, struct etcd_kv *kvs,
		      int max, int *n, int64_t *revision);
/* Waits up to wait_ms for a change under prefix after revision rev
 * (a watch from rev + 1, closed at the first event): 1 changed, 0 not
 * within wait_ms, or -errno when etcd cannot be reached. */
int etcd_watch_prefix(struct etcd *e, const char *prefix, int64_t rev, unsigned wait_ms);

#endif
