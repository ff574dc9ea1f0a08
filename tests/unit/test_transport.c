/* test_transport.c — the tcp transport against a scripted fake memserver.
 *
 * The fake runs in a thread on an ephemeral loopback port and speaks the
 * real handshake (protocol.c + auth.c), then misbehaves on purpose as
 * each test asks: stays silent, sends a wrong MAC, answers with a bad
 * length, drops the connection, stops listening.  That pins down the
 * failure model in transport.h without needing a real memserver (the
 * bats tests cover that side).  Waits poll with a bound; nothing
 * asserts on speed.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "chan.h"
#include "fiber.h"
#include "log.h"
#include "loop_rig.h"
#include "protocol.h"
#include "resolve.h"
#include "tap.h"
#include "transport.h"
#include "transport_rdma.h"

#define FAKE_MEM      (1u << 20)
#define FAKE_SEG      42u
#define WAIT_BOUND_MS 20000

enum fake_mode {
	FAKE_GOOD,          /* a well-behaved server */
	FAKE_SILENT,        /* handshake, then never answers */
	FAKE_BAD_MAC,       /* answers AUTH with a MAC under another secret */
	FAKE_REJECT,        /* closes the connection at AUTH */
	FAKE_NOT_MEMSERVER, /* answers HELLO with something else entirely */
	FAKE_BAD_LEN,       /* holds PINGs, answers READ with one byte short */
	FAKE_DROP_FIRST,    /* first connection: closes after one request */
	FAKE_BAD_TAG,       /* READ replies altered in transit: tag made first */
	FAKE_NOTICE,        /* before a STAT reply: a good NOTICE, then one
			     * that does not decode (both tagged right) */
	FAKE_NOTICE_FORGED, /* before a STAT reply: a NOTICE whose tag fails */
};

struct fake {
	enum fake_mode mode;
	struct fm_secret secret;
	int lfd;
	uint16_t port;
	int stop;             /* atomic */
	int listening;        /* atomic: 0 closes the listener until set again */
	int conns;            /* connections accepted so far */
	int writes;           /* WRITE frames received (atomic) */
	pthread_t thread;
	uint8_t *mem;         /* FAKE_SEG's bytes */
	uint8_t *buf;         /* one request payload */
	struct fm_chan ch;    /* the connection's channel, up after AUTH */
};

static struct fm_secret test_secret;
static const uint8_t test_uuid[FM_UUID_LEN] = { 0xfa, 0x4e, 0x11 };

/* ---- fake server ---- */

/* Reads len bytes.  The socket's receive timeout (1 s, so the thread sees
 * stop) may only end a read before a frame's first byte: once a frame has
 * begun, an EAGAIN means a slow sender (valgrind on a loaded machine), and
 * giving up there would lose the frame boundary and read the rest of the
 * payload as a header. */
static int fd_read(struct fake *f, int fd, void *buf, size_t len, int frame_start)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n < 0 && errno == EAGAIN && !(frame_start && p == buf) &&
		    !__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE))
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fd_write(int fd, const void *buf, size_t len)
{
	return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

static int fake_reply(struct fake *f, int fd, uint8_t op, uint32_t tag, int32_t status,
		      const void *payload, uint32_t len)
{
	uint8_t h[FM_HDR_SIZE], mac[FM_CHAN_TAG_LEN];
	struct fm_hdr hd = { .op = op | FM_OP_REPLY, .tag = tag, .status = status,
			     .len = len };
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)payload, len } };

	fm_hdr_encode(h, &hd);
	if (f->ch.up)
		fm_chan_seal_iov(&f->ch.tx, iov, 2, mac);
	if (f->mode == FAKE_BAD_TAG && op == FM_OP_READ && len) {
		/* One bit of the data flipped after the tag was made. */
		uint8_t first = ((const uint8_t *)payload)[0] ^ 1;

		if (fd_write(fd, h, sizeof(h)) || fd_write(fd, &first, 1) ||
		    (len > 1 && fd_write(fd, (const uint8_t *)payload + 1, len - 1)))
			return -1;
	} else if (fd_write(fd, h, sizeof(h)) || (len && fd_write(fd, payload, len))) {
		return -1;
	}
	return f->ch.up ? fd_write(fd, mac, sizeof(mac)) : 0;
}

/* A server-sent NOTICE, tagged in turn; forged: altered after tagging. */
static int fake_notice(struct fake *f, int fd, const uint8_t *pl, uint32_t len, int forged)
{
	uint8_t h[FM_HDR_SIZE], mac[FM_CHAN_TAG_LEN], copy[FM_NOTICE_LEN(FM_NOTICE_MAX)];
	struct fm_hdr hd = { .op = FM_OP_NOTICE, .len = len };
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)pl, len } };

	fm_hdr_encode(h, &hd);
	fm_chan_seal_iov(&f->ch.tx, iov, 2, mac);
	memcpy(copy, pl, len);
	if (forged)
		copy[len - 1] ^= 1;
	if (fd_write(fd, h, sizeof(h)) || fd_write(fd, copy, len))
		return -1;
	return fd_write(fd, mac, sizeof(mac));
}

static int fake_notices(struct fake *f, int fd)
{
	uint8_t pl[FM_NOTICE_LEN(2)];
	uint64_t ids[2] = { FAKE_SEG, FAKE_SEG + 1 };
	size_t len = fm_notice_encode(pl, 7000, 0, ids, 2);

	if (f->mode == FAKE_NOTICE_FORGED)
		return fake_notice(f, fd, pl, (uint32_t)len, 1);
	if (fake_notice(f, fd, pl, (uint32_t)len, 0))
		return -1;
	put_le16(pl + 6, 5);   /* says 5 ids, carries 2: ignored */
	return fake_notice(f, fd, pl, (uint32_t)len, 0);
}

static int fake_read_frame(struct fake *f, int fd, struct fm_hdr *h)
{
	uint8_t hb[FM_HDR_SIZE], mac[FM_CHAN_TAG_LEN];
	struct iovec iov[2] = { { hb, sizeof(hb) }, { f->buf, 0 } };

	if (fd_read(f, fd, hb, sizeof(hb), 1) || fm_hdr_decode(hb, sizeof(hb), h) ||
	    fd_read(f, fd, f->buf, h->len, 0))
		return -1;
	if (!f->ch.up)
		return 0;
	iov[1].iov_len = h->len;
	if (fd_read(f, fd, mac, sizeof(mac), 0) || fm_chan_check_iov(&f->ch.rx, iov, 2, mac))
		return -1;
	return 0;
}

static int fake_handshake(struct fake *f, int fd)
{
	struct fm_hello_req hq;
	struct fm_hello_rep hr = { .version = FM_PROTO_VERSION, .segment_max = FAKE_MEM,
				   .boot_id = 0x5eed };
	struct fm_auth_session a = { 0 };
	struct fm_identity id;
	uint8_t out[FM_HELLO_REP_LEN], mac[FM_MAC_LEN];
	struct fm_hdr h;

	if (fake_read_frame(f, fd, &h) || h.op != FM_OP_HELLO ||
	    fm_hello_req_decode(f->buf, h.len, &hq))
		return -1;
	if (f->mode == FAKE_NOT_MEMSERVER) {
		static const char http[] = "HTTP/1.1 400 Bad Request\r\n\r\n";

		fd_write(fd, http, sizeof(http) - 1);
		return -1;
	}
	fm_random(hr.server_nonce, FM_NONCE_LEN);
	fm_hello_rep_encode(out, &hr);
	if (fake_reply(f, fd, FM_OP_HELLO, h.tag, 0, out, FM_HELLO_REP_LEN) ||
	    fake_read_frame(f, fd, &h) || h.op != FM_OP_AUTH || h.len != FM_MAC_LEN)
		return -1;
	if (fm_identity_derive(&f->secret, hq.name, &id) < 0)
		return -1;
	memcpy(a.name, hq.name, sizeof(a.name));
	memcpy(a.uuid, hq.uuid, FM_UUID_LEN);
	memcpy(a.key, id.key, FM_KEY_LEN);
	memcpy(a.client_nonce, hq.client_nonce, FM_NONCE_LEN);
	memcpy(a.server_nonce, hr.server_nonce, FM_NONCE_LEN);
	a.boot_id = hr.boot_id;
	if (f->mode == FAKE_REJECT ||
	    (f->mode != FAKE_BAD_MAC && fm_auth_verify(&a, FM_AUTH_CLIENT, f->buf)))
		return -1;
	if (f->mode == FAKE_BAD_MAC)
		a.key[0] ^= 1;
	fm_auth_mac(&a, FM_AUTH_SERVER, mac);
	if (fake_reply(f, fd, FM_OP_AUTH, h.tag, 0, mac, FM_MAC_LEN))
		return -1;
	/* The channel runs on the client's real key. */
	fm_chan_init(&f->ch, FM_CHAN_SERVER, id.key, FM_KEY_LEN, hq.client_nonce,
		     hr.server_nonce);
	return 0;
}

