/* fiber.h — one event loop per thread: an io_uring, a fixed set of
 * fibers (stackful coroutines, stacks allocated up front) and the
 * wake-ups between them.
 *
 * A frontend queue runs everything it does in one thread: its fibers
 * serve requests with plain sequential code (the store's), and where
 * that code would block on a remote reply, a timer or a socket, the
 * fiber parks and the thread goes on with the others.  Nothing is handed
 * to another thread on the I/O path; one io_uring_enter per loop turn
 * both submits what the turn queued and waits for the next completion.
 * (ublksrv's targets do the same with C++ coroutines, one per tag.)
 *
 * Threading: a loop and its fibers belong to the thread that attached
 * it.  fm_fiber_wake() is the one call any thread may make: a wake from
 * another thread (a transport's receiver) goes through the loop's inbox
 * and an eventfd read that the ring always has armed.
 *
 * Outside a fiber every call here degrades to what a plain thread would
 * do, so code shared with tools and tests can call fm_fiber_self() and
 * choose: a fiber parks, a thread waits on its condition variable.
 */
#ifndef FARMEM_FIBER_H
#define FARMEM_FIBER_H

#include <liburing.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct fm_loop;
struct fm_fiber;

/* Whoever queues an SQE sets user_data to one of these; its CQE calls
 * cb in the loop's thread. */
struct fm_loop_op {
	void (*cb)(struct fm_loop_op *op, int res, unsigned flags);
};

struct fm_loop_params {
	unsigned fibers;        /* fibers allocated up front */
	size_t stack_size;      /* per fiber; 0: a default that fits the store */
	unsigned sq_entries;    /* SQEs the owner queues itself (ublk commands),
				 * on top of what the fibers need */
	int plain_ring;         /* no SINGLE_ISSUER/DEFER_TASKRUN/COOP_TASKRUN */
};

/* Allocates everything (stacks, bookkeeping, the inbox eventfd).
 * 0 or -errno. */
int fm_loop_create(const struct fm_loop_params *p, struct fm_loop **out);
void fm_loop_destroy(struct fm_loop *l);
/* Sets up the ring in the calling thread, which from then on owns the
 * loop (SINGLE_ISSUER/DEFER_TASKRUN where the kernel has them). */
int fm_loop_attach(struct fm_loop *l);
/* Closes the ring; every fiber must have finished.  The loop may be
 * attached again, by another thread. */
void fm_loop_detach(struct fm_loop *l);
struct io_uring *fm_loop_ring(struct fm_loop *l);
/* A free SQE, submitting what is queued when the ring is full. */
struct io_uring_sqe *fm_loop_sqe(struct fm_loop *l);
/* A hook run at the start of every turn, before the loop submits and
 * waits: a connection sends the frames its fibers queued during the last
 * turn in one system call.  The hook must not park. */
struct fm_loop_hook {
	void (*fn)(struct fm_loop_hook *h);
	struct fm_loop_hook *next;
};

void fm_loop_hook_add(struct fm_loop *l, struct fm_loop_hook *h);
void fm_loop_hook_del(struct fm_loop *l, struct fm_loop_hook *h);

/* Start fn(arg) on a free fiber; it runs at the next turn.  -EAGAIN when
 * every fiber is busy. */
int fm_loop_spawn(struct fm_loop *l, void (*fn)(void *), void *arg);
/* Fibers started and not yet returned. */
unsigned fm_loop_busy(const struct fm_loop *l);
/* One turn: submit what is queued and, unless a fiber is ready to run,
 * wait for at least one completion; dispatch every completion, take in
 * wake-ups from other threads, run every ready fiber until it parks.
 * 0 or -errno from io_uring_enter (not -EINTR). */
int fm_loop_turn(struct fm_loop *l);
/* The loop the calling thread owns, or NULL. */
struct fm_loop *fm_loop_current(void);

/* The running fiber, or NULL in a plain thread (or the loop itself). */
struct fm_fiber *fm_fiber_self(void);
/* Give the thread back until fm_fiber_wake(); returns at once if a wake
 * came since the last park.  Callers re-check their condition: a wake
 * may be stale. */
void fm_fiber_park(void);
void fm_fiber_wake(struct fm_fiber *f);
/* Sleep without holding the thread (a fiber) or with nanosleep (else). */
void fm_fiber_sleep_ns(uint64_t ns);
/* Wait until fd has one of events (POLLIN...): the revents, or -errno. */
int fm_fiber_poll(int fd, short events);
/* The same with a bound: 0 when timeout_ns passed first. */
int fm_fiber_poll_timeout(int fd, short events, uint64_t timeout_ns);

/* A mutex that fibers may hold across a park.  Contended in a fiber, it
 * parks (same thread: the holder wakes it) or sleeps briefly (holder in
 * another thread); outside fibers it is a plain mutex.  Never held by a
 * fiber of one thread and waited for by a plain wait in the same one. */
struct fm_mutex {
	pthread_mutex_t m;
	struct fm_loop *owner;         /* atomic: the holder's loop, NULL for a
					* plain thread */
	struct fm_fiber *waiters;      /* parked fibers of the owner's loop;
					* touched only in that loop's thread
					* while one of its fibers holds m */
	int one_loop;                  /* fm_mutex_init_one_loop() */
};

void fm_mutex_init(struct fm_mutex *m);
/* A mutex only fibers of one loop ever take: an unlock wakes one waiter,
 * not all (with W fibers queued on it, waking all costs 2W switches per
 * unlock, nearly all of them to park again).  Waking all is what keeps a
 * shared mutex's waiters from outliving their loop's hold on it. */
void fm_mutex_init_one_loop(struct fm_mutex *m);
void fm_mutex_destroy(struct fm_mutex *m);
void fm_mutex_lock(struct fm_mutex *m);
void fm_mutex_unlock(struct fm_mutex *m);
/* 0, or -EBUSY without waiting. */
int fm_mutex_trylock(struct fm_mutex *m);

/* A writer-preferring reader/writer lock fibers may hold across a park:
 * a waiting fiber sleeps briefly between attempts (contention is rare:
 * only unaligned NBD writes take it for writing), a thread waits on a
 * condition variable. */
struct fm_rwlock {
	pthread_mutex_t m;
	pthread_cond_t cv;
	unsigned readers;
	unsigned writers_waiting;
	int writer;
};

void fm_rwlock_init(struct fm_rwlock *l);
void fm_rwlock_destroy(struct fm_rwlock *l);
void fm_rwlock_rdlock(struct fm_rwlock *l);
void fm_rwlock_wrlock(struct fm_rwlock *l);
void fm_rwlock_unlock(struct fm_rwlock *l);

#endif
