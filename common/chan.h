/* chan.h — the protected channel: every frame after AUTH carries a tag.
 *
 * After HELLO/AUTH both sides hold the key that authenticated the
 * handshake and both nonces.  From them each side derives two
 * directional keys (client-to-server, server-to-client) and from then on
 * every frame, in both directions, is followed on the wire by a
 * FM_CHAN_TAG_LEN-byte tag over its header and payload (the trailer is
 * not counted in the header's len).  Each direction numbers its frames
 * from 0; the number is not sent but goes into the tag, so a frame that
 * is replayed, reordered, dropped, injected, taken from the other
 * direction or from another connection fails the check.  A failure ends
 * the connection: after it the stream cannot be trusted.
 *
 * The tag is Poly1305 under a one-time key that ChaCha20 makes from the
 * directional key and the frame's number (RFC 8439's construction, with
 * the frame as associated data and no ciphertext).  The updates are
 * incremental so the frame may be scattered (header here, page there)
 * and the caller never copies or allocates: the MAC state lives on the
 * caller's stack.
 */
#ifndef FARMEM_CHAN_H
#define FARMEM_CHAN_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "protocol.h"

#define FM_CHAN_TAG_LEN 16
#define FM_CHAN_KEY_LEN 32

/* One direction: its key and the number of the next frame. */
struct fm_chan_dir {
	uint8_t key[FM_CHAN_KEY_LEN];
	uint64_t seq;
};

/* Both directions of one connection, as one side sees them. */
struct fm_chan {
	struct fm_chan_dir tx;    /* frames this side sends */
	struct fm_chan_dir rx;    /* frames this side receives */
	int up;                   /* keys installed: frames carry tags */
};

enum fm_chan_role { FM_CHAN_CLIENT, FM_CHAN_SERVER };

/* One frame's tag being computed. */
struct fm_chan_mac {
	crypto_onetimeauth_poly1305_state st;
};

/* The one key derivation: the key that authenticated the handshake
 * (keylen bytes, any length) and both nonces give the two directional
 * keys.  Distinct labels keep them apart from each other and from the
 * AUTH proofs, which travel in the clear. */
void fm_chan_derive(const uint8_t *key, size_t keylen,
		    const uint8_t client_nonce[FM_NONCE_LEN],
		    const uint8_t server_nonce[FM_NONCE_LEN],
		    uint8_t c2s[FM_CHAN_KEY_LEN], uint8_t s2c[FM_CHAN_KEY_LEN]);

/* Keys for role's side, numbers from 0; ch->up set. */
void fm_chan_init(struct fm_chan *ch, enum fm_chan_role role,
		  const uint8_t *key, size_t keylen,
		  const uint8_t client_nonce[FM_NONCE_LEN],
		  const uint8_t server_nonce[FM_NONCE_LEN]);
/* Forget the keys (ch->up cleared). */
void fm_chan_wipe(struct fm_chan *ch);

/* Incremental: begin with the direction's next number, feed the frame's
 * bytes in order, then seal (sender) or check (receiver).  Both step the
 * direction's number; check only when the tag is right. */
void fm_chan_mac_begin(struct fm_chan_mac *m, const struct fm_chan_dir *d);
void fm_chan_mac_update(struct fm_chan_mac *m, const void *p, size_t len);
void fm_chan_mac_seal(struct fm_chan_mac *m, struct fm_chan_dir *d,
		      uint8_t tag[FM_CHAN_TAG_LEN]);
/* 0, or -EBADMSG (constant-time compare). */
int fm_chan_mac_check(struct fm_chan_mac *m, struct fm_chan_dir *d,
		      const uint8_t tag[FM_CHAN_TAG_LEN]);

/* The same over a frame given as iovecs. */
void fm_chan_seal_iov(struct fm_chan_dir *d, const struct iovec *iov, int n,
		      uint8_t tag[FM_CHAN_TAG_LEN]);
int fm_chan_check_iov(struct fm_chan_dir *d, const struct iovec *iov, int n,
		      const uint8_t tag[FM_CHAN_TAG_LEN]);
/* A contiguous frame (header and payload) followed by its tag. */
int fm_chan_check_frame(struct fm_chan_dir *d, const uint8_t *frame, size_t len,
			const uint8_t tag[FM_CHAN_TAG_LEN]);

/* Frames refused in this process so far (every connection, either
 * side): for metrics.  The side that refuses calls fm_chan_count_reject. */
void fm_chan_count_reject(void);
uint64_t fm_chan_rejected(void);

#endif
