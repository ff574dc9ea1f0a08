/* test_pressure.c — the donor's side of an elastic pool: reading
 * /proc/meminfo and the cgroup's limit (texts and a fake root), the
 * shrink/grow decision and its hysteresis, retiring and restoring slots,
 * and shrink.c asking clients and freeing what missed its deadline. */
#include "log.h"
#include "tap.h"
#include "../../memserver/memserver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1ull << 20)
#define SEG (64u << 10)
#define NSEG 16

static uint8_t pool[SEG * NSEG];

static int t_meminfo(void)
{
	uint64_t v = 0;

	CHECK(ms_meminfo_parse("MemTotal:  100 kB\nMemFree: 5 kB\nMemAvailable:   2048 kB\n", &v) == 0);
	CHECK(v == 2048 * 1024);
	CHECK(ms_meminfo_parse("MemAvailable: 7 kB", &v) == 0 && v == 7 * 1024);
	CHECK(ms_meminfo_parse("MemTotal: 100 kB\nMemFree: 5 kB\n", &v) == -ENOENT);
	CHECK(ms_meminfo_parse("MemAvailable: lots\n", &v) == -EINVAL);
	CHECK(ms_meminfo_parse("MemAvailable: 12 MB\n", &v) == -EINVAL);
	CHECK(ms_meminfo_parse("", &v) == -ENOENT);
	return 0;
}

static int t_cgroup_texts(void)
{
	char path[64];
	uint64_t h;

	CHECK(ms_cgroup_path_parse("0::/system.slice/farmem-memserver.service\n", path, sizeof(path)) == 0);
	CHECK(strcmp(path, "/system.slice/farmem-memserver.service") == 0);
	CHECK(ms_cgroup_path_parse("12:memory:/x\n0::/\n", path, sizeof(path)) == 0);
	CHECK(strcmp(path, "/") == 0);
	CHECK(ms_cgroup_path_parse("12:memory:/x\n4:cpu:/y\n", path, sizeof(path)) == -ENOENT);
	CHECK(ms_cgroup_path_parse("0::/a/../../etc\n", path, sizeof(path)) == -EINVAL);
	CHECK(ms_cgroup_path_parse("0::/a/..\n", path, sizeof(path)) == -EINVAL);
	CHECK(ms_cgroup_path_parse("0::relative\n", path, sizeof(path)) == -EINVAL);
	CHECK(ms_cgroup_path_parse("0::/a-very-long-path-that-does-not-fit-in-the-buffer-at-all-really\n",
				   path, 16) == -EINVAL);
	CHECK(ms_cgroup_headroom("max\n", "123\n", &h) == 0 && h == UINT64_MAX);
	CHECK(ms_cgroup_headroom("1000\n", "400\n", &h) == 0 && h == 600);
	CHECK(ms_cgroup_headroom("1000\n", "4000\n", &h) == 0 && h == 0);
	CHECK(ms_cgroup_headroom("lots\n", "400\n", &h) == -EINVAL);
	CHECK(ms_cgroup_headroom("1000\n", "-4\n", &h) == -EINVAL);
	CHECK(ms_cgroup_headroom("", "4\n", &h) == -EINVAL);
	return 0;
}

