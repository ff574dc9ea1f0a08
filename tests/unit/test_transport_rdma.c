/* test_transport_rdma.c — the rdma transport and the memserver's rdma
 * listener.
 *
 * On any machine: the message codec with the RDMA-only GRANT op, the
 * client's grant cache, the rdma_cm error mapping, and the no-device
 * paths of both ends (a clear -ENODEV naming the address and what to
 * check: the build hosts have no RDMA at all).
 *
 * With an RDMA device (Soft-RoCE in the test guest, tests/vm/rdma-*.sh)
 * and FARMEM_RDMA_ADDR naming an address on it: a real memserver core
 * (pool, segment table, device table, sessions) behind ms_rdma_listen()
 * in a thread, and real clients through fm_conn_open(): handshake,
 * ALLOC with a granted key, pipelined one-sided WRITE/READ verify, large
 * transfers, GRANT for segments the connection did not allocate,
 * isolation between devices, FREE revoking, wrong secret, and a server
 * restart ridden out by reconnect; and the same connection owned by an
 * event loop (fiber.h): requests from the loop's fibers, completions in
 * its link fiber, no thread of its own, reconnect and close from the
 * loop.  Without either, those cases report
 * TAP "skip" with the reason.  Every wait is bounded; nothing asserts on
 * speed.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <rdma/rdma_cma.h>

#include "auth.h"
#include "log.h"
#include "memserver/memserver.h"
#include "protocol.h"
#include "transport.h"
#include "transport_rdma.h"
#include "memserver/rdma_listener.h"
#include "loop_rig.h"

#define POOL_BYTES    (16u << 20)
#define SEG_BYTES     (1u << 20)
#define WAIT_BOUND_MS 30000

static struct fm_secret test_secret;
static const uint8_t uuid_a[FM_UUID_LEN] = { 0xaa, 1 };
static const uint8_t uuid_b[FM_UUID_LEN] = { 0xbb, 2 };
static const char *skip_reason;   /* set by a case that cannot run here */

#define CHECK(expr) do { if (!(expr)) { \
	printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #expr); \
	return 1; } } while (0)

#define SKIP(why) do { skip_reason = (why); return 0; } while (0)

/* ---- stderr capture, to check what the user is told ---- */

struct capture {
	int saved;
	FILE *f;
};

static void capture_begin(struct capture *c)
{
	fflush(stderr);
	c->f = tmpfile();
	c->saved = dup(2);
	dup2(fileno(c->f), 2);
}

/* Ends the capture; returns the text (static buffer). */
static const char *capture_end(struct capture *c)
{
	static char text[8192];
	size_t n;

	fflush(stderr);
	dup2(c->saved, 2);
	close(c->saved);
	rewind(c->f);
	n = fread(text, 1, sizeof(text) - 1, c->f);
	text[n] = '\0';
	fclose(c->f);
	return text;
}

static int have_device(void)
{
	struct capture cap;
	int rc;

	capture_begin(&cap);
	rc = fm_rdma_device_check("probe");
	capture_end(&cap);
	return rc == 0;
}

/* ---- host cases ---- */

static size_t frame(uint8_t *buf, uint8_t op, int32_t status, const uint8_t *pl,
		    uint32_t len)
{
	struct fm_hdr h = { .op = op, .tag = 7, .status = status, .len = len };

	fm_hdr_encode(buf, &h);
	if (len)
		memcpy(buf + FM_HDR_SIZE, pl, len);
	return FM_HDR_SIZE + len;
}

static int t_msg_decode(void)
{
	uint8_t buf[128], pl[FM_GRANT_REP_LEN] = { 1, 2, 3 };
	struct fm_hdr h;
	size_t n;

	n = frame(buf, FM_OP_RDMA_GRANT, 0, pl, FM_GRANT_REQ_LEN);
	CHECK(fm_rdma_msg_decode(buf, n, &h) == 0);
	CHECK(h.op == FM_OP_RDMA_GRANT && h.tag == 7 && h.len == FM_GRANT_REQ_LEN);
	n = frame(buf, FM_OP_RDMA_GRANT | FM_OP_REPLY, -ENOENT, NULL, 0);
	CHECK(fm_rdma_msg_decode(buf, n, &h) == 0);
	CHECK(h.op == (FM_OP_RDMA_GRANT | FM_OP_REPLY) && h.status == -ENOENT);
	n = frame(buf, FM_OP_STAT, 0, NULL, 0);
	CHECK(fm_rdma_msg_decode(buf, n, &h) == 0 && h.op == FM_OP_STAT);
	/* The message length must be exactly header + len. */
	n = frame(buf, FM_OP_RDMA_GRANT, 0, pl, FM_GRANT_REQ_LEN);
	CHECK(fm_rdma_msg_decode(buf, n - 1, &h) == -EPROTO);
	CHECK(fm_rdma_msg_decode(buf, n + 1, &h) == -EPROTO);
	CHECK(fm_rdma_msg_decode(buf, FM_HDR_SIZE - 1, &h) == -EPROTO);
	/* The rest of the header is checked as for any frame. */
	buf[0] ^= 1;
	CHECK(fm_rdma_msg_decode(buf, n, &h) == -EPROTO);
	buf[0] ^= 1;
	n = frame(buf, FM_OP_RDMA_GRANT, -5, pl, FM_GRANT_REQ_LEN); /* status in a request */
	CHECK(fm_rdma_msg_decode(buf, n, &h) == -EPROTO);
	n = frame(buf, FM_OP_RDMA_GRANT | FM_OP_REPLY, 5, NULL, 0);   /* positive status */
	CHECK(fm_rdma_msg_decode(buf, n, &h) == -EPROTO);
	n = frame(buf, 0x11, 0, NULL, 0);                              /* unknown op */
	CHECK(fm_rdma_msg_decode(buf, n, &h) == -EPROTO);
	return 0;
}

