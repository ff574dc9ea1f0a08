/* metrics_text.c — Prometheus text format helpers and latency histogram. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "metrics_text.h"

/* Swap-in latency spans ~5 us (RDMA) to ~100 us (TCP) when healthy and up
 * to a second when a replica times out; the buckets cover that range. */
const uint64_t metrics_hist_bounds_us[METRICS_HIST_BUCKETS] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000,
	50000, 100000, 250000, 1000000,
};

void metrics_buf_init(struct metrics_buf *b, char *mem, size_t cap)
{
	b->p = mem;
	b->cap = cap;
	metrics_buf_reset(b);
}

void metrics_buf_reset(struct metrics_buf *b)
{
	b->len = 0;
	b->overflow = 0;
	if (b->cap)
		b->p[0] = '\0';
}

void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
{
	va_list ap;
	size_t room;
	int n;

	if (b->overflow || b->cap == 0) {
		b->overflow = 1;
		return;
	}
	room = b->cap - b->len;
	va_start(ap, fmt);
	n = vsnprintf(b->p + b->len, room, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= room) {
		/* Drop the partial line: a half sample would not parse. */
		b->p[b->len] = '\0';
		b->overflow = 1;
		return;
	}
	b->len += (size_t)n;
}

/* HELP text escapes only backslash and newline (exposition format 0.0.4). */
static void put_help(struct metrics_buf *b, const char *help)
{
	char esc[512];
	size_t o = 0;

	for (const char *c = help; *c && o + 3 < sizeof(esc); c++) {
		if (*c == '\\' || *c == '\n') {
			esc[o++] = '\\';
			esc[o++] = *c == '\n' ? 'n' : '\\';
		} else {
			esc[o++] = *c;
		}
	}
	esc[o] = '\0';
	metrics_buf_printf(b, "%s", esc);
}

void metrics_family(struct metrics_buf *b, const char *name,
		    const char *type, const char *help)
{
	metrics_buf_printf(b, "# HELP %s ", name);
	put_help(b, help);
	metrics_buf_printf(b, "\n# TYPE %s %s\n", name, type);
}

static void put_name(struct metrics_buf *b, const char *name,
		     const char *labels)
{
	if (labels && *labels)
		metrics_buf_printf(b, "%s{%s} ", name, labels);
	else
		metrics_buf_printf(b, "%s ", name);
}

void metrics_sample_u64(struct metrics_buf *b, const char *name,
			const char *labels, uint64_t v)
{
	put_name(b, name, labels);
	metrics_buf_printf(b, "%llu\n", (unsigned long long)v);
}

void metrics_sample_double(struct metrics_buf *b, const char *name,
			   const char *labels, double v)
{
	put_name(b, name, labels);
	/* The format spells the special values this way, not as printf does. */
	if (isnan(v))
		metrics_buf_printf(b, "NaN\n");
	else if (isinf(v))
		metrics_buf_printf(b, "%sInf\n", v > 0 ? "+" : "-");
	else
		metrics_buf_printf(b, "%.17g\n", v);
}

void metrics_counter(struct metrics_buf *b, const char *name,
		     const char *help, uint64_t v)
{
	metrics_family(b, name, "counter", help);
	metrics_sample_u64(b, name, NULL, v);
}

void metrics_gauge(struct metrics_buf *b, const char *name,
		   const char *help, double v)
{
	metrics_family(b, name, "gauge", help);
	metrics_sample_double(b, name, NULL, v);
}

const char *metrics_label_escape(const char *value, char *out, size_t len)
{
	size_t o = 0;

	if (len == 0)
		return out;
	for (const char *c = value; *c; c++) {
		const char *rep = NULL;
		size_t need;

		if (*c == '\\')
			rep = "\\\\";
		else if (*c == '"')
			rep = "\\\"";
		else if (*c == '\n')
			rep = "\\n";
		need = rep ? 2 : 1;
		if (o + need >= len)
			break;
		if (rep) {
			memcpy(out + o, rep, 2);
		} else {
			out[o] = *c;
		}
		o += need;
	}
	out[o] = '\0';
	return out;
}

void metrics_hist_observe_ns(struct metrics_hist *h, uint64_t ns)
{
	uint64_t us = ns / 1000;
	int i = 0;

	while (i < METRICS_HIST_BUCKETS && us > metrics_hist_bounds_us[i])
		i++;
	__atomic_fetch_add(&h->bucket[i], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
}

void metrics_hist_snapshot(const struct metrics_hist *h, struct metrics_hist *out)
{
	for (int i = 0; i <= METRICS_HIST_BUCKETS; i++)
		out->bucket[i] = __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
	out->sum_ns = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
}

uint64_t metrics_now_ns(void)
{
	return fm_mono_ns();
}

void metrics_hist_write(struct metrics_buf *b, const char *name,
			const char *labels, const struct metrics_hist *h)
{
	const char *sep = labels && *labels ? "," : "";
	const char *lab = labels ? labels : "";
	uint64_t cum = 0;

	/* Buckets are stored per bucket and summed here, so a reader racing
	 * with observe() still prints a non-decreasing series. */
	for (int i = 0; i <= METRICS_HIST_BUCKETS; i++) {
		cum += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
		if (i < METRICS_HIST_BUCKETS)
			metrics_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n",
					   name, lab, sep,
					   (double)metrics_hist_bounds_us[i] / 1e6,
					   (unsigned long long)cum);
		else
			metrics_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n",
					   name, lab, sep,
					   (unsigned long long)cum);
	}
	metrics_buf_printf(b, "%s_sum", name);
	if (*lab)
		metrics_buf_printf(b, "{%s}", lab);
	metrics_buf_printf(b, " %.9f\n",
			   (double)__atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED) / 1e9);
	/* _count is by definition the +Inf bucket. */
	metrics_buf_printf(b, "%s_count", name);
	if (*lab)
		metrics_buf_printf(b, "{%s}", lab);
	metrics_buf_printf(b, " %llu\n", (unsigned long long)cum);
}
