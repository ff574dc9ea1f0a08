/* test_nbd.c — the NBD server against a memory backend, spoken to byte by
 * byte over a socketpair: handshake options, every command, unaligned
 * edges, out-of-range and hostile requests, the connection cap. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "ublk-farmem/frontend/nbd/nbd.h"
#include "ublk-farmem/frontend/nbd/nbd_proto.h"
#include "tests/unit/tap.h"

#define DEV_SIZE (1u << 20)
#define MAX_BLOCK (64u << 10)

/* ---- memory backend that insists on the page contract ---- */

static uint8_t disk[DEV_SIZE];
static int contract_broken;   /* atomic: set by every worker thread */

static int aligned(uint64_t off, uint64_t len)
{
	int ok = off % 4096 == 0 && len % 4096 == 0 && off + len <= DEV_SIZE;

	if (!ok)
		__atomic_store_n(&contract_broken, 1, __ATOMIC_RELAXED);
	return ok;
}

static int m_read(void *ctx, int q, uint64_t off, uint32_t len, void *buf)
{
	(void)ctx; (void)q;
	if (!aligned(off, len) || len > MAX_BLOCK)
		return -EINVAL;
	memcpy(buf, disk + off, len);
	return 0;
}

static int m_write(void *ctx, int q, uint64_t off, uint32_t len, const void *buf)
{
	(void)ctx; (void)q;
	if (!aligned(off, len) || len > MAX_BLOCK)
		return -EINVAL;
	memcpy(disk + off, buf, len);
	return 0;
}

static int m_discard(void *ctx, int q, uint64_t off, uint64_t len)
{
	(void)ctx; (void)q;
	if (!aligned(off, len))
		return -EINVAL;
	memset(disk + off, 0, len);
	return 0;
}

static int m_flush(void *ctx, int q)
{
	(void)ctx; (void)q;
	return 0;
}

static const struct nbd_backend mem_be = {
	.size = DEV_SIZE, .max_io = MAX_BLOCK, .read = m_read, .write = m_write,
	.discard = m_discard, .flush = m_flush,
};

/* ---- a server on one end of a socketpair ---- */

struct peer {
	struct nbd_server *srv;
	int fd;            /* the client's end */
	int sfd;
	pthread_t thread;
};

static void *serve_thread(void *arg)
{
	struct peer *p = arg;

	nbd_server_serve_fd(p->srv, p->sfd);
	close(p->sfd);
	return NULL;
}

static struct nbd_server *new_server(int max_conns)
{
	struct nbd_server_params prm = {
		.max_conns = max_conns, .workers = 4, .max_block = MAX_BLOCK,
		.export_name = "", .description = "test",
	};
	struct nbd_server *srv = NULL;

	if (nbd_server_create(&prm, &mem_be, &srv) < 0)
		return NULL;
	return srv;
}

static int peer_start(struct peer *p, struct nbd_server *srv)
{
	int sv[2];
	struct timeval tv = { .tv_sec = 10 };

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return -1;
	/* A hung server fails the test instead of hanging it. */
	setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	p->srv = srv;
	p->fd = sv[0];
	p->sfd = sv[1];
	return pthread_create(&p->thread, NULL, serve_thread, p) ? -1 : 0;
}

static void peer_end(struct peer *p)
{
	shutdown(p->fd, SHUT_WR);
	pthread_join(p->thread, NULL);
	close(p->fd);
}

static int rd(int fd, void *b, size_t n)
{
	uint8_t *p = b;

	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int wr(int fd, const void *b, size_t n)
{
	return write(fd, b, n) == (ssize_t)n ? 0 : -1;
}

/* 1 when the server closed its end (EOF), 0 otherwise. */
static int closed_by_server(int fd)
{
	uint8_t b;

	return read(fd, &b, 1) == 0;
}

static int greet(int fd)
{
	uint8_t h[18], f[4];

	if (rd(fd, h, 18) || nbd_get64(h) != NBD_MAGIC || nbd_get64(h + 8) != NBD_IHAVEOPT)
		return -1;
	if (!(nbd_get16(h + 16) & NBD_FLAG_FIXED_NEWSTYLE))
		return -1;
	nbd_put32(f, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	return wr(fd, f, 4);
}

static int send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];

	nbd_put64(h, NBD_IHAVEOPT);
	nbd_put32(h + 8, opt);
	nbd_put32(h + 12, len);
	if (wr(fd, h, 16))
		return -1;
	return len ? wr(fd, data, len) : 0;
}

