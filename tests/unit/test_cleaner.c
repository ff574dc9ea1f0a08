/* test_cleaner.c — the cleaner keeps remote memory near the live bytes
 * under sustained overwrite and never loses a page doing it. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store_fixture.h"
#include "tap.h"
#include "ublk-farmem/store/internal.h"

#define NPAGES 512u

static uint32_t gen_of[NPAGES];

static int write_page(struct store *s, int q, uint64_t p, uint32_t gen, uint8_t *buf)
{
	fix_fill(buf, p, gen, 2);
	return store_write(s, q, p * STORE_PAGE, STORE_PAGE, buf);
}

/* Every page reads back as its last write: generation gen_of[p], of
 * fix_fill()'s kind kind_of(p). */
static int verify_pages(struct store *s, int q, int (*kind_of)(uint64_t p))
{
	uint8_t want[STORE_PAGE], got[STORE_PAGE];

	for (uint64_t p = 0; p < NPAGES; p++) {
		fix_fill(want, p, gen_of[p], kind_of(p));
		if (store_read(s, q, p * STORE_PAGE, STORE_PAGE, got) < 0 ||
		    memcmp(want, got, STORE_PAGE)) {
			printf("#   page %llu wrong (gen %u)\n", (unsigned long long)p, gen_of[p]);
			return -1;
		}
	}
	return 0;
}

/* write_page()'s random pages; never written: zero. */
static int kind_written(uint64_t p)
{
	return gen_of[p] ? 2 : 0;
}

static int verify_all(struct store *s, int q)
{
	return verify_pages(s, q, kind_written);
}

/* Remote memory per replica stays within twice the live bytes plus the
 * open segments (two queues and the cleaner). */
static int bounded(struct store *s, const struct store_stats *st)
{
	uint64_t bound = 2 * st->bytes_stored + 3ull * s->seg_size;

	if (st->bytes_remote <= (uint64_t)st->replicas * bound)
		return 1;
	printf("#   remote %llu > %d x %llu (live %llu)\n", (unsigned long long)st->bytes_remote,
	       st->replicas, (unsigned long long)bound, (unsigned long long)st->bytes_stored);
	return 0;
}

/* The accounting the store keeps equals what its page map says. */
static int consistent(struct store *s)
{
	uint64_t live = 0, stored = 0, zero = 0, seglive = 0;

	pthread_mutex_lock(&s->lock);
	for (uint64_t p = 0; p < s->npages; p++) {
		const struct pm_entry *e = &s->map[p];

		if (pm_state(e) == PM_ZERO)
			zero++;
		if (pm_state(e) != PM_STORED)
			continue;
		stored++;
		live += rec_len(pm_plen(e));
		if (e->seg >= s->hdr->nsegs || s->segs[e->seg].state == SEG_FREE ||
		    e->off + rec_len(pm_plen(e)) > s->segs[e->seg].used) {
			pthread_mutex_unlock(&s->lock);
			printf("#   page %llu points outside a live segment\n", (unsigned long long)p);
			return 0;
		}
	}
	for (uint32_t i = 0; i < s->hdr->nsegs; i++)
		if (s->segs[i].state != SEG_FREE)
			seglive += s->segs[i].live;
	pthread_mutex_unlock(&s->lock);
	if (live == s->hdr->bytes_stored && stored == s->hdr->pages_stored &&
	    zero == s->hdr->zero_pages && seglive == live)
		return 1;
	printf("#   map: %llu pages %llu bytes %llu zero; store: %llu %llu %llu; segments %llu\n",
	       (unsigned long long)stored, (unsigned long long)live, (unsigned long long)zero,
	       (unsigned long long)s->hdr->pages_stored, (unsigned long long)s->hdr->bytes_stored,
	       (unsigned long long)s->hdr->zero_pages, (unsigned long long)seglive);
	return 0;
}

