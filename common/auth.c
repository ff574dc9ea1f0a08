/* auth.c — shared secret, challenge–response and device identities.
 *
 * All cryptography is libsodium's: HMAC-SHA-256 for the proofs, its
 * constant-time verify, and its CSPRNG for nonces and identities.
 */
#include "auth.h"
#include "log.h"
#include "parse.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Domain separation: a MAC of one kind can never pass for another. */
static const char client_label[] = "farmem-client-v2";
static const char server_label[] = "farmem-server-v2";
static const char derive_label[] = "farmem client key v1"; /* then a NUL */

int fm_auth_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

void fm_random(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}

static int read_all(int fd, uint8_t *buf, size_t cap, size_t *len)
{
	size_t got = 0;

	for (;;) {
		ssize_t n = read(fd, buf + got, cap - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
		if (got == cap)
			return -EFBIG;
	}
	*len = got;
	return 0;
}

int fm_secret_load(const char *path, struct fm_secret *s, char *err, size_t errlen)
{
	struct stat st;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "secret file %s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & 077))
		log_warn("secret file %s is readable by group or others (mode %03o); chmod 600 it",
			 path, (unsigned)(st.st_mode & 0777));
	rc = read_all(fd, s->bytes, sizeof(s->bytes), &s->len);
	close(fd);
	if (rc == -EFBIG) {
		snprintf(err, errlen, "secret file %s: longer than %d bytes", path,
			 FM_SECRET_MAX - 1);
		return -EINVAL;
	}
	if (rc < 0) {
		snprintf(err, errlen, "secret file %s: %s", path, strerror(-rc));
		return rc;
	}
	if (s->len && s->bytes[s->len - 1] == '\n')
		s->len--;
	if (s->len < FM_SECRET_MIN) {
		snprintf(err, errlen,
			 "secret file %s: %zu bytes, need at least %d (e.g. head -c 32 /dev/urandom | base64 > %s)",
			 path, s->len, FM_SECRET_MIN, path);
		sodium_memzero(s, sizeof(*s));
		return -EINVAL;
	}
	return 0;
}

int fm_identity_derive(const struct fm_secret *s, const char *name,
		       struct fm_identity *out)
{
	crypto_auth_hmacsha256_state st;
	size_t n = strnlen(name, FM_NAME_MAX + 1);

	if (fm_client_name_check(name, n) < 0)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	memcpy(out->name, name, n);
	crypto_auth_hmacsha256_init(&st, s->bytes, s->len);
	/* The NUL ends the label: no name can extend it. */
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)derive_label,
				      sizeof(derive_label));
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)name, n);
	crypto_auth_hmacsha256_final(&st, out->key);
	sodium_memzero(&st, sizeof(st));
	return 0;
}

void fm_wipe(void *p, size_t len)
{
	sodium_memzero(p, len);
}

void fm_auth_mac(const struct fm_auth_session *a, enum fm_auth_role role,
		 uint8_t out[FM_MAC_LEN])
{
	crypto_auth_hmacsha256_state st;
	const uint8_t *first = role == FM_AUTH_CLIENT ? a->server_nonce : a->client_nonce;
	const uint8_t *second = role == FM_AUTH_CLIENT ? a->client_nonce : a->server_nonce;
	const char *label = role == FM_AUTH_CLIENT ? client_label : server_label;
	uint8_t n = (uint8_t)strnlen(a->name, FM_NAME_MAX);
	uint8_t boot[8];

	put_le64(boot, a->boot_id);
	crypto_auth_hmacsha256_init(&st, a->key, FM_KEY_LEN);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)label, strlen(label));
	crypto_auth_hmacsha256_update(&st, first, FM_NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, second, FM_NONCE_LEN);
	crypto_auth_hmacsha256_update(&st, a->uuid, FM_UUID_LEN);
	crypto_auth_hmacsha256_update(&st, boot, sizeof(boot));
	crypto_auth_hmacsha256_update(&st, &n, 1);
	crypto_auth_hmacsha256_update(&st, (const uint8_t *)a->name, n);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

int fm_auth_verify(const struct fm_auth_session *a, enum fm_auth_role role,
		   const uint8_t mac[FM_MAC_LEN])
{
	uint8_t want[FM_MAC_LEN];
	int ok;

	fm_auth_mac(a, role, want);
	ok = sodium_memcmp(want, mac, FM_MAC_LEN) == 0;
	sodium_memzero(want, sizeof(want));
	return ok ? 0 : -EACCES;
}

int fm_uuid_parse(const char *s, uint8_t out[FM_UUID_LEN])
{
	int n = 0;

	if (!s || strlen(s) != 36)
		return -EINVAL;
	for (int i = 0; i < 36; i++) {
		int hi, lo;

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			continue;
		}
		hi = hex_digit(s[i]);
		lo = hex_digit(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[n++] = (uint8_t)(hi << 4 | lo);
		i++;
	}
	return 0;
}

void fm_uuid_format(const uint8_t u[FM_UUID_LEN], char out[37])
{
	snprintf(out, 37,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
		 u[10], u[11], u[12], u[13], u[14], u[15]);
}

void fm_uuid_generate(uint8_t out[FM_UUID_LEN])
{
	randombytes_buf(out, FM_UUID_LEN);
	out[6] = (uint8_t)((out[6] & 0x0f) | 0x40); /* version 4 */
	out[8] = (uint8_t)((out[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}
