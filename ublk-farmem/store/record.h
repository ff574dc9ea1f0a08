/* record.h — the self-describing record a page is stored as.
 *
 * Records are appended back to back in a segment, so a segment can be
 * scanned and every record checked without the page map.  A device
 * stores all its records in one of two formats, chosen when it is
 * created (struct rec_key).
 *
 * Plain (encryption off):
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
 * stale version is rejected like a flipped payload bit.  It guards
 * against damage only: anyone can recompute it.
 *
 * Sealed (an AEAD with a key only the client holds):
 *
 *   0   4    magic    REC_MAGIC_SEALED ("FMRS")
 *   4   2    plen     bytes that follow: ciphertext + 16-byte tag (17..4112)
 *   6   1    algo     enum fm_codec_algo of the plaintext payload
 *   7   1    aead     enum rec_aead, the device's algorithm
 *   8   8    page     page number in the device
 *   16  8    version  write sequence number
 *   24  4    epoch    random per store instance (part of the nonce)
 *   28  4    0        reserved
 *   32  plen ciphertext, then the tag
 *
 * The associated data is the whole 32-byte header followed by the
 * device UUID: page and version (so a record moved to another page, or
 * an older version put back, fails to open), the device (a record of
 * another device fails), and algo and length (so the codec cannot be
 * swapped under an authentic payload).  Only the location in the
 * segment is left out, so the cleaner and repair move records as they
 * are.  Page, version and length stay readable: a donor sees which page
 * was written when and how well it compressed, as it always did; it
 * sees no contents and cannot forge, replay or move a record.
 *
 * Nonces never repeat under one key.  The nonce is the record's version
 * (LE 64) then its epoch (LE 32), zero-padded to the algorithm's size
 * (12 bytes for AES-256-GCM, 24 for XChaCha20-Poly1305).  Versions come
 * from one counter per device (state_hdr.next_version), incremented
 * atomically for every page written and kept in the state file with the
 * key: a restarted or recovered daemon continues it, and a device that
 * is created anew (add, serve) gets a new key.  Only sealing uses a
 * nonce; the cleaner, repair and healing copy sealed bytes unchanged.
 * So (key, version) is unique, and the epoch — fresh random bits at
 * every store_open() — only guards against a counter rolled back
 * behind our back (a state file restored from a copy): then a repeat
 * needs the same version and the same 32-bit epoch.  Random 96-bit
 * nonces were not used: past ~2^32 records under one key (hours of
 * heavy swap) their collision odds stop being negligible for GCM.
 */
#ifndef FARMEM_RECORD_H
#define FARMEM_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include <sodium.h>

#include "protocol.h"

#define REC_MAGIC         0x43524d46u /* "FMRC" */
#define REC_MAGIC_SEALED  0x53524d46u /* "FMRS" */
#define REC_HDR_SIZE      32u
#define REC_MAX_PLEN      4096u       /* payload (plaintext) bytes */
#define REC_TAG_SIZE      16u         /* AEAD tag after a sealed payload */
#define REC_KEY_SIZE      32u
/* The largest record of either format. */
#define REC_MAX_LEN       (REC_HDR_SIZE + REC_MAX_PLEN + REC_TAG_SIZE)

enum rec_aead {
	REC_AEAD_NONE = 0,              /* plain: XXH3 */
	REC_AEAD_AES256GCM = 1,
	REC_AEAD_XCHACHA20POLY1305 = 2,
};
#define REC_AEAD_MAX REC_AEAD_XCHACHA20POLY1305

struct rec_hdr {
	uint16_t plen;                  /* bytes after the header */
	uint16_t dlen;                  /* payload bytes (plen less any tag) */
	uint8_t algo;
	uint8_t aead;
	uint64_t page;
	uint64_t version;
	uint64_t csum;                  /* plain only */
	uint32_t epoch;                 /* sealed only */
};

/* How a device's records are framed, and its key.  Read-only once set
 * up, so every thread uses one.  Keep it in locked memory (the store
 * does); rec_key_wipe() clears it. */
struct rec_key {
	crypto_aead_aes256gcm_state aes;  /* expanded AES key (AES-GCM only) */
	uint8_t key[REC_KEY_SIZE];
	uint8_t uuid[FM_UUID_LEN];
	uint32_t epoch;
	uint8_t aead;                   /* enum rec_aead */
};

static inline uint32_t rec_len(uint32_t plen) { return REC_HDR_SIZE + plen; }

/* --- plain format ----------------------------------------------------- */

/* The payload already sits at rec + REC_HDR_SIZE; write the header in
 * front of it, checksum included.  Returns the record length. */
uint32_t rec_seal(uint8_t *rec, uint64_t page, uint64_t version,
		  uint8_t algo, uint16_t plen);

/* Parse and verify the plain record at rec, of which avail bytes are
 * present.  0, or -EBADMSG (bad magic, length, algo, flags or checksum). */
int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *out);

/* --- either format, by key -------------------------------------------- */

/* aead: enum rec_aead.  key: REC_KEY_SIZE bytes (ignored for NONE).
 * 0, -ENOTSUP (AES-256-GCM without AES-NI on this CPU), -EINVAL. */
int rec_key_init(struct rec_key *k, int aead, const uint8_t *key,
		 const uint8_t uuid[FM_UUID_LEN], uint32_t epoch);
void rec_key_wipe(struct rec_key *k);
/* Is the algorithm usable here (AES-256-GCM needs AES-NI and PCLMUL)? */
int rec_aead_available(int aead);
const char *rec_aead_name(int aead);
/* By name ("none", "aes256gcm", "xchacha20poly1305"): the enum, or -1. */
int rec_aead_by_name(const char *name);

/* Payload bytes a record of dlen payload bytes takes after its header. */
static inline uint32_t rec_plen_for(const struct rec_key *k, uint32_t dlen)
{
	return k->aead == REC_AEAD_NONE ? dlen : dlen + REC_TAG_SIZE;
}

/* Frame dlen payload bytes at src as a record at rec (REC_MAX_LEN room)
 * in k's format: a sealed payload is encrypted from src, which must not
 * overlap the record; a plain one is copied unless src is already
 * rec + REC_HDR_SIZE.  Returns the record length. */
uint32_t rec_put(const struct rec_key *k, uint8_t *rec, const uint8_t *src,
		 uint64_t page, uint64_t version, uint8_t algo, uint16_t dlen);

/* The header alone, checked for shape in k's format (a record of the
 * other format, or another algorithm, is -EBADMSG), nothing verified:
 * for a record already opened once (the cleaner's scan after loading). */
int rec_parse(const struct rec_key *k, const uint8_t *rec, size_t avail,
	      struct rec_hdr *out);

/* Parse and verify the record at rec (avail bytes present) in k's
 * format and find its payload (h->dlen bytes).  Plain: *payload points
 * into rec.  Sealed: authenticated, then decrypted into dst
 * (REC_MAX_PLEN bytes, not overlapping rec), and *payload = dst; on
 * failure dst holds nothing useful.  0, or -EBADMSG (malformed, wrong
 * checksum, or for a sealed record one that fails to open: forged,
 * replayed, moved, of another device or damaged). */
int rec_open(const struct rec_key *k, const uint8_t *rec, size_t avail,
	     struct rec_hdr *h, uint8_t *dst, const uint8_t **payload);

#endif
