/* ublk_queue.h — one ublk hardware queue served by one thread.
 *
 * The thread owns an io_uring, maps the queue's I/O descriptors from
 * /dev/ublkcN, sends FETCH_REQ for every tag, then loops on
 * COMMIT_AND_FETCH_REQ, calling the store with its own queue index.
 * Per-tag buffers are allocated before the first fetch: nothing on the
 * I/O path allocates.  The thread ends when every tag was aborted by the
 * kernel (STOP_DEV, or the device going away).
 */
#ifndef FARMEM_UBLK_QUEUE_H
#define FARMEM_UBLK_QUEUE_H

#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <liburing.h>
#include <linux/ublk_cmd.h>

struct store;

#define UBLK_QUEUE_MAX_WORKERS 16

/* Tags handed between the queue thread and its workers: each tag is in
 * at most one ring at a time, so depth slots never overflow. */
struct ublk_tag_ring {
	uint16_t *tags;
	unsigned head, count, size;
};

struct ublk_queue {
	/* Set before ublk_queue_start(). */
	uint32_t dev_id;
	int q_id;
	int depth;
	uint32_t max_io;
	int cdev_fd;
	int ioctl_encode;
	struct store *store;
	int workers;             /* 1: serve in the queue thread; else worker
				  * threads, worker w using store queue
				  * q_id * workers + w */
	sem_t *ready;            /* posted once all FETCHes are submitted (or on error) */
	/* Private. */
	struct ublksrv_io_desc *descs;
	size_t descs_len;
	uint8_t *bufs;
	size_t bufs_len;
	struct io_uring ring;
	int ring_ok;
	unsigned inflight;       /* commands the kernel holds */
	unsigned busy;           /* tags being served by workers */
	int32_t *results;        /* per tag, from the worker that served it */
	/* Workers: the queue thread pushes fetched tags to `todo`; a worker
	 * serves one and pushes it to `done`, then kicks `efd`, which the
	 * queue thread reads through its ring. */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct ublk_tag_ring todo, done;
	int efd;
	uint64_t efd_val;
	int stopping;
	struct ublk_worker {
		struct ublk_queue *q;
		int idx;
		pthread_t thread;
	} worker[UBLK_QUEUE_MAX_WORKERS];
	int nworkers_started;
	pthread_t thread;
	int started;
	int err;                 /* setup failure, reported through ready */
};

/* Map descriptors and allocate buffers (caller's thread), then start the
 * threads.  Returns 0 or -errno. */
int ublk_queue_start(struct ublk_queue *q);
/* Wait for the thread to end and free what start allocated. */
void ublk_queue_join(struct ublk_queue *q);

#endif
