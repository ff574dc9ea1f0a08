/* etcd.c — the etcd v3 calls over the JSON gateway, with failover.
 *
 * A call goes to the current endpoint; when that one cannot be reached
 * (connect error, timeout, 5xx), it is tried on the next, each attempt
 * bounded by the client's timeout, so a call takes at most n timeouts.
 * The endpoint that answered stays current.
 */
#include "etcd.h"
#include "etcd_curl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESP_MAX   (256u << 10)   /* a range of every member fits */
#define BODY_MAX   4096
#define LINE_MAX_B 8192

struct etcd {
	struct etcd_endpoints eps;
	int cur;
	unsigned timeout_ms;
	CURL *h;
	struct curl_slist *hdrs;
	char *resp;
	size_t resp_len;
	int resp_over;
	/* Watch: the current line, and what the stream said so far. */
	char line[LINE_MAX_B];
	size_t line_len;
	int watch_created, watch_changed, watch_bad;
	char err[256];
};

const char *etcd_endpoint(const struct etcd *e)
{
	return e->eps.url[e->cur];
}

const char *etcd_last_error(const struct etcd *e)
{
	return e->err;
}

int etcd_open(const struct etcd_endpoints *eps, unsigned timeout_ms,
	      struct etcd **out, char *err, size_t errlen)
{
	struct etcd *e;
	int rc = etcd_curl_load(err, errlen);

	*out = NULL;
	if (rc < 0)
		return rc;
	if (eps->n < 1)
		return -EINVAL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->eps = *eps;
	e->timeout_ms = timeout_ms ? timeout_ms : 2000;
	e->resp = malloc(RESP_MAX);
	e->h = etcd_curl.curl_easy_init();
	e->hdrs = etcd_curl.curl_slist_append(NULL, "Content-Type: application/json");
	if (!e->resp || !e->h || !e->hdrs) {
		snprintf(err, errlen, "cannot set up an HTTP client for etcd");
		etcd_close(e);
		return -ENOMEM;
	}
	*out = e;
	return 0;
}

void etcd_close(struct etcd *e)
{
	if (!e)
		return;
	if (e->h)
		etcd_curl.curl_easy_cleanup(e->h);
	if (e->hdrs)
		etcd_curl.curl_slist_free_all(e->hdrs);
	free(e->resp);
	free(e);
}

static size_t on_data(char *p, size_t sz, size_t nmemb, void *arg)
{
	struct etcd *e = arg;
	size_t n = sz * nmemb;

	if (e->resp_len + n >= RESP_MAX) {
		e->resp_over = 1;
		return 0;   /* aborts the transfer */
	}
	memcpy(e->resp + e->resp_len, p, n);
	e->resp_len += n;
	e->resp[e->resp_len] = '\0';
	return n;
}

/* The watch stream: one JSON object per line.  Returning 0 ends the
 * transfer, which is how the first event closes the watch. */
static size_t on_watch(char *p, size_t sz, size_t nmemb, void *arg)
{
	struct etcd *e = arg;
	size_t n = sz * nmemb;

	for (size_t i = 0; i < n; i++) {
		int r;

		if (p[i] != '\n') {
			if (e->line_len + 1 >= sizeof(e->line)) {
				e->watch_bad = 1;
				return 0;
			}
			e->line[e->line_len++] = p[i];
			continue;
		}
		e->line[e->line_len] = '\0';
		e->line_len = 0;
		r = etcd_parse_watch_line(e->line);
		if (r < 0) {
			e->watch_bad = 1;
			return 0;
		}
		if (r == 0)
			e->watch_created = 1;
		if (r == 1) {
			e->watch_changed = 1;
			return 0;
		}
	}
	return n;
}

static void setup(struct etcd *e, const char *path, const char *body,
		  unsigned timeout_ms, int watch)
{
	char url[ETCD_URL_MAX + 64];
	CURL *h = e->h;

	snprintf(url, sizeof(url), "%s%s", e->eps.url[e->cur], path);
	etcd_curl.curl_easy_reset(h);
	etcd_curl.curl_easy_setopt(h, CURLOPT_URL, url);
	etcd_curl.curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	etcd_curl.curl_easy_setopt(h, CURLOPT_HTTPHEADER, e->hdrs);
	/* Threads: no SIGALRM for timeouts. */
	etcd_curl.curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	etcd_curl.curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)e->timeout_ms);
	etcd_curl.curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	etcd_curl.curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	etcd_curl.curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, watch ? on_watch : on_data);
	etcd_curl.curl_easy_setopt(h, CURLOPT_WRITEDATA, e);
	e->resp_len = 0;
	e->resp_over = 0;
	e->resp[0] = '\0';
	e->line_len = 0;
	e->watch_created = e->watch_changed = e->watch_bad = 0;
}

/* One attempt on the current endpoint: 0 with e->resp the body of a 2xx
 * reply, -EIO for a 4xx (the request is wrong: no point elsewhere),
 * -EHOSTUNREACH/-ETIMEDOUT when this endpoint failed. */
