/* test_store.c — store round trips, overwrite and discard accounting,
 * metadata size, state file attach; on in-process fault servers. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store_fixture.h"
#include "ublk-farmem/store/internal.h"
#include "tap.h"

static uint8_t wbuf[64 << 10], rbuf[64 << 10];

static int write_pattern(struct store *s, int q, uint64_t first, unsigned n,
			 uint32_t gen, int kind)
{
	for (unsigned i = 0; i < n; i++)
		fix_fill(wbuf + i * STORE_PAGE, first + i, gen, kind < 0 ? (int)((first + i) % 3) : kind);
	return store_write(s, q, first * STORE_PAGE, n * STORE_PAGE, wbuf);
}

static int read_check(struct store *s, int q, uint64_t first, unsigned n,
		      uint32_t gen, int kind)
{
	uint8_t want[STORE_PAGE];

	if (store_read(s, q, first * STORE_PAGE, n * STORE_PAGE, rbuf) < 0)
		return -1;
	for (unsigned i = 0; i < n; i++) {
		fix_fill(want, first + i, gen, kind == -2 ? 1 + (int)((first + i) % 2) :
			 kind < 0 ? (int)((first + i) % 3) : kind);
		if (memcmp(want, rbuf + i * STORE_PAGE, STORE_PAGE)) {
			printf("#   page %llu differs\n", (unsigned long long)(first + i));
			return -1;
		}
	}
	return 0;
}

static int test_write_read(void)
{
	struct store_config c;
	struct store_stats st;
	struct store *s;

	fault_reset();
	fix_config(&c, 3, 2, 4u << 20);
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 1024; p += 16)
		CHECK(write_pattern(s, (int)(p / 16 % 2), p, 16, 1, -1) == 0);
	for (uint64_t p = 0; p < 1024; p += 16)
		CHECK(read_check(s, (int)(p / 16 % 2), p, 16, 1, -1) == 0);
	/* Single pages and unaligned request boundaries read back too. */
	for (uint64_t p = 5; p < 1024; p += 37)
		CHECK(read_check(s, 0, p, 3 > 1024 - p ? 1 : 3, 1, -1) == 0);
	store_get_stats(s, &st);
	CHECK(st.zero_pages == 342);
	CHECK(st.pages_stored == 1024 - 342);
	CHECK(st.segments > 0);
	CHECK(st.degraded_segments == 0);
	CHECK(FIX_BAD_COPIES(st) == 0);
	/* Text compresses: well below the raw size; random does not. */
	CHECK(st.bytes_stored < st.pages_stored * STORE_PAGE);
	/* Every random page (p % 3 == 2), and only those, skipped zstd. */
	CHECK(st.incompressible_pages == 341);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_every_codec(void)
{
	static const struct { enum store_compress c; int level; } modes[] = {
		{ STORE_COMPRESS_NONE, 0 }, { STORE_COMPRESS_LZ4, 0 }, { STORE_COMPRESS_LZ4, 8 },
		{ STORE_COMPRESS_ZSTD, -5 }, { STORE_COMPRESS_ZSTD, 0 }, { STORE_COMPRESS_ZSTD, 9 },
	};
	struct store_config c;
	struct store_stats st;
	struct store *s;

	for (unsigned m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		fault_reset();
		fix_config(&c, 2, 2, 1u << 20);
		c.compress = modes[m].c;
		c.level = modes[m].level;
		s = fix_open(&c);
		CHECK(s);
		for (uint64_t p = 0; p < 256; p += 16)
			CHECK(write_pattern(s, 0, p, 16, 1, -1) == 0);
		for (uint64_t p = 0; p < 256; p += 16)
			CHECK(read_check(s, 1, p, 16, 1, -1) == 0);
		store_get_stats(s, &st);
		/* Text pages shrink unless compression is off. */
		if (modes[m].c == STORE_COMPRESS_NONE)
			CHECK(st.bytes_stored == st.pages_stored * FIX_RAW_REC);
		else
			CHECK(st.bytes_stored < st.pages_stored * FIX_RAW_REC * 3 / 4);
		store_close(s);
	}
	/* A level the codec does not have is refused at open. */
	fix_config(&c, 2, 2, 1u << 20);
	c.level = 99;
	{
		char err[256] = "";
		CHECK(store_open(&c, &s, err, sizeof(err)) == -EINVAL);
		CHECK(strstr(err, "zstd level 99"));
	}
	fault_reset();
	return 0;
}

