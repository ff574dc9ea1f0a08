/* codec.c — zstd / lz4 / none behind one per-page interface. */
#include "codec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <zstd.h>

#include "entropy.h"
#include "log.h"

/* Run one page through every context so their internal workspaces are
 * sized now rather than on the first I/O. */
static int codec_warm(struct fm_codec *c)
{
	static const char page[4096];
	char out[4096 + 64], back[4096];
	ssize_t n;

	if (c->algo == FM_CODEC_NONE)
		return 0;
	n = fm_codec_compress(c, page, sizeof(page), out, sizeof(out));
	if (n <= 0)
		return -EINVAL;
	return fm_codec_decompress(c, c->algo, out, (size_t)n, back, sizeof(back));
}

int fm_codec_init(struct fm_codec *c, enum fm_codec_algo algo, int level)
{
	memset(c, 0, sizeof(*c));
	if ((unsigned)algo > FM_CODEC_MAX)
		return -EINVAL;
	c->algo = algo;
	c->level = fm_codec_level(algo, level);
	if (algo == FM_CODEC_ZSTD) {
		if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) {
			log_err("codec: zstd level %d outside [%d, %d]", level,
				ZSTD_minCLevel(), ZSTD_maxCLevel());
			return -EINVAL;
		}
		c->zc = ZSTD_createCCtx();
		if (!c->zc)
			goto nomem;
	}
	c->zd = ZSTD_createDCtx();
	c->lz4_state = malloc((size_t)LZ4_sizeofState());
	if (!c->zd || !c->lz4_state)
		goto nomem;
	if (codec_warm(c) < 0) {
		fm_codec_fini(c);
		return -EINVAL;
	}
	return 0;
nomem:
	fm_codec_fini(c);
	return -ENOMEM;
}

void fm_codec_fini(struct fm_codec *c)
{
	ZSTD_freeCCtx(c->zc);
	ZSTD_freeDCtx(c->zd);
	free(c->lz4_state);
	memset(c, 0, sizeof(*c));
}

ssize_t fm_codec_compress(struct fm_codec *c, const void *src, size_t len,
			  void *dst, size_t cap)
{
	size_t zr;
	int n;

	/* Only a caller that needs a real saving (cap < len) is spared the
	 * compressor: the raw page is what it would store anyway. */
	if (cap < len && c->algo != FM_CODEC_NONE && fm_entropy_incompressible(src, len)) {
		__atomic_store_n(&c->skipped, c->skipped + 1, __ATOMIC_RELAXED);
		return 0;
	}
	switch (c->algo) {
	case FM_CODEC_ZSTD:
		zr = ZSTD_compressCCtx(c->zc, dst, cap, src, len, c->level);
		/* dstSize_tooSmall is the expected "does not shrink" case. */
		if (ZSTD_isError(zr))
			return 0;
		return (ssize_t)zr;
	case FM_CODEC_LZ4:
		n = LZ4_compress_fast_extState(c->lz4_state, src, dst, (int)len,
					       (int)cap, c->level);
		return n > 0 ? n : 0;
	default:
		return -EINVAL;
	}
}

int fm_codec_decompress(struct fm_codec *c, enum fm_codec_algo algo,
			const void *src, size_t len, void *dst, size_t dstlen)
{
	size_t zr;
	int n;

	switch (algo) {
	case FM_CODEC_NONE:
		if (len != dstlen)
			return -EBADMSG;
		memcpy(dst, src, len);
		return 0;
	case FM_CODEC_ZSTD:
		zr = ZSTD_decompressDCtx(c->zd, dst, dstlen, src, len);
		return !ZSTD_isError(zr) && zr == dstlen ? 0 : -EBADMSG;
	case FM_CODEC_LZ4:
		n = LZ4_decompress_safe(src, dst, (int)len, (int)dstlen);
		return n >= 0 && (size_t)n == dstlen ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}

int fm_codec_level(enum fm_codec_algo algo, int level)
{
	switch (algo) {
	case FM_CODEC_ZSTD: return level ? level : FM_CODEC_ZSTD_PAGE_LEVEL;
	case FM_CODEC_LZ4: return level > 0 ? level : 1;   /* acceleration */
	default: return level;
	}
}

int fm_codec_check_level(enum fm_codec_algo algo, int level, char *err, size_t errlen)
{
	switch (algo) {
	case FM_CODEC_ZSTD:
		if (level >= ZSTD_minCLevel() && level <= ZSTD_maxCLevel())
			return 0;
		snprintf(err, errlen, "zstd level %d: need %d..%d (0 = default %d)", level,
			 ZSTD_minCLevel(), ZSTD_maxCLevel(), FM_CODEC_ZSTD_PAGE_LEVEL);
		return -EINVAL;
	case FM_CODEC_LZ4:
		if (level >= 0 && level <= 65537)
			return 0;
		snprintf(err, errlen, "lz4 level %d: need 0..65537 (acceleration; 0 = default)",
			 level);
		return -EINVAL;
	case FM_CODEC_NONE:
		return 0;
	}
	snprintf(err, errlen, "unknown compression %d", (int)algo);
	return -EINVAL;
}

const char *fm_codec_name(enum fm_codec_algo algo)
{
	switch (algo) {
	case FM_CODEC_NONE: return "none";
	case FM_CODEC_ZSTD: return "zstd";
	case FM_CODEC_LZ4: return "lz4";
	}
	return "?";
}

int fm_codec_parse(const char *name, enum fm_codec_algo *out)
{
	for (int a = 0; a <= FM_CODEC_MAX; a++)
		if (!strcmp(name, fm_codec_name((enum fm_codec_algo)a))) {
			*out = (enum fm_codec_algo)a;
			return 0;
		}
	return -EINVAL;
}