static int t_grants_basic(void)
{
	struct fm_rdma_grants g;
	const struct fm_rdma_grant *e;
	uint64_t remote;

	CHECK(fm_rdma_grants_init(&g, 100) == 0);
	CHECK(g.cap == 128);
	CHECK(fm_rdma_grants_find(&g, 5) == NULL);
	fm_rdma_grants_put(&g, 5, 0x10000, 77, 8192);
	e = fm_rdma_grants_find(&g, 5);
	CHECK(e && e->addr == 0x10000 && e->rkey == 77 && e->size == 8192);
	fm_rdma_grants_put(&g, 5, 0x20000, 78, 4096);      /* replace */
	e = fm_rdma_grants_find(&g, 5);
	CHECK(e && e->addr == 0x20000 && e->rkey == 78 && g.count == 1);
	CHECK(fm_rdma_grant_range(e, 0, 4096, &remote) == 0 && remote == 0x20000);
	CHECK(fm_rdma_grant_range(e, 4000, 96, &remote) == 0 && remote == 0x20000 + 4000);
	CHECK(fm_rdma_grant_range(e, 4000, 97, &remote) == -ERANGE);
	CHECK(fm_rdma_grant_range(e, UINT32_MAX, 2, &remote) == -ERANGE);
	fm_rdma_grants_del(&g, 5);
	CHECK(fm_rdma_grants_find(&g, 5) == NULL && g.count == 0);
	fm_rdma_grants_del(&g, 5);                           /* absent: no-op */
	CHECK(g.count == 0);
	fm_rdma_grants_fini(&g);
	return 0;
}

/* Many ids, deleted in a scattered order: every survivor stays findable
 * (backward-shift deletion keeps probe runs whole). */
static int t_grants_churn(void)
{
	struct fm_rdma_grants g;
	const uint32_t n = 90;   /* under 3/4 of 128: no reset */

	CHECK(fm_rdma_grants_init(&g, 128) == 0);
	for (uint32_t i = 0; i < n; i++)
		fm_rdma_grants_put(&g, (uint64_t)i << 32 | (i * 7), i, i + 1, FM_PAGE);
	CHECK(g.count == n && g.resets == 0);
	for (uint32_t i = 0; i < n; i += 3)
		fm_rdma_grants_del(&g, (uint64_t)i << 32 | (i * 7));
	for (uint32_t i = 0; i < n; i++) {
		const struct fm_rdma_grant *e = fm_rdma_grants_find(&g, (uint64_t)i << 32 | (i * 7));

		if (i % 3 == 0)
			CHECK(e == NULL);
		else
			CHECK(e && e->addr == i && e->rkey == i + 1);
	}
	fm_rdma_grants_fini(&g);
	return 0;
}

/* Full: it forgets everything and goes on (a cache; nothing fails). */
static int t_grants_full(void)
{
	struct fm_rdma_grants g;

	CHECK(fm_rdma_grants_init(&g, 16) == 0);
	for (uint64_t i = 1; i <= 40; i++) {
		fm_rdma_grants_put(&g, i, i, 1, FM_PAGE);
		CHECK(fm_rdma_grants_find(&g, i) != NULL);   /* the newest is always there */
		CHECK(g.count <= 12);
	}
	CHECK(g.resets >= 3);
	fm_rdma_grants_clear(&g);
	CHECK(g.count == 0 && fm_rdma_grants_find(&g, 40) == NULL);
	fm_rdma_grants_fini(&g);
	return 0;
}

static int t_cm_errors(void)
{
	struct capture cap;
	const char *text;
	int rc;

	capture_begin(&cap);
	rc = fm_rdma_cm_error("rdma://10.9.8.7:7070", "resolving the address",
			      RDMA_CM_EVENT_ADDR_ERROR, -ENODEV, LOG_LVL_ERR);
	text = capture_end(&cap);
	CHECK(rc == -EHOSTUNREACH);
	CHECK(strstr(text, "rdma://10.9.8.7:7070") != NULL);
	CHECK(strstr(text, FM_RDMA_CHECK_HINT) != NULL);

	capture_begin(&cap);
	rc = fm_rdma_cm_error("rdma://h:1", "connecting", RDMA_CM_EVENT_REJECTED, 8,
			      LOG_LVL_ERR);
	text = capture_end(&cap);
	CHECK(rc == -ECONNREFUSED);
	CHECK(strstr(text, "refused") != NULL);
	capture_begin(&cap);
	rc = fm_rdma_cm_error("x", "y", RDMA_CM_EVENT_UNREACHABLE, 0, LOG_LVL_ERR);
	capture_end(&cap);
	CHECK(rc == -EHOSTUNREACH);
	capture_begin(&cap);
	rc = fm_rdma_cm_error("x", "y", RDMA_CM_EVENT_DISCONNECTED, 0, LOG_LVL_ERR);
	capture_end(&cap);
	CHECK(rc == -ECONNRESET);
	/* Quiet while retrying: the message is debug-level only. */
	capture_begin(&cap);
	fm_rdma_cm_error("rdma://q:1", "connecting", RDMA_CM_EVENT_REJECTED, 8,
			 LOG_LVL_DEBUG);
	text = capture_end(&cap);
	if (log_get_level() < LOG_LVL_DEBUG)
		CHECK(strstr(text, "rdma://q:1") == NULL);
	return 0;
}

static struct fm_conn_params params(const char *addr, const uint8_t *uuid)
{
	struct fm_conn_params p = { .secret = &test_secret, .timeout_ms = 5000,
				    .connect_timeout_ms = 5000 };

	if (parse_addr(addr, 0, &p.addr) < 0)
		abort();
	memcpy(p.uuid, uuid, FM_UUID_LEN);
	return p;
}

/* The client on a machine without RDMA: at once, -ENODEV, and the
 * message names the address and what to check. */
