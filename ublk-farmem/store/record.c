/* record.c — encode and verify stored page records (formats and the
 * nonce scheme: record.h). */
#include "record.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "checksum.h"
#include "codec.h"
#include "protocol.h"

#define AD_SIZE     (REC_HDR_SIZE + FM_UUID_LEN)
#define NONCE_MAX   24u

_Static_assert(crypto_aead_aes256gcm_KEYBYTES == REC_KEY_SIZE &&
	       crypto_aead_xchacha20poly1305_ietf_KEYBYTES == REC_KEY_SIZE,
	       "key sizes differ");
_Static_assert(crypto_aead_aes256gcm_ABYTES == REC_TAG_SIZE &&
	       crypto_aead_xchacha20poly1305_ietf_ABYTES == REC_TAG_SIZE,
	       "tag sizes differ");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES <= NONCE_MAX &&
	       crypto_aead_aes256gcm_NPUBBYTES >= 12, "nonce sizes");

/* --- plain ------------------------------------------------------------ */

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

/* Shape of a plain header; the checksum is left to the caller. */
static int plain_parse(const uint8_t *rec, size_t avail, struct rec_hdr *h)
{
	if (avail < REC_HDR_SIZE || get_le32(rec) != REC_MAGIC)
		return -EBADMSG;
	memset(h, 0, sizeof(*h));
	h->plen = h->dlen = get_le16(rec + 4);
	h->algo = rec[6];
	if (h->plen == 0 || h->plen > REC_MAX_PLEN || rec_len(h->plen) > avail ||
	    h->algo > FM_CODEC_MAX || rec[7] != 0)
		return -EBADMSG;
	/* A raw page is exactly one page; anything else claiming to be
	 * uncompressed cannot decode to 4096 bytes. */
	if (h->algo == FM_CODEC_NONE && h->plen != REC_MAX_PLEN)
		return -EBADMSG;
	h->page = get_le64(rec + 8);
	h->version = get_le64(rec + 16);
	h->csum = get_le64(rec + 24);
	return 0;
}

int rec_check(const uint8_t *rec, size_t avail, struct rec_hdr *out)
{
	struct rec_hdr h;

	if (plain_parse(rec, avail, &h) < 0 || h.csum != rec_csum(rec, h.plen))
		return -EBADMSG;
	if (out)
		*out = h;
	return 0;
}

/* --- keys and names --------------------------------------------------- */

static const char *const aead_names[] = {
	[REC_AEAD_NONE] = "none",
	[REC_AEAD_AES256GCM] = "aes256gcm",
	[REC_AEAD_XCHACHA20POLY1305] = "xchacha20poly1305",
};

const char *rec_aead_name(int aead)
{
	return aead >= 0 && aead <= REC_AEAD_MAX ? aead_names[aead] : "?";
}

int rec_aead_by_name(const char *name)
{
	for (int i = 0; i <= REC_AEAD_MAX; i++)
		if (!strcasecmp(name, aead_names[i]))
			return i;
	return -1;
}

int rec_aead_available(int aead)
{
	if (sodium_init() < 0)
		return 0;
	switch (aead) {
	case REC_AEAD_NONE:
	case REC_AEAD_XCHACHA20POLY1305:
		return 1;
	case REC_AEAD_AES256GCM:
		return crypto_aead_aes256gcm_is_available();
	}
	return 0;
}

int rec_key_init(struct rec_key *k, int aead, const uint8_t *key,
		 const uint8_t uuid[FM_UUID_LEN], uint32_t epoch)
{
	memset(k, 0, sizeof(*k));
	if (aead < 0 || aead > REC_AEAD_MAX)
		return -EINVAL;
	if (!rec_aead_available(aead))
		return -ENOTSUP;
	k->aead = (uint8_t)aead;
	k->epoch = epoch;
	memcpy(k->uuid, uuid, FM_UUID_LEN);
	if (aead == REC_AEAD_NONE)
		return 0;
	memcpy(k->key, key, REC_KEY_SIZE);
	/* The AES key schedule once, not per record. */
	if (aead == REC_AEAD_AES256GCM &&
	    crypto_aead_aes256gcm_beforenm(&k->aes, k->key) != 0) {
		rec_key_wipe(k);
		return -EINVAL;
	}
	return 0;
}

void rec_key_wipe(struct rec_key *k)
{
	sodium_memzero(k, sizeof(*k));
}

/* --- sealed ------------------------------------------------------------ */

static void sealed_ad(const struct rec_key *k, const uint8_t *hdr, uint8_t ad[AD_SIZE])
{
	memcpy(ad, hdr, REC_HDR_SIZE);
	memcpy(ad + REC_HDR_SIZE, k->uuid, FM_UUID_LEN);
}

static void sealed_nonce(uint64_t version, uint32_t epoch, uint8_t n[NONCE_MAX])
{
	memset(n, 0, NONCE_MAX);
	put_le64(n, version);
	put_le32(n + 8, epoch);
}

