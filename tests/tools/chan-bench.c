/* chan-bench.c — what a channel tag costs per frame (not a test).
 *
 *   chan-bench [ITERATIONS]
 *
 * Times, over a small frame (a READ request: header and range, 40
 * bytes) and a 4 KiB WRITE frame (header, range and one page):
 *   chan          common/chan.c as used: ChaCha20 one-time key, then
 *                 Poly1305 over the frame (seal and check)
 *   aead-ad       crypto_aead_chacha20poly1305_ietf_encrypt_detached with
 *                 an empty message and the frame as associated data
 *   hmac-sha256   crypto_auth_hmacsha256 over the frame
 *   blake2b       keyed crypto_generichash, 16-byte output
 * and prints microseconds per frame.  Numbers depend on the machine
 * and its load: run it on a quiet one.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chan.h"
#include "protocol.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static volatile uint8_t sink;

static double run_chan_seal(const uint8_t *f, size_t n, long iters)
{
	struct fm_chan ch;
	uint8_t cn[FM_NONCE_LEN] = { 1 }, sn[FM_NONCE_LEN] = { 2 }, tag[FM_CHAN_TAG_LEN];
	struct iovec iov = { (void *)f, n };
	double t0;

	fm_chan_init(&ch, FM_CHAN_CLIENT, cn, sizeof(cn), cn, sn);
	t0 = now_s();
	for (long i = 0; i < iters; i++) {
		fm_chan_seal_iov(&ch.tx, &iov, 1, tag);
		sink ^= tag[0];
	}
	return (now_s() - t0) / (double)iters * 1e6;
}

static double run_chan_check(const uint8_t *f, size_t n, long iters)
{
	struct fm_chan c, s;
	uint8_t cn[FM_NONCE_LEN] = { 1 }, sn[FM_NONCE_LEN] = { 2 };
	uint8_t (*tags)[FM_CHAN_TAG_LEN] = malloc((size_t)iters * FM_CHAN_TAG_LEN);
	struct iovec iov = { (void *)f, n };
	double t0;
	long bad = 0;

	if (!tags)
		return -1;
	fm_chan_init(&c, FM_CHAN_CLIENT, cn, sizeof(cn), cn, sn);
	fm_chan_init(&s, FM_CHAN_SERVER, cn, sizeof(cn), cn, sn);
	for (long i = 0; i < iters; i++)
		fm_chan_seal_iov(&c.tx, &iov, 1, tags[i]);
	t0 = now_s();
	for (long i = 0; i < iters; i++)
		bad += fm_chan_check_frame(&s.rx, f, n, tags[i]) != 0;
	t0 = now_s() - t0;
	free(tags);
	return bad ? -1 : t0 / (double)iters * 1e6;
}

static double run_aead(const uint8_t *f, size_t n, long iters)
{
	uint8_t key[crypto_aead_chacha20poly1305_ietf_KEYBYTES] = { 3 };
	uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = { 0 };
	uint8_t tag[crypto_aead_chacha20poly1305_ietf_ABYTES], none[1];
	unsigned long long tlen;
	double t0 = now_s();

	for (long i = 0; i < iters; i++) {
		put_le64(nonce, (uint64_t)i);
		crypto_aead_chacha20poly1305_ietf_encrypt_detached(none, tag, &tlen, none, 0,
								   f, n, NULL, nonce, key);
		sink ^= tag[0];
	}
	return (now_s() - t0) / (double)iters * 1e6;
}

static double run_hmac(const uint8_t *f, size_t n, long iters)
{
	uint8_t key[crypto_auth_hmacsha256_KEYBYTES] = { 4 };
	uint8_t mac[crypto_auth_hmacsha256_BYTES];
	double t0 = now_s();

	for (long i = 0; i < iters; i++) {
		crypto_auth_hmacsha256(mac, f, n, key);
		sink ^= mac[0];
	}
	return (now_s() - t0) / (double)iters * 1e6;
}

static double run_blake2b(const uint8_t *f, size_t n, long iters)
{
	uint8_t key[crypto_generichash_KEYBYTES] = { 5 };
	uint8_t mac[16];
	double t0 = now_s();

	for (long i = 0; i < iters; i++) {
		crypto_generichash(mac, sizeof(mac), f, n, key, sizeof(key));
		sink ^= mac[0];
	}
	return (now_s() - t0) / (double)iters * 1e6;
}

int main(int argc, char **argv)
{
	static uint8_t frame[FM_HDR_SIZE + FM_RANGE_LEN + FM_PAGE];
	const size_t small = FM_HDR_SIZE + FM_RANGE_LEN, page = sizeof(frame);
	long iters = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
	struct {
		const char *name;
		double (*fn)(const uint8_t *, size_t, long);
	} runs[] = {
		{ "chan seal", run_chan_seal },
		{ "chan check", run_chan_check },
		{ "aead-ad", run_aead },
		{ "hmac-sha256", run_hmac },
		{ "blake2b", run_blake2b },
	};

	if (iters <= 0 || iters > 100000000) {
		fprintf(stderr, "usage: chan-bench [ITERATIONS (1..100000000)]\n");
		return 2;
	}
	if (sodium_init() < 0)
		return 1;
	randombytes_buf(frame, sizeof(frame));
	printf("%-12s %14s %14s   (us per frame, %ld frames)\n", "tag", "small (40 B)",
	       "4 KiB (4136 B)", iters);
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		double a = runs[i].fn(frame, small, iters);
		double b = runs[i].fn(frame, page, iters);

		printf("%-12s %14.3f %14.3f\n", runs[i].name, a, b);
	}
	return 0;
}