static int fake_answer(struct fake *f, int fd, const struct fm_hdr *h)
{
	uint8_t out[64 + 3 * FM_LIST_ENTRY_LEN];
	struct fm_range r;
	const uint8_t *data;

	switch (h->op) {
	case FM_OP_PING:
		if (f->mode == FAKE_BAD_LEN)
			return 0;               /* held forever */
		return fake_reply(f, fd, h->op, h->tag, 0, f->buf, h->len);
	case FM_OP_WRITE:
		__atomic_fetch_add(&f->writes, 1, __ATOMIC_ACQ_REL);
		if (fm_write_req_decode(f->buf, h->len, &r, &data) ||
		    r.seg_id != FAKE_SEG || r.offset > FAKE_MEM || r.len > FAKE_MEM - r.offset)
			return fake_reply(f, fd, h->op, h->tag, -ENOENT, NULL, 0);
		memcpy(f->mem + r.offset, data, r.len);
		return fake_reply(f, fd, h->op, h->tag, 0, NULL, 0);
	case FM_OP_READ:
		if (fm_read_req_decode(f->buf, h->len, &r) ||
		    r.seg_id != FAKE_SEG || r.offset > FAKE_MEM || r.len > FAKE_MEM - r.offset)
			return fake_reply(f, fd, h->op, h->tag, -ENOENT, NULL, 0);
		if (f->mode == FAKE_BAD_LEN && r.len)
			r.len--;
		return fake_reply(f, fd, h->op, h->tag, 0, f->mem + r.offset, r.len);
	case FM_OP_ALLOC: {
		struct fm_alloc_rep a = { .seg_id = FAKE_SEG, .size = get_le32(f->buf) };

		return fake_reply(f, fd, h->op, h->tag, 0, out, (uint32_t)fm_alloc_rep_encode(out, &a));
	}
	case FM_OP_STAT: {
		struct fm_stat s = { .pool_bytes = 12345, .segment_max = FAKE_MEM, .locked = 1 };

		if ((f->mode == FAKE_NOTICE || f->mode == FAKE_NOTICE_FORGED) && fake_notices(f, fd))
			return -1;
		return fake_reply(f, fd, h->op, h->tag, 0, out, (uint32_t)fm_stat_encode(out, &s));
	}
	case FM_OP_LIST:
		put_le32(out, 3);
		for (uint32_t i = 0; i < 3; i++)
			fm_list_entry_encode(out + 4 + i * FM_LIST_ENTRY_LEN, 100 + i,
					     FM_PAGE * (i + 1));
		return fake_reply(f, fd, h->op, h->tag, 0, out, 4 + 3 * FM_LIST_ENTRY_LEN);
	default:
		return fake_reply(f, fd, h->op, h->tag, -ENOENT, NULL, 0);
	}
}

static void fake_serve(struct fake *f, int fd)
{
	struct timeval tv = { .tv_sec = 1 };
	int one = 1;
	int first = __atomic_fetch_add(&f->conns, 1, __ATOMIC_ACQ_REL) == 0;
	struct fm_hdr h;

	fm_chan_wipe(&f->ch);   /* a new connection starts plain */
	/* Reads time out so the thread notices stop. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* Header and payload go out in two sends: keep Nagle out of it. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fake_handshake(f, fd))
		return;
	for (;;) {
		if (fake_read_frame(f, fd, &h)) {
			if (errno == EAGAIN && !__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE))
				continue;
			return;
		}
		if (f->mode == FAKE_SILENT)
			continue;
		if (f->mode == FAKE_DROP_FIRST && first)
			return;
		if (fake_answer(f, fd, &h))
			return;
	}
}

static int fake_listen(struct fake *f)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(f->port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int one = 1;

	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0)
		return -1;
	setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(f->lfd, 8) ||
	    getsockname(f->lfd, (struct sockaddr *)&sa, &sl)) {
		close(f->lfd);
		f->lfd = -1;
		return -1;
	}
	f->port = ntohs(sa.sin_port);
	return 0;
}

static void *fake_thread(void *arg)
{
	struct fake *f = arg;

	while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { .fd = f->lfd, .events = POLLIN };

		if (!__atomic_load_n(&f->listening, __ATOMIC_ACQUIRE)) {
			if (f->lfd >= 0) {
				close(f->lfd);
				f->lfd = -1;
			}
			usleep(10000);
			continue;
		}
		if (f->lfd < 0 && fake_listen(f)) {
			usleep(10000);
			continue;
		}
		p.fd = f->lfd;
		if (poll(&p, 1, 50) <= 0)
			continue;
		int fd = accept(f->lfd, NULL, NULL);

		if (fd < 0)
			continue;
		fake_serve(f, fd);
		close(fd);
	}
	if (f->lfd >= 0)
		close(f->lfd);
	return NULL;
}

static struct fake *fake_start(enum fake_mode mode)
{
	struct fake *f = calloc(1, sizeof(*f));

	if (!f)
		return NULL;
	f->mode = mode;
	f->secret = test_secret;
	f->listening = 1;
	f->mem = calloc(1, FAKE_MEM);
	f->buf = malloc(FM_MAX_PAYLOAD);
	if (!f->mem || !f->buf || fake_listen(f) ||
	    pthread_create(&f->thread, NULL, fake_thread, f)) {
		free(f->mem);
		free(f->buf);
		free(f);
		return NULL;
	}
	return f;
}

static void fake_stop(struct fake *f)
{
	__atomic_store_n(&f->stop, 1, __ATOMIC_RELEASE);
	pthread_join(f->thread, NULL);
	free(f->mem);
	free(f->buf);
	free(f);
}

/* ---- client side helpers ---- */

struct state_log {
	int ups, downs;       /* atomic */
};

static void on_state(void *arg, int up)
{
	struct state_log *s = arg;

	__atomic_add_fetch(up ? &s->ups : &s->downs, 1, __ATOMIC_ACQ_REL);
}

static struct fm_conn_params params_for(uint16_t port, uint32_t timeout_ms)
{
	struct fm_conn_params p = {
		.secret = &test_secret,
		.timeout_ms = timeout_ms,
		.connect_timeout_ms = 5000,
	};

	p.addr.kind = ADDR_TCP;
	strcpy(p.addr.host, "127.0.0.1");
	p.addr.port = port;
	memcpy(p.uuid, test_uuid, FM_UUID_LEN);
	return p;
}

/* Poll *v until it reaches want; 0 when it did within the bound. */
static int wait_atomic(int *v, int want)
{
	for (int i = 0; i < WAIT_BOUND_MS / 10; i++) {
		if (__atomic_load_n(v, __ATOMIC_ACQUIRE) >= want)
			return 0;
		usleep(10000);
	}
	return -1;
}

struct async {
	int status;          /* atomic; 1 until done */
};

static void async_done(struct fm_req *r, int status)
{
	struct async *a = r->priv;

	__atomic_store_n(&a->status, status, __ATOMIC_RELEASE);
}

static int async_wait(struct async *a)
{
	for (int i = 0; i < WAIT_BOUND_MS / 10; i++) {
		int s = __atomic_load_n(&a->status, __ATOMIC_ACQUIRE);

		if (s != 1)
			return s;
		usleep(10000);
	}
	return 1;
}

static int ping(struct fm_conn *c)
{
	uint8_t out[16] = "farmem ping", back[16];
	struct iovec iov = { .iov_base = out, .iov_len = sizeof(out) };
	struct fm_req r = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1,
			    .len = sizeof(out), .buf = back };
	int rc = fm_conn_call(c, &r);

	return rc ? rc : memcmp(out, back, sizeof(out)) ? -EBADMSG : 0;
}

