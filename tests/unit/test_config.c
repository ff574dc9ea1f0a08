/* test_config.c — number, size, duration and address parsing, and the
 * memserver's config file and flags: good input is read right, bad input
 * is refused with a message naming the file (or flag), key and value. */
#include "config.h"
#include "parse.h"
#include "tap.h"
#include "../../memserver/memserver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/farmem-test-config.XXXXXX";

/* Write text to a file in tmpdir; returns its path (static buffer per
 * name, so each test keeps its own). */
static const char *write_file(const char *name, const char *text)
{
	static char paths[8][256];
	static int next;
	char *path = paths[next++ % 8];
	FILE *f;

	snprintf(path, 256, "%s/%s", tmpdir, name);
	unlink(path);
	f = fopen(path, "w");  /* 0600 under the umask main() sets */
	if (!f)
		return NULL;
	fputs(text, f);
	fclose(f);
	return path;
}

static int mentions(const char *err, const char *a, const char *b,
		    const char *c)
{
	int ok = strstr(err, a) && strstr(err, b) && strstr(err, c);

	if (!ok)
		printf("#   message was: %s\n", err);
	return ok;
}

/* ---- parse.c ---- */

static int t_size_good(void)
{
	static const struct { const char *s; uint64_t v; } good[] = {
		{ "0", 0 }, { "4096", 4096 }, { "4K", 4096 }, { "4k", 4096 },
		{ "1M", 1 << 20 }, { "64MiB", 64 << 20 }, { "3MB", 3 << 20 },
		{ "1G", 1ull << 30 }, { "2T", 2ull << 40 }, { "042", 42 },
		{ "16777215T", 16777215ull << 40 },
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CHECK(parse_size(good[i].s, &v) == 0);
		CHECK(v == good[i].v);
	}
	return 0;
}

static int t_size_bad(void)
{
	static const char *const bad[] = {
		"", "K", "-1", "+1", "1.5G", "1X", "1 G", " 1G", "1G ", "0x10",
		"1GG", "G1",
	};
	uint64_t v = 77;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse_size(bad[i], &v) < 0);
	CHECK(parse_size(NULL, &v) < 0);
	CHECK(parse_size("18446744073709551616", &v) == -ERANGE);
	CHECK(parse_size("16777216T", &v) == -ERANGE); /* 2^64 */
	CHECK(v == 77);                /* untouched on failure */
	return 0;
}

static int t_u64_i64(void)
{
	uint64_t u;
	int64_t i;

	CHECK(parse_u64("042", 0, 100, &u) == 0 && u == 42); /* not octal */
	CHECK(parse_u64("101", 0, 100, &u) == -ERANGE);
	CHECK(parse_u64("4a", 0, 100, &u) == -EINVAL);
	CHECK(parse_u64("-1", 0, 100, &u) == -EINVAL);
	CHECK(parse_u64("", 0, 100, &u) == -EINVAL);
	CHECK(parse_i64("-5", -10, 10, &i) == 0 && i == -5);
	CHECK(parse_i64("-11", -10, 10, &i) == -ERANGE);
	CHECK(parse_i64("-", -10, 10, &i) == -EINVAL);
	return 0;
}

static int t_duration(void)
{
	static const struct { const char *s; uint64_t ms; } good[] = {
		{ "30s", 30000 }, { "500ms", 500 }, { "5m", 300000 },
		{ "2min", 120000 }, { "1h", 3600000 }, { "10", 10000 },
		{ "0", 0 },
	};
	static const char *const bad[] = { "", "s", "1d", "-1s", "1.5s", "1 s",
					   "1S", "ms" };
	uint64_t v;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(parse_duration_ms(good[i].s, &v) == 0 && v == good[i].ms);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse_duration_ms(bad[i], &v) < 0);
	CHECK(parse_duration_ms("18446744073709551615h", &v) == -ERANGE);
	return 0;
}

static int t_bool(void)
{
	static const char *const yes[] = { "yes", "YES", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "Off", "0" };
	static const char *const bad[] = { "", "y", "2", "yess", "enabled" };
	int b;

	for (size_t i = 0; i < 5; i++)
		CHECK(parse_bool(yes[i], &b) == 0 && b == 1);
	for (size_t i = 0; i < 4; i++)
		CHECK(parse_bool(no[i], &b) == 0 && b == 0);
	for (size_t i = 0; i < 5; i++)
		CHECK(parse_bool(bad[i], &b) == -EINVAL);
	return 0;
}

