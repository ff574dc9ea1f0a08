/* fm-client.c — a small memserver client for the integration tests.
 *
 *   fm-client --server tcp://HOST:PORT --secret-file F|--key-file F
 *             [--uuid U] [--timeout MS] CMD [ARGS]
 *
 * --secret-file acts as the cluster's own identity, --key-file as the
 * client the key file names.
 *
 * Normal commands go through the real transport (common/transport.h);
 * the raw-* commands speak to the server over a bare socket to send it
 * hostile frames and report how it reacted.
 *
 * Exit status, for tests to assert on:
 *   0  done (raw-*: the server closed the connection)
 *   1  the server answered with an error, or data did not verify
 *      (raw-*: the connection stayed open); the errno name is printed
 *      on stderr as "fm-client: CMD: ENAME (text)"
 *   2  usage error
 *   3  could not connect or authenticate ("fm-client: connect: ENAME ...")
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "keyfile.h"
#include "log.h"
#include "parse.h"
#include "protocol.h"
#include "transport.h"

#define EXIT_REPLY   1
#define EXIT_USAGE   2
#define EXIT_CONNECT 3

/* How long raw-* waits for the server to react before calling it open. */
#define RAW_WAIT_MS  5000
#define FILL_MAX     (1u << 20)  /* bound on the alloc loop */
#define DEFAULT_UUID "00000000-0000-4000-8000-000000000001"

struct opts {
	struct fm_addr addr;
	struct fm_identity id;          /* who we authenticate as */
	uint8_t uuid[FM_UUID_LEN];
	uint32_t timeout_ms;
	int after_auth;                 /* raw-*: handshake first */
	int keep;                       /* fill: do not free what it got */
	uint32_t io_size;               /* pipeline: bytes per request */
	int reconnect;                  /* transport reconnects after a loss */
};

/* State changes seen by --reconnect connections (transport thread). */
static int state_downs, state_ups;

static void on_state(void *arg, int up)
{
	(void)arg;
	__atomic_add_fetch(up ? &state_ups : &state_downs, 1, __ATOMIC_ACQ_REL);
	printf("state %s\n", up ? "up" : "down");
	fflush(stdout);
}

static const char *ename(int e)
{
	const char *n = strerrorname_np(e);

	return n ? n : "E?";
}

