/* test_identity.c — client identities: keys derived from the secret
 * and a name, what the handshake MAC binds, and the key file format. */
#include "auth.h"
#include "keyfile.h"
#include "log.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct fm_secret secret(char fill)
{
	struct fm_secret s = { .len = 32 };

	memset(s.bytes, fill, s.len);
	return s;
}

static int t_derive(void)
{
	struct fm_secret s = secret('s'), t = secret('t');
	struct fm_identity a, a2, b, at;

	CHECK(fm_identity_derive(&s, "alice", &a) == 0 && strcmp(a.name, "alice") == 0);
	CHECK(fm_identity_derive(&s, "alice", &a2) == 0);
	CHECK(memcmp(a.key, a2.key, FM_KEY_LEN) == 0);          /* deterministic */
	CHECK(fm_identity_derive(&s, "bob", &b) == 0);
	CHECK(memcmp(a.key, b.key, FM_KEY_LEN) != 0);           /* per name */
	CHECK(fm_identity_derive(&t, "alice", &at) == 0);
	CHECK(memcmp(a.key, at.key, FM_KEY_LEN) != 0);          /* per secret */
	/* A name that is a prefix of another gets an unrelated key. */
	CHECK(fm_identity_derive(&s, "alic", &b) == 0 && memcmp(a.key, b.key, FM_KEY_LEN));
	CHECK(fm_identity_derive(&s, "Alice", &b) == -EINVAL);
	CHECK(fm_identity_derive(&s, "", &b) == -EINVAL);
	CHECK(fm_identity_derive(&s, "a/b", &b) == -EINVAL);
	/* The key is not the secret, nor the secret's bytes. */
	CHECK(memcmp(a.key, s.bytes, FM_KEY_LEN) != 0);
	return 0;
}

/* Each part of the transcript is bound: change one, the MAC fails. */
static int t_mac_binds_transcript(void)
{
	struct fm_secret s = secret('s');
	struct fm_identity id;
	struct fm_auth_session a = { .boot_id = 7 }, b;
	uint8_t mac[FM_MAC_LEN];

	CHECK(fm_identity_derive(&s, "alice", &id) == 0);
	memcpy(a.name, id.name, sizeof(a.name));
	memcpy(a.key, id.key, FM_KEY_LEN);
	memset(a.uuid, 1, FM_UUID_LEN);
	memset(a.client_nonce, 2, FM_NONCE_LEN);
	memset(a.server_nonce, 3, FM_NONCE_LEN);
	fm_auth_mac(&a, FM_AUTH_CLIENT, mac);
	CHECK(fm_auth_verify(&a, FM_AUTH_CLIENT, mac) == 0);
	CHECK(fm_auth_verify(&a, FM_AUTH_SERVER, mac) == -EACCES);  /* roles differ */
	b = a; b.boot_id = 8;
	CHECK(fm_auth_verify(&b, FM_AUTH_CLIENT, mac) == -EACCES);
	b = a; b.uuid[0] ^= 1;
	CHECK(fm_auth_verify(&b, FM_AUTH_CLIENT, mac) == -EACCES);
	b = a; b.client_nonce[31] ^= 1;
	CHECK(fm_auth_verify(&b, FM_AUTH_CLIENT, mac) == -EACCES);
	b = a; b.server_nonce[0] ^= 1;
	CHECK(fm_auth_verify(&b, FM_AUTH_CLIENT, mac) == -EACCES);
	b = a; snprintf(b.name, sizeof(b.name), "alicf");
	CHECK(fm_auth_verify(&b, FM_AUTH_CLIENT, mac) == -EACCES);
	b = a; b.key[5] ^= 1;
	CHECK(fm_auth_verify(&b, FM_AUTH_CLIENT, mac) == -EACCES);
	return 0;
}

static const char good_hex[] =
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static int parse(const char *text, struct fm_identity *id, char *why)
{
	return fm_keyfile_parse(text, strlen(text), id, why, 160);
}

static int t_keyfile_parse(void)
{
	struct fm_identity id;
	char why[160], text[512];

	snprintf(text, sizeof(text), "# made by hand\n\nname = alice\nkey = %s\n", good_hex);
	CHECK(parse(text, &id, why) == 0 && strcmp(id.name, "alice") == 0);
	CHECK(id.key[0] == 0 && id.key[31] == 0x1f);
	/* Blanks, CRLF, no final newline, either order. */
	snprintf(text, sizeof(text), "\tkey=%s\r\n  name\t=  b.o_b-1  ", good_hex);
	CHECK(parse(text, &id, why) == 0 && strcmp(id.name, "b.o_b-1") == 0);
	return 0;
}

