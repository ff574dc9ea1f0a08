/* fiber.c — per-thread event loop with fibers; see fiber.h.
 *
 * Fibers are stackful coroutines whose stacks (with a guard page) are
 * mapped at create time; a fiber that finishes its function goes back to
 * the free list and is reused by the next spawn without a new context.
 * Switches are Boost.Context's: ucontext's swapcontext() also saves and
 * restores the signal mask, one rt_sigprocmask system call per switch,
 * which at several switches per request cost more than the request's
 * own socket calls.  Switches are annotated for ASan and TSan and the
 * stacks registered with valgrind, so the sanitizer builds and valgrind
 * follow them.
 */
#include "fiber.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Boost.Context's context switch (libboost-context-dev), linked from its
 * static library: only the assembly objects come in, no C++ runtime.
 * Declared here because its header is C++.  jump_fcontext() suspends the
 * caller and resumes to; when the caller is resumed in turn, fctx is the
 * context that resumed it, now suspended. */
typedef void *fcontext_t;
struct fc_transfer {
	fcontext_t fctx;
	void *data;
};
extern struct fc_transfer jump_fcontext(fcontext_t to, void *data);
extern fcontext_t make_fcontext(void *stack_top, size_t size,
				void (*fn)(struct fc_transfer));

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define FIBER_ASAN 1
#define FIBER_STACK_DEFAULT (1024u << 10)   /* ASan's redzones grow frames */
#else
#define FIBER_STACK_DEFAULT (256u << 10)
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define FIBER_TSAN 1
#endif
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define FIBER_VALGRIND 1
#endif
#endif

/* Below each stack: more than any one frame, so an overflow faults
 * instead of stepping over the guard into the next fiber's stack. */
#define FIBER_GUARD     (64u << 10)
/* Fresh stacks are filled with this, so destroy can tell how deep each
 * went (and warn when one came close to its end). */
#define STACK_FILL      0xa5

#define MUTEX_SPIN_NS   20000u     /* first sleep when another thread holds it */
#define MUTEX_SPIN_MAX  (1000000u) /* longest sleep between attempts */

enum fiber_state { FIBER_FREE, FIBER_READY, FIBER_RUNNING, FIBER_PARKED };

struct fm_fiber {
	struct fm_loop *loop;
	fcontext_t ctx;               /* where it resumes */
	void *map;                    /* guard page + stack */
	size_t map_len;
	void *stack;
	size_t stack_size;
	void (*fn)(void *);
	void *arg;
	int state;
	int woken;                    /* a wake since the last park */
	struct fm_fiber *next;        /* ready or free list */
	struct fm_fiber *inbox_next;  /* under loop->inbox_lock */
	int in_inbox;                 /* under loop->inbox_lock */
	struct fm_fiber *mutex_next;  /* an fm_mutex's waiters */
	struct fm_mutex *waiting_on;
	struct fm_loop_op timer_op;
	struct __kernel_timespec ts;
	int timer_done;
	struct fm_loop_op poll_op;
	int poll_res;
	int poll_done;
	unsigned vg_id;
	void *asan_fake;
	void *tsan_fiber;
};

struct fm_loop {
	struct io_uring ring;
	int ring_ok;
	unsigned ring_entries;
	fcontext_t main_ctx;          /* where the loop resumes (fibers switch
				       * only to it) */
	const void *main_bottom;      /* the attached thread's stack (ASan) */
	size_t main_size;
	void *tsan_main;
	struct fm_fiber *fibers;
	unsigned nfibers;
	struct fm_fiber *free_list;
	struct fm_fiber *ready_head, *ready_tail;
	struct fm_fiber *current;
	unsigned busy;
	/* Wake-ups from other threads. */
	pthread_mutex_t inbox_lock;
	struct fm_fiber *inbox;
	int efd;
	uint64_t efd_val;
	struct fm_loop_op efd_op;
	int efd_armed;
	int plain_ring;
	struct fm_loop_hook *hooks;
};

