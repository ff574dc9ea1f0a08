/* cli_offload.c — `farmem-blk offload`: the flags, the [offload] section
 * of farmem.conf, and the loop that runs every interval until SIGTERM
 * (offload.h describes the pieces and the rules). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_text.h"
#include "blk_config.h"
#include "cli.h"
#include "log.h"
#include "metrics_http.h"
#include "offload.h"
#include "parse.h"

#define INTERVAL_MIN_MS 100u
#define INTERVAL_MAX_MS (3600u * 1000u)

static const char usage_text[] =
"usage: farmem-blk offload --cgroup PATH [--cgroup PATH...] [OPTIONS]\n"
"\n"
"Move cold memory of the cgroups to swap (a farmem device) before the\n"
"kernel needs it: every interval, while the cgroup's memory pressure\n"
"stays under the target, write a step to its memory.reclaim.  Runs in\n"
"the foreground until SIGTERM; SIGUSR1 prints a report on stderr.  Only\n"
"memory.reclaim is ever written.\n"
"\n"
"  --cgroup PATH        a cgroup v2 directory (repeatable; relative paths\n"
"                       start at --cgroup-root)\n"
"  --cgroup-root DIR    default /sys/fs/cgroup\n"
"  --interval DURATION  time between steps (default 6s)\n"
"  --pressure PCT       memory pressure target, share of wall time the\n"
"                       cgroup may stall (default 0.1%)\n"
"  --max-step PCT       largest step, share of memory.current (default 1%)\n"
"  --min SIZE           never below this (default: the cgroup's\n"
"                       unreclaimable memory plus 16M)\n"
"  --dry-run            log what it would reclaim, write nothing\n"
"  --json               report as JSON, one object per interval on stdout\n"
"  --metrics HOST:PORT  Prometheus text at http://HOST:PORT/metrics\n"
"  --config FILE        read [offload] from FILE (default " BLK_CONFIG_DEFAULT_FILE ")\n"
"  --check-config       check the settings and exit\n";

enum {
	OPT_CGROUP = 0x100, OPT_ROOT, OPT_INTERVAL, OPT_PRESSURE, OPT_MAX_STEP,
	OPT_MIN, OPT_DRY_RUN, OPT_JSON, OPT_METRICS, OPT_CONFIG, OPT_CHECK, OPT_HELP,
};

static const struct option long_opts[] = {
	{ "cgroup", required_argument, NULL, OPT_CGROUP },
	{ "cgroup-root", required_argument, NULL, OPT_ROOT },
	{ "interval", required_argument, NULL, OPT_INTERVAL },
	{ "pressure", required_argument, NULL, OPT_PRESSURE },
	{ "max-step", required_argument, NULL, OPT_MAX_STEP },
	{ "min", required_argument, NULL, OPT_MIN },
	{ "dry-run", no_argument, NULL, OPT_DRY_RUN },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "metrics", required_argument, NULL, OPT_METRICS },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "check-config", no_argument, NULL, OPT_CHECK },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static int add_cgroup(struct offload_opts *o, const char *path, const char *origin,
		      char *err, size_t errlen)
{
	size_t n;

	if (!path[0])
		return cli_fail(err, errlen, "%s: empty cgroup path", origin);
	if (o->ncgroups >= OFFLOAD_MAX_CGROUPS)
		return cli_fail(err, errlen, "%s: more than %d cgroups", origin,
			    OFFLOAD_MAX_CGROUPS);
	n = strlen(path);
	if (n >= sizeof(o->cgroup[0]))
		return cli_fail(err, errlen, "%s: cgroup path too long: '%s'", origin, path);
	memcpy(o->cgroup[o->ncgroups], path, n + 1);
	o->ncgroups++;
	return 0;
}

/* One setting from a flag or the file.  origin names it in errors:
 * "--interval" or "FILE: key 'offload:interval'". */
