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

struct ublk_queue {
	/* Set before ublk_queue_start(). */
	uint32_t dev_id;
	int q_id;
	int depth;
	uint32_t max_io;
	int cdev_fd;
	int ioctl_encode;
	struct store *store;
	sem_t *ready;            /* posted once all FETCHes are submitted (or on error) */
	/* Private. */
	struct ublksrv_io_desc *descs;
	size_t descs_len;
	uint8_t *bufs;
	size_t bufs_len;
	struct io_uring ring;
	int ring_ok;
	unsigned inflight;       /* commands the kernel holds */
	pthread_t thread;
	int started;
	int err;                 /* setup failure, reported through ready */
};

/* Map descriptors and allocate buffers (caller's thread), then start the
 * thread.  Returns 0 or -errno. */
int ublk_queue_start(struct ublk_queue *q);
/* Wait for the thread to end and free what start allocated. */
void ublk_queue_join(struct ublk_queue *q);

#endif
