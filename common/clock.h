/* clock.h — the one clock for timeouts, deadlines and timed waits.
 *
 * Everything that waits with a deadline counts on CLOCK_MONOTONIC: a
 * wall-clock step (NTP, an admin's `date`) must neither cut a request's
 * timeout short nor stretch a wait by hours.  pthread_cond_timedwait()
 * measures its absolute time on the condition variable's clock, so a
 * condition variable waited on with a deadline is made by fm_cond_init_mono()
 * and its deadline by fm_mono_abstime*().
 */
#ifndef FARMEM_CLOCK_H
#define FARMEM_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in nanoseconds (and milliseconds). */
uint64_t fm_mono_ns(void);
uint64_t fm_mono_ms(void);

/* now + ms, in fm_mono_ns() time. */
uint64_t fm_mono_after_ms(uint64_t ms);

/* Milliseconds from now until deadline_ns (rounded up, so a poll() on
 * it does not wake just early), 0 once it has passed. */
int fm_mono_ms_until(uint64_t deadline_ns);

/* An fm_mono_ns() deadline as pthread_cond_timedwait() takes it. */
struct timespec fm_mono_abstime(uint64_t deadline_ns);

/* The absolute time ms from now, for pthread_cond_timedwait(). */
struct timespec fm_mono_abstime_in_ms(uint64_t ms);

/* A condition variable whose timed waits count on CLOCK_MONOTONIC.
 * 0 or -errno. */
int fm_cond_init_mono(pthread_cond_t *cv);

#endif
