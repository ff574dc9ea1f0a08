/* seal-cost.c — what sealing costs per 4 KiB page: rec_put (seal) and
 * rec_open of one raw page under each record format, in microseconds,
 * on this CPU.  Numbers to report, not to judge: no thresholds.
 *
 *   seal-cost [ITERATIONS]      (default 20000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "ublk-farmem/store/record.h"

static uint8_t page[REC_MAX_PLEN], rec[REC_MAX_LEN], out[REC_MAX_PLEN];

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int measure(int aead, long n)
{
	static const uint8_t uuid[FM_UUID_LEN] = { 1 };
	uint8_t key[REC_KEY_SIZE];
	const uint8_t *payload;
	struct rec_key k;
	struct rec_hdr h;
	double t0, t1, t2;
	uint32_t len = 0;
	long bad = 0;

	memset(key, 0x5a, sizeof(key));
	if (rec_key_init(&k, aead, key, uuid, 7) < 0) {
		printf("%-18s not available on this CPU\n", rec_aead_name(aead));
		return 0;
	}
	t0 = now_us();
	for (long i = 0; i < n; i++)
		len = rec_put(&k, rec, page, 3, (uint64_t)i + 1, FM_CODEC_NONE, REC_MAX_PLEN);
	t1 = now_us();
	for (long i = 0; i < n; i++)
		bad += rec_open(&k, rec, len, &h, out, &payload) != 0;
	t2 = now_us();
	printf("%-18s seal %6.3f us/page  open %6.3f us/page  (%u-byte record)\n",
	       rec_aead_name(aead), (t1 - t0) / (double)n, (t2 - t1) / (double)n, len);
	rec_key_wipe(&k);
	return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 20000;
	int rc = 0;

	if (n < 1 || n > 100000000) {
		fprintf(stderr, "usage: seal-cost [ITERATIONS]\n");
		return 2;
	}
	for (unsigned i = 0; i < sizeof(page); i++)
		page[i] = (uint8_t)(i * 2654435761u >> 13);
	for (int a = REC_AEAD_NONE; a <= REC_AEAD_MAX; a++)
		rc |= measure(a, n);
	return rc;
}
