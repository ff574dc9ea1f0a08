/* cli_add.c — `farmem-blk add` and `farmem-blk recover`: check what can
 * be checked in the foreground (root, kernel support, servers, size),
 * then start a detached device daemon and return once its device is
 * live, printing the device path. */
#include <errno.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "blk_config.h"
#include "etcd.h"
#include "cli.h"
#include "daemon/daemon.h"
#include "frontend/frontend.h"
#include "log.h"
#include "proc_util.h"
#include "transport.h"

/* Largest request: swap writes clusters of up to 32 pages, and every
 * tag of every queue keeps a locked buffer this big. */
#define ADD_MAX_IO (128u << 10)
#define PREFLIGHT_TIMEOUT_MS 3000
#define MIN_FREE_KBYTES_ADVISED 32768

enum { OPT_FOREGROUND = 0x1000, OPT_OVERCOMMIT };

struct add_opts {
	int foreground;
	int overcommit;
};

static int add_extra(void *arg, int val, const char *optarg_text, char *err,
		     size_t errlen)
{
	struct add_opts *o = arg;

	(void)optarg_text; (void)err; (void)errlen;
	if (val == OPT_FOREGROUND)
		o->foreground = 1;
	else if (val == OPT_OVERCOMMIT)
		o->overcommit = 1;
	return 0;
}

static const struct option add_options[] = {
	{ "foreground", no_argument, NULL, OPT_FOREGROUND },
	{ "overcommit", no_argument, NULL, OPT_OVERCOMMIT },
	{ 0 },
};

static int wants_no_root(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ||
		    !strcmp(argv[i], "--check-config"))
			return 1;
	return 0;
}

static int need_root(const char *cmd)
{
	if (geteuid() == 0)
		return 0;
	fprintf(stderr, "farmem-blk %s: must run as root (it creates block "
		"devices, locks memory and writes /run/farmem)\n", cmd);
	return -EPERM;
}

static void human(uint64_t b, char *buf, size_t len)
{
	static const char units[] = "BKMGTP";
	double v = (double)b;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu bytes", (unsigned long long)b);
	else
		snprintf(buf, len, "%.1f %ciB", v, units[u]);
}

/* Ask one server for its free pool, from this process.  0 or -errno. */
static int server_free_here(const struct store_config *sc, int i, uint64_t *free_bytes)
{
	struct fm_conn_params p = {
		.addr = sc->servers[i],
		.secret = &sc->secret,
		.identity = sc->identity.name[0] ? &sc->identity : NULL,
		.timeout_ms = PREFLIGHT_TIMEOUT_MS,
		.connect_timeout_ms = PREFLIGHT_TIMEOUT_MS,
		.max_inflight = 2,
	};
	struct fm_req r = { .op = FM_OP_STAT };
	struct fm_conn *c;
	int ret;

	memcpy(p.uuid, sc->uuid, FM_UUID_LEN);
	ret = fm_conn_open(&p, &c);
	if (ret < 0)
		return ret;
	ret = fm_conn_call(c, &r);
	if (ret == 0)
		*free_bytes = r.rep.stat.free_bytes;
	fm_conn_close(c);
	return ret;
}

/* RDMA: librdmacm keeps the verbs device open process-wide, and the kernel
 * refuses its use from a forked child (our daemon), so probe in a child
 * that exits: the CLI itself never opens an RDMA device. */
static int server_free(const struct store_config *sc, int i, uint64_t *free_bytes)
{
	int64_t res[2] = { -EIO, 0 };
	int p[2], st;
	pid_t pid;

	if (sc->servers[i].kind != ADDR_RDMA)
		return server_free_here(sc, i, free_bytes);
	if (pipe(p) < 0)
		return -errno;
	pid = fork();
	if (pid == 0) {
		uint64_t f = 0;

		close(p[0]);
		res[0] = server_free_here(sc, i, &f);
		res[1] = (int64_t)f;
		_exit(write(p[1], res, sizeof(res)) == sizeof(res) ? 0 : 1);
	}
	close(p[1]);
	if (pid > 0 && read(p[0], res, sizeof(res)) != sizeof(res))
		res[0] = -EIO;
	close(p[0]);
	if (pid > 0)
		waitpid(pid, &st, 0);
	*free_bytes = (uint64_t)res[1];
	return pid < 0 ? -errno : (int)res[0];
}