/* Each refusal names the line and what is wrong. */
static int t_keyfile_refusals(void)
{
	static const struct { const char *fmt; const char *says; } bad[] = {
		{ "name = alice\n", "missing 'key'" },
		{ "key = %s\n", "missing 'name'" },
		{ "name = alice\nname = alice\nkey = %s\n", "line 2: second 'name'" },
		{ "name = alice\nkey = %s\nkey = %s\n", "line 3: second 'key'" },
		{ "name = Alice\nkey = %s\n", "line 1: name 'Alice'" },
		{ "name = cluster\nkey = %s\n", "reserved" },
		{ "name = alice\nkey = 00ff\n", "line 2: key is not 64 hex" },
		{ "name = alice\nkey = %sz\n", "key is not 64 hex" },
		{ "name = alice\nsecret = x\nkey = %s\n", "line 2: unknown key 'secret'" },
		{ "[client]\nname = alice\nkey = %s\n", "line 1: not 'name = ...'" },
		{ "name alice\nkey = %s\n", "line 1" },
		{ "", "missing 'name'" },
	};
	struct fm_identity id;
	char why[160], text[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-extra-args"
		snprintf(text, sizeof(text), bad[i].fmt, good_hex, good_hex);
#pragma GCC diagnostic pop
		why[0] = '\0';
		if (parse(text, &id, why) != -EINVAL || !strstr(why, bad[i].says)) {
			printf("#   case %zu: got '%s', want '%s'\n", i, why, bad[i].says);
			return 1;
		}
		/* Nothing half-parsed is left behind. */
		CHECK(id.name[0] == '\0');
	}
	/* A NUL inside, and a file too long. */
	snprintf(text, sizeof(text), "name = alice\nkey = %s\n", good_hex);
	text[3] = '\0';
	CHECK(fm_keyfile_parse(text, 20, &id, why, sizeof(why)) == -EINVAL && strstr(why, "NUL"));
	{
		static char big[FM_KEYFILE_MAX + 2];

		memset(big, '#', sizeof(big));
		CHECK(fm_keyfile_parse(big, sizeof(big), &id, why, sizeof(why)) == -EINVAL);
		CHECK(strstr(why, "longer"));
	}
	return 0;
}

static int t_keyfile_roundtrip_and_load(void)
{
	struct fm_secret s = secret('s');
	struct fm_identity id, back;
	char text[512], err[512], path[] = "/tmp/farmem-test-key-XXXXXX";
	int fd, n;

	CHECK(fm_identity_derive(&s, "node-7", &id) == 0);
	n = fm_keyfile_format(&id, text, sizeof(text));
	CHECK(n > 0);
	CHECK(fm_keyfile_format(&id, text, 20) == -ENOSPC);
	n = fm_keyfile_format(&id, text, sizeof(text));
	fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(write(fd, text, (size_t)n) == n);
	close(fd);
	CHECK(fm_keyfile_load(path, &back, err, sizeof(err)) == 0);
	CHECK(memcmp(&id, &back, sizeof(id)) == 0);
	/* Damage it: the error names the file and the line. */
	fd = open(path, O_WRONLY | O_APPEND);
	CHECK(fd >= 0 && write(fd, "name = x\n", 9) == 9);
	close(fd);
	CHECK(fm_keyfile_load(path, &back, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, path) && strstr(err, "line 4: second 'name'"));
	unlink(path);
	CHECK(fm_keyfile_load(path, &back, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, path));
	return 0;
}

static const struct tap_case cases[] = {
	{ "keys derive from secret and name, deterministically", t_derive },
	{ "the AUTH MAC binds name, key, uuid, nonces and boot id", t_mac_binds_transcript },
	{ "key files parse, with comments, blanks and CRLF", t_keyfile_parse },
	{ "key files: every refusal names its line", t_keyfile_refusals },
	{ "key files: format, load, and errors naming the file", t_keyfile_roundtrip_and_load },
};

__attribute__((constructor)) static void quiet(void)
{
	log_init("test_identity", LOG_LVL_ERR);
	if (fm_auth_init() < 0)
		abort();
}

TAP_MAIN(cases)
