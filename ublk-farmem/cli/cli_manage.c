/* cli_manage.c — `farmem-blk del`, `list` and `status`: find devices by
 * their files in the run directory and ask their daemons over the
 * control socket (ctl.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_text.h"
#include "blk_config.h"
#include "cli.h"
#include "daemon/ctl.h"
#include "daemon/daemon.h"
#include "frontend/frontend.h"
#include "log.h"
#include "store/store.h"

#define MAX_DEVS 256
#define CTL_TIMEOUT_MS 5000
/* del waits for the daemon to stop the device and free remote memory. */
#define DEL_TIMEOUT_MS 120000
#define EXIT_WAIT_MS 10000

/* What we know about one device: its record, and the daemon's answer. */
struct devinfo {
	char name[32];
	struct blk_config cfg;
	int have_conf;
	pid_t pid;
	int running;             /* the daemon answered */
	int have_stats;
	struct store_stats st;
};

static void devinfo_load(const char *name, struct devinfo *d)
{
	char path[PATH_MAX], err[BLK_CONFIG_ERR_LEN], reply[16384];

	memset(d, 0, sizeof(*d));
	snprintf(d->name, sizeof(d->name), "%s", name);
	blk_config_defaults(&d->cfg, BLK_CMD_ADD);
	if (run_path(path, sizeof(path), name, ".conf") == 0 &&
	    blk_config_load_file(&d->cfg, path, err, sizeof(err)) == 0 &&
	    blk_config_finish(&d->cfg, 0, err, sizeof(err)) == 0)
		d->have_conf = 1;
	if (pidfile_read(name, &d->pid) < 0)
		d->pid = 0;
	if (run_path(path, sizeof(path), name, ".sock") == 0 &&
	    ctl_request(path, "stats", reply, sizeof(reply), CTL_TIMEOUT_MS) > 0 &&
	    !strncmp(reply, "ok\n", 3)) {
		d->running = 1;
		d->have_stats = ctl_stats_parse(reply + 3, &d->st) == 0;
	}
}

static void human(uint64_t b, char *buf, size_t len)
{
	static const char units[] = "KMGTP";
	double v = (double)b;
	int u = -1;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%" PRIu64 "B", b);
	else
		snprintf(buf, len, "%.1f%ciB", v, units[u]);
}

static double ratio(const struct store_stats *st)
{
	return st->bytes_stored ? (double)st->bytes_logical / (double)st->bytes_stored : 0.0;
}

static const char *state_text(const struct devinfo *d)
{
	if (d->running)
		return "running";
	return dev_name_recoverable(d->name) ? "daemon-dead" : "dead";
}

static int has_flag(int argc, char **argv, const char *flag)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], flag))
			return 1;
	return 0;
}

/* Positional arguments besides known flags; -1 on an unknown flag. */
static int positional(int argc, char **argv, const char *const *flags, char **first)
{
	int n = 0;

	*first = NULL;
	for (int i = 1; i < argc; i++) {
		int known = 0;

		for (const char *const *f = flags; *f; f++)
			known |= !strcmp(argv[i], *f);
		if (known)
			continue;
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "farmem-blk %s: unknown option '%s'\n", argv[0], argv[i]);
			return -1;
		}
		if (!n++)
			*first = argv[i];
	}
	return n;
}

/* --- list ------------------------------------------------------------ */

static void list_json(FILE *f, const struct devinfo *d, int first)
{
	fprintf(f, "%s\n  {\"name\": ", first ? "" : ",");
	cli_json_str(f, d->name);
	fprintf(f, ", \"path\": \"/dev/%s\", \"state\": \"%s\", \"pid\": %d",
		d->name, state_text(d), (int)d->pid);
	fprintf(f, ", \"size\": %" PRIu64 ", \"replicas\": %d, \"servers\": ",
		d->cfg.store.size, d->cfg.store.replicas);
	cli_json_str(f, d->cfg.set.servers);
	fprintf(f, ", \"uuid\": ");
	cli_json_str(f, d->cfg.uuid_text);
	if (d->have_stats)
		fprintf(f, ", \"pages_stored\": %" PRIu64 ", \"bytes_remote\": %" PRIu64
			", \"compression_ratio\": %.3f", d->st.pages_stored,
			d->st.bytes_remote, ratio(&d->st));
	fprintf(f, "}");
}

