/* auth.h — client identities and their challenge–response (libsodium
 * HMAC-SHA-256).
 *
 * A client is a name and a key.  The key is derived from the cluster
 * secret and the name (fm_identity_derive), so a memserver, which holds
 * the secret, can compute any client's key from the name in HELLO and
 * needs no list of clients; a client given only its key file cannot act
 * as another name.  A client started with the secret itself acts as the
 * reserved name FM_CLUSTER_NAME.
 *
 * Neither key nor secret crosses the wire.  Each side sends a fresh
 * random nonce; the client proves it holds its key with a MAC over both
 * nonces, its device, its name and the server's boot id, and the server
 * answers with its own MAC so the client knows it reached a server that
 * holds the secret.  Verification is constant-time.
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

#define FM_KEY_LEN 32
/* The name a client holding the cluster secret (not a key file) acts as;
 * no key file can be made for it. */
#define FM_CLUSTER_NAME "cluster"

struct fm_identity {
	char name[FM_NAME_MAX + 1];
	uint8_t key[FM_KEY_LEN];
};

/* key = HMAC-SHA-256(secret, "farmem client key v1" NUL name).  0, or
 * -EINVAL for a name fm_client_name_check() refuses. */
int fm_identity_derive(const struct fm_secret *s, const char *name,
		       struct fm_identity *out);

/* One authenticated session, as both ends see it once AUTH is done: who,
 * for which device, and the key and nonces that authenticated it.  The
 * per-frame channel keys are derived from exactly key + both nonces. */
struct fm_auth_session {
	char name[FM_NAME_MAX + 1];
	uint8_t uuid[FM_UUID_LEN];
	uint64_t boot_id;                      /* the memserver's, from HELLO */
	uint8_t key[FM_KEY_LEN];               /* the client's key */
	uint8_t client_nonce[FM_NONCE_LEN];
	uint8_t server_nonce[FM_NONCE_LEN];
};

int fm_auth_init(void);                     /* sodium_init(); 0 or -EIO */
void fm_random(void *buf, size_t len);       /* randombytes_buf */

enum fm_auth_role { FM_AUTH_CLIENT, FM_AUTH_SERVER };

/* The MAC role sends over the session's transcript (protocol.h, AUTH). */
void fm_auth_mac(const struct fm_auth_session *a, enum fm_auth_role role,
		 uint8_t out[FM_MAC_LEN]);
/* Constant-time check: 0 when mac is right, -EACCES otherwise. */
int fm_auth_verify(const struct fm_auth_session *a, enum fm_auth_role role,
		   const uint8_t mac[FM_MAC_LEN]);
/* Wipe keys from memory (sodium_memzero). */
void fm_wipe(void *p, size_t len);

/* Device identity text form: 36-char UUID.  0 or -EINVAL. */
int fm_uuid_parse(const char *s, uint8_t out[FM_UUID_LEN]);
void fm_uuid_format(const uint8_t u[FM_UUID_LEN], char out[37]);
void fm_uuid_generate(uint8_t out[FM_UUID_LEN]);

#endif
