/* test_clock.c — the monotonic clock helpers every timed wait uses. */
#include <errno.h>
#include <pthread.h>

#include "clock.h"
#include "tap.h"

static int t_deadlines(void)
{
	uint64_t now = fm_mono_ns();

	CHECK(fm_mono_ns() >= now);
	CHECK(fm_mono_ms_until(now) == 0);           /* passed: 0, never negative */
	CHECK(fm_mono_ms_until(0) == 0);
	/* Rounded up: a poll() on it must not wake just before the deadline.
	 * Bounded by the rounded-up time left before and after the call. */
	uint64_t before = fm_mono_ns(), deadline = before + 1500000;
	int ms = fm_mono_ms_until(deadline);
	uint64_t after = fm_mono_ns();

	CHECK(ms <= 2);
	CHECK(after >= deadline || (uint64_t)ms >= (deadline - after + 999999) / 1000000);
	CHECK(fm_mono_ms_until(fm_mono_after_ms(1000)) <= 1000);
	CHECK(fm_mono_ms_until(fm_mono_after_ms(1000)) >= 990);
	CHECK(fm_mono_ms_until(UINT64_MAX) > 0);     /* clamped, not wrapped */
	return 0;
}

static int t_abstime(void)
{
	struct timespec ts = fm_mono_abstime(3 * 1000000000ull + 42);

	CHECK(ts.tv_sec == 3 && ts.tv_nsec == 42);
	ts = fm_mono_abstime_in_ms(0);
	CHECK(ts.tv_nsec >= 0 && ts.tv_nsec < 1000000000L);
	return 0;
}

/* A timed wait on a monotonic condition variable with a relative
 * timeout lasts that long (a realtime one would be off by the epoch). */
static int t_cond_waits_on_monotonic(void)
{
	pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv;
	uint64_t t0, ms;
	int rc;

	CHECK(fm_cond_init_mono(&cv) == 0);
	pthread_mutex_lock(&m);
	t0 = fm_mono_ns();
	struct timespec ts = fm_mono_abstime_in_ms(50);

	do
		rc = pthread_cond_timedwait(&cv, &m, &ts);
	while (rc == 0);
	pthread_mutex_unlock(&m);
	ms = (fm_mono_ns() - t0) / 1000000;
	pthread_cond_destroy(&cv);
	CHECK(rc == ETIMEDOUT);
	CHECK(ms >= 49 && ms < 10000);
	return 0;
}

static const struct tap_case cases[] = {
	{ "deadlines: ms until, rounded up, 0 once passed, clamped", t_deadlines },
	{ "abstime: ns deadline to timespec", t_abstime },
	{ "condition variable waits on CLOCK_MONOTONIC", t_cond_waits_on_monotonic },
};

TAP_MAIN(cases)
