/* test_ublk_ctl.c — the pieces of the ublk frontend and device commands
 * that run without a kernel: stats text round trip, the control socket,
 * device names, the device record read back by recover, the ioctl
 * encodings of the ublk commands. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ublk-farmem/cli/blk_config.h"
#include "ublk-farmem/daemon/ctl.h"
#include "ublk-farmem/daemon/daemon.h"
#include "ublk-farmem/frontend/frontend.h"
#include "ublk-farmem/store/store.h"
#include "tests/unit/tap.h"
#include "ublk-farmem/frontend/ublk/ublk_ctrl.h"

static char tmpdir[64];

static int make_tmpdir(void)
{
	if (tmpdir[0])
		return 0;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_ublk_ctl.XXXXXX");
	if (!mkdtemp(tmpdir))
		return -errno;
	setenv("FARMEM_RUN_DIR", tmpdir, 1);
	return 0;
}

static int stats_round_trip(void)
{
	struct store_stats a, b;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	memset(&a, 0, sizeof(a));
	a.size = 1ull << 30;
	a.pages_stored = 12345;
	a.bytes_stored = 999;
	a.bytes_remote = 8ull << 20;
	a.degraded_segments = 3;
	a.rereplicated_segments = 7;
	a.write_errors = 2;
	a.auth_errors = 4;
	a.incompressible_pages = 77;
	a.encrypt = STORE_ENCRYPT_XCHACHA20POLY1305;
	a.replicas = 2;
	a.nservers = 2;
	snprintf(a.server[0].addr, sizeof(a.server[0].addr), "tcp://10.0.0.1:7000");
	a.server[0].up = 1;
	a.server[0].bytes = 4ull << 20;
	snprintf(a.server[1].addr, sizeof(a.server[1].addr), "tcp://[::1]:7001");
	a.server[1].errors = 5;
	ctl_stats_write(f, &a);
	fclose(f);
	CHECK(ctl_stats_parse(text, &b) == 0);
	free(text);
	CHECK(b.size == a.size && b.pages_stored == 12345 && b.bytes_stored == 999);
	CHECK(b.bytes_remote == a.bytes_remote && b.degraded_segments == 3);
	CHECK(b.rereplicated_segments == 7 && b.write_errors == 2);
	CHECK(b.incompressible_pages == 77);
	CHECK(b.replicas == 2 && b.nservers == 2);
	CHECK(b.auth_errors == 4 && b.encrypt == STORE_ENCRYPT_XCHACHA20POLY1305);
	CHECK(!strcmp(b.server[0].addr, "tcp://10.0.0.1:7000") && b.server[0].up == 1);
	CHECK(b.server[0].bytes == 4ull << 20);
	CHECK(!strcmp(b.server[1].addr, "tcp://[::1]:7001") && b.server[1].up == 0);
	CHECK(b.server[1].errors == 5);
	return 0;
}

/* A device that follows etcd: its state, the error (spaces and all),
 * the counters and which servers are gone come back. */
static int stats_round_trip_etcd(void)
{
	static struct store_stats a, b;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	memset(&a, 0, sizeof(a));
	a.nservers = 2;
	a.etcd = STORE_ETCD_UNREACHABLE;
	snprintf(a.etcd_error, sizeof(a.etcd_error), "http://10.0.0.9:2379: Couldn't connect");
	a.etcd_errors = 6;
	a.members_joined = 2;
	a.members_lost = 1;
	snprintf(a.server[0].addr, sizeof(a.server[0].addr), "tcp://10.0.0.1:7000");
	snprintf(a.server[1].addr, sizeof(a.server[1].addr), "tcp://10.0.0.2:7000");
	a.server[1].gone = 1;
	ctl_stats_write(f, &a);
	fclose(f);
	CHECK(ctl_stats_parse(text, &b) == 0);
	free(text);
	CHECK(b.etcd == STORE_ETCD_UNREACHABLE);
	CHECK(!strcmp(b.etcd_error, a.etcd_error));
	CHECK(b.etcd_errors == 6 && b.members_joined == 2 && b.members_lost == 1);
	CHECK(!b.server[0].gone && b.server[1].gone);
	/* A fixed list writes no etcd line: it stays off. */
	CHECK(ctl_stats_parse("nservers 1\n", &b) == 0 && b.etcd == STORE_ETCD_OFF);
	CHECK(ctl_stats_parse("etcd 9 x\n", &b) == -EINVAL);
	return 0;
}

