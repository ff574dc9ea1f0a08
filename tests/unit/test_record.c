/* test_record.c — record framing: round trip and every corruption rejected. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "codec.h"
#include "protocol.h"
#include "tap.h"
#include "ublk-farmem/store/record.h"

static uint8_t rec[REC_MAX_LEN + 64];

static uint32_t make(uint16_t plen, uint8_t algo)
{
	for (unsigned i = 0; i < plen; i++)
		rec[REC_HDR_SIZE + i] = (uint8_t)(i * 31 + 7);
	return rec_seal(rec, 123456789ull, 42, algo, plen);
}

static int test_round_trip(void)
{
	struct rec_hdr h;
	uint32_t len = make(1000, FM_CODEC_ZSTD);

	CHECK(len == REC_HDR_SIZE + 1000);
	CHECK(rec_check(rec, len, &h) == 0);
	CHECK(h.page == 123456789ull && h.version == 42 && h.plen == 1000);
	CHECK(h.algo == FM_CODEC_ZSTD);
	/* Extra bytes after the record are fine (records are back to back). */
	CHECK(rec_check(rec, len + 64, &h) == 0);
	len = make(REC_MAX_PLEN, FM_CODEC_NONE);
	CHECK(rec_check(rec, len, &h) == 0 && h.plen == REC_MAX_PLEN);
	return 0;
}

static int test_every_bit_flip_rejected(void)
{
	uint32_t len = make(300, FM_CODEC_LZ4);

	/* Any single flipped bit anywhere in header or payload is caught. */
	for (uint32_t i = 0; i < len; i++)
		for (int b = 0; b < 8; b++) {
			rec[i] ^= (uint8_t)(1u << b);
			int rc = rec_check(rec, len, NULL);
			rec[i] ^= (uint8_t)(1u << b);
			if (rc != -EBADMSG) {
				printf("#   flip byte %u bit %d accepted\n", i, b);
				return 1;
			}
		}
	CHECK(rec_check(rec, len, NULL) == 0);
	return 0;
}

static int test_truncated_rejected(void)
{
	uint32_t len = make(300, FM_CODEC_ZSTD);

	for (uint32_t avail = 0; avail < len; avail++)
		CHECK(rec_check(rec, avail, NULL) == -EBADMSG);
	return 0;
}

static int test_bad_fields_rejected(void)
{
	uint32_t len;

	/* Correct checksum but impossible fields: re-seal then poke. */
	len = make(300, FM_CODEC_ZSTD);
	put_le16(rec + 4, 0);
	CHECK(rec_check(rec, len, NULL) == -EBADMSG);
	len = make(300, FM_CODEC_ZSTD);
	put_le16(rec + 4, REC_MAX_PLEN + 1);
	CHECK(rec_check(rec, sizeof(rec), NULL) == -EBADMSG);
	len = rec_seal(rec, 1, 1, FM_CODEC_MAX + 1, 300);
	CHECK(rec_check(rec, len, NULL) == -EBADMSG);
	/* "Raw" payloads must be exactly one page. */
	len = rec_seal(rec, 1, 1, FM_CODEC_NONE, 300);
	CHECK(rec_check(rec, len, NULL) == -EBADMSG);
	len = make(300, FM_CODEC_ZSTD);
	rec[7] = 1;
	CHECK(rec_check(rec, len, NULL) == -EBADMSG);
	memset(rec, 0, sizeof(rec));
	CHECK(rec_check(rec, sizeof(rec), NULL) == -EBADMSG);
	return 0;
}

static int test_header_bound_to_payload(void)
{
	/* Same payload under another page number or version is a different
	 * record: moving bytes between pages is detected. */
	uint32_t len = make(200, FM_CODEC_ZSTD);
	uint8_t copy[REC_MAX_LEN];

	memcpy(copy, rec, len);
	put_le64(copy + 8, 7);
	CHECK(rec_check(copy, len, NULL) == -EBADMSG);
	memcpy(copy, rec, len);
	put_le64(copy + 16, 43);
	CHECK(rec_check(copy, len, NULL) == -EBADMSG);
	return 0;
}

/* --- sealed records -------------------------------------------------- */