static int apply(struct offload_opts *o, int opt, const char *v, const char *origin,
		 char *err, size_t errlen)
{
	switch (opt) {
	case OPT_CGROUP:
		return add_cgroup(o, v, origin, err, errlen);
	case OPT_ROOT:
		if (!v[0] || strlen(v) >= sizeof(o->cgroup_root))
			return cli_fail(err, errlen, "%s: bad cgroup root '%s'", origin, v);
		snprintf(o->cgroup_root, sizeof(o->cgroup_root), "%s", v);
		return 0;
	case OPT_INTERVAL:
		if (parse_duration_ms(v, &o->interval_ms) < 0 ||
		    o->interval_ms < INTERVAL_MIN_MS || o->interval_ms > INTERVAL_MAX_MS)
			return cli_fail(err, errlen, "%s: '%s' is not a duration between "
				    "100ms and 1h (e.g. 6s)", origin, v);
		return 0;
	case OPT_PRESSURE:
		if (offload_parse_pct(v, &o->pressure) < 0)
			return cli_fail(err, errlen, "%s: '%s' is not a percentage "
				    "above 0 and at most 100 (e.g. 0.1%%)", origin, v);
		return 0;
	case OPT_MAX_STEP:
		if (offload_parse_pct(v, &o->max_step) < 0)
			return cli_fail(err, errlen, "%s: '%s' is not a percentage "
				    "above 0 and at most 100 (e.g. 1%%)", origin, v);
		return 0;
	case OPT_MIN:
		if (parse_size(v, &o->min_bytes) < 0 || o->min_bytes == 0)
			return cli_fail(err, errlen, "%s: '%s' is not a size above 0 "
				    "(e.g. 64M)", origin, v);
		return 0;
	case OPT_METRICS: {
		char host[256];
		uint16_t port;

		if (metrics_parse_listen(v, host, sizeof(host), &port) < 0 ||
		    strlen(v) >= sizeof(o->metrics))
			return cli_fail(err, errlen, "%s: '%s' is not HOST:PORT", origin, v);
		snprintf(o->metrics, sizeof(o->metrics), "%s", v);
		return 0;
	}
	}
	return cli_fail(err, errlen, "%s: unknown setting", origin);
}

/* [offload] of the file, key by key, each named in its errors. */
static int apply_file(struct offload_opts *o, const struct blk_config *cfg,
		      char *err, size_t errlen)
{
	const struct blk_settings *s = &cfg->set;
	const struct { const char *key; int opt; const char *v; } keys[] = {
		{ "cgroup-root", OPT_ROOT, s->offload_cgroup_root },
		{ "interval", OPT_INTERVAL, s->offload_interval },
		{ "pressure", OPT_PRESSURE, s->offload_pressure },
		{ "max-step", OPT_MAX_STEP, s->offload_max_step },
		{ "min", OPT_MIN, s->offload_min },
		{ "metrics", OPT_METRICS, s->offload_metrics },
	};
	char origin[PATH_MAX + 64], list[BLK_SERVERS_TEXT_MAX], *items[OFFLOAD_MAX_CGROUPS + 1];
	int n, ret;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!keys[i].v[0])
			continue;
		snprintf(origin, sizeof(origin), "%s: key 'offload:%s'",
			 cfg->config_file, keys[i].key);
		if ((ret = apply(o, keys[i].opt, keys[i].v, origin, err, errlen)) < 0)
			return ret;
	}
	if (!s->offload_cgroup[0])
		return 0;
	snprintf(origin, sizeof(origin), "%s: key 'offload:cgroup'", cfg->config_file);
	snprintf(list, sizeof(list), "%s", s->offload_cgroup);
	n = split_list(list, items, OFFLOAD_MAX_CGROUPS + 1);
	if (n < 0 || n > OFFLOAD_MAX_CGROUPS)
		return cli_fail(err, errlen, "%s: more than %d cgroups", origin,
			    OFFLOAD_MAX_CGROUPS);
	for (int i = 0; i < n; i++)
		if ((ret = add_cgroup(o, items[i], origin, err, errlen)) < 0)
			return ret;
	return 0;
}

