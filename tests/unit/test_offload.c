/* test_offload.c — `farmem-blk offload`'s parsers, step controller and
 * cgroup file handling, against the kernel's text formats and a
 * directory of fake cgroup files. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/offload.h"
#include "tap.h"

#define MIB (1024ull * 1024)

static const char psi_text[] =
	"some avg10=0.12 avg60=0.05 avg300=0.01 total=123456\n"
	"full avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";

static const char stat_text[] =
	"anon 419430400\n"
	"file 1048576\n"
	"kernel 3145728\n"
	"kernel_stack 65536\n"
	"unevictable 2097152\n"
	"workingset_refault_anon 42\n"
	"workingset_refault_file 7\n";

static int t_pct(void)
{
	double v;

	CHECK(offload_parse_pct("0.1%", &v) == 0 && v > 0.000999 && v < 0.001001);
	CHECK(offload_parse_pct("5%", &v) == 0 && v > 0.0499 && v < 0.0501);
	CHECK(offload_parse_pct("100%", &v) == 0 && v == 1.0);
	CHECK(offload_parse_pct("1", &v) == -EINVAL);      /* the % is required */
	CHECK(offload_parse_pct("0%", &v) == -EINVAL);
	CHECK(offload_parse_pct("101%", &v) == -EINVAL);
	CHECK(offload_parse_pct("-1%", &v) == -EINVAL);
	CHECK(offload_parse_pct("1%%", &v) == -EINVAL);
	CHECK(offload_parse_pct("x%", &v) == -EINVAL);
	CHECK(offload_parse_pct("nan%", &v) == -EINVAL);
	CHECK(offload_parse_pct("%", &v) == -EINVAL);
	return 0;
}

static int t_psi(void)
{
	uint64_t t = 0;

	CHECK(offload_psi_some_total(psi_text, &t) == 0 && t == 123456);
	CHECK(offload_psi_some_total("full avg10=0 total=5\n", &t) == -EINVAL);
	CHECK(offload_psi_some_total("some avg10=0.00 total=\n", &t) == -EINVAL);
	CHECK(offload_psi_some_total("some avg10=0.00 total=12x\n", &t) == -EINVAL);
	CHECK(offload_psi_some_total("", &t) == -EINVAL);
	return 0;
}

static int t_stat(void)
{
	uint64_t v = 0;

	CHECK(offload_stat_get(stat_text, "workingset_refault_anon", &v) == 0 && v == 42);
	CHECK(offload_stat_get(stat_text, "kernel", &v) == 0 && v == 3145728);
	CHECK(offload_stat_get(stat_text, "kern", &v) == -ENOENT);
	CHECK(offload_stat_get("anon x\n", "anon", &v) == -EINVAL);
	/* kernel + unevictable; without "kernel", the parts. */
	CHECK(offload_stat_unreclaimable(stat_text) == 3145728 + 2097152);
	CHECK(offload_stat_unreclaimable("kernel_stack 10\nslab_unreclaimable 20\n"
					 "pagetables 30\nunevictable 40\n") == 100);
	return 0;
}

static int t_swaps(void)
{
	static const char text[] =
		"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
		"/dev/ublkb0                             partition\t1048572\t\t524288\t\t100\n"
		"/dev/zram0                              partition\t262140\t\t0\t\t-2\n";
	struct offload_swap sw[4];

	CHECK(offload_swaps_parse(text, sw, 4) == 2);
	CHECK(!strcmp(sw[0].dev, "/dev/ublkb0") && sw[0].size_kb == 1048572 &&
	      sw[0].used_kb == 524288);
	CHECK(!strcmp(sw[1].dev, "/dev/zram0") && sw[1].used_kb == 0);
	CHECK(offload_swaps_parse(text, sw, 1) == 1);
	CHECK(offload_swaps_parse("Filename Type Size Used Priority\n", sw, 4) == 0);
	return 0;
}

static int t_pressure_share(void)
{
	CHECK(offload_pressure_share(1000, 2000, 1000000) == 0.001);
	CHECK(offload_pressure_share(2000, 1000, 1000000) == 0.0);   /* backwards */
	CHECK(offload_pressure_share(0, 1000, 0) == 0.0);
	CHECK(offload_pressure_share(0, 3000000, 1000000) == 1.0);   /* capped */
	return 0;
}

