/* test_record.c — record framing: round trip and every corruption rejected. */
#include <errno.h>
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

static const struct tap_case cases[] = {
	{ "seal then check round-trips every field", test_round_trip },
	{ "every single-bit flip is rejected", test_every_bit_flip_rejected },
	{ "every truncation is rejected", test_truncated_rejected },
	{ "impossible length/algo/flags are rejected", test_bad_fields_rejected },
	{ "checksum binds header to payload", test_header_bound_to_payload },
};

TAP_MAIN(cases)
