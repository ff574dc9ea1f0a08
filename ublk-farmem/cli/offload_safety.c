/* offload_safety.c — may offload push pages to swap right now?
 *
 * Pages pushed out go to the swap devices in /proc/swaps.  A farmem
 * device there (one with files in the run directory) is asked for its
 * stats over its control socket, the way `farmem-blk status` does: a
 * device with segments below their copies, a server down, or a daemon
 * that does not answer pauses reclaim, as does swap that is nearly full.
 * Offload only ever adds pressure the kernel did not ask for, so when in
 * doubt it stops and lets the kernel decide alone. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/ctl.h"
#include "daemon/daemon.h"
#include "offload.h"
#include "store/store.h"

#define SWAPS_MAX 64
#define SWAPS_TEXT_MAX 16384
/* A daemon's stats answer is immediate; a busy guest still answers
 * within this. */
#define SAFETY_CTL_TIMEOUT_MS 3000

/* The device's run-directory name when it is a farmem device. */
static int farmem_name(const char *dev, char *name, size_t len)
{
	char path[PATH_MAX];
	const char *base = strrchr(dev, '/');

	base = base ? base + 1 : dev;
	if (dev_name_parse(base, name, len) < 0 || strcmp(base, name))
		return -ENOENT;
	if (run_path(path, sizeof(path), name, ".conf") < 0 || access(path, F_OK) < 0)
		return -ENOENT;
	return 0;
}

/* One farmem device: 0 healthy, else -EIO with why set. */
static int farmem_healthy(const char *name, char *why, size_t len)
{
	char path[PATH_MAX];
	static char reply[16384];
	struct store_stats *st;
	int ret, down = 0;

	if (run_path(path, sizeof(path), name, ".sock") < 0 ||
	    ctl_request(path, "stats", reply, sizeof(reply), SAFETY_CTL_TIMEOUT_MS) <= 0 ||
	    strncmp(reply, "ok\n", 3)) {
		snprintf(why, len, "farmem device %s: its daemon does not answer", name);
		return -EIO;
	}
	st = malloc(sizeof(*st));
	if (!st)
		return -ENOMEM;
	ret = ctl_stats_parse(reply + 3, st);
	/* A member that left the cluster and holds nothing any more is
	 * not a missing copy. */
	for (int i = 0; ret == 0 && i < st->nservers; i++)
		down += !st->server[i].up &&
			!(st->server[i].gone && st->server[i].segments == 0);
	if (ret < 0)
		snprintf(why, len, "farmem device %s: unreadable stats", name);
	else if (st->degraded_segments || down)
		snprintf(why, len, "farmem device %s degraded: %" PRIu64 " segments "
			 "below %d copies, %d of %d servers down", name,
			 st->degraded_segments, st->replicas, down, st->nservers);
	ret = ret < 0 || st->degraded_segments || down ? -EIO : 0;
	free(st);
	return ret;
}

static const char *swaps_path(void)
{
	const char *p = getenv("FARMEM_PROC_SWAPS");

	return p && p[0] ? p : "/proc/swaps";
}

int offload_swap_check(struct offload_swap_health *h)
{
	static char text[SWAPS_TEXT_MAX];
	struct offload_swap sw[SWAPS_MAX];
	uint64_t size = 0, used = 0, fsize = 0, fused = 0;
	int n, ret;

	memset(h, 0, sizeof(*h));
	ret = fm_read_small_file(swaps_path(), text, sizeof(text));
	if (ret < 0)
		return ret;
	n = offload_swaps_parse(text, sw, SWAPS_MAX);
	h->nswaps = n;
	for (int i = 0; i < n; i++) {
		char name[32];

		size += sw[i].size_kb;
		used += sw[i].used_kb;
		if (farmem_name(sw[i].dev, name, sizeof(name)) < 0)
			continue;
		h->nfarmem++;
		fsize += sw[i].size_kb;
		fused += sw[i].used_kb;
		if (!h->degraded && farmem_healthy(name, h->why, sizeof(h->why)) < 0)
			h->degraded = 1;
	}
	/* With a farmem device, its room is what counts (the kernel fills
	 * higher-priority swap first); without one, all swap. */
	if (h->nfarmem) {
		size = fsize;
		used = fused;
	}
	if (size && (double)used >= OFFLOAD_SWAP_FULL * (double)size) {
		h->full = 1;
		if (!h->degraded)
			snprintf(h->why, sizeof(h->why), "swap nearly full: %" PRIu64
				 " of %" PRIu64 " KiB used", used, size);
	}
	return 0;
}

int offload_swap_ok(const struct offload_swap_health *h)
{
	return h->nswaps > 0 && !h->degraded && !h->full;
}
