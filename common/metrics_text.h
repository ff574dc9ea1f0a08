/* metrics_text.h — Prometheus text exposition format (0.0.4) helpers and a
 * lock-free latency histogram.
 *
 * Kept apart from the HTTP server (metrics_http.h) so unit tests and the
 * programs' own `status` output can use them without a socket.  Every
 * append goes into a caller-provided buffer: no allocation here.
 */
#ifndef FARMEM_METRICS_TEXT_H
#define FARMEM_METRICS_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* ---- text buffer ------------------------------------------------------ */

/* Append-only text buffer.  On overflow, `overflow` is set and further
 * appends are dropped; the server then grows the buffer and asks again. */
struct metrics_buf {
	char *p;
	size_t len;
	size_t cap;
	int overflow;
};

void metrics_buf_init(struct metrics_buf *b, char *mem, size_t cap);
void metrics_buf_reset(struct metrics_buf *b);
void metrics_buf_printf(struct metrics_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* ---- Prometheus text helpers ------------------------------------------ */

/* "# HELP name help\n# TYPE name type\n" — once per metric family, before
 * its samples.  type is "counter", "gauge" or "histogram". */
void metrics_family(struct metrics_buf *b, const char *name,
		    const char *type, const char *help);
/* One sample line.  labels is NULL or already-formatted label pairs without
 * braces, e.g. `server="tcp://10.0.0.1:7000"` (build them with
 * metrics_label_escape). */
void metrics_sample_u64(struct metrics_buf *b, const char *name,
			const char *labels, uint64_t v);
void metrics_sample_double(struct metrics_buf *b, const char *name,
			   const char *labels, double v);
/* Shorthands: family header plus one unlabelled sample. */
void metrics_counter(struct metrics_buf *b, const char *name,
		     const char *help, uint64_t v);
void metrics_gauge(struct metrics_buf *b, const char *name,
		   const char *help, double v);

/* Escape a label value (\\, \", \n) into out; returns out.  Truncates
 * (never mid-escape) if out is too small. */
const char *metrics_label_escape(const char *value, char *out, size_t len);

/* ---- latency histogram ------------------------------------------------ */

/* Fixed buckets (upper bounds in microseconds), shared by every histogram
 * so dashboards can compare them; +Inf is implicit. */
#define METRICS_HIST_BUCKETS 16
extern const uint64_t metrics_hist_bounds_us[METRICS_HIST_BUCKETS];

/* Lock-free: observe() is a few relaxed atomic adds, safe from any thread
 * including the I/O path; zero-initialise (static or memset) to use. */
struct metrics_hist {
	uint64_t bucket[METRICS_HIST_BUCKETS + 1]; /* last one is +Inf */
	uint64_t sum_ns;
};

void metrics_hist_observe_ns(struct metrics_hist *h, uint64_t ns);
/* Copies h with atomic loads (for a stats struct another thread reads). */
void metrics_hist_snapshot(const struct metrics_hist *h, struct metrics_hist *out);
/* CLOCK_MONOTONIC in nanoseconds, for timing what is observed (fm_mono_ns). */
uint64_t metrics_now_ns(void);
/* Writes name_bucket{...,le="..."}, name_sum (seconds) and name_count.
 * The caller writes the family header (type "histogram") once. */
void metrics_hist_write(struct metrics_buf *b, const char *name,
			const char *labels, const struct metrics_hist *h);

#endif
