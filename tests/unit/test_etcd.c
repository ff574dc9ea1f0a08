/* test_etcd.c — the etcd client's JSON, base64 and URL handling (no
 * etcd needed: replies are ones etcd 3.4's gateway sends). */
#include <errno.h>
#include <string.h>

#include "etcd.h"
#include "tap.h"

static int test_b64_round_trip(void)
{
	char enc[64], dec[32];
	size_t n = sizeof(dec);

	CHECK(etcd_b64_encode("foo", 3, enc, sizeof(enc)) == 0);
	CHECK(strcmp(enc, "Zm9v") == 0);
	CHECK(etcd_b64_decode("YmFy", dec, &n) == 0);
	CHECK(n == 3 && memcmp(dec, "bar", 3) == 0);
	n = sizeof(dec);
	CHECK(etcd_b64_decode("not base64!", dec, &n) == -EINVAL);
	n = 2;
	CHECK(etcd_b64_decode("YmFy", dec, &n) < 0);
	CHECK(etcd_b64_encode("foo", 3, enc, 4) == -ENOSPC);
	return 0;
}

static int test_prefix_end(void)
{
	char out[16];
	size_t n;

	CHECK(etcd_prefix_end("/a/", out, sizeof(out), &n) == 0);
	CHECK(n == 3 && memcmp(out, "/a0", 3) == 0);
	CHECK(etcd_prefix_end("a\xff", out, sizeof(out), &n) == 0);
	CHECK(n == 1 && out[0] == 'b');
	CHECK(etcd_prefix_end("", out, sizeof(out), &n) == -EINVAL);
	return 0;
}

static int test_bodies(void)
{
	char b[512];

	CHECK(etcd_body_grant(5, b, sizeof(b)) == 0);
	CHECK(strcmp(b, "{\"TTL\":5}") == 0);
	CHECK(etcd_body_lease_id(4111120325989946117ll, b, sizeof(b)) == 0);
	CHECK(strcmp(b, "{\"ID\":\"4111120325989946117\"}") == 0);
	CHECK(etcd_body_put("foo", "bar", 7, b, sizeof(b)) == 0);
	CHECK(strstr(b, "\"key\":\"Zm9v\"") && strstr(b, "\"value\":\"YmFy\"") &&
	      strstr(b, "\"lease\":\"7\""));
	CHECK(etcd_body_range_prefix("foo", b, sizeof(b)) == 0);
	/* range_end "fop" */
	CHECK(strstr(b, "\"range_end\":\"Zm9w\""));
	CHECK(etcd_body_watch_prefix("foo", 12, b, sizeof(b)) == 0);
	CHECK(strstr(b, "\"create_request\"") && strstr(b, "\"start_revision\":\"12\""));
	CHECK(etcd_body_put("foo", "bar", 0, b, 8) == -ENOSPC);
	return 0;
}

static int test_parse_grant_keepalive(void)
{
	int64_t id = 0;
	int ttl = -1;

	CHECK(etcd_parse_grant("{\"header\":{\"revision\":\"1\"},\"ID\":\"4111120325989946117\","
			       "\"TTL\":\"5\"}", &id, &ttl) == 0);
	CHECK(id == 4111120325989946117ll && ttl == 5);
	CHECK(etcd_parse_keepalive("{\"result\":{\"header\":{},\"ID\":\"1\",\"TTL\":\"5\"}}", &ttl) == 0);
	CHECK(ttl == 5);
	/* A lease that is gone: TTL left out. */
	CHECK(etcd_parse_keepalive("{\"result\":{\"header\":{},\"ID\":\"1\"}}", &ttl) == 0);
	CHECK(ttl == 0);
	CHECK(etcd_parse_keepalive("{\"error\":{\"grpc_code\":14},\"code\":14}", &ttl) == -EIO);
	CHECK(etcd_parse_grant("not json", &id, &ttl) == -EPROTO);
	CHECK(etcd_parse_grant("[1,2]", &id, &ttl) == -EPROTO);
	return 0;
}

static int test_parse_range(void)
{
	struct etcd_kv kv[2];
	int n;
	int64_t rev;
	const char *two = "{\"header\":{\"revision\":\"9\"},\"kvs\":["
		"{\"key\":\"Zm9v\",\"mod_revision\":\"2\",\"value\":\"YmFy\"},"
		"{\"key\":\"Zm9w\",\"mod_revision\":\"3\"}],\"count\":\"2\"}";

	CHECK(etcd_parse_range(two, kv, 2, &n, &rev) == 0);
	CHECK(n == 2 && rev == 9);
	CHECK(!strcmp(kv[0].key, "foo") && !strcmp(kv[0].value, "bar"));
	CHECK(kv[0].mod_revision == 2 && kv[1].value[0] == '\0');
	CHECK(etcd_parse_range(two, kv, 1, &n, &rev) == -E2BIG);
	CHECK(etcd_parse_range("{\"header\":{\"revision\":\"4\"}}", kv, 2, &n, &rev) == 0);
	CHECK(n == 0 && rev == 4);
	/* A key that is not base64, or holds a NUL, is refused. */
	CHECK(etcd_parse_range("{\"header\":{},\"kvs\":[{\"key\":\"%%%\"}]}", kv, 2, &n, &rev) == -EPROTO);
	CHECK(etcd_parse_range("{\"header\":{},\"kvs\":[{\"key\":\"AGE=\"}]}", kv, 2, &n, &rev) == -EPROTO);
	CHECK(etcd_parse_range("{\"kvs\":[]}", kv, 2, &n, &rev) == -EPROTO);
	return 0;
}