static const char *conn_error(int ret)
{
	switch (ret) {
	case -EACCES: return "refused our secret or key (made from another cluster's secret?)";
	case -EPROTO: return "is not a farmem memserver (protocol error)";
	case -ECONNREFUSED: return "unreachable: connection refused (is farmem-memserver running?)";
	case -ETIMEDOUT: return "unreachable: timed out";
	default: return strerror(-ret);
	}
}

/* etcd://: the members registered now, as the daemon's store will find
 * them, into out (a copy of sc).  0, or -errno after saying why. */
static int etcd_members_now(const struct store_config *sc, struct store_config *out)
{
	static struct etcd_kv kvs[STORE_MAX_SERVERS];
	char prefix[ETCD_CLUSTER_MAX + 24], why[256] = "";
	struct etcd *e;
	int64_t rev;
	int n = 0, ret;

	*out = *sc;
	out->nservers = 0;
	etcd_members_prefix(sc->cluster, prefix, sizeof(prefix));
	ret = etcd_open(&sc->etcd, PREFLIGHT_TIMEOUT_MS, &e, why, sizeof(why));
	if (ret == 0) {
		ret = etcd_range_prefix(e, prefix, kvs, STORE_MAX_SERVERS, &n, &rev);
		if (ret < 0 && ret != -E2BIG)
			snprintf(why, sizeof(why), "%s", etcd_last_error(e));
		etcd_close(e);
	}
	if (ret < 0 && ret != -E2BIG) {
		fprintf(stderr, "farmem-blk add: etcd cluster %s: %s\n", sc->cluster, why);
		return ret;
	}
	for (int i = 0; i < n; i++) {
		struct etcd_member m;

		if (etcd_member_decode(kvs[i].value, &m) == 0 &&
		    parse_addr(m.addr, 0, &out->servers[out->nservers]) == 0)
			out->nservers++;
	}
	if (out->nservers == 0) {
		fprintf(stderr, "farmem-blk add: no memserver registered in etcd cluster "
			"%s (under %s)\n", sc->cluster, prefix);
		return -EHOSTUNREACH;
	}
	if (!out->replicas)
		out->replicas = out->nservers >= 2 ? 2 : 1;
	return 0;
}

/* Servers unreachable or refusing, and a size larger than their free
 * memory, are reported here rather than by a daemon in the background. */
static int preflight_servers(const struct blk_config *cfg, int overcommit)
{
	static struct store_config found;
	const struct store_config *sc = &cfg->store;
	uint64_t total = 0, need;
	int up = 0, bad = 0;
	char a[400], h1[32], h2[32];

	if (sc->etcd.n) {
		int ret = etcd_members_now(sc, &found);

		if (ret < 0)
			return ret;
		sc = &found;
	}

	for (int i = 0; i < sc->nservers; i++) {
		uint64_t f = 0;
		int ret = server_free(sc, i, &f);

		addr_str(&sc->servers[i], a, sizeof(a));
		if (ret < 0) {
			fprintf(stderr, "farmem-blk add: server %s %s\n", a, conn_error(ret));
			bad = bad ? bad : ret;
			continue;
		}
		up++;
		total += f;
	}
	if (up < sc->replicas) {
		fprintf(stderr, "farmem-blk add: %d of %d servers answered; %d "
			"replicas need at least %d\n", up, sc->nservers,
			sc->replicas, sc->replicas);
		return bad ? bad : -EHOSTUNREACH;
	}
	need = sc->size * (uint64_t)sc->replicas;
	if (need > total && !overcommit) {
		human(sc->size, h1, sizeof(h1));
		human(total, h2, sizeof(h2));
		fprintf(stderr, "farmem-blk add: size too large: %s x %d replicas "
			"needs up to %s of remote memory but the servers offer %s "
			"free (use a smaller --size, more servers, or --overcommit "
			"to count on compression)\n", h1, sc->replicas,
			(human(need, a, sizeof(a)), a), h2);
		return -ENOSPC;
	}
	return 0;
}

