/* ublk_queue.c — the per-queue I/O thread of the ublk frontend. */
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "store.h"
#include "ublk_ctrl.h"
#include "ublk_queue.h"

/* user_data of the eventfd read through which workers hand tags back;
 * real tags are < UBLK_MAX_QUEUE_DEPTH. */
#define EFD_TAG UINT64_MAX

/* The driver lays the queues' descriptor arrays out at a fixed stride
 * sized for the largest possible depth. */
static off_t descs_offset(int q_id)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t stride = UBLK_MAX_QUEUE_DEPTH * sizeof(struct ublksrv_io_desc);

	stride = (stride + (size_t)page - 1) / (size_t)page * (size_t)page;
	return (off_t)(UBLKSRV_CMD_BUF_OFFSET + (size_t)q_id * stride);
}

static int queue_map(struct ublk_queue *q)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)q->depth * sizeof(struct ublksrv_io_desc);
	void *p;

	q->descs_len = (len + (size_t)page - 1) / (size_t)page * (size_t)page;
	p = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE,
		 q->cdev_fd, descs_offset(q->q_id));
	if (p == MAP_FAILED) {
		int e = errno;
		log_err("ublk %u queue %d: mmap io descriptors: %s", q->dev_id,
			q->q_id, strerror(e));
		return -e;
	}
	q->descs = p;

	q->bufs_len = (size_t)q->depth * q->max_io;
	p = mmap(NULL, q->bufs_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (p == MAP_FAILED) {
		int e = errno;
		log_err("ublk %u queue %d: %zu bytes of I/O buffers: %s",
			q->dev_id, q->q_id, q->bufs_len, strerror(e));
		return -e;
	}
	q->bufs = p;

	q->results = calloc((size_t)q->depth, sizeof(*q->results));
	q->todo.tags = calloc((size_t)q->depth, sizeof(uint16_t));
	q->done.tags = calloc((size_t)q->depth, sizeof(uint16_t));
	if (!q->results || !q->todo.tags || !q->done.tags)
		return -ENOMEM;
	q->todo.size = q->done.size = (unsigned)q->depth;
	if (q->workers > 1) {
		q->efd = eventfd(0, EFD_CLOEXEC);
		if (q->efd < 0)
			return -errno;
	}
	return 0;
}

static void queue_unmap(struct ublk_queue *q)
{
	if (q->descs)
		munmap(q->descs, q->descs_len);
	if (q->bufs)
		munmap(q->bufs, q->bufs_len);
	q->descs = NULL;
	q->bufs = NULL;
	free(q->results);
	free(q->todo.tags);
	free(q->done.tags);
	q->results = NULL;
	q->todo.tags = q->done.tags = NULL;
	if (q->efd >= 0)
		close(q->efd);
	q->efd = -1;
}

static void ring_push(struct ublk_tag_ring *r, int tag)
{
	r->tags[(r->head + r->count++) % r->size] = (uint16_t)tag;
}

static int ring_pop(struct ublk_tag_ring *r)
{
	int tag = r->tags[r->head];

	r->head = (r->head + 1) % r->size;
	r->count--;
	return tag;
}

/* Queue FETCH (first time) or COMMIT_AND_FETCH (with the result of the
 * request just served) for one tag. */
static int queue_prep(struct ublk_queue *q, int tag, uint32_t op, int32_t result)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);
	struct ublksrv_io_cmd cmd = {
		.q_id = (uint16_t)q->q_id,
		.tag = (uint16_t)tag,
		.result = result,
		.addr = (uint64_t)(uintptr_t)(q->bufs + (size_t)tag * q->max_io),
	};

	if (!sqe) {
		/* Cannot happen: the ring has depth entries and each tag has
		 * at most one command outstanding. */
		log_err("ublk %u queue %d tag %d: submission ring full",
			q->dev_id, q->q_id, tag);
		return -EBUSY;
	}
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->cdev_fd;
	sqe->cmd_op = ublk_io_opcode(q->ioctl_encode, op);
	sqe->user_data = (uint64_t)tag;
	memcpy(sqe->cmd, &cmd, sizeof(cmd));
	q->inflight++;
	return 0;
}