static const uint8_t uuid_a[FM_UUID_LEN] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static uint8_t key_bytes[REC_KEY_SIZE];
static uint8_t clear[REC_MAX_PLEN], out[REC_MAX_PLEN];
static const char canary[] = "CANARY-plaintext-must-not-show";

static int aeads[] = { REC_AEAD_AES256GCM, REC_AEAD_XCHACHA20POLY1305 };
#define NAEADS (int)(sizeof(aeads) / sizeof(aeads[0]))

static int key_for(struct rec_key *k, int aead, const uint8_t *uuid, uint32_t epoch)
{
	for (unsigned i = 0; i < REC_KEY_SIZE; i++)
		key_bytes[i] = (uint8_t)(i * 7 + 1);
	return rec_key_init(k, aead, key_bytes, uuid, epoch);
}

static uint32_t make_sealed(const struct rec_key *k, uint16_t dlen, uint8_t algo,
			    uint64_t page, uint64_t version)
{
	for (unsigned i = 0; i < dlen; i++)
		clear[i] = (uint8_t)(i * 13 + 5);
	memcpy(clear + 40, canary, sizeof(canary) - 1);
	return rec_put(k, rec, clear, page, version, algo, dlen);
}

static int opens(const struct rec_key *k, uint32_t len, struct rec_hdr *h)
{
	const uint8_t *payload;
	struct rec_hdr tmp;

	return rec_open(k, rec, len, h ? h : &tmp, out, &payload);
}

static int skip_aes(int aead)
{
	if (aead == REC_AEAD_AES256GCM && !rec_aead_available(aead)) {
		printf("# no AES-NI here: AES-256-GCM not tested\n");
		return 1;
	}
	return 0;
}

static int test_sealed_round_trip(void)
{
	for (int a = 0; a < NAEADS; a++) {
		struct rec_key k, later;
		const uint8_t *payload;
		struct rec_hdr h;
		uint32_t len;

		if (skip_aes(aeads[a]))
			continue;
		CHECK(key_for(&k, aeads[a], uuid_a, 0x11111111u) == 0);
		/* Compressed (shorter) and raw payloads. */
		len = make_sealed(&k, 1000, FM_CODEC_ZSTD, 77, 9);
		CHECK(len == REC_HDR_SIZE + 1000 + REC_TAG_SIZE);
		CHECK(rec_plen_for(&k, 1000) + REC_HDR_SIZE == len);
		CHECK(get_le32(rec) == REC_MAGIC_SEALED && rec[7] == aeads[a]);
		/* The payload is not there in the clear. */
		CHECK(!memmem(rec, len, canary, sizeof(canary) - 1));
		memset(out, 0, sizeof(out));
		CHECK(rec_open(&k, rec, len, &h, out, &payload) == 0);
		CHECK(payload == out && h.dlen == 1000 && h.plen == 1000 + REC_TAG_SIZE);
		CHECK(h.page == 77 && h.version == 9 && h.algo == FM_CODEC_ZSTD);
		CHECK(!memcmp(out, clear, 1000));
		CHECK(rec_parse(&k, rec, len, &h) == 0 && h.page == 77);
		len = make_sealed(&k, REC_MAX_PLEN, FM_CODEC_NONE, 78, 10);
		CHECK(len == REC_MAX_LEN);
		CHECK(rec_open(&k, rec, len, &h, out, &payload) == 0);
		CHECK(!memcmp(out, clear, REC_MAX_PLEN));
		/* A later instance (recover: same key, new epoch) opens what
		 * an earlier one sealed: the nonce comes from the record. */
		CHECK(key_for(&later, aeads[a], uuid_a, 0x22222222u) == 0);
		CHECK(opens(&later, len, NULL) == 0);
		rec_key_wipe(&k);
		rec_key_wipe(&later);
	}
	return 0;
}