static int t_client_no_device(void)
{
	struct fm_conn_params p = params("rdma://127.0.0.1:7070", uuid_a);
	struct fm_conn *c = (struct fm_conn *)1;
	struct capture cap;
	const char *text;
	int rc;

	if (have_device())
		SKIP("this machine has an RDMA device");
	capture_begin(&cap);
	rc = fm_conn_open(&p, &c);
	text = capture_end(&cap);
	CHECK(rc == -ENODEV);
	CHECK(c == NULL);
	CHECK(strstr(text, "rdma://127.0.0.1:7070: no RDMA device (check `rdma link` "
		      "and `ibv_devices`)") != NULL);
	/* The ops table itself refuses what is not an rdma address. */
	p = params("tcp://127.0.0.1:7070", uuid_a);
	CHECK(fm_transport_rdma.open(&p, &c) == -EINVAL);
	p = params("rdma://127.0.0.1:7070", uuid_a);
	p.max_inflight = 1u << 20;
	CHECK(fm_transport_rdma.open(&p, &c) == -EINVAL);
	CHECK(strcmp(fm_transport_rdma.name, "rdma") == 0);
	return 0;
}

static int t_listener_no_device(void)
{
	struct ms_ctx ctx = { 0 };
	struct fm_addr a;
	struct ms_rdma *l = (struct ms_rdma *)1;
	struct capture cap;
	const char *text;
	int rc;

	if (have_device())
		SKIP("this machine has an RDMA device");
	CHECK(parse_addr("rdma://0.0.0.0:7071", 0, &a) == 0);
	capture_begin(&cap);
	rc = ms_rdma_listen(&ctx, &a, &l);
	text = capture_end(&cap);
	CHECK(rc == -ENODEV);
	CHECK(l == NULL);
	CHECK(strstr(text, "rdma://0.0.0.0:7071") != NULL);
	CHECK(strstr(text, FM_RDMA_CHECK_HINT) != NULL);
	CHECK(parse_addr("tcp://0.0.0.0:7071", 0, &a) == 0);
	CHECK(ms_rdma_listen(&ctx, &a, &l) == -EINVAL);
	return 0;
}

/* ---- device cases: a memserver core behind the rdma listener ---- */

struct server {
	struct ms_ctx ctx;
	struct ms_pool pool;
	struct ms_rdma *l;
	pthread_t thread;
	int stop;
	char addr[300];
};

static void *server_loop(void *arg)
{
	struct server *s = arg;
	struct pollfd pfd = { .fd = ms_rdma_fd(s->l), .events = POLLIN };

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		if (poll(&pfd, 1, 50) > 0)
			ms_rdma_process(s->l);
		ms_devtab_expire(&s->ctx.devs, &s->ctx.segs, s->ctx.now_ms());
	}
	return NULL;
}

static const char *rdma_ip(void)
{
	const char *ip = getenv("FARMEM_RDMA_ADDR");

	if (!have_device())
		return NULL;
	return ip && *ip ? ip : NULL;
}

/* port 0: the listener picks one, so runs never collide. */
static struct server *server_start(const char *ip, uint16_t port)
{
	struct server *s = calloc(1, sizeof(*s));
	struct fm_addr a;
	char text[300];
	int rc;

	if (!s)
		return NULL;
	snprintf(text, sizeof(text), "rdma://%s:%u", ip, port);
	/* parse_addr() wants a real port; 0 asks the listener to pick. */
	rc = parse_addr(port ? text : "rdma://0.0.0.0:1", 0, &a);
	snprintf(a.host, sizeof(a.host), "%s", ip);
	a.port = port;
	if (rc == 0)
		rc = ms_pool_create(&s->pool, POOL_BYTES, MS_HUGE_NO, 1);
	if (rc == 0) {
		rc = ms_segtab_init(&s->ctx.segs, s->pool.base, s->pool.size, SEG_BYTES);
		if (rc)
			ms_pool_destroy(&s->pool);
	}
	if (rc) {
		printf("# server %s: pool set-up failed: %s\n", text, strerror(-rc));
		free(s);
		return NULL;
	}
	ms_devtab_init(&s->ctx.devs, 60000);
	s->ctx.secret = test_secret;
	ms_ctx_new_boot(&s->ctx);
	s->ctx.now_ms = ms_now_ms;
	rc = ms_rdma_listen(&s->ctx, &a, &s->l);
	if (rc == 0) {
		snprintf(s->addr, sizeof(s->addr), "rdma://%s:%u", ip, ms_rdma_port(s->l));
		rc = -pthread_create(&s->thread, NULL, server_loop, s);
		if (rc)
			ms_rdma_close(s->l);
	}
	if (rc) {
		printf("# server %s: %s\n", text, strerror(-rc));
		ms_devtab_fini(&s->ctx.devs);
		ms_segtab_fini(&s->ctx.segs);
		ms_pool_destroy(&s->pool);
		free(s);
		return NULL;
	}
	return s;
}

static void server_stop(struct server *s)
{
	if (!s)
		return;
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	pthread_join(s->thread, NULL);
	ms_rdma_close(s->l);
	ms_devtab_fini(&s->ctx.devs);
	ms_segtab_fini(&s->ctx.segs);
	ms_pool_destroy(&s->pool);
	free(s);
}

static int call(struct fm_conn *c, struct fm_req *r)
{
	return fm_conn_call(c, r);
}

static int do_alloc(struct fm_conn *c, uint32_t size, struct fm_alloc_rep *rep)
{
	struct fm_req r = { .op = FM_OP_ALLOC, .arg = size };
	int rc = call(c, &r);

	*rep = r.rep.alloc;
	return rc;
}

static int do_rw(struct fm_conn *c, uint8_t op, uint64_t seg, uint32_t off,
		 void *buf, uint32_t len)
{
	struct iovec iov = { buf, len };
	struct fm_req r = { .op = op, .seg_id = seg, .offset = off, .len = len };

	if (op == FM_OP_WRITE) {
		r.iov = &iov;
		r.iovcnt = 1;
	} else {
		r.buf = buf;
	}
	return call(c, &r);
}

