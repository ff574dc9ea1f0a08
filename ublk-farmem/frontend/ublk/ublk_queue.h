/* ublk_queue.h — one ublk hardware queue served by one thread.
 *
 * The thread owns one event loop (fiber.h): its io_uring carries the
 * queue's FETCH_REQ / COMMIT_AND_FETCH_REQ commands, and each fetched
 * tag goes to the store's asynchronous API (store_submit) on one of the
 * queue's `workers` store queues, whose I/O runs as fibers of the same
 * thread with the loop's own memserver connections.  The completion
 * queues the tag's COMMIT_AND_FETCH for the next io_uring_enter: nothing
 * is handed between threads.  Per-tag buffers and the fibers' stacks are
 * allocated before the first fetch: nothing on the I/O path allocates.
 * The thread ends when every tag was aborted by the kernel (STOP_DEV, or
 * the device going away).
 */
#ifndef FARMEM_UBLK_QUEUE_H
#define FARMEM_UBLK_QUEUE_H

#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <liburing.h>

#include "fiber.h"
#include "store/store.h"
#include <linux/ublk_cmd.h>

struct store;

#define UBLK_QUEUE_MAX_WORKERS 64

struct fm_loop;
struct ublk_queue;

/* Fetched tags waiting for a free store queue: each tag is in it at
 * most once, so depth slots never overflow. */
struct ublk_tag_ring {
	uint16_t *tags;
	unsigned head, count, size;
};

/* A tag's command in the ring: its completion finds the queue and tag. */
struct ublk_tag_op {
	struct fm_loop_op op;
	struct ublk_queue *q;
	int tag;
	struct store_aio aio;    /* the tag's request in the store */
	int buf;                 /* user copy: the worker buffer it holds, or -1 */
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
	int workers;             /* store queues q_id * workers + [0, workers):
				  * how many tags the store serves at once */
	sem_t *ready;            /* posted once all FETCHes are submitted (or on error) */
	int user_copy;           /* UBLK_F_USER_COPY: data moves by pread/pwrite */
	/* Private. */
	struct ublksrv_io_desc *descs;
	size_t descs_len;
	uint8_t *bufs;           /* per tag, or per worker in user copy mode */
	size_t bufs_len;
	uint16_t *buf_free;      /* user copy: free buffer indices (workers) */
	unsigned nbuf_free;
	struct fm_loop *loop;
	unsigned inflight;       /* commands the kernel holds */
	unsigned busy;           /* tags fetched and not yet committed */
	struct ublk_tag_op *ops; /* depth */
	struct ublk_tag_ring todo; /* fetched, waiting for a free store queue */
	pthread_t thread;
	int started;
	int err;                 /* setup failure, reported through ready */
};

/* Map descriptors and allocate buffers and fibers (caller's thread),
 * then start the thread.  Returns 0 or -errno. */
int ublk_queue_start(struct ublk_queue *q);
/* Wait for the thread to end and free what start allocated. */
void ublk_queue_join(struct ublk_queue *q);

#endif
