/* pressure.c — how much memory the donor host has left, and what size
 * the pool should be for it to keep `reserve` of it.
 *
 * Two limits count the same way: the host's MemAvailable, and, when the
 * memserver runs in a cgroup (v2) with a memory limit, the headroom to
 * that limit (memory.max - memory.current).  The smaller one is what
 * the host has left.  Everything is read under a root directory so tests
 * can point it at fake files; the parsers take text, not paths, so unit
 * tests need no files at all.
 */
#include "memserver.h"
#include "proc_text.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXT_MAX 8192

int ms_meminfo_parse(const char *text, uint64_t *bytes)
{
	return fm_meminfo_field(text, "MemAvailable", bytes);
}

int ms_cgroup_path_parse(const char *text, char *path, size_t len)
{
	/* cgroup v2 has one line, "0::/path"; v1 lines name controllers. */
	const char *start = fm_line_after(text, "0::"), *end;
	size_t n;

	if (!start)
		return -ENOENT;
	end = strchr(start, '\n');
	n = end ? (size_t)(end - start) : strlen(start);
	if (n == 0 || start[0] != '/' || n >= len)
		return -EINVAL;
	memcpy(path, start, n);
	path[n] = '\0';
	/* Never let a path climb out of the cgroup tree. */
	if (strstr(path, "/../") || (n >= 3 && strcmp(path + n - 3, "/..") == 0))
		return -EINVAL;
	return 0;
}

static int read_u64(const char *text, uint64_t *v)
{
	char *end;
	unsigned long long x;

	errno = 0;
	x = strtoull(text, &end, 10);
	if (errno || end == text || (*end && *end != '\n') || text[0] == '-')
		return -EINVAL;
	*v = x;
	return 0;
}

int ms_cgroup_headroom(const char *max, const char *cur, uint64_t *headroom)
{
	uint64_t m, c;

	if (strncmp(max, "max", 3) == 0 && (max[3] == '\0' || max[3] == '\n')) {
		*headroom = UINT64_MAX;
		return 0;
	}
	if (read_u64(max, &m) < 0 || read_u64(cur, &c) < 0)
		return -EINVAL;
	*headroom = c >= m ? 0 : m - c;
	return 0;
}

/* The whole (small) file at root/rel into buf; 0 or -errno. */
static int read_text(const char *root, const char *rel, char *buf, size_t len)
{
	char path[4096 + 256];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s%s", root, rel);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

/* Headroom of our own cgroup; UINT64_MAX when there is no limit (or no
 * cgroup v2 to ask). */
static uint64_t cgroup_headroom(const char *root)
{
	char text[TEXT_MAX], cg[1024], rel[1200], max[64], cur[64];
	uint64_t h;

	if (read_text(root, "/proc/self/cgroup", text, sizeof(text)) < 0 ||
	    ms_cgroup_path_parse(text, cg, sizeof(cg)) < 0)
		return UINT64_MAX;
	if (strcmp(cg, "/") == 0)
		cg[0] = '\0';
	snprintf(rel, sizeof(rel), "/sys/fs/cgroup%s/memory.max", cg);
	if (read_text(root, rel, max, sizeof(max)) < 0)
		return UINT64_MAX;
	snprintf(rel, sizeof(rel), "/sys/fs/cgroup%s/memory.current", cg);
	if (read_text(root, rel, cur, sizeof(cur)) < 0)
		snprintf(cur, sizeof(cur), "0");
	if (ms_cgroup_headroom(max, cur, &h) < 0)
		return UINT64_MAX;
	return h;
}

int ms_pressure_read(const char *root, struct ms_pressure *p)
{
	char text[TEXT_MAX];
	int rc;

	rc = read_text(root ? root : "", "/proc/meminfo", text, sizeof(text));
	if (rc == 0)
		rc = ms_meminfo_parse(text, &p->mem_available);
	if (rc < 0)
		return rc;
	p->cg_headroom = cgroup_headroom(root ? root : "");
	p->avail = p->mem_available < p->cg_headroom ? p->mem_available : p->cg_headroom;
	return 0;
}

uint64_t ms_pressure_band(const struct ms_shrink_policy *pol)
{
	uint64_t band = pol->reserve / 4;

	return band > pol->seg_max ? band : pol->seg_max;
}

uint32_t ms_pressure_target(const struct ms_shrink_policy *pol, uint64_t avail,
			    uint32_t cur_slots)
{
	uint64_t seg = pol->seg_max, band, room;
	uint32_t min_slots = (uint32_t)((pol->min_bytes + seg - 1) / seg);
	uint32_t max_slots = (uint32_t)(pol->max_bytes / seg);

	if (pol->reserve == 0 || seg == 0)
		return cur_slots;
	if (min_slots > max_slots)
		min_slots = max_slots;
	if (avail < pol->reserve) {
		uint64_t need = (pol->reserve - avail + seg - 1) / seg;

		if (cur_slots <= min_slots)
			return cur_slots;
		return need >= cur_slots - min_slots ? min_slots : cur_slots - (uint32_t)need;
	}
	band = ms_pressure_band(pol);
	if (avail - pol->reserve < band + seg || cur_slots >= max_slots)
		return cur_slots;
	/* Grow only by what keeps avail a band above reserve afterwards. */
	room = (avail - pol->reserve - band) / seg;
	return room >= max_slots - cur_slots ? max_slots : cur_slots + (uint32_t)room;
}
