/* test_fiber.c — the per-thread event loop and its fibers (fiber.h).
 *
 * Every case owns a loop attached in the thread that turns it, turned
 * through loop_rig.h's run_until(): a condition or a bound ends every
 * wait, and cases that must show a wake-up arrived by itself (not by
 * the rig's guard timeout) check that the guard never fired.
 *
 * Timing is checked from below only: a sleep or a timed-out poll lasts
 * at least what was asked.  What runs while a fiber waits is shown by
 * ordering (which fiber saw which state), not by how long it took.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "fiber.h"
#include "log.h"
#include "loop_rig.h"
#include "tap.h"

/* A plain thread polls *v until it reaches want; 0 within the bound. */
static int wait_at_least(const int *v, int want)
{
	uint64_t deadline = fm_mono_after_ms(BOUND_MS);

	while (__atomic_load_n(v, __ATOMIC_ACQUIRE) < want) {
		if (fm_mono_ns() >= deadline)
			return -1;
		usleep(100);
	}
	return 0;
}

static int load(const int *v)
{
	return __atomic_load_n(v, __ATOMIC_ACQUIRE);
}

static void store_int(int *v, int x)
{
	__atomic_store_n(v, x, __ATOMIC_RELEASE);
}

/* ---- spawn ----------------------------------------------------------- */

struct spawn_rec {
	struct fm_loop *l;
	int ran;
	int in_fiber;          /* fm_fiber_self() was set inside */
	int right_loop;        /* fm_loop_current() was the loop */
	struct fm_fiber *self;
	int go;
	int done;
};

static void rec_fn(void *arg)
{
	struct spawn_rec *s = arg;

	s->self = fm_fiber_self();
	s->in_fiber = s->self != NULL;
	s->right_loop = fm_loop_current() == s->l;
	s->ran++;
}

static int t_spawn_runs(void)
{
	struct spawn_rec s = { 0 };
	struct fm_loop *bad = (struct fm_loop *)1;
	struct fm_loop_params zero = { .fibers = 0 };
	struct rig r;

	CHECK(fm_loop_create(&zero, &bad) == -EINVAL);
	CHECK(bad == NULL);
	CHECK(rig_open(&r, 2) == 0);
	s.l = r.l;
	CHECK(fm_loop_current() == r.l);
	CHECK(fm_fiber_self() == NULL);
	CHECK(fm_loop_spawn(r.l, rec_fn, &s) == 0);
	/* It runs at the next turn, not inside spawn. */
	CHECK(s.ran == 0);
	CHECK(fm_loop_busy(r.l) == 1);
	CHECK(run_until(&r, all_done, r.l) == 0);
	CHECK(s.ran == 1);
	CHECK(s.in_fiber && s.right_loop);
	CHECK(fm_fiber_self() == NULL);     /* back in the loop itself */
	CHECK(rig_close(&r) == 0);
	CHECK(fm_loop_current() == NULL);
	return 0;
}

/* Parks until go, then finishes. */
static void held_fn(void *arg)
{
	struct spawn_rec *s = arg;

	s->self = fm_fiber_self();
	s->ran++;
	while (!s->go)
		fm_fiber_park();
	s->done = 1;
}

static int t_spawn_full_and_reuse(void)
{
	struct spawn_rec a = { 0 }, b = { 0 }, c = { 0 };
	struct rig r;

	CHECK(rig_open(&r, 2) == 0);
	CHECK(fm_loop_spawn(r.l, held_fn, &a) == 0);
	CHECK(fm_loop_spawn(r.l, held_fn, &b) == 0);
	CHECK(fm_loop_spawn(r.l, rec_fn, &c) == -EAGAIN);
	CHECK(run_until(&r, flag_set, &b.ran) == 0);
	CHECK(fm_loop_busy(r.l) == 2);
	CHECK(fm_loop_spawn(r.l, rec_fn, &c) == -EAGAIN);
	CHECK(a.self && b.self && a.self != b.self);
	/* a finishes: its fiber is the one the next spawn gets. */
	a.go = 1;
	fm_fiber_wake(a.self);
	CHECK(run_until(&r, flag_set, &a.done) == 0);
	CHECK(fm_loop_busy(r.l) == 1);     /* b still parked */
	CHECK(b.done == 0);
	c.l = r.l;
	CHECK(fm_loop_spawn(r.l, rec_fn, &c) == 0);
	CHECK(fm_loop_spawn(r.l, rec_fn, &c) == -EAGAIN);
	CHECK(run_until(&r, flag_set, &c.ran) == 0);
	CHECK(c.self == a.self);
	CHECK(c.in_fiber && c.right_loop);
	b.go = 1;
	fm_fiber_wake(b.self);
	CHECK(rig_close(&r) == 0);
	CHECK(b.done == 1);
	return 0;
}

/* ---- park and wake ---------------------------------------------------- */

struct pingpong {
	struct fm_fiber *fa, *fb;
	int cond;
	int log[16];
	int nlog;
	int a_parks;           /* times A's park returned */
	int a_exit_cond;
	int done;
};

static void pp_log(struct pingpong *p, int ev)
{
	if (p->nlog < 16)
		p->log[p->nlog++] = ev;
}