/* Report a failed request: "fm-client: CMD: ENOENT (No such file ...)". */
static int fail(int rc, const char *what)
{
	fprintf(stderr, "fm-client: %s: %s (%s)\n", what, ename(-rc), strerror(-rc));
	return EXIT_REPLY;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: fm-client --server ADDR --secret-file FILE|--key-file FILE [--uuid UUID]\n"
		"                 [--timeout MS] [--after-auth] [--keep] [--io-size N]\n"
		"                 [--reconnect] [--verbose] CMD [ARGS]\n"
		"commands:\n"
		"  ping | stat | list | boot (the server's boot id)\n"
		"  alloc SIZE | free SEG | drain MS (DRAIN with that deadline)\n"
		"  write SEG OFF FILE | read SEG OFF LEN OUTFILE ('-' = stdout)\n"
		"  pipeline N        N pipelined writes then N reads, verified\n"
		"  fill [SIZE]       allocate until the server refuses\n"
		"  hold DURATION     keep the connection, pinging, for DURATION\n"
		"  watch DURATION    with --reconnect: ping until a pong comes back\n"
		"                    after the connection was lost and remade\n"
		"  raw-garbage | raw-truncated | raw-oversized | raw-badversion\n"
		"  raw-reserved | raw-unknown-op\n"
		"  raw-no-hello | raw-before-auth   (hostile frames on a bare socket)\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- connecting ---- */

static int conn_open(const struct opts *o, struct fm_conn **c)
{
	struct fm_conn_params p = {
		.addr = o->addr,
		.identity = &o->id,
		.timeout_ms = o->timeout_ms,
		.reconnect = o->reconnect,
		.state_cb = on_state,
	};
	int rc;

	memcpy(p.uuid, o->uuid, FM_UUID_LEN);
	rc = fm_conn_open(&p, c);
	if (rc) {
		fprintf(stderr, "fm-client: connect: %s (%s)\n", ename(-rc), strerror(-rc));
		return EXIT_CONNECT;
	}
	return 0;
}

static int call_stat(struct fm_conn *c, struct fm_stat *st)
{
	struct fm_req r = { .op = FM_OP_STAT };
	int rc = fm_conn_call(c, &r);

	if (rc == 0)
		*st = r.rep.stat;
	return rc;
}

static int call_alloc(struct fm_conn *c, uint32_t size, uint64_t *seg)
{
	struct fm_req r = { .op = FM_OP_ALLOC, .arg = size };
	int rc = fm_conn_call(c, &r);

	if (rc == 0)
		*seg = r.rep.alloc.seg_id;
	return rc;
}

static int call_free(struct fm_conn *c, uint64_t seg)
{
	struct fm_req r = { .op = FM_OP_FREE, .seg_id = seg };

	return fm_conn_call(c, &r);
}

static int call_rw(struct fm_conn *c, uint8_t op, uint64_t seg, uint32_t off,
		   void *buf, uint32_t len)
{
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct fm_req r = { .op = op, .seg_id = seg, .offset = off, .len = len };

	if (op == FM_OP_WRITE) {
		r.iov = &iov;
		r.iovcnt = 1;
	} else {
		r.buf = buf;
	}
	return fm_conn_call(c, &r);
}

/* ---- simple commands ---- */

static int parse_seg(const char *s, uint64_t *seg)
{
	if (parse_u64(s, 0, UINT64_MAX, seg) < 0) {
		fprintf(stderr, "fm-client: bad segment id '%s'\n", s);
		return -EINVAL;
	}
	return 0;
}

static int parse_u32_arg(const char *s, const char *what, int sized, uint32_t *out)
{
	uint64_t v;
	int rc = sized ? parse_size(s, &v) : parse_u64(s, 0, UINT32_MAX, &v);

	if (rc < 0 || v > UINT32_MAX) {
		fprintf(stderr, "fm-client: bad %s '%s'\n", what, s);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

/* One PING without output; 0 or -errno. */
static int cmd_ping_quiet(struct fm_conn *c)
{
	struct fm_req r = { .op = FM_OP_PING };

	return fm_conn_call(c, &r);
}

static int cmd_ping(struct fm_conn *c)
{
	uint8_t out[64], back[64];
	struct iovec iov = { .iov_base = out, .iov_len = sizeof(out) };
	struct fm_req r = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1,
			    .len = sizeof(out), .buf = back };
	double t0 = now_s();
	int rc;

	fm_random(out, sizeof(out));
	rc = fm_conn_call(c, &r);
	if (rc)
		return fail(rc, "ping");
	if (memcmp(out, back, sizeof(out))) {
		fprintf(stderr, "fm-client: ping: echo differs from what was sent\n");
		return EXIT_REPLY;
	}
	printf("pong %.0f us\n", (now_s() - t0) * 1e6);
	return 0;
}

static int cmd_stat(struct fm_conn *c)
{
	struct fm_stat s;
	int rc = call_stat(c, &s);

	if (rc)
		return fail(rc, "stat");
	printf("pool_bytes=%llu\nused_bytes=%llu\nfree_bytes=%llu\n"
	       "bytes_read=%llu\nbytes_written=%llu\nreads=%llu\nwrites=%llu\n"
	       "segments=%u\nsegment_max=%u\nclients=%u\ndevices=%u\nleased=%u\n"
	       "locked=%u\n",
	       (unsigned long long)s.pool_bytes, (unsigned long long)s.used_bytes,
	       (unsigned long long)s.free_bytes, (unsigned long long)s.bytes_read,
	       (unsigned long long)s.bytes_written, (unsigned long long)s.reads,
	       (unsigned long long)s.writes, s.segments, s.segment_max, s.clients,
	       s.devices, s.leased, s.locked);
	return 0;
}

static int cmd_drain(struct fm_conn *c, char **args, int nargs)
{
	struct fm_req r = { .op = FM_OP_DRAIN };
	int rc;

	if (nargs != 1)
		return EXIT_USAGE;
	r.arg = (uint32_t)strtoul(args[0], NULL, 10);
	rc = fm_conn_call(c, &r);
	if (rc)
		return fail(rc, "drain");
	printf("draining\n");
	return 0;
}

static int cmd_list(struct fm_conn *c)
{
	static uint64_t ids[FM_LIST_MAX];
	static uint32_t sizes[FM_LIST_MAX];
	uint32_t start = 0, total = 0;

	/* Bounded: each round either advances or stops. */
	for (int round = 0; round < 1 << 16; round++) {
		struct fm_req r = { .op = FM_OP_LIST, .arg = start };
		int rc;

		r.rep.list.seg_ids = ids;
		r.rep.list.sizes = sizes;
		rc = fm_conn_call(c, &r);
		if (rc)
			return fail(rc, "list");
		for (uint32_t i = 0; i < r.rep.list.count; i++)
			printf("%llu %u\n", (unsigned long long)ids[i], sizes[i]);
		total += r.rep.list.count;
		if (r.rep.list.count < FM_LIST_MAX)
			break;
		start += r.rep.list.count;
	}
	printf("count=%u\n", total);
	return 0;
}

static int cmd_alloc(struct fm_conn *c, char **argv, int argc)
{
	uint32_t size;
	uint64_t seg;
	int rc;

	if (argc != 1 || parse_u32_arg(argv[0], "size", 1, &size) < 0)
		return EXIT_USAGE;
	rc = call_alloc(c, size, &seg);
	if (rc)
		return fail(rc, "alloc");
	printf("%llu\n", (unsigned long long)seg);
	return 0;
}

static int cmd_free(struct fm_conn *c, char **argv, int argc)
{
	uint64_t seg;
	int rc;

	if (argc != 1 || parse_seg(argv[0], &seg) < 0)
		return EXIT_USAGE;
	rc = call_free(c, seg);
	return rc ? fail(rc, "free") : 0;
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 16, n = 0;
	uint8_t *p = malloc(cap);

	if (!f || !p) {
		fprintf(stderr, "fm-client: %s: %s\n", path, strerror(errno));
		if (f)
			fclose(f);
		free(p);
		return -EIO;
	}
	for (;;) {
		size_t k = fread(p + n, 1, cap - n, f);

		n += k;
		if (n < cap)
			break;
		cap *= 2;
		uint8_t *q = realloc(p, cap);

		if (!q) {
			fclose(f);
			free(p);
			return -ENOMEM;
		}
		p = q;
	}
	fclose(f);
	*buf = p;
	*len = n;
	return 0;
}

static int cmd_write(struct fm_conn *c, char **argv, int argc)
{
	uint64_t seg;
	uint32_t off;
	uint8_t *data;
	size_t len, done = 0;
	int rc = 0;

	if (argc != 3 || parse_seg(argv[0], &seg) < 0 ||
	    parse_u32_arg(argv[1], "offset", 0, &off) < 0)
		return EXIT_USAGE;
	if (read_file(argv[2], &data, &len) < 0)
		return EXIT_USAGE;
	while (rc == 0 && done < len) {
		uint32_t k = len - done > FM_MAX_IO ? FM_MAX_IO : (uint32_t)(len - done);

		rc = call_rw(c, FM_OP_WRITE, seg, off + (uint32_t)done, data + done, k);
		done += k;
	}
	free(data);
	return rc ? fail(rc, "write") : 0;
}

static int cmd_read(struct fm_conn *c, char **argv, int argc)
{
	uint64_t seg;
	uint32_t off, len, done = 0;
	uint8_t *buf;
	FILE *out;
	int rc = 0;

	if (argc != 4 || parse_seg(argv[0], &seg) < 0 ||
	    parse_u32_arg(argv[1], "offset", 0, &off) < 0 ||
	    parse_u32_arg(argv[2], "length", 1, &len) < 0)
		return EXIT_USAGE;
	buf = malloc(FM_MAX_IO);
	out = strcmp(argv[3], "-") ? fopen(argv[3], "wb") : stdout;
	if (!buf || !out) {
		fprintf(stderr, "fm-client: %s: %s\n", argv[3], strerror(errno));
		free(buf);
		return EXIT_USAGE;
	}
	while (rc == 0 && done < len) {
		uint32_t k = len - done > FM_MAX_IO ? FM_MAX_IO : len - done;

		rc = call_rw(c, FM_OP_READ, seg, off + done, buf, k);
		if (rc == 0 && fwrite(buf, 1, k, out) != k)
			rc = -EIO;
		done += k;
	}
	free(buf);
	if (out != stdout)
		fclose(out);
	return rc ? fail(rc, "read") : 0;
}

/* ---- pipeline: N writes in flight at once, then N reads ---- */

struct batch {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	unsigned done, errors;
	int first_error;
};

static void batch_done(struct fm_req *r, int status)
{
	struct batch *b = r->priv;

	pthread_mutex_lock(&b->lock);
	b->done++;
	if (status) {
		if (!b->errors)
			b->first_error = status;
		b->errors++;
	}
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->lock);
}

/* Submit n requests (already filled in) and wait for all of them. */
static unsigned batch_run(struct fm_conn *c, struct fm_req *reqs, unsigned n,
			  int *first_error)
{
	struct batch b = { .done = 0, .errors = 0, .first_error = 0 };
	unsigned submitted = 0;

	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.cv, NULL);
	for (unsigned i = 0; i < n; i++) {
		reqs[i].done = batch_done;
		reqs[i].priv = &b;
		int rc = fm_conn_submit(c, &reqs[i]);

		if (rc) {
			pthread_mutex_lock(&b.lock);
			if (!b.errors)
				b.first_error = rc;
			b.errors++;
			pthread_mutex_unlock(&b.lock);
			continue;
		}
		submitted++;
	}
	pthread_mutex_lock(&b.lock);
	while (b.done < submitted)
		pthread_cond_wait(&b.cv, &b.lock);
	pthread_mutex_unlock(&b.lock);
	pthread_cond_destroy(&b.cv);
	pthread_mutex_destroy(&b.lock);
	*first_error = b.first_error;
	return b.errors;
}