static void list_row(const struct devinfo *d)
{
	char size[32], used[32] = "-";

	human(d->cfg.store.size, size, sizeof(size));
	if (d->have_stats)
		human(d->st.bytes_remote, used, sizeof(used));
	printf("%-12s %-11s %7d %9s %9s %3d  %s\n", d->name, state_text(d),
	       (int)d->pid, size, used, d->cfg.store.replicas, d->cfg.set.servers);
}

int cmd_list(int argc, char **argv)
{
	static const char *const flags[] = { "--json", NULL };
	static char names[MAX_DEVS][32];
	int json = has_flag(argc, argv, "--json"), n;
	struct devinfo *d;
	char *extra;

	if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
		printf("usage: farmem-blk list [--json]\n");
		return 0;
	}
	if (positional(argc, argv, flags, &extra) != 0) {
		if (extra)
			fprintf(stderr, "usage: farmem-blk list [--json]\n");
		return 2;
	}
	n = dev_list_names(names, MAX_DEVS);
	if (n < 0) {
		fprintf(stderr, "farmem-blk list: %s: %s\n", run_dir(), strerror(-n));
		return 1;
	}
	d = malloc(sizeof(*d));
	if (!d)
		return 1;
	if (json)
		printf("[");
	else
		printf("%-12s %-11s %7s %9s %9s %3s  %s\n", "DEVICE", "STATE", "PID",
		       "SIZE", "REMOTE", "R", "SERVERS");
	for (int i = 0; i < n; i++) {
		devinfo_load(names[i], d);
		if (json)
			list_json(stdout, d, i == 0);
		else
			list_row(d);
	}
	if (json)
		printf("%s]\n", n ? "\n" : "");
	free(d);
	return 0;
}

/* --- status ---------------------------------------------------------- */

static const char *replica_health(const struct store_stats *st, char *buf, size_t len)
{
	int down = 0;

	for (int i = 0; i < st->nservers; i++)
		down += !st->server[i].up;
	if (!st->degraded_segments && !down)
		snprintf(buf, len, "ok (%d copies of every segment)", st->replicas);
	else
		snprintf(buf, len, "degraded: %" PRIu64 " segments below %d copies, "
			 "%d of %d servers down", st->degraded_segments, st->replicas,
			 down, st->nservers);
	return buf;
}