/* A waits for cond with the usual condition loop. */
static void waiter_a(void *arg)
{
	struct pingpong *p = arg;

	p->fa = fm_fiber_self();
	pp_log(p, 1);
	while (!p->cond) {
		fm_fiber_park();
		p->a_parks++;
	}
	p->a_exit_cond = p->cond;
	pp_log(p, 4);
	p->done++;
}

/* B sets the condition and wakes A. */
static void setter_b(void *arg)
{
	struct pingpong *p = arg;

	pp_log(p, 2);
	p->cond = 1;
	fm_fiber_wake(p->fa);
	pp_log(p, 3);
	p->done++;
}

static int t_park_wake_local(void)
{
	struct pingpong p = { 0 };
	struct rig r;

	CHECK(rig_open(&r, 2) == 0);
	CHECK(fm_loop_spawn(r.l, waiter_a, &p) == 0);
	CHECK(fm_loop_spawn(r.l, setter_b, &p) == 0);
	CHECK(rig_close(&r) == 0);
	CHECK(p.done == 2);
	/* A parked, B ran and woke it, A went on after B. */
	CHECK(p.nlog == 4);
	CHECK(p.log[0] == 1 && p.log[1] == 2 && p.log[2] == 3 && p.log[3] == 4);
	CHECK(p.a_parks == 1 && p.a_exit_cond == 1);
	CHECK(r.ticking || r.guard_fired == 0);
	return 0;
}

/* B wakes A without setting the condition, gives the thread up, then
 * sets it and wakes A for real. */
static void stale_b(void *arg)
{
	struct pingpong *p = arg;

	fm_fiber_wake(p->fa);          /* stale: cond is still 0 */
	fm_fiber_sleep_ns(1000);
	pp_log(p, 2);
	p->cond = 1;
	fm_fiber_wake(p->fa);
	p->done++;
}

/* A wake that comes while the fiber runs makes its next park return at
 * once; the one after that parks for real. */
struct selfwake {
	struct rig *r;
	unsigned turns_before, turns_after;
	int cond;
	int parks;
	struct fm_fiber *self;
	int past_first;
	int done;
};

static void selfwake_fn(void *arg)
{
	struct selfwake *s = arg;

	s->self = fm_fiber_self();
	fm_fiber_wake(s->self);
	s->turns_before = s->r->turns;
	fm_fiber_park();
	s->turns_after = s->r->turns;
	s->past_first = 1;
	while (!s->cond) {
		fm_fiber_park();
		s->parks++;
	}
	s->done = 1;
}

static int t_stale_wake(void)
{
	struct pingpong p = { 0 };
	struct selfwake s = { 0 };
	struct rig r;

	CHECK(rig_open(&r, 2) == 0);
	CHECK(fm_loop_spawn(r.l, waiter_a, &p) == 0);
	CHECK(fm_loop_spawn(r.l, stale_b, &p) == 0);
	CHECK(run_until(&r, all_done, r.l) == 0);
	/* The stale wake returned A's park early; the loop parked it again
	 * and it only left once the condition held. */
	CHECK(p.done == 2);
	CHECK(p.a_parks >= 2);
	CHECK(p.a_exit_cond == 1);
	CHECK(p.nlog == 3 && p.log[1] == 2 && p.log[2] == 4);

	s.r = &r;
	CHECK(fm_loop_spawn(r.l, selfwake_fn, &s) == 0);
	CHECK(run_until(&r, flag_set, &s.past_first) == 0);
	CHECK(s.turns_after == s.turns_before);   /* returned without a turn */
	CHECK(s.done == 0);                       /* the next park did park */
	s.cond = 1;
	fm_fiber_wake(s.self);
	CHECK(rig_close(&r) == 0);
	CHECK(s.done == 1 && s.parks == 1);
	return 0;
}

/* ---- wakes from another thread ----------------------------------------- */

#define XROUNDS 200

struct xwake {
	struct fm_fiber *f[8];   /* atomic */
	int nfibers;
	int round;               /* atomic: rounds the fiber has reached */
	int go;                  /* atomic: rounds the thread has released */
	int parked;              /* atomic: fibers about to park */
	int finished;            /* atomic */
	int thread_timeouts;
};

static void xwake_fiber(void *arg)
{
	struct xwake *x = arg;

	__atomic_store_n(&x->f[0], fm_fiber_self(), __ATOMIC_RELEASE);
	for (int i = 0; i < XROUNDS; i++) {
		store_int(&x->round, i + 1);
		while (load(&x->go) < i + 1)
			fm_fiber_park();
	}
	store_int(&x->finished, 1);
}

static void *xwake_thread(void *arg)
{
	struct xwake *x = arg;

	for (int i = 0; i < XROUNDS; i++) {
		if (wait_at_least(&x->round, i + 1)) {
			x->thread_timeouts++;
			break;
		}
		store_int(&x->go, i + 1);
		fm_fiber_wake(__atomic_load_n(&x->f[0], __ATOMIC_ACQUIRE));
	}
	return NULL;
}

static int t_wake_from_thread(void)
{
	struct xwake x = { .nfibers = 1 };
	pthread_t th;
	struct rig r;
	int rc;

	CHECK(rig_open(&r, 1) == 0);
	CHECK(fm_loop_spawn(r.l, xwake_fiber, &x) == 0);
	CHECK(pthread_create(&th, NULL, xwake_thread, &x) == 0);
	rc = run_until(&r, flag_set, &x.finished);
	if (rc) {
		/* Let the thread go before failing. */
		store_int(&x.go, XROUNDS);
	}
	pthread_join(th, NULL);
	CHECK(rc == 0);
	CHECK(x.thread_timeouts == 0);
	CHECK(load(&x.round) == XROUNDS);
	/* Each wake ended the loop's wait by itself: the guard never had to. */
	CHECK(r.ticking || r.guard_fired == 0);
	CHECK(rig_close(&r) == 0);
	return 0;
}