static int test_sealed_bit_flips_rejected(void)
{
	for (int a = 0; a < NAEADS; a++) {
		struct rec_key k;
		uint32_t len;

		if (skip_aes(aeads[a]))
			continue;
		CHECK(key_for(&k, aeads[a], uuid_a, 5) == 0);
		len = make_sealed(&k, 300, FM_CODEC_LZ4, 3, 4);
		for (uint32_t i = 0; i < len; i++)
			for (int b = 0; b < 8; b++) {
				rec[i] ^= (uint8_t)(1u << b);
				int rc = opens(&k, len, NULL);
				rec[i] ^= (uint8_t)(1u << b);
				if (rc != -EBADMSG) {
					printf("#   %s: flip byte %u bit %d accepted\n",
					       rec_aead_name(aeads[a]), i, b);
					return 1;
				}
			}
		CHECK(opens(&k, len, NULL) == 0);
		for (uint32_t avail = 0; avail < len; avail++)
			CHECK(opens(&k, avail, NULL) == -EBADMSG);
		rec_key_wipe(&k);
	}
	return 0;
}

/* What a donor can do without the key: move a record to another page,
 * put an older version back (or relabel it as the newer one), hand one
 * device's record to another, re-seal with a key of its own. */
static int test_sealed_forgeries_rejected(void)
{
	static const uint8_t uuid_b[FM_UUID_LEN] = { 16, 15, 14 };

	for (int a = 0; a < NAEADS; a++) {
		struct rec_key k, other_dev, other_key;
		uint8_t v1[REC_MAX_LEN];
		struct rec_hdr h;
		uint32_t len;

		if (skip_aes(aeads[a]))
			continue;
		CHECK(key_for(&k, aeads[a], uuid_a, 5) == 0);
		CHECK(key_for(&other_dev, aeads[a], uuid_b, 5) == 0);
		/* Wrong page: relabelled header. */
		len = make_sealed(&k, 500, FM_CODEC_ZSTD, 10, 20);
		put_le64(rec + 8, 11);
		CHECK(opens(&k, len, NULL) == -EBADMSG);
		/* Older version: authentic as itself (the store then compares
		 * the version with its map), refused once relabelled newer. */
		len = make_sealed(&k, 500, FM_CODEC_ZSTD, 10, 20);
		memcpy(v1, rec, len);
		CHECK(opens(&k, len, &h) == 0 && h.version == 20);
		put_le64(rec + 16, 21);
		CHECK(opens(&k, len, NULL) == -EBADMSG);
		memcpy(rec, v1, len);
		put_le32(rec + 24, 6);              /* another epoch */
		CHECK(opens(&k, len, NULL) == -EBADMSG);
		/* Codec swapped under an authentic payload. */
		memcpy(rec, v1, len);
		rec[6] = FM_CODEC_LZ4;
		CHECK(opens(&k, len, NULL) == -EBADMSG);
		/* Another device (same key bytes, other UUID). */
		memcpy(rec, v1, len);
		CHECK(opens(&other_dev, len, NULL) == -EBADMSG);
		/* Another key. */
		key_bytes[0] ^= 1;
		CHECK(rec_key_init(&other_key, aeads[a], key_bytes, uuid_a, 5) == 0);
		CHECK(opens(&other_key, len, NULL) == -EBADMSG);
		len = rec_put(&other_key, rec, clear, 10, 20, FM_CODEC_ZSTD, 500);
		CHECK(opens(&k, len, NULL) == -EBADMSG);
		rec_key_wipe(&k);
		rec_key_wipe(&other_dev);
		rec_key_wipe(&other_key);
	}
	return 0;
}

/* No downgrade: a plain record (anyone can compute XXH3) never opens on
 * a sealed device, nor a sealed one under the other algorithm or on a
 * plain device. */