static void status_text(const struct devinfo *d)
{
	const struct store_stats *st = &d->st;
	char a[32], b[32], c[32], health[128];

	printf("device       /dev/%s\n", d->name);
	printf("state        %s", state_text(d));
	if (d->pid)
		printf(" (pid %d)", (int)d->pid);
	printf("\nuuid         %s\n", d->cfg.uuid_text);
	human(d->cfg.store.size, a, sizeof(a));
	printf("size         %s\n", a);
	if (!d->have_stats) {
		printf("servers      %s\n", d->cfg.set.servers);
		return;
	}
	human(st->bytes_logical, a, sizeof(a));
	human(st->bytes_stored, b, sizeof(b));
	human(st->bytes_remote, c, sizeof(c));
	printf("pages        %" PRIu64 " stored (%s), %" PRIu64 " zero\n",
	       st->pages_stored, a, st->zero_pages);
	printf("compression  %.2fx (%s of records), %" PRIu64 " page writes stored raw"
	       " (incompressible)\n", ratio(st), b, st->incompressible_pages);
	printf("remote       %s in %" PRIu64 " segments x %d replicas\n", c,
	       st->segments, st->replicas);
	printf("replicas     %s\n", replica_health(st, health, sizeof(health)));
	printf("io           %" PRIu64 " reads, %" PRIu64 " writes, %" PRIu64 " discards\n",
	       st->reads, st->writes, st->discards);
	printf("errors       %" PRIu64 " read, %" PRIu64 " write, %" PRIu64 " checksum, %"
	       PRIu64 " auth\n", st->read_errors, st->write_errors, st->checksum_errors,
	       st->auth_errors);
	printf("encryption   %s\n", store_encrypt_name(st->encrypt));
	printf("maintenance  %" PRIu64 " segments cleaned, %" PRIu64 " re-replicated\n",
	       st->cleaned_segments, st->rereplicated_segments);
	if (st->etcd != STORE_ETCD_OFF)
		printf("membership   %s: etcd %s%s%s; %" PRIu64 " joined, %" PRIu64 " lost\n",
		       d->cfg.set.servers, st->etcd == STORE_ETCD_OK ? "reachable" :
		       "UNREACHABLE (keeping the last view)", st->etcd_error[0] ? ": " : "",
		       st->etcd_error, st->members_joined, st->members_lost);
	printf("\n%-28s %-4s %8s %10s %10s %10s %7s\n", "SERVER", "UP", "SEGMENTS",
	       "BYTES", "READS", "WRITES", "ERRORS");
	for (int i = 0; i < st->nservers; i++) {
		const struct store_server_stats *s = &st->server[i];

		human(s->bytes, a, sizeof(a));
		printf("%-28s %-4s %8" PRIu64 " %10s %10" PRIu64 " %10" PRIu64 " %7" PRIu64 "\n",
		       s->addr, s->gone ? "gone" : s->up ? "yes" : "no", s->segments, a, s->reads,
		       s->writes, s->errors);
	}
}

static void status_json(const struct devinfo *d)
{
	const struct store_stats *st = &d->st;

	printf("{\"name\": ");
	cli_json_str(stdout, d->name);
	printf(", \"path\": \"/dev/%s\", \"state\": \"%s\", \"pid\": %d, \"uuid\": ",
	       d->name, state_text(d), (int)d->pid);
	cli_json_str(stdout, d->cfg.uuid_text);
	printf(", \"size\": %" PRIu64, d->cfg.store.size);
	if (d->have_stats) {
		printf(", \"pages_stored\": %" PRIu64 ", \"zero_pages\": %" PRIu64
		       ", \"bytes_logical\": %" PRIu64 ", \"bytes_stored\": %" PRIu64
		       ", \"bytes_remote\": %" PRIu64 ", \"compression_ratio\": %.3f"
		       ", \"segments\": %" PRIu64 ", \"degraded_segments\": %" PRIu64
		       ", \"replicas\": %d, \"reads\": %" PRIu64 ", \"writes\": %" PRIu64
		       ", \"discards\": %" PRIu64 ", \"checksum_errors\": %" PRIu64
		       ", \"auth_errors\": %" PRIu64 ", \"encrypt\": \"%s\""
		       ", \"read_errors\": %" PRIu64 ", \"write_errors\": %" PRIu64
		       ", \"cleaned_segments\": %" PRIu64
		       ", \"rereplicated_segments\": %" PRIu64
		       ", \"incompressible_pages\": %" PRIu64 ", \"servers\": [",
		       st->pages_stored, st->zero_pages, st->bytes_logical,
		       st->bytes_stored, st->bytes_remote, ratio(st), st->segments,
		       st->degraded_segments, st->replicas, st->reads, st->writes,
		       st->discards, st->checksum_errors, st->auth_errors,
		       store_encrypt_name(st->encrypt), st->read_errors,
		       st->write_errors, st->cleaned_segments, st->rereplicated_segments,
		       st->incompressible_pages);
		for (int i = 0; i < st->nservers; i++) {
			const struct store_server_stats *s = &st->server[i];

			printf("%s{\"addr\": ", i ? ", " : "");
			cli_json_str(stdout, s->addr);
			printf(", \"up\": %s, \"segments\": %" PRIu64 ", \"bytes\": %" PRIu64
			       ", \"reads\": %" PRIu64 ", \"writes\": %" PRIu64
			       ", \"errors\": %" PRIu64, s->up ? "true" : "false",
			       s->segments, s->bytes, s->reads, s->writes, s->errors);
			if (st->etcd != STORE_ETCD_OFF)
				printf(", \"gone\": %s", s->gone ? "true" : "false");
			printf("}");
		}
		printf("]");
		if (st->etcd != STORE_ETCD_OFF) {
			printf(", \"etcd\": \"%s\", \"etcd_error\": ",
			       st->etcd == STORE_ETCD_OK ? "ok" : "unreachable");
			cli_json_str(stdout, st->etcd_error);
			printf(", \"members_joined\": %" PRIu64 ", \"members_lost\": %" PRIu64,
			       st->members_joined, st->members_lost);
		}
	}
	printf("}\n");
}