/* Reads one option reply; returns its type, data in d (up to cap). */
static int64_t opt_reply(int fd, uint32_t opt, uint8_t *d, size_t cap, uint32_t *len)
{
	uint8_t h[20];

	if (rd(fd, h, 20) || nbd_get64(h) != NBD_REP_MAGIC || nbd_get32(h + 8) != opt)
		return -1;
	*len = nbd_get32(h + 16);
	if (*len > cap || rd(fd, d, *len))
		return -1;
	return nbd_get32(h + 12);
}

static int send_go(int fd, uint32_t opt)
{
	uint8_t d[4 + 3 + 2 + 2];

	nbd_put32(d, 3);
	memcpy(d + 4, "abc", 3);
	nbd_put16(d + 7, 1);
	nbd_put16(d + 9, NBD_INFO_BLOCK_SIZE);
	return send_opt(fd, opt, d, sizeof(d));
}

/* GO (after greet) and check replies up to ACK: 0 when in transmission. */
static int go_after_greet(int fd)
{
	uint8_t d[256];
	uint32_t len;
	int64_t t;

	if (send_go(fd, NBD_OPT_GO))
		return -1;
	while ((t = opt_reply(fd, NBD_OPT_GO, d, sizeof(d), &len)) == NBD_REP_INFO)
		;
	return t == NBD_REP_ACK ? 0 : -1;
}

/* GO and check replies up to ACK: 0 when in transmission. */
static int go(int fd)
{
	return greet(fd) ? -1 : go_after_greet(fd);
}

static int request(int fd, uint16_t type, uint16_t flags, uint64_t cookie,
		   uint64_t off, uint32_t len, const void *data)
{
	uint8_t h[NBD_REQUEST_SIZE];

	nbd_put32(h, NBD_REQUEST_MAGIC);
	nbd_put16(h + 4, flags);
	nbd_put16(h + 6, type);
	nbd_put64(h + 8, cookie);
	nbd_put64(h + 16, off);
	nbd_put32(h + 24, len);
	if (wr(fd, h, sizeof(h)))
		return -1;
	return data ? wr(fd, data, len) : 0;
}

/* Simple reply: returns the wire error, or -1 on a broken reply. */
static int64_t reply(int fd, uint64_t cookie, void *data, uint32_t len)
{
	uint8_t h[NBD_REPLY_SIZE];
	uint32_t err;

	if (rd(fd, h, sizeof(h)) || nbd_get32(h) != NBD_SIMPLE_REPLY_MAGIC ||
	    nbd_get64(h + 8) != cookie)
		return -1;
	err = nbd_get32(h + 4);
	if (err == 0 && data && rd(fd, data, len))
		return -1;
	return err;
}

static int64_t cmd(int fd, uint16_t type, uint64_t off, uint32_t len,
		   const void *wdata, void *rdata)
{
	static uint64_t cookie = 1000;

	cookie++;
	if (request(fd, type, 0, cookie, off, len, wdata))
		return -1;
	return reply(fd, cookie, rdata, len);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
}

/* ---- cases ---- */

static struct nbd_server *srv1;