static int stats_parse_rejects(void)
{
	struct store_stats st;

	/* Unknown keys are skipped (newer daemon, older CLI). */
	CHECK(ctl_stats_parse("pages_stored 5\nfuture_key 9\n", &st) == 0);
	CHECK(st.pages_stored == 5);
	/* A server index out of range or a short server line is an error. */
	CHECK(ctl_stats_parse("server 99 1 0 0 0 0 0 x\n", &st) == -EINVAL);
	CHECK(ctl_stats_parse("server 0 1 2\n", &st) == -EINVAL);
	CHECK(ctl_stats_parse("nservers 1000\n", &st) == 0);
	CHECK(st.nservers == STORE_MAX_SERVERS);
	return 0;
}

static int names(void)
{
	char n[32];

	CHECK(dev_name_parse("3", n, sizeof(n)) == 0 && !strcmp(n, "ublkb3"));
	CHECK(dev_name_parse("/dev/ublkb12", n, sizeof(n)) == 0 && !strcmp(n, "ublkb12"));
	CHECK(dev_name_parse("nbd0", n, sizeof(n)) == 0 && !strcmp(n, "nbd0"));
	CHECK(dev_name_parse("/dev/nbd7", n, sizeof(n)) == 0 && !strcmp(n, "nbd7"));
	CHECK(dev_name_parse("ublkb", n, sizeof(n)) == -EINVAL);
	CHECK(dev_name_parse("sda", n, sizeof(n)) == -EINVAL);
	CHECK(dev_name_parse("-1", n, sizeof(n)) == -EINVAL);
	CHECK(dev_name_parse("3x", n, sizeof(n)) == -EINVAL);
	CHECK(dev_name_recoverable("ublkb9"));
	CHECK(!dev_name_recoverable("nbd9"));
	CHECK(!dev_name_recoverable("sda"));
	return 0;
}

/* The frontend table: found by --frontend name and by device name, and
 * the store queues add asks for on each. */
static int frontends(void)
{
	const struct blk_frontend_ops *u = blk_frontend_get(BLK_FRONTEND_UBLK);
	const struct blk_frontend_ops *n = blk_frontend_get(BLK_FRONTEND_NBD);
	int id = -1;

	CHECK(u && n && !strcmp(u->name, "ublk") && !strcmp(n->name, "nbd"));
	CHECK(!blk_frontend_get(0) && !blk_frontend_get(99));
	CHECK(blk_frontend_by_name("ublk") == BLK_FRONTEND_UBLK);
	CHECK(blk_frontend_by_name("NBD") == BLK_FRONTEND_NBD);
	CHECK(blk_frontend_by_name("loop") == 0);
	CHECK(blk_frontend_of_dev("ublkb9", &id) == u && id == 9);
	CHECK(blk_frontend_of_dev("nbd2", &id) == n && id == 2);
	CHECK(!blk_frontend_of_dev("sda", &id) && !blk_frontend_of_dev("nbd", &id));
	/* ublk: 4 store queues (fibers) a queue, fewer when the queue is
	 * shallower. */
	CHECK(u->store_queues(1, 64) == 4 && u->store_queues(2, 64) == 8);
	CHECK(u->store_queues(1, 2) == 2);
	CHECK(n->store_queues(1, 64) == 4 && n->store_queues(8, 16) == 8);
	CHECK(n->store_queues(100, 1) == STORE_MAX_QUEUES);
	/* Only ublk keeps a device's I/O for a new daemon. */
	CHECK(u->recover && u->query && u->remove);
	CHECK(!n->recover && !n->query && !n->remove);
	return 0;
}

static int handler(void *arg, const char *cmd, FILE *f, int fd)
{
	(void)fd;
	/* The server thread counts; the test reads it from its own. */
	__atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
	if (!strcmp(cmd, "ping"))
		fprintf(f, "ok pong\n");
	else
		fprintf(f, "err unknown command '%s'\n", cmd);
	return 0;
}

