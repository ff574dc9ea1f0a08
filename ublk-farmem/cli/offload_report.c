/* offload_report.c — what offload did, per cgroup: as `status`-style
 * text (SIGUSR1), one JSON object (--json) and Prometheus text
 * (--metrics).  Every form carries the same fields. */
#include <inttypes.h>
#include <stdio.h>

#include "cli_text.h"
#include "offload.h"

const char *offload_state_name(enum offload_state s)
{
	switch (s) {
	case OFFLOAD_STARTING: return "starting";
	case OFFLOAD_RECLAIMING: return "reclaiming";
	case OFFLOAD_BACKOFF: return "backoff";
	case OFFLOAD_AT_FLOOR: return "at-floor";
	case OFFLOAD_PAUSED: return "paused";
	case OFFLOAD_ERROR: return "error";
	}
	return "?";
}

static void mib(char *buf, size_t len, uint64_t b)
{
	snprintf(buf, len, "%.1fMiB", (double)b / (1024.0 * 1024.0));
}

static const char *swap_text(const struct offload_swap_health *h)
{
	if (!h->nswaps)
		return "none";
	return offload_swap_ok(h) ? "ok" : "paused";
}

void offload_report_text(FILE *f, const struct offload_cg *cgs, int n,
			 const struct offload_swap_health *h)
{
	fprintf(f, "swap         %s (%d devices, %d farmem)%s%s\n", swap_text(h),
		h->nswaps, h->nfarmem, h->why[0] ? ": " : "", h->why);
	for (int i = 0; i < n; i++) {
		const struct offload_cg *c = &cgs[i];
		char a[32], b[32], d[32], e[32];

		mib(a, sizeof(a), c->reclaimed_bytes);
		mib(b, sizeof(b), c->current);
		mib(d, sizeof(d), c->swap_current);
		mib(e, sizeof(e), c->floor);
		fprintf(f, "\ncgroup       %s\n", c->path);
		fprintf(f, "state        %s\n", offload_state_name(c->state));
		fprintf(f, "reclaimed    %s in %" PRIu64 " steps (%" PRIu64 " errors)\n",
			a, c->steps, c->reclaim_errors);
		fprintf(f, "current      %s (floor %s)\n", b, e);
		fprintf(f, "swap         %s\n", d);
		fprintf(f, "pressure     %.3f%%\n", c->pressure * 100.0);
		fprintf(f, "refaults     %.1f anon/s\n", c->refaults_per_s);
	}
	fflush(f);
}

void offload_report_json(FILE *f, const struct offload_cg *cgs, int n,
			 const struct offload_swap_health *h)
{
	fprintf(f, "{\"swap\": \"%s\", \"swap_devices\": %d, \"farmem_devices\": %d, "
		"\"paused_because\": ", swap_text(h), h->nswaps, h->nfarmem);
	cli_json_str(f, h->why);
	fprintf(f, ", \"cgroups\": [");
	for (int i = 0; i < n; i++) {
		const struct offload_cg *c = &cgs[i];

		fprintf(f, "%s{\"path\": ", i ? ", " : "");
		cli_json_str(f, c->path);
		fprintf(f, ", \"state\": \"%s\", \"reclaimed_bytes\": %" PRIu64
			", \"steps\": %" PRIu64 ", \"reclaim_errors\": %" PRIu64
			", \"last_step\": %" PRIu64 ", \"memory_current\": %" PRIu64
			", \"memory_swap_current\": %" PRIu64 ", \"floor\": %" PRIu64
			", \"pressure\": %.6f, \"refaults_anon_per_second\": %.2f}",
			offload_state_name(c->state), c->reclaimed_bytes, c->steps,
			c->reclaim_errors, c->last_step, c->current, c->swap_current,
			c->floor, c->pressure, c->refaults_per_s);
	}
	fprintf(f, "]}\n");
	fflush(f);
}

void offload_report_metrics(struct metrics_buf *b, const struct offload_cg *cgs,
			    int n, const struct offload_swap_health *h)
{
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "farmem_offload_reclaimed_bytes_total", "counter",
		  "Bytes memory.reclaim took from the cgroup" },
		{ "farmem_offload_steps_total", "counter",
		  "Writes to the cgroup's memory.reclaim" },
		{ "farmem_offload_memory_current_bytes", "gauge",
		  "The cgroup's memory.current at the last interval" },
		{ "farmem_offload_memory_swap_current_bytes", "gauge",
		  "The cgroup's memory.swap.current at the last interval" },
		{ "farmem_offload_pressure_ratio", "gauge",
		  "Share of the last interval the cgroup stalled on memory (PSI some)" },
		{ "farmem_offload_refaults_anon_per_second", "gauge",
		  "Anonymous pages faulted back in per second (workingset_refault_anon)" },
	};
	char esc[PATH_MAX * 2], labels[PATH_MAX * 2 + 16];

	metrics_gauge(b, "farmem_offload_swap_ok",
		      "1 while the swap devices let offload reclaim", offload_swap_ok(h));
	for (size_t k = 0; k < sizeof(fam) / sizeof(fam[0]); k++) {
		metrics_family(b, fam[k].name, fam[k].type, fam[k].help);
		for (int i = 0; i < n; i++) {
			const struct offload_cg *c = &cgs[i];

			metrics_label_escape(c->path, esc, sizeof(esc));
			snprintf(labels, sizeof(labels), "cgroup=\"%s\"", esc);
			switch (k) {
			case 0: metrics_sample_u64(b, fam[k].name, labels, c->reclaimed_bytes); break;
			case 1: metrics_sample_u64(b, fam[k].name, labels, c->steps); break;
			case 2: metrics_sample_u64(b, fam[k].name, labels, c->current); break;
			case 3: metrics_sample_u64(b, fam[k].name, labels, c->swap_current); break;
			case 4: metrics_sample_double(b, fam[k].name, labels, c->pressure); break;
			default: metrics_sample_double(b, fam[k].name, labels, c->refaults_per_s);
			}
		}
	}
}