static void warn_min_free(void)
{
	FILE *f = fopen("/proc/sys/vm/min_free_kbytes", "re");
	unsigned long v = 0;

	if (!f)
		return;
	if (fscanf(f, "%lu", &v) == 1 && v < MIN_FREE_KBYTES_ADVISED)
		fprintf(stderr, "farmem-blk: warning: vm.min_free_kbytes is %lu; "
			"swapping over the network needs a reserve to receive "
			"replies: 'sysctl vm.min_free_kbytes=%d' is advised\n",
			v, MIN_FREE_KBYTES_ADVISED);
	fclose(f);
}

static int mkdir_p(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s", dir);
	for (char *p = path + 1; ; p++) {
		if (*p && *p != '/')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return -errno;
		if (!c)
			return 0;
		*p = c;
	}
}

static int prepare_dirs(const struct blk_config *cfg, const char *cmd)
{
	int ret = run_dir_create();

	if (ret == 0 && cfg->set.state_dir[0])
		ret = mkdir_p(cfg->set.state_dir);
	if (ret < 0)
		fprintf(stderr, "farmem-blk %s: creating %s or %s: %s\n", cmd,
			run_dir(), cfg->set.state_dir, strerror(-ret));
	return ret;
}

/* recover's device lock: held by the CLI until the daemon is ready,
 * never by the daemon or its keeper (flock follows forks). */
static int recover_lock_fd = -1;

static void drop_recover_lock(void)
{
	if (recover_lock_fd >= 0)
		close(recover_lock_fd);
	recover_lock_fd = -1;
}

/* Run the daemon detached (or here, with foreground) on what it needs
 * of cfg, and report. */
static int launch_daemon(const struct devd_config *dc, int foreground,
			 const char *cmd)
{
	char msg[1024];
	int ready_fd = -1, fd;

	if (foreground) {
		drop_recover_lock();
		return daemon_run_device(dc, -1);
	}
	fd = daemon_detach(&ready_fd);
	if (fd < 0) {
		fprintf(stderr, "farmem-blk %s: fork: %s\n", cmd, strerror(-fd));
		return 1;
	}
	if (fd == 0) {
		drop_recover_lock();
		_exit(daemon_run_device(dc, ready_fd));
	}
	if (daemon_wait_ready(fd, msg, sizeof(msg)) < 0) {
		fprintf(stderr, "farmem-blk %s: %s\n", cmd, msg);
		return 1;
	}
	printf("%s\n", msg);
	return 0;
}

/* A new device (recover_id -1) or recover's (its ublk id). */
static int launch(struct blk_config *cfg, int recover_id, int foreground,
		  const char *cmd)
{
	struct devd_config dc = {
		.store = &cfg->store,
		.frontend = blk_frontend_get(cfg->frontend),
		.fe = {
			.dev_id = recover_id,
			.queues = cfg->queues,
			.depth = cfg->depth,
			.store_queues = cfg->store.queues,
			.max_io = cfg->store.max_io,
			.size = cfg->store.size,
		},
		.metrics = cfg->set.metrics,
		.secret_file = cfg->set.key_file[0] ? cfg->set.key_file
						    : cfg->set.secret_file,
	};
	char *record = NULL;
	int status;

	if (recover_id < 0) {
		/* recover must rebuild the same store: same uuid, so the
		 * same state file and the same segments on the servers. */
		snprintf(cfg->set.uuid, sizeof(cfg->set.uuid), "%s", cfg->uuid_text);
		/* ... and the record says which algorithm "auto" became
		 * (the state file holds it too, with the key). */
		if (store_encrypt_resolve(cfg->store.encrypt, &cfg->store.encrypt) == 0)
			snprintf(cfg->set.encrypt, sizeof(cfg->set.encrypt), "%s",
				 store_encrypt_name(cfg->store.encrypt));
		record = blk_settings_text(&cfg->set);
		if (!record) {
			fprintf(stderr, "farmem-blk %s: out of memory\n", cmd);
			return 1;
		}
		dc.record = record;
	}
	status = launch_daemon(&dc, foreground, cmd);
	free(record);
	return status;
}

