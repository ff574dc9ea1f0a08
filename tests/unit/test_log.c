/* test_log.c — the log rate limiter: bursts, windows, the suppressed
 * count, and the per-thread scope that bounds lines from shared code;
 * asynchronous lines that never wait on a stalled stderr. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "tap.h"

/* Runs fn with stderr sent to a temporary file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void))
{
	static char text[64 * 1024];
	FILE *tmp = tmpfile();
	int saved = dup(2);
	size_t n;

	if (!tmp || saved < 0)
		return NULL;
	fflush(stderr);
	dup2(fileno(tmp), 2);
	fn();
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(tmp);
	n = fread(text, 1, sizeof(text) - 1, tmp);
	text[n] = '\0';
	fclose(tmp);
	return text;
}

static unsigned count(const char *text, const char *needle)
{
	unsigned n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static int t_burst_then_suppress(void)
{
	struct log_limit l = LOG_LIMIT_INIT(3, 1000);
	uint64_t rep = 99;
	unsigned ok = 0;

	for (int i = 0; i < 10; i++)
		ok += (unsigned)log_limit_allow(&l, 5000, &rep);
	CHECK(ok == 3);
	CHECK(rep == 0);
	CHECK(l.suppressed == 7 && l.suppressed_total == 7);
	/* Still inside the window: refused. */
	CHECK(!log_limit_allow(&l, 5999, &rep));
	/* The next window: allowed, and told how many were dropped. */
	CHECK(log_limit_allow(&l, 6000, &rep));
	CHECK(rep == 8);
	CHECK(l.suppressed == 0 && l.suppressed_total == 8);
	CHECK(log_limit_allow(&l, 6001, &rep) && rep == 0);
	return 0;
}

static struct log_limit flood_limit = LOG_LIMIT_INIT(5, 60000);

static void flood(void)
{
	for (int i = 0; i < 1000; i++)
		log_limited(&flood_limit, LOG_LVL_WARN, "flood line %d", i);
}

/* 1000 lines through a limit of 5 per minute: 5 reach the log. */
static int t_lines_bounded(void)
{
	char *out = capture_stderr(flood);

	CHECK(out);
	CHECK(count(out, "flood line") == 5);
	CHECK(strstr(out, "flood line 4\n"));
	CHECK(!strstr(out, "flood line 5\n"));
	CHECK(flood_limit.suppressed == 995);
	return 0;
}

/* A window long enough that the first three calls fall in it even under
 * valgrind on a loaded machine (a 1 ms one did not), short enough to wait
 * out. */
static struct log_limit report_limit = LOG_LIMIT_INIT(1, 500);

static void report_after_window(void)
{
	log_limited(&report_limit, LOG_LVL_WARN, "first");
	log_limited(&report_limit, LOG_LVL_WARN, "dropped");
	log_limited(&report_limit, LOG_LVL_WARN, "dropped");
	usleep(600 * 1000);   /* the 500 ms window has passed */
	log_limited(&report_limit, LOG_LVL_WARN, "second");
}

/* The line after a window with drops says how many went. */
static int t_suppressed_reported(void)
{
	char *out = capture_stderr(report_after_window);

	CHECK(out);
	CHECK(count(out, "dropped") == 0);
	CHECK(strstr(out, "2 similar messages suppressed"));
	CHECK(strstr(out, "2 similar messages suppressed") < strstr(out, "second"));
	return 0;
}

static struct log_limit scope_limit = LOG_LIMIT_INIT(2, 60000);

static void scoped(void)
{
	struct log_limit *old = log_limit_scope(&scope_limit);

	for (int i = 0; i < 50; i++)
		log_warn("scoped %d", i);
	log_limit_scope(old);
	for (int i = 0; i < 3; i++)
		log_warn("unscoped %d", i);
}

/* Plain log_warn() calls are bounded inside a scope, free outside it. */
static int t_scope(void)
{
	char *out = capture_stderr(scoped);

	CHECK(out);
	CHECK(count(out, "scoped ") - count(out, "unscoped ") == 2);
	CHECK(count(out, "unscoped ") == 3);
	CHECK(scope_limit.suppressed == 48);
	return 0;
}

/* A line below the level is neither printed nor counted. */
static int t_level_filtered(void)
{
	struct log_limit l = LOG_LIMIT_INIT(1, 60000);

	log_limited(&l, LOG_LVL_DEBUG, "not at this level");
	CHECK(l.used == 0 && l.suppressed == 0);
	return 0;
}

static void log_one_line(void)
{
	log_warn("straight again");
}

/* Reads the pipe's read end until EOF into a buffer. */
struct drain {
	int fd;
	char text[256 * 1024];
	size_t len;
};

static void *drain_main(void *arg)
{
	struct drain *d = arg;

	for (;;) {
		ssize_t n = read(d->fd, d->text + d->len, sizeof(d->text) - 1 - d->len);

		if (n <= 0 || d->len + (size_t)n >= sizeof(d->text) - 1)
			break;
		d->len += (size_t)n;
	}
	d->text[d->len] = '\0';
	return NULL;
}

/* stderr is a pipe nobody reads (as a swapped-out log file blocks a
 * write): 20000 lines must still return at once, the excess dropped and
 * counted, and once the pipe is read the writer says how many. */
static int t_async_never_blocks(void)
{
	static struct drain d;
	int p[2], saved = dup(2);
	pthread_t reader;

	CHECK(saved >= 0 && pipe(p) == 0);
	fflush(stderr);
	dup2(p[1], 2);
	close(p[1]);
	CHECK(log_async_start(16 * 1024) == 0);
	alarm(30);   /* a blocking log call would hang here: fail instead */
	for (int i = 0; i < 20000; i++)
		log_warn("line %d of a flood that cannot all fit", i);
	alarm(0);
	CHECK(log_async_dropped() > 0);
	d.fd = p[0];
	CHECK(pthread_create(&reader, NULL, drain_main, &d) == 0);
	log_async_stop(5000);
	dup2(saved, 2);    /* the last write end closes: the reader sees EOF */
	close(saved);
	CHECK(pthread_join(reader, NULL) == 0);
	close(p[0]);
	CHECK(strstr(d.text, "line 0 of a flood") != NULL);
	CHECK(strstr(d.text, "lines dropped (log writer behind)") != NULL);
	CHECK(count(d.text, "of a flood") < 20000);
	/* Stopped: lines go straight to stderr again. */
	CHECK(strstr(capture_stderr(log_one_line), "straight again") != NULL);
	return 0;
}

static const struct tap_case cases[] = {
	{ "burst, then suppressed until the next window", t_burst_then_suppress },
	{ "1000 lines through a limit of 5: 5 logged", t_lines_bounded },
	{ "the next line reports the suppressed count", t_suppressed_reported },
	{ "a scope bounds plain log calls on its thread", t_scope },
	{ "lines below the log level are not counted", t_level_filtered },
	{ "async: a stalled stderr never blocks a log call", t_async_never_blocks },
};

TAP_MAIN(cases)