static int test_formats_do_not_mix(void)
{
	struct rec_key plain, aes, xc;
	uint32_t len;
	int have_aes = rec_aead_available(REC_AEAD_AES256GCM);

	CHECK(rec_key_init(&plain, REC_AEAD_NONE, NULL, uuid_a, 0) == 0);
	CHECK(key_for(&xc, REC_AEAD_XCHACHA20POLY1305, uuid_a, 1) == 0);
	len = make(300, FM_CODEC_ZSTD);
	CHECK(opens(&plain, len, NULL) == 0);
	CHECK(opens(&xc, len, NULL) == -EBADMSG);
	len = make_sealed(&xc, 300, FM_CODEC_ZSTD, 1, 1);
	CHECK(opens(&plain, len, NULL) == -EBADMSG);
	CHECK(rec_check(rec, len, NULL) == -EBADMSG);
	if (have_aes) {
		CHECK(key_for(&aes, REC_AEAD_AES256GCM, uuid_a, 1) == 0);
		CHECK(opens(&aes, len, NULL) == -EBADMSG);
		len = make_sealed(&aes, 300, FM_CODEC_ZSTD, 1, 1);
		CHECK(opens(&xc, len, NULL) == -EBADMSG);
		rec[7] = REC_AEAD_XCHACHA20POLY1305;   /* relabelled */
		CHECK(opens(&xc, len, NULL) == -EBADMSG);
		rec_key_wipe(&aes);
	}
	rec_key_wipe(&xc);
	return 0;
}

/* Nonces: distinct versions give unrelated ciphertexts of one payload
 * (with a repeated nonce the two XOR to the plaintexts' XOR). */
static int test_nonce_per_version(void)
{
	for (int a = 0; a < NAEADS; a++) {
		struct rec_key k;
		uint8_t c1[REC_MAX_LEN];
		uint32_t len, same = 0;

		if (skip_aes(aeads[a]))
			continue;
		CHECK(key_for(&k, aeads[a], uuid_a, 5) == 0);
		len = make_sealed(&k, 1000, FM_CODEC_ZSTD, 1, 100);
		memcpy(c1, rec, len);
		CHECK(make_sealed(&k, 1000, FM_CODEC_ZSTD, 1, 101) == len);
		for (uint32_t i = REC_HDR_SIZE; i < len; i++)
			same += c1[i] == rec[i];
		CHECK(same < 40);   /* ~4 of 1016 bytes match by chance */
		rec_key_wipe(&k);
	}
	return 0;
}

/* --encrypt none keeps the plain format byte for byte: rec_put with the
 * plain key writes what rec_seal always wrote, checked against bytes
 * recorded from the format before sealing existed. */
static int test_plain_format_unchanged(void)
{
	static const uint8_t want_hdr[REC_HDR_SIZE] = {
		0x46, 0x4d, 0x52, 0x43, 0x10, 0x00, 0x01, 0x00,
		0x15, 0xcd, 0x5b, 0x07, 0x00, 0x00, 0x00, 0x00,
		0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x05, 0x4b, 0x36, 0xa9, 0x5b, 0x72, 0x52, 0x26 };
	struct rec_key plain;
	uint8_t payload[16];
	uint32_t len;

	for (unsigned i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)('a' + i);
	CHECK(rec_key_init(&plain, REC_AEAD_NONE, NULL, uuid_a, 0) == 0);
	CHECK(rec_plen_for(&plain, 16) == 16);
	len = rec_put(&plain, rec, payload, 123456789ull, 42, FM_CODEC_ZSTD, 16);
	CHECK(len == REC_HDR_SIZE + 16);
	CHECK(!memcmp(rec, want_hdr, REC_HDR_SIZE));
	CHECK(!memcmp(rec + REC_HDR_SIZE, payload, 16));
	return 0;
}

static const struct tap_case cases[] = {
	{ "seal then check round-trips every field", test_round_trip },
	{ "every single-bit flip is rejected", test_every_bit_flip_rejected },
	{ "every truncation is rejected", test_truncated_rejected },
	{ "impossible length/algo/flags are rejected", test_bad_fields_rejected },
	{ "checksum binds header to payload", test_header_bound_to_payload },
	{ "sealed: round trip, each AEAD; later epoch opens it", test_sealed_round_trip },
	{ "sealed: every bit flip and truncation fails to open", test_sealed_bit_flips_rejected },
	{ "sealed: moved, relabelled, other device or key fail", test_sealed_forgeries_rejected },
	{ "plain and sealed formats and algorithms do not mix", test_formats_do_not_mix },
	{ "sealed: a new version is a new nonce", test_nonce_per_version },
	{ "plain format unchanged byte for byte", test_plain_format_unchanged },
};

TAP_MAIN(cases)