struct pipeline {
	unsigned n;
	uint32_t io;
	uint32_t per_seg;               /* requests per segment */
	unsigned nsegs;
	uint64_t *segs;
	uint8_t *src, *dst;
	struct iovec *iov;
	struct fm_req *reqs;
};

static int pipeline_setup(struct fm_conn *c, struct pipeline *p)
{
	struct fm_stat st;
	int rc = call_stat(c, &st);

	if (rc)
		return fail(rc, "pipeline: stat");
	if (st.segment_max < p->io) {
		fprintf(stderr, "fm-client: pipeline: io size %u > segment_max %u\n",
			p->io, st.segment_max);
		return EXIT_USAGE;
	}
	p->per_seg = st.segment_max / p->io;
	p->nsegs = (p->n + p->per_seg - 1) / p->per_seg;
	p->segs = calloc(p->nsegs, sizeof(*p->segs));
	p->src = malloc((size_t)p->n * p->io);
	p->dst = malloc((size_t)p->n * p->io);
	p->iov = calloc(p->n, sizeof(*p->iov));
	p->reqs = calloc(p->n, sizeof(*p->reqs));
	if (!p->segs || !p->src || !p->dst || !p->iov || !p->reqs) {
		fprintf(stderr, "fm-client: pipeline: out of memory\n");
		return EXIT_USAGE;
	}
	fm_random(p->src, (size_t)p->n * p->io);
	/* Fault the read buffer in now, so the timed reads measure I/O. */
	memset(p->dst, 0xa5, (size_t)p->n * p->io);
	for (unsigned s = 0; s < p->nsegs; s++) {
		uint32_t pages = p->n - s * p->per_seg < p->per_seg ?
				 p->n - s * p->per_seg : p->per_seg;

		rc = call_alloc(c, pages * p->io, &p->segs[s]);
		if (rc) {
			p->nsegs = s;
			return fail(rc, "pipeline: alloc");
		}
	}
	return 0;
}