static int t_options(void)
{
	struct peer p;
	uint8_t d[256];
	uint32_t len;
	int ok;

	CHECK(peer_start(&p, srv1) == 0);
	CHECK(greet(p.fd) == 0);
	CHECK(send_opt(p.fd, NBD_OPT_LIST, NULL, 0) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_LIST, d, sizeof(d), &len) == NBD_REP_SERVER);
	CHECK(len >= 4 && nbd_get32(d) == len - 4);
	CHECK(opt_reply(p.fd, NBD_OPT_LIST, d, sizeof(d), &len) == NBD_REP_ACK);
	/* LIST with data is invalid but not fatal. */
	CHECK(send_opt(p.fd, NBD_OPT_LIST, "x", 1) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_LIST, d, sizeof(d), &len) == NBD_REP_ERR_INVALID);
	/* Structured replies: politely unsupported. */
	CHECK(send_opt(p.fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_STRUCTURED_REPLY, d, sizeof(d), &len) == NBD_REP_ERR_UNSUP);
	/* INFO: export size/flags and the block size constraints. */
	CHECK(send_go(p.fd, NBD_OPT_INFO) == 0);
	{
		int seen_export = 0, seen_bs = 0;
		int64_t t;

		while ((t = opt_reply(p.fd, NBD_OPT_INFO, d, sizeof(d), &len)) == NBD_REP_INFO) {
			if (nbd_get16(d) == NBD_INFO_EXPORT && len == 12) {
				seen_export = nbd_get64(d + 2) == DEV_SIZE &&
					(nbd_get16(d + 10) & NBD_FLAG_SEND_TRIM);
			}
			if (nbd_get16(d) == NBD_INFO_BLOCK_SIZE && len == 14)
				seen_bs = nbd_get32(d + 2) == 4096 && nbd_get32(d + 6) == 4096 &&
					nbd_get32(d + 10) == MAX_BLOCK;
		}
		CHECK(t == NBD_REP_ACK && seen_export && seen_bs);
	}
	/* INFO whose count disagrees with its length. */
	nbd_put32(d, 0);
	nbd_put16(d + 4, 5);
	CHECK(send_opt(p.fd, NBD_OPT_INFO, d, 6) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_INFO, d, sizeof(d), &len) == NBD_REP_ERR_INVALID);
	CHECK(send_opt(p.fd, NBD_OPT_ABORT, NULL, 0) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_ABORT, d, sizeof(d), &len) == NBD_REP_ACK);
	ok = closed_by_server(p.fd);
	peer_end(&p);
	CHECK(ok);
	return 0;
}

static int t_read_write_aligned(void)
{
	static uint8_t w[MAX_BLOCK], r[MAX_BLOCK];
	struct peer p;

	fill(w, sizeof(w), 1);
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(cmd(p.fd, NBD_CMD_WRITE, 8192, MAX_BLOCK, w, NULL) == 0);
	CHECK(cmd(p.fd, NBD_CMD_READ, 8192, MAX_BLOCK, NULL, r) == 0);
	CHECK(memcmp(w, r, sizeof(w)) == 0);
	CHECK(cmd(p.fd, NBD_CMD_FLUSH, 0, 0, NULL, NULL) == 0);
	CHECK(request(p.fd, NBD_CMD_DISC, 0, 1, 0, 0, NULL) == 0);
	CHECK(closed_by_server(p.fd));
	peer_end(&p);
	CHECK(!__atomic_load_n(&contract_broken, __ATOMIC_RELAXED));
	return 0;
}

/* Unaligned writes keep the bytes around them; reads start anywhere. */
static int t_unaligned(void)
{
	uint8_t w[9000], r[9000];
	struct peer p;

	memset(disk, 0xaa, 3 * 65536);
	fill(w, sizeof(w), 2);
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(cmd(p.fd, NBD_CMD_WRITE, 5000, 100, w, NULL) == 0);
	CHECK(memcmp(disk + 5000, w, 100) == 0);
	CHECK(disk[4999] == 0xaa && disk[5100] == 0xaa);
	CHECK(cmd(p.fd, NBD_CMD_WRITE, 12000, 9000, w, NULL) == 0);
	CHECK(memcmp(disk + 12000, w, 9000) == 0);
	CHECK(disk[11999] == 0xaa && disk[21000] == 0xaa);
	CHECK(cmd(p.fd, NBD_CMD_READ, 12001, 8999, NULL, r) == 0);
	CHECK(memcmp(r, w + 1, 8999) == 0);
	CHECK(cmd(p.fd, NBD_CMD_READ, DEV_SIZE - 1, 1, NULL, r) == 0);
	CHECK(r[0] == disk[DEV_SIZE - 1]);
	peer_end(&p);
	CHECK(!__atomic_load_n(&contract_broken, __ATOMIC_RELAXED));
	return 0;
}