static int do_simple(struct fm_conn *c, uint8_t op, uint64_t seg)
{
	struct fm_req r = { .op = op, .seg_id = seg };

	return call(c, &r);
}

static void fill(uint8_t *p, size_t len, uint32_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 131u + seed * 7u) ^ (seed >> 3));
}

/* Pipelined: many requests in flight at once, waited for together. */
struct batch {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	unsigned left;
	int first_err;
};

static void batch_done(struct fm_req *r, int status)
{
	struct batch *b = r->priv;

	pthread_mutex_lock(&b->lock);
	if (status && !b->first_err)
		b->first_err = status;
	b->left--;
	pthread_cond_signal(&b->cv);
	pthread_mutex_unlock(&b->lock);
}

static int batch_run(struct fm_conn *c, struct fm_req *reqs, unsigned n)
{
	struct batch b = { .left = n };

	pthread_mutex_init(&b.lock, NULL);
	pthread_cond_init(&b.cv, NULL);
	for (unsigned i = 0; i < n; i++) {
		int rc;

		reqs[i].done = batch_done;
		reqs[i].priv = &b;
		rc = fm_conn_submit(c, &reqs[i]);
		if (rc) {
			pthread_mutex_lock(&b.lock);
			b.left -= n - i;
			if (!b.first_err)
				b.first_err = rc;
			pthread_mutex_unlock(&b.lock);
			break;
		}
	}
	/* The transport enforces request deadlines, so this ends. */
	pthread_mutex_lock(&b.lock);
	while (b.left)
		pthread_cond_wait(&b.cv, &b.lock);
	pthread_mutex_unlock(&b.lock);
	pthread_cond_destroy(&b.cv);
	pthread_mutex_destroy(&b.lock);
	return b.first_err;
}

#define NPAGES 128

static int t_loop_basic(void)
{
	static uint8_t pages[NPAGES][FM_PAGE], back[NPAGES][FM_PAGE];
	static struct fm_req reqs[NPAGES];
	static struct iovec iov[NPAGES];
	static uint64_t ids[FM_LIST_MAX];
	static uint32_t sizes[FM_LIST_MAX];
	const char *ip = rdma_ip();
	struct ms_rdma_stats st;
	struct fm_alloc_rep seg;
	struct fm_conn_params p;
	struct fm_conn *c;
	struct server *s;
	uint8_t ping[100], echo[100];
	struct iovec piov = { ping, sizeof(ping) };
	struct fm_req r;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	p = params(s->addr, uuid_a);
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(fm_conn_is_up(c));

	CHECK(do_alloc(c, SEG_BYTES, &seg) == 0);
	CHECK(seg.size == SEG_BYTES && seg.rkey != 0 && seg.remote_addr != 0);

	/* Pipelined page writes, then reads, each page different. */
	for (unsigned i = 0; i < NPAGES; i++) {
		fill(pages[i], FM_PAGE, i + 1);
		iov[i] = (struct iovec){ pages[i], FM_PAGE };
		reqs[i] = (struct fm_req){ .op = FM_OP_WRITE, .seg_id = seg.seg_id,
					   .offset = i * FM_PAGE, .len = FM_PAGE,
					   .iov = &iov[i], .iovcnt = 1 };
	}
	CHECK(batch_run(c, reqs, NPAGES) == 0);
	memset(back, 0, sizeof(back));
	for (unsigned i = 0; i < NPAGES; i++)
		reqs[i] = (struct fm_req){ .op = FM_OP_READ, .seg_id = seg.seg_id,
					   .offset = i * FM_PAGE, .len = FM_PAGE,
					   .buf = back[i] };
	CHECK(batch_run(c, reqs, NPAGES) == 0);
	for (unsigned i = 0; i < NPAGES; i++)
		CHECK(memcmp(pages[i], back[i], FM_PAGE) == 0);
	/* The bytes really are in the server's pool, where the key says. */
	CHECK(memcmp((uint8_t *)(uintptr_t)seg.remote_addr + 5 * FM_PAGE, pages[5],
		     FM_PAGE) == 0);

	/* Odd offsets and lengths. */
	CHECK(do_rw(c, FM_OP_WRITE, seg.seg_id, 13, pages[3], 1000) == 0);
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, 13, back[0], 1000) == 0);
	CHECK(memcmp(back[0], pages[3], 1000) == 0);
	/* Past the end of the segment: -ERANGE, the connection stays. */
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, SEG_BYTES - 100, back[0], 200) == -ERANGE);
	CHECK(fm_conn_is_up(c));

	/* Control ops over SEND/RECV. */
	fill(ping, sizeof(ping), 99);
	r = (struct fm_req){ .op = FM_OP_PING, .len = sizeof(ping), .iov = &piov,
			     .iovcnt = 1, .buf = echo };
	CHECK(call(c, &r) == 0 && memcmp(ping, echo, sizeof(ping)) == 0);
	r = (struct fm_req){ .op = FM_OP_STAT };
	CHECK(call(c, &r) == 0);
	CHECK(r.rep.stat.segments == 1 && r.rep.stat.pool_bytes == POOL_BYTES);
	r = (struct fm_req){ .op = FM_OP_LIST };
	r.rep.list.seg_ids = ids;
	r.rep.list.sizes = sizes;
	CHECK(call(c, &r) == 0);
	CHECK(r.rep.list.count == 1 && ids[0] == seg.seg_id && sizes[0] == SEG_BYTES);

	ms_rdma_get_stats(s->l, &st);
	printf("# server: %s, %llu grant(s), %llu control message(s)\n",
	       st.windows ? "per-segment memory windows" : "whole-pool key",
	       (unsigned long long)st.grants, (unsigned long long)st.ctrl_msgs);
	CHECK(st.grants == 1);
	/* Data went one-sided: only the handshake and the control ops above
	 * (HELLO, AUTH, ALLOC, PING, STAT, LIST) were messages. */
	CHECK(st.ctrl_msgs == 6);

	CHECK(do_simple(c, FM_OP_FREE, seg.seg_id) == 0);
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, 0, back[0], FM_PAGE) == -ENOENT);
	fm_conn_close(c);
	server_stop(s);
	return 0;
}