static void batch_fiber(void *arg)
{
	struct xwake *x = arg;

	for (int k = 0; k < x->nfibers; k++) {
		struct fm_fiber *none = NULL;

		if (__atomic_compare_exchange_n(&x->f[k], &none, fm_fiber_self(), 0,
						__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			break;
	}
	__atomic_add_fetch(&x->parked, 1, __ATOMIC_ACQ_REL);
	while (!load(&x->go))
		fm_fiber_park();
	__atomic_add_fetch(&x->finished, 1, __ATOMIC_ACQ_REL);
}

static void *batch_thread(void *arg)
{
	struct xwake *x = arg;

	if (wait_at_least(&x->parked, x->nfibers)) {
		x->thread_timeouts++;
		store_int(&x->go, 1);
		return NULL;
	}
	store_int(&x->go, 1);
	for (int k = 0; k < x->nfibers; k++)
		fm_fiber_wake(__atomic_load_n(&x->f[k], __ATOMIC_ACQUIRE));
	return NULL;
}

static int all_finished(void *arg)
{
	struct xwake *x = arg;

	return load(&x->finished) == x->nfibers;
}

/* Several fibers woken back to back from another thread: the inbox
 * hands every one of them to the loop. */
static int t_wake_batch_from_thread(void)
{
	struct xwake x = { .nfibers = 8 };
	pthread_t th;
	struct rig r;
	int rc;

	CHECK(rig_open(&r, 8) == 0);
	for (int k = 0; k < 8; k++)
		CHECK(fm_loop_spawn(r.l, batch_fiber, &x) == 0);
	CHECK(pthread_create(&th, NULL, batch_thread, &x) == 0);
	rc = run_until(&r, all_finished, &x);
	pthread_join(th, NULL);
	CHECK(rc == 0);
	CHECK(x.thread_timeouts == 0);
	CHECK(r.ticking || r.guard_fired == 0);
	CHECK(rig_close(&r) == 0);
	return 0;
}

/* ---- sleep ------------------------------------------------------------- */

#define SLEEP_NS (30u * 1000000u)

struct sleepers {
	int a_asleep;
	int a_long_enough[3];  /* each sleep lasted at least its time */
	int a_done;
	/* B and C hand a token back and forth while A sleeps. */
	struct fm_fiber *fb, *fc;
	int token;
	int saw_a_awake;
	int b_rounds, c_rounds;
};

static void sleeper_a(void *arg)
{
	static const uint64_t ns[3] = { SLEEP_NS, 1000000u, 5000000u };
	struct sleepers *s = arg;

	for (int i = 0; i < 3; i++) {
		uint64_t t0 = fm_mono_ns();

		s->a_asleep = 1;
		fm_fiber_sleep_ns(ns[i]);
		s->a_asleep = 0;
		s->a_long_enough[i] = fm_mono_ns() - t0 >= ns[i];
	}
	s->a_done = 1;
}

/* Takes the token when it is its turn (token parity), 10 rounds. */
static void passer(struct sleepers *s, int me, struct fm_fiber **self,
		   struct fm_fiber **other, int *rounds)
{
	*self = fm_fiber_self();
	while (*rounds < 10) {
		while (s->token % 2 != me)
			fm_fiber_park();
		if (!s->a_asleep)
			s->saw_a_awake = 1;
		(*rounds)++;
		s->token++;
		if (*other)
			fm_fiber_wake(*other);
	}
}

static void passer_b(void *arg)
{
	struct sleepers *s = arg;

	passer(s, 0, &s->fb, &s->fc, &s->b_rounds);
}

static void passer_c(void *arg)
{
	struct sleepers *s = arg;

	passer(s, 1, &s->fc, &s->fb, &s->c_rounds);
}

static int t_sleep(void)
{
	struct sleepers s = { 0 };
	struct rig r;

	CHECK(rig_open(&r, 3) == 0);
	CHECK(fm_loop_spawn(r.l, sleeper_a, &s) == 0);
	CHECK(fm_loop_spawn(r.l, passer_b, &s) == 0);
	CHECK(fm_loop_spawn(r.l, passer_c, &s) == 0);
	CHECK(rig_close(&r) == 0);
	CHECK(s.a_done);
	/* At least as long as asked, every time. */
	CHECK(s.a_long_enough[0] && s.a_long_enough[1] && s.a_long_enough[2]);
	/* B and C did all their rounds while A's first sleep went on: the
	 * sleeping fiber does not hold the thread. */
	CHECK(s.b_rounds == 10 && s.c_rounds == 10);
	CHECK(s.saw_a_awake == 0);
	return 0;
}

/* ---- poll ---------------------------------------------------------------- */

struct poller {
	int fd;
	int wfd;
	int polling;          /* atomic */
	int revents;
	int done;             /* atomic */
	int writer_saw_waiting;
	int bad_fd_rc;
	uint8_t got;
};

static void poll_reader(void *arg)
{
	struct poller *p = arg;

	store_int(&p->polling, 1);
	p->revents = fm_fiber_poll(p->fd, POLLIN);
	if (p->revents > 0 && read(p->fd, &p->got, 1) != 1)
		p->got = 0;
	p->bad_fd_rc = fm_fiber_poll(-1, POLLIN);
	store_int(&p->done, 1);
}

static void poll_writer(void *arg)
{
	struct poller *p = arg;
	uint8_t b = 0x5a;

	p->writer_saw_waiting = load(&p->polling) && !load(&p->done);
	if (write(p->wfd, &b, 1) != 1)
		p->writer_saw_waiting = -1;
}

static void *efd_writer_thread(void *arg)
{
	struct poller *p = arg;
	uint64_t one = 1;

	if (wait_at_least(&p->polling, 1) == 0 && write(p->wfd, &one, sizeof(one)) == sizeof(one))
		p->writer_saw_waiting = 1;
	return NULL;
}

static int t_poll(void)
{
	struct poller p = { 0 }, e = { 0 };
	int fds[2];
	uint64_t v = 0;
	pthread_t th;
	struct rig r;

	CHECK(pipe(fds) == 0);
	CHECK(rig_open(&r, 2) == 0);
	/* A pipe written by another fiber of the loop. */
	p.fd = fds[0];
	p.wfd = fds[1];
	CHECK(fm_loop_spawn(r.l, poll_reader, &p) == 0);
	CHECK(fm_loop_spawn(r.l, poll_writer, &p) == 0);
	CHECK(run_until(&r, all_done, r.l) == 0);
	CHECK(p.writer_saw_waiting == 1);
	CHECK(p.revents > 0 && (p.revents & POLLIN));
	CHECK(p.got == 0x5a);
	CHECK(p.bad_fd_rc == -EBADF);
	/* An eventfd written by another thread. */
	e.fd = e.wfd = eventfd(0, EFD_CLOEXEC);
	CHECK(e.fd >= 0);
	CHECK(fm_loop_spawn(r.l, poll_reader, &e) == 0);
	CHECK(pthread_create(&th, NULL, efd_writer_thread, &e) == 0);
	CHECK(run_until(&r, flag_set, &e.done) == 0);
	pthread_join(th, NULL);
	CHECK(e.writer_saw_waiting == 1);
	CHECK(e.revents > 0 && (e.revents & POLLIN));
	CHECK(read(e.fd, &v, sizeof(v)) == sizeof(v) && v == 1);
	CHECK(rig_close(&r) == 0);
	close(fds[0]);
	close(fds[1]);
	close(e.fd);
	return 0;
}

/* ---- poll with a timeout ----------------------------------------------------- */

#define PT_ROUNDS 120

struct ptimeout {
	int fd, wfd;
	int idle_rc;          /* nothing to read: 0 */
	int idle_long_enough;
	int zero_rc;          /* a zero timeout, nothing to read: 0 */
	int ready_rc;         /* data already there */
	int wait_rc;          /* data written by another fiber meanwhile */
	int bad_fd_rc;
	int waiting;
	int bad;              /* rounds with a wrong answer */
	int done;
};

static int drain(int fd)
{
	uint8_t b;

	return read(fd, &b, 1) == 1 ? 0 : -1;
}

static void ptimeout_fn(void *arg)
{
	struct ptimeout *t = arg;
	uint64_t t0 = fm_mono_ns();
	uint8_t b = 1;

	t->idle_rc = fm_fiber_poll_timeout(t->fd, POLLIN, 20000000u);
	t->idle_long_enough = fm_mono_ns() - t0 >= 20000000u;
	t->zero_rc = fm_fiber_poll_timeout(t->fd, POLLIN, 0);
	t->bad_fd_rc = fm_fiber_poll_timeout(-1, POLLIN, 5000000000ull);
	if (write(t->wfd, &b, 1) != 1)
		t->bad++;
	t->ready_rc = fm_fiber_poll_timeout(t->fd, POLLIN, 5000000000ull);
	if (drain(t->fd))
		t->bad++;
	/* Timed out and ready, alternating, straight after each other; a
	 * sleep now and then reuses the fiber's timer between them. */
	for (int i = 0; i < PT_ROUNDS; i++) {
		int ready = i % 2, rc;

		if (ready && write(t->wfd, &b, 1) != 1)
			t->bad++;
		rc = fm_fiber_poll_timeout(t->fd, POLLIN, ready ? 5000000000ull : 200000u);
		if (ready ? !(rc > 0 && (rc & POLLIN)) : rc != 0) {
			printf("#   round %d: %d\n", i, rc);
			t->bad++;
		}
		if (ready && drain(t->fd))
			t->bad++;
		if (i % 10 == 9) {
			/* A completion left over from the poll must not end
			 * the sleep early. */
			uint64_t s0 = fm_mono_ns();

			fm_fiber_sleep_ns(200000u);
			if (fm_mono_ns() - s0 < 200000u)
				t->bad++;
		}
	}
	/* Data that comes while it waits ends the wait. */
	t->waiting = 1;
	t->wait_rc = fm_fiber_poll_timeout(t->fd, POLLIN, 5000000000ull);
	t->done = 1;
}

static void ptimeout_writer(void *arg)
{
	struct ptimeout *t = arg;
	uint8_t b = 2;

	while (!t->waiting)
		fm_fiber_sleep_ns(100000u);
	if (write(t->wfd, &b, 1) != 1)
		t->bad++;
}

static int t_poll_timeout(void)
{
	struct ptimeout t = { 0 };
	int fds[2];
	struct rig r;

	CHECK(pipe(fds) == 0);
	t.fd = fds[0];
	t.wfd = fds[1];
	CHECK(rig_open(&r, 2) == 0);
	CHECK(fm_loop_spawn(r.l, ptimeout_fn, &t) == 0);
	CHECK(fm_loop_spawn(r.l, ptimeout_writer, &t) == 0);
	CHECK(rig_close(&r) == 0);
	CHECK(t.done);
	CHECK(t.idle_rc == 0 && t.idle_long_enough);
	CHECK(t.zero_rc == 0);
	CHECK(t.bad_fd_rc == -EBADF);
	CHECK(t.ready_rc > 0 && (t.ready_rc & POLLIN));
	CHECK(t.bad == 0);
	CHECK(t.wait_rc > 0 && (t.wait_rc & POLLIN));
	close(fds[0]);
	close(fds[1]);
	return 0;
}

/* ---- fm_mutex ------------------------------------------------------------- */

struct mx {
	struct fm_mutex m;
	struct fm_fiber *holder_self;
	struct fm_fiber *waiter_self[3];
	int nwaiters;
	int tried;             /* waiters that called lock */
	int go;
	int inside;            /* holders at once */
	int max_inside;
	int log[16];
	int nlog;
	int trylock_busy;
};

static void mx_log(struct mx *x, int ev)
{
	if (x->nlog < 16)
		x->log[x->nlog++] = ev;
}

static void mx_enter(struct mx *x)
{
	if (++x->inside > x->max_inside)
		x->max_inside = x->inside;
}

/* Takes the mutex, parks holding it until go, then lets it go. */
static void mx_holder(void *arg)
{
	struct mx *x = arg;

	x->holder_self = fm_fiber_self();
	fm_mutex_lock(&x->m);
	mx_enter(x);
	mx_log(x, 1);
	while (!x->go)
		fm_fiber_park();
	x->inside--;
	mx_log(x, 2);
	fm_mutex_unlock(&x->m);
}

static void mx_waiter(void *arg)
{
	struct mx *x = arg;
	int me = x->nwaiters++;

	x->waiter_self[me] = fm_fiber_self();
	x->trylock_busy += fm_mutex_trylock(&x->m) == -EBUSY;
	mx_log(x, 10 + me);
	x->tried++;
	fm_mutex_lock(&x->m);
	mx_enter(x);
	mx_log(x, 20 + me);
	fm_fiber_sleep_ns(1000);     /* hold it across a park too */
	x->inside--;
	fm_mutex_unlock(&x->m);
}

static int tried_all(void *arg)
{
	return ((struct mx *)arg)->tried == 3;
}

static int t_mutex_fibers(void)
{
	struct mx x = { 0 };
	struct rig r;
	int got[3] = { 0 }, unlock_at = -1;

	fm_mutex_init(&x.m);
	CHECK(rig_open(&r, 4) == 0);
	CHECK(fm_loop_spawn(r.l, mx_holder, &x) == 0);
	for (int k = 0; k < 3; k++)
		CHECK(fm_loop_spawn(r.l, mx_waiter, &x) == 0);
	CHECK(run_until(&r, tried_all, &x) == 0);
	CHECK(x.nlog == 4 && x.log[0] == 1);
	CHECK(x.trylock_busy == 3);
	CHECK(__atomic_load_n(&x.m.owner, __ATOMIC_ACQUIRE) == r.l);
	/* The waiters parked on the mutex (the newest heads its list): with
	 * the holder parked too, nothing but the guard ends a turn. */
	CHECK(x.m.waiters == x.waiter_self[0] || x.m.waiters == x.waiter_self[1] ||
	      x.m.waiters == x.waiter_self[2]);
	CHECK(idle_turn(&r, 50000000u) == 1);
	CHECK(x.nlog == 4);
	x.go = 1;
	fm_fiber_wake(x.holder_self);
	CHECK(rig_close(&r) == 0);
	/* One holder at a time, and every waiter got it after the unlock. */
	CHECK(x.max_inside == 1);
	CHECK(x.nlog == 8);
	for (int i = 0; i < x.nlog; i++) {
		if (x.log[i] == 2)
			unlock_at = i;
		if (x.log[i] >= 20 && x.log[i] < 23) {
			CHECK(unlock_at >= 0);
			got[x.log[i] - 20]++;
		}
	}
	CHECK(got[0] == 1 && got[1] == 1 && got[2] == 1);
	CHECK(__atomic_load_n(&x.m.owner, __ATOMIC_ACQUIRE) == NULL);
	CHECK(x.m.waiters == NULL);
	fm_mutex_destroy(&x.m);
	return 0;
}

/* A plain thread holds the mutex; a fiber waits for it without holding
 * the loop's thread (another fiber runs meanwhile). */
struct mx_thread {
	struct fm_mutex m;
	int held;              /* atomic: the thread has it */
	int fiber_trying;      /* atomic */
	int other_ran;         /* atomic: a second fiber ran while the first waited */
	int released;          /* atomic: set just before the thread unlocks */
	int fiber_got;         /* atomic */
	int fiber_saw_released;
	int trylock_rc;
	int thread_timeouts;
	/* The reverse: a fiber holds it across a park, the thread waits. */
	int fiber_holds;       /* atomic */
	int fiber_released;    /* atomic */
	int thread_saw_released;
	int thread_got;        /* atomic */
};

static void *mxt_thread(void *arg)
{
	struct mx_thread *t = arg;

	fm_mutex_lock(&t->m);
	store_int(&t->held, 1);
	if (wait_at_least(&t->other_ran, 1))
		t->thread_timeouts++;
	store_int(&t->released, 1);
	fm_mutex_unlock(&t->m);
	/* Now the other way round. */
	if (wait_at_least(&t->fiber_holds, 1))
		t->thread_timeouts++;
	fm_mutex_lock(&t->m);
	t->thread_saw_released = load(&t->fiber_released);
	fm_mutex_unlock(&t->m);
	store_int(&t->thread_got, 1);
	return NULL;
}

static void mxt_fiber(void *arg)
{
	struct mx_thread *t = arg;

	store_int(&t->fiber_trying, 1);
	fm_mutex_lock(&t->m);
	t->fiber_saw_released = load(&t->released);
	store_int(&t->fiber_got, 1);
	fm_mutex_unlock(&t->m);
	/* Hold it across a park while the thread waits for it. */
	fm_mutex_lock(&t->m);
	store_int(&t->fiber_holds, 1);
	for (int i = 0; i < 5; i++)
		fm_fiber_sleep_ns(1000000u);
	store_int(&t->fiber_released, 1);
	fm_mutex_unlock(&t->m);
}

static void mxt_other(void *arg)
{
	struct mx_thread *t = arg;

	t->trylock_rc = fm_mutex_trylock(&t->m);
	if (load(&t->fiber_trying) && !load(&t->fiber_got))
		store_int(&t->other_ran, 1);
}

static int t_mutex_thread(void)
{
	struct mx_thread t = { 0 };
	pthread_t th;
	struct rig r;
	int rc;

	fm_mutex_init(&t.m);
	CHECK(rig_open(&r, 2) == 0);
	CHECK(pthread_create(&th, NULL, mxt_thread, &t) == 0);
	CHECK(wait_at_least(&t.held, 1) == 0);
	CHECK(fm_loop_spawn(r.l, mxt_fiber, &t) == 0);
	CHECK(fm_loop_spawn(r.l, mxt_other, &t) == 0);
	rc = run_until(&r, flag_set, &t.thread_got);
	if (rc) {
		store_int(&t.other_ran, 1);
		store_int(&t.fiber_holds, 1);
	}
	pthread_join(th, NULL);
	CHECK(rc == 0);
	CHECK(rig_close(&r) == 0);
	CHECK(t.thread_timeouts == 0);
	CHECK(t.trylock_rc == -EBUSY);
	CHECK(load(&t.other_ran) == 1);
	CHECK(t.fiber_saw_released == 1);
	CHECK(t.thread_saw_released == 1);
	CHECK(__atomic_load_n(&t.m.owner, __ATOMIC_ACQUIRE) == NULL);
	fm_mutex_destroy(&t.m);
	return 0;
}

/* ---- fm_rwlock ------------------------------------------------------------- */

struct rw {
	struct fm_rwlock l;
	struct fm_fiber *self[4];
	int go[4];
	int readers_in;
	int max_readers;
	int writer_in;
	int writer_done;
	int violations;        /* a reader with the writer in, or the reverse */
	int r3_after_writer;
	int trying[4];
	int in[4];
};

struct rw_arg {
	struct rw *w;
	int id;                /* 0, 1: first readers; 2: writer; 3: late reader */
};

static void rw_reader(void *arg)
{
	struct rw_arg *a = arg;
	struct rw *w = a->w;

	w->self[a->id] = fm_fiber_self();
	w->trying[a->id] = 1;
	fm_rwlock_rdlock(&w->l);
	if (w->writer_in)
		w->violations++;
	if (a->id == 3)
		w->r3_after_writer = w->writer_done;
	w->in[a->id] = 1;
	if (++w->readers_in > w->max_readers)
		w->max_readers = w->readers_in;
	while (!w->go[a->id])
		fm_fiber_park();
	w->readers_in--;
	fm_rwlock_unlock(&w->l);
}

static void rw_writer(void *arg)
{
	struct rw_arg *a = arg;
	struct rw *w = a->w;

	w->self[a->id] = fm_fiber_self();
	w->trying[a->id] = 1;
	fm_rwlock_wrlock(&w->l);
	if (w->readers_in || w->writer_in)
		w->violations++;
	w->writer_in = 1;
	w->in[a->id] = 1;
	while (!w->go[a->id])
		fm_fiber_park();
	w->writer_in = 0;
	w->writer_done = 1;
	fm_rwlock_unlock(&w->l);
}

static int two_readers_in(void *arg)
{
	struct rw *w = arg;

	return w->in[0] && w->in[1];
}

static void rw_release(struct rw *w, int id)
{
	w->go[id] = 1;
	fm_fiber_wake(w->self[id]);
}

static int t_rwlock(void)
{
	struct rw w = { 0 };
	struct rw_arg a[4] = { { &w, 0 }, { &w, 1 }, { &w, 2 }, { &w, 3 } };
	struct rig r;

	fm_rwlock_init(&w.l);
	CHECK(rig_open(&r, 4) == 0);
	CHECK(fm_loop_spawn(r.l, rw_reader, &a[0]) == 0);
	CHECK(fm_loop_spawn(r.l, rw_reader, &a[1]) == 0);
	/* Two readers in at once, each parked holding it. */
	CHECK(run_until(&r, two_readers_in, &w) == 0);
	CHECK(w.max_readers == 2);
	/* A writer comes and waits; a reader after it waits too (writers
	 * go first). */
	CHECK(fm_loop_spawn(r.l, rw_writer, &a[2]) == 0);
	CHECK(run_until(&r, flag_set, &w.trying[2]) == 0);
	CHECK(fm_loop_spawn(r.l, rw_reader, &a[3]) == 0);
	CHECK(run_until(&r, flag_set, &w.trying[3]) == 0);
	CHECK(run_turns(&r, 20) == 0);     /* the waiters retry on timers */
	CHECK(!w.in[2] && !w.in[3]);
	/* One reader leaves: the writer still waits for the other. */
	rw_release(&w, 0);
	CHECK(run_turns(&r, 20) == 0);
	CHECK(!w.in[2] && !w.in[3] && w.readers_in == 1);
	rw_release(&w, 1);
	CHECK(run_until(&r, flag_set, &w.in[2]) == 0);
	CHECK(w.readers_in == 0 && !w.in[3]);
	rw_release(&w, 2);
	CHECK(run_until(&r, flag_set, &w.in[3]) == 0);
	CHECK(w.r3_after_writer == 1);
	rw_release(&w, 3);
	CHECK(rig_close(&r) == 0);
	CHECK(w.violations == 0);
	fm_rwlock_destroy(&w.l);
	return 0;
}

/* ---- hooks ------------------------------------------------------------------- */

struct hooked {
	struct fm_loop_hook h;
	unsigned calls;
};

static void hook_fn(struct fm_loop_hook *h)
{
	((struct hooked *)h)->calls++;
}

struct hook_seen {
	struct hooked *h;
	unsigned calls_seen;
};

static void note_hook(void *arg)
{
	struct hook_seen *s = arg;

	s->calls_seen = s->h->calls;
}

static void nop_fn(void *arg)
{
	(void)arg;
}

/* n turns, each of which returns at once (a fresh fiber is ready). */
static int quick_turns(struct rig *r, int n)
{
	for (int i = 0; i < n; i++)
		if (fm_loop_spawn(r->l, nop_fn, NULL) || fm_loop_turn(r->l))
			return -1;
	return 0;
}

static int t_hooks(void)
{
	struct hooked a = { .h.fn = hook_fn }, b = { .h.fn = hook_fn };
	struct hook_seen seen = { .h = &a };
	struct rig r;

	CHECK(rig_open(&r, 2) == 0);
	fm_loop_hook_add(r.l, &a.h);
	fm_loop_hook_add(r.l, &b.h);
	CHECK(quick_turns(&r, 5) == 0);
	CHECK(a.calls == 5 && b.calls == 5);
	/* It runs at the start of the turn, before the turn's fibers. */
	CHECK(fm_loop_spawn(r.l, note_hook, &seen) == 0);
	CHECK(fm_loop_turn(r.l) == 0);
	CHECK(a.calls == 6 && seen.calls_seen == 6);
	/* Taking one out (the list's head, then its tail) leaves the other. */
	fm_loop_hook_del(r.l, &b.h);
	CHECK(quick_turns(&r, 3) == 0);
	CHECK(a.calls == 9 && b.calls == 6);
	fm_loop_hook_add(r.l, &b.h);
	fm_loop_hook_del(r.l, &a.h);
	CHECK(quick_turns(&r, 2) == 0);
	CHECK(a.calls == 9 && b.calls == 8);
	fm_loop_hook_del(r.l, &b.h);
	fm_loop_hook_del(r.l, &b.h);     /* not there any more: nothing happens */
	CHECK(quick_turns(&r, 2) == 0);
	CHECK(a.calls == 9 && b.calls == 8);
	CHECK(rig_close(&r) == 0);
	return 0;
}

/* ---- outside fibers ----------------------------------------------------------- */

struct outside {
	int self_null, loop_null;
	int slept_enough;
	int poll_rc, poll_to_rc, poll_to_long_enough, poll_ready_rc, late_rc;
	int fds[2];
};

static void *late_writer(void *arg)
{
	struct outside *o = arg;
	uint8_t b = 7;

	/* The wait below returns whenever this lands, before or during it. */
	if (write(o->fds[1], &b, 1) != 1)
		o->late_rc = -100;
	return NULL;
}

/* What a plain thread (no loop at all) gets from the fiber calls. */
static void *outside_thread(void *arg)
{
	struct outside *o = arg;
	uint64_t t0;
	uint8_t b = 1;
	pthread_t th;

	o->self_null = fm_fiber_self() == NULL;
	o->loop_null = fm_loop_current() == NULL;
	fm_fiber_park();                    /* no fiber: returns */
	t0 = fm_mono_ns();
	fm_fiber_sleep_ns(20000000u);
	o->slept_enough = fm_mono_ns() - t0 >= 20000000u;
	t0 = fm_mono_ns();
	o->poll_to_rc = fm_fiber_poll_timeout(o->fds[0], POLLIN, 15000000u);
	o->poll_to_long_enough = fm_mono_ns() - t0 >= 15000000u;
	if (write(o->fds[1], &b, 1) != 1)
		return NULL;
	o->poll_rc = fm_fiber_poll(o->fds[0], POLLIN);
	o->poll_ready_rc = fm_fiber_poll_timeout(o->fds[0], POLLIN, 5000000000ull);
	if (drain(o->fds[0]))
		return NULL;
	if (pthread_create(&th, NULL, late_writer, o))
		return NULL;
	if (o->late_rc == 0)
		o->late_rc = fm_fiber_poll(o->fds[0], POLLIN);
	pthread_join(th, NULL);
	drain(o->fds[0]);
	return NULL;
}

static int t_outside_fibers(void)
{
	struct outside o = { 0 };
	pthread_t th;
	struct rig r;
	uint64_t t0;

	CHECK(pipe(o.fds) == 0);
	CHECK(pthread_create(&th, NULL, outside_thread, &o) == 0);
	pthread_join(th, NULL);
	CHECK(o.self_null && o.loop_null);
	CHECK(o.slept_enough);
	CHECK(o.poll_to_rc == 0 && o.poll_to_long_enough);
	CHECK(o.poll_rc > 0 && (o.poll_rc & POLLIN));
	CHECK(o.poll_ready_rc > 0 && (o.poll_ready_rc & POLLIN));
	CHECK(o.late_rc > 0 && (o.late_rc & POLLIN));
	/* The loop's own thread, between turns, is no fiber either. */
	CHECK(rig_open(&r, 1) == 0);
	CHECK(fm_loop_current() == r.l && fm_fiber_self() == NULL);
	t0 = fm_mono_ns();
	fm_fiber_sleep_ns(10000000u);
	CHECK(fm_mono_ns() - t0 >= 10000000u);
	CHECK(fm_fiber_poll_timeout(o.fds[0], POLLIN, 1000000u) == 0);
	CHECK(rig_close(&r) == 0);
	close(o.fds[0]);
	close(o.fds[1]);
	return 0;
}

/* ---- a loop moves to another thread ------------------------------------------ */

struct mover {
	struct fm_loop *l;
	struct fm_fiber *first, *second;
	int ran;
	int current_ok;
	int failed;
};

static void mover_fn(void *arg)
{
	struct mover *m = arg;

	if (!m->first)
		m->first = fm_fiber_self();
	else
		m->second = fm_fiber_self();
	fm_fiber_sleep_ns(1000000u);
	m->ran++;
}

static void *mover_thread(void *arg)
{
	struct mover *m = arg;
	int want = m->ran + 1;
	struct rig r;

	rig_init(&r, m->l);
	if (fm_loop_attach(m->l) < 0 || fm_loop_spawn(m->l, mover_fn, m) < 0) {
		m->failed++;
		return NULL;
	}
	m->current_ok += fm_loop_current() == m->l;
	if (run_until(&r, all_done, m->l) || m->ran != want)
		m->failed++;
	fm_loop_detach(m->l);
	m->current_ok += fm_loop_current() == NULL;
	return NULL;
}

static int t_loop_moves_thread(void)
{
	struct fm_loop_params p = { .fibers = 1 };
	struct mover m = { 0 };
	pthread_t th;

	CHECK(fm_loop_create(&p, &m.l) == 0);
	for (int i = 0; i < 2; i++) {
		CHECK(pthread_create(&th, NULL, mover_thread, &m) == 0);
		pthread_join(th, NULL);
	}
	CHECK(m.failed == 0);
	CHECK(m.ran == 2 && m.current_ok == 4);
	CHECK(m.first && m.second == m.first);   /* one fiber, reused */
	fm_loop_destroy(m.l);
	return 0;
}

static const struct tap_case cases[] = {
	{ "spawn: runs at the next turn, in a fiber of this loop, to completion", t_spawn_runs },
	{ "spawn: EAGAIN when every fiber is busy; a finished fiber is reused", t_spawn_full_and_reuse },
	{ "park/wake between two fibers of one loop", t_park_wake_local },
	{ "a stale wake returns park early; the condition loop still holds", t_stale_wake },
	{ "wake from another thread: 200 round trips, none needs the guard", t_wake_from_thread },
	{ "wakes of 8 fibers from another thread, back to back, all arrive", t_wake_batch_from_thread },
	{ "sleep lasts at least its time; other fibers run meanwhile", t_sleep },
	{ "poll: a pipe written by a fiber, an eventfd by a thread, a bad fd", t_poll },
	{ "poll_timeout: 0 on timeout, revents when ready, reused 120 times", t_poll_timeout },
	{ "fm_mutex: a holder parks, 3 waiters of its loop park and get it in turn", t_mutex_fibers },
	{ "fm_mutex between a plain thread and a fiber, both ways", t_mutex_thread },
	{ "fm_rwlock: readers together, the writer alone and before later readers", t_rwlock },
	{ "hooks run once at the start of every turn and can be removed", t_hooks },
	{ "outside fibers: no self, sleep and poll block the thread", t_outside_fibers },
	{ "a detached loop attaches again in another thread", t_loop_moves_thread },
};

int main(void)
{
	log_init("test_fiber", getenv("FM_TEST_VERBOSE") ? LOG_LVL_DEBUG : LOG_LVL_ERR);
	/* The rig bounds every wait of the loop, but a fiber that blocks its
	 * thread outright (a broken sleep or lock) is beyond it: the whole
	 * file gets ten minutes, then SIGALRM ends it as a failure. */
	alarm(600);
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