/* Serve one request; the return value goes back to the kernel: bytes
 * done for reads and writes, 0 for the rest, or -errno. */
static int32_t queue_serve(struct ublk_queue *q, int tag, int sq)
{
	const struct ublksrv_io_desc *iod = &q->descs[tag];
	uint64_t off = iod->start_sector << 9;
	uint64_t len = (uint64_t)iod->nr_sectors << 9;
	void *buf = q->bufs + (size_t)tag * q->max_io;
	int ret;

	switch (ublksrv_get_op(iod)) {
	case UBLK_IO_OP_READ:
		if (len > q->max_io)
			return -EINVAL;
		ret = store_read(q->store, sq, off, (uint32_t)len, buf);
		return ret < 0 ? ret : (int32_t)len;
	case UBLK_IO_OP_WRITE:
		if (len > q->max_io)
			return -EINVAL;
		ret = store_write(q->store, sq, off, (uint32_t)len, buf);
		return ret < 0 ? ret : (int32_t)len;
	case UBLK_IO_OP_FLUSH:
		return store_flush(q->store, sq);
	case UBLK_IO_OP_DISCARD:
	case UBLK_IO_OP_WRITE_ZEROES:
		return store_discard(q->store, sq, off, len);
	default:
		return -EOPNOTSUPP;
	}
}

static void queue_commit(struct ublk_queue *q, int tag, int32_t res)
{
	if (res < 0 && res != -EOPNOTSUPP)
		log_warn("ublk %u queue %d tag %d: op %u sector %llu: %s",
			 q->dev_id, q->q_id, tag,
			 (unsigned)ublksrv_get_op(&q->descs[tag]),
			 (unsigned long long)q->descs[tag].start_sector,
			 strerror(-res));
	queue_prep(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ, res);
}

/* Wait (through the ring) for the next tag a worker finishes. */
static void queue_arm_efd(struct ublk_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		log_err("ublk %u queue %d: no SQE for the worker wake-up", q->dev_id,
			q->q_id);
		return;
	}
	io_uring_prep_read(sqe, q->efd, &q->efd_val, sizeof(q->efd_val), 0);
	sqe->user_data = EFD_TAG;
}

/* Commit every tag the workers finished, then wait for more. */
static void queue_reap_workers(struct ublk_queue *q)
{
	pthread_mutex_lock(&q->lock);
	while (q->done.count) {
		int tag = ring_pop(&q->done);

		q->busy--;
		queue_commit(q, tag, q->results[tag]);
	}
	pthread_mutex_unlock(&q->lock);
	queue_arm_efd(q);
}

static void queue_complete(struct ublk_queue *q, const struct io_uring_cqe *cqe)
{
	int tag;

	if (cqe->user_data == EFD_TAG) {
		queue_reap_workers(q);
		return;
	}
	tag = (int)cqe->user_data;
	q->inflight--;
	if (cqe->res == UBLK_IO_RES_OK) {
		if (q->workers <= 1) {
			queue_commit(q, tag, queue_serve(q, tag, q->q_id));
			return;
		}
		pthread_mutex_lock(&q->lock);
		ring_push(&q->todo, tag);
		q->busy++;
		pthread_cond_signal(&q->cv);
		pthread_mutex_unlock(&q->lock);
		return;
	}
	/* UBLK_IO_RES_ABORT: the device is stopping; this tag is done. */
	if (cqe->res != UBLK_IO_RES_ABORT)
		log_warn("ublk %u queue %d tag %d: command failed: %s", q->dev_id,
			 q->q_id, tag, strerror(-cqe->res));
}

/* A worker serves fetched tags with its own store queue, so one ublk
 * queue has up to `workers` store requests in flight at once. */