static int t_step(void)
{
	struct offload_sample s = { 400 * MIB, 16 * MIB, 0.0 };
	uint64_t full, half;

	/* No pressure: the whole max step, in pages. */
	full = offload_step_bytes(&s, 0.001, 0.05);
	CHECK(full == 20 * MIB);
	/* Half way to the target: half the step. */
	s.pressure = 0.0005;
	half = offload_step_bytes(&s, 0.001, 0.05);
	CHECK(half == 10 * MIB);
	CHECK(half % OFFLOAD_PAGE == 0);
	/* At or past the target: back off. */
	s.pressure = 0.001;
	CHECK(offload_step_bytes(&s, 0.001, 0.05) == 0);
	s.pressure = 0.5;
	CHECK(offload_step_bytes(&s, 0.001, 0.05) == 0);
	/* Never below the floor. */
	s = (struct offload_sample){ 20 * MIB, 19 * MIB, 0.0 };
	CHECK(offload_step_bytes(&s, 0.001, 0.5) == 1 * MIB);
	s.floor = 20 * MIB;
	CHECK(offload_step_bytes(&s, 0.001, 0.5) == 0);
	s.floor = 30 * MIB;
	CHECK(offload_step_bytes(&s, 0.001, 0.5) == 0);
	/* Less than a page: nothing. */
	s = (struct offload_sample){ 100 * 1024, 0, 0.0 };
	CHECK(offload_step_bytes(&s, 0.001, 0.01) == 0);
	return 0;
}

/* A fake cgroup directory with the files offload reads and writes. */
static char dir[64];

static int put(const char *name, const char *text)
{
	char p[128];
	FILE *f;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	f = fopen(p, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static int get(const char *name, char *buf, size_t len)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	return fm_read_small_file(p, buf, len);
}

static int make_cg(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_offload.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	return put("memory.current", "419430400\n") | put("memory.swap.current", "0\n") |
	       put("memory.pressure", psi_text) | put("memory.stat", stat_text) |
	       put("memory.reclaim", "");
}

static void rm_cg(void)
{
	static const char *const files[] = { "memory.current", "memory.swap.current",
		"memory.pressure", "memory.stat", "memory.reclaim" };
	char p[128];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, files[i]);
		unlink(p);
	}
	rmdir(dir);
}

static int t_cgroup_check(void)
{
	char err[OFFLOAD_ERR_LEN], p[128];
	int ok;

	CHECK(make_cg() == 0);
	ok = offload_cg_check(dir, err, sizeof(err)) == 0;
	snprintf(p, sizeof(p), "%s/memory.reclaim", dir);
	unlink(p);
	ok &= offload_cg_check(dir, err, sizeof(err)) == -ENOENT;
	ok &= strstr(err, "memory.reclaim") != NULL && strstr(err, "5.19") != NULL;
	put("memory.reclaim", "");
	snprintf(p, sizeof(p), "%s/memory.current", dir);
	unlink(p);
	ok &= offload_cg_check(dir, err, sizeof(err)) == -ENOENT;
	ok &= strstr(err, "cgroup v2") != NULL;
	ok &= offload_cg_check("/nonexistent/cg", err, sizeof(err)) == -ENOENT;
	rm_cg();
	CHECK(ok);
	return 0;
}

static int t_cgroup_sample_reclaim(void)
{
	struct offload_cg cg;
	char buf[64];
	int ok = 1;

	CHECK(make_cg() == 0);
	memset(&cg, 0, sizeof(cg));
	snprintf(cg.path, sizeof(cg.path), "%s", dir);
	/* First sample: baselines only. */
	ok &= offload_cg_sample(&cg, 1000000, 0) == 1;
	ok &= cg.current == 419430400 && cg.psi_total_us == 123456;
	ok &= cg.floor == 3145728 + 2097152 + OFFLOAD_FLOOR_MARGIN;
	/* One second later: 1000 us more stall = 0.1 %, 10 more refaults. */
	put("memory.pressure", "some avg10=0 avg60=0 avg300=0 total=124456\n"
	    "full avg10=0 avg60=0 avg300=0 total=0\n");
	put("memory.stat", "kernel 0\nworkingset_refault_anon 52\n");
	put("memory.swap.current", "max\n");
	ok &= offload_cg_sample(&cg, 2000000, 64 * MIB) == 0;
	ok &= cg.pressure > 0.000999 && cg.pressure < 0.001001;
	ok &= cg.refaults_per_s > 9.99 && cg.refaults_per_s < 10.01;
	ok &= cg.floor == 64 * MIB;                  /* --min wins */
	ok &= cg.swap_current == UINT64_MAX;
	/* The step lands in memory.reclaim as a byte count. */
	ok &= offload_cg_reclaim(&cg, 8 * MIB) == 0;
	ok &= get("memory.reclaim", buf, sizeof(buf)) > 0 && !strcmp(buf, "8388608");
	ok &= cg.reclaimed_bytes == 8 * MIB && cg.steps == 1;
	/* A broken pressure file is an error, not a guess. */
	put("memory.pressure", "garbage\n");
	ok &= offload_cg_sample(&cg, 3000000, 0) == -EINVAL;
	rm_cg();
	CHECK(ok);
	return 0;
}