static int test_unwritten_reads_zero(void)
{
	struct store_config c;
	struct store *s;

	fault_reset();
	fix_config(&c, 2, 0, 1u << 20);
	s = fix_open(&c);
	CHECK(s);
	memset(rbuf, 0xaa, sizeof(rbuf));
	CHECK(store_read(s, 0, 0, sizeof(rbuf), rbuf) == 0);
	for (size_t i = 0; i < sizeof(rbuf); i++)
		CHECK(rbuf[i] == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_bad_requests(void)
{
	struct store_config c;
	struct store *s;

	fault_reset();
	fix_config(&c, 2, 2, 1u << 20);
	s = fix_open(&c);
	CHECK(s);
	CHECK(store_write(s, 0, 100, STORE_PAGE, wbuf) == -EINVAL);
	CHECK(store_write(s, 0, 0, 100, wbuf) == -EINVAL);
	CHECK(store_write(s, 0, 1u << 20, STORE_PAGE, wbuf) == -EINVAL);
	CHECK(store_write(s, 0, 0, (64u << 10) + STORE_PAGE, wbuf) == -EINVAL);
	CHECK(store_write(s, 2, 0, STORE_PAGE, wbuf) == -EINVAL);
	CHECK(store_read(s, -1, 0, STORE_PAGE, rbuf) == -EINVAL);
	CHECK(store_discard(s, 0, 0, (1u << 20) + STORE_PAGE) == -EINVAL);
	CHECK(store_flush(s, 0) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_open_rejects(void)
{
	struct store_config c;
	struct store *s = NULL;
	char err[256];

	fault_reset();
	fix_config(&c, 2, 3, 1u << 20);
	CHECK(store_open(&c, &s, err, sizeof(err)) == -EINVAL && !s);
	fix_config(&c, 2, 2, 1000);
	CHECK(store_open(&c, &s, err, sizeof(err)) == -EINVAL);
	fix_config(&c, 2, 2, 1u << 20);
	fault_set_mode(FIX_PORT0 + 1, FAULT_DOWN);
	CHECK(store_open(&c, &s, err, sizeof(err)) == -EHOSTUNREACH);
	CHECK(strstr(err, "servers answered"));
	fault_reset();
	/* A server that hands out smaller segments is named at open. */
	fix_config(&c, 2, 2, 1u << 20);
	fault_set_segment_max(FIX_PORT0 + 1, 32u << 10);
	CHECK(store_open(&c, &s, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "at most 32768 bytes"));
	fault_reset();
	return 0;
}

static int test_overwrite_discard_accounting(void)
{
	struct store_config c;
	struct store_stats st;
	struct store *s;

	fault_reset();
	fix_config(&c, 3, 2, 2u << 20);
	c.compress = STORE_COMPRESS_NONE;
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 512; p += 16)
		CHECK(write_pattern(s, 0, p, 16, 1, 2) == 0);
	store_get_stats(s, &st);
	CHECK(st.pages_stored == 512);
	CHECK(st.bytes_stored == 512ull * FIX_RAW_REC);
	/* Overwrite half: live bytes unchanged, new data read back. */
	for (uint64_t p = 0; p < 256; p += 16)
		CHECK(write_pattern(s, 1, p, 16, 2, 2) == 0);
	store_get_stats(s, &st);
	CHECK(st.pages_stored == 512);
	CHECK(st.bytes_stored == 512ull * FIX_RAW_REC);
	CHECK(read_check(s, 0, 0, 16, 2, 2) == 0);
	CHECK(read_check(s, 0, 256, 16, 1, 2) == 0);
	/* Discard a quarter: those pages read as zero and cost nothing. */
	CHECK(store_discard(s, 0, 128 * STORE_PAGE, 128 * STORE_PAGE) == 0);
	store_get_stats(s, &st);
	CHECK(st.pages_stored == 384);
	CHECK(st.bytes_stored == 384ull * FIX_RAW_REC);
	CHECK(read_check(s, 1, 128, 16, 0, 0) == 0);
	/* Writing zeroes frees too. */
	memset(wbuf, 0, sizeof(wbuf));
	CHECK(store_write(s, 0, 0, 16 * STORE_PAGE, wbuf) == 0);
	store_get_stats(s, &st);
	CHECK(st.pages_stored == 368);
	CHECK(st.zero_pages == 16);
	CHECK(st.discards == 1);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_metadata_per_page(void)
{
	struct store_config c;
	struct store *s;
	uint64_t map_bytes;

	CHECK(sizeof(struct pm_entry) <= 16);
	fault_reset();
	fix_config(&c, 2, 2, 256u << 20);
	c.segment_size = 0;     /* the default 4 MiB */
	s = fix_open(&c);
	CHECK(s);
	map_bytes = s->hdr->total_len - s->hdr->map_off;
	CHECK(map_bytes <= 16 * s->npages + 4096);
	/* Header and segment table add well under a byte per page. */
	CHECK(s->hdr->total_len <= 17 * s->npages);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_attach_state_file(void)
{
	char path[] = "/tmp/farmem-test-state-XXXXXX";
	struct store_config c;
	struct store_stats st;
	struct store *s;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
	fault_reset();
	fix_config(&c, 3, 2, 2u << 20);
	c.state_path = path;
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 256; p += 16)
		CHECK(write_pattern(s, 0, p, 16, 3, -1) == 0);
	/* While it runs, nobody else may attach (or recreate) its state. */
	{
		struct store *other = NULL;
		char err[256];

		c.attach = 1;
		CHECK(store_open(&c, &other, err, sizeof(err)) == -EBUSY && !other);
		CHECK(strstr(err, "in use"));
		c.attach = 0;
		CHECK(store_open(&c, &other, err, sizeof(err)) == -EBUSY && !other);
	}
	CHECK(read_check(s, 0, 0, 16, 3, -1) == 0);
	store_close(s);
	/* A new "daemon" attaches: same data, same accounting. */
	c.attach = 1;
	s = fix_open(&c);
	CHECK(s);
	CHECK(read_check(s, 1, 0, 16, 3, -1) == 0);
	CHECK(read_check(s, 0, 240, 16, 3, -1) == 0);
	store_get_stats(s, &st);
	CHECK(st.pages_stored + st.zero_pages == 256);
	CHECK(write_pattern(s, 1, 0, 16, 4, -1) == 0);
	CHECK(read_check(s, 0, 0, 16, 4, -1) == 0);
	store_close(s);
	/* Another device identity must not attach. */
	c.uuid[0] ^= 1;
	s = NULL;
	{
		char err[256];
		CHECK(store_open(&c, &s, err, sizeof(err)) == -EINVAL);
		CHECK(strstr(err, "uuid"));
	}
	unlink(path);
	fault_reset();
	return 0;
}

/* A daemon killed mid-run leaves open segments and no clean close; the
 * state it left (a copy taken while it ran) still attaches and reads. */
static int test_attach_after_crash(void)
{
	char path[] = "/tmp/farmem-test-state-XXXXXX", copy[64];
	struct store_config c;
	struct store_stats st;
	struct store *s;
	int fd = mkstemp(path);
	char cmd[200];

	CHECK(fd >= 0);
	close(fd);
	snprintf(copy, sizeof(copy), "%s.crash", path);
	fault_reset();
	fix_config(&c, 3, 2, 2u << 20);
	c.state_path = path;
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 256; p += 16)
		CHECK(write_pattern(s, (int)(p / 16 % 2), p, 16, 6, -1) == 0);
	snprintf(cmd, sizeof(cmd), "cp %s %s", path, copy);
	CHECK(system(cmd) == 0);
	CHECK(s->hdr->npages > 0);
	store_close(s);
	c.state_path = copy;
	c.attach = 1;
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 256; p += 16)
		CHECK(read_check(s, 0, p, 16, 6, -1) == 0);
	/* Segments left open by the "dead" daemon are sealed; new writes go
	 * to new segments and the sweep found nothing to free. */
	for (uint32_t i = 0; i < s->hdr->nsegs; i++)
		CHECK(s->segs[i].state == SEG_FREE || s->segs[i].state == SEG_SEALED);
	CHECK(write_pattern(s, 1, 0, 16, 7, -1) == 0);
	CHECK(read_check(s, 0, 0, 16, 7, -1) == 0);
	store_maintain(s);
	CHECK(read_check(s, 0, 16, 16, 6, -1) == 0);
	store_get_stats(s, &st);
	CHECK(st.degraded_segments == 0);
	store_close(s);
	unlink(path);
	unlink(copy);
	fault_reset();
	return 0;
}

static int test_release_frees_everything(void)
{
	struct store_config c;
	struct store *s;
	struct fault_stats fs;

	fault_reset();
	fix_config(&c, 3, 2, 2u << 20);
	s = fix_open(&c);
	CHECK(s);
	for (uint64_t p = 0; p < 512; p += 16)
		CHECK(write_pattern(s, 0, p, 16, 1, 2) == 0);
	fix_servers_total(3, &fs);
	CHECK(fs.segments > 0);
	CHECK(store_release(s) == 0);
	fix_servers_total(3, &fs);
	CHECK(fs.segments == 0);
	CHECK(read_check(s, 0, 0, 16, 0, 0) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

struct qwriter {
	struct store *s;
	int q;
	int rc;
};

static void *qwriter_main(void *arg)
{
	struct qwriter *w = arg;
	uint8_t page[STORE_PAGE];

	for (uint64_t p = (uint64_t)w->q; p < 512 && !w->rc; p += 8) {
		fix_fill(page, p, 5, 1 + (int)(p % 2));
		if (store_write(w->s, w->q, p * STORE_PAGE, STORE_PAGE, page) < 0)
			w->rc = -1;
	}
	return NULL;
}

static int test_queues_share_streams(void)
{
	struct store_config c;
	struct store_stats st;
	struct qwriter w[8];
	pthread_t t[8];
	struct store *s;

	fault_reset();
	fix_config(&c, 3, 2, 2u << 20);
	c.queues = 8;
	c.segment_size = 1u << 20;
	s = fix_open(&c);
	CHECK(s);
	CHECK(s->nstreams == 3);
	for (int i = 0; i < 8; i++) {
		w[i] = (struct qwriter){ .s = s, .q = i };
		CHECK(pthread_create(&t[i], NULL, qwriter_main, &w[i]) == 0);
	}
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < 8; i++)
		CHECK(w[i].rc == 0);
	/* Eight busy queues, yet at most one partly filled segment per
	 * stream: remote memory does not grow with the queue count. */
	store_get_stats(s, &st);
	CHECK(st.segments <= (st.bytes_stored + (1u << 20) - 1) / (1u << 20) + 3);
	CHECK(st.bytes_remote <= 2ull * (st.segments) * (1u << 20));
	for (uint64_t p = 0; p < 512; p += 16)
		CHECK(read_check(s, (int)(p % 8), p, 16, 5, -2) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static const struct tap_case cases[] = {
	{ "eight queues append through three streams, in parallel", test_queues_share_streams },
	{ "write/read of zero, text and random pages, R=2 over 3 servers", test_write_read },
	{ "every codec and level round-trips; text shrinks", test_every_codec },
	{ "unwritten pages read as zero", test_unwritten_reads_zero },
	{ "misaligned and out-of-range requests are -EINVAL", test_bad_requests },
	{ "open rejects bad config and too few servers", test_open_rejects },
	{ "overwrite and discard keep live-byte accounting exact", test_overwrite_discard_accounting },
	{ "page map costs at most 16 bytes per page", test_metadata_per_page },
	{ "state file: restart attaches, other uuid refused", test_attach_state_file },
	{ "state left by a killed daemon attaches and reads back", test_attach_after_crash },
	{ "release frees every remote segment", test_release_frees_everything },
};

int main(void)
{
	fix_quiet();
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
