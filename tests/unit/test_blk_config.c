/* test_blk_config.c — the device options of serve/add: defaults, file
 * then flags, and every validation error naming its origin. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "keyfile.h"
#include "log.h"
#include "tests/unit/tap.h"
#include "ublk-farmem/cli/blk_config.h"

static struct blk_config cfg;
static char err[BLK_CONFIG_ERR_LEN];
static char dir[] = "/tmp/test_blk_config.XXXXXX";
static char secret_path[128];

static int set(const char *key, const char *value)
{
	char origin[64];

	snprintf(origin, sizeof(origin), "--%s", strchr(key, ':') + 1);
	return blk_config_set(&cfg, key, value, origin, err, sizeof(err));
}

/* A valid serve setting to start each case from. */
static void base(void)
{
	blk_config_defaults(&cfg, BLK_CMD_SERVE);
	set("device:servers", "tcp://127.0.0.1:7070,tcp://127.0.0.1:7071,tcp://127.0.0.1:7072");
	set("device:secret-file", secret_path);
	set("device:size", "1G");
	set("serve:nbd", "unix:/run/farmem/nbd0.sock");
	err[0] = 0;
}

static int finish(void)
{
	return blk_config_finish(&cfg, 0, err, sizeof(err));
}

static int has(const char *s)
{
	if (!strstr(err, s)) {
		printf("#   error was: %s\n", err);
		return 0;
	}
	return 1;
}

static int t_defaults(void)
{
	base();
	CHECK(finish() == 0);
	CHECK(cfg.store.nservers == 3);
	CHECK(cfg.store.replicas == 2);
	CHECK(cfg.store.size == 1ull << 30);
	CHECK(cfg.store.compress == STORE_COMPRESS_ZSTD);
	CHECK(cfg.store.level == 0);
	CHECK(cfg.frontend == BLK_FRONTEND_NBD);
	CHECK(cfg.queues * cfg.depth == cfg.store.queues);
	CHECK(cfg.store.queues <= STORE_MAX_QUEUES);
	CHECK(cfg.uuid_generated && strlen(cfg.uuid_text) == 36);
	CHECK(cfg.nbd.kind == ADDR_UNIX);
	CHECK(!strcmp(cfg.nbd.path, "/run/farmem/nbd0.sock"));
	CHECK(cfg.store.servers[2].port == 7072);
	return 0;
}

static int t_one_server_one_replica(void)
{
	base();
	set("device:servers", "tcp://127.0.0.1:7070");
	CHECK(finish() == 0);
	CHECK(cfg.store.replicas == 1);
	return 0;
}

static int t_replicas_vs_servers(void)
{
	base();
	set("device:servers", "tcp://127.0.0.1:7070,tcp://127.0.0.1:7071");
	CHECK(set("device:replicas", "3") == 0);
	CHECK(finish() == -EINVAL);
	CHECK(has("3 replicas need at least 3 servers, got 2"));
	base();
	CHECK(set("device:replicas", "9") == -EINVAL);
	CHECK(has("--replicas") && has("'9'"));
	return 0;
}

static int t_size(void)
{
	base();
	set("device:size", "1000");
	CHECK(finish() == -EINVAL);
	CHECK(has("--size") && has("not a multiple of 4096"));
	base();
	CHECK(set("device:size", "12Q") == -EINVAL);
	CHECK(has("'12Q'"));
	base();
	set("device:size", "0");
	CHECK(finish() == -EINVAL && has("size missing or 0"));
	return 0;
}

static int t_compress_and_level(void)
{
	base();
	set("device:compress", "gzip");
	CHECK(finish() == -EINVAL && has("unknown compression 'gzip'"));
	base();
	CHECK(set("device:level", "-7") == 0);
	CHECK(finish() == 0 && cfg.store.level == -7);
	base();
	set("device:compress", "lz4");
	set("device:level", "20");
	CHECK(finish() == -EINVAL && has("lz4 level 20"));
	base();
	set("device:compress", "none");
	set("device:level", "3");
	CHECK(finish() == -EINVAL && has("compress none"));
	base();
	CHECK(set("device:level", "99") == -EINVAL);
	return 0;
}

