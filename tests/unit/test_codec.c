/* test_codec.c — per-page codecs: round trips, raw fallback, damage. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "codec.h"
#include "tap.h"

static uint8_t page[4096], out[4096 + 256], back[4096];

static void fill(int kind)
{
	uint64_t x = 88172645463325252ull;

	for (unsigned i = 0; i < sizeof(page); i++) {
		x ^= x << 13; x ^= x >> 7; x ^= x << 17;
		page[i] = kind == 0 ? 0 : kind == 1 ? (uint8_t)("swap me out "[i % 12]) : (uint8_t)x;
	}
}

static int round_trip(enum fm_codec_algo algo, int level)
{
	struct fm_codec c;

	if (fm_codec_init(&c, algo, level) < 0)
		return 1;
	for (int kind = 0; kind < 3; kind++) {
		fill(kind);
		ssize_t n = fm_codec_compress(&c, page, sizeof(page), out, 3968);
		if (kind < 2 && n <= 0)
			goto fail;
		if (kind == 2 && n != 0)      /* random data does not shrink */
			goto fail;
		if (n > 0) {
			memset(back, 0x55, sizeof(back));
			if (fm_codec_decompress(&c, algo, out, (size_t)n, back, sizeof(back)) ||
			    memcmp(back, page, sizeof(page)))
				goto fail;
		}
	}
	fm_codec_fini(&c);
	return 0;
fail:
	fm_codec_fini(&c);
	return 1;
}

static int test_zstd(void) { CHECK(round_trip(FM_CODEC_ZSTD, 0) == 0); CHECK(round_trip(FM_CODEC_ZSTD, 19) == 0); return 0; }
static int test_zstd_negative(void) { CHECK(round_trip(FM_CODEC_ZSTD, -5) == 0); return 0; }
static int test_lz4(void) { CHECK(round_trip(FM_CODEC_LZ4, 0) == 0); return 0; }

static int test_none(void)
{
	struct fm_codec c;

	CHECK(fm_codec_init(&c, FM_CODEC_NONE, 0) == 0);
	CHECK(fm_codec_compress(&c, page, sizeof(page), out, sizeof(out)) == -EINVAL);
	fill(1);
	CHECK(fm_codec_decompress(&c, FM_CODEC_NONE, page, sizeof(page), back, sizeof(back)) == 0);
	CHECK(memcmp(page, back, sizeof(page)) == 0);
	CHECK(fm_codec_decompress(&c, FM_CODEC_NONE, page, 100, back, sizeof(back)) == -EBADMSG);
	fm_codec_fini(&c);
	return 0;
}

static int test_cross_algo_decode(void)
{
	/* A store switched from lz4 to zstd still reads its old pages. */
	struct fm_codec a, b;
	ssize_t n;

	CHECK(fm_codec_init(&a, FM_CODEC_LZ4, 0) == 0);
	CHECK(fm_codec_init(&b, FM_CODEC_ZSTD, 3) == 0);
	fill(1);
	n = fm_codec_compress(&a, page, sizeof(page), out, 3968);
	CHECK(n > 0);
	CHECK(fm_codec_decompress(&b, FM_CODEC_LZ4, out, (size_t)n, back, sizeof(back)) == 0);
	CHECK(memcmp(page, back, sizeof(page)) == 0);
	fm_codec_fini(&a);
	fm_codec_fini(&b);
	return 0;
}

static int test_damage_rejected(void)
{
	for (int algo = FM_CODEC_ZSTD; algo <= FM_CODEC_LZ4; algo++) {
		struct fm_codec c;
		ssize_t n;

		CHECK(fm_codec_init(&c, (enum fm_codec_algo)algo, 0) == 0);
		fill(1);
		n = fm_codec_compress(&c, page, sizeof(page), out, 3968);
		CHECK(n > 4);
		/* Truncated input and a short output never "succeed". */
		CHECK(fm_codec_decompress(&c, (enum fm_codec_algo)algo, out, (size_t)n - 3, back,
					  sizeof(back)) == -EBADMSG);
		CHECK(fm_codec_decompress(&c, (enum fm_codec_algo)algo, out, (size_t)n, back,
					  sizeof(back) - 1) == -EBADMSG);
		/* Garbage in. */
		memset(out, 0xff, 64);
		CHECK(fm_codec_decompress(&c, (enum fm_codec_algo)algo, out, 64, back,
					  sizeof(back)) == -EBADMSG);
		fm_codec_fini(&c);
	}
	return 0;
}

static int test_bad_level_and_names(void)
{
	struct fm_codec c;
	enum fm_codec_algo a;

	CHECK(fm_codec_init(&c, FM_CODEC_ZSTD, 1000) == -EINVAL);
	CHECK(fm_codec_init(&c, (enum fm_codec_algo)9, 0) == -EINVAL);
	CHECK(fm_codec_parse("zstd", &a) == 0 && a == FM_CODEC_ZSTD);
	CHECK(fm_codec_parse("lz4", &a) == 0 && a == FM_CODEC_LZ4);
	CHECK(fm_codec_parse("none", &a) == 0 && a == FM_CODEC_NONE);
	CHECK(fm_codec_parse("gzip", &a) == -EINVAL);
	return 0;
}

static const struct tap_case cases[] = {
	{ "zstd round trips (default and level 19); random stays raw", test_zstd },
	{ "zstd negative level round trips", test_zstd_negative },
	{ "lz4 round trips; random stays raw", test_lz4 },
	{ "none copies only exact pages", test_none },
	{ "any codec decodes every algorithm", test_cross_algo_decode },
	{ "damaged or truncated payloads are rejected", test_damage_rejected },
	{ "bad levels and names are rejected", test_bad_level_and_names },
};

TAP_MAIN(cases)
