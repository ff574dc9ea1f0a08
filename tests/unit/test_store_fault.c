/* test_store_fault.c — the store under server loss, hangs, refused
 * allocations and corrupted copies (fault-injecting transport). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store_fixture.h"
#include "tap.h"
#include "ublk-farmem/store/internal.h"

#define NPAGES 256u

static uint8_t buf[64 << 10];

static int write_all(struct store *s, uint32_t gen)
{
	for (uint64_t p = 0; p < NPAGES; p += 16) {
		for (int i = 0; i < 16; i++)
			fix_fill(buf + i * STORE_PAGE, p + i, gen, (int)((p + i) % 3));
		if (store_write(s, (int)(p / 16 % 2), p * STORE_PAGE, 16 * STORE_PAGE, buf) < 0)
			return -1;
	}
	return 0;
}

static int verify_all(struct store *s, uint32_t gen)
{
	uint8_t want[STORE_PAGE];

	for (uint64_t p = 0; p < NPAGES; p += 16) {
		if (store_read(s, 1, p * STORE_PAGE, 16 * STORE_PAGE, buf) < 0)
			return -1;
		for (int i = 0; i < 16; i++) {
			fix_fill(want, p + i, gen, (int)((p + i) % 3));
			if (memcmp(want, buf + i * STORE_PAGE, STORE_PAGE))
				return -1;
		}
	}
	return 0;
}

/* Where replica r of a page's record lives: fault port, remote id, offset. */
static int locate(struct store *s, uint64_t page, int r, uint16_t *port,
		  uint64_t *id, uint32_t *off)
{
	struct pm_entry e = s->map[page];
	const struct seg_rep *rep;

	if (pm_state(&e) != PM_STORED)
		return -1;
	rep = &s->segs[e.seg].rep[r];
	if (rep->server < 0)
		return -1;
	*port = (uint16_t)(FIX_PORT0 + rep->server);
	*id = rep->remote_id;
	*off = e.off;
	return 0;
}

/* The server holds exactly the segments the table says it does. */
static int same_as_server(struct store *s, int i)
{
	struct store_stats st;
	struct fault_stats fs;

	store_get_stats(s, &st);
	fault_get_stats((uint16_t)(FIX_PORT0 + i), &fs);
	if (fs.segments == st.server[i].segments)
		return 1;
	printf("#   server %d holds %llu segments, table says %llu\n", i,
	       (unsigned long long)fs.segments, (unsigned long long)st.server[i].segments);
	return 0;
}

static struct store *open3(int nservers, int replicas)
{
	struct store_config c;

	fault_reset();
	fix_config(&c, nservers, replicas, NPAGES * STORE_PAGE);
	return fix_open(&c);
}