static int check_frontend(const struct blk_config *cfg, const char *cmd)
{
	char err[512];
	int ret = blk_frontend_get(cfg->frontend)->check_available(err, sizeof(err));

	if (ret < 0)
		fprintf(stderr, "farmem-blk %s: %s\n", cmd, err);
	return ret;
}

int cmd_add(int argc, char **argv)
{
	struct add_opts o = { 0 };
	struct blk_extra_opts extra = {
		.opts = add_options,
		.usage = "  --foreground         serve in the foreground (no detaching)\n"
			 "  --overcommit         allow a size beyond the servers' free memory\n",
		.handle = add_extra,
		.arg = &o,
	};
	struct blk_config *cfg;
	char err[BLK_CONFIG_ERR_LEN];
	int first = 0, ret, status = 1;

	if (!wants_no_root(argc, argv) && need_root("add") < 0)
		return 1;
	if (getenv("FARMEM_DEBUG"))
		log_set_level(LOG_LVL_DEBUG);
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || fm_auth_init() < 0) {
		fprintf(stderr, "farmem-blk add: out of memory or no libsodium\n");
		free(cfg);
		return 1;
	}
	ret = blk_config_parse(argc, argv, BLK_CMD_ADD, &extra, cfg, &first,
			       err, sizeof(err));
	if (ret == 1) {
		status = 0;
		goto out;
	}
	if (ret < 0) {
		fprintf(stderr, "farmem-blk add: %s\n", err);
		status = ret == -EINVAL ? 2 : 1;
		goto out;
	}
	if (first < argc) {
		fprintf(stderr, "farmem-blk add: unexpected argument '%s'\n", argv[first]);
		status = 2;
		goto out;
	}
	if (!cfg->store.max_io)
		cfg->store.max_io = ADD_MAX_IO;
	cfg->store.queues = blk_frontend_get(cfg->frontend)->store_queues(cfg->queues,
									 cfg->depth);
	/* Servers first: their errors hold on any kernel, and the kernel
	 * check then names the last missing piece. */
	if (preflight_servers(cfg, o.overcommit) < 0 || check_frontend(cfg, "add") < 0 ||
	    prepare_dirs(cfg, "add") < 0)
		goto out;
	warn_min_free();
	status = launch(cfg, -1, o.foreground, "add");
out:
	free(cfg);
	return status;
}

/* Rebuild the device's config from its record in the run directory. */
static int recover_config(const char *name, struct blk_config *cfg)
{
	char path[PATH_MAX], err[BLK_CONFIG_ERR_LEN];
	int ret;

	blk_config_defaults(cfg, BLK_CMD_ADD);
	ret = run_path(path, sizeof(path), name, ".conf");
	if (ret == 0)
		ret = blk_config_load_file(cfg, path, err, sizeof(err));
	if (ret == -ENOENT) {
		fprintf(stderr, "farmem-blk recover: no record of %s in %s (was it "
			"created by 'farmem-blk add'?)\n", name, run_dir());
		return ret;
	}
	if (ret == 0)
		ret = blk_config_finish(cfg, 1, err, sizeof(err));
	if (ret < 0) {
		fprintf(stderr, "farmem-blk recover: %s: %s\n", path, err);
		return ret;
	}
	if (!cfg->store.state_path || access(cfg->store.state_path, R_OK | W_OK) < 0) {
		fprintf(stderr, "farmem-blk recover: %s: page map %s is gone; "
			"nothing to attach to\n", name,
			cfg->store.state_path ? cfg->store.state_path : "(none)");
		return -ENOENT;
	}
	cfg->store.attach = 1;
	return 0;
}

/* The kernel device decides queues, depth and request size. */
static int recover_geometry(const char *name, const struct blk_frontend_ops *fe,
			    int id, struct blk_config *cfg)
{
	struct blk_frontend_info info;
	int ret = fe->query(id, &info);

	if (ret < 0) {
		fprintf(stderr, "farmem-blk recover: %s %d: %s\n", fe->name, id,
			ret == -ENODEV ? "no such device (the kernel no longer has it)"
				       : strerror(-ret));
		return ret;
	}
	if (info.live && pid_alive(info.pid)) {
		fprintf(stderr, "farmem-blk recover: %s is live, served by pid %d; "
			"nothing to recover\n", name, (int)info.pid);
		return -EBUSY;
	}
	cfg->queues = info.queues;
	cfg->depth = info.depth;
	cfg->store.queues = fe->store_queues(info.queues, info.depth);
	cfg->store.max_io = info.max_io;
	return 0;
}

