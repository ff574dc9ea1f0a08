/* test_metrics.c — Prometheus text helpers, histogram, request handling and
 * a loopback round trip through the /metrics server. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "metrics_http.h"
#include "metrics_pool.h"
#include "tap.h"

static char mem[4096];

static int test_buf_overflow_drops_partial_line(void)
{
	struct metrics_buf b;

	metrics_buf_init(&b, mem, 10);
	metrics_buf_printf(&b, "abc\n");
	CHECK(b.len == 4 && !b.overflow);
	metrics_buf_printf(&b, "0123456789\n");
	CHECK(b.overflow);
	CHECK(b.len == 4 && strcmp(b.p, "abc\n") == 0);
	metrics_buf_printf(&b, "x");
	CHECK(b.len == 4); /* nothing more once overflowed */
	metrics_buf_reset(&b);
	CHECK(b.len == 0 && !b.overflow);
	return 0;
}

static int test_counter_and_gauge(void)
{
	struct metrics_buf b;

	metrics_buf_init(&b, mem, sizeof(mem));
	metrics_counter(&b, "farmem_x_total", "Things.\nMore", 42);
	metrics_gauge(&b, "farmem_ratio", "A ratio.", 2.5);
	CHECK(!b.overflow);
	CHECK(strcmp(b.p,
		     "# HELP farmem_x_total Things.\\nMore\n"
		     "# TYPE farmem_x_total counter\n"
		     "farmem_x_total 42\n"
		     "# HELP farmem_ratio A ratio.\n"
		     "# TYPE farmem_ratio gauge\n"
		     "farmem_ratio 2.5\n") == 0);
	return 0;
}

static int test_special_values(void)
{
	struct metrics_buf b;

	metrics_buf_init(&b, mem, sizeof(mem));
	metrics_sample_double(&b, "a", NULL, NAN);
	metrics_sample_double(&b, "b", "", INFINITY);
	metrics_sample_double(&b, "c", "k=\"v\"", -INFINITY);
	metrics_sample_u64(&b, "d", NULL, UINT64_MAX);
	CHECK(strcmp(b.p, "a NaN\nb +Inf\nc{k=\"v\"} -Inf\n"
		     "d 18446744073709551615\n") == 0);
	return 0;
}

static int test_label_escape(void)
{
	char out[16];

	CHECK(strcmp(metrics_label_escape("a\"b\\c\nd", out, sizeof(out)),
		     "a\\\"b\\\\c\\nd") == 0);
	/* Truncation never splits an escape pair. */
	CHECK(strcmp(metrics_label_escape("abc\"", out, 5), "abc") == 0);
	CHECK(strcmp(metrics_label_escape("tcp://[::1]:7", out, sizeof(out)),
		     "tcp://[::1]:7") == 0);
	return 0;
}

static int test_histogram_cumulative(void)
{
	struct metrics_hist h;
	struct metrics_buf b;

	memset(&h, 0, sizeof(h));
	metrics_hist_observe_ns(&h, 3000);        /* 3 us  -> le 5e-06 */
	metrics_hist_observe_ns(&h, 5000);        /* 5 us  -> le 5e-06 */
	metrics_hist_observe_ns(&h, 80000);       /* 80 us -> le 0.0001 */
	metrics_hist_observe_ns(&h, 5000000000u); /* 5 s   -> +Inf only */
	metrics_buf_init(&b, mem, sizeof(mem));
	metrics_hist_write(&b, "lat_seconds", "op=\"read\"", &h);
	CHECK(!b.overflow);
	CHECK(strstr(b.p, "lat_seconds_bucket{op=\"read\",le=\"5e-06\"} 2\n"));
	CHECK(strstr(b.p, "lat_seconds_bucket{op=\"read\",le=\"5e-05\"} 2\n"));
	CHECK(strstr(b.p, "lat_seconds_bucket{op=\"read\",le=\"0.0001\"} 3\n"));
	CHECK(strstr(b.p, "lat_seconds_bucket{op=\"read\",le=\"1\"} 3\n"));
	CHECK(strstr(b.p, "lat_seconds_bucket{op=\"read\",le=\"+Inf\"} 4\n"));
	CHECK(strstr(b.p, "lat_seconds_count{op=\"read\"} 4\n"));
	CHECK(strstr(b.p, "lat_seconds_sum{op=\"read\"} 5.000088000\n"));
	return 0;
}

static int test_histogram_snapshot_and_clock(void)
{
	struct metrics_hist h, copy;
	uint64_t t0 = metrics_now_ns(), t1;

	memset(&h, 0, sizeof(h));
	metrics_hist_observe_ns(&h, 7000);
	metrics_hist_snapshot(&h, &copy);
	CHECK(memcmp(&h, &copy, sizeof(h)) == 0);
	metrics_hist_observe_ns(&h, 7000);
	CHECK(copy.bucket[1] == 1 && h.bucket[1] == 2); /* 7 us: le 1e-05 */
	t1 = metrics_now_ns();
	CHECK(t1 >= t0);
	return 0;
}