static int t_addr_good(void)
{
	struct fm_addr a;
	char text[320];

	CHECK(parse_addr("tcp://127.0.0.1:7070", 0, &a) == 0);
	CHECK(a.kind == ADDR_TCP && !strcmp(a.host, "127.0.0.1") && a.port == 7070);
	CHECK(!strcmp(addr_str(&a, text, sizeof(text)), "tcp://127.0.0.1:7070"));
	CHECK(parse_addr("tcp://mem-1.example_net:1", 0, &a) == 0);
	CHECK(!strcmp(a.host, "mem-1.example_net") && a.port == 1);
	CHECK(parse_addr("tcp://[::1]:65535", 0, &a) == 0);
	CHECK(!strcmp(a.host, "::1") && a.port == 65535);
	CHECK(!strcmp(addr_str(&a, text, sizeof(text)), "tcp://[::1]:65535"));
	CHECK(parse_addr("rdma://10.0.0.2:4791", 0, &a) == 0);
	CHECK(a.kind == ADDR_RDMA && a.port == 4791);
	CHECK(parse_addr("unix:/run/farmem.sock", 1, &a) == 0);
	CHECK(a.kind == ADDR_UNIX && !strcmp(a.path, "/run/farmem.sock"));
	return 0;
}

static int t_addr_bad(void)
{
	static const char *const bad[] = {
		"", "127.0.0.1:7070", "tcp://", "tcp://:7070", "tcp://h",
		"tcp://h:", "tcp://h:0", "tcp://h:65536", "tcp://h:70a",
		"tcp://h:-1", "tcp://[::1]7070", "tcp://::1:7070", "tcp://[::1:70",
		"tcp://h/x:1", "tcp://h x:1", "udp://h:1", "TCP://h:1",
		"unix:/run/x", "tcp://h:1:2",
	};
	struct fm_addr a;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_addr(bad[i], 0, &a) != -EINVAL) {
			printf("#   accepted '%s'\n", bad[i]);
			return 1;
		}
	}
	CHECK(parse_addr("unix:relative", 1, &a) == -EINVAL);
	CHECK(parse_addr("unix:", 1, &a) == -EINVAL);
	CHECK(parse_addr(NULL, 1, &a) == -EINVAL);
	return 0;
}

static int t_split_list(void)
{
	char s[] = "tcp://a:1, tcp://b:2,,tcp://c:3";
	char many[] = "a,b,c";
	char *items[3];

	CHECK(split_list(s, items, 3) == 3);
	CHECK(!strcmp(items[0], "tcp://a:1") && !strcmp(items[1], "tcp://b:2"));
	CHECK(!strcmp(items[2], "tcp://c:3"));
	CHECK(split_list(many, items, 2) == -E2BIG);
	return 0;
}

/* ---- config.c through the memserver's table ---- */

static int load(const char *text, struct ms_settings *s, char *err)
{
	const char *path = write_file("ms.conf", text);

	ms_settings_defaults(s);
	return ms_settings_load(s, path, err, CFG_ERR_LEN);
}

static int t_cfg_good(void)
{
	struct ms_settings s;
	char err[CFG_ERR_LEN] = "";

	CHECK(load("# comment\n[memserver]\nlisten = tcp://127.0.0.1:7070, "
		   "tcp://[::1]:7070\nsize = 2G\nsegment-size = 1M\n"
		   "lease = 90s\nhugepages = no\nallow-unlocked = yes\n"
		   "log = syslog\n", &s, err) == 0);
	CHECK(s.size == 2ull << 30 && s.segment_size == 1 << 20);
	CHECK(s.lease_ms == 90000 && s.allow_unlocked == 1);
	CHECK(!strcmp(s.hugepages, "no") && !strcmp(s.log, "syslog"));
	CHECK(strstr(s.listen, "tcp://[::1]:7070") != NULL);
	return 0;
}

