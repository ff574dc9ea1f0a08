/* test_entropy.c — the incompressibility guess against what zstd
 * actually does with the same pages, and the codec using it. */
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "entropy.h"
#include "tap.h"

#define PAGE 4096
#define RAW_CAP (PAGE - PAGE / 32)     /* the store's "worth it" bound */

static uint8_t page[PAGE], out[PAGE + 256];
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint8_t next_byte(void)
{
	rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
	return (uint8_t)(rng >> 24);
}

/* pct % of the bytes random, the rest from a 16-letter alphabet. */
static void fill_mix(unsigned pct)
{
	for (unsigned i = 0; i < PAGE; i++) {
		uint8_t r = next_byte();
		page[i] = (unsigned)(next_byte() % 100) < pct ? r : (uint8_t)('a' + (r & 15));
	}
}

static int test_random_is_skipped_by_the_codec(void)
{
	struct fm_codec c;

	CHECK(fm_codec_init(&c, FM_CODEC_ZSTD, 3) == 0);
	for (int t = 0; t < 200; t++) {
		fill_mix(100);
		CHECK(fm_entropy_estimate(page, PAGE) >= FM_ENTROPY_SKIP);
		CHECK(fm_codec_compress(&c, page, PAGE, out, RAW_CAP) == 0);
	}
	CHECK(c.skipped == 200);
	fm_codec_fini(&c);
	return 0;
}

static int test_compressible_mixes_are_compressed(void)
{
	/* Every mix that zstd can shrink by 1/32 must reach zstd; the
	 * estimate may only skip pages zstd would store raw anyway. */
	struct fm_codec c;
	unsigned reached = 0, skipped_but_shrinks = 0;

	CHECK(fm_codec_init(&c, FM_CODEC_ZSTD, 3) == 0);
	for (unsigned pct = 0; pct <= 100; pct += 2) {
		for (int t = 0; t < 40; t++) {
			unsigned long before = c.skipped;

			fill_mix(pct);
			ssize_t n = fm_codec_compress(&c, page, PAGE, out, RAW_CAP);
			if (c.skipped != before) {
				struct fm_codec plain;

				/* What zstd would have done: cap >= len never skips. */
				CHECK(fm_codec_init(&plain, FM_CODEC_ZSTD, 3) == 0);
				ssize_t m = fm_codec_compress(&plain, page, PAGE, out, sizeof(out));
				fm_codec_fini(&plain);
				CHECK(m > 0);
				skipped_but_shrinks += m < RAW_CAP;
			} else {
				reached++;
				CHECK(n >= 0);
			}
		}
	}
	printf("# %u pages reached zstd, %lu skipped, %u of those would have shrunk\n",
	       reached, c.skipped, skipped_but_shrinks);
	CHECK(skipped_but_shrinks == 0);
	CHECK(c.skipped > 0 && reached > 0);
	fm_codec_fini(&c);
	return 0;
}

static int test_structured_pages_estimate_low(void)
{
	/* Zeros, text, and random bytes with a quarter of the page zero (it
	 * saves about 1 KiB) all stay well under the bound. */
	memset(page, 0, PAGE);
	CHECK(fm_entropy_estimate(page, PAGE) == 0);
	for (unsigned i = 0; i < PAGE; i++)
		page[i] = (uint8_t)"key=value; status=ok\n"[i % 21];
	CHECK(fm_entropy_estimate(page, PAGE) < 5 * 256);
	fill_mix(100);
	memset(page, 0, PAGE / 4);
	CHECK(fm_entropy_estimate(page, PAGE) < FM_ENTROPY_SKIP);
	CHECK(!fm_entropy_incompressible(page, PAGE));
	return 0;
}

static int test_short_or_roomy_calls_never_skip(void)
{
	struct fm_codec c;

	CHECK(fm_codec_init(&c, FM_CODEC_ZSTD, 3) == 0);
	fill_mix(100);
	CHECK(!fm_entropy_incompressible(page, 1023));
	/* A caller that leaves room for the whole input gets zstd's output
	 * (a raw block), not the shortcut. */
	CHECK(fm_codec_compress(&c, page, PAGE, out, sizeof(out)) > PAGE);
	CHECK(c.skipped == 0);
	fm_codec_fini(&c);
	return 0;
}

static const struct tap_case cases[] = {
	{ "random pages skip the compressor", test_random_is_skipped_by_the_codec },
	{ "no page zstd could shrink is skipped", test_compressible_mixes_are_compressed },
	{ "zeros, text and part-random pages estimate low", test_structured_pages_estimate_low },
	{ "short buffers and roomy calls never skip", test_short_or_roomy_calls_never_skip },
};

TAP_MAIN(cases)