static int t_zero_and_trim(void)
{
	struct peer p;
	int all_zero = 1;

	memset(disk, 0x55, 65536);
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(cmd(p.fd, NBD_CMD_WRITE_ZEROES, 100, 10000, NULL, NULL) == 0);
	for (int i = 100; i < 10100; i++)
		all_zero &= disk[i] == 0;
	CHECK(all_zero);
	CHECK(disk[99] == 0x55 && disk[10100] == 0x55);
	CHECK(cmd(p.fd, NBD_CMD_WRITE_ZEROES, 20000, 10, NULL, NULL) == 0);
	CHECK(disk[19999] == 0x55 && disk[20000] == 0 && disk[20009] == 0 &&
	      disk[20010] == 0x55);
	/* Trim drops the whole pages inside the range only. */
	CHECK(cmd(p.fd, NBD_CMD_TRIM, 32768 - 100, 8192 + 200, NULL, NULL) == 0);
	CHECK(disk[32768 - 1] == 0x55 && disk[32768] == 0 && disk[40959] == 0 &&
	      disk[40960] == 0x55);
	peer_end(&p);
	CHECK(!__atomic_load_n(&contract_broken, __ATOMIC_RELAXED));
	return 0;
}

static int t_out_of_range(void)
{
	static uint8_t w[8192];
	struct peer p;

	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(cmd(p.fd, NBD_CMD_READ, DEV_SIZE, 4096, NULL, w) == NBD_EINVAL);
	CHECK(cmd(p.fd, NBD_CMD_READ, UINT64_MAX - 100, 4096, NULL, w) == NBD_EINVAL);
	/* The write's payload is drained: the connection stays in step. */
	CHECK(cmd(p.fd, NBD_CMD_WRITE, DEV_SIZE - 4096, 8192, w, NULL) == NBD_ENOSPC);
	CHECK(cmd(p.fd, NBD_CMD_WRITE_ZEROES, DEV_SIZE - 4096, 8192, NULL, NULL) == NBD_ENOSPC);
	CHECK(cmd(p.fd, NBD_CMD_TRIM, DEV_SIZE, 1, NULL, NULL) == NBD_EINVAL);
	CHECK(cmd(p.fd, NBD_CMD_READ, 0, 0, NULL, NULL) == NBD_EINVAL);
	CHECK(cmd(p.fd, NBD_CMD_READ, 0, MAX_BLOCK + 4096, NULL, w) == NBD_EINVAL);
	CHECK(cmd(p.fd, 42, 0, 0, NULL, NULL) == NBD_EINVAL);
	CHECK(request(p.fd, NBD_CMD_READ, 0x8000, 7, 0, 4096, NULL) == 0);
	CHECK(reply(p.fd, 7, w, 4096) == NBD_EINVAL);
	/* Still serving. */
	CHECK(cmd(p.fd, NBD_CMD_READ, 0, 4096, NULL, w) == 0);
	peer_end(&p);
	return 0;
}