static void *worker_thread(void *arg)
{
	struct ublk_worker *w = arg;
	struct ublk_queue *q = w->q;
	int sq = q->q_id * q->workers + w->idx;
	uint64_t one = 1;

	daemon_io_thread_init();
	pthread_mutex_lock(&q->lock);
	for (;;) {
		int tag;

		while (!q->todo.count && !q->stopping)
			pthread_cond_wait(&q->cv, &q->lock);
		if (!q->todo.count)
			break;
		tag = ring_pop(&q->todo);
		pthread_mutex_unlock(&q->lock);
		q->results[tag] = queue_serve(q, tag, sq);
		pthread_mutex_lock(&q->lock);
		ring_push(&q->done, tag);
		if (write(q->efd, &one, sizeof(one)) < 0)
			log_err("ublk %u queue %d: waking the queue thread: %s",
				q->dev_id, q->q_id, strerror(errno));
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void workers_stop(struct ublk_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->stopping = 1;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->lock);
	for (int i = 0; i < q->nworkers_started; i++)
		pthread_join(q->worker[i].thread, NULL);
	q->nworkers_started = 0;
}

static int workers_start(struct ublk_queue *q)
{
	for (int i = 0; q->workers > 1 && i < q->workers; i++) {
		struct ublk_worker *w = &q->worker[i];
		int ret;

		w->q = q;
		w->idx = i;
		ret = -pthread_create(&w->thread, NULL, worker_thread, w);
		if (ret < 0) {
			log_err("ublk %u queue %d: worker %d: %s", q->dev_id, q->q_id,
				i, strerror(-ret));
			workers_stop(q);
			return ret;
		}
		q->nworkers_started++;
	}
	return 0;
}

static int queue_fetch_all(struct ublk_queue *q)
{
	int ret = io_uring_queue_init((unsigned)q->depth + 1, &q->ring, 0);

	if (ret < 0) {
		log_err("ublk %u queue %d: io_uring_queue_init: %s", q->dev_id,
			q->q_id, strerror(-ret));
		return ret;
	}
	q->ring_ok = 1;
	for (int tag = 0; tag < q->depth; tag++) {
		ret = queue_prep(q, tag, UBLK_IO_FETCH_REQ, -1);
		if (ret < 0)
			return ret;
	}
	if (q->workers > 1)
		queue_arm_efd(q);
	ret = io_uring_submit(&q->ring);
	if (ret < 0) {
		log_err("ublk %u queue %d: submit FETCH_REQ: %s", q->dev_id,
			q->q_id, strerror(-ret));
		return ret;
	}
	return 0;
}

static void *queue_thread(void *arg)
{
	struct ublk_queue *q = arg;
	int ret;

	daemon_io_thread_init();
	q->err = queue_fetch_all(q);
	sem_post(q->ready);
	if (q->err)
		return NULL;

	while (q->inflight > 0 || q->busy > 0) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		ret = io_uring_submit_and_wait(&q->ring, 1);
		if (ret < 0 && ret != -EINTR) {
			log_err("ublk %u queue %d: io_uring_submit_and_wait: %s",
				q->dev_id, q->q_id, strerror(-ret));
			break;
		}
		io_uring_for_each_cqe(&q->ring, head, cqe) {
			queue_complete(q, cqe);
			n++;
		}
		io_uring_cq_advance(&q->ring, n);
	}
	log_debug("ublk %u queue %d: all tags done", q->dev_id, q->q_id);
	return NULL;
}

int ublk_queue_start(struct ublk_queue *q)
{
	int ret;

	if (q->workers > UBLK_QUEUE_MAX_WORKERS)
		q->workers = UBLK_QUEUE_MAX_WORKERS;
	q->efd = -1;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cv, NULL);
	ret = queue_map(q);
	if (ret == 0)
		ret = workers_start(q);
	if (ret < 0)
		goto fail;
	ret = -pthread_create(&q->thread, NULL, queue_thread, q);
	if (ret < 0) {
		log_err("ublk %u queue %d: pthread_create: %s", q->dev_id,
			q->q_id, strerror(-ret));
		goto fail;
	}
	q->started = 1;
	return 0;
fail:
	workers_stop(q);
	queue_unmap(q);
	return ret;
}

void ublk_queue_join(struct ublk_queue *q)
{
	if (q->started)
		pthread_join(q->thread, NULL);
	q->started = 0;
	workers_stop(q);
	if (q->ring_ok)
		io_uring_queue_exit(&q->ring);
	q->ring_ok = 0;
	queue_unmap(q);
}
