/* record.h — the self-describing record a page is stored as.
 *
 * Records are appended back to back in a segment, so a segment can be
 * scanned and every record checked without the page map:
 *
 *   off size field
 *   0   4    magic    REC_MAGIC ("FMRC" as LE u32)
 *   4   2    plen     payload bytes that follow (1..4096)
 *   6   1    algo     enum fm_codec_algo of the payload
 *   7   1    flags    0 (reserved)
 *   8   8    page     page number in the device
 *   16  8    version  write sequence number (newer wins)
 *   24  8    csum     XXH3-64 of the payload, seeded with XXH3-64 of bytes 0..23
 *   32  plen payload
 *
 * Seeding the payload hash with the header's hash makes one 64-bit
 * value guard both, so a record moved to the wrong page or carrying a
 * stale version is rejected like a flipped payload bit.
 */
#ifndef FARMEM_RECORD_H
#define FARMEM_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define REC_MAGIC     0x43524d46u /* "FMRC" */
#define REC_HDR_SIZE  32u
#define REC_MAX_PLEN  4096u
#define REC_MAX_LEN   (REC_HDR_SIZE + REC_MAX_PLEN)

struct rec_hdr {
	uint16_t plen;
	uint8_t algo;
	uint64_t page;
	uint64_t version;
	uint64_t csum;
};

static inline uint32_t rec_len(uint32_t plen) { return REC_HDR_SIZE + plen; }

/* The payload already sits at rec + REC_HDR_SIZE; write the header in
 * front of it, checksum included.  Returns the record length. */
uint32_t rec_seal(uint8_t *rec, uint64_t page, uint64_t version,
		  uint8_t algo, uint16_t plen);

/* Parse and verify the record at rec, of which avail bytes are present.
 * 0, or -EBADMSG (bad magic, length, algo, flags or checksum). */
int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *out);

#endif
