/* test_store_loop.c — the store called from fibers of a frontend's
 * event loop (store_loop_attach), as ublk queue threads call it.
 *
 * Each fiber has its own store queue.  Over the fault transport (which
 * the loop's own connections skip) every reply comes from a transport
 * thread, so each remote wait ends with a wake from another thread into
 * the loop.  Over tcp, to in-process memservers (the memserver's session
 * core behind a small threaded listener), the loop opens a connection
 * of its own to every server and the fibers' requests, replies and
 * wake-ups stay in the loop's thread; the data is then read back through
 * the shared connections from a plain thread.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop_rig.h"
#include "memserver/memserver.h"
#include "store_fixture.h"
#include "tap.h"

#define NQ         4              /* fibers, one store queue each */
#define Q_PAGES    64             /* pages each fiber owns */
#define REQ_PAGES  4              /* pages per write */
#define READ_PAGES 16             /* pages per read (max_io is 64 KiB) */

/* ---- the fibers --------------------------------------------------------- */

struct shared {
	int in_store;          /* fibers inside a store call now */
	int max_in_store;
	int done;
};

struct qfiber {
	struct store *s;
	struct shared *sh;
	int q;
	uint32_t gen;
	int rc;                /* first failure */
	int bad_pages;
	uint8_t wbuf[REQ_PAGES * STORE_PAGE];
	uint8_t rbuf[READ_PAGES * STORE_PAGE];
};

static void enter(struct shared *sh)
{
	if (++sh->in_store > sh->max_in_store)
		sh->max_in_store = sh->in_store;
}

static void note(struct qfiber *f, int rc)
{
	if (rc < 0 && f->rc == 0)
		f->rc = rc;
}

/* Writes its own pages (text and random ones), then reads them back. */
static void qfiber_main(void *arg)
{
	struct qfiber *f = arg;
	uint64_t first = (uint64_t)f->q * Q_PAGES;
	uint8_t want[STORE_PAGE];

	for (uint64_t p = first; p < first + Q_PAGES; p += REQ_PAGES) {
		for (unsigned i = 0; i < REQ_PAGES; i++)
			fix_fill(f->wbuf + i * STORE_PAGE, p + i, f->gen, 1 + (int)((p + i) % 2));
		enter(f->sh);
		note(f, store_write(f->s, f->q, p * STORE_PAGE, sizeof(f->wbuf), f->wbuf));
		f->sh->in_store--;
	}
	for (uint64_t p = first; p < first + Q_PAGES; p += READ_PAGES) {
		enter(f->sh);
		note(f, store_read(f->s, f->q, p * STORE_PAGE, sizeof(f->rbuf), f->rbuf));
		f->sh->in_store--;
		for (unsigned i = 0; i < READ_PAGES; i++) {
			fix_fill(want, p + i, f->gen, 1 + (int)((p + i) % 2));
			f->bad_pages += memcmp(want, f->rbuf + i * STORE_PAGE, STORE_PAGE) != 0;
		}
	}
	f->sh->done++;
}

static int all_fibers_done(void *arg)
{
	return ((struct shared *)arg)->done == NQ;
}

/* NQ fibers of r's loop, queue k each, generation gen; 0 when every
 * write and read worked and the data came back. */
static int run_fibers(struct rig *r, struct store *s, struct shared *sh, uint32_t gen)
{
	struct qfiber *f = calloc(NQ, sizeof(*f));
	int rc = 0;

	if (!f)
		return -1;
	memset(sh, 0, sizeof(*sh));
	for (int k = 0; k < NQ; k++) {
		f[k] = (struct qfiber){ .s = s, .sh = sh, .q = k, .gen = gen };
		if (fm_loop_spawn(r->l, qfiber_main, &f[k]))
			rc = -1;
	}
	if (run_until(r, all_fibers_done, sh))
		rc = -1;
	for (int k = 0; k < NQ; k++)
		if (f[k].rc || f[k].bad_pages) {
			printf("#   queue %d: rc %d, %d pages differ\n", k, f[k].rc, f[k].bad_pages);
			rc = -1;
		}
	free(f);
	return rc;
}

/* A plain thread reads every page back. */
static int read_all(struct store *s, uint32_t gen)
{
	static uint8_t buf[READ_PAGES * STORE_PAGE];
	uint8_t want[STORE_PAGE];

	for (uint64_t p = 0; p < NQ * Q_PAGES; p += READ_PAGES) {
		if (store_read(s, 0, p * STORE_PAGE, sizeof(buf), buf) < 0)
			return -1;
		for (unsigned i = 0; i < READ_PAGES; i++) {
			fix_fill(want, p + i, gen, 1 + (int)((p + i) % 2));
			if (memcmp(want, buf + i * STORE_PAGE, STORE_PAGE))
				return -1;
		}
	}
	return 0;
}

/* ---- over the fault transport: wakes from other threads ------------------- */

