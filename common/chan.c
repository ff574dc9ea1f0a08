/* chan.c — per-direction keys and frame tags (see chan.h).
 *
 * Why our own tag and not TLS 1.3 with a PSK (GnuTLS):
 *  - The client's I/O path must never wait for memory (it is swap).
 *    GnuTLS allocates its record buffers and owns the socket's framing;
 *    here the loop batches a turn's frames into one sendmsg, lands READ
 *    data straight in the caller's page and computes tags into slots
 *    allocated at open.  A tag per frame keeps all of that.
 *  - Confidentiality on the wire buys little: page contents are sealed
 *    on the client before they leave (page sealing), what remains are
 *    segment ids and lengths.  What the channel must give is integrity,
 *    order and binding to the handshake, which a MAC gives at the cost
 *    of one Poly1305 pass instead of a cipher pass plus a MAC.
 *  - RDMA control frames travel as SEND messages, not a byte stream: a
 *    TLS session does not fit them, a per-message tag does.
 *  - No new dependency; the code to audit is this file.
 * What TLS would give and this does not: hiding metadata (ids, sizes)
 * from an eavesdropper, and forward secrecy (here whoever steals the key
 * can forge on connections still open; recorded ones are over).
 *
 * Construction: k_dir = HMAC-SHA-256(key, label_dir | client_nonce |
 * server_nonce), with one label per direction.  The tag of frame number
 * n in a direction is Poly1305 over the frame under the one-time key
 * ChaCha20(k_dir, nonce = n as 8 LE bytes | 4 zero bytes) — exactly
 * what crypto_aead_chacha20poly1305_ietf computes over associated data,
 * done incrementally so a scattered frame needs no copy.  One-time keys
 * never repeat: n never repeats under one k_dir, and k_dir is fresh per
 * connection (both nonces) and per direction (the labels).
 */
#include "chan.h"

#include <errno.h>
#include <string.h>

static const char c2s_label[] = "farmem-chan-c2s-v1";
static const char s2c_label[] = "farmem-chan-s2c-v1";

static uint64_t rejected;   /* atomic */

static void derive_one(const uint8_t *key, size_t keylen, const char *label,
		       const uint8_t client_nonce[FM_NONCE_LEN],
		       const uint8_t server_nonce[FM_NONCE_LEN],
		       uint8_t out[FM_CHAN_KEY_LEN])
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, key, keylen);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label));
	crypto_auth_hmacsha256_update(&st, client_nonce, FM_NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, server_nonce, FM_NONCE_LEN);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

void fm_chan_derive(const uint8_t *key, size_t keylen,
		    const uint8_t client_nonce[FM_NONCE_LEN],
		    const uint8_t server_nonce[FM_NONCE_LEN],
		    uint8_t c2s[FM_CHAN_KEY_LEN], uint8_t s2c[FM_CHAN_KEY_LEN])
{
	derive_one(key, keylen, c2s_label, client_nonce, server_nonce, c2s);
	derive_one(key, keylen, s2c_label, client_nonce, server_nonce, s2c);
}

void fm_chan_init(struct fm_chan *ch, enum fm_chan_role role,
		  const uint8_t *key, size_t keylen,
		  const uint8_t client_nonce[FM_NONCE_LEN],
		  const uint8_t server_nonce[FM_NONCE_LEN])
{
	uint8_t c2s[FM_CHAN_KEY_LEN], s2c[FM_CHAN_KEY_LEN];

	fm_chan_derive(key, keylen, client_nonce, server_nonce, c2s, s2c);
	memcpy(ch->tx.key, role == FM_CHAN_CLIENT ? c2s : s2c, FM_CHAN_KEY_LEN);
	memcpy(ch->rx.key, role == FM_CHAN_CLIENT ? s2c : c2s, FM_CHAN_KEY_LEN);
	ch->tx.seq = ch->rx.seq = 0;
	ch->up = 1;
	sodium_memzero(c2s, sizeof(c2s));
	sodium_memzero(s2c, sizeof(s2c));
}

void fm_chan_wipe(struct fm_chan *ch)
{
	sodium_memzero(ch, sizeof(*ch));
}

void fm_chan_mac_begin(struct fm_chan_mac *m, const struct fm_chan_dir *d)
{
	uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = { 0 };
	uint8_t otk[crypto_onetimeauth_poly1305_KEYBYTES];

	put_le64(nonce, d->seq);
	crypto_stream_chacha20_ietf(otk, sizeof(otk), nonce, d->key);
	crypto_onetimeauth_poly1305_init(&m->st, otk);
	sodium_memzero(otk, sizeof(otk));
}

void fm_chan_mac_update(struct fm_chan_mac *m, const void *p, size_t len)
{
	if (len)
		crypto_onetimeauth_poly1305_update(&m->st, p, len);
}

void fm_chan_mac_seal(struct fm_chan_mac *m, struct fm_chan_dir *d,
		      uint8_t tag[FM_CHAN_TAG_LEN])
{
	crypto_onetimeauth_poly1305_final(&m->st, tag);
	d->seq++;
}

int fm_chan_mac_check(struct fm_chan_mac *m, struct fm_chan_dir *d,
		      const uint8_t tag[FM_CHAN_TAG_LEN])
{
	uint8_t want[FM_CHAN_TAG_LEN];
	int ok;

	crypto_onetimeauth_poly1305_final(&m->st, want);
	ok = crypto_verify_16(want, tag) == 0;
	sodium_memzero(want, sizeof(want));
	if (!ok)
		return -EBADMSG;
	d->seq++;
	return 0;
}

static void mac_iov(struct fm_chan_mac *m, const struct fm_chan_dir *d,
		    const struct iovec *iov, int n)
{
	fm_chan_mac_begin(m, d);
	for (int i = 0; i < n; i++)
		fm_chan_mac_update(m, iov[i].iov_base, iov[i].iov_len);
}

void fm_chan_seal_iov(struct fm_chan_dir *d, const struct iovec *iov, int n,
		      uint8_t tag[FM_CHAN_TAG_LEN])
{
	struct fm_chan_mac m;

	mac_iov(&m, d, iov, n);
	fm_chan_mac_seal(&m, d, tag);
}

int fm_chan_check_iov(struct fm_chan_dir *d, const struct iovec *iov, int n,
		      const uint8_t tag[FM_CHAN_TAG_LEN])
{
	struct fm_chan_mac m;

	mac_iov(&m, d, iov, n);
	return fm_chan_mac_check(&m, d, tag);
}

int fm_chan_check_frame(struct fm_chan_dir *d, const uint8_t *frame, size_t len,
			const uint8_t tag[FM_CHAN_TAG_LEN])
{
	struct iovec iov = { .iov_base = (void *)frame, .iov_len = len };

	return fm_chan_check_iov(d, &iov, 1, tag);
}

void fm_chan_count_reject(void)
{
	__atomic_add_fetch(&rejected, 1, __ATOMIC_RELAXED);
}

uint64_t fm_chan_rejected(void)
{
	return __atomic_load_n(&rejected, __ATOMIC_RELAXED);
}
