/* clock.c — CLOCK_MONOTONIC time and timed-wait deadlines; see clock.h. */
#include "clock.h"

#include <limits.h>

#define NS_PER_S  1000000000ull
#define NS_PER_MS 1000000ull

uint64_t fm_mono_ns(void)
{
	struct timespec ts;

	/* Cannot fail for CLOCK_MONOTONIC with a valid pointer. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t fm_mono_ms(void)
{
	return fm_mono_ns() / NS_PER_MS;
}

uint64_t fm_mono_after_ms(uint64_t ms)
{
	return fm_mono_ns() + ms * NS_PER_MS;
}

int fm_mono_ms_until(uint64_t deadline_ns)
{
	uint64_t now = fm_mono_ns(), ms;

	if (deadline_ns <= now)
		return 0;
	ms = (deadline_ns - now + NS_PER_MS - 1) / NS_PER_MS;
	return ms > INT_MAX ? INT_MAX : (int)ms;
}

struct timespec fm_mono_abstime(uint64_t deadline_ns)
{
	struct timespec ts = { .tv_sec = (time_t)(deadline_ns / NS_PER_S),
			       .tv_nsec = (long)(deadline_ns % NS_PER_S) };

	return ts;
}

struct timespec fm_mono_abstime_in_ms(uint64_t ms)
{
	return fm_mono_abstime(fm_mono_after_ms(ms));
}

int fm_cond_init_mono(pthread_cond_t *cv)
{
	pthread_condattr_t ca;
	int rc;

	rc = pthread_condattr_init(&ca);
	if (rc)
		return -rc;
	rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	if (rc == 0)
		rc = pthread_cond_init(cv, &ca);
	pthread_condattr_destroy(&ca);
	return -rc;
}