static int sealed_parse(const struct rec_key *k, const uint8_t *rec, size_t avail,
			struct rec_hdr *h)
{
	if (avail < REC_HDR_SIZE || get_le32(rec) != REC_MAGIC_SEALED)
		return -EBADMSG;
	memset(h, 0, sizeof(*h));
	h->plen = get_le16(rec + 4);
	h->algo = rec[6];
	h->aead = rec[7];
	if (h->plen <= REC_TAG_SIZE || h->plen > REC_MAX_PLEN + REC_TAG_SIZE ||
	    rec_len(h->plen) > avail || h->algo > FM_CODEC_MAX ||
	    h->aead != k->aead || get_le32(rec + 28) != 0)
		return -EBADMSG;
	h->dlen = (uint16_t)(h->plen - REC_TAG_SIZE);
	if (h->algo == FM_CODEC_NONE && h->dlen != REC_MAX_PLEN)
		return -EBADMSG;
	h->page = get_le64(rec + 8);
	h->version = get_le64(rec + 16);
	h->epoch = get_le32(rec + 24);
	return 0;
}

static uint32_t sealed_put(const struct rec_key *k, uint8_t *rec, const uint8_t *src,
			   uint64_t page, uint64_t version, uint8_t algo, uint16_t dlen)
{
	uint8_t ad[AD_SIZE], nonce[NONCE_MAX];
	uint8_t *c = rec + REC_HDR_SIZE, *tag = c + dlen;

	put_le32(rec, REC_MAGIC_SEALED);
	put_le16(rec + 4, (uint16_t)(dlen + REC_TAG_SIZE));
	rec[6] = algo;
	rec[7] = k->aead;
	put_le64(rec + 8, page);
	put_le64(rec + 16, version);
	put_le32(rec + 24, k->epoch);
	put_le32(rec + 28, 0);
	sealed_ad(k, rec, ad);
	sealed_nonce(version, k->epoch, nonce);
	/* Neither call can fail for lengths this small. */
	if (k->aead == REC_AEAD_AES256GCM)
		crypto_aead_aes256gcm_encrypt_detached_afternm(c, tag, NULL, src, dlen,
			ad, sizeof(ad), NULL, nonce, &k->aes);
	else
		crypto_aead_xchacha20poly1305_ietf_encrypt_detached(c, tag, NULL, src, dlen,
			ad, sizeof(ad), NULL, nonce, k->key);
	return rec_len(dlen + REC_TAG_SIZE);
}

static int sealed_open(const struct rec_key *k, const uint8_t *rec, const struct rec_hdr *h,
		       uint8_t *dst)
{
	uint8_t ad[AD_SIZE], nonce[NONCE_MAX];
	const uint8_t *c = rec + REC_HDR_SIZE, *tag = c + h->dlen;
	int rc;

	sealed_ad(k, rec, ad);
	sealed_nonce(h->version, h->epoch, nonce);
	if (k->aead == REC_AEAD_AES256GCM)
		rc = crypto_aead_aes256gcm_decrypt_detached_afternm(dst, NULL, c, h->dlen,
			tag, ad, sizeof(ad), nonce, &k->aes);
	else
		rc = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(dst, NULL, c, h->dlen,
			tag, ad, sizeof(ad), nonce, k->key);
	return rc == 0 ? 0 : -EBADMSG;
}

/* --- either ------------------------------------------------------------ */

uint32_t rec_put(const struct rec_key *k, uint8_t *rec, const uint8_t *src,
		 uint64_t page, uint64_t version, uint8_t algo, uint16_t dlen)
{
	if (k->aead != REC_AEAD_NONE)
		return sealed_put(k, rec, src, page, version, algo, dlen);
	if (src != rec + REC_HDR_SIZE)
		memcpy(rec + REC_HDR_SIZE, src, dlen);
	return rec_seal(rec, page, version, algo, dlen);
}

int rec_parse(const struct rec_key *k, const uint8_t *rec, size_t avail,
	      struct rec_hdr *out)
{
	if (k->aead == REC_AEAD_NONE)
		return plain_parse(rec, avail, out);
	return sealed_parse(k, rec, avail, out);
}

int rec_open(const struct rec_key *k, const uint8_t *rec, size_t avail,
	     struct rec_hdr *h, uint8_t *dst, const uint8_t **payload)
{
	/* A device's key decides the format: a plain record (which anyone
	 * can write, checksum and all) never opens on a sealed device. */
	if (k->aead == REC_AEAD_NONE) {
		if (rec_check(rec, avail, h) < 0)
			return -EBADMSG;
		*payload = rec + REC_HDR_SIZE;
		return 0;
	}
	if (sealed_parse(k, rec, avail, h) < 0 || sealed_open(k, rec, h, dst) < 0)
		return -EBADMSG;
	*payload = dst;
	return 0;
}