static __thread struct fm_loop *tl_loop;

struct fm_loop *fm_loop_current(void)
{
	return tl_loop;
}

struct fm_fiber *fm_fiber_self(void)
{
	return tl_loop ? tl_loop->current : NULL;
}

unsigned fm_loop_busy(const struct fm_loop *l)
{
	return l->busy;
}

struct io_uring *fm_loop_ring(struct fm_loop *l)
{
	return &l->ring;
}

static void ready_push(struct fm_loop *l, struct fm_fiber *f)
{
	f->next = NULL;
	if (l->ready_tail)
		l->ready_tail->next = f;
	else
		l->ready_head = f;
	l->ready_tail = f;
}

static struct fm_fiber *ready_pop(struct fm_loop *l)
{
	struct fm_fiber *f = l->ready_head;

	if (f) {
		l->ready_head = f->next;
		if (!l->ready_head)
			l->ready_tail = NULL;
		f->next = NULL;
	}
	return f;
}

/* ---- switching ---------------------------------------------------- */

/* Suspend the running context and resume to, whose stack is
 * [bottom, bottom + size) (sanitizers need to know).  Returns, once this
 * context is resumed, the context that resumed it.  *fake is this
 * context's ASan fake-stack handle; the stack we came back from is
 * stored in *from_bottom and *from_size if set. */
static fcontext_t ctx_switch(fcontext_t to, const void *bottom, size_t size,
			     void *tsan_to, void **fake, const void **from_bottom,
			     size_t *from_size)
{
	struct fc_transfer t;

#ifdef FIBER_ASAN
	__sanitizer_start_switch_fiber(fake, bottom, size);
#else
	(void)bottom;
	(void)size;
	(void)fake;
	(void)from_bottom;
	(void)from_size;
#endif
#ifdef FIBER_TSAN
	__tsan_switch_to_fiber(tsan_to, 0);
#else
	(void)tsan_to;
#endif
	t = jump_fcontext(to, NULL);
#ifdef FIBER_ASAN
	__sanitizer_finish_switch_fiber(*fake, from_bottom, from_size);
#endif
	return t.fctx;
}

/* Only the running fiber switches back to the loop, so what resumes the
 * loop is f, suspended. */
static void switch_into(struct fm_loop *l, struct fm_fiber *f)
{
	void *fake = NULL;

	l->current = f;
	f->state = FIBER_RUNNING;
	f->ctx = ctx_switch(f->ctx, f->stack, f->stack_size, f->tsan_fiber, &fake,
			    NULL, NULL);
	l->current = NULL;
}

/* From a fiber back to its loop; returns when the loop resumes it (maybe
 * attached by another thread since: its stack is learnt again). */
static void switch_out(struct fm_fiber *f)
{
	struct fm_loop *l = f->loop;

	l->main_ctx = ctx_switch(l->main_ctx, l->main_bottom, l->main_size, l->tsan_main,
				 &f->asan_fake, &l->main_bottom, &l->main_size);
}

/* Every fiber's body: run what it was spawned with, go back to the
 * free list, wait for the next spawn. */
static void fiber_main(struct fc_transfer from)
{
	struct fm_fiber *f = tl_loop->current;
	struct fm_loop *l = f->loop;

	l->main_ctx = from.fctx;
#ifdef FIBER_ASAN
	__sanitizer_finish_switch_fiber(NULL, &l->main_bottom, &l->main_size);
#endif
	for (;;) {
		f->fn(f->arg);
		f->fn = NULL;
		f->state = FIBER_FREE;
		f->next = l->free_list;
		l->free_list = f;
		l->busy--;
		switch_out(f);
	}
}

static void run_ready(struct fm_loop *l)
{
	struct fm_fiber *f;

	while ((f = ready_pop(l)))
		switch_into(l, f);
}

/* ---- wake-ups ----------------------------------------------------- */

