/* log.c — stderr in the foreground, syslog for daemons; rate limits. */
#include "log.h"
#include "clock.h"

#include <errno.h>
#include <stdio.h>
#include <syslog.h>

static const char *log_prog = "farmem";
static enum log_level log_level = LOG_LVL_INFO;
static int log_syslog;
/* Set by log_async_start(): whole lines go there instead of stderr. */
static void (*log_sink)(const char *line, size_t len);
static __thread struct log_limit *log_scope;

void log_init(const char *progname, enum log_level level)
{
	log_prog = progname;
	log_level = level;
}

void log_use_syslog(void)
{
	openlog(log_prog, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	log_syslog = 1;
}

void log_set_level(enum log_level level) { log_level = level; }
enum log_level log_get_level(void) { return log_level; }

static void emit(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const tag[] = { "error", "warning", "info", "debug" };
	int saved = errno;

	if (level > log_level)
		return;
	if (log_syslog) {
		vsyslog(prio[level], fmt, ap);
	} else {
		/* One write per line keeps lines whole across threads. */
		char msg[1024], line[1100];
		int n;

		vsnprintf(msg, sizeof(msg), fmt, ap);
		n = snprintf(line, sizeof(line), "%s: %s: %s\n", log_prog, tag[level], msg);
		if (n < 0)
			n = 0;
		if ((size_t)n >= sizeof(line))
			n = (int)sizeof(line) - 1;
		void (*sink)(const char *, size_t) =
			__atomic_load_n(&log_sink, __ATOMIC_ACQUIRE);

		if (sink)
			sink(line, (size_t)n);
		else
			fputs(line, stderr);
	}
	errno = saved;
}

void log_set_sink(void (*sink)(const char *line, size_t len))
{
	__atomic_store_n(&log_sink, sink, __ATOMIC_RELEASE);
}

static void emit_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void emit_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(level, fmt, ap);
	va_end(ap);
}

static void emit_suppressed(enum log_level level, uint64_t n)
{
	if (n)
		emit_msg(level, "%llu similar messages suppressed",
			 (unsigned long long)n);
}

int log_limit_allow(struct log_limit *l, uint64_t now_ms, uint64_t *report)
{
	int ok;

	pthread_mutex_lock(&l->lock);
	if (l->used == 0 || now_ms - l->window_start >= l->period_ms) {
		l->window_start = now_ms;
		l->used = 0;
	}
	ok = l->used < l->burst;
	if (ok) {
		l->used++;
		*report = l->suppressed;
		l->suppressed = 0;
	} else {
		l->suppressed++;
		l->suppressed_total++;
	}
	pthread_mutex_unlock(&l->lock);
	return ok;
}

static void limited_vmsg(struct log_limit *l, enum log_level level,
			 const char *fmt, va_list ap)
{
	uint64_t report;

	if (level > log_level || !log_limit_allow(l, fm_mono_ms(), &report))
		return;
	emit_suppressed(level, report);
	emit(level, fmt, ap);
}

void log_limited(struct log_limit *l, enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	limited_vmsg(l, level, fmt, ap);
	va_end(ap);
}

void log_limit_flush(struct log_limit *l, enum log_level level)
{
	uint64_t n = 0, now = fm_mono_ms();

	pthread_mutex_lock(&l->lock);
	if (l->suppressed && now - l->window_start >= l->period_ms) {
		n = l->suppressed;
		l->suppressed = 0;
	}
	pthread_mutex_unlock(&l->lock);
	if (level <= log_level)
		emit_suppressed(level, n);
}

struct log_limit *log_limit_scope(struct log_limit *l)
{
	struct log_limit *old = log_scope;

	log_scope = l;
	return old;
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	if (log_scope)
		limited_vmsg(log_scope, level, fmt, ap);
	else if (level <= log_level)
		emit(level, fmt, ap);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}
