/* offload.h — `farmem-blk offload`: proactive reclaim of cold memory.
 *
 * Every interval, for each cgroup given, the pressure the cgroup felt
 * (growth of memory.pressure's "some" total over the wall time) decides a
 * step written to its memory.reclaim: up to max-step of memory.current
 * while pressure is well under the target, smaller as it approaches it,
 * nothing once it passes it, and never below a floor.  The kernel's own
 * LRU picks the pages; the swap device (a farmem device) takes them.
 *
 * Safe by construction: the only file ever written is memory.reclaim, so
 * no setting here can make the kernel kill anything (memory.max and
 * memory.high are never touched); reclaim pauses while the farmem swap
 * device is degraded or nearly full.
 *
 * The pieces, one concern per file:
 *   offload_parse.c   percentages, PSI, memory.stat, /proc/swaps (pure)
 *   offload_step.c    the step controller (pure arithmetic)
 *   offload_cgroup.c  one cgroup's files: check, sample, reclaim
 *   offload_safety.c  is the swap there, healthy and not full
 *   offload_report.c  text (SIGUSR1), JSON and Prometheus output
 *   cli_offload.c     flags, [offload] config, the loop, signals
 */
#ifndef FARMEM_OFFLOAD_H
#define FARMEM_OFFLOAD_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "metrics_text.h"
#include "proc_text.h"

#define OFFLOAD_MAX_CGROUPS 64
#define OFFLOAD_PAGE 4096u
#define OFFLOAD_DEFAULT_INTERVAL_MS 6000u
#define OFFLOAD_DEFAULT_PRESSURE 0.001      /* 0.1 % of wall time */
#define OFFLOAD_DEFAULT_MAX_STEP 0.01       /* 1 % of memory.current */
/* Default floor: the cgroup's unreclaimable memory plus this margin, so
 * a cgroup with nothing cold left is not squeezed against its kernel
 * memory. */
#define OFFLOAD_FLOOR_MARGIN (16ull << 20)
/* A swap device this full (used / size) pauses reclaim: the rest is the
 * kernel's room for the pressure it cannot avoid. */
#define OFFLOAD_SWAP_FULL 0.90
#define OFFLOAD_ERR_LEN 512

/* The checked options (flags over [offload] over defaults). */
struct offload_opts {
	char cgroup[OFFLOAD_MAX_CGROUPS][PATH_MAX];
	int ncgroups;
	char cgroup_root[PATH_MAX];       /* relative --cgroup paths start here */
	uint64_t interval_ms;
	double pressure;                  /* target: share of wall time, 0..1 */
	double max_step;                  /* share of memory.current, 0..1 */
	uint64_t min_bytes;               /* 0: the default floor */
	int dry_run;
	int json;
	char metrics[300];                /* HOST:PORT, "" = off */
};

/* --- offload_parse.c ---------------------------------------------- */

/* "0.1%", "5%": a percentage (the '%' is required) in (0, 100] as a
 * share of 1.  0 or -EINVAL. */
int offload_parse_pct(const char *s, double *share);
/* The "some" line's total= (microseconds) of a memory.pressure text.
 * 0, or -EINVAL when the line or the field is missing or malformed. */
int offload_psi_some_total(const char *text, uint64_t *total_us);
/* The value of KEY in a memory.stat text ("key value" lines).  0, or
 * -ENOENT when the key is absent, -EINVAL when its value is malformed. */
int offload_stat_get(const char *text, const char *key, uint64_t *v);
/* Unreclaimable bytes of a memory.stat text: unevictable plus kernel
 * memory (the "kernel" key where the kernel has it, else its parts). */
uint64_t offload_stat_unreclaimable(const char *text);

/* One line of /proc/swaps. */
struct offload_swap {
	char dev[256];
	uint64_t size_kb, used_kb;
};
/* Parses /proc/swaps text into at most max entries; returns the count. */
int offload_swaps_parse(const char *text, struct offload_swap *out, int max);

