/* auth.h — shared-secret challenge–response (libsodium HMAC-SHA-256).
 *
 * The secret never crosses the wire.  Each side sends a fresh random
 * nonce; the client proves knowledge of the secret with a MAC over both
 * nonces and its device identity, and the server answers with its own MAC
 * so the client knows it reached a server holding the same secret.
 * Verification is constant-time (crypto_auth_hmacsha256_verify).
 */
#ifndef FARMEM_AUTH_H
#define FARMEM_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include "protocol.h"

#define FM_SECRET_MIN 16
#define FM_SECRET_MAX 1024

struct fm_secret {
	uint8_t bytes[FM_SECRET_MAX];
	size_t len;
};

/* Read a secret file: at least FM_SECRET_MIN bytes after stripping one
 * trailing newline.  Warns (does not fail) when group/other can read it.
 * Returns 0 or -errno; err explains. */
int fm_secret_load(const char *path, struct fm_secret *s, char *err, size_t errlen);

int fm_auth_init(void);                     /* sodium_init(); 0 or -EIO */
void fm_random(void *buf, size_t len);       /* randombytes_buf */

enum fm_auth_role { FM_AUTH_CLIENT, FM_AUTH_SERVER };

/* MAC for role over (first nonce = own side's peer's nonce per protocol.h). */
void fm_auth_mac(const struct fm_secret *s, enum fm_auth_role role,
		 const uint8_t client_nonce[FM_NONCE_LEN],
		 const uint8_t server_nonce[FM_NONCE_LEN],
		 const uint8_t uuid[FM_UUID_LEN], uint8_t out[FM_MAC_LEN]);
/* Constant-time check: 0 when mac is right, -EACCES otherwise. */
int fm_auth_verify(const struct fm_secret *s, enum fm_auth_role role,
		   const uint8_t client_nonce[FM_NONCE_LEN],
		   const uint8_t server_nonce[FM_NONCE_LEN],
		   const uint8_t uuid[FM_UUID_LEN], const uint8_t mac[FM_MAC_LEN]);

/* Device identity text form: 36-char UUID.  0 or -EINVAL. */
int fm_uuid_parse(const char *s, uint8_t out[FM_UUID_LEN]);
void fm_uuid_format(const uint8_t u[FM_UUID_LEN], char out[37]);
void fm_uuid_generate(uint8_t out[FM_UUID_LEN]);

#endif