static int control_socket(void)
{
	struct ctl_server *srv;
	char path[128], reply[256];
	int calls = 0;

	CHECK(make_tmpdir() == 0);
	snprintf(path, sizeof(path), "%s/t.sock", tmpdir);
	CHECK(ctl_server_start(path, handler, &calls, &srv) == 0);
	CHECK(ctl_request(path, "ping", reply, sizeof(reply), 5000) > 0);
	CHECK(!strcmp(reply, "ok pong\n"));
	CHECK(ctl_request(path, "bogus", reply, sizeof(reply), 5000) > 0);
	CHECK(!strncmp(reply, "err unknown command 'bogus'", 27));
	CHECK(__atomic_load_n(&calls, __ATOMIC_RELAXED) == 2);
	ctl_server_stop(srv);
	CHECK(access(path, F_OK) < 0);
	/* Nobody listening: refused or missing, never a hang. */
	int r = ctl_request(path, "ping", reply, sizeof(reply), 1000);
	CHECK(r == -ENOENT || r == -ECONNREFUSED);
	return 0;
}

static int record_round_trip(void)
{
	static struct blk_config a, b;
	char err[BLK_CONFIG_ERR_LEN], path[256], names_[4][32], *text;

	CHECK(make_tmpdir() == 0);
	blk_config_defaults(&a, BLK_CMD_ADD);
	snprintf(a.set.servers, sizeof(a.set.servers), "tcp://127.0.0.1:7000,tcp://127.0.0.1:7001");
	snprintf(a.set.secret_file, sizeof(a.set.secret_file), "/etc/farmem/secret");
	a.set.size = 1ull << 30;
	a.set.replicas = 2;
	a.set.level = -3;
	a.set.queues = 2;
	a.set.depth = 32;
	a.set.timeout_ms = 2500;
	snprintf(a.set.uuid, sizeof(a.set.uuid), "11111111-2222-4333-8444-555555555555");
	text = blk_settings_text(&a.set);
	CHECK(text != NULL);
	CHECK(dev_conf_write("ublkb4", text) == 0);
	CHECK(dev_conf_write("nbd1", text) == 0);
	free(text);

	snprintf(path, sizeof(path), "%s/ublkb4.conf", tmpdir);
	blk_config_defaults(&b, BLK_CMD_ADD);
	CHECK(blk_config_load_file(&b, path, err, sizeof(err)) == 0);
	CHECK(blk_config_finish(&b, 0, err, sizeof(err)) == 0);
	CHECK(!strcmp(b.set.servers, a.set.servers));
	CHECK(b.store.nservers == 2 && b.store.size == 1ull << 30 && b.store.replicas == 2);
	CHECK(b.store.level == -3 && b.queues == 2 && b.depth == 32);
	CHECK(b.store.timeout_ms == 2500);
	/* Same identity, so recover finds the same page map. */
	CHECK(!strcmp(b.uuid_text, "11111111-2222-4333-8444-555555555555"));
	CHECK(b.store.state_path && strstr(b.store.state_path, b.uuid_text));

	CHECK(pidfile_write("ublkb4", getpid()) == 0);
	pid_t pid = 0;
	CHECK(pidfile_read("ublkb4", &pid) == 0 && pid == getpid());
	CHECK(pid_alive(pid));
	CHECK(dev_list_names(names_, 4) == 2);
	CHECK(!strcmp(names_[0], "nbd1") && !strcmp(names_[1], "ublkb4"));
	dev_files_remove("ublkb4");
	dev_files_remove("nbd1");
	CHECK(dev_list_names(names_, 4) == 0);
	CHECK(pidfile_read("ublkb4", &pid) == -ENOENT);
	return 0;
}

/* A daemon killed while its parent cannot reap it stays a zombie:
 * kill(pid, 0) still succeeds, but recover must see it as dead. */
static int zombie_not_alive(void)
{
	pid_t child = fork();
	int status;

	CHECK(child >= 0);
	if (child == 0)
		_exit(0);
	/* Not reaped yet: wait until the kernel has made it a zombie. */
	for (int i = 0; i < 500 && pid_alive(child); i++)
		usleep(2000);
	CHECK(kill(child, 0) == 0);   /* the control: still there */
	CHECK(!pid_alive(child));
	CHECK(waitpid(child, &status, 0) == child);
	CHECK(!pid_alive(child));
	CHECK(pid_alive(getpid()));
	return 0;
}

/* After a recovery the keeper locks a reserve only when memory is plentiful:
 * after a recovery, under swap, it waits (it once hung a guest). */