static int t_cfg_defaults(void)
{
	struct ms_settings s;
	char err[CFG_ERR_LEN] = "";

	CHECK(load("[memserver]\nsize = 64M\n", &s, err) == 0);
	CHECK(s.segment_size == 4u << 20 && s.lease_ms == 60000);
	CHECK(!strcmp(s.hugepages, "auto") && !strcmp(s.log, "stderr"));
	CHECK(s.allow_unlocked == 0);
	return 0;
}

static int t_cfg_bad_values(void)
{
	static const struct { const char *key, *value; } bad[] = {
		{ "size", "lots" }, { "size", "1.5G" }, { "size", "512K" },
		{ "segment-size", "2G" }, { "segment-size", "1K" },
		{ "lease", "forever" }, { "allow-unlocked", "maybe" },
	};
	struct ms_settings s;
	char err[CFG_ERR_LEN], text[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "[memserver]\n%s = %s\n",
			 bad[i].key, bad[i].value);
		err[0] = '\0';
		CHECK(load(text, &s, err) == -EINVAL);
		CHECK(mentions(err, "ms.conf", bad[i].key, bad[i].value));
		CHECK(strstr(err, "ms.conf:2: ") != NULL);   /* the line, too */
	}
	/* Names match as iniparser reads them: any case, the last wins. */
	CHECK(load("[memserver]\nsize = 1G\n\n; size = 2G\n  SIZE = lots\n", &s, err) == -EINVAL);
	CHECK(mentions(err, "ms.conf:5: ", "size", "lots"));
	return 0;
}

static int t_cfg_unknown(void)
{
	struct ms_settings s;
	char err[CFG_ERR_LEN];

	CHECK(load("[memserver]\nsise = 1G\n", &s, err) == -EINVAL);
	CHECK(mentions(err, "ms.conf", "sise", "unknown"));
	CHECK(load("[device]\nsize = 1G\n", &s, err) == -EINVAL);
	CHECK(mentions(err, "ms.conf", "[device]", "unknown section"));
	CHECK(load("[memserver]\nsize = 1G\n[device]\nfoo = 1\n", &s, err) == -EINVAL);
	CHECK(mentions(err, "ms.conf:3: ", "device", "unknown"));
	CHECK(load("[memserver]\nsize = 1G\n[extra]\n", &s, err) == -EINVAL);
	CHECK(mentions(err, "ms.conf", "extra", "section"));
	/* A key above any section is not silently ignored. */
	CHECK(load("size = 1G\n[memserver]\n", &s, err) == -EINVAL);
	CHECK(mentions(err, "ms.conf:1: ", "size", "1G"));
	return 0;
}

static int t_cfg_missing_file(void)
{
	struct ms_settings s;
	char err[CFG_ERR_LEN], path[300];

	snprintf(path, sizeof(path), "%s/absent.conf", tmpdir);
	ms_settings_defaults(&s);
	CHECK(ms_settings_load(&s, path, err, sizeof(err)) == -ENOENT);
	CHECK(mentions(err, "absent.conf", "cannot read", ""));
	return 0;
}

static int t_flag_overrides_file(void)
{
	struct ms_settings s;
	char err[CFG_ERR_LEN];

	CHECK(load("[memserver]\nsize = 64M\nlease = 5s\n", &s, err) == 0);
	CHECK(ms_settings_set(&s, "memserver:size", "128M", "--size", err,
			      sizeof(err)) == 0);
	CHECK(s.size == 128u << 20 && s.lease_ms == 5000);
	CHECK(ms_settings_set(&s, "memserver:size", "big", "--size", err,
			      sizeof(err)) == -EINVAL);
	CHECK(mentions(err, "--size", "memserver:size", "big"));
	CHECK(s.size == 128u << 20);
	return 0;
}

static const char *secret_path(void)
{
	return write_file("secret", "0123456789abcdef0123456789abcdef\n");
}

static int complete_with(const char *text, char *err)
{
	static struct fm_secret secret;
	struct ms_settings s;
	struct ms_resolved r;
	char full[1024];

	snprintf(full, sizeof(full), "[memserver]\nsecret-file = %s\n%s",
		 secret_path(), text);
	if (load(full, &s, err) < 0)
		return -100;
	return ms_settings_complete(&s, &r, &secret, err, CFG_ERR_LEN);
}