/* ---- tests ---- */

static int t_closed_port_refused(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct fm_conn *c = (struct fm_conn *)1;

	/* A port that was just ours and is now closed. */
	CHECK(fd >= 0);
	CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
	close(fd);
	struct fm_conn_params p = params_for(ntohs(sa.sin_port), 0);

	CHECK(fm_conn_open(&p, &c) == -ECONNREFUSED);
	CHECK(c == NULL);
	return 0;
}

/* rdma:// goes to the rdma transport: on a machine without RDMA devices
 * (like the build hosts) that is a clear -ENODEV, never a tcp attempt. */
static int t_rdma_and_unix_addresses(void)
{
	struct fm_conn_params p = params_for(1, 0);
	struct fm_conn *c;
	int rc;

	p.addr.kind = ADDR_RDMA;
	rc = fm_conn_open(&p, &c);
	CHECK(rc < 0);
	CHECK(c == NULL);
	if (fm_rdma_device_check("test") == -ENODEV)
		CHECK(rc == -ENODEV);
	p.addr.kind = ADDR_UNIX;
	CHECK(fm_conn_open(&p, &c) == -EINVAL);
	p = params_for(1, 0);
	p.secret = NULL;
	CHECK(fm_conn_open(&p, &c) == -EINVAL);
	return 0;
}