static int write_file(const char *dir, const char *rel, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s%s", dir, rel);
	f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

static char root[256];

static int make_root(uint64_t avail_kib, const char *cg_max, const char *cg_cur)
{
	char text[128], cmd[600];

	if (!root[0]) {
		snprintf(root, sizeof(root), "%s/fm-pressure-XXXXXX",
			 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(root))
			return -1;
		snprintf(cmd, sizeof(cmd), "mkdir -p %s/proc/self %s/sys/fs/cgroup/svc", root, root);
		if (system(cmd) != 0)
			return -1;
	}
	snprintf(text, sizeof(text), "MemTotal: 9999999 kB\nMemAvailable: %llu kB\n",
		 (unsigned long long)avail_kib);
	if (write_file(root, "/proc/meminfo", text) < 0 ||
	    write_file(root, "/proc/self/cgroup", "0::/svc\n") < 0 ||
	    write_file(root, "/sys/fs/cgroup/svc/memory.max", cg_max) < 0 ||
	    write_file(root, "/sys/fs/cgroup/svc/memory.current", cg_cur) < 0)
		return -1;
	return 0;
}

static void drop_root(void)
{
	char cmd[600];

	if (root[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", root);
	}
}

static int t_read_fake_root(void)
{
	struct ms_pressure p;

	CHECK(make_root(1024 * 1024, "max\n", "0\n") == 0);
	CHECK(ms_pressure_read(root, &p) == 0);
	CHECK(p.mem_available == 1024 * MiB && p.cg_headroom == UINT64_MAX);
	CHECK(p.avail == 1024 * MiB);
	/* The cgroup's limit is tighter than the host: it counts. */
	CHECK(make_root(1024 * 1024, "524288000\n", "314572800\n") == 0);
	CHECK(ms_pressure_read(root, &p) == 0);
	CHECK(p.cg_headroom == 209715200 && p.avail == 209715200);
	/* No such root: an error, not a made-up number. */
	CHECK(ms_pressure_read("/nonexistent-farmem-root", &p) == -ENOENT);
	return 0;
}

static const struct ms_shrink_policy pol = {
	.reserve = 1024 * MiB, .min_bytes = 8 * MiB, .max_bytes = 64 * MiB, .seg_max = 1 << 20,
};

static int t_target(void)
{
	uint64_t band = ms_pressure_band(&pol);

	CHECK(band == 256 * MiB);
	CHECK(ms_pressure_target(&pol, 2048 * MiB, 64) == 64);       /* room: as is */
	CHECK(ms_pressure_target(&pol, 1024 * MiB - 10 * MiB, 64) == 54);
	CHECK(ms_pressure_target(&pol, 1024 * MiB - 1, 64) == 63);   /* rounds up */
	CHECK(ms_pressure_target(&pol, 100 * MiB, 64) == 8);         /* min-size */
	CHECK(ms_pressure_target(&pol, 100 * MiB, 8) == 8);
	CHECK(ms_pressure_target(&pol, 0, 4) == 4);                  /* below min already */
	/* Above reserve but inside the band: stays. */
	CHECK(ms_pressure_target(&pol, 1024 * MiB + 200 * MiB, 30) == 30);
	CHECK(ms_pressure_target(&pol, 1024 * MiB + band, 30) == 30);
	/* Beyond it: grows by what keeps avail a band above reserve. */
	CHECK(ms_pressure_target(&pol, 1024 * MiB + band + 10 * MiB, 30) == 40);
	CHECK(ms_pressure_target(&pol, 8192 * MiB, 30) == 64);       /* up to size */
	/* reserve 0: off. */
	{
		struct ms_shrink_policy off = pol;

		off.reserve = 0;
		CHECK(ms_pressure_target(&off, 0, 64) == 64);
	}
	return 0;
}

/* A host whose other load is fixed: every pool slot taken from it lowers
 * avail by a slot.  The pool must settle and then stay put. */
static int t_no_flapping(void)
{
	const uint64_t other[] = { 900 * MiB, 1000 * MiB, 1030 * MiB, 1100 * MiB, 1300 * MiB,
				   1500 * MiB, 960 * MiB };
	uint32_t slots = 64;

	for (size_t k = 0; k < sizeof(other) / sizeof(other[0]); k++) {
		uint32_t seen[12];

		for (int step = 0; step < 12; step++) {
			/* avail = what the rest leaves, plus what the pool gave back. */
			uint64_t avail = other[k] + (uint64_t)(64 - slots) * MiB;

			slots = ms_pressure_target(&pol, avail, slots);
			seen[step] = slots;
		}
		/* Settled after the first look, and never below reserve after. */
		for (int step = 1; step < 12; step++)
			CHECK(seen[step] == seen[0]);
		CHECK(other[k] + (uint64_t)(64 - slots) * MiB >= pol.reserve || slots == 8);
	}
	return 0;
}

static int t_retire_restore(void)
{
	struct ms_segtab t;
	uint64_t a, b, id;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &a) == 0);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &b) == 0);
	CHECK(ms_segtab_retire_free(&t, 100) == NSEG - 2);
	CHECK(ms_segtab_pool_bytes(&t) == 2 * SEG && t.nretired == NSEG - 2);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &id) == -ENOSPC);
	/* While slots are wanted back, a freed slot retires. */
	t.retire_want = 1;
	CHECK(ms_segtab_free(&t, 1, a) == 0);
	CHECK(t.retire_want == 0 && t.nretired == NSEG - 1);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &id) == -ENOSPC);
	/* Forced free (missed deadline): the owner's id is dead. */
	CHECK(ms_segtab_force_free(&t, (uint32_t)b) == 1);
	CHECK(ms_segtab_range(&t, 1, b, 0, 4096, &(uint8_t *){ NULL }) == -ENOENT);
	CHECK(ms_segtab_force_free(&t, (uint32_t)b) == 0);
	CHECK(ms_segtab_restore(&t, 3) == 3);
	CHECK(ms_segtab_pool_bytes(&t) == 4 * SEG);
	CHECK(ms_segtab_restore(&t, 100) == NSEG - 4);
	CHECK(ms_segtab_pool_bytes(&t) == NSEG * SEG && t.nretired == 0);
	for (int i = 0; i < NSEG; i++)
		CHECK(ms_segtab_alloc(&t, 2, SEG, &id) == 0);
	ms_segtab_fini(&t);
	return 0;
}

/* ---- shrink.c with a captured notify ---- */

