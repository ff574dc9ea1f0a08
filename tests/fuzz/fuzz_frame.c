/* fuzz_frame.c — libFuzzer target for every wire decoder in protocol.c.
 *
 * The input is a header followed by a payload.  Every decoder sees the
 * payload (whatever the header says), and whatever a decoder accepts
 * must encode back to exactly the bytes it came from: a decoder that
 * accepts something it cannot have produced is reading fields wrong.
 */
#include "protocol.h"

#include <stdlib.h>
#include <string.h>

#define SAME(enc_len, src, n) \
	do { if ((size_t)(enc_len) != (n) || memcmp(out, (src), (n))) abort(); } while (0)

static uint8_t out[FM_MAX_PAYLOAD + FM_HDR_SIZE];

static void header(const uint8_t *d, size_t n)
{
	struct fm_hdr h;

	if (fm_hdr_decode(d, n, &h) != 0)
		return;
	if (h.len > FM_MAX_PAYLOAD)
		abort();
	fm_hdr_encode(out, &h);
	SAME(FM_HDR_SIZE, d, FM_HDR_SIZE);
	(void)fm_op_name(h.op);
}

static void fixed_payloads(const uint8_t *p, size_t n)
{
	struct fm_hello_req hq;
	struct fm_hello_rep hp;
	struct fm_alloc_rep ar;
	struct fm_range r;
	struct fm_stat st;
	uint32_t u32;
	uint64_t u64;

	if (fm_hello_req_decode(p, n, &hq) == 0)
		SAME(fm_hello_req_encode(out, &hq), p, n);
	if (fm_hello_rep_decode(p, n, &hp) == 0)
		SAME(fm_hello_rep_encode(out, &hp), p, n);
	if (fm_alloc_req_decode(p, n, &u32) == 0)
		SAME(fm_alloc_req_encode(out, u32), p, n);
	if (fm_alloc_rep_decode(p, n, &ar) == 0)
		SAME(fm_alloc_rep_encode(out, &ar), p, n);
	if (fm_free_req_decode(p, n, &u64) == 0)
		SAME(fm_u64_encode(out, u64), p, n);
	if (fm_read_req_decode(p, n, &r) == 0) {
		if (r.len == 0 || r.len > FM_MAX_IO)
			abort();
		SAME(fm_range_encode(out, &r), p, n);
	}
	if (fm_list_req_decode(p, n, &u32) == 0)
		SAME(fm_list_req_encode(out, u32), p, n);
	/* STAT has zero padding the decoder ignores: compare the fields. */
	if (fm_stat_decode(p, n, &st) == 0) {
		struct fm_stat again;

		fm_stat_encode(out, &st);
		if (fm_stat_decode(out, FM_STAT_WIRE, &again) != 0 ||
		    memcmp(&st, &again, sizeof(st)))
			abort();
	}
}

static void variable_payloads(const uint8_t *p, size_t n)
{
	struct fm_range r;
	const uint8_t *data;
	uint32_t count;

	if (fm_write_req_decode(p, n, &r, &data) == 0) {
		if (r.len == 0 || r.len > FM_MAX_IO || data != p + FM_RANGE_LEN ||
		    (size_t)r.len + FM_RANGE_LEN != n)
			abort();
	}
	if (fm_list_rep_decode(p, n, &count) == 0) {
		if (count > FM_LIST_MAX || 4 + (size_t)count * FM_LIST_ENTRY_LEN != n)
			abort();
		for (uint32_t i = 0; i < count; i++) {
			uint64_t id;
			uint32_t size;

			fm_list_rep_entry(p, i, &id, &size);
			fm_list_entry_encode(out, id, size);
			if (memcmp(out, p + 4 + (size_t)i * FM_LIST_ENTRY_LEN,
				   FM_LIST_ENTRY_LEN))
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Copies of exactly the input's length, so ASan sees any read past
	 * the length a decoder was given. */
	uint8_t *copy = malloc(size ? size : 1);
	size_t plen;

	if (!copy)
		return 0;
	memcpy(copy, data, size);
	header(copy, size);
	plen = size > FM_HDR_SIZE ? size - FM_HDR_SIZE : 0;
	if (plen) {
		uint8_t *p = malloc(plen);

		if (p) {
			memcpy(p, copy + FM_HDR_SIZE, plen);
			fixed_payloads(p, plen);
			variable_payloads(p, plen);
			free(p);
		}
	}
	/* The whole input as a payload, too: short inputs reach every size. */
	fixed_payloads(copy, size);
	variable_payloads(copy, size);
	free(copy);
	return 0;
}
