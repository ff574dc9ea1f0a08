/* codec.h — per-page compression with contexts allocated up front.
 *
 * One struct fm_codec per thread (queue, cleaner): fm_codec_init()
 * allocates and warms every context it will use, so compressing and
 * decompressing never allocate afterwards.  Decompression handles every
 * algorithm whatever the codec compresses with, because a store may hold
 * records written under an earlier --compress setting.
 */
#ifndef FARMEM_CODEC_H
#define FARMEM_CODEC_H

#include <stddef.h>
#include <sys/types.h>

enum fm_codec_algo { FM_CODEC_NONE = 0, FM_CODEC_ZSTD = 1, FM_CODEC_LZ4 = 2 };
#define FM_CODEC_MAX FM_CODEC_LZ4

struct fm_codec {
	enum fm_codec_algo algo;
	int level;              /* zstd level (negative: fast modes); lz4: acceleration when > 0 */
	void *zc;               /* ZSTD_CCtx */
	void *zd;               /* ZSTD_DCtx */
	void *lz4_state;        /* LZ4_sizeofState() bytes */
	/* Pages entropy.h judged incompressible.  One thread compresses
	 * with a codec at a time; stats read it from another, relaxed. */
	unsigned long skipped;
};

/* zstd's level when none is given.  Not zstd's own default (3): on
 * single 4 KiB pages, level 1 stored as little or less (Python heap
 * pages 23.4 % of their size against 23.8 %, fio's write buffers 86.7 %
 * at both, text 3.5 % against 3.2 %) and took 20-50 % less CPU (11.4
 * against 14.5, 17.9 against 23.2, 3.1 against 6.1 us per page). */
#define FM_CODEC_ZSTD_PAGE_LEVEL 1

/* 0 or -ENOMEM/-EINVAL.  level 0 means the algorithm's default (zstd:
 * FM_CODEC_ZSTD_PAGE_LEVEL). */
int fm_codec_init(struct fm_codec *c, enum fm_codec_algo algo, int level);
void fm_codec_fini(struct fm_codec *c);

/* Compress len bytes into at most cap bytes.  Returns the compressed
 * length, or 0 when the result would not fit in cap (the caller then
 * stores the data raw), or -EINVAL for FM_CODEC_NONE.  With cap < len,
 * data that looks random (entropy.h) returns 0 without compressing. */
ssize_t fm_codec_compress(struct fm_codec *c, const void *src, size_t len,
			  void *dst, size_t cap);

/* Decompress a payload of algorithm algo; succeeds only when exactly
 * dstlen bytes come out.  0, or -EBADMSG for a damaged payload. */
int fm_codec_decompress(struct fm_codec *c, enum fm_codec_algo algo,
			const void *src, size_t len, void *dst, size_t dstlen);

/* The level algo compresses with when asked for level: 0 means the
 * default (zstd FM_CODEC_ZSTD_PAGE_LEVEL, lz4 acceleration 1). */
int fm_codec_level(enum fm_codec_algo algo, int level);

/* 0 when level suits algo (zstd: its min..max, negative allowed; lz4:
 * acceleration >= 0; none: 0), else -EINVAL with the range in err. */
int fm_codec_check_level(enum fm_codec_algo algo, int level, char *err, size_t errlen);

const char *fm_codec_name(enum fm_codec_algo algo);
/* "zstd", "lz4", "none" -> algo; 0 or -EINVAL. */
int fm_codec_parse(const char *name, enum fm_codec_algo *out);

#endif