static void wake_local(struct fm_loop *l, struct fm_fiber *f)
{
	f->woken = 1;
	if (f->state == FIBER_PARKED) {
		f->state = FIBER_READY;
		ready_push(l, f);
	}
}

void fm_fiber_wake(struct fm_fiber *f)
{
	struct fm_loop *l = f->loop;
	uint64_t one = 1;
	int was_empty;

	if (tl_loop == l) {
		wake_local(l, f);
		return;
	}
	pthread_mutex_lock(&l->inbox_lock);
	was_empty = l->inbox == NULL;
	if (!f->in_inbox) {
		f->in_inbox = 1;
		f->inbox_next = l->inbox;
		__atomic_store_n(&l->inbox, f, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&l->inbox_lock);
	/* One write per batch: the loop empties the whole inbox each turn. */
	if (was_empty && write(l->efd, &one, sizeof(one)) < 0)
		log_err("fiber: waking loop: %s", strerror(errno));
}

static void inbox_drain(struct fm_loop *l)
{
	struct fm_fiber *f;

	if (!__atomic_load_n(&l->inbox, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&l->inbox_lock);
	f = l->inbox;
	l->inbox = NULL;
	while (f) {
		struct fm_fiber *next = f->inbox_next;

		f->in_inbox = 0;
		f->inbox_next = NULL;
		wake_local(l, f);
		f = next;
	}
	pthread_mutex_unlock(&l->inbox_lock);
}

void fm_fiber_park(void)
{
	struct fm_fiber *f = fm_fiber_self();

	if (!f)
		return;
	if (!f->woken) {
		f->state = FIBER_PARKED;
		switch_out(f);
	}
	f->woken = 0;
}

/* ---- ring ----------------------------------------------------------- */

struct io_uring_sqe *fm_loop_sqe(struct fm_loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	if (!sqe) {
		int rc = io_uring_submit(&l->ring);

		if (rc < 0)
			log_err("fiber: io_uring_submit with a full ring: %s", strerror(-rc));
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

static void efd_done(struct fm_loop_op *op, int res, unsigned flags)
{
	struct fm_loop *l = (struct fm_loop *)((char *)op - offsetof(struct fm_loop, efd_op));

	(void)flags;
	l->efd_armed = 0;
	if (res < 0 && res != -ECANCELED)
		log_err("fiber: inbox eventfd read: %s", strerror(-res));
}

static void efd_arm(struct fm_loop *l)
{
	struct io_uring_sqe *sqe = fm_loop_sqe(l);

	if (!sqe)
		return;
	io_uring_prep_read(sqe, l->efd, &l->efd_val, sizeof(l->efd_val), 0);
	io_uring_sqe_set_data(sqe, &l->efd_op);
	l->efd_armed = 1;
}

/* Submit, and wait for a completion unless a fiber is ready.  Under
 * valgrind (3.19) a thread blocked in io_uring_enter keeps valgrind's
 * lock and no other thread runs: wait in short slices and yield. */
static int loop_wait(struct fm_loop *l)
{
	unsigned want = l->ready_head ? 0 : 1;
#ifdef FIBER_VALGRIND
	if (RUNNING_ON_VALGRIND && want) {
		struct __kernel_timespec slice = { .tv_sec = 0, .tv_nsec = 1000000 };
		struct io_uring_cqe *cqe;
		int rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, want, &slice, NULL);

		sched_yield();
		return rc == -ETIME ? 0 : rc;
	}
#endif
	return io_uring_submit_and_wait(&l->ring, want);
}

int fm_loop_turn(struct fm_loop *l)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int rc;

	for (struct fm_loop_hook *h = l->hooks; h; h = h->next)
		h->fn(h);
	if (!l->efd_armed)
		efd_arm(l);
	rc = loop_wait(l);
	if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ETIME)
		return rc;
	io_uring_for_each_cqe(&l->ring, head, cqe) {
		struct fm_loop_op *op = io_uring_cqe_get_data(cqe);

		n++;
		if (op)
			op->cb(op, cqe->res, cqe->flags);
	}
	io_uring_cq_advance(&l->ring, n);
	inbox_drain(l);
	run_ready(l);
	return 0;
}

void fm_loop_hook_add(struct fm_loop *l, struct fm_loop_hook *h)
{
	h->next = l->hooks;
	l->hooks = h;
}

void fm_loop_hook_del(struct fm_loop *l, struct fm_loop_hook *h)
{
	for (struct fm_loop_hook **p = &l->hooks; *p; p = &(*p)->next)
		if (*p == h) {
			*p = h->next;
			return;
		}
}

/* ---- timers and polls ------------------------------------------------ */

static void timer_done(struct fm_loop_op *op, int res, unsigned flags)
{
	struct fm_fiber *f = (struct fm_fiber *)((char *)op - offsetof(struct fm_fiber, timer_op));

	(void)res;
	(void)flags;
	f->timer_done = 1;
	wake_local(f->loop, f);
}

void fm_fiber_sleep_ns(uint64_t ns)
{
	struct fm_fiber *f = fm_fiber_self();
	struct io_uring_sqe *sqe = f ? fm_loop_sqe(f->loop) : NULL;

	if (!sqe) {
		struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		return;
	}
	f->ts.tv_sec = (long long)(ns / 1000000000u);
	f->ts.tv_nsec = (long long)(ns % 1000000000u);
	f->timer_done = 0;
	io_uring_prep_timeout(sqe, &f->ts, 0, 0);
	io_uring_sqe_set_data(sqe, &f->timer_op);
	while (!f->timer_done)
		fm_fiber_park();
}

static void poll_done(struct fm_loop_op *op, int res, unsigned flags)
{
	struct fm_fiber *f = (struct fm_fiber *)((char *)op - offsetof(struct fm_fiber, poll_op));

	(void)flags;
	f->poll_res = res;
	f->poll_done = 1;
	wake_local(f->loop, f);
}

int fm_fiber_poll(int fd, short events)
{
	struct fm_fiber *f = fm_fiber_self();
	struct io_uring_sqe *sqe = f ? fm_loop_sqe(f->loop) : NULL;

	if (!sqe) {
		struct pollfd p = { .fd = fd, .events = events };

		while (poll(&p, 1, -1) < 0)
			if (errno != EINTR)
				return -errno;
		return p.revents;
	}
	f->poll_done = 0;
	io_uring_prep_poll_add(sqe, fd, (unsigned)events);
	io_uring_sqe_set_data(sqe, &f->poll_op);
	while (!f->poll_done)
		fm_fiber_park();
	return f->poll_res;
}

int fm_fiber_poll_timeout(int fd, short events, uint64_t timeout_ns)
{
	struct fm_fiber *f = fm_fiber_self();
	struct io_uring *ring = f ? &f->loop->ring : NULL;
	struct io_uring_sqe *poll_sqe, *tmo_sqe;

	if (!f) {
		struct pollfd p = { .fd = fd, .events = events };
		int k = poll(&p, 1, (int)((timeout_ns + 999999u) / 1000000u));

		if (k < 0)
			return errno == EINTR ? 0 : -errno;
		return k ? p.revents : 0;
	}
	/* The poll and its linked timeout go in one submission: make room
	 * for both before taking either. */
	if (io_uring_sq_space_left(ring) < 2)
		io_uring_submit(ring);
	if (io_uring_sq_space_left(ring) < 2)
		return -EBUSY;
	poll_sqe = io_uring_get_sqe(ring);
	tmo_sqe = io_uring_get_sqe(ring);
	f->ts.tv_sec = (long long)(timeout_ns / 1000000000u);
	f->ts.tv_nsec = (long long)(timeout_ns % 1000000000u);
	f->poll_done = f->timer_done = 0;
	io_uring_prep_poll_add(poll_sqe, fd, (unsigned)events);
	poll_sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data(poll_sqe, &f->poll_op);
	io_uring_prep_link_timeout(tmo_sqe, &f->ts, 0);
	io_uring_sqe_set_data(tmo_sqe, &f->timer_op);
	/* Both always complete (one of them with -ECANCELED): wait for both
	 * before the ops may be reused. */
	while (!f->poll_done || !f->timer_done)
		fm_fiber_park();
	return f->poll_res == -ECANCELED ? 0 : f->poll_res;
}

/* ---- life cycle ------------------------------------------------------ */

static int fiber_init(struct fm_loop *l, struct fm_fiber *f, size_t stack_size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	f->loop = l;
	f->stack_size = (stack_size + page - 1) / page * page;
	f->map_len = f->stack_size + FIBER_GUARD;
	f->map = mmap(NULL, f->map_len, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
	if (f->map == MAP_FAILED) {
		f->map = NULL;
		return -errno;
	}
	/* A guard below the stack: an overflow faults, it never scribbles
	 * over the neighbour's stack. */
	if (mprotect(f->map, FIBER_GUARD, PROT_NONE) < 0)
		return -errno;
	f->stack = (char *)f->map + FIBER_GUARD;
#ifdef FIBER_ASAN
	/* The mapping may reuse a dead fiber's stack, whose frames ASan
	 * still has poisoned (nothing intercepts a jump_fcontext switch to
	 * clear them, as it does for swapcontext). */
	ASAN_UNPOISON_MEMORY_REGION(f->stack, f->stack_size);
#endif
	memset(f->stack, STACK_FILL, f->stack_size);
#ifdef FIBER_VALGRIND
	f->vg_id = VALGRIND_STACK_REGISTER(f->stack, (char *)f->stack + f->stack_size);
#endif
#ifdef FIBER_TSAN
	f->tsan_fiber = __tsan_create_fiber(0);
#endif
	f->ctx = make_fcontext((char *)f->stack + f->stack_size, f->stack_size, fiber_main);
	f->timer_op.cb = timer_done;
	f->poll_op.cb = poll_done;
	f->state = FIBER_FREE;
	f->next = l->free_list;
	l->free_list = f;
	return 0;
}

/* Bytes of the stack ever written (the fill pattern is gone there).
 * Read past ASan: a parked fiber's live frames carry redzones. */
__attribute__((no_sanitize_address))
static size_t stack_used(const struct fm_fiber *f)
{
	const unsigned char *p = f->stack;
	size_t i = 0;

#ifdef FIBER_VALGRIND
	if (RUNNING_ON_VALGRIND)
		return 0;   /* memcheck marks what lies below a stack's SP unreadable */
#endif
	while (i < f->stack_size && p[i] == STACK_FILL)
		i++;
	return f->stack_size - i;
}

static void fiber_fini(struct fm_fiber *f)
{
	size_t used;

	if (!f->map)
		return;
	used = stack_used(f);
	if (used > f->stack_size / 4 * 3)
		log_warn("fiber: a stack came within %zu of its %zu bytes", f->stack_size - used,
			 f->stack_size);
#ifdef FIBER_VALGRIND
	VALGRIND_STACK_DEREGISTER(f->vg_id);
#endif
#ifdef FIBER_TSAN
	if (f->tsan_fiber)
		__tsan_destroy_fiber(f->tsan_fiber);
#endif
#ifdef FIBER_ASAN
	ASAN_UNPOISON_MEMORY_REGION(f->stack, f->stack_size);
#endif
	munmap(f->map, f->map_len);
	f->map = NULL;
}

int fm_loop_create(const struct fm_loop_params *p, struct fm_loop **out)
{
	size_t stack = p->stack_size ? p->stack_size : FIBER_STACK_DEFAULT;
	struct fm_loop *l;
	int rc = 0;

	*out = NULL;
	if (!p->fibers)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	pthread_mutex_init(&l->inbox_lock, NULL);
	l->efd_op.cb = efd_done;
	l->efd = eventfd(0, EFD_CLOEXEC);
	l->nfibers = p->fibers;
	l->plain_ring = p->plain_ring;
	l->fibers = calloc(p->fibers, sizeof(*l->fibers));
	if (l->efd < 0)
		rc = -errno;
	else if (!l->fibers)
		rc = -ENOMEM;
	for (unsigned i = 0; rc == 0 && i < p->fibers; i++)
		rc = fiber_init(l, &l->fibers[i], stack);
	/* Each fiber may have one timer or poll queued, plus the inbox. */
	l->ring_entries = p->sq_entries + 2 * p->fibers + 4;
	if (rc < 0) {
		fm_loop_destroy(l);
		return rc;
	}
	*out = l;
	return 0;
}

void fm_loop_destroy(struct fm_loop *l)
{
	if (!l)
		return;
	if (l->ring_ok)
		fm_loop_detach(l);
	for (unsigned i = 0; l->fibers && i < l->nfibers; i++)
		fiber_fini(&l->fibers[i]);
	free(l->fibers);
	if (l->efd >= 0)
		close(l->efd);
	pthread_mutex_destroy(&l->inbox_lock);
	free(l);
}

int fm_loop_attach(struct fm_loop *l)
{
	/* Only this thread submits, and completions run when it asks for
	 * them (at the wait of each turn), not as interrupting task work. */
	unsigned flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
			 IORING_SETUP_DEFER_TASKRUN;
	struct io_uring_params ip;
	int rc;

	memset(&ip, 0, sizeof(ip));
	ip.flags = l->plain_ring ? 0 : flags;
	rc = io_uring_queue_init_params(l->ring_entries, &l->ring, &ip);
	if (rc == -EINVAL) {
		/* A kernel before 6.1: plain ring. */
		memset(&ip, 0, sizeof(ip));
		rc = io_uring_queue_init_params(l->ring_entries, &l->ring, &ip);
	}
	if (rc < 0)
		return rc;
	l->ring_ok = 1;
	l->efd_armed = 0;
	tl_loop = l;
#ifdef FIBER_TSAN
	l->tsan_main = __tsan_get_current_fiber();
#endif
	return 0;
}

void fm_loop_detach(struct fm_loop *l)
{
	if (l->busy)
		log_err("fiber: loop detached with %u fibers still running", l->busy);
	if (l->ring_ok)
		io_uring_queue_exit(&l->ring);
	l->ring_ok = 0;
	if (tl_loop == l)
		tl_loop = NULL;
}

int fm_loop_spawn(struct fm_loop *l, void (*fn)(void *), void *arg)
{
	struct fm_fiber *f = l->free_list;

	if (!f)
		return -EAGAIN;
	l->free_list = f->next;
	f->fn = fn;
	f->arg = arg;
	f->woken = 0;
	f->state = FIBER_READY;
	ready_push(l, f);
	l->busy++;
	return 0;
}

/* ---- fm_mutex -------------------------------------------------------- */

void fm_mutex_init(struct fm_mutex *m)
{
	pthread_mutex_init(&m->m, NULL);
	m->owner = NULL;
	m->waiters = NULL;
}

void fm_mutex_init_one_loop(struct fm_mutex *m)
{
	fm_mutex_init(m);
	m->one_loop = 1;
}

/* f got m while still queued on it (a stale wake let it try again):
 * take it off the list, whose links it would otherwise reuse. */
static void waiter_unlink(struct fm_mutex *m, struct fm_fiber *f)
{
	for (struct fm_fiber **p = &m->waiters; *p; p = &(*p)->mutex_next)
		if (*p == f) {
			*p = f->mutex_next;
			break;
		}
	f->mutex_next = NULL;
	f->waiting_on = NULL;
}

void fm_mutex_destroy(struct fm_mutex *m)
{
	pthread_mutex_destroy(&m->m);
}

void fm_mutex_lock(struct fm_mutex *m)
{
	struct fm_fiber *f = fm_fiber_self();
	uint64_t sleep_ns = MUTEX_SPIN_NS;

	if (!f) {
		pthread_mutex_lock(&m->m);
		return;
	}
	while (pthread_mutex_trylock(&m->m) != 0) {
		if (__atomic_load_n(&m->owner, __ATOMIC_ACQUIRE) == f->loop) {
			/* Held by a fiber of this very thread, which is parked:
			 * its unlock wakes us. */
			if (f->waiting_on != m) {
				f->waiting_on = m;
				f->mutex_next = m->waiters;
				m->waiters = f;
			}
			fm_fiber_park();
			continue;
		}
		/* Held by another thread: it makes progress on its own. */
		fm_fiber_sleep_ns(sleep_ns);
		if (sleep_ns < MUTEX_SPIN_MAX)
			sleep_ns *= 2;
	}
	__atomic_store_n(&m->owner, f->loop, __ATOMIC_RELEASE);
	if (f->waiting_on == m)
		waiter_unlink(m, f);
}

void fm_mutex_unlock(struct fm_mutex *m)
{
	struct fm_fiber *w = NULL;

	if (__atomic_load_n(&m->owner, __ATOMIC_RELAXED)) {
		w = m->waiters;
		if (m->one_loop && w) {
			m->waiters = w->mutex_next;
			w->mutex_next = NULL;
		} else {
			m->waiters = NULL;
		}
		__atomic_store_n(&m->owner, NULL, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&m->m);
	while (w) {
		struct fm_fiber *next = w->mutex_next;

		w->mutex_next = NULL;
		w->waiting_on = NULL;
		wake_local(w->loop, w);
		w = next;
	}
}

int fm_mutex_trylock(struct fm_mutex *m)
{
	struct fm_fiber *f = fm_fiber_self();

	if (pthread_mutex_trylock(&m->m) != 0)
		return -EBUSY;
	if (f)
		__atomic_store_n(&m->owner, f->loop, __ATOMIC_RELEASE);
	return 0;
}

/* ---- fm_rwlock ------------------------------------------------------- */

void fm_rwlock_init(struct fm_rwlock *l)
{
	pthread_mutex_init(&l->m, NULL);
	pthread_cond_init(&l->cv, NULL);
	l->readers = l->writers_waiting = 0;
	l->writer = 0;
}

void fm_rwlock_destroy(struct fm_rwlock *l)
{
	pthread_mutex_destroy(&l->m);
	pthread_cond_destroy(&l->cv);
}

/* Wait, with l->m held, until blocked() is false. */
static void rwlock_wait(struct fm_rwlock *l, int (*blocked)(const struct fm_rwlock *))
{
	uint64_t sleep_ns = MUTEX_SPIN_NS;

	while (blocked(l)) {
		if (!fm_fiber_self()) {
			pthread_cond_wait(&l->cv, &l->m);
			continue;
		}
		pthread_mutex_unlock(&l->m);
		fm_fiber_sleep_ns(sleep_ns);
		if (sleep_ns < MUTEX_SPIN_MAX)
			sleep_ns *= 2;
		pthread_mutex_lock(&l->m);
	}
}

static int reader_blocked(const struct fm_rwlock *l)
{
	return l->writer || l->writers_waiting;
}

static int writer_blocked(const struct fm_rwlock *l)
{
	return l->writer || l->readers;
}

void fm_rwlock_rdlock(struct fm_rwlock *l)
{
	pthread_mutex_lock(&l->m);
	rwlock_wait(l, reader_blocked);
	l->readers++;
	pthread_mutex_unlock(&l->m);
}

void fm_rwlock_wrlock(struct fm_rwlock *l)
{
	pthread_mutex_lock(&l->m);
	l->writers_waiting++;
	rwlock_wait(l, writer_blocked);
	l->writers_waiting--;
	l->writer = 1;
	pthread_mutex_unlock(&l->m);
}

void fm_rwlock_unlock(struct fm_rwlock *l)
{
	pthread_mutex_lock(&l->m);
	if (l->writer)
		l->writer = 0;
	else if (l->readers)
		l->readers--;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->m);
}