static void pipeline_fill(struct pipeline *p, uint8_t op)
{
	for (unsigned i = 0; i < p->n; i++) {
		struct fm_req *r = &p->reqs[i];

		memset(r, 0, sizeof(*r));
		r->op = op;
		r->seg_id = p->segs[i / p->per_seg];
		r->offset = (i % p->per_seg) * p->io;
		r->len = p->io;
		if (op == FM_OP_WRITE) {
			p->iov[i].iov_base = p->src + (size_t)i * p->io;
			p->iov[i].iov_len = p->io;
			r->iov = &p->iov[i];
			r->iovcnt = 1;
		} else {
			r->buf = p->dst + (size_t)i * p->io;
		}
	}
}

static void pipeline_free(struct fm_conn *c, struct pipeline *p)
{
	for (unsigned s = 0; s < p->nsegs && p->segs; s++)
		call_free(c, p->segs[s]);
	free(p->segs);
	free(p->src);
	free(p->dst);
	free(p->iov);
	free(p->reqs);
}

static int cmd_pipeline(struct fm_conn *c, const struct opts *o, char **argv, int argc)
{
	struct pipeline p = { .io = o->io_size };
	unsigned werr, rerr, bad = 0;
	int e1 = 0, e2 = 0, rc;
	double t0, t1, t2;

	if (argc != 1 || parse_u32_arg(argv[0], "count", 0, &p.n) < 0 || p.n == 0 ||
	    p.io == 0 || p.io > FM_MAX_IO)
		return EXIT_USAGE;
	rc = pipeline_setup(c, &p);
	if (rc) {
		pipeline_free(c, &p);
		return rc;
	}
	pipeline_fill(&p, FM_OP_WRITE);
	t0 = now_s();
	werr = batch_run(c, p.reqs, p.n, &e1);
	t1 = now_s();
	pipeline_fill(&p, FM_OP_READ);
	rerr = batch_run(c, p.reqs, p.n, &e2);
	t2 = now_s();
	for (unsigned i = 0; i < p.n; i++)
		bad += memcmp(p.src + (size_t)i * p.io, p.dst + (size_t)i * p.io, p.io) != 0;
	printf("writes=%u write_errors=%u reads=%u read_errors=%u mismatches=%u\n",
	       p.n, werr, p.n, rerr, bad);
	printf("write_iops=%.0f read_iops=%.0f write_MiBps=%.1f read_MiBps=%.1f\n",
	       p.n / (t1 - t0), p.n / (t2 - t1),
	       (double)p.n * p.io / (t1 - t0) / 1048576.0,
	       (double)p.n * p.io / (t2 - t1) / 1048576.0);
	pipeline_free(c, &p);
	if (werr)
		return fail(e1, "pipeline: write");
	if (rerr)
		return fail(e2, "pipeline: read");
	return bad ? EXIT_REPLY : 0;
}

