/* log.h — one logging entry point for both programs.
 *
 * Foreground programs log to stderr; daemons switch to syslog with
 * log_use_syslog().  Messages carry context at the call site
 * ("server 1 seg 7: ..."), so this file adds only level and program name.
 */
#ifndef FARMEM_LOG_H
#define FARMEM_LOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_init(const char *progname, enum log_level level);
void log_use_syslog(void);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Where stderr lines go instead (log_async.c); NULL: stderr again. */
void log_set_sink(void (*sink)(const char *line, size_t len));

/* ---- log_async.c: lines that never wait on where they are stored ----
 *
 * A swap device's daemon must not block on its own log: its stderr is a
 * file in tmpfs, whose last page may have been swapped out to the very
 * device the daemon serves, and a write then waits on a swap-in only the
 * writer could complete (seen: a queue thread in shmem_swapin_folio
 * under write(2), every swap I/O waiting on it).  Once started, lines
 * are copied into a ring allocated up front; one thread writes them to
 * stderr.  A full ring drops lines and counts them, never blocks.
 * Call after the last fork() whose child logs on its own. */
int log_async_start(size_t ring_bytes);     /* 0 or -errno */
/* Write what the ring holds (waits at most wait_ms), stop the thread. */
void log_async_stop(unsigned wait_ms);
uint64_t log_async_dropped(void);

#define log_err(...)   log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_get_level() >= LOG_LVL_DEBUG) \
		log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

/* ---- rate-limited lines ----
 *
 * A peer that can make us log (a flood of bad handshakes) must not be
 * able to fill the disk or drown the lines that matter.  A log_limit
 * lets `burst` lines through per `period_ms`; the rest are counted, and
 * the next line that passes (or log_limit_flush()) first says
 * "N similar messages suppressed".  One limiter per kind of message:
 * declare it static at the call site (log_warn_rl) or share one for a
 * whole class of peers (log_limit_scope).  Thread-safe.
 */
struct log_limit {
	unsigned burst;
	unsigned period_ms;
	pthread_mutex_t lock;
	uint64_t window_start;   /* ms; 0: no window yet */
	unsigned used;           /* lines let through in this window */
	uint64_t suppressed;     /* not yet reported */
	uint64_t suppressed_total;
};

#define LOG_LIMIT_INIT(b, ms) { .burst = (b), .period_ms = (ms), \
		.lock = PTHREAD_MUTEX_INITIALIZER }
/* What a call-site limiter allows: 10 lines per 10 s. */
#define LOG_LIMIT_DEFAULT LOG_LIMIT_INIT(10, 10000)

/* May a line go out at now_ms?  1 yes, 0 suppressed (counted).  On yes,
 * *report is set to the count suppressed since the last report (the
 * caller says so first) and reset.  Exposed for unit tests. */
int log_limit_allow(struct log_limit *l, uint64_t now_ms, uint64_t *report);
/* A line through l at `level`, preceded by any suppressed count. */
void log_limited(struct log_limit *l, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Report suppressed lines of a window that has ended, without waiting
 * for another line (a periodic sweep calls it). */
void log_limit_flush(struct log_limit *l, enum log_level level);

/* While a scope is set (per thread), every log line of this thread goes
 * through its limiter: a server sets it around the work it does for an
 * unauthenticated peer, so lines logged deep in shared code are bounded
 * too.  Returns the previous scope, to restore; NULL clears. */
struct log_limit *log_limit_scope(struct log_limit *l);

#define log_warn_rl(...) do { static struct log_limit l_rl_ = LOG_LIMIT_DEFAULT; \
		log_limited(&l_rl_, LOG_LVL_WARN, __VA_ARGS__); } while (0)
#define log_err_rl(...) do { static struct log_limit l_rl_ = LOG_LIMIT_DEFAULT; \
		log_limited(&l_rl_, LOG_LVL_ERR, __VA_ARGS__); } while (0)

#endif