static void opts_defaults(struct offload_opts *o)
{
	memset(o, 0, sizeof(*o));
	snprintf(o->cgroup_root, sizeof(o->cgroup_root), "/sys/fs/cgroup");
	o->interval_ms = OFFLOAD_DEFAULT_INTERVAL_MS;
	o->pressure = OFFLOAD_DEFAULT_PRESSURE;
	o->max_step = OFFLOAD_DEFAULT_MAX_STEP;
}

/* The config file first (--config, else the default one if present),
 * then the flags over it; a --cgroup on the command line replaces the
 * file's list.  Returns 0, 1 after --help, 2 with a usage error in err,
 * or -errno. */
static int parse_args(int argc, char **argv, struct offload_opts *o, int *check,
		      char *err, size_t errlen)
{
	static struct blk_config cfg;
	const char *file = NULL;
	int c, ret, cgroups_from_flags = 0;

	opts_defaults(o);
	*check = 0;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		if (c == OPT_HELP || c == 'h') {
			printf("%s", usage_text);
			return 1;
		}
		if (c == '?' || c == ':') {
			cli_fail(err, errlen, "unknown option or missing value: '%s'",
			     argv[optind - 1]);
			return 2;
		}
		if (c == OPT_CONFIG)
			file = optarg;
	}
	if (optind < argc) {
		cli_fail(err, errlen, "unexpected argument '%s'", argv[optind]);
		return 2;
	}
	blk_config_defaults(&cfg, BLK_CMD_ADD);
	if (!file && access(BLK_CONFIG_DEFAULT_FILE, F_OK) == 0)
		file = BLK_CONFIG_DEFAULT_FILE;
	if (file) {
		ret = blk_config_load_file(&cfg, file, err, errlen);
		if (ret == -ENOENT)
			cli_fail(err, errlen, "--config %s: no such file", file);
		if (ret < 0 || (ret = apply_file(o, &cfg, err, errlen)) < 0)
			return 2;
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", long_opts, NULL)) != -1) {
		char origin[64];

		if (c == OPT_DRY_RUN) {
			o->dry_run = 1;
		} else if (c == OPT_JSON) {
			o->json = 1;
		} else if (c == OPT_CHECK) {
			*check = 1;
		} else if (c != OPT_CONFIG) {
			if (c == OPT_CGROUP && !cgroups_from_flags++)
				o->ncgroups = 0;
			snprintf(origin, sizeof(origin), "--%s",
				 long_opts[c - OPT_CGROUP].name);
			if (apply(o, c, optarg, origin, err, errlen) < 0)
				return 2;
		}
	}
	if (!o->ncgroups) {
		cli_fail(err, errlen, "--cgroup: no cgroup given (e.g. --cgroup "
		     "/sys/fs/cgroup/workload.slice, or 'cgroup' in [offload] of %s)",
		     file ? file : BLK_CONFIG_DEFAULT_FILE);
		return 2;
	}
	return 0;
}

/* --- the loop ------------------------------------------------------ */

/* What the main loop owns, and the copy the metrics thread reads. */
static struct offload_cg cgs[OFFLOAD_MAX_CGROUPS], shown[OFFLOAD_MAX_CGROUPS];
static struct offload_swap_health health, shown_health;
static int ncgs;
static pthread_mutex_t shown_lock = PTHREAD_MUTEX_INITIALIZER;

static void publish(void)
{
	pthread_mutex_lock(&shown_lock);
	memcpy(shown, cgs, sizeof(cgs[0]) * (size_t)ncgs);
	shown_health = health;
	pthread_mutex_unlock(&shown_lock);
}