static int status_one(const char *name, int json)
{
	struct devinfo *d = malloc(sizeof(*d));
	int status = 0;

	if (!d)
		return 1;
	devinfo_load(name, d);
	if (!d->have_conf && !d->running) {
		fprintf(stderr, "farmem-blk status: no device %s (see 'farmem-blk list')\n", name);
		free(d);
		return 1;
	}
	if (json)
		status_json(d);
	else
		status_text(d);
	if (!d->running) {
		fprintf(stderr, "farmem-blk status: %s: its daemon is not running%s\n",
			name, dev_name_recoverable(name) ?
			"; 'farmem-blk recover' attaches a new one" : "");
		status = 1;
	}
	free(d);
	return status;
}

int cmd_status(int argc, char **argv)
{
	static const char *const flags[] = { "--json", NULL };
	static char names[MAX_DEVS][32];
	int json = has_flag(argc, argv, "--json"), n, status = 0;
	char name[32], *arg;

	if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
		printf("usage: farmem-blk status [N] [--json]\n\nWithout N: every device.\n");
		return 0;
	}
	n = positional(argc, argv, flags, &arg);
	if (n < 0 || n > 1 || (arg && dev_name_parse(arg, name, sizeof(name)) < 0)) {
		fprintf(stderr, "usage: farmem-blk status [N] [--json]\n");
		return 2;
	}
	if (arg)
		return status_one(name, json);
	n = dev_list_names(names, MAX_DEVS);
	if (n <= 0) {
		if (json)
			printf("[]\n");
		else
			printf("no farmem devices\n");
		return n < 0 ? 1 : 0;
	}
	if (json)
		printf("[\n");
	for (int i = 0; i < n; i++) {
		if (json && i)
			printf(",\n");
		else if (i)
			printf("\n");
		status |= status_one(names[i], json);
	}
	if (json)
		printf("]\n");
	return status;
}

/* --- del ------------------------------------------------------------- */

static int in_use_as_swap(const char *name)
{
	char line[512], dev[300];
	FILE *f = fopen("/proc/swaps", "re");
	int used = 0;

	if (!f)
		return 0;
	snprintf(dev, sizeof(dev), "/dev/%s", name);
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, dev, strlen(dev)) && (line[strlen(dev)] == ' ' ||
							 line[strlen(dev)] == '\t'))
			used = 1;
	fclose(f);
	return used;
}

static int in_use_check(const char *name, int running)
{
	char path[64];
	int fd;

	if (in_use_as_swap(name)) {
		fprintf(stderr, "farmem-blk del: /dev/%s is in use as swap: run "
			"'swapoff /dev/%s' first\n", name, name);
		return -EBUSY;
	}
	if (!running)
		return 0;
	/* An exclusive open fails while mounted or held by another holder. */
	snprintf(path, sizeof(path), "/dev/%s", name);
	fd = open(path, O_RDONLY | O_EXCL | O_CLOEXEC);
	if (fd < 0 && errno == EBUSY) {
		fprintf(stderr, "farmem-blk del: /dev/%s is in use (mounted or "
			"held open)\n", name);
		return -EBUSY;
	}
	if (fd >= 0)
		close(fd);
	return 0;
}