static int test_parse_watch(void)
{
	CHECK(etcd_parse_watch_line("{\"result\":{\"header\":{},\"created\":true}}") == 0);
	CHECK(etcd_parse_watch_line("{\"result\":{\"header\":{},\"events\":[{\"type\":\"DELETE\","
				    "\"kv\":{\"key\":\"Zm9v\"}}]}}") == 1);
	CHECK(etcd_parse_watch_line("{\"result\":{\"canceled\":true}}") == 1);
	CHECK(etcd_parse_watch_line("garbage") == -EPROTO);
	CHECK(etcd_parse_revision("{\"header\":{\"revision\":\"42\"}}") == 42);
	return 0;
}

static int test_endpoints(void)
{
	struct etcd_endpoints e;
	char why[200];

	CHECK(etcd_endpoints_parse("http://127.0.0.1:2379, 10.0.0.2:2379,https://[::1]:2379",
				   &e, why, sizeof(why)) == 0);
	CHECK(e.n == 3);
	CHECK(!strcmp(e.url[0], "http://127.0.0.1:2379"));
	CHECK(!strcmp(e.url[1], "http://10.0.0.2:2379"));
	CHECK(!strcmp(e.url[2], "https://[::1]:2379"));
	CHECK(etcd_endpoints_parse("ftp://x:1", &e, why, sizeof(why)) == -EINVAL);
	CHECK(strstr(why, "ftp://x:1"));
	CHECK(etcd_endpoints_parse("http://nohost", &e, why, sizeof(why)) == -EINVAL);
	CHECK(etcd_endpoints_parse("", &e, why, sizeof(why)) == -EINVAL);
	CHECK(etcd_endpoints_parse("http://a:1/v3", &e, why, sizeof(why)) == -EINVAL);
	return 0;
}

static int test_etcd_url(void)
{
	struct etcd_endpoints e;
	char cluster[ETCD_CLUSTER_MAX], why[200], prefix[128];

	CHECK(etcd_url_is("etcd://a:1/x") && !etcd_url_is("tcp://a:1"));
	CHECK(etcd_url_parse("etcd://127.0.0.1:2379,127.0.0.2:2379/prod", &e, cluster,
			     sizeof(cluster), why, sizeof(why)) == 0);
	CHECK(e.n == 2 && !strcmp(e.url[1], "http://127.0.0.2:2379"));
	CHECK(!strcmp(cluster, "prod"));
	CHECK(etcd_url_parse("etcd://127.0.0.1:2379", &e, cluster, sizeof(cluster),
			     why, sizeof(why)) == -EINVAL);
	CHECK(etcd_url_parse("etcd://127.0.0.1:2379/a/b", &e, cluster, sizeof(cluster),
			     why, sizeof(why)) == -EINVAL);
	CHECK(etcd_url_parse("etcd:///prod", &e, cluster, sizeof(cluster),
			     why, sizeof(why)) == -EINVAL);
	CHECK(etcd_url_parse("etcd://http://a:1/prod", &e, cluster, sizeof(cluster),
			     why, sizeof(why)) == -EINVAL);
	etcd_members_prefix("prod", prefix, sizeof(prefix));
	CHECK(!strcmp(prefix, "/farmem/prod/members/"));
	return 0;
}

static int test_member_value(void)
{
	struct etcd_member m = { .addr = "tcp://10.0.0.2:7070", .size = 1ull << 33,
				 .free = 1ull << 32, .zone = "rack-1" }, back;
	char v[512];

	CHECK(etcd_member_encode(&m, v, sizeof(v)) == 0);
	CHECK(etcd_member_decode(v, &back) == 0);
	CHECK(!strcmp(back.addr, m.addr) && back.size == m.size && back.free == m.free);
	CHECK(!strcmp(back.zone, "rack-1"));
	CHECK(etcd_member_decode("{\"addr\":\"tcp://a:1\"}", &back) == 0);
	CHECK(back.size == 0 && back.zone[0] == '\0');
	CHECK(etcd_member_decode("{\"size\":1}", &back) == -EPROTO);
	CHECK(etcd_member_decode("{\"addr\":\"tcp://a:1\",\"size\":\"big\"}", &back) == -EPROTO);
	CHECK(etcd_member_decode("{\"addr\":\"tcp://a:1\",\"size\":1,\"free\":2}", &back) == -EPROTO);
	CHECK(etcd_member_decode("{\"addr\":\"tcp://a:1\",\"zone\":\"a b\"}", &back) == -EPROTO);
	CHECK(etcd_member_decode("{\"addr\":\"tcp://a:1\",\"size\":-5}", &back) == -EPROTO);
	CHECK(etcd_member_decode("nope", &back) == -EPROTO);
	CHECK(etcd_member_encode(&m, v, 10) == -ENOSPC);
	return 0;
}

static const struct tap_case cases[] = {
	{ "base64 round trip and bad input", test_b64_round_trip },
	{ "prefix range end", test_prefix_end },
	{ "request bodies", test_bodies },
	{ "lease grant and keepalive replies", test_parse_grant_keepalive },
	{ "range replies", test_parse_range },
	{ "watch stream lines", test_parse_watch },
	{ "endpoint lists", test_endpoints },
	{ "etcd:// server URLs", test_etcd_url },
	{ "member values", test_member_value },
};

TAP_MAIN(cases)