/* Above the small bounce buffers: up to FM_MAX_IO in one transfer. */
static int t_loop_large(void)
{
	static uint8_t big[FM_MAX_IO], back[FM_MAX_IO];
	static struct fm_req reqs[6];
	static struct iovec iov[6];
	const char *ip = rdma_ip();
	struct fm_alloc_rep seg;
	struct fm_conn_params p;
	struct fm_conn *c;
	struct server *s;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	p = params(s->addr, uuid_a);
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(do_alloc(c, SEG_BYTES, &seg) == 0);
	fill(big, sizeof(big), 5);
	CHECK(do_rw(c, FM_OP_WRITE, seg.seg_id, 0, big, FM_MAX_IO) == 0);
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, 0, back, FM_MAX_IO) == 0);
	CHECK(memcmp(big, back, FM_MAX_IO) == 0);
	/* Several multi-unit requests in flight together. */
	for (unsigned i = 0; i < 6; i++) {
		iov[i] = (struct iovec){ big + i * 65536, 65536 };
		reqs[i] = (struct fm_req){ .op = FM_OP_WRITE, .seg_id = seg.seg_id,
					   .offset = i * 131072, .len = 65536,
					   .iov = &iov[i], .iovcnt = 1 };
	}
	CHECK(batch_run(c, reqs, 6) == 0);
	for (unsigned i = 0; i < 6; i++) {
		CHECK(do_rw(c, FM_OP_READ, seg.seg_id, i * 131072, back, 65536) == 0);
		CHECK(memcmp(back, big + i * 65536, 65536) == 0);
	}
	fm_conn_close(c);

	/* Few slots, so bounce memory for one FM_MAX_IO at a time: three
	 * of them in flight wait for one another, none fails. */
	p.max_inflight = 4;
	CHECK(fm_conn_open(&p, &c) == 0);
	for (unsigned i = 0; i < 3; i++) {
		iov[i] = (struct iovec){ big, FM_MAX_IO };
		reqs[i] = (struct fm_req){ .op = FM_OP_WRITE, .seg_id = seg.seg_id,
					   .offset = 0, .len = FM_MAX_IO,
					   .iov = &iov[i], .iovcnt = 1 };
	}
	CHECK(batch_run(c, reqs, 3) == 0);
	for (unsigned i = 0; i < 3; i++)
		reqs[i] = (struct fm_req){ .op = FM_OP_READ, .seg_id = seg.seg_id,
					   .offset = 0, .len = FM_MAX_IO, .buf = back };
	CHECK(batch_run(c, reqs, 3) == 0);
	CHECK(memcmp(big, back, FM_MAX_IO) == 0);
	fm_conn_close(c);
	server_stop(s);
	return 0;
}

/* A second connection of the same device learns the segment by GRANT;
 * another device never gets it. */
static int t_loop_grant_isolation(void)
{
	static uint8_t page[FM_PAGE], back[FM_PAGE];
	const char *ip = rdma_ip();
	struct fm_alloc_rep seg, segb;
	struct fm_conn_params p;
	struct fm_conn *a, *a2, *b;
	struct server *s;
	struct ms_rdma_stats st;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	p = params(s->addr, uuid_a);
	CHECK(fm_conn_open(&p, &a) == 0);
	CHECK(fm_conn_open(&p, &a2) == 0);
	p = params(s->addr, uuid_b);
	CHECK(fm_conn_open(&p, &b) == 0);

	CHECK(do_alloc(a, SEG_BYTES, &seg) == 0);
	fill(page, FM_PAGE, 42);
	CHECK(do_rw(a, FM_OP_WRITE, seg.seg_id, FM_PAGE, page, FM_PAGE) == 0);
	CHECK(do_rw(a2, FM_OP_READ, seg.seg_id, FM_PAGE, back, FM_PAGE) == 0);
	CHECK(memcmp(page, back, FM_PAGE) == 0);
	/* A WRITE that has to ask for its GRANT first lands whole: the
	 * GRANT frame once went out of the unit that held its bytes. */
	CHECK(do_alloc(a, SEG_BYTES, &segb) == 0);
	fill(page, FM_PAGE, 43);
	CHECK(do_rw(a2, FM_OP_WRITE, segb.seg_id, 3 * FM_PAGE, page, FM_PAGE) == 0);
	CHECK(do_rw(a, FM_OP_READ, segb.seg_id, 3 * FM_PAGE, back, FM_PAGE) == 0);
	CHECK(memcmp(page, back, FM_PAGE) == 0);
	CHECK(do_simple(a, FM_OP_FREE, segb.seg_id) == 0);
	/* Device b: not its segment, indistinguishable from a missing one. */
	CHECK(do_rw(b, FM_OP_READ, seg.seg_id, FM_PAGE, back, FM_PAGE) == -ENOENT);
	CHECK(do_rw(b, FM_OP_WRITE, seg.seg_id, FM_PAGE, back, FM_PAGE) == -ENOENT);
	CHECK(do_rw(a2, FM_OP_READ, 12345, 0, back, FM_PAGE) == -ENOENT);
	CHECK(do_alloc(b, SEG_BYTES, &segb) == 0);
	ms_rdma_get_stats(s->l, &st);
	/* LIST-sized send buffers: one set per authenticated connection. */
	CHECK(st.send_areas == 3);
	/* With memory windows each connection has its own key. */
	if (st.windows)
		CHECK(segb.rkey != seg.rkey);
	/* FREE on one connection revokes the other's grant. */
	CHECK(do_simple(a, FM_OP_FREE, seg.seg_id) == 0);
	CHECK(do_rw(a2, FM_OP_READ, seg.seg_id, FM_PAGE, back, FM_PAGE) != 0);
	fm_conn_close(a);
	fm_conn_close(a2);
	fm_conn_close(b);
	server_stop(s);
	return 0;
}