static int test_corrupt_copy_served_from_other(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);
	uint64_t id;
	uint32_t off;
	uint16_t port;

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	/* Page 1 is text: flip a payload byte of its first copy. */
	CHECK(locate(s, 1, 0, &port, &id, &off) == 0);
	CHECK(fault_corrupt(port, id, off + REC_HDR_SIZE + 5) == 0);
	CHECK(verify_all(s, 1) == 0);
	store_get_stats(s, &st);
	CHECK(FIX_BAD_COPIES(st) == 1);
	CHECK(st.read_errors == 0);
	/* The bad copy was rewritten from the good one: no new error. */
	CHECK(verify_all(s, 1) == 0);
	store_get_stats(s, &st);
	CHECK(FIX_BAD_COPIES(st) == 1);
	/* A damaged header is caught as well. */
	CHECK(locate(s, 2, 0, &port, &id, &off) == 0);
	CHECK(fault_corrupt(port, id, off + 9) == 0);
	CHECK(verify_all(s, 1) == 0);
	store_get_stats(s, &st);
	CHECK(FIX_BAD_COPIES(st) == 2);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_all_copies_bad_is_eio(void)
{
	uint8_t page[STORE_PAGE];
	struct store_stats st;
	struct store *s = open3(3, 2);
	uint64_t id;
	uint32_t off;
	uint16_t port;

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	for (int r = 0; r < 2; r++) {
		CHECK(locate(s, 4, r, &port, &id, &off) == 0);
		CHECK(fault_corrupt(port, id, off + REC_HDR_SIZE + 100) == 0);
	}
	memset(page, 0x5a, sizeof(page));
	CHECK(store_read(s, 0, 4 * STORE_PAGE, STORE_PAGE, page) == -EIO);
	store_get_stats(s, &st);
	CHECK(st.read_errors == 1);
	CHECK(FIX_BAD_COPIES(st) >= 2);
	/* Neighbours are unaffected. */
	CHECK(store_read(s, 0, 5 * STORE_PAGE, STORE_PAGE, page) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_server_loss_and_repair(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
	/* Every page still reads, from the surviving replica. */
	CHECK(verify_all(s, 1) == 0);
	/* Writes go on, to the two servers left. */
	CHECK(write_all(s, 2) == 0);
	store_get_stats(s, &st);
	CHECK(st.server[1].up == 0);
	store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.degraded_segments == 0);
	CHECK(st.rereplicated_segments > 0);
	CHECK(st.server[1].segments == 0);
	CHECK(verify_all(s, 2) == 0);
	/* Each segment's copies are on distinct servers. */
	for (uint32_t i = 0; i < s->hdr->nsegs; i++) {
		const struct seg *g = &s->segs[i];

		if (g->state == SEG_FREE)
			continue;
		CHECK(g->rep[0].server != g->rep[1].server);
		CHECK(g->rep[0].server >= 0 && g->rep[1].server >= 0);
	}
	/* The server comes back and gets new segments again. */
	fault_set_mode(FIX_PORT0 + 1, FAULT_UP);
	store_maintain(s);
	/* Its stale copies (replaced by repair) were freed on its return. */
	CHECK(same_as_server(s, 1));
	CHECK(write_all(s, 3) == 0);
	CHECK(write_all(s, 4) == 0);
	store_get_stats(s, &st);
	CHECK(st.server[1].up == 1);
	CHECK(st.server[1].segments > 0);
	CHECK(verify_all(s, 4) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_second_loss_after_repair_loses_nothing(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	fault_set_mode(FIX_PORT0 + 0, FAULT_DOWN);
	store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.degraded_segments == 0);
	/* Now another one dies: every segment still has a copy left. */
	fault_set_mode(FIX_PORT0 + 2, FAULT_DOWN);
	CHECK(verify_all(s, 1) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_hung_server_times_out(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	fault_set_mode(FIX_PORT0 + 0, FAULT_HANG);
	/* Reads that hit the hung server time out and fall back. */
	CHECK(verify_all(s, 1) == 0);
	CHECK(write_all(s, 2) == 0);
	store_get_stats(s, &st);
	CHECK(st.server[0].up == 0);
	CHECK(st.read_errors == 0 && st.write_errors == 0);
	CHECK(verify_all(s, 2) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_slow_server(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	/* Slow but within the timeout (300 ms): nothing fails. */
	fault_set_delay(FIX_PORT0 + 1, 5);
	CHECK(verify_all(s, 1) == 0);
	CHECK(write_all(s, 2) == 0);
	store_get_stats(s, &st);
	CHECK(st.server[1].up == 1 && st.server[1].errors == 0);
	/* Slower than the timeout: requests time out, the server is marked
	 * down and the others serve. */
	fault_set_delay(FIX_PORT0 + 1, 1000);
	CHECK(verify_all(s, 2) == 0);
	CHECK(write_all(s, 3) == 0);
	store_get_stats(s, &st);
	CHECK(st.server[1].up == 0);
	CHECK(st.read_errors == 0 && st.write_errors == 0);
	/* Fast again: the connection comes back by itself (bounded poll). */
	fault_set_delay(FIX_PORT0 + 1, 0);
	for (int i = 0; i < 100; i++) {
		store_maintain(s);
		store_get_stats(s, &st);
		if (st.server[1].up)
			break;
		usleep(20000);
	}
	CHECK(st.server[1].up == 1);
	CHECK(st.degraded_segments == 0);
	CHECK(verify_all(s, 3) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_all_down_is_eio_not_hang(void)
{
	struct store_stats st;
	struct store *s = open3(2, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	s->retry_ms = 1000;   /* the production bound is 20 s: keep this short */
	fault_set_mode(FIX_PORT0 + 0, FAULT_HANG);
	fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
	CHECK(store_read(s, 0, STORE_PAGE, STORE_PAGE, buf) == -EIO);
	fix_fill(buf, 1, 9, 2);
	CHECK(store_write(s, 0, STORE_PAGE, STORE_PAGE, buf) < 0);
	store_get_stats(s, &st);
	CHECK(st.read_errors == 1 && st.write_errors == 1);
	/* Zero and unwritten pages need no server. */
	CHECK(store_read(s, 0, 0, STORE_PAGE, buf) == 0);
	/* Both come back: the old data is still there. */
	fault_set_mode(FIX_PORT0 + 0, FAULT_UP);
	fault_set_mode(FIX_PORT0 + 1, FAULT_UP);
	store_maintain(s);
	CHECK(verify_all(s, 1) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_write_error_drops_replica_then_repairs(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	/* One server fails a few data ops (connection stays up). */
	fault_fail_next(FIX_PORT0 + 2, 3, -EIO);
	CHECK(write_all(s, 2) == 0);
	store_get_stats(s, &st);
	CHECK(st.write_errors == 0);
	CHECK(verify_all(s, 2) == 0);
	store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.degraded_segments == 0);
	CHECK(verify_all(s, 2) == 0);
	/* The dropped copies are not left behind on the server. */
	for (int i = 0; i < 3; i++)
		CHECK(same_as_server(s, i));
	store_close(s);
	fault_reset();
	return 0;
}

static int test_nospc_server_skipped(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	fault_set_nospc(FIX_PORT0 + 1, 1);
	CHECK(write_all(s, 1) == 0);
	store_get_stats(s, &st);
	CHECK(st.server[1].segments == 0);
	CHECK(st.degraded_segments == 0);
	CHECK(verify_all(s, 1) == 0);
	/* Nobody has room: -ENOSPC, not a hang. */
	fault_set_nospc(FIX_PORT0 + 0, 1);
	fault_set_nospc(FIX_PORT0 + 2, 1);
	for (int i = 0; i < 200; i++) {
		int rc;

		fix_fill(buf, (uint64_t)i % NPAGES, 7, 2);
		rc = store_write(s, 0, (uint64_t)(i % NPAGES) * STORE_PAGE, STORE_PAGE, buf);
		if (rc == -ENOSPC)
			break;
		CHECK(rc == 0);
		CHECK(i < 199);
	}
	store_close(s);
	fault_reset();
	return 0;
}

static int test_single_server_r1(void)
{
	struct store_stats st;
	struct store *s = open3(1, 0);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	CHECK(verify_all(s, 1) == 0);
	store_get_stats(s, &st);
	CHECK(st.replicas == 1);
	CHECK(st.degraded_segments == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_server_restart_lost_segments(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	/* A server restarts empty: its copies answer -ENOENT. */
	fault_set_mode(FIX_PORT0 + 2, FAULT_DOWN);
	fault_reset_server(FIX_PORT0 + 2);
	fault_set_mode(FIX_PORT0 + 2, FAULT_UP);
	CHECK(verify_all(s, 1) == 0);
	store_get_stats(s, &st);
	CHECK(st.read_errors == 0);
	for (int round = 0; round < 3; round++)
		store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.degraded_segments == 0);
	for (int i = 0; i < 3; i++)
		CHECK(same_as_server(s, i));
	/* Lose another: still everything readable. */
	fault_set_mode(FIX_PORT0 + 0, FAULT_DOWN);
	CHECK(verify_all(s, 1) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* What the transport does when a handshake brings a boot id. */
static void publish_boot(struct store *s, int i, uint64_t boot)
{
	__atomic_store_n(&s->srv[i].conn->boot_id, boot, __ATOMIC_RELEASE);
}

static int copies_with_boot(struct store *s, int i, uint64_t boot)
{
	int n = 0;

	for (uint32_t k = 0; k < s->hdr->nsegs; k++)
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			n += s->segs[k].state != SEG_FREE && s->segs[k].rep[r].server == i &&
			     s->segs[k].rep[r].boot == boot_tag(boot);
	return n;
}

/* A server that comes back with another boot id restarted, even when
 * (here) its LIST still names our old ids: those copies are dropped and
 * rebuilt, never trusted.  Control: a reconnect with the same boot id
 * changes nothing. */
static int test_new_boot_id_drops_copies(void)
{
	struct store_stats st;
	struct store *s = open3(3, 2);
	int before;

	CHECK(s);
	for (int i = 0; i < 3; i++)
		publish_boot(s, i, 0x100 + (uint64_t)i);
	CHECK(write_all(s, 1) == 0);
	before = copies_with_boot(s, 2, 0x102);
	CHECK(before > 0);
	/* Control: reconnected, same boot. */
	__atomic_store_n(&s->srv[2].need_sweep, 1, __ATOMIC_RELEASE);
	store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.rereplicated_segments == 0 && copies_with_boot(s, 2, 0x102) == before);
	/* Reconnected to a new run of server 2. */
	publish_boot(s, 2, 0x777);
	__atomic_store_n(&s->srv[2].need_sweep, 1, __ATOMIC_RELEASE);
	for (int round = 0; round < 3; round++)
		store_maintain(s);
	store_get_stats(s, &st);
	CHECK(copies_with_boot(s, 2, 0x102) == 0);
	CHECK(st.rereplicated_segments > 0 && st.degraded_segments == 0);
	CHECK(verify_all(s, 1) == 0);
	/* New copies record the new boot. */
	CHECK(write_all(s, 2) == 0);
	CHECK(copies_with_boot(s, 2, 0x777) > 0);
	CHECK(verify_all(s, 2) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_repair_copies_a_good_replica(void)
{
	struct store *s = open3(4, 3);
	uint16_t port_bad, port_good, port_lost;
	uint64_t id;
	uint32_t off;
	const struct seg *g;

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	g = &s->segs[s->map[1].seg];
	/* Copy 0 of page 1's segment is damaged; copy 2's server dies. */
	CHECK(locate(s, 1, 0, &port_bad, &id, &off) == 0);
	CHECK(fault_corrupt(port_bad, id, off + REC_HDR_SIZE + 3) == 0);
	port_good = (uint16_t)(FIX_PORT0 + g->rep[1].server);
	port_lost = (uint16_t)(FIX_PORT0 + g->rep[2].server);
	fault_set_mode(port_lost, FAULT_DOWN);
	store_maintain(s);
	/* Repair must have copied from the good replica: with the good one
	 * gone too, the bad copy and the new one remain, and the new one
	 * serves the page. */
	fault_set_mode(port_good, FAULT_DOWN);
	CHECK(verify_all(s, 1) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static uint32_t gen_of[NPAGES];

struct churner {
	struct store *s;
	int q;
	int rounds;
	int rc;
};

/* Each queue owns half the pages, so the last generation is known. */
static void *churn_main(void *arg)
{
	struct churner *w = arg;
	uint8_t page[STORE_PAGE];
	unsigned seed = (unsigned)w->q + 11;

	for (int k = 0; k < w->rounds && !w->rc; k++) {
		uint64_t p = (uint64_t)w->q * (NPAGES / 2) + (uint64_t)rand_r(&seed) % (NPAGES / 2);
		uint32_t g = (uint32_t)k + 2;

		fix_fill(page, p, g, 1 + (int)(p % 2));
		if (store_write(w->s, w->q, p * STORE_PAGE, STORE_PAGE, page) < 0)
			w->rc = -1;
		gen_of[p] = g;
	}
	return NULL;
}

static int test_loss_under_load_background(void)
{
	struct store_config c;
	struct store_stats st;
	struct churner w[2];
	pthread_t t[2];
	uint8_t want[STORE_PAGE], got[STORE_PAGE];
	struct store *s;

	fault_reset();
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	c.no_background = 0;
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < NPAGES; p++) {
		fix_fill(want, p, 1, 1 + (int)(p % 2));
		CHECK(store_write(s, 0, p * STORE_PAGE, STORE_PAGE, want) == 0);
		gen_of[p] = 1;
	}
	for (int i = 0; i < 2; i++) {
		w[i] = (struct churner){ .s = s, .q = i, .rounds = 3000 };
		CHECK(pthread_create(&t[i], NULL, churn_main, &w[i]) == 0);
	}
	/* A server dies and comes back while both queues write and the
	 * cleaner and repair run in the background. */
	for (int k = 0; k < 200; k++) {
		if (k == 20)
			fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
		if (k == 120)
			fault_set_mode(FIX_PORT0 + 1, FAULT_UP);
		store_read(s, 0, (uint64_t)(k % NPAGES) * STORE_PAGE, STORE_PAGE, got);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(w[0].rc == 0 && w[1].rc == 0);
	for (int i = 0; i < 50; i++) {
		int sweeps = 0;

		store_maintain(s);
		store_get_stats(s, &st);
		for (int k = 0; k < 3; k++)
			sweeps += __atomic_load_n(&s->srv[k].need_sweep, __ATOMIC_ACQUIRE);
		if (!st.degraded_segments && !sweeps)
			break;
	}
	CHECK(st.degraded_segments == 0);
	CHECK(st.read_errors == 0 && st.write_errors == 0);
	for (uint64_t p = 0; p < NPAGES; p++) {
		fix_fill(want, p, gen_of[p], 1 + (int)(p % 2));
		CHECK(store_read(s, 1, p * STORE_PAGE, STORE_PAGE, got) == 0);
		CHECK(memcmp(want, got, STORE_PAGE) == 0);
	}
	for (int i = 0; i < 3; i++)
		CHECK(same_as_server(s, i));
	store_close(s);
	fault_reset();
	return 0;
}

static uint64_t ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sets servers' modes after a pause, while the test's I/O retries. */
struct later {
	pthread_t t;
	unsigned delay_ms;
	int nports;
	uint16_t ports[4];
	enum fault_mode mode;
	struct store *closing;   /* instead: flag the store as closing */
};

static void *later_main(void *arg)
{
	struct later *l = arg;

	usleep(l->delay_ms * 1000);
	if (l->closing) {
		pthread_mutex_lock(&l->closing->retry_lock);
		__atomic_store_n(&l->closing->closing, 1, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&l->closing->retry_cv);
		pthread_mutex_unlock(&l->closing->retry_lock);
	}
	for (int i = 0; i < l->nports; i++)
		fault_set_mode(l->ports[i], l->mode);
	return NULL;
}

static void later_start(struct later *l, unsigned delay_ms, enum fault_mode mode)
{
	l->delay_ms = delay_ms;
	l->mode = mode;
	pthread_create(&l->t, NULL, later_main, l);
}

/* Every replica fails on its transport for a while (one hangs, so its
 * requests time out and its connection drops; the other is reconnecting
 * and refuses): reads and writes wait for them within the bound and
 * return the right data, no error counted. */
static int test_transient_outage_is_ridden_out(void)
{
	struct later l = { .nports = 2, .ports = { FIX_PORT0 + 0, FIX_PORT0 + 1 } };
	struct store_stats st;
	struct store *s = open3(2, 2);
	uint64_t t0;

	CHECK(s);
	CHECK(s->retry_ms >= 20000);   /* 4 x 300 ms, at least 20 s */
	CHECK(write_all(s, 1) == 0);
	fault_set_mode(FIX_PORT0 + 0, FAULT_HANG);
	fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
	later_start(&l, 1500, FAULT_UP);
	t0 = ms_now();
	CHECK(verify_all(s, 1) == 0);
	CHECK(ms_now() - t0 >= 1000);  /* it did wait for them */
	pthread_join(l.t, NULL);
	/* The same for writes: nothing up to place a segment on. */
	fault_set_mode(FIX_PORT0 + 0, FAULT_DOWN);
	fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
	later_start(&l, 800, FAULT_UP);
	CHECK(write_all(s, 2) == 0);
	pthread_join(l.t, NULL);
	CHECK(verify_all(s, 2) == 0);
	/* Injected transport errors on every replica, connections up. */
	fault_fail_next(FIX_PORT0 + 0, 3, -ETIMEDOUT);
	fault_fail_next(FIX_PORT0 + 1, 3, -ECONNRESET);
	CHECK(verify_all(s, 2) == 0);
	fault_fail_next(FIX_PORT0 + 0, 2, -ETIMEDOUT);
	fault_fail_next(FIX_PORT0 + 1, 2, -ENOTCONN);
	CHECK(write_all(s, 3) == 0);
	CHECK(verify_all(s, 3) == 0);
	store_get_stats(s, &st);
	CHECK(st.read_errors == 0 && st.write_errors == 0);
	CHECK(FIX_BAD_COPIES(st) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* Down beyond the bound: -EIO, and within the bound plus slack (a hang
 * check: the limit is generous). */
static int test_outage_beyond_bound_is_eio(void)
{
	struct store_stats st;
	struct store *s = open3(2, 2);
	uint64_t t0, dt;

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	s->retry_ms = 1500;
	fault_set_mode(FIX_PORT0 + 0, FAULT_HANG);
	fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
	t0 = ms_now();
	CHECK(store_read(s, 0, 16 * STORE_PAGE, 16 * STORE_PAGE, buf) == -EIO);
	dt = ms_now() - t0;
	printf("#   read gave up after %llu ms (bound %u)\n", (unsigned long long)dt, s->retry_ms);
	CHECK(dt >= 1400 && dt < 3 * 1500);
	fix_fill(buf, 1, 9, 2);
	t0 = ms_now();
	CHECK(store_write(s, 0, STORE_PAGE, STORE_PAGE, buf) == -EIO);
	dt = ms_now() - t0;
	printf("#   write gave up after %llu ms\n", (unsigned long long)dt);
	CHECK(dt >= 1400 && dt < 3 * 1500);
	store_get_stats(s, &st);
	CHECK(st.read_errors == 1 && st.write_errors == 1);
	/* Closing stops a waiting read at once. */
	s->retry_ms = 60000;
	struct later l = { .closing = s };
	later_start(&l, 300, FAULT_DOWN);
	t0 = ms_now();
	CHECK(store_read(s, 0, STORE_PAGE, STORE_PAGE, buf) == -EIO);
	dt = ms_now() - t0;
	pthread_join(l.t, NULL);
	CHECK(dt < 3000);
	store_close(s);
	fault_reset();
	return 0;
}

/* A bad copy is never returned and never retried: with the good copy's
 * server away for a while, the read waits for it (not for the bad one);
 * with every copy bad, -EIO comes at once despite the 20 s bound. */
static int test_bad_copy_not_retried(void)
{
	uint8_t want[STORE_PAGE], page[STORE_PAGE];
	struct later l = { .nports = 1 };
	struct store_stats st;
	struct store *s = open3(2, 2);
	uint64_t id, t0;
	uint32_t off;
	uint16_t port, port1;

	CHECK(s);
	CHECK(write_all(s, 1) == 0);
	CHECK(locate(s, 1, 0, &port, &id, &off) == 0);
	CHECK(fault_corrupt(port, id, off + REC_HDR_SIZE + 5) == 0);
	CHECK(locate(s, 1, 1, &port1, &id, &off) == 0);
	fault_set_mode(port1, FAULT_DOWN);
	l.ports[0] = port1;
	later_start(&l, 700, FAULT_UP);
	memset(page, 0x5a, sizeof(page));
	CHECK(store_read(s, 0, STORE_PAGE, STORE_PAGE, page) == 0);
	pthread_join(l.t, NULL);
	fix_fill(want, 1, 1, 1);
	CHECK(memcmp(page, want, STORE_PAGE) == 0);
	store_get_stats(s, &st);
	CHECK(FIX_BAD_COPIES(st) == 1);   /* the bad copy was read once */
	CHECK(st.read_errors == 0);
	/* It was rewritten from the good one. */
	fault_set_mode(port1, FAULT_DOWN);
	CHECK(store_read(s, 0, STORE_PAGE, STORE_PAGE, page) == 0);
	CHECK(memcmp(page, want, STORE_PAGE) == 0);
	fault_set_mode(port1, FAULT_UP);
	/* Every copy bad: -EIO promptly, the bound notwithstanding. */
	for (int r = 0; r < 2; r++) {
		CHECK(locate(s, 4, r, &port, &id, &off) == 0);
		CHECK(fault_corrupt(port, id, off + REC_HDR_SIZE + 100) == 0);
	}
	t0 = ms_now();
	CHECK(store_read(s, 0, 4 * STORE_PAGE, STORE_PAGE, page) == -EIO);
	CHECK(ms_now() - t0 < 2000);
	/* One copy bad, the other's server gone past the bound: -EIO (not
	 * the bad bytes), bounded. */
	s->retry_ms = 1000;
	CHECK(locate(s, 7, 0, &port, &id, &off) == 0);
	CHECK(fault_corrupt(port, id, off + REC_HDR_SIZE + 100) == 0);
	CHECK(locate(s, 7, 1, &port1, &id, &off) == 0);
	fault_set_mode(port1, FAULT_HANG);
	t0 = ms_now();
	CHECK(store_read(s, 0, 7 * STORE_PAGE, STORE_PAGE, page) == -EIO);
	CHECK(ms_now() - t0 < 3 * 1000);
	store_get_stats(s, &st);
	CHECK(st.read_errors == 2);
	/* The bad copy was verified once per read, not once per round. */
	CHECK(FIX_BAD_COPIES(st) == 1 + 2 + 1);
	store_close(s);
	fault_reset();
	return 0;
}

static const struct tap_case cases[] = {
	{ "transient outage of every replica: reads and writes wait, data intact", test_transient_outage_is_ridden_out },
	{ "outage beyond the retry bound: -EIO within it; closing stops retrying", test_outage_beyond_bound_is_eio },
	{ "bad copies are never returned nor retried, with or without an outage", test_bad_copy_not_retried },
	{ "server lost and back under two writers with background cleaner and repair", test_loss_under_load_background },
	{ "repair copies from a replica that verifies, not a damaged one", test_repair_copies_a_good_replica },
	{ "server restarted empty: lost copies dropped and re-replicated", test_server_restart_lost_segments },
	{ "a new boot id drops that server's old copies, and repair rebuilds them", test_new_boot_id_drops_copies },
	{ "corrupted copy is detected, counted, served from the other replica, rewritten", test_corrupt_copy_served_from_other },
	{ "no good copy left is -EIO, counted", test_all_copies_bad_is_eio },
	{ "server loss: reads/writes continue, repair restores R copies, server rejoins", test_server_loss_and_repair },
	{ "after repair a second loss loses nothing", test_second_loss_after_repair_loses_nothing },
	{ "hung server: requests time out, fall back, server marked down", test_hung_server_times_out },
	{ "slow server: fine within the timeout, marked down beyond it", test_slow_server },
	{ "all servers down: -EIO (bounded by timeouts), data back when they return", test_all_down_is_eio_not_hang },
	{ "replica write errors drop the copy; repair restores it", test_write_error_drops_replica_then_repairs },
	{ "server without space skipped; none with space is -ENOSPC", test_nospc_server_skipped },
	{ "one server, replicas default to 1", test_single_server_r1 },
};

int main(void)
{
	fix_quiet();
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
