/* offload_cgroup.c — one cgroup v2 directory: check it has what offload
 * needs, read its counters, write its memory.reclaim.  memory.reclaim is
 * the only file written anywhere by offload. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "offload.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

#define STAT_TEXT_MAX 16384

static int cg_file(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Why a directory lacks memory.current: not cgroup v2 at all (v1 or
 * hybrid hierarchy), or v2 without the memory controller enabled. */
static void explain_no_memory(const char *path, char *err, size_t errlen)
{
	struct statfs fs;

	if (statfs(path, &fs) == 0 && fs.f_type != CGROUP2_SUPER_MAGIC)
		snprintf(err, errlen, "--cgroup %s: not a cgroup v2 directory (no "
			 "memory.current; this needs the unified hierarchy, "
			 "cgroup v2, with the memory controller)", path);
	else
		snprintf(err, errlen, "--cgroup %s: no memory.current: the memory "
			 "controller is not enabled for it (add +memory to its "
			 "parent's cgroup.subtree_control)", path);
}

int offload_cg_check(const char *path, char *err, size_t errlen)
{
	char f[PATH_MAX + 32];
	struct stat st;

	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		int e = errno ? errno : ENOTDIR;

		snprintf(err, errlen, "--cgroup %s: %s", path, strerror(e));
		return -e;
	}
	if (cg_file(f, sizeof(f), path, "memory.current") < 0 || access(f, R_OK) < 0) {
		explain_no_memory(path, err, errlen);
		return -ENOENT;
	}
	if (cg_file(f, sizeof(f), path, "memory.reclaim") < 0 || access(f, F_OK) < 0) {
		snprintf(err, errlen, "--cgroup %s: no memory.reclaim: the kernel "
			 "needs cgroup v2 proactive reclaim (Linux 5.19 or later)", path);
		return -ENOENT;
	}
	if (access(f, W_OK) < 0) {
		int e = errno;

		snprintf(err, errlen, "--cgroup %s: memory.reclaim: %s (offload "
			 "runs as root)", path, strerror(e));
		return -e;
	}
	if (cg_file(f, sizeof(f), path, "memory.pressure") < 0 || access(f, R_OK) < 0) {
		snprintf(err, errlen, "--cgroup %s: no memory.pressure: the kernel "
			 "has pressure stall information off (boot with psi=1)", path);
		return -ENOENT;
	}
	return 0;
}

int offload_cg_sample(struct offload_cg *cg, uint64_t now_us, uint64_t min_bytes)
{
	char f[PATH_MAX + 32], text[STAT_TEXT_MAX];
	uint64_t psi, refault = 0, swap = 0;
	int ret, first = cg->sampled_us == 0;

	if ((ret = cg_file(f, sizeof(f), cg->path, "memory.current")) < 0 ||
	    (ret = offload_read_u64(f, &cg->current)) < 0)
		return ret;
	/* memory.swap.current is missing when swap accounting is off. */
	if (cg_file(f, sizeof(f), cg->path, "memory.swap.current") == 0 &&
	    offload_read_u64(f, &swap) == 0)
		cg->swap_current = swap;
	if ((ret = cg_file(f, sizeof(f), cg->path, "memory.pressure")) < 0 ||
	    (ret = fm_read_small_file(f, text, sizeof(text))) < 0)
		return ret;
	if ((ret = offload_psi_some_total(text, &psi)) < 0)
		return ret;
	if ((ret = cg_file(f, sizeof(f), cg->path, "memory.stat")) < 0 ||
	    (ret = fm_read_small_file(f, text, sizeof(text))) < 0)
		return ret;
	offload_stat_get(text, "workingset_refault_anon", &refault);
	cg->floor = min_bytes ? min_bytes
			      : offload_stat_unreclaimable(text) + OFFLOAD_FLOOR_MARGIN;
	if (!first) {
		uint64_t dt = now_us - cg->sampled_us;

		cg->pressure = offload_pressure_share(cg->psi_total_us, psi, dt);
		cg->refaults_per_s = dt && refault >= cg->refault_anon ?
			(double)(refault - cg->refault_anon) * 1e6 / (double)dt : 0.0;
	}
	cg->psi_total_us = psi;
	cg->refault_anon = refault;
	cg->sampled_us = now_us;
	return first ? 1 : 0;
}

int offload_cg_reclaim(struct offload_cg *cg, uint64_t bytes)
{
	char f[PATH_MAX + 32], num[32];
	uint64_t after;
	ssize_t w;
	int fd, n, e = 0;

	if (cg_file(f, sizeof(f), cg->path, "memory.reclaim") < 0)
		return -ENAMETOOLONG;
	fd = open(f, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = snprintf(num, sizeof(num), "%" PRIu64, bytes);
	/* The kernel reclaims synchronously in this write; a step is a
	 * bounded share of the cgroup, so the write is too. */
	w = write(fd, num, (size_t)n);
	if (w < 0)
		e = errno;
	close(fd);
	cg->steps++;
	if (w == n) {
		cg->reclaimed_bytes += bytes;
		return 0;
	}
	/* EAGAIN: fewer bytes than asked came free; count what did. */
	if (e == EAGAIN && cg_file(f, sizeof(f), cg->path, "memory.current") == 0 &&
	    offload_read_u64(f, &after) == 0 && after < cg->current)
		cg->reclaimed_bytes += cg->current - after;
	if (e != EAGAIN)
		cg->reclaim_errors++;
	return e ? -e : -EIO;
}