static int t_loop_wrong_secret(void)
{
	const char *ip = rdma_ip();
	struct fm_secret other = test_secret;
	struct fm_conn_params p;
	struct fm_conn *c = NULL;
	struct ms_rdma_stats st;
	struct server *s;
	struct capture cap;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	other.bytes[0] ^= 0x55;
	p = params(s->addr, uuid_a);
	p.secret = &other;
	capture_begin(&cap);
	CHECK(fm_conn_open(&p, &c) == -EACCES);
	capture_end(&cap);
	CHECK(c == NULL);
	/* A peer that never authenticated got no LIST-sized send buffers. */
	ms_rdma_get_stats(s->l, &st);
	CHECK(st.conns >= 1 && st.send_areas == 0);
	server_stop(s);
	return 0;
}

/* No listener on the port: refused, quickly and clearly. */
static int t_loop_refused(void)
{
	const char *ip = rdma_ip();
	struct fm_conn_params p;
	struct fm_conn *c = NULL;
	struct server *s;
	char addr[300];
	int rc;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	snprintf(addr, sizeof(addr), "%s", s->addr);
	server_stop(s);
	p = params(addr, uuid_a);
	rc = fm_conn_open(&p, &c);
	CHECK(rc == -ECONNREFUSED || rc == -ETIMEDOUT || rc == -EHOSTUNREACH);
	CHECK(c == NULL);
	return 0;
}

static int wait_up(struct fm_conn *c, int want)
{
	for (int i = 0; i < WAIT_BOUND_MS / 50; i++) {
		if (fm_conn_is_up(c) == want)
			return 0;
		usleep(50000);
	}
	return -1;
}

struct states {
	int ups, downs;
};

static void on_state(void *arg, int up)
{
	struct states *st = arg;

	__atomic_add_fetch(up ? &st->ups : &st->downs, 1, __ATOMIC_RELAXED);
}

/* The server goes away and comes back on the same port: the connection
 * goes down, fails fast while down, and comes back by itself. */
static int t_loop_reconnect(void)
{
	static uint8_t page[FM_PAGE], back[FM_PAGE];
	const char *ip = rdma_ip();
	struct states states = { 0 };
	struct fm_alloc_rep seg;
	struct fm_conn_params p;
	struct fm_conn *c;
	struct server *s;
	uint16_t port;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	port = ms_rdma_port(s->l);
	p = params(s->addr, uuid_a);
	p.reconnect = 1;
	p.timeout_ms = 2000;
	p.state_cb = on_state;
	p.state_arg = &states;
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(do_alloc(c, SEG_BYTES, &seg) == 0);
	fill(page, FM_PAGE, 7);
	CHECK(do_rw(c, FM_OP_WRITE, seg.seg_id, 0, page, FM_PAGE) == 0);

	server_stop(s);
	CHECK(wait_up(c, 0) == 0);
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, 0, back, FM_PAGE) == -ENOTCONN);

	s = server_start(ip, port);
	CHECK(s);
	CHECK(wait_up(c, 1) == 0);
	CHECK(__atomic_load_n(&states.downs, __ATOMIC_RELAXED) >= 1);
	CHECK(__atomic_load_n(&states.ups, __ATOMIC_RELAXED) >= 1);
	/* A restarted server lost its memory: the old segment is gone ... */
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, 0, back, FM_PAGE) == -ENOENT);
	/* ... and new ones work. */
	CHECK(do_alloc(c, SEG_BYTES, &seg) == 0);
	CHECK(do_rw(c, FM_OP_WRITE, seg.seg_id, 0, page, FM_PAGE) == 0);
	CHECK(do_rw(c, FM_OP_READ, seg.seg_id, 0, back, FM_PAGE) == 0);
	CHECK(memcmp(page, back, FM_PAGE) == 0);
	fm_conn_close(c);
	server_stop(s);
	return 0;
}

/* ---- event-loop mode: the connection belongs to a loop (fiber.h) ---- */