static void metrics_provider(struct metrics_buf *b, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&shown_lock);
	offload_report_metrics(b, shown, ncgs, &shown_health);
	pthread_mutex_unlock(&shown_lock);
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void set_state(struct offload_cg *cg, enum offload_state s, const char *why)
{
	if (cg->state == s)
		return;
	if (s == OFFLOAD_PAUSED || s == OFFLOAD_ERROR)
		log_warn("%s: %s%s%s", cg->path, offload_state_name(s),
			 why && why[0] ? ": " : "", why ? why : "");
	else if (cg->state == OFFLOAD_PAUSED || cg->state == OFFLOAD_ERROR)
		log_info("%s: %s again", cg->path, offload_state_name(s));
	cg->state = s;
}

static void tick_one(struct offload_cg *cg, const struct offload_opts *o, uint64_t now)
{
	struct offload_sample s;
	char e[64];
	int ret = offload_cg_sample(cg, now, o->min_bytes);

	cg->last_step = 0;
	if (ret < 0) {
		snprintf(e, sizeof(e), "cannot read its files: %s", strerror(-ret));
		set_state(cg, OFFLOAD_ERROR, e);
		return;
	}
	if (ret == 1)
		return;                       /* baselines taken */
	if (!offload_swap_ok(&health)) {
		set_state(cg, OFFLOAD_PAUSED, health.nswaps ? health.why : "no swap");
		return;
	}
	s = (struct offload_sample){ cg->current, cg->floor, cg->pressure };
	cg->last_step = offload_step_bytes(&s, o->pressure, o->max_step);
	if (cg->pressure >= o->pressure)
		set_state(cg, OFFLOAD_BACKOFF, NULL);
	else if (cg->current < cg->floor + OFFLOAD_PAGE)
		set_state(cg, OFFLOAD_AT_FLOOR, NULL);
	else
		set_state(cg, OFFLOAD_RECLAIMING, NULL);
	if (!cg->last_step)
		return;
	if (o->dry_run) {
		log_info("dry-run: %s: would reclaim %" PRIu64 " bytes (memory.current "
			 "%" PRIu64 ", floor %" PRIu64 ", pressure %.3f%%)", cg->path,
			 cg->last_step, cg->current, cg->floor, cg->pressure * 100.0);
		return;
	}
	ret = offload_cg_reclaim(cg, cg->last_step);
	if (ret < 0 && ret != -EAGAIN)
		log_warn("%s: memory.reclaim %" PRIu64 ": %s", cg->path, cg->last_step,
			 strerror(-ret));
}

/* SIGUSR1: the status-style text, on stderr beside the log lines, so
 * the --json stream on stdout stays one object per line. */
static void report(void)
{
	offload_report_text(stderr, cgs, ncgs, &health);
}

/* Waits until deadline (monotonic us) for a signal.  Returns 1 on
 * SIGTERM/SIGINT, 0 when the deadline passed; SIGUSR1 reports and keeps
 * waiting. */
static int wait_signal(const sigset_t *set, uint64_t deadline)
{
	for (;;) {
		uint64_t now = mono_us(), left = deadline > now ? deadline - now : 0;
		struct timespec ts = { (time_t)(left / 1000000u), (long)(left % 1000000u) * 1000 };
		int sig;

		if (!left)
			return 0;
		sig = sigtimedwait(set, NULL, &ts);
		if (sig == SIGUSR1)
			report();
		else if (sig == SIGTERM || sig == SIGINT)
			return 1;
		else if (sig < 0 && errno == EAGAIN)
			return 0;
	}
}

static int loop(const struct offload_opts *o)
{
	sigset_t set;
	uint64_t next = mono_us();

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		uint64_t now = mono_us();

		if (offload_swap_check(&health) < 0)
			snprintf(health.why, sizeof(health.why), "cannot read the swap list");
		for (int i = 0; i < ncgs; i++)
			tick_one(&cgs[i], o, now);
		publish();
		if (o->json)
			offload_report_json(stdout, cgs, ncgs, &health);
		next += o->interval_ms * 1000u;
		if (next < mono_us())
			next = mono_us();   /* a slow reclaim: no burst to catch up */
		if (wait_signal(&set, next))
			return 0;
	}
}

