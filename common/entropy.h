/* entropy.h — a cheap guess whether a page is worth compressing.
 *
 * Pages of encrypted, already compressed or random data do not shrink,
 * and finding that out with zstd costs a full pass of its match finder
 * over cold hash tables: in `farmem-blk serve` under fio's random data,
 * zstd took about half of the queue thread's CPU for pages it then
 * stored raw.  A byte histogram of a 1 KiB sample answers in a fraction
 * of that (the same idea as the kernel's btrfs compression heuristic).
 *
 * A wrong "incompressible" costs space, never data: the page is stored
 * raw.  It can happen for data whose bytes look random but repeat in
 * long runs (a random block copied several times in one page), which
 * an order-0 estimate cannot see.
 */
#ifndef FARMEM_ENTROPY_H
#define FARMEM_ENTROPY_H

#include <stddef.h>

/* Estimated bits per byte from a histogram of a 1 KiB sample (32 runs of
 * 32 bytes spread over buf), in 1/256 bits: 0 .. 8*256.  len >= 1024. */
unsigned fm_entropy_estimate(const void *buf, size_t len);

/* 1 when buf (len >= 1024) is very unlikely to shrink by compression:
 * its sample's estimate is at least FM_ENTROPY_SKIP.  0 otherwise, and
 * always 0 for shorter buffers. */
int fm_entropy_incompressible(const void *buf, size_t len);

/* 7.6 bits per byte.  Measured with zstd level 3 on 4 KiB pages mixing
 * random bytes with a 16-symbol alphabet: every page estimated above
 * 7.52 failed to save 1/32 of its size, and uniformly random pages
 * never estimated below 7.74 in 10,000 trials. */
#define FM_ENTROPY_SKIP (76 * 256 / 10)

#endif