static int t_hostile_closes(void)
{
	struct peer p;
	uint8_t junk[28] = { 1, 2, 3 };
	uint8_t big[20];

	/* Bad request magic. */
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(wr(p.fd, junk, sizeof(junk)) == 0);
	CHECK(closed_by_server(p.fd));
	peer_end(&p);
	/* A write far past any limit. */
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(request(p.fd, NBD_CMD_WRITE, 0, 9, 0, 0xf0000000u, NULL) == 0);
	CHECK(closed_by_server(p.fd));
	peer_end(&p);
	/* An option longer than we accept. */
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(greet(p.fd) == 0);
	nbd_put64(big, NBD_IHAVEOPT);
	nbd_put32(big + 8, NBD_OPT_GO);
	nbd_put32(big + 12, 1u << 30);
	CHECK(wr(p.fd, big, 16) == 0);
	CHECK(closed_by_server(p.fd));
	peer_end(&p);
	/* Unknown client flags. */
	CHECK(peer_start(&p, srv1) == 0);
	CHECK(rd(p.fd, big, 18) == 0);
	nbd_put32(big, 0x80);
	CHECK(wr(p.fd, big, 4) == 0);
	CHECK(closed_by_server(p.fd));
	peer_end(&p);
	return 0;
}

/* With one slot, a second GO is refused with a message; after the first
 * connection ends, a new one gets in. */
static int t_connection_cap(void)
{
	struct nbd_server *srv = new_server(1);
	struct peer a, b, c;
	uint8_t d[256];
	uint32_t len;

	CHECK(srv);
	CHECK(peer_start(&a, srv) == 0);
	CHECK(go(a.fd) == 0);
	CHECK(peer_start(&b, srv) == 0);
	CHECK(greet(b.fd) == 0 && send_go(b.fd, NBD_OPT_GO) == 0);
	CHECK(opt_reply(b.fd, NBD_OPT_GO, d, sizeof(d) - 1, &len) == NBD_REP_ERR_POLICY);
	d[len] = 0;
	CHECK(strstr((char *)d, "too many connections") != NULL);
	peer_end(&b);
	CHECK(request(a.fd, NBD_CMD_DISC, 0, 1, 0, 0, NULL) == 0);
	peer_end(&a);
	CHECK(peer_start(&c, srv) == 0);
	CHECK(go(c.fd) == 0);
	CHECK(cmd(c.fd, NBD_CMD_FLUSH, 0, 0, NULL, NULL) == 0);
	peer_end(&c);
	nbd_server_destroy(srv);
	return 0;
}

/* Many requests in flight on one connection, answered by cookie. */
static int t_pipelined(void)
{
	static uint8_t w[16][4096], r[4096];
	struct peer p;
	int seen[16] = { 0 };

	CHECK(peer_start(&p, srv1) == 0);
	CHECK(go(p.fd) == 0);
	for (int i = 0; i < 16; i++) {
		fill(w[i], 4096, (unsigned)i + 10);
		CHECK(request(p.fd, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, (uint64_t)i,
			      (uint64_t)i * 4096, 4096, w[i]) == 0);
	}
	for (int i = 0; i < 16; i++) {
		uint8_t h[NBD_REPLY_SIZE];
		uint64_t ck;

		CHECK(rd(p.fd, h, sizeof(h)) == 0);
		CHECK(nbd_get32(h) == NBD_SIMPLE_REPLY_MAGIC && nbd_get32(h + 4) == 0);
		ck = nbd_get64(h + 8);
		CHECK(ck < 16 && !seen[ck]);
		seen[ck] = 1;
	}
	for (int i = 0; i < 16; i++) {
		CHECK(cmd(p.fd, NBD_CMD_READ, (uint64_t)i * 4096, 4096, NULL, r) == 0);
		CHECK(memcmp(r, w[i], 4096) == 0);
	}
	peer_end(&p);
	return 0;
}

/* Replies the socket cannot take at once: 32 reads of 64 KiB sent
 * before any reply is read, into a small send buffer.  The batch's
 * sendmsg stops short, a worker finishes it while the others wait, and
 * every reply still arrives whole, once, with its own data. */