static int t_complete_good(void)
{
	static struct fm_secret secret;
	struct ms_settings s;
	struct ms_resolved r;
	char err[CFG_ERR_LEN], text[512];

	snprintf(text, sizeof(text), "[memserver]\nsecret-file = %s\nsize = 64M\n"
		 "listen = tcp://127.0.0.1:7070,tcp://[::1]:7071\n"
		 "hugepages = yes\n", secret_path());
	CHECK(load(text, &s, err) == 0);
	CHECK(ms_settings_complete(&s, &r, &secret, err, sizeof(err)) == 0);
	CHECK(r.nlisten == 2 && r.listen[1].port == 7071);
	CHECK(r.huge == MS_HUGE_YES && r.use_syslog == 0);
	CHECK(secret.len == 32);
	return 0;
}

static int t_complete_bad(void)
{
	static const struct { const char *text, *key, *value; } bad[] = {
		{ "size = 64M\nlisten = 127.0.0.1:7070\n", "listen", "127.0.0.1:7070" },
		{ "size = 64M\nlisten = tcp://a:1,tcp://b:0\n", "listen", "tcp://b:0" },
		{ "size = 64M\nlisten = unix:/run/x.sock\n", "listen", "unix:/run/x.sock" },
		{ "size = 64M\nlisten = tcp://a:1\nhugepages = some\n", "hugepages", "some" },
		{ "size = 64M\nlisten = tcp://a:1\nlog = journal\n", "log", "journal" },
		{ "size = 2M\nlisten = tcp://a:1\n", "size", "2097152" },
		{ "size = 64M\nlisten = tcp://a:1\nsegment-size = 100000\n",
		  "segment-size", "100000" },
	};
	char err[CFG_ERR_LEN];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		CHECK(complete_with(bad[i].text, err) == -EINVAL);
		CHECK(mentions(err, "ms.conf", bad[i].key, bad[i].value));
	}
	return 0;
}

static int t_complete_secret(void)
{
	static struct fm_secret secret;
	struct ms_settings s;
	struct ms_resolved r;
	char err[CFG_ERR_LEN], text[512];
	const char *shortp = write_file("short", "tooshort\n");

	snprintf(text, sizeof(text), "[memserver]\nsize = 64M\nlisten = "
		 "tcp://a:1\nsecret-file = %s\n", shortp);
	CHECK(load(text, &s, err) == 0);
	CHECK(ms_settings_complete(&s, &r, &secret, err, sizeof(err)) == -EINVAL);
	CHECK(mentions(err, "ms.conf", "secret-file", shortp));
	/* Overridden by a flag: the flag is named, not the file. */
	CHECK(ms_settings_set(&s, "memserver:secret-file", "/nonexistent/s",
			      "--secret-file", err, sizeof(err)) == 0);
	CHECK(ms_settings_complete(&s, &r, &secret, err, sizeof(err)) == -EINVAL);
	CHECK(mentions(err, "--secret-file", "secret-file", "/nonexistent/s"));
	return 0;
}

static const struct tap_case cases[] = {
	{ "sizes: good", t_size_good },
	{ "sizes: bad and overflowing", t_size_bad },
	{ "integers: decimal only, bounded", t_u64_i64 },
	{ "durations", t_duration },
	{ "booleans", t_bool },
	{ "addresses: good, and back to text", t_addr_good },
	{ "addresses: bad", t_addr_bad },
	{ "comma lists", t_split_list },
	{ "config file: every key read", t_cfg_good },
	{ "config file: defaults for absent keys", t_cfg_defaults },
	{ "config file: bad values name file, key and value", t_cfg_bad_values },
	{ "config file: unknown keys, sections, top-level keys", t_cfg_unknown },
	{ "config file: missing file is ENOENT, named", t_cfg_missing_file },
	{ "flags override the file, bad flags named", t_flag_overrides_file },
	{ "complete pass: addresses, enums, secret", t_complete_good },
	{ "complete pass: bad values name file, key and value", t_complete_bad },
	{ "complete pass: secret file named, flag origin kept", t_complete_secret },
};

static void cleanup(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void)
{
	int rc;

	umask(077);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	rc = tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
	cleanup();
	return rc;
}