static int attempt(struct etcd *e, const char *path, const char *body)
{
	long code = 0;
	CURLcode c;

	setup(e, path, body, e->timeout_ms, 0);
	c = etcd_curl.curl_easy_perform(e->h);
	if (c != CURLE_OK) {
		snprintf(e->err, sizeof(e->err), "%s: %s", e->eps.url[e->cur],
			 e->resp_over ? "reply too large" : etcd_curl.curl_easy_strerror(c));
		if (e->resp_over)
			return -EMSGSIZE;
		return c == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
	}
	etcd_curl.curl_easy_getinfo(e->h, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 200 && code < 300)
		return 0;
	snprintf(e->err, sizeof(e->err), "%s%s: HTTP %ld: %.120s", e->eps.url[e->cur],
		 path, code, e->resp);
	return code >= 500 ? -EHOSTUNREACH : -EIO;
}

static int call(struct etcd *e, const char *path, const char *body)
{
	int rc = -EHOSTUNREACH;

	for (int k = 0; k < e->eps.n; k++) {
		rc = attempt(e, path, body);
		if (rc == 0 || rc == -EIO || rc == -EMSGSIZE)
			return rc;
		e->cur = (e->cur + 1) % e->eps.n;
	}
	return rc;
}

static int reply_error(struct etcd *e, int rc, const char *what)
{
	if (rc == -EPROTO)
		snprintf(e->err, sizeof(e->err), "%s: %s: unexpected reply: %.120s",
			 e->eps.url[e->cur], what, e->resp);
	else if (rc == -EIO)
		snprintf(e->err, sizeof(e->err), "%s: %s: %.160s", e->eps.url[e->cur],
			 what, e->resp);
	return rc;
}

int etcd_lease_grant(struct etcd *e, int ttl_s, int64_t *id)
{
	char body[BODY_MAX];
	int ttl, rc = etcd_body_grant(ttl_s, body, sizeof(body));

	if (rc == 0)
		rc = call(e, "/v3/lease/grant", body);
	if (rc == 0)
		rc = reply_error(e, etcd_parse_grant(e->resp, id, &ttl), "lease grant");
	return rc;
}

int etcd_lease_keepalive(struct etcd *e, int64_t id)
{
	char body[BODY_MAX];
	int ttl = 0, rc = etcd_body_lease_id(id, body, sizeof(body));

	if (rc == 0)
		rc = call(e, "/v3/lease/keepalive", body);
	if (rc == 0)
		rc = reply_error(e, etcd_parse_keepalive(e->resp, &ttl), "keepalive");
	if (rc == 0 && ttl <= 0) {
		snprintf(e->err, sizeof(e->err), "lease %llx expired", (unsigned long long)id);
		return -ENOENT;
	}
	return rc;
}

int etcd_lease_revoke(struct etcd *e, int64_t id)
{
	char body[BODY_MAX];
	int rc = etcd_body_lease_id(id, body, sizeof(body));

	if (rc == 0)
		rc = call(e, "/v3/lease/revoke", body);
	return rc;
}

int etcd_put(struct etcd *e, const char *key, const char *value, int64_t lease)
{
	char body[BODY_MAX];
	int rc = etcd_body_put(key, value, lease, body, sizeof(body));

	if (rc == 0)
		rc = call(e, "/v3/kv/put", body);
	if (rc == 0 && etcd_parse_revision(e->resp) == 0)
		rc = reply_error(e, -EPROTO, "put");
	return rc;
}

int etcd_range_prefix(struct etcd *e, const char *prefix, struct etcd_kv *kvs,
		      int max, int *n, int64_t *revision)
{
	char body[BODY_MAX];
	int rc = etcd_body_range_prefix(prefix, body, sizeof(body));

	*n = 0;
	if (rc == 0)
		rc = call(e, "/v3/kv/range", body);
	if (rc == 0)
		rc = reply_error(e, etcd_parse_range(e->resp, kvs, max, n, revision), "range");
	return rc;
}

int etcd_watch_prefix(struct etcd *e, const char *prefix, int64_t rev, unsigned wait_ms)
{
	char body[BODY_MAX];
	CURLcode c;
	int rc = etcd_body_watch_prefix(prefix, rev + 1, body, sizeof(body));

	if (rc < 0)
		return rc;
	setup(e, "/v3/watch", body, wait_ms, 1);
	c = etcd_curl.curl_easy_perform(e->h);
	if (e->watch_changed)
		return 1;
	if (e->watch_bad) {
		snprintf(e->err, sizeof(e->err), "%s: watch: unexpected stream", e->eps.url[e->cur]);
		return -EPROTO;
	}
	/* The stream never ends on its own: the time limit is the normal
	 * end of a quiet watch, once etcd said it was created. */
	if (c == CURLE_OPERATION_TIMEDOUT && e->watch_created)
		return 0;
	snprintf(e->err, sizeof(e->err), "%s: watch: %s", e->eps.url[e->cur],
		 c == CURLE_OK ? "stream ended" : etcd_curl.curl_easy_strerror(c));
	e->cur = (e->cur + 1) % e->eps.n;
	return c == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : -EHOSTUNREACH;
}