static int test_sustained_overwrite(void)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store_stats st;
	struct store *s;
	unsigned seed = 7;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	CHECK(s);
	for (uint32_t round = 1; round <= 30; round++) {
		for (int k = 0; k < 300; k++) {
			uint64_t p = (uint64_t)rand_r(&seed) % NPAGES;

			CHECK(write_page(s, k % 2, p, round * 1000 + (uint32_t)k, buf) == 0);
			gen_of[p] = round * 1000 + (uint32_t)k;
		}
		store_maintain(s);
		store_get_stats(s, &st);
		CHECK(bounded(s, &st));
	}
	store_get_stats(s, &st);
	printf("# after 9000 overwrites: remote %llu bytes for %llu live x %d replicas (%.2fx)\n",
	       (unsigned long long)st.bytes_remote, (unsigned long long)st.bytes_stored,
	       st.replicas, (double)st.bytes_remote / ((double)st.bytes_stored * st.replicas));
	CHECK(st.cleaned_segments > 0);
	CHECK(FIX_BAD_COPIES(st) == 0);
	CHECK(consistent(s));
	CHECK(verify_all(s, 0) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* A store with one queue per NBD worker (64 here) still cleans only
 * when dead bytes pass the slack, not whenever a segment has some. */
static int test_many_queues_clean_only_under_pressure(void)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store_stats st;
	struct store *s;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	c.queues = 64;
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < NPAGES; p++) {
		CHECK(write_page(s, (int)(p % 64), p, 1, buf) == 0);
		gen_of[p] = 1;
	}
	/* An eighth of the pages again: dead bytes are well under a quarter
	 * of the live ones, yet most segments hold some. */
	for (uint64_t p = 0; p < NPAGES; p += 8) {
		CHECK(write_page(s, 0, p, 2, buf) == 0);
		gen_of[p] = 2;
	}
	for (int i = 0; i < 4; i++)
		store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.cleaned_segments == 0);
	/* Half of them again: now past the slack, and cleaned. */
	for (uint64_t p = 1; p < NPAGES; p += 2) {
		CHECK(write_page(s, 1, p, 3, buf) == 0);
		gen_of[p] = 3;
	}
	for (int i = 0; i < 8; i++)
		store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.cleaned_segments > 0);
	CHECK(consistent(s));
	CHECK(verify_all(s, 2) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

struct writer {
	struct store *s;
	int q;
	uint64_t first;
	int rounds;
	int rc;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint8_t buf[STORE_PAGE];
	unsigned seed = (unsigned)w->q + 1;

	for (int r = 1; r <= w->rounds && !w->rc; r++)
		for (int k = 0; k < 64 && !w->rc; k++) {
			uint64_t p = w->first + (uint64_t)rand_r(&seed) % (NPAGES / 2);
			uint32_t g = (uint32_t)(r * 100 + k);

			if (write_page(w->s, w->q, p, g, buf) < 0)
				w->rc = -1;
			gen_of[p] = g;
		}
	return NULL;
}

static int test_background_cleaner_with_writers(void)
{
	struct store_config c;
	struct store_stats st;
	struct writer w[2];
	pthread_t t[2];
	struct store *s;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	c.no_background = 0;
	s = fix_open(&c);
	CHECK(s);
	for (int i = 0; i < 2; i++) {
		w[i] = (struct writer){ .s = s, .q = i, .first = (uint64_t)i * (NPAGES / 2),
					.rounds = 60 };
		CHECK(pthread_create(&t[i], NULL, writer_main, &w[i]) == 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	store_get_stats(s, &st);
	if (w[0].rc || w[1].rc) {
		printf("#   segments %llu cleaned %llu live %llu\n", (unsigned long long)st.segments,
		       (unsigned long long)st.cleaned_segments, (unsigned long long)st.bytes_stored);
		store_close(s);
		return 1;
	}
	/* Reads race the cleaner too. */
	CHECK(verify_all(s, 1) == 0);
	store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.cleaned_segments > 0);
	CHECK(bounded(s, &st));
	CHECK(consistent(s));
	CHECK(verify_all(s, 0) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_discard_all_returns_memory(void)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store_stats st;
	struct fault_stats fs;
	struct store *s;

	fault_reset();
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < NPAGES; p++)
		CHECK(write_page(s, 0, p, 1, buf) == 0);
	CHECK(store_discard(s, 0, 0, NPAGES * STORE_PAGE) == 0);
	store_maintain(s);
	store_get_stats(s, &st);
	CHECK(st.bytes_stored == 0 && st.pages_stored == 0);
	/* Only the still-open segment of queue 0 is left, on R servers. */
	CHECK(st.segments <= 1);
	fix_servers_total(3, &fs);
	CHECK(fs.segments == st.segments * 2);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_cleaner_keeps_segment_it_cannot_move(void)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store_stats st, st2;
	struct store *s;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	CHECK(s);
	for (int round = 1; round <= 4; round++)
		for (uint64_t p = 0; p < NPAGES; p += (uint64_t)round) {
			CHECK(write_page(s, 0, p, (uint32_t)round, buf) == 0);
			gen_of[p] = (uint32_t)round;
		}
	store_get_stats(s, &st);
	/* No server gives a segment: the cleaner cannot move anything. */
	for (int i = 0; i < 3; i++)
		fault_set_nospc((uint16_t)(FIX_PORT0 + i), 1);
	store_maintain(s);
	store_get_stats(s, &st2);
	CHECK(verify_all(s, 1) == 0);
	CHECK(st2.bytes_stored == st.bytes_stored);
	for (int i = 0; i < 3; i++)
		fault_set_nospc((uint16_t)(FIX_PORT0 + i), 0);
	store_close(s);
	fault_reset();
	return 0;
}

struct racer {
	struct store *s;
	int q;
	int rc;
};

/* Two queues write, zero and discard the same 32 pages. */
static void *racer_main(void *arg)
{
	struct racer *r = arg;
	uint8_t buf[4 * STORE_PAGE];
	unsigned seed = (unsigned)r->q * 77 + 1;

	for (int k = 0; k < 1500 && !r->rc; k++) {
		uint64_t p = (uint64_t)rand_r(&seed) % 29;
		int what = rand_r(&seed) % 8;

		for (int i = 0; i < 4; i++)
			fix_fill(buf + i * STORE_PAGE, p + (uint64_t)i, (uint32_t)k, what == 0 ? 0 : 2);
		if (what == 1)
			r->rc = store_discard(r->s, r->q, p * STORE_PAGE, 2 * STORE_PAGE);
		else
			r->rc = store_write(r->s, r->q, p * STORE_PAGE, 4 * STORE_PAGE, buf);
	}
	return NULL;
}

static int test_racing_writers_keep_accounting(void)
{
	uint8_t got[STORE_PAGE];
	struct store_config c;
	struct racer r[3];
	pthread_t t[3];
	struct store *s;

	fault_reset();
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	c.queues = 3;
	c.no_background = 0;
	s = fix_open(&c);
	CHECK(s);
	for (int i = 0; i < 3; i++) {
		r[i] = (struct racer){ .s = s, .q = i };
		CHECK(pthread_create(&t[i], NULL, racer_main, &r[i]) == 0);
	}
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 3; i++)
		CHECK(r[i].rc == 0);
	store_maintain(s);
	CHECK(consistent(s));
	/* Every page holds some complete write of its own (never a torn or
	 * misplaced one): record checks would fail the read otherwise. */
	for (uint64_t p = 0; p < 32; p++) {
		uint64_t self;

		CHECK(store_read(s, 0, p * STORE_PAGE, STORE_PAGE, got) == 0);
		memcpy(&self, got, sizeof(self));
		CHECK(self == p || self == 0);
	}
	store_close(s);
	fault_reset();
	return 0;
}

static int test_cleaner_reads_around_a_bad_copy(void)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store_stats st;
	struct store *s;
	uint32_t victim = SEG_NONE;
	uint64_t bad_id = 0;
	uint16_t bad_port = 0;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < NPAGES; p++) {
		CHECK(write_page(s, 0, p, 1, buf) == 0);
		gen_of[p] = 1;
	}
	/* Overwrite every other page: old segments become half dead. */
	for (uint64_t p = 0; p < NPAGES; p += 2) {
		CHECK(write_page(s, 0, p, 2, buf) == 0);
		gen_of[p] = 2;
	}
	/* Damage a live record in the first copy of a sealed segment. */
	for (uint32_t i = 0; i < s->hdr->nsegs && victim == SEG_NONE; i++)
		if (s->segs[i].state == SEG_SEALED && s->segs[i].live)
			victim = i;
	CHECK(victim != SEG_NONE);
	for (uint64_t p = 1; p < NPAGES; p += 2)
		if (s->map[p].seg == victim) {
			const struct seg_rep *r = &s->segs[victim].rep[0];

			bad_port = (uint16_t)(FIX_PORT0 + r->server);
			bad_id = r->remote_id;
			CHECK(fault_corrupt(bad_port, bad_id, s->map[p].off + REC_HDR_SIZE + 7) == 0);
			break;
		}
	for (int i = 0; i < 4; i++)
		store_maintain(s);
	store_get_stats(s, &st);
	/* The cleaner noticed, used the good copy, and freed the segment
	 * (the damaged remote copy is gone from its server). */
	CHECK(bad_id != 0);
	CHECK(FIX_BAD_COPIES(st) >= 1);
	CHECK(fault_corrupt(bad_port, bad_id, 0) == -ENOENT);
	CHECK(consistent(s));
	CHECK(verify_all(s, 1) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_append_missing_every_copy(void)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store_stats st;
	struct store *s;
	const struct seg *g;
	uint64_t id0;
	uint32_t idx;
	uint16_t port0;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 8; p++) {
		CHECK(write_page(s, 0, p, 1, buf) == 0);
		gen_of[p] = 1;
	}
	idx = s->streams[0].open_seg;
	CHECK(idx != SEG_NONE);
	g = &s->segs[idx];
	port0 = (uint16_t)(FIX_PORT0 + g->rep[0].server);
	id0 = g->rep[0].remote_id;
	/* The next append fails on both copies of the open segment. */
	fault_fail_next(port0, 1, -EIO);
	fault_fail_next((uint16_t)(FIX_PORT0 + g->rep[1].server), 1, -EIO);
	CHECK(write_page(s, 0, 8, 1, buf) == 0);   /* retried elsewhere */
	gen_of[8] = 1;
	/* Both copies still hold what was acknowledged before. */
	CHECK(seg_live_replicas(s, g) == 2);
	CHECK(g->state == SEG_SEALED);
	CHECK(verify_all(s, 0) == 0);
	/* Make the segment (with its hole) a cleaning victim. */
	for (int round = 2; round < 12; round++) {
		for (uint64_t p = 0; p < NPAGES; p += (p < 8 ? 2 : 1)) {
			CHECK(write_page(s, 1, p, (uint32_t)round, buf) == 0);
			gen_of[p] = (uint32_t)round;
		}
		store_maintain(s);
	}
	/* Clean every segment worth it (as when servers run out of room). */
	pthread_mutex_lock(&s->lock);
	s->clean_urgent = 1;
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < 4; i++)
		store_maintain(s);
	store_get_stats(s, &st);
	CHECK(fault_corrupt(port0, id0, 0) == -ENOENT);   /* cleaned and freed */
	CHECK(FIX_BAD_COPIES(st) == 0);                   /* a hole is not damage */
	CHECK(consistent(s));
	CHECK(verify_all(s, 0) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* Pages 0..15 text (small records, side by side in the first segment),
 * the rest random, then a and every other random page overwritten, so
 * the first segment is a victim with a dead record at a followed by the
 * live record of a + 1.  Returns the store; *v, *a_off, *a_plen and
 * *b_plen describe the first segment and the two records. */
static struct store *dead_then_live(uint64_t a, uint32_t *v, uint32_t *a_off,
				    uint32_t *a_plen, uint32_t *b_plen)
{
	static uint8_t buf[STORE_PAGE];
	struct store_config c;
	struct store *s;

	fault_reset();
	memset(gen_of, 0, sizeof(gen_of));
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	if (!s)
		return NULL;
	for (uint64_t p = 0; p < NPAGES; p++) {
		fix_fill(buf, p, 1, p < 16 ? 1 : 2);
		if (store_write(s, 0, p * STORE_PAGE, STORE_PAGE, buf) < 0)
			goto fail;
		gen_of[p] = 1;
	}
	*v = s->map[a].seg;
	*a_off = s->map[a].off;
	*a_plen = pm_plen(&s->map[a]);
	*b_plen = pm_plen(&s->map[a + 1]);
	if (s->map[a + 1].seg != *v || s->map[a + 1].off != *a_off + rec_len(*a_plen))
		goto fail;
	for (uint64_t p = a; p < NPAGES; p += (p < 16 ? 16 : 2)) {
		if (write_page(s, 1, p, 2, buf) < 0)
			goto fail;
		gen_of[p] = 2;
	}
	if (s->segs[*v].state != SEG_SEALED || s->map[a].seg == *v)
		goto fail;
	return s;
fail:
	store_close(s);
	return NULL;
}

/* dead_then_live()'s pages: text first, random once rewritten. */
static int kind_text_first(uint64_t p)
{
	return p < 16 && gen_of[p] == 1 ? 1 : 2;
}

static int clean_everything(struct store *s)
{
	pthread_mutex_lock(&s->lock);
	s->clean_urgent = 1;
	pthread_mutex_unlock(&s->lock);
	for (int i = 0; i < 6; i++)
		store_maintain(s);
	return 0;
}

static int test_dead_records_are_not_opened(void)
{
	struct store_stats st;
	uint32_t v, a_off, a_plen, b_plen;
	struct store *s = dead_then_live(4, &v, &a_off, &a_plen, &b_plen);
	uint16_t port;
	uint64_t id;

	CHECK(s);
	port = (uint16_t)(FIX_PORT0 + s->segs[v].rep[0].server);
	id = s->segs[v].rep[0].remote_id;
	/* Damage inside the dead record only: the cleaner has no use for
	 * it, so it is no reason to distrust the copy or open anything. */
	CHECK(fault_corrupt(port, id, a_off + REC_HDR_SIZE + 3) == 0);
	clean_everything(s);
	store_get_stats(s, &st);
	CHECK(fault_corrupt(port, id, 0) == -ENOENT);     /* cleaned and freed */
	CHECK(FIX_BAD_COPIES(st) == 0);
	CHECK(consistent(s));
	CHECK(verify_pages(s, 0, kind_text_first) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_forged_dead_header_cannot_hide_a_live_record(void)
{
	uint32_t v, a_off, a_plen, b_plen, forged;
	struct store *s = dead_then_live(6, &v, &a_off, &a_plen, &b_plen);

	CHECK(s);
	/* A donor rewrites the dead record's length on every copy so the
	 * walk steps over the live record behind it. */
	forged = a_plen + rec_len(b_plen);
	CHECK(forged <= REC_MAX_PLEN + REC_TAG_SIZE);
	for (int r = 0; r < 2; r++) {
		uint16_t port = (uint16_t)(FIX_PORT0 + s->segs[v].rep[r].server);
		uint64_t id = s->segs[v].rep[r].remote_id;

		CHECK(fault_poke(port, id, a_off + 4, (uint8_t)forged) == 0);
		CHECK(fault_poke(port, id, a_off + 5, (uint8_t)(forged >> 8)) == 0);
	}
	clean_everything(s);
	/* The skipped record was moved from the map, verified on its own,
	 * and the segment went back. */
	CHECK(s->map[7].seg != v);
	CHECK(s->segs[v].state == SEG_FREE);
	CHECK(consistent(s));
	CHECK(verify_pages(s, 0, kind_text_first) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static const struct tap_case cases[] = {
	{ "the cleaner opens the records it moves, not the dead ones", test_dead_records_are_not_opened },
	{ "a forged dead record's length cannot hide a live record from the cleaner", test_forged_dead_header_cannot_hide_a_live_record },
	{ "an append that misses every copy keeps the segment; the cleaner handles the hole", test_append_missing_every_copy },
	{ "cleaner reads around a corrupted copy and loses nothing", test_cleaner_reads_around_a_bad_copy },
	{ "racing writers, zeroes and discards on the same pages keep the accounting exact", test_racing_writers_keep_accounting },
	{ "sustained random overwrite: remote bytes stay bounded, data intact", test_sustained_overwrite },
	{ "a store with many queues cleans only past the slack", test_many_queues_clean_only_under_pressure },
	{ "background cleaner racing two writers and readers", test_background_cleaner_with_writers },
	{ "discarding everything returns the segments", test_discard_all_returns_memory },
	{ "cleaner without a place to move keeps the data", test_cleaner_keeps_segment_it_cannot_move },
};

int main(void)
{
	fix_quiet();
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