static int test_histogram_no_labels(void)
{
	struct metrics_hist h;
	struct metrics_buf b;

	memset(&h, 0, sizeof(h));
	metrics_buf_init(&b, mem, sizeof(mem));
	metrics_hist_write(&b, "h", NULL, &h);
	CHECK(strstr(b.p, "h_bucket{le=\"+Inf\"} 0\nh_sum 0.000000000\n"
		      "h_count 0\n"));
	return 0;
}

static int classify(const char *req, int *head)
{
	return metrics_http_classify(req, strlen(req), head);
}

static int test_classify(void)
{
	int head;

	CHECK(classify("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &head) == 200);
	CHECK(!head);
	CHECK(classify("HEAD /metrics HTTP/1.0\r\n\r\n", &head) == 200 && head);
	CHECK(classify("GET /metrics?name[]=x HTTP/1.1\r\n\r\n", &head) == 200);
	CHECK(classify("GET /metricsx HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(classify("GET / HTTP/1.1\r\n\r\n", &head) == 404);
	CHECK(classify("POST /metrics HTTP/1.1\r\n\r\n", &head) == 405);
	CHECK(classify("GET /metrics\r\n\r\n", &head) == 400);
	CHECK(classify("GET /metrics SPDY/3\r\n\r\n", &head) == 400);
	CHECK(classify("garbage", &head) == 400);
	return 0;
}

static int test_parse_listen(void)
{
	char host[64];
	uint16_t port;

	CHECK(metrics_parse_listen("127.0.0.1:9480", host, sizeof(host), &port) == 0);
	CHECK(strcmp(host, "127.0.0.1") == 0 && port == 9480);
	CHECK(metrics_parse_listen("[::1]:0", host, sizeof(host), &port) == 0);
	CHECK(strcmp(host, "::1") == 0 && port == 0);
	CHECK(metrics_parse_listen("tcp://localhost:1", host, sizeof(host), &port) == 0);
	CHECK(strcmp(host, "localhost") == 0 && port == 1);
	CHECK(metrics_parse_listen("9480", host, sizeof(host), &port) < 0);
	CHECK(metrics_parse_listen("::1:9480", host, sizeof(host), &port) < 0);
	CHECK(metrics_parse_listen("h:65536", host, sizeof(host), &port) < 0);
	CHECK(metrics_parse_listen("h:", host, sizeof(host), &port) < 0);
	CHECK(metrics_parse_listen(":80", host, sizeof(host), &port) < 0);
	CHECK(metrics_parse_listen("h:08x", host, sizeof(host), &port) < 0);
	CHECK(metrics_parse_listen("abcdefgh:1", host, 8, &port) < 0);
	return 0;
}

/* Large enough to force the server to grow its 64 KiB buffer. */
static void provider(struct metrics_buf *b, void *arg)
{
	int *calls = arg;

	(*calls)++;
	metrics_counter(b, "farmem_test_calls_total", "Provider calls.",
			(uint64_t)*calls);
	metrics_family(b, "farmem_test_big", "gauge", "Padding.");
	for (int i = 0; i < 5000; i++) {
		char lab[32];

		snprintf(lab, sizeof(lab), "i=\"%d\"", i);
		metrics_sample_u64(b, "farmem_test_big", lab, (uint64_t)i);
	}
}

/* One request on a fresh connection; the whole response into out. */
static int http_get(uint16_t port, const char *req, char *out, size_t cap)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(port) };
	struct timeval tv = { .tv_sec = 10 };
	size_t len = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -1;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	while (len + 1 < cap) {
		ssize_t n = read(fd, out + len, cap - 1 - len);

		if (n <= 0)
			break;
		len += (size_t)n;
	}
	out[len] = '\0';
	close(fd);
	return (int)len;
}

static int test_server_round_trip(void)
{
	static char resp[512 * 1024];
	struct metrics_server *s = NULL;
	int calls = 0, before;
	uint16_t port;

	CHECK(metrics_server_start("127.0.0.1:0", provider, &calls, &s) == 0);
	port = metrics_server_port(s);
	CHECK(port != 0);

	CHECK(http_get(port, "GET /metrics HTTP/1.0\r\n\r\n", resp, sizeof(resp)) > 0);
	CHECK(strncmp(resp, "HTTP/1.0 200 OK\r\n", 17) == 0);
	CHECK(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
	CHECK(strstr(resp, "\r\n\r\n# HELP farmem_test_calls_total"));
	CHECK(strstr(resp, "farmem_test_big{i=\"4999\"} 4999\n"));
	/* Content-Length matches the body that arrived. */
	{
		const char *cl = strstr(resp, "Content-Length: ");
		const char *body = strstr(resp, "\r\n\r\n") + 4;

		CHECK(cl && strtoul(cl + 16, NULL, 10) == strlen(body));
	}
	/* Errors are answered without asking the provider. */
	before = calls;
	CHECK(http_get(port, "GET /nope HTTP/1.0\r\n\r\n", resp, sizeof(resp)) > 0);
	CHECK(strncmp(resp, "HTTP/1.0 404 ", 13) == 0);
	CHECK(http_get(port, "DELETE /metrics HTTP/1.0\r\n\r\n", resp, sizeof(resp)) > 0);
	CHECK(strncmp(resp, "HTTP/1.0 405 ", 13) == 0);
	CHECK(strstr(resp, "Allow: GET, HEAD\r\n"));
	CHECK(calls == before);
	CHECK(http_get(port, "HEAD /metrics HTTP/1.0\r\n\r\n", resp, sizeof(resp)) > 0);
	CHECK(strncmp(resp, "HTTP/1.0 200 ", 13) == 0);
	CHECK(strstr(resp, "\r\n\r\n")[4] == '\0');
	CHECK(calls > before);

	metrics_server_stop(s);
	/* After stop the port no longer answers. */
	CHECK(http_get(port, "GET /metrics HTTP/1.0\r\n\r\n", resp, sizeof(resp)) < 0);
	return 0;
}

static int test_oversized_request(void)
{
	static char req[8192], resp[4096];
	struct metrics_server *s = NULL;
	int calls = 0;

	CHECK(metrics_server_start("127.0.0.1:0", provider, &calls, &s) == 0);
	memcpy(req, "GET /metrics HTTP/1.0\r\nX: ", 26);
	memset(req + 26, 'a', sizeof(req) - 27);
	req[sizeof(req) - 1] = '\0';
	CHECK(http_get(metrics_server_port(s), req, resp, sizeof(resp)) > 0);
	CHECK(strncmp(resp, "HTTP/1.0 431 ", 13) == 0);
	CHECK(calls == 0);
	metrics_server_stop(s);
	return 0;
}

static int test_bad_listen_address(void)
{
	struct metrics_server *s = NULL;
	int calls = 0;

	CHECK(metrics_server_start("nonsense", provider, &calls, &s) == -EINVAL);
	CHECK(s == NULL);
	metrics_server_stop(NULL); /* no-op */
	return 0;
}

static int test_pool_snapshot(void)
{
	struct metrics_pool_snap snap;
	struct fm_stat st = {
		.pool_bytes = 1 << 30, .used_bytes = 8 << 20,
		.free_bytes = (1 << 30) - (8 << 20), .reads = 3, .writes = 5,
		.bytes_read = 12288, .bytes_written = 20480, .segments = 2,
		.segment_max = 4 << 20, .clients = 1, .devices = 1, .locked = 1,
	};
	struct metrics_buf b;

	metrics_pool_snap_init(&snap);
	metrics_buf_init(&b, mem, sizeof(mem));
	metrics_pool_provide(&b, &snap);
	CHECK(b.len == 0);              /* nothing published yet */
	metrics_pool_publish(&snap, &st);
	st.reads = 999;                 /* the snapshot is a copy */
	metrics_pool_provide(&b, &snap);
	CHECK(!b.overflow);
	CHECK(strstr(b.p, "# TYPE farmem_memserver_pool_bytes gauge\n"
		      "farmem_memserver_pool_bytes 1073741824\n"));
	CHECK(strstr(b.p, "\nfarmem_memserver_pool_used_bytes 8388608\n"));
	CHECK(strstr(b.p, "\nfarmem_memserver_pool_locked 1\n"));
	CHECK(strstr(b.p, "# TYPE farmem_memserver_reads_total counter\n"
		      "farmem_memserver_reads_total 3\n"));
	CHECK(strstr(b.p, "\nfarmem_memserver_written_bytes_total 20480\n"));
	metrics_pool_snap_destroy(&snap);
	return 0;
}

static const struct tap_case cases[] = {
	{ "buffer overflow drops the partial line", test_buf_overflow_drops_partial_line },
	{ "counter and gauge families", test_counter_and_gauge },
	{ "NaN, +Inf, -Inf and u64 max", test_special_values },
	{ "label value escaping", test_label_escape },
	{ "histogram buckets are cumulative", test_histogram_cumulative },
	{ "histogram without labels", test_histogram_no_labels },
	{ "histogram snapshot and clock", test_histogram_snapshot_and_clock },
	{ "request classification", test_classify },
	{ "listen address parsing", test_parse_listen },
	{ "server round trip on loopback", test_server_round_trip },
	{ "oversized request gets 431", test_oversized_request },
	{ "bad listen address", test_bad_listen_address },
	{ "memserver pool snapshot", test_pool_snapshot },
};

TAP_MAIN(cases)