/* ---- fill: allocate until the server says no ---- */

static int cmd_fill(struct fm_conn *c, const struct opts *o, char **argv, int argc)
{
	static uint64_t segs[FILL_MAX];
	uint32_t size;
	unsigned n = 0;
	int rc = 0;

	if (argc > 1)
		return EXIT_USAGE;
	if (argc == 1) {
		if (parse_u32_arg(argv[0], "size", 1, &size) < 0)
			return EXIT_USAGE;
	} else {
		struct fm_stat st;

		rc = call_stat(c, &st);
		if (rc)
			return fail(rc, "fill: stat");
		size = st.segment_max;
	}
	while (n < FILL_MAX) {
		rc = call_alloc(c, size, &segs[n]);
		if (rc)
			break;
		n++;
	}
	printf("allocated=%u bytes=%llu error=%s\n", n,
	       (unsigned long long)n * size, rc ? ename(-rc) : "none");
	if (!o->keep) {
		unsigned freed = 0;

		for (unsigned i = 0; i < n; i++)
			freed += call_free(c, segs[i]) == 0;
		printf("freed=%u\n", freed);
	}
	/* Refused for want of room or of quota: both end a fill. */
	return rc == -ENOSPC || rc == -EDQUOT ? 0 : EXIT_REPLY;
}

/* ---- hold: keep a connection open (tests kill the server under it) ---- */

static int cmd_hold(struct fm_conn *c, char **argv, int argc)
{
	uint64_t ms;
	double until;

	if (argc != 1 || parse_duration_ms(argv[0], &ms) < 0 || ms > 3600000)
		return EXIT_USAGE;
	printf("holding\n");
	fflush(stdout);
	until = now_s() + (double)ms / 1000.0;
	/* Ping every 100 ms so a lost server shows as an error exit. */
	while (now_s() < until) {
		struct fm_req r = { .op = FM_OP_PING };
		int rc = fm_conn_call(c, &r);

		if (rc)
			return fail(rc, "hold");
		usleep(100000);
	}
	return 0;
}

/* ---- watch: ride out a server restart on one reconnecting connection ---- */

static int cmd_watch(struct fm_conn *c, const struct opts *o, char **argv, int argc)
{
	uint64_t ms;
	double until;
	int last = 0;

	if (argc != 1 || parse_duration_ms(argv[0], &ms) < 0 || ms > 3600000 ||
	    !o->reconnect)
		return EXIT_USAGE;
	printf("watching\n");
	fflush(stdout);
	until = now_s() + (double)ms / 1000.0;
	while (now_s() < until) {
		int rc = cmd_ping_quiet(c);

		if (rc != last && rc)
			printf("ping: %s\n", ename(-rc));
		last = rc;
		if (rc == 0 && __atomic_load_n(&state_ups, __ATOMIC_ACQUIRE) > 0) {
			printf("pong after reconnect\n");
			return 0;
		}
		usleep(50000);
	}
	return fail(-ETIMEDOUT, "watch");
}

/* ---- raw socket: hostile frames ---- */

