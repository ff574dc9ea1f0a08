/* zipfredis — a small redis client with a skewed (Zipf) key choice, for
 * the offload benchmark (redis-benchmark only draws keys uniformly).
 *
 *   zipfredis load --port P --keys N --value-size B
 *   zipfredis run  --port P --keys N --value-size B --seconds S
 *
 * load SETs key:0..N-1 (pipelined, 100 a batch); each value is derived
 * from its key (hex of an LCG run, then a repeated field pattern, so it
 * compresses about as well as typical text).  run GETs keys drawn with
 * P(rank k) ~ 1/k^A (default A 0.99) one at a time for S seconds,
 * checks every value, and prints
 *   ops N ops_per_s R p50_us X p99_us Y mismatches M
 * Every socket call has a 10 s timeout.  Host is 127.0.0.1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LAT_BUCKETS 200000      /* 10 us each: up to 2 s */
#define LAT_RES_US 10
#define BATCH 100

static int conn_fd = -1;
static char rbuf[1 << 16];
static size_t rlen, rpos;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int connect_port(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { 10, 0 };
	int one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	conn_fd = socket(AF_INET, SOCK_STREAM, 0);
	if (conn_fd < 0)
		return -1;
	setsockopt(conn_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(conn_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(conn_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return connect(conn_fd, (struct sockaddr *)&a, sizeof(a));
}

static int send_all(const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(conn_fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int get_byte(char *c)
{
	if (rpos == rlen) {
		ssize_t r = recv(conn_fd, rbuf, sizeof(rbuf), 0);

		if (r <= 0)
			return -1;
		rlen = (size_t)r;
		rpos = 0;
	}
	*c = rbuf[rpos++];
	return 0;
}

/* One "\r\n"-terminated line, at most len-1 bytes. */
static int get_line(char *line, size_t len)
{
	size_t n = 0;
	char c;

	while (get_byte(&c) == 0) {
		if (c == '\n') {
			if (n && line[n - 1] == '\r')
				n--;
			line[n] = '\0';
			return 0;
		}
		if (n + 1 >= len)
			return -1;
		line[n++] = c;
	}
	return -1;
}

static size_t value_of(uint64_t k, char *v, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	uint64_t x = k * 0x9E3779B97F4A7C15ull + 7;
	size_t i = (size_t)snprintf(v, size, "key:%llu;", (unsigned long long)k);

	for (; i < size / 2; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		v[i] = hex[(x >> 59) & 15];
	}
	for (; i < size; i++)
		v[i] = ";field=value"[i % 12];
	return size;
}

static int cmd_load(uint64_t keys, size_t vsize)
{
	char *v = malloc(vsize), *out = malloc(BATCH * (vsize + 128)), line[256];

	if (!v || !out)
		return 1;
	for (uint64_t k = 0; k < keys; k += BATCH) {
		size_t o = 0;
		uint64_t n = keys - k < BATCH ? keys - k : BATCH;

		for (uint64_t j = 0; j < n; j++) {
			char key[32];
			int kl = snprintf(key, sizeof(key), "key:%llu", (unsigned long long)(k + j));

			value_of(k + j, v, vsize);
			o += (size_t)sprintf(out + o, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%zu\r\n",
					     kl, key, vsize);
			memcpy(out + o, v, vsize);
			o += vsize;
			memcpy(out + o, "\r\n", 2);
			o += 2;
		}
		if (send_all(out, o) < 0)
			return fprintf(stderr, "zipfredis: send failed\n"), 1;
		for (uint64_t j = 0; j < n; j++)
			if (get_line(line, sizeof(line)) < 0 || strcmp(line, "+OK"))
				return fprintf(stderr, "zipfredis: SET failed: %s\n", line), 1;
	}
	printf("loaded %llu keys of %zu bytes\n", (unsigned long long)keys, vsize);
	return 0;
}

/* Rank k (0-based) -> key: a fixed shuffle so the hot keys are spread
 * over the keyspace (and the memory) rather than its start. */
static uint64_t key_of_rank(uint64_t r, uint64_t keys)
{
	return (r * 2654435761ull) % keys;
}

static int cmd_run(uint64_t keys, size_t vsize, double secs)
{
	double *cdf = malloc(keys * sizeof(double)), sum = 0, t0, t1;
	uint32_t *lat = calloc(LAT_BUCKETS, sizeof(uint32_t));
	char *want = malloc(vsize), *got = malloc(vsize + 2), line[64];
	uint64_t ops = 0, bad = 0, seed = 12345, p50 = 0, p99 = 0, acc = 0;

	if (!cdf || !lat || !want || !got || keys % 2654435761ull == 0)
		return 1;
	for (uint64_t k = 0; k < keys; k++)
		cdf[k] = (sum += 1.0 / (double)(k + 1));
	t0 = now_s();
	while ((t1 = now_s()) - t0 < secs) {
		double u, ts;
		uint64_t lo = 0, hi = keys - 1, key, us;
		char req[96];
		int kl, n, len;

		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		u = (double)(seed >> 11) / 9007199254740992.0 * sum;
		while (lo < hi) {
			uint64_t mid = (lo + hi) / 2;

			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		key = key_of_rank(lo, keys);
		kl = snprintf(line, sizeof(line), "key:%llu", (unsigned long long)key);
		n = snprintf(req, sizeof(req), "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, line);
		ts = now_s();
		if (send_all(req, (size_t)n) < 0 || get_line(line, sizeof(line)) < 0 ||
		    line[0] != '$' || (len = atoi(line + 1)) < 0 || (size_t)len != vsize)
			return fprintf(stderr, "zipfredis: GET key:%llu failed: '%s'\n",
				       (unsigned long long)key, line), 1;
		for (int i = 0; i < len + 2; i++)
			if (get_byte(&got[i]) < 0)
				return fprintf(stderr, "zipfredis: short reply\n"), 1;
		us = (uint64_t)((now_s() - ts) * 1e6);
		lat[us / LAT_RES_US < LAT_BUCKETS ? us / LAT_RES_US : LAT_BUCKETS - 1]++;
		value_of(key, want, vsize);
		bad += memcmp(want, got, vsize) != 0;
		ops++;
	}
	for (uint64_t b = 0; b < LAT_BUCKETS && ops; b++) {
		acc += lat[b];
		if (!p50 && acc * 2 >= ops)
			p50 = (b + 1) * LAT_RES_US;
		if (!p99 && acc * 100 >= ops * 99) {
			p99 = (b + 1) * LAT_RES_US;
			break;
		}
	}
	printf("ops %llu ops_per_s %.1f p50_us %llu p99_us %llu mismatches %llu\n",
	       (unsigned long long)ops, (double)ops / (t1 - t0), (unsigned long long)p50,
	       (unsigned long long)p99, (unsigned long long)bad);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	uint64_t keys = 0;
	size_t vsize = 1024;
	double secs = 30;
	int port = 6379;

	if (argc < 2)
		goto usage;
	for (int i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--port"))
			port = atoi(argv[i + 1]);
		else if (!strcmp(argv[i], "--keys"))
			keys = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--value-size"))
			vsize = strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--seconds"))
			secs = strtod(argv[i + 1], NULL);
		else
			goto usage;
	}
	if (!keys || vsize < 32 || vsize > (1u << 20) || port <= 0 || port > 65535)
		goto usage;
	if (connect_port(port) < 0) {
		perror("zipfredis: connect");
		return 1;
	}
	if (!strcmp(argv[1], "load"))
		return cmd_load(keys, vsize);
	if (!strcmp(argv[1], "run"))
		return cmd_run(keys, vsize, secs);
usage:
	fprintf(stderr, "usage: zipfredis load|run --port P --keys N [--value-size B] "
		"[--seconds S]\n");
	return 2;
}