static int keeper_reserve_waits_for_room(void)
{
	const size_t mib32 = 32u << 20;
	char text[256];

	/* The hung guest: 16 MiB free, little available. */
	CHECK(!keeper_reserve_fits("MemTotal: 217524 kB\nMemFree: 16656 kB\n"
				   "MemAvailable: 20000 kB\n", mib32));
	/* Enough available but not free: still waits. */
	CHECK(!keeper_reserve_fits("MemFree: 40000 kB\nMemAvailable: 200000 kB\n", mib32));
	/* Free but not available (all of it promised elsewhere): waits. */
	CHECK(!keeper_reserve_fits("MemFree: 70000 kB\nMemAvailable: 100000 kB\n", mib32));
	/* An idle machine at `add`: taken. */
	snprintf(text, sizeof(text), "MemFree: %u kB\nMemAvailable: %u kB\n", 65536, 131072);
	CHECK(keeper_reserve_fits(text, mib32));
	/* Unreadable text: never taken. */
	CHECK(!keeper_reserve_fits("MemFree: lots\nMemAvailable: 131072 kB\n", mib32));
	CHECK(!keeper_reserve_fits("", mib32));
	return 0;
}

/* At a crash the keeper takes what a new daemon needs beyond its
 * reserve, but only out of free memory, never by reclaim. */
static int keeper_cushion_from_free_memory(void)
{
	const size_t mib = 1u << 20;

	/* The guest's daemon: 48 MiB of its own, 32 MiB held, plenty free:
	 * 54 MiB needed, 22 MiB more (whole MiB); 16 MiB held: 38 more. */
	CHECK(keeper_cushion_size(48 * mib, 32 * mib, 200ull * mib) == 22 * mib);
	CHECK(keeper_cushion_size(48 * mib, 16 * mib, 200ull * mib) == 38 * mib);
	/* Only half of what is free. */
	CHECK(keeper_cushion_size(48 * mib, 32 * mib, 20ull * mib) == 10 * mib);
	/* A small daemon: the reserve covers it. */
	CHECK(keeper_cushion_size(20 * mib, 32 * mib, 200ull * mib) == 0);
	/* No reserve held (given away, or never had room): all of it. */
	CHECK(keeper_cushion_size(48 * mib, 0, 200ull * mib) == 54 * mib);
	/* Nothing free, or the size unknown: nothing. */
	CHECK(keeper_cushion_size(48 * mib, 32 * mib, 0) == 0);
	CHECK(keeper_cushion_size(0, 32 * mib, 200ull * mib) == 0);
	return 0;
}

/* The kernel's values for the 6.1 header's plain opcodes and the newer
 * ioctl-encoded ones (include/uapi/linux/ublk_cmd.h). */
static int encodings(void)
{
	CHECK(ublk_io_opcode(0, UBLK_IO_FETCH_REQ) == 0x20);
	CHECK(ublk_io_opcode(1, UBLK_IO_FETCH_REQ) == 0xc0107520u);
	CHECK(ublk_io_opcode(1, UBLK_IO_COMMIT_AND_FETCH_REQ) == 0xc0107521u);
	CHECK(UBLK_F_USER_RECOVERY == 1ull << 3 && UBLK_F_USER_RECOVERY_REISSUE == 1ull << 4);
	CHECK(UBLK_F_CMD_IOCTL_ENCODE == 1ull << 6);
	return 0;
}

static const struct tap_case cases[] = {
	{ "store stats survive the text round trip", stats_round_trip },
	{ "stats parser skips unknown keys and rejects bad server lines", stats_parse_rejects },
	{ "etcd membership survives the text round trip", stats_round_trip_etcd },
	{ "device names: numbers, ublkbN, nbdN, /dev paths", names },
	{ "frontend table: by name, by device name, store queues", frontends },
	{ "control socket: request, unknown command, stop, nobody listening", control_socket },
	{ "device record and pid file read back as add wrote them", record_round_trip },
	{ "ublk command encodings match the kernel's", encodings },
	{ "a zombie daemon is not alive", zombie_not_alive },
	{ "the keeper's reserve waits until memory is plentiful", keeper_reserve_waits_for_room },
	{ "at a crash the keeper takes the rest out of free memory", keeper_cushion_from_free_memory },
};

int main(void)
{
	int rc = tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));

	if (tmpdir[0]) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
		if (system(cmd) != 0)
			rc = 1;
	}
	return rc;
}