static int t_replies_past_a_full_socket(void)
{
	static uint8_t w[MAX_BLOCK], r[MAX_BLOCK];
	int sndbuf = 4096, seen[32] = { 0 };
	struct peer p;

	CHECK(peer_start(&p, srv1) == 0);
	CHECK(setsockopt(p.sfd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == 0);
	CHECK(go(p.fd) == 0);
	for (int i = 0; i < 4; i++) {
		fill(w, MAX_BLOCK, (unsigned)i + 50);
		CHECK(cmd(p.fd, NBD_CMD_WRITE, (uint64_t)i * MAX_BLOCK, MAX_BLOCK, w, NULL) == 0);
	}
	for (int i = 0; i < 32; i++)
		CHECK(request(p.fd, NBD_CMD_READ, 0, (uint64_t)i,
			      (uint64_t)(i % 4) * MAX_BLOCK, MAX_BLOCK, NULL) == 0);
	usleep(200 * 1000);   /* let the server run into the full socket */
	for (int i = 0; i < 32; i++) {
		uint8_t h[NBD_REPLY_SIZE];
		uint64_t ck;

		CHECK(rd(p.fd, h, sizeof(h)) == 0);
		CHECK(nbd_get32(h) == NBD_SIMPLE_REPLY_MAGIC && nbd_get32(h + 4) == 0);
		ck = nbd_get64(h + 8);
		CHECK(ck < 32 && !seen[ck]);
		seen[ck] = 1;
		CHECK(rd(p.fd, r, MAX_BLOCK) == 0);
		fill(w, MAX_BLOCK, (unsigned)(ck % 4) + 50);
		CHECK(memcmp(r, w, MAX_BLOCK) == 0);
	}
	peer_end(&p);
	return 0;
}

static struct nbd_server *new_server_with(struct nbd_server_params *prm)
{
	struct nbd_server *srv = NULL;

	prm->max_conns = 1;
	prm->workers = 2;
	prm->max_block = MAX_BLOCK;
	prm->export_name = "";
	if (nbd_server_create(prm, &mem_be, &srv) < 0)
		return NULL;
	return srv;
}

/* A client that sends a byte now and then is closed at the handshake
 * deadline (200 ms here), not kept as long as it trickles; the client's
 * 10 s receive timeout bounds the test. */
static int t_handshake_deadline(void)
{
	struct nbd_server_params prm = { .handshake_timeout_ms = 200 };
	struct nbd_server *srv = new_server_with(&prm);
	struct timespec gap = { 0, 50 * 1000000L };
	struct peer p;
	uint8_t b = 0;
	int closed = 0;

	CHECK(srv);
	CHECK(peer_start(&p, srv) == 0);
	CHECK(greet(p.fd) == 0);
	/* Bounded: 400 bytes, 50 ms apart, far past the deadline. */
	for (int i = 0; i < 400 && !closed; i++) {
		nanosleep(&gap, NULL);
		closed = send(p.fd, &b, 1, MSG_NOSIGNAL) != 1;
	}
	CHECK(closed || closed_by_server(p.fd));
	peer_end(&p);
	nbd_server_destroy(srv);
	return 0;
}

/* After GO, a connection without requests is closed at the idle timeout. */
static int t_idle_timeout(void)
{
	struct nbd_server_params prm = { .idle_timeout_ms = 200 };
	struct nbd_server *srv = new_server_with(&prm);
	struct peer p;

	CHECK(srv);
	CHECK(peer_start(&p, srv) == 0);
	CHECK(go(p.fd) == 0);
	CHECK(cmd(p.fd, NBD_CMD_FLUSH, 0, 0, NULL, NULL) == 0);
	CHECK(closed_by_server(p.fd));
	peer_end(&p);
	nbd_server_destroy(srv);
	return 0;
}

/* With a PSK file, TLS is required: every option but STARTTLS and ABORT
 * gets TLS_REQD, EXPORT_NAME closes, STARTTLS is acknowledged. */
static int t_tls_required(void)
{
	char path[] = "/tmp/farmem-test-psk-XXXXXX";
	const char *line = "alice:000102030405060708090a0b0c0d0e0f\n";
	struct nbd_server_params prm = { .tls_psk_file = path };
	struct nbd_server *srv;
	struct peer p;
	uint8_t d[256];
	uint32_t len;
	int fd = mkstemp(path), ok;

	CHECK(fd >= 0);
	CHECK(write(fd, line, strlen(line)) == (ssize_t)strlen(line));
	close(fd);
	srv = new_server_with(&prm);
	unlink(path);
	CHECK(srv);
	CHECK(peer_start(&p, srv) == 0);
	CHECK(greet(p.fd) == 0);
	CHECK(send_go(p.fd, NBD_OPT_GO) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_GO, d, sizeof(d), &len) == NBD_REP_ERR_TLS_REQD);
	CHECK(send_opt(p.fd, NBD_OPT_LIST, NULL, 0) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_LIST, d, sizeof(d), &len) == NBD_REP_ERR_TLS_REQD);
	CHECK(send_opt(p.fd, NBD_OPT_STARTTLS, "x", 1) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_STARTTLS, d, sizeof(d), &len) == NBD_REP_ERR_INVALID);
	CHECK(send_opt(p.fd, NBD_OPT_EXPORT_NAME, "", 0) == 0);
	ok = closed_by_server(p.fd);
	peer_end(&p);
	CHECK(ok);
	/* STARTTLS: ACK, then the server waits for a TLS ClientHello; a
	 * client that hangs up instead just ends the connection. */
	CHECK(peer_start(&p, srv) == 0);
	CHECK(greet(p.fd) == 0);
	CHECK(send_opt(p.fd, NBD_OPT_STARTTLS, NULL, 0) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_STARTTLS, d, sizeof(d), &len) == NBD_REP_ACK);
	peer_end(&p);
	nbd_server_destroy(srv);
	/* A bad PSK file fails the server's creation. */
	prm.tls_psk_file = "/nonexistent/keys.psk";
	CHECK(new_server_with(&prm) == NULL);
	return 0;
}