static int t_servers(void)
{
	base();
	set("device:servers", "tcp://127.0.0.1:7070,tcp://127.0.0.1:7070");
	CHECK(finish() == -EINVAL && has("listed twice"));
	base();
	set("device:servers", "http://x:1");
	CHECK(finish() == -EINVAL && has("'http://x:1'"));
	base();
	set("device:servers", "");
	CHECK(finish() == -EINVAL && has("no memservers"));
	return 0;
}

static int t_nbd_address(void)
{
	base();
	set("serve:nbd", "tcp://127.0.0.1:10809");
	CHECK(finish() == 0 && cfg.nbd.kind == ADDR_TCP && cfg.nbd.port == 10809);
	base();
	set("serve:nbd", "rdma://127.0.0.1:1");
	CHECK(finish() == -EINVAL && has("--nbd"));
	base();
	set("serve:nbd", "");
	CHECK(finish() == -EINVAL && has("no NBD listen address"));
	return 0;
}

static int t_queues(void)
{
	base();
	set("device:queues", "8");
	set("device:depth", "16");
	CHECK(finish() == -EINVAL && has("more than 64"));
	base();
	set("device:queues", "2");
	set("device:depth", "4");
	CHECK(finish() == 0 && cfg.store.queues == 8);
	return 0;
}

/* What the defaults should come to on this machine, worked out here
 * independently of blk_config.c. */
static int cpus_capped(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 1;
	return n > BLK_DEFAULT_QUEUES_MAX ? BLK_DEFAULT_QUEUES_MAX : (int)n;
}

static int t_default_queues_follow_cpus(void)
{
	int cpus = cpus_capped();

	CHECK(BLK_DEFAULT_QUEUES_MAX == 8);
	CHECK(blk_default_queues() == cpus);
	/* add (ublk): a queue per CPU, 64 tags each. */
	base();
	cfg.command = BLK_CMD_ADD;
	set("serve:nbd", "");
	CHECK(finish() == 0);
	CHECK(cfg.frontend == BLK_FRONTEND_UBLK);
	CHECK(cfg.queues == cpus && cfg.depth == 64);
	/* serve: a connection per CPU but at least 4, 16 workers each,
	 * within 64 store queues. */
	base();
	CHECK(finish() == 0);
	CHECK(cfg.depth == 16);
	CHECK(cfg.queues == 64 / 16);
	CHECK(cfg.store.queues == cfg.queues * 16);
	/* A deeper connection leaves room for fewer of them; never none. */
	base();
	set("device:depth", "64");
	CHECK(finish() == 0 && cfg.queues == 1 && cfg.store.queues == 64);
	base();
	set("device:depth", "32");
	CHECK(finish() == 0 && cfg.queues == (cpus < 2 ? cpus : 2));
	/* Given, it is taken as it is, above the default's cap too. */
	base();
	cfg.command = BLK_CMD_ADD;
	set("serve:nbd", "");
	set("device:queues", "12");
	CHECK(finish() == 0 && cfg.queues == 12);
	return 0;
}

static int t_uuid(void)
{
	base();
	set("device:uuid", "not-a-uuid");
	CHECK(finish() == -EINVAL && has("'not-a-uuid' is not a UUID"));
	base();
	set("device:uuid", "11111111-2222-4333-8444-555555555555");
	CHECK(finish() == 0 && !cfg.uuid_generated);
	CHECK(!strcmp(cfg.uuid_text, "11111111-2222-4333-8444-555555555555"));
	return 0;
}