/* How long a second recover waits for the first: a recovery takes
 * START_USER_RECOVERY's 30 s at most plus connecting. */
#define RECOVER_LOCK_WAIT_MS 120000
#define RECOVER_LOCK_POLL_MS 100

/* Exclusive lock on <run dir>/<name>.lock: its fd; -1 if it cannot be
 * had (recover then goes on unlocked); -ETIMEDOUT when another recover
 * held it for RECOVER_LOCK_WAIT_MS (never wait forever: that one may be
 * stuck, and a caller deserves an answer). */
static int recover_lock(const char *name)
{
	char path[PATH_MAX];
	int fd;

	if (run_path(path, sizeof(path), name, ".conf") < 0 || access(path, F_OK) < 0 ||
	    run_path(path, sizeof(path), name, ".lock") < 0)
		return -1; /* no such device: nothing to lock, nothing to create */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	for (int waited = 0; flock(fd, LOCK_EX | LOCK_NB) < 0; waited += RECOVER_LOCK_POLL_MS) {
		if (errno == EWOULDBLOCK && waited < RECOVER_LOCK_WAIT_MS) {
			usleep(RECOVER_LOCK_POLL_MS * 1000);
			continue;
		}
		if (errno == EINTR)
			continue;
		close(fd);
		return errno == EWOULDBLOCK ? -ETIMEDOUT : -1;
	}
	return fd;
}

int cmd_recover(int argc, char **argv)
{
	const struct blk_frontend_ops *fe;
	struct blk_config *cfg = NULL;
	char name[32];
	int id, status = 1, foreground = 0;
	pid_t pid;

	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		printf("usage: farmem-blk recover N [--foreground]\n\n"
		       "Attach a new daemon to ublk device N whose daemon died; the\n"
		       "I/O the kernel held is reissued to it and nothing is lost.\n");
		return 0;
	}
	if (argc >= 3 && !strcmp(argv[2], "--foreground"))
		foreground = 1;
	if (argc < 2 || argc > 2 + foreground || dev_name_parse(argv[1], name, sizeof(name)) < 0) {
		fprintf(stderr, "usage: farmem-blk recover N [--foreground]\n");
		return 2;
	}
	if (need_root("recover") < 0)
		return 1;
	/* The device holds the swap path until we are done: allocate from
	 * the reserve and never wait on swap writeback (both inherited by
	 * the daemon). */
	fm_set_io_flusher();
	daemon_set_realtime();
	fe = blk_frontend_of_dev(name, &id);
	if (!fe || !fe->recover || !fe->query) {
		fprintf(stderr, "farmem-blk recover: %s: only ublk devices can be "
			"recovered (the kernel's nbd fails I/O when its server dies)\n", name);
		return 1;
	}
	/* One recovery at a time (the keeper may have started one): the
	 * second waits here and then finds the device live. */
	recover_lock_fd = recover_lock(name);
	if (recover_lock_fd == -ETIMEDOUT) {
		fprintf(stderr, "farmem-blk recover: %s: another recover has held "
			"its lock for %d s; giving up (see its log in %s)\n", name,
			RECOVER_LOCK_WAIT_MS / 1000, run_dir());
		recover_lock_fd = -1;
		goto out;
	}
	if (pidfile_read(name, &pid) == 0 && pid_alive(pid)) {
		fprintf(stderr, "farmem-blk recover: %s is served by a running "
			"daemon (pid %d); nothing to recover\n", name, (int)pid);
		status = 0;
		goto out;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg || fm_auth_init() < 0)
		goto out;
	if (recover_config(name, cfg) == 0 && check_frontend(cfg, "recover") == 0 &&
	    recover_geometry(name, fe, id, cfg) == 0)
		status = launch(cfg, id, foreground, "recover");
out:
	free(cfg);
	drop_recover_lock();
	return status;
}