static void wait_exit(pid_t pid)
{
	struct timespec ts = { 0, 20 * 1000000L };

	for (int waited = 0; waited < EXIT_WAIT_MS && pid_alive(pid); waited += 20)
		nanosleep(&ts, NULL);
}

/* Daemon gone: remove the kernel device ourselves and give the remote
 * memory back through a store attached to the saved page map. */
static int del_orphan(struct devinfo *d)
{
	char err[512];
	struct store *s;
	int id, ret;
	const struct blk_frontend_ops *fe = blk_frontend_of_dev(d->name, &id);

	if (fe && fe->remove) {
		ret = fe->remove(id);
		if (ret < 0 && ret != -ENODEV && ret != -ENOENT) {
			fprintf(stderr, "farmem-blk del: %s %d: %s\n", fe->name, id,
				strerror(-ret));
			return 1;
		}
	}
	if (!d->have_conf || !d->cfg.store.state_path ||
	    access(d->cfg.store.state_path, F_OK) < 0)
		return 0;
	err[0] = '\0';
	blk_config_finish(&d->cfg, 1, err, sizeof(err));
	d->cfg.store.attach = 1;
	if (!d->cfg.store.max_io)
		d->cfg.store.max_io = 128u << 10;
	ret = store_open(&d->cfg.store, &s, err, sizeof(err));
	if (ret == 0) {
		ret = store_release(s);
		store_close(s);
	}
	if (ret < 0)
		fprintf(stderr, "farmem-blk del: %s: could not free its remote memory "
			"(%s); the servers reclaim it when its lease ends\n", d->name,
			err[0] ? err : strerror(-ret));
	return 0;
}

int cmd_del(int argc, char **argv)
{
	static const char *const flags[] = { NULL };
	struct devinfo *d;
	char name[32], path[PATH_MAX], reply[512], *arg;
	int n, status = 0, ret;

	if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
		printf("usage: farmem-blk del N\n\nStop device N (ublkbN, or nbdN), free "
		       "its remote memory and remove it.\n");
		return 0;
	}
	n = positional(argc, argv, flags, &arg);
	if (n != 1 || dev_name_parse(arg, name, sizeof(name)) < 0) {
		fprintf(stderr, "usage: farmem-blk del N\n");
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "farmem-blk del: must run as root\n");
		return 1;
	}
	d = malloc(sizeof(*d));
	if (!d)
		return 1;
	devinfo_load(name, d);
	if (!d->have_conf && !d->running) {
		int id;
		const struct blk_frontend_ops *fe = blk_frontend_of_dev(name, &id);

		if (!fe || !fe->query || fe->query(id, NULL) < 0) {
			fprintf(stderr, "farmem-blk del: no device %s\n", name);
			free(d);
			return 1;
		}
	}
	if (in_use_check(name, d->running) < 0) {
		free(d);
		return 1;
	}
	if (d->running) {
		run_path(path, sizeof(path), name, ".sock");
		ret = ctl_request(path, "del", reply, sizeof(reply), DEL_TIMEOUT_MS);
		if (ret < 0 || strncmp(reply, "ok", 2)) {
			reply[strcspn(reply, "\n")] = '\0';
			fprintf(stderr, "farmem-blk del: %s: %s\n", name, ret < 0 ?
				strerror(-ret) : reply + (strncmp(reply, "err ", 4) ? 0 : 4));
			status = 1;
		}
		wait_exit(d->pid);
	} else {
		status = del_orphan(d);
	}
	if (status == 0) {
		pid_t keeper;

		if (keeperfile_read(name, &keeper) == 0 && pid_alive(keeper))
			keeper_stop_pid(keeper);
		if (d->have_conf && d->cfg.store.state_path)
			unlink(d->cfg.store.state_path);
		dev_files_remove(name);
	}
	free(d);
	return status;
}