/* Resolve the cgroup paths and check each one, and that there is swap
 * to move pages to.  Errors say what is missing. */
static int prepare(const struct offload_opts *o, char *err, size_t errlen)
{
	int ret;

	ncgs = o->ncgroups;
	for (int i = 0; i < ncgs; i++) {
		const char *p = o->cgroup[i];
		struct offload_cg *cg = &cgs[i];
		size_t n;

		memset(cg, 0, sizeof(*cg));
		if (p[0] == '/')
			n = (size_t)snprintf(cg->path, sizeof(cg->path), "%s", p);
		else
			n = (size_t)snprintf(cg->path, sizeof(cg->path), "%s/%s",
					     o->cgroup_root, p);
		if (n >= sizeof(cg->path))
			return cli_fail(err, errlen, "--cgroup %s: path too long", p);
		while (n > 1 && cg->path[n - 1] == '/')
			cg->path[--n] = '\0';
		for (int j = 0; j < i; j++)
			if (!strcmp(cgs[j].path, cg->path))
				return cli_fail(err, errlen, "--cgroup %s: given twice", cg->path);
		if ((ret = offload_cg_check(cg->path, err, errlen)) < 0)
			return ret;
	}
	if ((ret = offload_swap_check(&health)) < 0)
		return cli_fail(err, errlen, "cannot read the swap list: %s", strerror(-ret));
	if (!health.nswaps)
		return cli_fail(err, errlen, "no swap is active: offload moves pages to "
			    "swap (farmem-blk add, mkswap and swapon a farmem device first)");
	if (!health.nfarmem)
		log_warn("no farmem device among the active swap devices: "
			 "pages go to the machine's other swap");
	return 0;
}

int cmd_offload(int argc, char **argv)
{
	struct offload_opts *o = calloc(1, sizeof(*o));
	struct metrics_server *ms = NULL;
	char err[OFFLOAD_ERR_LEN] = "";
	sigset_t set;
	int check, ret;

	if (!o)
		return 1;
	ret = parse_args(argc, argv, o, &check, err, sizeof(err));
	if (ret == 1 || ret == 2) {
		if (ret == 2)
			fprintf(stderr, "farmem-blk offload: %s\n", err);
		free(o);
		return ret == 1 ? 0 : 2;
	}
	if (check) {
		printf("ok: %d cgroups, interval %" PRIu64 "ms, pressure %.3f%%, "
		       "max-step %.3f%%\n", o->ncgroups, o->interval_ms,
		       o->pressure * 100.0, o->max_step * 100.0);
		free(o);
		return 0;
	}
	/* Signals are taken synchronously by the loop (sigtimedwait): block
	 * them before any thread starts so none of them gets one. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (prepare(o, err, sizeof(err)) < 0) {
		fprintf(stderr, "farmem-blk offload: %s\n", err);
		free(o);
		return 1;
	}
	if (o->metrics[0]) {
		publish();
		ret = metrics_server_start(o->metrics, metrics_provider, NULL, &ms);
		if (ret < 0) {
			fprintf(stderr, "farmem-blk offload: --metrics %s: %s\n",
				o->metrics, strerror(-ret));
			free(o);
			return 1;
		}
	}
	log_info("offload: %d cgroups every %" PRIu64 "ms, pressure target %.3f%%, "
		 "max step %.3f%%%s", ncgs, o->interval_ms, o->pressure * 100.0,
		 o->max_step * 100.0, o->dry_run ? " (dry run)" : "");
	ret = loop(o);
	metrics_server_stop(ms);
	report();
	free(o);
	return ret ? 1 : 0;
}
