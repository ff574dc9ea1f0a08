/* loop_rig.h — an event loop (fiber.h) attached in the test's thread
 * and turned with a bound, for unit tests.
 *
 * run_until() turns the loop until a condition holds or BOUND_MS pass.
 * A guard timeout queued in the loop's own ring ends any turn that
 * nothing else would end, so a lost wake-up fails the case instead of
 * hanging it; guard_fired counts the times it had to.
 *
 * Under valgrind (3.19 at least) a thread blocked in io_uring_enter
 * keeps valgrind's big lock: no other thread of the test runs while the
 * loop waits (liburing issue 657), so a wake from another thread would
 * only come in with the guard.  There the rig "ticks": the guard ends
 * every wait after RIG_TICK_NS and the thread yields after each turn,
 * and the cases skip what ticking makes meaningless (that no guard was
 * needed).  Bounds are longer there too.
 */
#ifndef FARMEM_LOOP_RIG_H
#define FARMEM_LOOP_RIG_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "fiber.h"
#include "transport.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define RIG_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#endif
#endif
#ifndef RIG_VALGRIND
#define RIG_VALGRIND() 0
#endif

/* Every wait in a rig ends within this (four times as long under valgrind). */
#define BOUND_MS (RIG_VALGRIND() ? 40000u : 10000u)
#define RIG_TICK_NS 1000000u

struct rig {
	struct fm_loop *l;
	struct fm_loop_op guard;
	struct __kernel_timespec guard_ts;
	int guard_armed;
	int guard_fired;      /* guards that expired: a wait that nothing ended */
	int ticking;          /* under valgrind: the guard ends every wait */
	unsigned turns;
	unsigned turn_target;
};

static inline void guard_done(struct fm_loop_op *op, int res, unsigned flags)
{
	struct rig *r = (struct rig *)((char *)op - offsetof(struct rig, guard));

	(void)flags;
	r->guard_armed = 0;
	if (res == -ETIME)
		r->guard_fired++;
}

/* A rig for a loop the calling thread has attached. */
static inline void rig_init(struct rig *r, struct fm_loop *l)
{
	memset(r, 0, sizeof(*r));
	r->l = l;
	r->guard.cb = guard_done;
	r->ticking = RIG_VALGRIND();
}

static inline int rig_open(struct rig *r, unsigned fibers)
{
	struct fm_loop_params p = { .fibers = fibers };

	rig_init(r, NULL);
	if (fm_loop_create(&p, &r->l) < 0)
		return -1;
	if (fm_loop_attach(r->l) < 0) {
		fm_loop_destroy(r->l);
		return -1;
	}
	return 0;
}

static inline void guard_arm(struct rig *r, uint64_t ns)
{
	struct io_uring_sqe *sqe = fm_loop_sqe(r->l);

	if (!sqe)
		return;
	r->guard_ts.tv_sec = (long long)(ns / 1000000000u);
	r->guard_ts.tv_nsec = (long long)(ns % 1000000000u);
	io_uring_prep_timeout(sqe, &r->guard_ts, 0, 0);
	io_uring_sqe_set_data(sqe, &r->guard);
	r->guard_armed = 1;
}

/* Take the guard out of the ring again (its CQE comes back -ECANCELED). */
static inline void guard_disarm(struct rig *r)
{
	struct io_uring_sqe *sqe;

	if (!r->guard_armed || !(sqe = fm_loop_sqe(r->l)))
		return;
	io_uring_prep_timeout_remove(sqe, (uint64_t)(uintptr_t)&r->guard, 0);
	io_uring_sqe_set_data(sqe, NULL);
	for (int i = 0; i < 1000 && r->guard_armed; i++)
		if (fm_loop_turn(r->l) < 0)
			break;
}

/* Turn until done(arg) holds; 0, or -1 when the bound passed first. */
static inline int run_until(struct rig *r, int (*done)(void *), void *arg)
{
	uint64_t deadline = fm_mono_after_ms(BOUND_MS);
	int rc = 0;

	while (!done(arg)) {
		uint64_t now = fm_mono_ns();

		if (now >= deadline) {
			printf("#   still waiting after %u ms\n", (unsigned)BOUND_MS);
			rc = -1;
			break;
		}
		if (!r->guard_armed)
			guard_arm(r, r->ticking && deadline - now > RIG_TICK_NS ?
				  RIG_TICK_NS : deadline - now);
		if (fm_loop_turn(r->l) < 0) {
			rc = -1;
			break;
		}
		r->turns++;
		if (r->ticking)
			sched_yield();
	}
	guard_disarm(r);
	return rc;
}

static inline int turns_reached(void *arg)
{
	struct rig *r = arg;

	return r->turns >= r->turn_target;
}

/* n more turns, each ended by whatever the fibers queued. */
static inline int run_turns(struct rig *r, unsigned n)
{
	r->turn_target = r->turns + n;
	return run_until(r, turns_reached, r);
}

static inline int all_done(void *arg)
{
	return fm_loop_busy(arg) == 0;
}

/* Every fiber must have finished before the loop goes. */
static inline int rig_close(struct rig *r)
{
	int rc = run_until(r, all_done, r->l);

	fm_loop_detach(r->l);
	fm_loop_destroy(r->l);
	return rc;
}

/* One turn with nothing but a guard of ns to end it: 1 when the guard
 * is what ended it (every fiber was parked and nothing was queued). */
static inline int idle_turn(struct rig *r, uint64_t ns)
{
	int fired = r->guard_fired, rc = 0;
	uint64_t give_up;
	struct timespec now;

	guard_disarm(r);
	guard_arm(r, ns);
	clock_gettime(CLOCK_MONOTONIC, &now);
	give_up = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + 4 * ns;
	/* Under valgrind a loop waits in short slices (fiber.c), so a turn
	 * may end with nothing done: turn until the guard fires.  The
	 * caller checks that nothing else happened meanwhile. */
	while (r->guard_fired == fired) {
		if (fm_loop_turn(r->l) != 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec > give_up)
			break;
	}
	rc = r->guard_fired > fired;
	guard_disarm(r);
	return rc;
}

static inline int flag_set(void *arg)
{
	return __atomic_load_n((int *)arg, __ATOMIC_ACQUIRE) != 0;
}

/* One request a fiber (or the loop's thread) waits for, and where its
 * done() ran: a connection owned by the loop must complete it in the
 * loop's thread, from its link fiber, not from the submitter. */
struct fwait {
	struct fm_fiber *f;   /* the submitter; NULL outside any fiber */
	int status;
	int done;
	int in_loop_thread;   /* done() ran in the loop's thread ... */
	int from_other_fiber; /* ... from a fiber, not the submitter */
};

/* The thread that attached the loop under test (set by the case). */
static inline pthread_t *rig_loop_thread(void)
{
	static pthread_t t;

	return &t;
}

static inline void fwait_done(struct fm_req *r, int status)
{
	struct fwait *w = r->priv;
	struct fm_fiber *self = fm_fiber_self();

	w->in_loop_thread = pthread_equal(pthread_self(), *rig_loop_thread());
	w->from_other_fiber = self && self != w->f;
	w->status = status;
	w->done = 1;
	if (w->f)
		fm_fiber_wake(w->f);
}

/* Point r's done() at w, a fresh waiter for the calling fiber. */
static inline void fwait_arm(struct fwait *w, struct fm_req *r)
{
	*w = (struct fwait){ .f = fm_fiber_self() };
	r->done = fwait_done;
	r->priv = w;
}

#endif