/* A file holding one number, or "max" (UINT64_MAX).  0 or -errno. */
int offload_read_u64(const char *path, uint64_t *v);

/* --- offload_step.c ----------------------------------------------- */

/* What the controller sees of one cgroup in one interval. */
struct offload_sample {
	uint64_t current;                 /* memory.current */
	uint64_t floor;                   /* bytes it must not go below */
	double pressure;                  /* share of the interval stalled */
};

/* Bytes to ask memory.reclaim for: current * max_step, scaled down
 * linearly as pressure approaches the target, 0 at or past it, never
 * taking current below floor, whole pages, 0 when less than a page. */
uint64_t offload_step_bytes(const struct offload_sample *s, double target,
			    double max_step);
/* Pressure as a share of wall time from two PSI totals (us) over
 * elapsed_us; 0 when the total went backwards or no time passed. */
double offload_pressure_share(uint64_t prev_total_us, uint64_t total_us,
			      uint64_t elapsed_us);

/* --- offload_cgroup.c --------------------------------------------- */

enum offload_state {
	OFFLOAD_STARTING,                 /* first interval: taking baselines */
	OFFLOAD_RECLAIMING,
	OFFLOAD_BACKOFF,                  /* pressure at or past the target */
	OFFLOAD_AT_FLOOR,
	OFFLOAD_PAUSED,                   /* swap degraded, full or missing */
	OFFLOAD_ERROR,                    /* the cgroup's files failed */
};

struct offload_cg {
	char path[PATH_MAX];
	enum offload_state state;
	/* baselines */
	uint64_t psi_total_us;
	uint64_t refault_anon;
	uint64_t sampled_us;              /* monotonic time of the last sample */
	/* last interval */
	uint64_t current, swap_current, floor, last_step;
	double pressure;                  /* share of wall time */
	double refaults_per_s;            /* workingset_refault_anon */
	/* totals */
	uint64_t reclaimed_bytes;         /* what memory.reclaim took */
	uint64_t steps, reclaim_errors;
};

/* Checks that path is a cgroup v2 directory with memory.current,
 * memory.pressure and a writable memory.reclaim.  0, or -errno with err
 * saying what is missing and why. */
int offload_cg_check(const char *path, char *err, size_t errlen);
/* Reads the cgroup's files into cg (pressure and refault rate against
 * the previous sample).  min_bytes 0 picks the default floor.  0 or
 * -errno. */
int offload_cg_sample(struct offload_cg *cg, uint64_t now_us, uint64_t min_bytes);
/* Writes bytes to memory.reclaim and counts what it took.  0, or -errno
 * (-EAGAIN: the kernel reclaimed less than asked, counted anyway). */
int offload_cg_reclaim(struct offload_cg *cg, uint64_t bytes);

/* --- offload_safety.c --------------------------------------------- */

struct offload_swap_health {
	int nswaps;                       /* active swap devices */
	int nfarmem;                      /* of which farmem devices */
	int degraded;                     /* a farmem device degraded or silent */
	int full;                         /* every swap device past OFFLOAD_SWAP_FULL */
	char why[256];                    /* when paused: which device, why */
};

/* /proc/swaps (FARMEM_PROC_SWAPS overrides the path for tests) and each
 * farmem device's daemon (its control socket's stats).  0 or -errno. */
int offload_swap_check(struct offload_swap_health *h);
/* Whether reclaim may run now (writes the reason to h->why if not). */
int offload_swap_ok(const struct offload_swap_health *h);

/* --- offload_report.c --------------------------------------------- */

const char *offload_state_name(enum offload_state s);
void offload_report_text(FILE *f, const struct offload_cg *cgs, int n,
			 const struct offload_swap_health *h);
void offload_report_json(FILE *f, const struct offload_cg *cgs, int n,
			 const struct offload_swap_health *h);
void offload_report_metrics(struct metrics_buf *b, const struct offload_cg *cgs,
			    int n, const struct offload_swap_health *h);

#endif