/* Without TLS configured, STARTTLS is unsupported (clients fall back or
 * give up, as they choose). */
static int t_starttls_unsupported(void)
{
	struct peer p;
	uint8_t d[256];
	uint32_t len;

	CHECK(peer_start(&p, srv1) == 0);
	CHECK(greet(p.fd) == 0);
	CHECK(send_opt(p.fd, NBD_OPT_STARTTLS, NULL, 0) == 0);
	CHECK(opt_reply(p.fd, NBD_OPT_STARTTLS, d, sizeof(d), &len) == NBD_REP_ERR_UNSUP);
	CHECK(go_after_greet(p.fd) == 0);
	peer_end(&p);
	return 0;
}

static const struct tap_case cases[] = {
	{ "options: LIST, INFO block sizes, UNSUP, INVALID, ABORT", t_options },
	{ "aligned write, read back, flush, DISC closes", t_read_write_aligned },
	{ "unaligned writes keep neighbours; unaligned reads", t_unaligned },
	{ "write-zeroes edges and trim of whole pages", t_zero_and_trim },
	{ "out-of-range and malformed requests get errors", t_out_of_range },
	{ "bad magic, huge write, huge option, bad flags close", t_hostile_closes },
	{ "connection cap refuses GO with a message", t_connection_cap },
	{ "pipelined requests answered by cookie", t_pipelined },
	{ "replies past a full socket arrive whole, once each", t_replies_past_a_full_socket },
	{ "handshake deadline closes a trickling client", t_handshake_deadline },
	{ "idle timeout closes a connection after GO", t_idle_timeout },
	{ "TLS required: TLS_REQD before STARTTLS, EXPORT_NAME closes", t_tls_required },
	{ "STARTTLS without TLS configured: unsupported", t_starttls_unsupported },
};

int main(void)
{
	int rc;

	log_init("test_nbd", LOG_LVL_ERR);
	srv1 = new_server(4);
	if (!srv1) {
		printf("Bail out! cannot create server\n");
		return 1;
	}
	rc = tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
	nbd_server_destroy(srv1);
	return rc;
}