static int t_swap_health(void)
{
	static const char swaps[] =
		"Filename\tType\tSize\tUsed\tPriority\n"
		"/dev/zram0\tpartition\t1000\t950\t100\n";
	struct offload_swap_health h;
	char path[] = "/tmp/test_offload_swaps.XXXXXX";
	int fd = mkstemp(path), ok = 1;

	CHECK(fd >= 0);
	CHECK(write(fd, swaps, sizeof(swaps) - 1) == (ssize_t)(sizeof(swaps) - 1));
	close(fd);
	setenv("FARMEM_PROC_SWAPS", path, 1);
	setenv("FARMEM_RUN_DIR", "/nonexistent-run-dir", 1);
	ok &= offload_swap_check(&h) == 0;
	ok &= h.nswaps == 1 && h.nfarmem == 0 && h.full && !offload_swap_ok(&h);
	ok &= strstr(h.why, "nearly full") != NULL;
	unlink(path);
	setenv("FARMEM_PROC_SWAPS", "/nonexistent-swaps", 1);
	ok &= offload_swap_check(&h) == -ENOENT;
	unsetenv("FARMEM_PROC_SWAPS");
	unsetenv("FARMEM_RUN_DIR");
	CHECK(ok);
	return 0;
}

static int t_report(void)
{
	struct offload_cg cg;
	struct offload_swap_health h = { .nswaps = 1, .nfarmem = 1 };
	char mem[8192], *text = NULL;
	size_t len = 0;
	struct metrics_buf b;
	FILE *f = open_memstream(&text, &len);

	memset(&cg, 0, sizeof(cg));
	snprintf(cg.path, sizeof(cg.path), "/sys/fs/cgroup/a\"b");
	cg.state = OFFLOAD_RECLAIMING;
	cg.reclaimed_bytes = 12345;
	cg.current = 1 * MIB;
	CHECK(f);
	offload_report_json(f, &cg, 1, &h);
	fclose(f);
	CHECK(strstr(text, "\"path\": \"/sys/fs/cgroup/a\\\"b\"") != NULL);
	CHECK(strstr(text, "\"reclaimed_bytes\": 12345") != NULL);
	CHECK(strstr(text, "\"state\": \"reclaiming\"") != NULL);
	free(text);
	metrics_buf_init(&b, mem, sizeof(mem));
	offload_report_metrics(&b, &cg, 1, &h);
	CHECK(!b.overflow);
	mem[b.len < sizeof(mem) ? b.len : sizeof(mem) - 1] = '\0';
	CHECK(strstr(mem, "farmem_offload_reclaimed_bytes_total{cgroup=\"/sys/fs/cgroup/a\\\"b\"} 12345") != NULL);
	CHECK(strstr(mem, "farmem_offload_swap_ok 1") != NULL);
	return 0;
}

static const struct tap_case cases[] = {
	{ "percentages need their % and stay in (0, 100]", t_pct },
	{ "memory.pressure: the some line's total", t_psi },
	{ "memory.stat: keys, unreclaimable memory", t_stat },
	{ "/proc/swaps lines", t_swaps },
	{ "pressure as a share of wall time", t_pressure_share },
	{ "step: proportional, scaled by pressure, floored, whole pages", t_step },
	{ "cgroup check names what is missing", t_cgroup_check },
	{ "cgroup sample and reclaim on fake files", t_cgroup_sample_reclaim },
	{ "swap nearly full pauses reclaim", t_swap_health },
	{ "report: JSON and Prometheus text", t_report },
};

TAP_MAIN(cases)