static int t_fibers_fault_transport(void)
{
	struct store_config c;
	struct shared sh;
	struct store *s;
	struct rig r;

	fault_reset();
	fix_config(&c, 3, 2, 4u << 20);
	c.queues = NQ;
	s = fix_open(&c);
	CHECK(s);
	CHECK(rig_open(&r, NQ + (unsigned)store_loop_fibers(s)) == 0);
	CHECK(store_loop_attach(s, r.l, 0, NQ) == 0);
	CHECK(fm_loop_busy(r.l) == 0);       /* no tcp: no connections of its own */
	CHECK(run_fibers(&r, s, &sh, 1) == 0);
	/* The fibers were inside the store at the same time: a fiber waiting
	 * for its replies parks and lets the others run. */
	CHECK(sh.max_in_store >= 2);
	/* Overwrite everything, from the fibers again. */
	CHECK(run_fibers(&r, s, &sh, 2) == 0);
	store_loop_detach(s, 0, NQ);
	CHECK(rig_close(&r) == 0);
	CHECK(read_all(s, 2) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* ---- over tcp, to in-process memservers ---------------------------------- */

#define MS_POOL  (16u << 20)
#define MS_SEG   (1u << 20)
#define MS_CONNS 8

struct msrv;

struct mconn {
	struct msrv *sv;
	int fd;
	pthread_t thread;
	int started;           /* acceptor, then msrv_stop after joining it */
	uint64_t data_frames;  /* atomic: READ and WRITE frames served */
};

struct msrv {
	struct ms_ctx ctx;
	struct ms_pool pool;
	pthread_mutex_t lock;  /* the session core is single-threaded */
	int lfd;
	uint16_t port;
	int stop;              /* atomic */
	pthread_t acceptor;
	struct mconn conns[MS_CONNS];
	int nconns;            /* atomic; in accept order */
};

static int recv_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = recv(fd, p, len, 0);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int send_full(int fd, const uint8_t *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void *mconn_thread(void *arg)
{
	struct mconn *c = arg;
	struct msrv *sv = c->sv;
	/* The whole frame as it came: header, payload, tag. */
	uint8_t *frame = malloc(FM_HDR_SIZE + FM_MAX_PAYLOAD + FM_CHAN_TAG_LEN);
	struct ms_buf out = { 0 };
	struct ms_session sess;
	struct fm_hdr h;
	int rc = 0;

	ms_session_init(&sess, "test");
	while (frame && rc == 0) {
		if (recv_full(c->fd, frame, FM_HDR_SIZE) ||
		    fm_hdr_decode(frame, FM_HDR_SIZE, &h) ||
		    h.len > ms_session_max_payload(&sess) ||
		    recv_full(c->fd, frame + FM_HDR_SIZE, h.len + ms_session_trailer(&sess)))
			break;
		pthread_mutex_lock(&sv->lock);
		rc = ms_session_wire_frame(&sv->ctx, &sess, &h, frame, &out);
		pthread_mutex_unlock(&sv->lock);
		if (h.op == FM_OP_READ || h.op == FM_OP_WRITE)
			__atomic_add_fetch(&c->data_frames, 1, __ATOMIC_ACQ_REL);
		if (send_full(c->fd, out.data + out.head, out.len))
			break;
		ms_buf_consume(&out, out.len);
	}
	pthread_mutex_lock(&sv->lock);
	ms_session_end(&sv->ctx, &sess);
	pthread_mutex_unlock(&sv->lock);
	ms_buf_free(&out);
	free(frame);
	return NULL;
}

static void *msrv_acceptor(void *arg)
{
	struct msrv *sv = arg;
	int one = 1;

	while (!__atomic_load_n(&sv->stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { .fd = sv->lfd, .events = POLLIN };
		int n = __atomic_load_n(&sv->nconns, __ATOMIC_ACQUIRE), fd;

		if (poll(&p, 1, 50) <= 0 || (fd = accept(sv->lfd, NULL, NULL)) < 0)
			continue;
		if (n == MS_CONNS) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		/* Counted before it can answer: a client whose open returned
		 * finds its connection counted. */
		sv->conns[n] = (struct mconn){ .sv = sv, .fd = fd };
		__atomic_store_n(&sv->nconns, n + 1, __ATOMIC_RELEASE);
		if (pthread_create(&sv->conns[n].thread, NULL, mconn_thread, &sv->conns[n]) == 0)
			sv->conns[n].started = 1;
	}
	return NULL;
}

static struct msrv *msrv_start(const struct fm_secret *secret)
{
	struct msrv *sv = calloc(1, sizeof(*sv));
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	if (!sv)
		return NULL;
	if (ms_pool_create(&sv->pool, MS_POOL, MS_HUGE_NO, 1)) {
		free(sv);
		return NULL;
	}
	if (ms_segtab_init(&sv->ctx.segs, sv->pool.base, sv->pool.size, MS_SEG))
		goto fail_pool;
	ms_devtab_init(&sv->ctx.devs, 60000);
	sv->ctx.secret = *secret;
	ms_ctx_new_boot(&sv->ctx);
	sv->ctx.now_ms = ms_now_ms;
	pthread_mutex_init(&sv->lock, NULL);
	sv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sv->lfd < 0 || bind(sv->lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(sv->lfd, 8) || getsockname(sv->lfd, (struct sockaddr *)&sa, &sl))
		goto fail;
	sv->port = ntohs(sa.sin_port);
	if (pthread_create(&sv->acceptor, NULL, msrv_acceptor, sv))
		goto fail;
	return sv;
fail:
	if (sv->lfd >= 0)
		close(sv->lfd);
	pthread_mutex_destroy(&sv->lock);
	ms_devtab_fini(&sv->ctx.devs);
	ms_segtab_fini(&sv->ctx.segs);
fail_pool:
	ms_pool_destroy(&sv->pool);
	free(sv);
	return NULL;
}

static void msrv_stop(struct msrv *sv)
{
	int n;

	__atomic_store_n(&sv->stop, 1, __ATOMIC_RELEASE);
	pthread_join(sv->acceptor, NULL);
	n = __atomic_load_n(&sv->nconns, __ATOMIC_ACQUIRE);
	for (int i = 0; i < n; i++)
		shutdown(sv->conns[i].fd, SHUT_RDWR);
	for (int i = 0; i < n; i++) {
		if (sv->conns[i].started)
			pthread_join(sv->conns[i].thread, NULL);
		close(sv->conns[i].fd);
	}
	close(sv->lfd);
	pthread_mutex_destroy(&sv->lock);
	ms_devtab_fini(&sv->ctx.devs);
	ms_segtab_fini(&sv->ctx.segs);
	ms_pool_destroy(&sv->pool);
	free(sv);
}

static uint64_t data_frames(struct msrv *sv, int conn)
{
	if (conn >= __atomic_load_n(&sv->nconns, __ATOMIC_ACQUIRE))
		return 0;
	return __atomic_load_n(&sv->conns[conn].data_frames, __ATOMIC_ACQUIRE);
}

static int t_fibers_own_tcp_connections(void)
{
	struct msrv *sv[2] = { NULL, NULL };
	uint64_t shared_before[2], loop_frames = 0;
	struct store_config c;
	struct shared sh;
	struct store *s;
	struct rig r;

	fix_config(&c, 2, 2, 4u << 20);
	c.transport = NULL;
	c.queues = NQ;
	c.timeout_ms = 5000;
	for (int i = 0; i < 2; i++) {
		sv[i] = msrv_start(&c.secret);
		CHECK(sv[i]);
		c.servers[i].port = sv[i]->port;
	}
	s = fix_open(&c);
	CHECK(s);
	/* Each server has the store's shared connection, accepted first. */
	for (int i = 0; i < 2; i++) {
		CHECK(__atomic_load_n(&sv[i]->nconns, __ATOMIC_ACQUIRE) == 1);
		shared_before[i] = data_frames(sv[i], 0);
	}
	CHECK(rig_open(&r, NQ + (unsigned)store_loop_fibers(s)) == 0);
	CHECK(store_loop_attach(s, r.l, 0, NQ) == 0);
	/* A connection of the loop's own to each server, each with its link
	 * fiber. */
	CHECK(fm_loop_busy(r.l) == 2);
	CHECK(run_fibers(&r, s, &sh, 3) == 0);
	CHECK(sh.max_in_store >= 2);
	/* Every READ and WRITE went over the loop's connections. */
	for (int i = 0; i < 2; i++) {
		CHECK(__atomic_load_n(&sv[i]->nconns, __ATOMIC_ACQUIRE) == 2);
		CHECK(data_frames(sv[i], 0) == shared_before[i]);
		loop_frames += data_frames(sv[i], 1);
	}
	/* At least one WRITE per store_write() there. */
	CHECK(loop_frames >= NQ * Q_PAGES / REQ_PAGES);
	/* Detach closes them from the loop's thread; the link fibers end. */
	store_loop_detach(s, 0, NQ);
	CHECK(fm_loop_busy(r.l) == 0);
	CHECK(rig_close(&r) == 0);
	/* What the fibers wrote reads back through the shared connections. */
	CHECK(read_all(s, 3) == 0);
	for (int i = 0; i < 2; i++)
		CHECK(data_frames(sv[i], 0) > shared_before[i]);
	store_close(s);
	for (int i = 0; i < 2; i++)
		msrv_stop(sv[i]);
	return 0;
}

static const struct tap_case cases[] = {
	{ "4 fibers, a queue each, write and read back; replies wake them from other threads",
	  t_fibers_fault_transport },
	{ "over tcp the loop's own connections carry the fibers' I/O; shared ones read it back",
	  t_fibers_own_tcp_connections },
};

int main(void)
{
	fix_quiet();
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