static uint64_t now;
static uint64_t now_fn(void) { return now; }

static struct {
	int unreachable;      /* capture reaches no connection */
	int calls;
	uint32_t owner, deadline;
	uint16_t flags, n;
	uint64_t ids[FM_NOTICE_MAX];
} got;

static int capture(void *arg, uint32_t owner, uint32_t deadline_ms, uint16_t flags,
		   const uint64_t *ids, uint16_t n)
{
	(void)arg;
	if (got.unreachable)
		return 0;
	got.calls++;
	got.owner = owner;
	got.deadline = deadline_ms;
	got.flags = flags;
	got.n = n;
	if (n)
		memcpy(got.ids, ids, n * sizeof(*ids));
	return 1;
}

static int ctx_init(struct ms_ctx *ctx)
{
	memset(ctx, 0, sizeof(*ctx));
	memset(&got, 0, sizeof(got));
	ctx->now_ms = now_fn;
	ctx->notify.fn = capture;
	ms_devtab_init(&ctx->devs, 1000);
	ctx->el.reserve = 1024 * MiB;
	ctx->el.min_bytes = 2 * SEG;
	ctx->el.interval_ms = 1000;
	ctx->el.notice_ms = 5000;
	ctx->el.root = root;
	return ms_segtab_init(&ctx->segs, pool, sizeof(pool), SEG);
}

static int t_shrink_asks_then_frees(void)
{
	struct ms_ctx ctx;
	uint64_t ids[6], x;

	CHECK(ctx_init(&ctx) == 0);
	for (int i = 0; i < 6; i++)
		CHECK(ms_segtab_alloc(&ctx.segs, 7, SEG, &ids[i]) == 0);
	CHECK(ms_elastic_alloc_ok(&ctx) == 0);
	/* Plenty: nothing happens. */
	CHECK(make_root(4 * 1024 * 1024, "max\n", "0\n") == 0);
	now = 1000;
	ms_elastic_tick(&ctx, now);
	CHECK(ms_segtab_pool_bytes(&ctx.segs) == NSEG * SEG && got.calls == 0);
	CHECK(ms_elastic_state(&ctx) == MS_POOL_FULL);
	/* Far below reserve: the 10 free slots go, 4 of the 6 used are
	 * asked for (min-size keeps 2). */
	CHECK(make_root(1024, "max\n", "0\n") == 0);
	now += 1000;
	ms_elastic_tick(&ctx, now);
	CHECK(ms_segtab_pool_bytes(&ctx.segs) == 6 * SEG);
	CHECK(ctx.segs.retire_want == 4);
	CHECK(got.calls == 1 && got.owner == 7 && got.n == 4 && got.flags == 0);
	CHECK(got.deadline == 5000);
	CHECK(ms_elastic_state(&ctx) == MS_POOL_SHRINKING);
	CHECK(ms_elastic_alloc_ok(&ctx) == -ENOSPC);
	/* The client moves one: freed and retired. */
	CHECK(ms_segtab_free(&ctx.segs, 7, got.ids[0]) == 0);
	CHECK(ms_segtab_pool_bytes(&ctx.segs) == 5 * SEG && ctx.segs.retire_want == 3);
	/* Asked once only, even on the next looks. */
	now += 1000;
	ms_elastic_tick(&ctx, now);
	CHECK(got.calls == 1);
	/* Past the deadline: the other three are freed here. */
	now += 5000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.el.forced == 3 && ctx.segs.retire_want == 0);
	CHECK(ms_segtab_pool_bytes(&ctx.segs) == 2 * SEG && ctx.segs.nused == 2);
	for (int k = 1; k < 4; k++)
		CHECK(ms_segtab_free(&ctx.segs, 7, got.ids[k]) == -ENOENT);
	CHECK(ms_elastic_state(&ctx) == MS_POOL_SHRUNK);
	/* Room again: back to the full size, and handing out again. */
	CHECK(make_root(4 * 1024 * 1024, "max\n", "0\n") == 0);
	now += 1000;
	ms_elastic_tick(&ctx, now);
	CHECK(ms_segtab_pool_bytes(&ctx.segs) == NSEG * SEG);
	CHECK(ms_elastic_state(&ctx) == MS_POOL_FULL && ms_elastic_alloc_ok(&ctx) == 0);
	CHECK(ms_segtab_alloc(&ctx.segs, 7, SEG, &x) == 0);
	ms_devtab_fini(&ctx.devs);
	ms_segtab_fini(&ctx.segs);
	return 0;
}

