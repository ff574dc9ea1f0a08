/* test_segment.c — segment life cycle: open on R distinct servers with
 * rotation, FULL until the last append lands, slots reserved for the
 * cleaner, free returns the remote memory. */
#include <errno.h>
#include <string.h>

#include "store_fixture.h"
#include "tap.h"
#include "ublk-farmem/store/internal.h"

static struct store *open_store(int nservers, int replicas)
{
	struct store_config c;

	fault_reset();
	fix_config(&c, nservers, replicas, 1u << 20);
	return fix_open(&c);
}

static int test_open_places_and_rotates(void)
{
	struct store *s = open_store(4, 2);
	int first[4] = { 0 };
	uint32_t idx[8];

	CHECK(s);
	for (int k = 0; k < 8; k++) {
		CHECK(seg_open(s, &s->q[0], &idx[k]) == 0);
		const struct seg *g = &s->segs[idx[k]];
		CHECK(g->state == SEG_OPEN);
		CHECK(g->rep[0].server >= 0 && g->rep[1].server >= 0);
		CHECK(g->rep[0].server != g->rep[1].server);
		CHECK(g->rep[2].server < 0);
		first[g->rep[0].server]++;
	}
	for (int i = 0; i < 4; i++)
		CHECK(first[i] == 2);     /* striped evenly */
	for (int k = 0; k < 8; k++)
		seg_free_remote(s, &s->maint_io, idx[k]);
	struct fault_stats fs;
	fix_servers_total(4, &fs);
	CHECK(fs.segments == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_full_until_last_append(void)
{
	struct store *s = open_store(2, 2);
	uint32_t idx;

	CHECK(s);
	CHECK(seg_open(s, &s->q[0], &idx) == 0);
	pthread_mutex_lock(&s->lock);
	s->segs[idx].writers = 2;
	pthread_mutex_unlock(&s->lock);
	seg_retire(s, idx);
	CHECK(s->segs[idx].state == SEG_FULL);
	seg_write_done(s, idx);
	CHECK(s->segs[idx].state == SEG_FULL);
	seg_write_done(s, idx);
	CHECK(s->segs[idx].state == SEG_SEALED);
	/* A segment with nothing in flight seals at once. */
	CHECK(seg_open(s, &s->q[0], &idx) == 0);
	seg_retire(s, idx);
	CHECK(s->segs[idx].state == SEG_SEALED);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_refused_alloc_tries_others(void)
{
	struct store *s = open_store(3, 2);
	uint32_t idx;

	CHECK(s);
	fault_set_nospc(FIX_PORT0 + 0, 1);
	for (int k = 0; k < 6; k++) {
		CHECK(seg_open(s, &s->q[0], &idx) == 0);
		CHECK(s->segs[idx].rep[0].server != 0 && s->segs[idx].rep[1].server != 0);
		CHECK(s->segs[idx].rep[0].server >= 0 && s->segs[idx].rep[1].server >= 0);
	}
	/* Only one server with room: the segment opens with one copy. */
	fault_set_nospc(FIX_PORT0 + 1, 1);
	CHECK(seg_open(s, &s->q[0], &idx) == 0);
	CHECK(seg_live_replicas(s, &s->segs[idx]) == 1);
	fault_set_nospc(FIX_PORT0 + 2, 1);
	CHECK(seg_open(s, &s->q[0], &idx) == -ENOSPC);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_cleaner_reserve(void)
{
	struct store *s = open_store(2, 2);
	uint32_t idx, n = 0;
	int rc;

	CHECK(s);
	/* Queues stop short of the last slots... */
	while ((rc = seg_open(s, &s->q[0], &idx)) == 0)
		n++;
	CHECK(rc == -ENOSPC);
	CHECK(n < s->hdr->nsegs);
	/* ...which the maintenance thread can still take. */
	CHECK(seg_open(s, &s->maint_io, &idx) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_drop_replica_degrades(void)
{
	struct store_stats st;
	struct store *s = open_store(3, 2);
	uint32_t idx;
	int server;

	CHECK(s);
	CHECK(seg_open(s, &s->q[0], &idx) == 0);
	server = s->segs[idx].rep[1].server;
	seg_drop_replica(s, idx, server);
	CHECK(s->segs[idx].flags & SEGF_DEGRADED);
	CHECK(seg_live_replicas(s, &s->segs[idx]) == 1);
	store_get_stats(s, &st);
	CHECK(st.degraded_segments == 1);
	seg_retire(s, idx);
	CHECK(repair_run(s) == 1);
	CHECK(seg_live_replicas(s, &s->segs[idx]) == 2);
	CHECK(!(s->segs[idx].flags & SEGF_DEGRADED));
	store_close(s);
	fault_reset();
	return 0;
}

/* The race that once freed a segment under a page: a writer's records
 * are on the servers but not yet in the map (a retry round can keep them
 * there for seconds) while another writer fills and retires the
 * segment.  It looks empty, yet the cleaner must leave it alone. */
static int test_appended_records_keep_their_segment(void)
{
	struct store *s = open_store(2, 2);
	struct ioctx *io;
	uint32_t idx;

	CHECK(s);
	io = &s->q[0];
	memset(io->buf, 0x5a, 256);
	io->pio[0] = (struct page_io){ .rec_off = 0, .rec_len = 256 };
	CHECK(records_append(s, io, 1) == 0);
	CHECK(io->pio[0].ok);
	idx = io->pio[0].seg;
	seg_retire(s, idx);
	CHECK(s->segs[idx].state == SEG_FULL);
	CHECK(cleaner_run(s) == 0);
	CHECK(s->segs[idx].state == SEG_FULL);
	/* Applied (here: dropped, nothing points at it): now it is fair game. */
	records_settle(s, io);
	CHECK(io->nheld == 0);
	CHECK(s->segs[idx].state == SEG_SEALED);
	CHECK(cleaner_run(s) == 1);
	CHECK(s->segs[idx].state == SEG_FREE);
	store_close(s);
	fault_reset();
	return 0;
}

static const struct tap_case cases[] = {
	{ "open: R distinct servers, first replica rotates evenly; free gives all back", test_open_places_and_rotates },
	{ "a retired segment stays FULL until its last append lands", test_full_until_last_append },
	{ "a server refusing ALLOC is skipped; none left is -ENOSPC", test_refused_alloc_tries_others },
	{ "the last table slots are kept for the cleaner", test_cleaner_reserve },
	{ "dropping a replica degrades; repair restores it", test_drop_replica_degrades },
	{ "records written but not yet in the map keep their segment from the cleaner", test_appended_records_keep_their_segment },
};

int main(void)
{
	fix_quiet();
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