static int t_roundtrip(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct fm_conn *c;
	uint8_t page[FM_PAGE], back[FM_PAGE];
	uint64_t ids[FM_LIST_MAX];
	uint32_t sizes[FM_LIST_MAX];
	struct iovec iov[2] = { { page, 1000 }, { page + 1000, FM_PAGE - 1000 } };
	int rc;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(fm_conn_is_up(c) == 1);
	CHECK(ping(c) == 0);

	struct fm_req a = { .op = FM_OP_ALLOC, .arg = 8192 };
	CHECK(fm_conn_call(c, &a) == 0);
	CHECK(a.rep.alloc.seg_id == FAKE_SEG && a.rep.alloc.size == 8192);

	fm_random(page, sizeof(page));
	struct fm_req w = { .op = FM_OP_WRITE, .seg_id = FAKE_SEG, .offset = 8192,
			    .len = FM_PAGE, .iov = iov, .iovcnt = 2 };
	CHECK(fm_conn_call(c, &w) == 0);
	struct fm_req r = { .op = FM_OP_READ, .seg_id = FAKE_SEG, .offset = 8192,
			    .len = FM_PAGE, .buf = back };
	CHECK(fm_conn_call(c, &r) == 0);
	CHECK(memcmp(page, back, FM_PAGE) == 0);

	struct fm_req bad = { .op = FM_OP_READ, .seg_id = 7, .len = FM_PAGE, .buf = back };
	CHECK(fm_conn_call(c, &bad) == -ENOENT);

	struct fm_req s = { .op = FM_OP_STAT };
	CHECK(fm_conn_call(c, &s) == 0);
	CHECK(s.rep.stat.pool_bytes == 12345 && s.rep.stat.locked == 1);

	struct fm_req l = { .op = FM_OP_LIST };
	l.rep.list.seg_ids = ids;
	l.rep.list.sizes = sizes;
	rc = fm_conn_call(c, &l);
	CHECK(rc == 0);
	CHECK(l.rep.list.count == 3 && ids[2] == 102 && sizes[2] == 3 * FM_PAGE);

	/* Still usable after an error reply. */
	CHECK(ping(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_invalid_requests(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct fm_conn *c;
	uint8_t b[16];
	struct iovec iov = { b, sizeof(b) };

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	CHECK(fm_conn_open(&p, &c) == 0);
	struct fm_req r1 = { .op = FM_OP_READ, .len = FM_MAX_IO + 1, .buf = b };
	CHECK(fm_conn_call(c, &r1) == -EINVAL);
	struct fm_req r2 = { .op = FM_OP_WRITE, .len = 17, .iov = &iov, .iovcnt = 1 };
	CHECK(fm_conn_call(c, &r2) == -EINVAL);
	struct fm_req r3 = { .op = FM_OP_HELLO };
	CHECK(fm_conn_call(c, &r3) == -EINVAL);
	struct fm_req r4 = { .op = FM_OP_LIST };
	CHECK(fm_conn_call(c, &r4) == -EINVAL);
	struct fm_req r5 = { .op = 99 };
	CHECK(fm_conn_call(c, &r5) == -EINVAL);
	CHECK(ping(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

/* A connection opened for a queue's data path: requests above its
 * max_io and LIST are refused before anything is sent; the rest work. */
static int t_data_only_limits(void)
{
	static uint8_t page[2 * FM_PAGE + 4], back[2 * FM_PAGE + 4];
	static uint64_t ids[FM_LIST_MAX];
	static uint32_t sizes[FM_LIST_MAX];
	struct fake *f = fake_start(FAKE_GOOD);
	struct iovec iov = { page, 2 * FM_PAGE };
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	p.max_io = 2 * FM_PAGE;
	p.data_only = 1;
	CHECK(fm_conn_open(&p, &c) == 0);
	memset(page, 0x5c, sizeof(page));
	struct fm_req w = { .op = FM_OP_WRITE, .seg_id = FAKE_SEG, .len = 2 * FM_PAGE,
			    .iov = &iov, .iovcnt = 1 };
	CHECK(fm_conn_call(c, &w) == 0);
	struct fm_req r = { .op = FM_OP_READ, .seg_id = FAKE_SEG, .len = 2 * FM_PAGE,
			    .buf = back };
	CHECK(fm_conn_call(c, &r) == 0 && memcmp(page, back, 2 * FM_PAGE) == 0);
	iov.iov_len = 2 * FM_PAGE + 4;
	w.len = 2 * FM_PAGE + 4;
	CHECK(fm_conn_call(c, &w) == -EINVAL);
	r.len = 2 * FM_PAGE + 1;
	CHECK(fm_conn_call(c, &r) == -EINVAL);
	struct fm_req l = { .op = FM_OP_LIST };
	l.rep.list.seg_ids = ids;
	l.rep.list.sizes = sizes;
	CHECK(fm_conn_call(c, &l) == -EOPNOTSUPP);
	CHECK(ping(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_wrong_secret(void)
{
	struct fake *f = fake_start(FAKE_REJECT);
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	CHECK(fm_conn_open(&p, &c) == -EACCES);
	fake_stop(f);
	return 0;
}

static int t_server_without_secret(void)
{
	struct fake *f = fake_start(FAKE_BAD_MAC);
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	/* The client must not trust a server that cannot prove the secret. */
	CHECK(fm_conn_open(&p, &c) == -EACCES);
	fake_stop(f);
	return 0;
}

static int t_not_a_memserver(void)
{
	struct fake *f = fake_start(FAKE_NOT_MEMSERVER);
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	CHECK(fm_conn_open(&p, &c) == -EPROTO);
	fake_stop(f);
	return 0;
}

static int t_timeout_drops_connection(void)
{
	struct fake *f = fake_start(FAKE_SILENT);
	struct state_log st = { 0, 0 };
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 200);

	p.state_cb = on_state;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(ping(c) == -ETIMEDOUT);
	CHECK(wait_atomic(&st.downs, 1) == 0);
	CHECK(fm_conn_is_up(c) == 0);
	/* Without reconnect it stays down; submit fails at once. */
	CHECK(ping(c) == -ENOTCONN);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_protocol_error_fails_all(void)
{
	struct fake *f = fake_start(FAKE_BAD_LEN);
	struct fm_conn *c;
	uint8_t out[8] = { 1 }, back[FM_PAGE];
	struct iovec iov = { out, sizeof(out) };
	struct async held = { 1 }, bad = { 1 };

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	CHECK(fm_conn_open(&p, &c) == 0);
	struct fm_req r1 = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1, .len = sizeof(out),
			     .done = async_done, .priv = &held };
	struct fm_req r2 = { .op = FM_OP_READ, .seg_id = FAKE_SEG, .len = FM_PAGE,
			     .buf = back, .done = async_done, .priv = &bad };
	CHECK(fm_conn_submit(c, &r1) == 0);
	CHECK(fm_conn_submit(c, &r2) == 0);
	/* The short READ is the culprit; the held PING goes down with it. */
	CHECK(async_wait(&bad) == -EPROTO);
	CHECK(async_wait(&held) == -ECONNRESET);
	CHECK(fm_conn_is_up(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_bad_tag_fails_the_reply(void)
{
	struct fake *f = fake_start(FAKE_BAD_TAG);
	struct fm_conn *c;
	uint8_t page[FM_PAGE], back[FM_PAGE];
	struct iovec iov = { page, sizeof(page) };
	uint64_t before = fm_chan_rejected();

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	memset(page, 0x5c, sizeof(page));
	CHECK(fm_conn_open(&p, &c) == 0);
	/* Our tags check at the fake (it would drop us otherwise). */
	struct fm_req w = { .op = FM_OP_WRITE, .seg_id = FAKE_SEG, .len = FM_PAGE,
			    .iov = &iov, .iovcnt = 1 };
	struct fm_req r = { .op = FM_OP_READ, .seg_id = FAKE_SEG, .len = FM_PAGE,
			    .buf = back };

	CHECK(fm_conn_call(c, &w) == 0);
	CHECK(ping(c) == 0);
	/* The altered READ reply fails; the connection goes down. */
	CHECK(fm_conn_call(c, &r) == -EPROTO);
	CHECK(fm_chan_rejected() == before + 1);
	CHECK(fm_conn_is_up(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static struct {
	int calls;
	uint32_t deadline;
	uint16_t count;
	uint64_t id1;
} noticed;

static void on_notice(void *arg, const struct fm_notice *n)
{
	(void)arg;
	noticed.deadline = n->deadline_ms;
	noticed.count = n->count;
	noticed.id1 = n->count > 1 ? fm_notice_id(n, 1) : 0;
	__atomic_add_fetch(&noticed.calls, 1, __ATOMIC_ACQ_REL);
}

/* A NOTICE takes its number between replies: the reply after it still
 * checks.  One that does not decode is dropped and changes nothing. */
static int t_notice_delivered_in_sequence(void)
{
	struct fake *f = fake_start(FAKE_NOTICE);
	struct fm_conn *c;
	struct fm_req st = { .op = FM_OP_STAT };

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	memset(&noticed, 0, sizeof(noticed));
	p.notice_cb = on_notice;
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(fm_conn_call(c, &st) == 0 && st.rep.stat.pool_bytes == 12345);
	CHECK(__atomic_load_n(&noticed.calls, __ATOMIC_ACQUIRE) == 1);
	CHECK(noticed.deadline == 7000 && noticed.count == 2 && noticed.id1 == FAKE_SEG + 1);
	CHECK(ping(c) == 0 && fm_conn_is_up(c));
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

/* A forged NOTICE is never delivered, and the connection goes. */
static int t_notice_forged_drops(void)
{
	struct fake *f = fake_start(FAKE_NOTICE_FORGED);
	struct fm_conn *c;
	struct fm_req st = { .op = FM_OP_STAT };
	uint64_t before = fm_chan_rejected();

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	memset(&noticed, 0, sizeof(noticed));
	p.notice_cb = on_notice;
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(fm_conn_call(c, &st) < 0);
	CHECK(__atomic_load_n(&noticed.calls, __ATOMIC_ACQUIRE) == 0);
	CHECK(fm_chan_rejected() == before + 1);
	CHECK(fm_conn_is_up(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_reconnect(void)
{
	struct fake *f = fake_start(FAKE_DROP_FIRST);
	struct state_log st = { 0, 0 };
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	p.reconnect = 1;
	p.state_cb = on_state;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	/* The first connection closes under this request. */
	CHECK(ping(c) == -ECONNRESET);
	CHECK(wait_atomic(&st.downs, 1) == 0);
	CHECK(wait_atomic(&st.ups, 1) == 0);
	CHECK(fm_conn_is_up(c) == 1);
	CHECK(ping(c) == 0);
	CHECK(__atomic_load_n(&f->conns, __ATOMIC_ACQUIRE) == 2);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_down_is_enotconn_until_back(void)
{
	struct fake *f = fake_start(FAKE_DROP_FIRST);
	struct state_log st = { 0, 0 };
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	p.reconnect = 1;
	p.state_cb = on_state;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	/* Stop listening, then lose the connection: the server is gone. */
	__atomic_store_n(&f->listening, 0, __ATOMIC_RELEASE);
	CHECK(ping(c) == -ECONNRESET);
	CHECK(wait_atomic(&st.downs, 1) == 0);
	CHECK(ping(c) == -ENOTCONN);
	CHECK(fm_conn_is_up(c) == 0);
	/* It comes back: the backoff finds it. */
	__atomic_store_n(&f->listening, 1, __ATOMIC_RELEASE);
	CHECK(wait_atomic(&st.ups, 1) == 0);
	CHECK(ping(c) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

static int t_close_cancels_inflight(void)
{
	struct fake *f = fake_start(FAKE_SILENT);
	struct fm_conn *c;
	uint8_t out[8] = { 0 };
	struct iovec iov = { out, sizeof(out) };
	struct async a = { 1 };

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 60000);

	CHECK(fm_conn_open(&p, &c) == 0);
	struct fm_req r = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1, .len = sizeof(out),
			    .done = async_done, .priv = &a };
	CHECK(fm_conn_submit(c, &r) == 0);
	fm_conn_close(c);
	CHECK(__atomic_load_n(&a.status, __ATOMIC_ACQUIRE) == -ECANCELED);
	fake_stop(f);
	return 0;
}

/* More requests than slots: submit waits for a free slot, none fail. */
static int t_more_requests_than_slots(void)
{
	enum { N = 500 };
	static struct fm_req reqs[N];
	static struct async st[N];
	static uint8_t out[N][8];
	static struct iovec iov[N];
	struct fake *f = fake_start(FAKE_GOOD);
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	p.max_inflight = 4;
	CHECK(fm_conn_open(&p, &c) == 0);
	for (int i = 0; i < N; i++) {
		st[i].status = 1;
		iov[i] = (struct iovec){ out[i], sizeof(out[i]) };
		reqs[i] = (struct fm_req){ .op = FM_OP_PING, .iov = &iov[i], .iovcnt = 1,
					   .len = sizeof(out[i]), .done = async_done,
					   .priv = &st[i] };
		CHECK(fm_conn_submit(c, &reqs[i]) == 0);
	}
	for (int i = 0; i < N; i++)
		CHECK(async_wait(&st[i]) == 0);
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

/* Several threads submit at once: frames must not interleave. */
struct writer {
	struct fm_conn *c;
	int id;
	int errors;
};

static void *writer_thread(void *arg)
{
	struct writer *w = arg;
	uint8_t page[FM_PAGE], back[FM_PAGE];

	for (int i = 0; i < 200; i++) {
		uint32_t off = (uint32_t)(w->id * 64 + i % 64) * FM_PAGE;
		struct iovec iov = { page, sizeof(page) };
		struct fm_req wr = { .op = FM_OP_WRITE, .seg_id = FAKE_SEG, .offset = off,
				     .len = FM_PAGE, .iov = &iov, .iovcnt = 1 };
		struct fm_req rd = { .op = FM_OP_READ, .seg_id = FAKE_SEG, .offset = off,
				     .len = FM_PAGE, .buf = back };

		memset(page, w->id * 31 + i, sizeof(page));
		if (fm_conn_call(w->c, &wr) || fm_conn_call(w->c, &rd) ||
		    memcmp(page, back, FM_PAGE))
			w->errors++;
	}
	return NULL;
}

static int t_concurrent_submitters(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct writer w[4];
	pthread_t th[4];
	struct fm_conn *c;

	CHECK(f);
	struct fm_conn_params p = params_for(f->port, 0);

	p.max_inflight = 8;
	CHECK(fm_conn_open(&p, &c) == 0);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct writer){ .c = c, .id = i };
		CHECK(pthread_create(&th[i], NULL, writer_thread, &w[i]) == 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].errors == 0);
	}
	fm_conn_close(c);
	fake_stop(f);
	return 0;
}

/* ---- connections owned by an event loop (p.loop) ---- */

/* The rig's thread owns the loop and turns it; requests are submitted
 * from its fibers, replies are read by the connection's link fiber and
 * done() wakes the submitter in the same thread. */

/* fm_conn_call() for a fiber: submit, park until done(). */
static int fiber_call(struct fm_conn *c, struct fm_req *r, struct fwait *w)
{
	int rc;

	fwait_arm(w, r);
	rc = fm_conn_submit(c, r);
	if (rc)
		return rc;
	while (!w->done)
		fm_fiber_park();
	return w->status;
}

static int fiber_ping(struct fm_conn *c, uint8_t seed)
{
	uint8_t out[16], back[16];
	struct iovec iov = { out, sizeof(out) };
	struct fm_req r = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1,
			    .len = sizeof(out), .buf = back };
	struct fwait w;
	int rc;

	for (unsigned i = 0; i < sizeof(out); i++)
		out[i] = (uint8_t)(seed + i);
	rc = fiber_call(c, &r, &w);
	if (rc == 0 && !(w.in_loop_thread && w.from_other_fiber))
		return -EXDEV;
	return rc ? rc : memcmp(out, back, sizeof(out)) ? -EBADMSG : 0;
}

static struct fm_conn_params loop_params(struct rig *r, uint16_t port, uint32_t timeout_ms)
{
	struct fm_conn_params p = params_for(port, timeout_ms);

	p.loop = r->l;
	*rig_loop_thread() = pthread_self();
	return p;
}

/* Several fibers each write and read back their own pages. */
struct lworker {
	struct fm_conn *c;
	int id;
	int errors;
	int done;
	int first_error;
};

static void lworker_fail(struct lworker *w, int rc)
{
	if (!w->errors++)
		w->first_error = rc;
}

static void lworker_fiber(void *arg)
{
	struct lworker *w = arg;
	uint8_t page[FM_PAGE], back[FM_PAGE];
	struct fwait fw;
	int rc;

	for (int i = 0; i < 40; i++) {
		uint32_t off = (uint32_t)(w->id * 16 + i % 16) * FM_PAGE;
		struct iovec iov[2] = { { page, 100 }, { page + 100, FM_PAGE - 100 } };
		struct fm_req wr = { .op = FM_OP_WRITE, .seg_id = FAKE_SEG, .offset = off,
				     .len = FM_PAGE, .iov = iov, .iovcnt = 2 };
		struct fm_req rd = { .op = FM_OP_READ, .seg_id = FAKE_SEG, .offset = off,
				     .len = FM_PAGE, .buf = back };

		memset(page, w->id * 31 + i, sizeof(page));
		page[i] ^= 0xff;
		if ((rc = fiber_call(w->c, &wr, &fw)) || (rc = fiber_call(w->c, &rd, &fw)))
			lworker_fail(w, rc);
		else if (memcmp(page, back, FM_PAGE))
			lworker_fail(w, -EBADMSG);
		if ((rc = fiber_ping(w->c, (uint8_t)i)))
			lworker_fail(w, rc);
	}
	w->done = 1;
}

static int lworkers_done(void *arg)
{
	struct lworker *w = arg;

	for (int i = 0; i < 4; i++)
		if (!w[i].done)
			return 0;
	return 1;
}

struct lsingle {
	struct fm_conn *c;
	int rc[8];
	int done;
	uint64_t ids[FM_LIST_MAX];
	uint32_t sizes[FM_LIST_MAX];
	struct fm_req last;
};

/* alloc, stat, list and an error reply, from one fiber. */
static void lsingle_fiber(void *arg)
{
	struct lsingle *s = arg;
	uint8_t back[FM_PAGE];
	struct fwait w;
	struct fm_req a = { .op = FM_OP_ALLOC, .arg = 8192 };
	struct fm_req st = { .op = FM_OP_STAT };
	struct fm_req l = { .op = FM_OP_LIST };
	struct fm_req bad = { .op = FM_OP_READ, .seg_id = 7, .len = FM_PAGE, .buf = back };

	s->rc[0] = fiber_ping(s->c, 1);
	s->rc[1] = fiber_call(s->c, &a, &w);
	s->rc[2] = a.rep.alloc.seg_id == FAKE_SEG && a.rep.alloc.size == 8192;
	s->rc[3] = fiber_call(s->c, &st, &w);
	s->rc[4] = st.rep.stat.pool_bytes == 12345;
	l.rep.list.seg_ids = s->ids;
	l.rep.list.sizes = s->sizes;
	s->rc[5] = fiber_call(s->c, &l, &w);
	s->rc[6] = l.rep.list.count == 3 && s->ids[2] == 102;
	s->rc[7] = fiber_call(s->c, &bad, &w);
	s->done = 1;
}

static int t_loop_roundtrip(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct lworker w[4];
	struct lsingle one = { 0 };
	struct fm_conn *c;
	struct rig r;

	CHECK(f);
	CHECK(rig_open(&r, 6) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	/* Opened from the loop's thread, outside any fiber. */
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(fm_conn_is_up(c) == 1);
	CHECK(fm_loop_busy(r.l) == 1);          /* the link fiber */
	one.c = c;
	CHECK(fm_loop_spawn(r.l, lsingle_fiber, &one) == 0);
	CHECK(run_until(&r, flag_set, &one.done) == 0);
	CHECK(one.rc[0] == 0 && one.rc[1] == 0 && one.rc[2] == 1);
	CHECK(one.rc[3] == 0 && one.rc[4] == 1 && one.rc[5] == 0 && one.rc[6] == 1);
	CHECK(one.rc[7] == -ENOENT);
	for (int i = 0; i < 4; i++) {
		w[i] = (struct lworker){ .c = c, .id = i };
		CHECK(fm_loop_spawn(r.l, lworker_fiber, &w[i]) == 0);
	}
	CHECK(run_until(&r, lworkers_done, w) == 0);
	for (int i = 0; i < 4; i++) {
		if (w[i].errors)
			printf("#   fiber %d: %d errors, first %d\n", i, w[i].errors, w[i].first_error);
		CHECK(w[i].errors == 0);
	}
	CHECK(fm_loop_busy(r.l) == 1);
	fm_conn_close(c);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

/* Many requests queued by one fiber in one turn: they leave in the
 * turn-start flush (more iovecs than one sendmsg takes, so the queue
 * also flushes while the fiber submits), and all complete. */
#define LBATCH 600

struct lbatch {
	struct fm_conn *c;
	struct fm_req reqs[LBATCH];
	struct iovec iov[LBATCH];
	uint8_t out[LBATCH][16], back[LBATCH][16];
	int status[LBATCH];
	int left;
	int submit_errors;
	unsigned turn_first, turn_last;
	struct rig *r;
	struct fm_fiber *f;
	int done;
};

static void lbatch_done(struct fm_req *req, int status)
{
	struct lbatch *b = req->priv;

	b->status[req - b->reqs] = status;
	if (--b->left == 0)
		fm_fiber_wake(b->f);
}

static void lbatch_fiber(void *arg)
{
	struct lbatch *b = arg;

	b->f = fm_fiber_self();
	b->left = LBATCH;
	b->turn_first = b->r->turns;
	for (int i = 0; i < LBATCH; i++) {
		for (int k = 0; k < 16; k++)
			b->out[i][k] = (uint8_t)(i * 7 + k);
		b->iov[i] = (struct iovec){ b->out[i], sizeof(b->out[i]) };
		b->reqs[i] = (struct fm_req){ .op = FM_OP_PING, .iov = &b->iov[i], .iovcnt = 1,
					      .len = sizeof(b->out[i]), .buf = b->back[i],
					      .done = lbatch_done, .priv = b };
		if (fm_conn_submit(b->c, &b->reqs[i])) {
			b->submit_errors++;
			b->left--;
		}
	}
	b->turn_last = b->r->turns;
	while (b->left)
		fm_fiber_park();
	b->done = 1;
}

/* One fiber's WRITEs to consecutive ranges of one segment, submitted in
 * one turn: they leave as one frame and all end with its reply. */
#define LMERGE 16
#define LMERGE_LEN 1000

struct lmerge {
	struct fm_conn *c;
	uint64_t seg;
	struct fm_req reqs[LMERGE];
	struct iovec iov[LMERGE];
	uint8_t data[LMERGE][LMERGE_LEN];
	int status[LMERGE];
	int left;
	struct fm_fiber *f;
	int done;
};

static void lmerge_done(struct fm_req *req, int status)
{
	struct lmerge *m = req->priv;

	m->status[req - m->reqs] = status;
	if (--m->left == 0)
		fm_fiber_wake(m->f);
}

static void lmerge_fiber(void *arg)
{
	struct lmerge *m = arg;

	m->f = fm_fiber_self();
	m->left = LMERGE;
	for (int i = 0; i < LMERGE; i++) {
		memset(m->data[i], 'A' + i, LMERGE_LEN);
		m->iov[i] = (struct iovec){ m->data[i], LMERGE_LEN };
		m->reqs[i] = (struct fm_req){ .op = FM_OP_WRITE, .seg_id = m->seg,
					      .offset = (uint32_t)i * LMERGE_LEN, .len = LMERGE_LEN,
					      .iov = &m->iov[i], .iovcnt = 1,
					      .done = lmerge_done, .priv = m };
		if (fm_conn_submit(m->c, &m->reqs[i])) {
			m->status[i] = 1;
			m->left--;
		}
	}
	while (m->left)
		fm_fiber_park();
	m->done = 1;
}

static int t_loop_writes_merge(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct lmerge *m = calloc(1, sizeof(*m));
	struct fm_conn *c;
	struct rig r;

	CHECK(f && m);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	CHECK(fm_conn_open(&p, &c) == 0);
	*m = (struct lmerge){ .c = c, .seg = FAKE_SEG };
	CHECK(fm_loop_spawn(r.l, lmerge_fiber, m) == 0);
	CHECK(run_until(&r, flag_set, &m->done) == 0);
	CHECK(__atomic_load_n(&f->writes, __ATOMIC_ACQUIRE) == 1);
	for (int i = 0; i < LMERGE; i++) {
		CHECK(m->status[i] == 0);
		CHECK(memcmp(f->mem + i * LMERGE_LEN, m->data[i], LMERGE_LEN) == 0);
	}
	/* A refused merged frame fails every request it carried. */
	*m = (struct lmerge){ .c = c, .seg = FAKE_SEG + 1 };
	CHECK(fm_loop_spawn(r.l, lmerge_fiber, m) == 0);
	CHECK(run_until(&r, flag_set, &m->done) == 0);
	CHECK(__atomic_load_n(&f->writes, __ATOMIC_ACQUIRE) == 2);
	for (int i = 0; i < LMERGE; i++)
		CHECK(m->status[i] == -ENOENT);
	CHECK(fm_conn_is_up(c) == 1);
	fm_conn_close(c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	free(m);
	return 0;
}

static int t_loop_batch(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct lbatch *b = calloc(1, sizeof(*b));
	struct fm_conn *c;
	struct rig r;

	CHECK(f && b);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	p.max_inflight = LBATCH;
	CHECK(fm_conn_open(&p, &c) == 0);
	b->c = c;
	b->r = &r;
	CHECK(fm_loop_spawn(r.l, lbatch_fiber, b) == 0);
	CHECK(run_until(&r, flag_set, &b->done) == 0);
	CHECK(b->submit_errors == 0);
	CHECK(b->turn_first == b->turn_last);    /* all queued in one turn */
	for (int i = 0; i < LBATCH; i++) {
		CHECK(b->status[i] == 0);
		CHECK(memcmp(b->out[i], b->back[i], 16) == 0);
	}
	fm_conn_close(c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	free(b);
	return 0;
}

/* Megabytes queued in one turn: more than the socket takes at once, so
 * the flush sends part of a frame, waits for room through the ring and
 * goes on later.  Each write is followed by a read of the same place in
 * the same batch: the server answers in order, so every read must see
 * exactly the bytes of the write before it. */
#define LBIG_IO   (64 << 10)
#define LBIG_POS  ((int)FAKE_MEM / LBIG_IO) /* 16 places in the segment */
#define LBIG_N    (8 * LBIG_POS)

struct lbig {
	struct fm_conn *c;
	uint8_t data[LBIG_N][LBIG_IO];
	uint8_t back[LBIG_N][LBIG_IO];
	struct fm_req reqs[2 * LBIG_N];
	struct iovec iov[LBIG_N];
	int status[2 * LBIG_N];
	int left;
	int submit_errors;
	unsigned turn_first, turn_last;
	struct rig *r;
	struct fm_fiber *f;
	int done;
};

static void lbig_done(struct fm_req *req, int status)
{
	struct lbig *b = req->priv;

	b->status[req - b->reqs] = status;
	if (--b->left == 0)
		fm_fiber_wake(b->f);
}

static void lbig_submit(struct lbig *b, struct fm_req *req)
{
	req->done = lbig_done;
	req->priv = b;
	if (fm_conn_submit(b->c, req)) {
		b->status[req - b->reqs] = -1;
		b->submit_errors++;
		b->left--;
	}
}

static void lbig_fiber(void *arg)
{
	struct lbig *b = arg;

	b->f = fm_fiber_self();
	b->left = 2 * LBIG_N;
	b->turn_first = b->r->turns;
	for (int i = 0; i < LBIG_N; i++) {
		uint32_t off = (uint32_t)(i % LBIG_POS) * LBIG_IO;
		struct fm_req *w = &b->reqs[2 * i], *rd = &b->reqs[2 * i + 1];

		b->iov[i] = (struct iovec){ b->data[i], LBIG_IO };
		*w = (struct fm_req){ .op = FM_OP_WRITE, .seg_id = FAKE_SEG, .offset = off,
				      .len = LBIG_IO, .iov = &b->iov[i], .iovcnt = 1 };
		*rd = (struct fm_req){ .op = FM_OP_READ, .seg_id = FAKE_SEG, .offset = off,
				       .len = LBIG_IO, .buf = b->back[i] };
		lbig_submit(b, w);
		lbig_submit(b, rd);
	}
	b->turn_last = b->r->turns;
	while (b->left)
		fm_fiber_park();
	b->done = 1;
}

static int t_loop_big_batch(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct lbig *b = calloc(1, sizeof(*b));
	struct fm_conn *c;
	struct rig r;

	CHECK(f && b);
	CHECK(rig_open(&r, 2) == 0);
	/* 16 MiB in flight at once: under valgrind on a loaded machine that
	 * takes longer than the default 5 s request deadline, and this test
	 * is about batching and data, not deadlines. */
	struct fm_conn_params p = loop_params(&r, f->port, 60000);

	p.max_inflight = 2 * LBIG_N;
	CHECK(fm_conn_open(&p, &c) == 0);
	fm_random(b->data, sizeof(b->data));
	b->c = c;
	b->r = &r;
	CHECK(fm_loop_spawn(r.l, lbig_fiber, b) == 0);
	CHECK(run_until(&r, flag_set, &b->done) == 0);
	CHECK(b->submit_errors == 0);
	CHECK(b->turn_first == b->turn_last);
	for (int i = 0; i < 2 * LBIG_N; i++) {
		if (b->status[i])
			printf("#   request %d (%s): %s\n", i, i % 2 ? "read" : "write",
			       strerror(-b->status[i]));
		CHECK(b->status[i] == 0);
	}
	for (int i = 0; i < LBIG_N; i++)
		CHECK(memcmp(b->back[i], b->data[i], LBIG_IO) == 0);
	fm_conn_close(c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	free(b);
	return 0;
}

/* More requests than slots: the submitting fiber waits for a slot while
 * the link fiber of its own thread frees them. */
struct lslots {
	struct fm_conn *c;
	int errors;
	int done;
};

static void lslots_fiber(void *arg)
{
	enum { N = 300 };
	static struct fm_req reqs[N];
	static struct iovec iov[N];
	static uint8_t out[N][8];
	struct lslots *s = arg;
	struct fwait w[N];

	for (int i = 0; i < N; i++) {
		iov[i] = (struct iovec){ out[i], sizeof(out[i]) };
		reqs[i] = (struct fm_req){ .op = FM_OP_PING, .iov = &iov[i], .iovcnt = 1,
					   .len = sizeof(out[i]), .done = fwait_done,
					   .priv = &w[i] };
		w[i] = (struct fwait){ .f = fm_fiber_self() };
		if (fm_conn_submit(s->c, &reqs[i])) {
			s->errors++;
			w[i].done = 1;
		}
	}
	for (int i = 0; i < N; i++) {
		while (!w[i].done)
			fm_fiber_park();
		s->errors += w[i].status != 0;
	}
	s->done = 1;
}

static int t_loop_more_than_slots(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct lslots s = { 0 };
	struct rig r;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	p.max_inflight = 4;
	CHECK(fm_conn_open(&p, &s.c) == 0);
	CHECK(fm_loop_spawn(r.l, lslots_fiber, &s) == 0);
	CHECK(run_until(&r, flag_set, &s.done) == 0);
	CHECK(s.errors == 0);
	fm_conn_close(s.c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

/* A ping from a fiber, its result kept for the test's thread. */
struct lping {
	struct fm_conn *c;
	int rc;
	int done;
};

static void lping_fiber(void *arg)
{
	struct lping *l = arg;

	l->rc = fiber_ping(l->c, 9);
	l->done = 1;
}

static int loop_ping(struct rig *r, struct fm_conn *c)
{
	struct lping l = { .c = c };

	if (fm_loop_spawn(r->l, lping_fiber, &l) || run_until(r, flag_set, &l.done))
		return -EDEADLK;
	return l.rc;
}

struct lstate {
	int ups, downs;
	int other_thread;     /* state_cb ran outside the loop's thread */
};

static void on_lstate(void *arg, int up)
{
	struct lstate *s = arg;

	if (!pthread_equal(pthread_self(), *rig_loop_thread()))
		s->other_thread++;
	(*(up ? &s->ups : &s->downs))++;
}

static int ups_and_downs(void *arg)
{
	struct lstate *s = arg;

	return s->ups >= 1 && s->downs >= 1;
}

static int t_loop_reconnect(void)
{
	struct fake *f = fake_start(FAKE_DROP_FIRST);
	struct lstate st = { 0 };
	struct fm_conn *c;
	struct rig r;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	p.reconnect = 1;
	p.state_cb = on_lstate;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	/* The first connection closes under this request. */
	CHECK(loop_ping(&r, c) == -ECONNRESET);
	/* The link fiber notices, reports, reconnects. */
	CHECK(run_until(&r, ups_and_downs, &st) == 0);
	CHECK(st.other_thread == 0);
	CHECK(fm_conn_is_up(c) == 1);
	CHECK(loop_ping(&r, c) == 0);
	CHECK(__atomic_load_n(&f->conns, __ATOMIC_ACQUIRE) == 2);
	fm_conn_close(c);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

static int downs_seen(void *arg)
{
	return ((struct lstate *)arg)->downs >= 1;
}

static int ups_seen(void *arg)
{
	return ((struct lstate *)arg)->ups >= 1;
}

static void never_done(struct fm_req *r, int status)
{
	(void)status;
	*(int *)r->priv = 1;
}

static int t_loop_down_is_enotconn(void)
{
	struct fake *f = fake_start(FAKE_DROP_FIRST);
	struct lstate st = { 0 };
	uint8_t out[8] = { 0 };
	struct iovec iov = { out, sizeof(out) };
	int called = 0;
	struct fm_req direct = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1, .len = sizeof(out),
				 .done = never_done, .priv = &called };
	struct fm_conn *c;
	struct rig r;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	p.reconnect = 1;
	p.state_cb = on_lstate;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	__atomic_store_n(&f->listening, 0, __ATOMIC_RELEASE);
	CHECK(loop_ping(&r, c) == -ECONNRESET);
	CHECK(run_until(&r, downs_seen, &st) == 0);
	/* Down: submit fails at once, from a fiber or the loop's thread,
	 * and done() never runs. */
	CHECK(loop_ping(&r, c) == -ENOTCONN);
	CHECK(fm_conn_submit(c, &direct) == -ENOTCONN);
	CHECK(fm_conn_is_up(c) == 0);
	__atomic_store_n(&f->listening, 1, __ATOMIC_RELEASE);
	CHECK(run_until(&r, ups_seen, &st) == 0);
	CHECK(loop_ping(&r, c) == 0);
	CHECK(called == 0);
	fm_conn_close(c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

static int t_loop_timeout(void)
{
	struct fake *f = fake_start(FAKE_SILENT);
	struct lstate st = { 0 };
	struct fm_conn *c;
	struct rig r;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 200);

	p.state_cb = on_lstate;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	CHECK(loop_ping(&r, c) == -ETIMEDOUT);
	CHECK(st.downs == 1 && st.other_thread == 0);
	CHECK(fm_conn_is_up(c) == 0);
	CHECK(loop_ping(&r, c) == -ENOTCONN);
	fm_conn_close(c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

/* close() from the loop's thread turns the loop until the link fiber is
 * gone; a request still in flight fails with ECANCELED. */
static int t_loop_close(void)
{
	struct fake *f = fake_start(FAKE_SILENT);
	struct lping l = { 0 };
	struct fm_conn *c;
	struct rig r;
	uint64_t t0;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 60000);

	CHECK(fm_conn_open(&p, &c) == 0);
	l.c = c;
	CHECK(fm_loop_spawn(r.l, lping_fiber, &l) == 0);
	CHECK(run_turns(&r, 3) == 0);
	CHECK(l.done == 0);
	t0 = fm_mono_ns();
	fm_conn_close(c);
	CHECK(fm_mono_ns() - t0 < BOUND_MS * 1000000ull);
	/* The link fiber is finished; the pinger was woken with ECANCELED. */
	CHECK(run_until(&r, flag_set, &l.done) == 0);
	CHECK(l.rc == -ECANCELED);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

/* While the server is gone the link fiber sleeps between reconnects:
 * close still ends it promptly. */
static int t_loop_close_while_down(void)
{
	struct fake *f = fake_start(FAKE_DROP_FIRST);
	struct lstate st = { 0 };
	struct fm_conn *c;
	struct rig r;
	uint64_t t0;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 0);

	p.reconnect = 1;
	p.state_cb = on_lstate;
	p.state_arg = &st;
	CHECK(fm_conn_open(&p, &c) == 0);
	__atomic_store_n(&f->listening, 0, __ATOMIC_RELEASE);
	CHECK(loop_ping(&r, c) == -ECONNRESET);
	CHECK(run_until(&r, downs_seen, &st) == 0);
	CHECK(run_turns(&r, 5) == 0);
	t0 = fm_mono_ns();
	fm_conn_close(c);
	CHECK(fm_mono_ns() - t0 < BOUND_MS * 1000000ull);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(st.ups == 0);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

/* Open, use and close entirely from inside a fiber; and a loop with no
 * fiber free for the link cannot open. */
struct linside {
	struct fm_conn_params p;
	struct rig *r;
	int open_rc, ping_rc, busy_open, busy_closed;
	int done;
};

static void linside_fiber(void *arg)
{
	struct linside *l = arg;
	struct fm_conn *c;

	l->open_rc = fm_conn_open(&l->p, &c);
	if (l->open_rc == 0) {
		l->busy_open = (int)fm_loop_busy(l->r->l);
		l->ping_rc = fiber_ping(c, 3);
		fm_conn_close(c);
		l->busy_closed = (int)fm_loop_busy(l->r->l);
	}
	l->done = 1;
}

static int t_loop_open_in_fiber(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	struct linside l = { 0 };
	struct fm_conn *c = NULL;
	struct rig r;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	l.p = loop_params(&r, f->port, 0);
	l.r = &r;
	CHECK(fm_loop_spawn(r.l, linside_fiber, &l) == 0);
	CHECK(run_until(&r, flag_set, &l.done) == 0);
	CHECK(l.open_rc == 0 && l.ping_rc == 0);
	CHECK(l.busy_open == 2 && l.busy_closed == 1);   /* itself, and the link */
	CHECK(rig_close(&r) == 0);

	/* One fiber, taken: no link fiber, no connection. */
	CHECK(rig_open(&r, 1) == 0);
	l = (struct linside){ .p = loop_params(&r, f->port, 0), .r = &r };
	CHECK(fm_loop_spawn(r.l, linside_fiber, &l) == 0);
	CHECK(fm_conn_open(&l.p, &c) == -EAGAIN);
	CHECK(c == NULL);
	CHECK(run_until(&r, flag_set, &l.done) == 0);
	CHECK(l.open_rc == -EAGAIN);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	return 0;
}

/* transport.h lets a loop-owned connection be used from the loop's
 * thread.  Outside a fiber there, with every slot busy, slot_take() once
 * waited on slot_cv; but only the link fiber frees slots, and it is a
 * fiber of this very thread, so the wait could not end: it froze the
 * loop for timeout_ms and dropped a healthy connection.  Either outcome
 * passes: the submit gets its slot (the wait turns the loop) or it
 * fails at once with EAGAIN/EBUSY (what slot_take() does now); the
 * request already in flight completes and the connection stays up. */
struct two_async {
	struct async a, b;
	int b_submitted;
};

static int both_done(void *arg)
{
	struct two_async *t = arg;

	return __atomic_load_n(&t->a.status, __ATOMIC_ACQUIRE) != 1 &&
	       (!t->b_submitted || __atomic_load_n(&t->b.status, __ATOMIC_ACQUIRE) != 1);
}

static int t_loop_thread_waits_for_slot(void)
{
	struct fake *f = fake_start(FAKE_GOOD);
	uint8_t out[8] = { 0 };
	struct iovec iov = { out, sizeof(out) };
	struct two_async t = { { 1 }, { 1 }, 0 };
	struct fm_conn *c;
	struct rig r;
	int rc, ran, up;

	CHECK(f);
	CHECK(rig_open(&r, 2) == 0);
	struct fm_conn_params p = loop_params(&r, f->port, 300);

	p.max_inflight = 1;
	CHECK(fm_conn_open(&p, &c) == 0);
	struct fm_req r1 = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1, .len = sizeof(out),
			     .done = async_done, .priv = &t.a };
	struct fm_req r2 = { .op = FM_OP_PING, .iov = &iov, .iovcnt = 1, .len = sizeof(out),
			     .done = async_done, .priv = &t.b };

	CHECK(fm_conn_submit(c, &r1) == 0);
	rc = fm_conn_submit(c, &r2);       /* the loop's thread, no fiber, no slot */
	t.b_submitted = rc == 0;
	ran = run_until(&r, both_done, &t);
	up = fm_conn_is_up(c);
	fm_conn_close(c);
	CHECK(rig_close(&r) == 0);
	fake_stop(f);
	if (rc)
		printf("#   second submit: %s\n", strerror(-rc));
	CHECK(rc == 0 || rc == -EAGAIN || rc == -EBUSY);
	CHECK(ran == 0);
	CHECK(t.a.status == 0);
	CHECK(!t.b_submitted || t.b.status == 0);
	CHECK(up == 1);
	return 0;
}

/* Numeric addresses resolve without DNS; the port lands in each. */
static int t_resolve_once(void)
{
	struct fm_resolved r;
	const char *why = NULL;
	const struct sockaddr_in *v4;
	const struct sockaddr_in6 *v6;

	CHECK(fm_resolve("127.0.0.1", 7070, &r, &why) == 0);
	CHECK(r.n == 1 && r.a[0].family == AF_INET && r.a[0].socktype == SOCK_STREAM);
	v4 = (const struct sockaddr_in *)fm_sockaddr_ptr(&r.a[0]);
	CHECK(r.a[0].len == sizeof(*v4) && ntohs(v4->sin_port) == 7070);
	CHECK(ntohl(v4->sin_addr.s_addr) == INADDR_LOOPBACK);

	CHECK(fm_resolve("::1", 9, &r, &why) == 0);
	CHECK(r.n == 1 && r.a[0].family == AF_INET6);
	v6 = (const struct sockaddr_in6 *)fm_sockaddr_ptr(&r.a[0]);
	CHECK(ntohs(v6->sin6_port) == 9 && IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
	return 0;
}

static const struct tap_case cases[] = {
	{ "a server's NOTICE is delivered in sequence; one that does not decode is ignored", t_notice_delivered_in_sequence },
	{ "a NOTICE whose tag fails is not delivered and drops the connection", t_notice_forged_drops },
	{ "resolve: numeric v4 and v6 addresses with their port", t_resolve_once },
	{ "open to a closed port: ECONNREFUSED", t_closed_port_refused },
	{ "rdma without devices and unix addresses: clear errors", t_rdma_and_unix_addresses },
	{ "alloc, write (2 iovecs), read back, stat, list, ENOENT reply", t_roundtrip },
	{ "malformed requests: EINVAL before anything is sent", t_invalid_requests },
	{ "data-only connection: above max_io EINVAL, LIST EOPNOTSUPP, the rest works",
	  t_data_only_limits },
	{ "server closes at AUTH: EACCES", t_wrong_secret },
	{ "server cannot prove the secret: EACCES", t_server_without_secret },
	{ "peer is not a memserver: EPROTO", t_not_a_memserver },
	{ "request timeout: ETIMEDOUT, connection down, then ENOTCONN", t_timeout_drops_connection },
	{ "bad reply length: EPROTO for it, ECONNRESET for the rest", t_protocol_error_fails_all },
	{ "a reply altered in transit fails its tag: EPROTO, connection down", t_bad_tag_fails_the_reply },
	{ "connection lost: ECONNRESET, state down, reconnects, state up", t_reconnect },
	{ "server gone: ENOTCONN while down, back when it listens again", t_down_is_enotconn_until_back },
	{ "close fails in-flight requests with ECANCELED", t_close_cancels_inflight },
	{ "500 pipelined requests through 4 slots all complete", t_more_requests_than_slots },
	{ "4 threads writing and reading at once stay consistent", t_concurrent_submitters },
	{ "loop: open in its thread; fibers ping, alloc, stat, list, write, read", t_loop_roundtrip },
	{ "loop: 600 pings queued in one turn all complete with their echo", t_loop_batch },
	{ "loop: consecutive WRITEs leave as one frame and end with its reply", t_loop_writes_merge },
	{ "loop: 8 MiB of writes, each read back, in one turn: data intact", t_loop_big_batch },
	{ "loop: 300 pings through 4 slots from one fiber all complete", t_loop_more_than_slots },
	{ "loop: connection lost: ECONNRESET, the link fiber reconnects", t_loop_reconnect },
	{ "loop: ENOTCONN while down, back when the server listens again", t_loop_down_is_enotconn },
	{ "loop: request timeout: ETIMEDOUT, down, then ENOTCONN", t_loop_timeout },
	{ "loop: close from the loop's thread ends the link fiber, ECANCELED", t_loop_close },
	{ "loop: close while reconnecting returns, link fiber gone", t_loop_close_while_down },
	{ "loop: open, ping, close inside a fiber; no free fiber: EAGAIN", t_loop_open_in_fiber },
	/* Last, and failing until fixed: see the comment above the case. */
	{ "loop thread outside a fiber, no free slot: the loop does not freeze "
	  "and the connection stays up", t_loop_thread_waits_for_slot },
};

int main(void)
{
	log_init("test_transport", getenv("FM_TEST_VERBOSE") ? LOG_LVL_DEBUG : LOG_LVL_ERR);
	if (fm_auth_init() < 0)
		return 1;
	test_secret.len = 32;
	fm_random(test_secret.bytes, test_secret.len);
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