/* Pressure gone before the deadline: nothing is freed behind anyone. */
static int t_shrink_cancelled(void)
{
	struct ms_ctx ctx;
	uint64_t id;

	CHECK(ctx_init(&ctx) == 0);
	for (int i = 0; i < NSEG; i++)
		CHECK(ms_segtab_alloc(&ctx.segs, 3, SEG, &id) == 0);
	CHECK(make_root(1024 * 1024 - 64, "max\n", "0\n") == 0);
	now = 100000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.segs.retire_want == 1 && got.calls == 1 && got.n == 1);
	CHECK(make_root(4 * 1024 * 1024, "max\n", "0\n") == 0);
	now += 1000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.segs.retire_want == 0);
	now += 10000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.el.forced == 0 && ctx.segs.nused == NSEG);
	ms_devtab_fini(&ctx.devs);
	ms_segtab_fini(&ctx.segs);
	return 0;
}

/* A notice that reached no connection of its device (leased,
 * reconnecting, on RDMA only) starts no deadline: nothing is freed
 * behind the owner's back.  It is asked when it comes back. */
static int t_unreached_owner_loses_nothing(void)
{
	struct ms_ctx ctx;
	struct ms_device dev;
	uint64_t id;
	uint16_t asked;

	CHECK(ctx_init(&ctx) == 0);
	for (int i = 0; i < NSEG; i++)
		CHECK(ms_segtab_alloc(&ctx.segs, 9, SEG, &id) == 0);
	got.unreachable = 1;
	CHECK(make_root(1024 * 1024 - 64, "max\n", "0\n") == 0);
	now = 200000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.segs.retire_want == 1 && got.calls == 0);
	/* Long past any deadline: nothing forced. */
	now += 60000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.el.forced == 0 && ctx.segs.nused == NSEG);
	/* The device connects again: now it is asked, and its deadline runs. */
	got.unreachable = 0;
	memset(&dev, 0, sizeof(dev));
	dev.id = 9;
	dev.segs = NSEG;
	ms_elastic_attached(&ctx, &dev);
	/* (The host never got memory back meanwhile, so the pool wanted a
	 * little more each look, down towards min-size.) */
	asked = got.n;
	CHECK(got.calls == 1 && got.owner == 9 && asked >= 1 && asked == ctx.segs.retire_want);
	now += 6000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.el.forced == asked && ctx.segs.nused == (uint32_t)(NSEG - asked));
	ms_devtab_fini(&ctx.devs);
	ms_segtab_fini(&ctx.segs);
	return 0;
}

static int t_drain(void)
{
	struct ms_ctx ctx;
	uint64_t id;

	CHECK(ctx_init(&ctx) == 0);
	ctx.el.reserve = 0;
	CHECK(ms_segtab_alloc(&ctx.segs, 3, SEG, &id) == 0);
	now = 5000;
	ms_elastic_drain(&ctx, 60000);
	CHECK(got.calls == 1 && got.owner == 0 && got.flags == FM_NOTICE_ALL && got.n == 0);
	CHECK(got.deadline == 60000);
	CHECK(ms_elastic_state(&ctx) == MS_POOL_DRAINING && ms_elastic_alloc_ok(&ctx) == -ENOSPC);
	/* Said again now and then, with what is left of the deadline. */
	now += 1000;
	ms_elastic_tick(&ctx, now);
	CHECK(got.calls == 1);
	now += 5000;
	ms_elastic_tick(&ctx, now);
	CHECK(got.calls == 2 && got.deadline == 54000);
	/* Past its deadline nothing is freed: a drain never loses data. */
	now += 120000;
	ms_elastic_tick(&ctx, now);
	CHECK(ctx.segs.nused == 1 && ctx.el.forced == 0);
	CHECK(ms_segtab_free(&ctx.segs, 3, id) == 0);
	now += 10000;
	ms_elastic_tick(&ctx, now);
	CHECK(got.calls == 3);   /* one more before the free; none after: nothing held */
	ms_devtab_fini(&ctx.devs);
	ms_segtab_fini(&ctx.segs);
	return 0;
}

static const struct tap_case cases[] = {
	{ "MemAvailable from /proc/meminfo text", t_meminfo },
	{ "cgroup v2 path and memory.max headroom texts", t_cgroup_texts },
	{ "pressure read under a fake root; the tighter of host and cgroup", t_read_fake_root },
	{ "target: shrink by what is missing, floor min-size, grow beyond the band", t_target },
	{ "a host with fixed other load: the pool settles, no flapping", t_no_flapping },
	{ "slots retire, refuse ALLOC, force-free and restore", t_retire_restore },
	{ "shrink: free slots first, then ask, then free what missed the deadline; grow back", t_shrink_asks_then_frees },
	{ "shrink cancelled by room again: nothing freed", t_shrink_cancelled },
	{ "a notice that reached no one frees nothing; asked again on reconnect", t_unreached_owner_loses_nothing },
	{ "drain: notices all, refuses ALLOC, never frees", t_drain },
};

int main(void)
{
	int rc;

	log_set_level(LOG_LVL_ERR);
	rc = tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
	drop_root();
	return rc;
}