static int t_frontend(void)
{
	base();
	set("device:frontend", "ublk");
	CHECK(finish() == -EINVAL && has("serve always exports NBD"));
	blk_config_defaults(&cfg, BLK_CMD_ADD);
	set("device:servers", "tcp://127.0.0.1:7070");
	set("device:secret-file", secret_path);
	set("device:size", "1G");
	CHECK(finish() == 0 && cfg.frontend == BLK_FRONTEND_UBLK);
	CHECK(cfg.store.state_path && strstr(cfg.store.state_path, cfg.uuid_text));
	return 0;
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

/* File first, flags override, errors name the file and key. */
static int t_file_then_flags(void)
{
	char conf[256], text[1024];
	char *argv[] = { "serve", "--config", conf, "--replicas", "3",
			 "--level", "-3", NULL };
	int first = -1;

	snprintf(conf, sizeof(conf), "%s/farmem.conf", dir);
	snprintf(text, sizeof(text),
		 "[device]\nservers = tcp://127.0.0.1:1,tcp://127.0.0.1:2,tcp://127.0.0.1:3\n"
		 "secret-file = %s\nsize = 64M\nreplicas = 2\nlevel = 5\n"
		 "[serve]\nnbd = tcp://127.0.0.1:10809\n", secret_path);
	CHECK(write_file(conf, text) == 0);
	CHECK(blk_config_parse(7, argv, BLK_CMD_SERVE, NULL, &cfg, &first,
			       err, sizeof(err)) == 0);
	CHECK(cfg.store.replicas == 3 && cfg.store.level == -3);
	CHECK(cfg.store.size == 64u << 20 && first == 7);
	CHECK(cfg.store.secret.len >= 16);
	/* A bad value in the file is reported with the file and key. */
	*strstr(text, "size = 64M") = '#';  /* drop the good size */
	strcat(text, "[device]\nsize = 1000\n");
	CHECK(write_file(conf, text) == 0);
	CHECK(blk_config_parse(3, argv, BLK_CMD_SERVE, NULL, &cfg, &first,
			       err, sizeof(err)) < 0);
	CHECK(has("farmem.conf") && has("device:size"));
	CHECK(write_file(conf, "[device]\nreplicaz = 2\n") == 0);
	CHECK(blk_config_parse(3, argv, BLK_CMD_SERVE, NULL, &cfg, &first,
			       err, sizeof(err)) == -EINVAL);
	CHECK(has("farmem.conf") && has("device:replicaz"));
	return 0;
}

/* Who the device is: a key file, or the secret as the cluster itself;
 * one of the two, and the record that recover reads keeps it. */
static int t_identity(void)
{
	char key[256], *text;
	struct fm_identity want;

	base();
	CHECK(blk_config_finish(&cfg, 1, err, sizeof(err)) == 0);
	CHECK(strcmp(cfg.store.identity.name, FM_CLUSTER_NAME) == 0);
	CHECK(fm_auth_init() == 0);
	CHECK(fm_identity_derive(&cfg.store.secret, "db1", &want) == 0);
	snprintf(key, sizeof(key), "%s/db1.key", dir);
	{
		char kf[256];

		CHECK(fm_keyfile_format(&want, kf, sizeof(kf)) > 0);
		CHECK(write_file(key, kf) == 0);
	}
	CHECK(set("device:key-file", key) == 0);
	CHECK(finish() == -EINVAL && has("not both") && has("--key-file") &&
	      has("--secret-file"));
	base();
	cfg.set.secret_file[0] = '\0';
	CHECK(finish() == -EINVAL && has("--key-file"));
	CHECK(set("device:key-file", key) == 0);
	CHECK(blk_config_finish(&cfg, 1, err, sizeof(err)) == 0);
	CHECK(strcmp(cfg.store.identity.name, "db1") == 0);
	CHECK(memcmp(cfg.store.identity.key, want.key, FM_KEY_LEN) == 0);
	text = blk_settings_text(&cfg.set);
	CHECK(text && strstr(text, "key-file = ") && !strstr(text, "secret-file"));
	free(text);
	/* A damaged key file: the flag, the file and the line. */
	CHECK(write_file(key, "name = db1\nkey = 12\n") == 0);
	CHECK(blk_config_finish(&cfg, 1, err, sizeof(err)) == -EINVAL);
	CHECK(has("--key-file") && has(key) && has("line 2"));
	unlink(key);
	return 0;
}

static int t_bad_flags(void)
{
	char *a1[] = { "serve", "--bogus", "1", NULL };
	char *a2[] = { "serve", "--size", NULL };
	char *a3[] = { "serve", "--config", "/nonexistent/farmem.conf", NULL };

	CHECK(blk_config_parse(3, a1, BLK_CMD_SERVE, NULL, &cfg, NULL,
			       err, sizeof(err)) == -EINVAL);
	CHECK(has("unknown option '--bogus'"));
	CHECK(blk_config_parse(2, a2, BLK_CMD_SERVE, NULL, &cfg, NULL,
			       err, sizeof(err)) == -EINVAL);
	CHECK(has("--size needs a value"));
	CHECK(blk_config_parse(3, a3, BLK_CMD_SERVE, NULL, &cfg, NULL,
			       err, sizeof(err)) == -ENOENT);
	CHECK(has("/nonexistent/farmem.conf"));
	return 0;
}

static int extra_seen;

static int extra_handle(void *arg, int val, const char *text, char *e, size_t len)
{
	(void)arg; (void)e; (void)len;
	extra_seen = val == 0x1001 && text && !strcmp(text, "7");
	return 0;
}

/* add's own flags ride along with the shared ones. */
static int t_extra_opts(void)
{
	static const struct option opts[] = {
		{ "number", required_argument, NULL, 0x1001 }, { 0 },
	};
	struct blk_extra_opts x = { opts, "  --number N\n", extra_handle, NULL };
	char *argv[] = { "add", "--servers", "tcp://127.0.0.1:1", "--secret-file",
			 secret_path, "--size", "1G", "--number", "7", "--state-dir",
			 dir, NULL };
	int first = 0;

	CHECK(blk_config_parse(11, argv, BLK_CMD_ADD, &x, &cfg, &first,
			       err, sizeof(err)) == 0);
	CHECK(extra_seen && first == 11);
	CHECK(!strncmp(cfg.store.state_path, dir, strlen(dir)));
	return 0;
}

/* [swap] and metrics are checked though others act on them. */
static int t_swap_and_metrics(void)
{
	base();
	CHECK(set("swap:priority", "50") == 0);
	CHECK(set("swap:discard", "once") == 0);
	CHECK(set("device:metrics", "127.0.0.1:9481") == 0);
	CHECK(finish() == 0 && cfg.set.swap_priority == 50);
	base();
	CHECK(set("swap:priority", "40000") == -EINVAL);
	base();
	set("swap:discard", "sometimes");
	CHECK(finish() == -EINVAL && has("'sometimes'"));
	base();
	set("device:metrics", "nonsense");
	CHECK(finish() == -EINVAL && has("--metrics") && has("'nonsense'"));
	base();
	CHECK(finish() == 0 && cfg.set.swap_priority == 100 &&
	      !strcmp(cfg.set.swap_discard, "pages") && !cfg.set.metrics[0]);
	return 0;
}

static const struct tap_case cases[] = {
	{ "[swap] keys and metrics address checked", t_swap_and_metrics },
	{ "defaults: 3 servers give R=2, zstd, nbd frontend", t_defaults },
	{ "one server gives R=1", t_one_server_one_replica },
	{ "replicas > servers is an error naming the flag", t_replicas_vs_servers },
	{ "size must be a positive multiple of 4096", t_size },
	{ "compress names and levels (negative zstd ok)", t_compress_and_level },
	{ "server list: duplicates, bad forms, empty", t_servers },
	{ "nbd address: unix, tcp; rdma and missing refused", t_nbd_address },
	{ "queues x depth bounded by the store's queues", t_queues },
	{ "queues default to the online CPUs, at most 8", t_default_queues_follow_cpus },
	{ "uuid given or generated", t_uuid },
	{ "frontend by command", t_frontend },
	{ "file first, flags override, file errors name file and key", t_file_then_flags },
	{ "key file or secret, not both; the record keeps it", t_identity },
	{ "unknown flag, missing value, missing file", t_bad_flags },
	{ "extra command flags", t_extra_opts },
};

int main(void)
{
	FILE *f;
	int rc;

	log_init("test_blk_config", LOG_LVL_ERR);
	if (access(BLK_CONFIG_DEFAULT_FILE, F_OK) == 0) {
		/* It would be read under every parse. */
		printf("1..0 # SKIP %s exists on this machine\n", BLK_CONFIG_DEFAULT_FILE);
		return 0;
	}
	if (!mkdtemp(dir))
		return 1;
	snprintf(secret_path, sizeof(secret_path), "%s/secret", dir);
	f = fopen(secret_path, "w");
	if (!f)
		return 1;
	fputs("0123456789abcdef0123456789abcdef\n", f);
	fclose(f);
	chmod(secret_path, 0600);
	rc = tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
	unlink(secret_path);
	{
		char conf[256];

		snprintf(conf, sizeof(conf), "%s/farmem.conf", dir);
		unlink(conf);
	}
	rmdir(dir);
	return rc;
}