static int raw_connect(const struct opts *o)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	char port[8];
	int fd = -ECONNREFUSED;

	snprintf(port, sizeof(port), "%u", o->addr.port);
	if (getaddrinfo(o->addr.host, port, &hints, &res))
		return -EHOSTUNREACH;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			fd = -errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		int e = errno;

		close(fd);
		fd = -e;
	}
	freeaddrinfo(res);
	return fd;
}

static int raw_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int raw_frame(int fd, uint8_t op, uint32_t tag, const void *payload, uint32_t len)
{
	uint8_t h[FM_HDR_SIZE];
	struct fm_hdr hd = { .op = op, .tag = tag, .len = len };
	int rc;

	fm_hdr_encode(h, &hd);
	rc = raw_send(fd, h, sizeof(h));
	return rc == 0 && len ? raw_send(fd, payload, len) : rc;
}

/* Read exactly len bytes within RAW_WAIT_MS; 0, -ECONNRESET on close,
 * -ETIMEDOUT. */
static int raw_recv(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	while (len) {
		if (poll(&pfd, 1, RAW_WAIT_MS) == 0)
			return -ETIMEDOUT;
		ssize_t n = recv(fd, p, len, 0);

		if (n == 0)
			return -ECONNRESET;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int raw_reply(int fd, uint8_t op, uint8_t *payload, size_t want)
{
	uint8_t hb[FM_HDR_SIZE];
	struct fm_hdr h;
	int rc = raw_recv(fd, hb, sizeof(hb));

	if (rc)
		return rc;
	if (fm_hdr_decode(hb, sizeof(hb), &h) < 0 || h.op != (op | FM_OP_REPLY))
		return -EPROTO;
	if (h.status)
		return h.status;
	if (h.len != want)
		return -EPROTO;
	return raw_recv(fd, payload, want);
}

/* The handshake by hand: an independent check of the protocol text. */
static int raw_handshake(int fd, const struct opts *o, int stop_after_hello)
{
	struct fm_hello_req hq = { .version = FM_PROTO_VERSION };
	struct fm_hello_rep hr;
	struct fm_auth_session a = { 0 };
	uint8_t buf[FM_HELLO_REQ_MAX], mac[FM_MAC_LEN];
	size_t len;
	int rc;

	memcpy(hq.uuid, o->uuid, FM_UUID_LEN);
	memcpy(hq.name, o->id.name, sizeof(hq.name));
	fm_random(hq.client_nonce, FM_NONCE_LEN);
	len = fm_hello_req_encode(buf, &hq);
	rc = raw_frame(fd, FM_OP_HELLO, 0, buf, (uint32_t)len);
	if (rc == 0)
		rc = raw_reply(fd, FM_OP_HELLO, buf, FM_HELLO_REP_LEN);
	if (rc == 0)
		rc = fm_hello_rep_decode(buf, FM_HELLO_REP_LEN, &hr);
	if (rc || stop_after_hello)
		return rc;
	memcpy(a.name, o->id.name, sizeof(a.name));
	memcpy(a.uuid, o->uuid, FM_UUID_LEN);
	memcpy(a.key, o->id.key, FM_KEY_LEN);
	memcpy(a.client_nonce, hq.client_nonce, FM_NONCE_LEN);
	memcpy(a.server_nonce, hr.server_nonce, FM_NONCE_LEN);
	a.boot_id = hr.boot_id;
	fm_auth_mac(&a, FM_AUTH_CLIENT, mac);
	rc = raw_frame(fd, FM_OP_AUTH, 0, mac, FM_MAC_LEN);
	if (rc == 0)
		rc = raw_reply(fd, FM_OP_AUTH, mac, FM_MAC_LEN);
	if (rc == 0)
		rc = fm_auth_verify(&a, FM_AUTH_SERVER, mac);
	return rc;
}

/* After the hostile bytes: print every reply header the server still
 * sends, then "closed" or "open".  Returns the exit status. */
static int raw_outcome(int fd)
{
	uint8_t buf[4096];
	size_t have = 0;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int closed = 0;

	for (;;) {
		if (poll(&pfd, 1, RAW_WAIT_MS) == 0)
			break;
		ssize_t n = recv(fd, buf + have, sizeof(buf) - have, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			closed = 1;
			break;
		}
		have += (size_t)n;
		/* Report whole headers as they arrive; skip their payloads. */
		while (have >= FM_HDR_SIZE) {
			struct fm_hdr h;
			size_t skip;

			if (fm_hdr_decode(buf, have, &h) < 0) {
				printf("reply undecodable\n");
				have = 0;
				break;
			}
			printf("reply op=%s status=%s\n", fm_op_name(h.op),
			       h.status ? ename(-h.status) : "0");
			skip = FM_HDR_SIZE + h.len < have ? FM_HDR_SIZE + h.len : have;
			memmove(buf, buf + skip, have - skip);
			have -= skip;
		}
		if (have == sizeof(buf))
			have = 0;
	}
	printf("%s\n", closed ? "closed" : "open");
	return closed ? 0 : EXIT_REPLY;
}

static int raw_attack(int fd, const char *cmd)
{
	uint8_t h[FM_HDR_SIZE], junk[4096];
	struct fm_hdr hd = { .op = FM_OP_WRITE, .tag = 7 };
	struct fm_range range = { .seg_id = 1, .offset = 0, .len = FM_PAGE };

	fm_random(junk, sizeof(junk));
	if (strcmp(cmd, "raw-garbage") == 0) {
		junk[0] = 'X';                 /* never the magic */
		return raw_send(fd, junk, sizeof(junk));
	}
	if (strcmp(cmd, "raw-truncated") == 0) {
		/* A WRITE that promises a page and delivers 100 bytes, then
		 * our side ends: the server must give up on the frame. */
		hd.len = FM_RANGE_LEN + FM_PAGE;
		fm_hdr_encode(h, &hd);
		fm_range_encode(junk, &range);
		if (raw_send(fd, h, sizeof(h)) || raw_send(fd, junk, 100))
			return -EPIPE;
		return shutdown(fd, SHUT_WR) ? -errno : 0;
	}
	if (strcmp(cmd, "raw-oversized") == 0) {
		hd.len = FM_MAX_PAYLOAD;
		fm_hdr_encode(h, &hd);
		put_le32(h + 16, FM_MAX_PAYLOAD + 1); /* the encoder would not */
		return raw_send(fd, h, sizeof(h));
	}
	if (strcmp(cmd, "raw-badversion") == 0) {
		fm_hdr_encode(h, &hd);
		h[4] = FM_PROTO_VERSION + 1;
		put_le32(h + 16, 0);
		return raw_send(fd, h, sizeof(h));
	}
	if (strcmp(cmd, "raw-reserved") == 0) {
		fm_hdr_encode(h, &hd);
		put_le32(h + 16, 0);
		put_le32(h + 20, 1);           /* reserved must be 0 */
		return raw_send(fd, h, sizeof(h));
	}
	if (strcmp(cmd, "raw-unknown-op") == 0) {
		fm_hdr_encode(h, &hd);
		h[5] = 0x42;
		put_le32(h + 16, 0);
		return raw_send(fd, h, sizeof(h));
	}
	/* raw-no-hello, raw-before-auth: a valid READ at the wrong time. */
	fm_range_encode(junk, &range);
	return raw_frame(fd, FM_OP_READ, 7, junk, FM_RANGE_LEN);
}

static int cmd_raw(const struct opts *o, const char *cmd)
{
	int fd, rc, hs = -1;

	if (strcmp(cmd, "raw-before-auth") == 0)
		hs = 1;                        /* HELLO only */
	else if (o->after_auth && strcmp(cmd, "raw-no-hello"))
		hs = 0;                        /* full handshake first */
	fd = raw_connect(o);
	if (fd < 0) {
		fprintf(stderr, "fm-client: connect: %s (%s)\n", ename(-fd), strerror(-fd));
		return EXIT_CONNECT;
	}
	if (hs >= 0) {
		rc = raw_handshake(fd, o, hs);
		if (rc) {
			fprintf(stderr, "fm-client: %s: handshake: %s\n", cmd, ename(-rc));
			close(fd);
			return EXIT_CONNECT;
		}
	}
	rc = raw_attack(fd, cmd);
	if (rc)
		printf("send: %s\n", ename(-rc)); /* the server may have closed already */
	rc = raw_outcome(fd);
	close(fd);
	return rc;
}

/* ---- main ---- */

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "server", required_argument, NULL, 's' },
		{ "secret-file", required_argument, NULL, 'k' },
		{ "key-file", required_argument, NULL, 'f' },
		{ "uuid", required_argument, NULL, 'u' },
		{ "timeout", required_argument, NULL, 't' },
		{ "io-size", required_argument, NULL, 'i' },
		{ "after-auth", no_argument, NULL, 'a' },
		{ "keep", no_argument, NULL, 'K' },
		{ "reconnect", no_argument, NULL, 'r' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *server = NULL, *secret = NULL, *keyfile = NULL, *uuid = DEFAULT_UUID;
	static struct fm_secret sec;
	char err[256];
	int ch;

	o->io_size = FM_PAGE;
	while ((ch = getopt_long(argc, argv, "+s:k:f:u:t:i:aKrvh", lo, NULL)) != -1) {
		switch (ch) {
		case 's': server = optarg; break;
		case 'k': secret = optarg; break;
		case 'f': keyfile = optarg; break;
		case 'u': uuid = optarg; break;
		case 't':
			if (parse_u32_arg(optarg, "timeout", 0, &o->timeout_ms) < 0)
				return -EINVAL;
			break;
		case 'i':
			if (parse_u32_arg(optarg, "io size", 1, &o->io_size) < 0)
				return -EINVAL;
			break;
		case 'a': o->after_auth = 1; break;
		case 'K': o->keep = 1; break;
		case 'r': o->reconnect = 1; break;
		case 'v': log_set_level(LOG_LVL_DEBUG); break;
		default: return -EINVAL;
		}
	}
	if (!server || !(secret || keyfile) || (secret && keyfile) || optind >= argc)
		return -EINVAL;
	if (parse_addr(server, 0, &o->addr) < 0) {
		fprintf(stderr, "fm-client: bad server address '%s'\n", server);
		return -EINVAL;
	}
	if (fm_uuid_parse(uuid, o->uuid) < 0) {
		fprintf(stderr, "fm-client: bad uuid '%s'\n", uuid);
		return -EINVAL;
	}
	if (keyfile) {
		if (fm_keyfile_load(keyfile, &o->id, err, sizeof(err)) < 0) {
			fprintf(stderr, "fm-client: %s\n", err);
			return -EINVAL;
		}
		return 0;
	}
	if (fm_secret_load(secret, &sec, err, sizeof(err)) < 0 ||
	    fm_identity_derive(&sec, FM_CLUSTER_NAME, &o->id) < 0) {
		fprintf(stderr, "fm-client: %s\n", err);
		return -EINVAL;
	}
	fm_wipe(&sec, sizeof(sec));
	return 0;
}

static int run(struct fm_conn *c, const struct opts *o, const char *cmd,
	       char **args, int nargs)
{
	if (strcmp(cmd, "ping") == 0 && nargs == 0)
		return cmd_ping(c);
	if (strcmp(cmd, "stat") == 0 && nargs == 0)
		return cmd_stat(c);
	if (strcmp(cmd, "list") == 0 && nargs == 0)
		return cmd_list(c);
	if (strcmp(cmd, "boot") == 0 && nargs == 0) {
		printf("boot %016llx\n", (unsigned long long)fm_conn_boot_id(c));
		return 0;
	}
	if (strcmp(cmd, "alloc") == 0)
		return cmd_alloc(c, args, nargs);
	if (strcmp(cmd, "free") == 0)
		return cmd_free(c, args, nargs);
	if (strcmp(cmd, "drain") == 0)
		return cmd_drain(c, args, nargs);
	if (strcmp(cmd, "write") == 0)
		return cmd_write(c, args, nargs);
	if (strcmp(cmd, "read") == 0)
		return cmd_read(c, args, nargs);
	if (strcmp(cmd, "pipeline") == 0)
		return cmd_pipeline(c, o, args, nargs);
	if (strcmp(cmd, "fill") == 0)
		return cmd_fill(c, o, args, nargs);
	if (strcmp(cmd, "hold") == 0)
		return cmd_hold(c, args, nargs);
	if (strcmp(cmd, "watch") == 0)
		return cmd_watch(c, o, args, nargs);
	usage();
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct fm_conn *c;
	const char *cmd;
	int rc;

	log_init("fm-client", LOG_LVL_WARN);
	if (fm_auth_init() < 0) {
		fprintf(stderr, "fm-client: libsodium failed to start\n");
		return EXIT_USAGE;
	}
	if (parse_opts(argc, argv, &o) < 0) {
		usage();
		return EXIT_USAGE;
	}
	cmd = argv[optind];
	if (strncmp(cmd, "raw-", 4) == 0)
		return cmd_raw(&o, cmd);
	rc = conn_open(&o, &c);
	if (rc)
		return rc;
	rc = run(c, &o, cmd, argv + optind + 1, argc - optind - 1);
	fm_conn_close(c);
	return rc;
}
