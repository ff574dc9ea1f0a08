/* record.c — encode and verify stored page records. */
#include "record.h"

#include <errno.h>

#include "checksum.h"
#include "codec.h"
#include "protocol.h"

static uint64_t rec_csum(const uint8_t *rec, uint16_t plen)
{
	uint64_t seed = fm_xxh3(rec, 24);

	return fm_xxh3_seed(rec + REC_HDR_SIZE, plen, seed);
}

uint32_t rec_seal(uint8_t *rec, uint64_t page, uint64_t version,
		  uint8_t algo, uint16_t plen)
{
	put_le32(rec, REC_MAGIC);
	put_le16(rec + 4, plen);
	rec[6] = algo;
	rec[7] = 0;
	put_le64(rec + 8, page);
	put_le64(rec + 16, version);
	put_le64(rec + 24, rec_csum(rec, plen));
	return rec_len(plen);
}

int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *out)
{
	struct rec_hdr h;

	if (avail < REC_HDR_SIZE || get_le32(rec) != REC_MAGIC)
		return -EBADMSG;
	h.plen = get_le16(rec + 4);
	h.algo = rec[6];
	if (h.plen == 0 || h.plen > REC_MAX_PLEN || rec_len(h.plen) > avail ||
	    h.algo > FM_CODEC_MAX || rec[7] != 0)
		return -EBADMSG;
	/* A raw page is exactly one page; anything else claiming to be
	 * uncompressed cannot decode to 4096 bytes. */
	if (h.algo == FM_CODEC_NONE && h.plen != REC_MAX_PLEN)
		return -EBADMSG;
	h.page = get_le64(rec + 8);
	h.version = get_le64(rec + 16);
	h.csum = get_le64(rec + 24);
	if (h.csum != rec_csum(rec, h.plen))
		return -EBADMSG;
	if (out)
		*out = h;
	return 0;
}
