/* entropy.c — the order-0 entropy of a sample, in integer arithmetic. */
#include "entropy.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>

#define RUNS 32
#define RUN_LEN 32
#define SAMPLE (RUNS * RUN_LEN)        /* 1024 = 2^10 bytes */
#define SAMPLE_LOG2 10

/* c * log2(c) in 1/256 bits for every count a sample can give.  Built
 * once (4 KiB), so the I/O path never calls log2(). */
static uint32_t clogc[SAMPLE + 1];
static pthread_once_t clogc_once = PTHREAD_ONCE_INIT;

static void clogc_build(void)
{
	for (unsigned c = 2; c <= SAMPLE; c++)
		clogc[c] = (uint32_t)lround(c * log2((double)c) * 256.0);
}

unsigned fm_entropy_estimate(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint16_t hist[256] = { 0 };
	size_t stride = len / RUNS;
	uint64_t sum = 0;

	pthread_once(&clogc_once, clogc_build);
	for (unsigned r = 0; r < RUNS; r++) {
		const uint8_t *run = p + r * stride;

		for (unsigned k = 0; k < RUN_LEN; k++)
			hist[run[k]]++;
	}
	for (unsigned v = 0; v < 256; v++)
		sum += clogc[hist[v]];
	/* H = log2(n) - (1/n) * sum(c * log2 c), with n = 2^10. */
	return (unsigned)(SAMPLE_LOG2 * 256 - (sum >> SAMPLE_LOG2));
}

int fm_entropy_incompressible(const void *buf, size_t len)
{
	if (len < SAMPLE)
		return 0;
	return fm_entropy_estimate(buf, len) >= FM_ENTROPY_SKIP;
}
