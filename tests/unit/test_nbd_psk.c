/* test_nbd_psk.c — the "username:hexkey" PSK file parser of serve's
 * --tls-psk: what psktool writes is read back exactly; every malformed
 * line is refused with its number; a missing file is an error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ublk-farmem/frontend/nbd/nbd_psk.h"
#include "tests/unit/tap.h"

#define KEY32 "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static char err[512];

static int parse(const char *text, struct nbd_psk_table *t)
{
	err[0] = '\0';
	return nbd_psk_parse(text, strlen(text), "keys.psk", t, err, sizeof(err));
}

/* The text is refused, and err names line and reason. */
static int refused(const char *text, const char *line, const char *why)
{
	struct nbd_psk_table t;
	int rc = parse(text, &t);

	if (rc != -EINVAL || !strstr(err, line) || !strstr(err, why)) {
		printf("#   '%s': rc %d err '%s'\n", text, rc, err);
		return 0;
	}
	return t.e == NULL && t.n == 0;
}

static int test_psktool_lines(void)
{
	struct nbd_psk_table t;
	const struct nbd_psk_entry *e;

	CHECK(parse("alice:" KEY32 "\nbob:00112233445566778899AABBCCDDEEFF\n", &t) == 0);
	CHECK(t.n == 2);
	e = nbd_psk_find(&t, "alice");
	CHECK(e && e->key_len == 32);
	for (int i = 0; i < 32; i++)
		CHECK(e->key[i] == i);
	e = nbd_psk_find(&t, "bob");
	CHECK(e && e->key_len == 16 && e->key[0] == 0x00 && e->key[10] == 0xaa &&
	      e->key[15] == 0xff);
	CHECK(nbd_psk_find(&t, "mallory") == NULL);
	CHECK(nbd_psk_find(&t, "alic") == NULL);
	nbd_psk_free(&t);
	CHECK(t.e == NULL && t.n == 0);
	return 0;
}

static int test_blank_comment_crlf_no_final_newline(void)
{
	struct nbd_psk_table t;

	CHECK(parse("# keys\n\nalice:" KEY32 "\r\n\ncarol:" KEY32, &t) == 0);
	CHECK(t.n == 2);
	CHECK(nbd_psk_find(&t, "carol") && nbd_psk_find(&t, "carol")->key_len == 32);
	nbd_psk_free(&t);
	return 0;
}

static int test_malformed_lines(void)
{
	CHECK(refused("", "line 1", "no username:hexkey"));
	CHECK(refused("# only a comment\n", "line 1", "no username:hexkey"));
	CHECK(refused("alice " KEY32 "\n", "line 1", "not username:hexkey"));
	CHECK(refused("alice:" KEY32 "\n:" KEY32 "\n", "line 2", "empty user name"));
	CHECK(refused("alice:0011223344556677889900112233445\n", "line 1", "odd number"));
	CHECK(refused("alice:0011223344556677\n", "line 1", "shorter than 16 bytes"));
	CHECK(refused("alice:" KEY32 KEY32 "00\n", "line 1", "longer than 64 bytes"));
	CHECK(refused("alice:0011223344556677889900112233445g\n", "line 1",
		      "not hexadecimal"));
	CHECK(refused("alice:" KEY32 ":\n", "line 1", "odd number"));
	CHECK(refused("alice:" KEY32 "\n\nalice:" KEY32 "\n", "line 3", "given twice"));
	CHECK(refused("al\tice:" KEY32 "\n", "line 1", "control character"));
	return 0;
}

static int test_limits(void)
{
	char user[NBD_PSK_USER_MAX + 2], text[512];
	struct nbd_psk_table t;

	memset(user, 'u', sizeof(user) - 1);
	user[sizeof(user) - 1] = '\0';
	snprintf(text, sizeof(text), "%s:%s\n", user, KEY32);
	CHECK(refused(text, "line 1", "longer than 128 bytes"));
	user[NBD_PSK_USER_MAX] = '\0';
	snprintf(text, sizeof(text), "%s:%s\n", user, KEY32);
	CHECK(parse(text, &t) == 0 && t.n == 1);
	CHECK(nbd_psk_find(&t, user) != NULL);
	nbd_psk_free(&t);
	/* An embedded NUL is refused rather than cutting a line short. */
	CHECK(nbd_psk_parse("a:" KEY32 "\0x", 2 + 64 + 2, "keys.psk", &t, err,
			    sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "NUL byte"));
	return 0;
}

/* Many entries grow the table (the old arrays are wiped and freed). */
static int test_many(void)
{
	size_t cap = 300 * (16 + 65 + 1) + 1, len = 0;
	char *text = malloc(cap);
	struct nbd_psk_table t;
	int rc;

	CHECK(text);
	for (int i = 0; i < 300; i++)
		len += (size_t)snprintf(text + len, cap - len, "user%03d:%s\n", i, KEY32);
	rc = nbd_psk_parse(text, len, "keys.psk", &t, err, sizeof(err));
	free(text);
	CHECK(rc == 0 && t.n == 300);
	CHECK(nbd_psk_find(&t, "user000") && nbd_psk_find(&t, "user299"));
	nbd_psk_free(&t);
	return 0;
}

static int test_load_file(void)
{
	char path[] = "/tmp/farmem-psk-XXXXXX";
	struct nbd_psk_table t;
	int fd = mkstemp(path);
	const char *line = "alice:" KEY32 "\n";

	CHECK(fd >= 0);
	CHECK(write(fd, line, strlen(line)) == (ssize_t)strlen(line));
	close(fd);
	CHECK(nbd_psk_load(path, &t, err, sizeof(err)) == 0 && t.n == 1);
	nbd_psk_free(&t);
	unlink(path);
	CHECK(nbd_psk_load(path, &t, err, sizeof(err)) == -ENOENT);
	CHECK(strstr(err, path) != NULL);
	CHECK(nbd_psk_load("/tmp", &t, err, sizeof(err)) == -EINVAL);
	return 0;
}

static const struct tap_case cases[] = {
	{ "psktool lines read back exactly", test_psktool_lines },
	{ "blank lines, comments, CRLF, no final newline", test_blank_comment_crlf_no_final_newline },
	{ "malformed lines are refused with their number", test_malformed_lines },
	{ "user name and NUL limits", test_limits },
	{ "300 users", test_many },
	{ "load from a file; missing file and directory refused", test_load_file },
};

TAP_MAIN(cases)