static int thread_count(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Submit n requests from this fiber, park until all are done: 0, the
 * first error, or -EXDEV when a done() ran anywhere but the link fiber. */
static int fiber_batch(struct fm_conn *c, struct fm_req *reqs, struct fwait *w, unsigned n)
{
	unsigned submitted = 0;
	int rc = 0;

	for (unsigned i = 0; i < n; i++) {
		fwait_arm(&w[i], &reqs[i]);
		rc = fm_conn_submit(c, &reqs[i]);
		if (rc)
			break;
		submitted++;
	}
	for (unsigned i = 0; i < submitted; i++) {
		while (!w[i].done)
			fm_fiber_park();
		if (!rc && w[i].status)
			rc = w[i].status;
		if (!rc && !(w[i].in_loop_thread && w[i].from_other_fiber))
			rc = -EXDEV;
	}
	return rc;
}

#define EV_FIBERS 4
#define EV_PAGES  24     /* per fiber, in flight together: above the bounce units */

struct evworker {
	struct fm_conn *c;
	int id;
	int rc;
	int done;
	uint8_t pages[EV_PAGES][FM_PAGE], back[EV_PAGES][FM_PAGE];
	struct fm_req reqs[EV_PAGES];
	struct iovec iov[EV_PAGES];
	struct fwait w[EV_PAGES];
};

/* Its own segment: EV_PAGES writes in flight, then as many reads, then
 * compare; then a PING. */
static void evworker_fiber(void *arg)
{
	struct evworker *e = arg;
	struct fm_req a = { .op = FM_OP_ALLOC, .arg = SEG_BYTES };
	uint8_t ping[64], echo[64];
	struct iovec piov = { ping, sizeof(ping) };
	struct fm_req pr = { .op = FM_OP_PING, .len = sizeof(ping), .iov = &piov,
			     .iovcnt = 1, .buf = echo };
	uint64_t seg;

	e->rc = fiber_batch(e->c, &a, e->w, 1);
	seg = a.rep.alloc.seg_id;
	for (unsigned i = 0; i < EV_PAGES && !e->rc; i++) {
		fill(e->pages[i], FM_PAGE, (uint32_t)(e->id * 1000 + i));
		e->iov[i] = (struct iovec){ e->pages[i], FM_PAGE };
		e->reqs[i] = (struct fm_req){ .op = FM_OP_WRITE, .seg_id = seg,
					      .offset = i * FM_PAGE, .len = FM_PAGE,
					      .iov = &e->iov[i], .iovcnt = 1 };
	}
	if (!e->rc)
		e->rc = fiber_batch(e->c, e->reqs, e->w, EV_PAGES);
	for (unsigned i = 0; i < EV_PAGES && !e->rc; i++)
		e->reqs[i] = (struct fm_req){ .op = FM_OP_READ, .seg_id = seg,
					      .offset = i * FM_PAGE, .len = FM_PAGE,
					      .buf = e->back[i] };
	if (!e->rc)
		e->rc = fiber_batch(e->c, e->reqs, e->w, EV_PAGES);
	for (unsigned i = 0; i < EV_PAGES && !e->rc; i++)
		if (memcmp(e->pages[i], e->back[i], FM_PAGE))
			e->rc = -EBADMSG;
	fill(ping, sizeof(ping), (uint32_t)e->id);
	if (!e->rc)
		e->rc = fiber_batch(e->c, &pr, e->w, 1);
	if (!e->rc && memcmp(ping, echo, sizeof(ping)))
		e->rc = -EBADMSG;
	e->done = 1;
}

static int evworkers_done(void *arg)
{
	struct evworker *e = arg;

	for (int i = 0; i < EV_FIBERS; i++)
		if (!e[i].done)
			return 0;
	return 1;
}

static struct fm_conn_params ev_params(struct rig *r, const char *addr)
{
	struct fm_conn_params p = params(addr, uuid_a);

	p.loop = r->l;
	*rig_loop_thread() = pthread_self();
	return p;
}

/* A store queue's largest read: 32 stored pages with their headers. */
#define EV_MAX_IO (32u * (FM_PAGE + 48u))

/* From the loop's thread, outside a fiber: a WRITE of len bytes on a
 * fresh segment and its READ back, compared; the submit's error, if any. */
static int ev_big(struct rig *r, struct fm_conn *c, uint32_t len)
{
	static uint8_t big[FM_MAX_IO], back[FM_MAX_IO];
	struct iovec iov = { big, len };
	struct fm_req a = { .op = FM_OP_ALLOC, .arg = SEG_BYTES };
	struct fm_req w = { .op = FM_OP_WRITE, .len = len, .iov = &iov, .iovcnt = 1 };
	struct fm_req rd = { .op = FM_OP_READ, .len = len, .buf = back };
	struct fm_req *steps[3] = { &a, &w, &rd };
	int rc;

	fill(big, len, len);
	for (int i = 0; i < 3; i++) {
		struct fwait fw;

		fwait_arm(&fw, steps[i]);
		steps[i]->seg_id = a.rep.alloc.seg_id;
		rc = fm_conn_submit(c, steps[i]);
		if (rc)
			return rc;
		if (run_until(r, flag_set, &fw.done) || fw.status)
			return fw.status ? fw.status : -ETIMEDOUT;
	}
	rc = memcmp(big, back, len) ? -EBADMSG : 0;
	struct fm_req fr = { .op = FM_OP_FREE, .seg_id = a.rep.alloc.seg_id };
	struct fwait fw;

	fwait_arm(&fw, &fr);
	if (fm_conn_submit(c, &fr) == 0)
		run_until(r, flag_set, &fw.done);
	return rc;
}

/* Fibers of one loop share a connection the loop owns: everything runs
 * in the loop's thread, which the connection adds no thread to. */
static int t_evloop_basic(void)
{
	static struct evworker e[EV_FIBERS];
	const char *ip = rdma_ip();
	struct fm_conn_params p;
	struct fm_conn *c;
	struct server *s;
	struct rig r;
	int threads;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	CHECK(rig_open(&r, EV_FIBERS + 2) == 0);
	p = ev_params(&r, s->addr);
	p.max_io = EV_MAX_IO;
	p.data_only = 1;
	threads = thread_count();
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(thread_count() == threads);       /* no completion thread */
	CHECK(fm_loop_busy(r.l) == 1);          /* the link fiber */
	for (int i = 0; i < EV_FIBERS; i++) {
		memset(&e[i], 0, sizeof(e[i]));
		e[i].c = c;
		e[i].id = i;
		CHECK(fm_loop_spawn(r.l, evworker_fiber, &e[i]) == 0);
	}
	CHECK(run_until(&r, evworkers_done, e) == 0);
	for (int i = 0; i < EV_FIBERS; i++) {
		if (e[i].rc)
			printf("#   fiber %d: %s\n", i, strerror(-e[i].rc));
		CHECK(e[i].rc == 0);
	}
	CHECK(fm_loop_busy(r.l) == 1);
	/* The loop's thread outside a fiber must not wait for a slot: it
	 * would stop the link fiber.  With every slot free it just goes. */
	struct fm_req st = { .op = FM_OP_STAT };
	struct fwait w;

	fwait_arm(&w, &st);
	CHECK(fm_conn_submit(c, &st) == 0);
	CHECK(run_until(&r, flag_set, &w.done) == 0);
	CHECK(w.status == 0 && w.in_loop_thread && st.rep.stat.segments == EV_FIBERS);
	/* A queue's connection (max_io, data only): its largest I/O goes in
	 * one transfer of several units, one byte more is refused, and so
	 * is LIST, whose reply its receive buffers could not hold. */
	CHECK(ev_big(&r, c, EV_MAX_IO) == 0);
	CHECK(ev_big(&r, c, EV_MAX_IO + 1) == -EINVAL);
	static uint64_t ids[FM_LIST_MAX];
	static uint32_t sizes[FM_LIST_MAX];
	struct fm_req l = { .op = FM_OP_LIST, .done = fwait_done, .priv = &w };

	l.rep.list.seg_ids = ids;
	l.rep.list.sizes = sizes;
	CHECK(fm_conn_submit(c, &l) == -EOPNOTSUPP);
	fm_conn_close(c);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(rig_close(&r) == 0);
	server_stop(s);
	return 0;
}

struct evping {
	struct fm_conn *c;
	int rc;
	int done;
};

static void evping_fiber(void *arg)
{
	struct evping *e = arg;
	uint8_t ping[32], echo[32];
	struct iovec piov = { ping, sizeof(ping) };
	struct fm_req pr = { .op = FM_OP_PING, .len = sizeof(ping), .iov = &piov,
			     .iovcnt = 1, .buf = echo };
	struct fwait w;

	fill(ping, sizeof(ping), 3);
	e->rc = fiber_batch(e->c, &pr, &w, 1);
	if (!e->rc && memcmp(ping, echo, sizeof(ping)))
		e->rc = -EBADMSG;
	e->done = 1;
}

static int ev_ping(struct rig *r, struct fm_conn *c)
{
	struct evping e = { .c = c };

	if (fm_loop_spawn(r->l, evping_fiber, &e) || run_until(r, flag_set, &e.done))
		return -EDEADLK;
	return e.rc;
}

struct evup {
	struct fm_conn *c;
	int want;
};

static int is_up_now(void *arg)
{
	struct evup *u = arg;

	return fm_conn_is_up(u->c) == u->want;
}

/* The link fiber notices the server leave, and reconnects when it is
 * back, all inside the loop's turns; close works while down too. */
static int t_evloop_reconnect(void)
{
	const char *ip = rdma_ip();
	struct states states = { 0 };
	struct fm_conn_params p;
	struct fm_conn *c;
	struct server *s;
	struct evup up;
	struct rig r;
	uint16_t port;

	if (!ip)
		SKIP("no RDMA device or FARMEM_RDMA_ADDR unset (runs in tests/vm/rdma-loop.sh)");
	s = server_start(ip, 0);
	CHECK(s);
	port = ms_rdma_port(s->l);
	CHECK(rig_open(&r, 4) == 0);
	p = ev_params(&r, s->addr);
	p.reconnect = 1;
	p.timeout_ms = 2000;
	p.state_cb = on_state;
	p.state_arg = &states;
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(ev_ping(&r, c) == 0);

	server_stop(s);
	up = (struct evup){ .c = c, .want = 0 };
	CHECK(run_until(&r, is_up_now, &up) == 0);
	CHECK(ev_ping(&r, c) == -ENOTCONN);
	s = server_start(ip, port);
	CHECK(s);
	up.want = 1;
	CHECK(run_until(&r, is_up_now, &up) == 0);
	CHECK(states.downs >= 1 && states.ups >= 1);
	CHECK(ev_ping(&r, c) == 0);
	fm_conn_close(c);
	CHECK(fm_loop_busy(r.l) == 0);

	/* Closed while the server is away: the link fiber ends all the same. */
	p = ev_params(&r, s->addr);
	p.reconnect = 1;
	CHECK(fm_conn_open(&p, &c) == 0);
	server_stop(s);
	up = (struct evup){ .c = c, .want = 0 };
	CHECK(run_until(&r, is_up_now, &up) == 0);
	fm_conn_close(c);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(rig_close(&r) == 0);
	return 0;
}

/* ---- runner: TAP with skips ---- */

struct tcase {
	const char *name;
	int (*fn)(void);
};

static const struct tcase cases[] = {
	{ "GRANT frames decode; bad lengths and headers do not", t_msg_decode },
	{ "grant cache: put, replace, range, delete", t_grants_basic },
	{ "grant cache: scattered deletes keep the rest findable", t_grants_churn },
	{ "grant cache: full forgets and goes on", t_grants_full },
	{ "rdma_cm failures map to errnos and say what to check", t_cm_errors },
	{ "client without an RDMA device: -ENODEV naming the address", t_client_no_device },
	{ "listener without an RDMA device: -ENODEV naming the address", t_listener_no_device },
	{ "rdma loop: alloc, pipelined one-sided write/read verify, control ops, free",
	  t_loop_basic },
	{ "rdma loop: multi-unit transfers up to FM_MAX_IO, waiting for bounce units", t_loop_large },
	{ "rdma loop: GRANT for another connection, isolation between devices",
	  t_loop_grant_isolation },
	{ "rdma loop: wrong secret is -EACCES", t_loop_wrong_secret },
	{ "rdma loop: no listener is refused", t_loop_refused },
	{ "rdma loop: server restart, reconnect", t_loop_reconnect },
	{ "rdma event loop: fibers' requests complete in the link fiber, no thread added",
	  t_evloop_basic },
	{ "rdma event loop: server restart, reconnect and close from the loop",
	  t_evloop_reconnect },
};

int main(void)
{
	int n = (int)(sizeof(cases) / sizeof(cases[0])), failed = 0;

	log_init("test_transport_rdma", getenv("FARMEM_TEST_DEBUG") ? LOG_LVL_DEBUG
								   : LOG_LVL_WARN);
	if (fm_auth_init() < 0)
		return 1;
	memcpy(test_secret.bytes, "rdma-test-secret-0123456789", 27);
	test_secret.len = 27;
	printf("1..%d\n", n);
	for (int i = 0; i < n; i++) {
		int rc;

		skip_reason = NULL;
		rc = cases[i].fn();
		if (skip_reason)
			printf("ok %d - %s # SKIP %s\n", i + 1, cases[i].name, skip_reason);
		else
			printf("%s %d - %s\n", rc ? "not ok" : "ok", i + 1, cases[i].name);
		fflush(stdout);
		failed += rc != 0;
	}
	return failed ? 1 : 0;
}
