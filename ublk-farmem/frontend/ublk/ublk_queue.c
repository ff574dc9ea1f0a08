/* ublk_queue.c — the per-queue I/O thread of the ublk frontend: one
 * event loop, the queue's commands in its ring, worker fibers serving
 * the fetched tags (ublk_queue.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fiber.h"
#include "log.h"
#include "proc_util.h"
#include "store/store.h"
#include "ublk_ctrl.h"
#include "ublk_queue.h"

/* How long a worker waits before retrying a commit that found no SQE
 * (it cannot normally happen: the ring has room for every tag). */
#define COMMIT_RETRY_NS 1000000u

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

	q->ops = calloc((size_t)q->depth, sizeof(*q->ops));
	q->todo.tags = calloc((size_t)q->depth, sizeof(uint16_t));
	if (!q->ops || !q->todo.tags)
		return -ENOMEM;
	q->todo.size = (unsigned)q->depth;
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
	free(q->ops);
	free(q->todo.tags);
	q->ops = NULL;
	q->todo.tags = NULL;
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

static void tag_done(struct fm_loop_op *op, int res, unsigned flags);

/* Queue FETCH (first time) or COMMIT_AND_FETCH (with the result of the
 * request just served) for one tag; it leaves with the loop's next
 * io_uring_enter.  0, or -EBUSY when no SQE could be had. */
static int queue_prep(struct ublk_queue *q, int tag, uint32_t op, int32_t result)
{
	struct io_uring_sqe *sqe = fm_loop_sqe(q->loop);
	struct ublksrv_io_cmd cmd = {
		.q_id = (uint16_t)q->q_id,
		.tag = (uint16_t)tag,
		.result = result,
		.addr = (uint64_t)(uintptr_t)(q->bufs + (size_t)tag * q->max_io),
	};

	if (!sqe) {
		log_err("ublk %u queue %d tag %d: submission ring full",
			q->dev_id, q->q_id, tag);
		return -EBUSY;
	}
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = q->cdev_fd;
	sqe->cmd_op = ublk_io_opcode(q->ioctl_encode, op);
	q->ops[tag].op.cb = tag_done;
	q->ops[tag].q = q;
	q->ops[tag].tag = tag;
	io_uring_sqe_set_data(sqe, &q->ops[tag].op);
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

/* Hand the result back and fetch the tag's next request.  A lost
 * commit would hang a kernel request for good, so a worker retries
 * until the SQE is queued. */
static void queue_commit(struct ublk_queue *q, int tag, int32_t res)
{
	int warned = 0;

	if (res < 0 && res != -EOPNOTSUPP)
		log_warn("ublk %u queue %d tag %d: op %u sector %llu: %s",
			 q->dev_id, q->q_id, tag,
			 (unsigned)ublksrv_get_op(&q->descs[tag]),
			 (unsigned long long)q->descs[tag].start_sector,
			 strerror(-res));
	while (queue_prep(q, tag, UBLK_IO_COMMIT_AND_FETCH_REQ, res) < 0) {
		if (!warned++)
			log_err("ublk %u queue %d tag %d: commit deferred", q->dev_id,
				q->q_id, tag);
		fm_fiber_sleep_ns(COMMIT_RETRY_NS);
	}
}

/* A worker fiber: serve fetched tags until the queue stops. */
static void worker_fiber(void *arg)
{
	struct ublk_worker *w = arg;
	struct ublk_queue *q = w->q;
	int sq = q->q_id * q->workers + w->idx;

	w->fiber = fm_fiber_self();
	for (;;) {
		int tag;

		while (!q->todo.count && !q->stopping) {
			if (!w->idle) {
				w->idle = 1;
				q->idle[q->nidle++] = w;
			}
			fm_fiber_park();
		}
		if (!q->todo.count)
			break;
		tag = ring_pop(&q->todo);
		queue_commit(q, tag, queue_serve(q, tag, sq));
		q->busy--;
	}
}

static void wake_one_worker(struct ublk_queue *q)
{
	struct ublk_worker *w;

	if (!q->nidle)
		return;     /* every worker is busy; they loop back to todo */
	w = q->idle[--q->nidle];
	w->idle = 0;
	fm_fiber_wake(w->fiber);
}

/* A tag's command completed: a request to serve, or the tag's end. */
static void tag_done(struct fm_loop_op *op, int res, unsigned flags)
{
	struct ublk_tag_op *t = (struct ublk_tag_op *)op;
	struct ublk_queue *q = t->q;

	(void)flags;
	q->inflight--;
	if (res == UBLK_IO_RES_OK) {
		ring_push(&q->todo, t->tag);
		q->busy++;
		wake_one_worker(q);
		return;
	}
	/* UBLK_IO_RES_ABORT: the device is stopping; this tag is done. */
	if (res != UBLK_IO_RES_ABORT)
		log_warn("ublk %u queue %d tag %d: command failed: %s", q->dev_id,
			 q->q_id, t->tag, strerror(-res));
}

static int queue_fetch_all(struct ublk_queue *q)
{
	int ret = fm_loop_attach(q->loop);

	if (ret < 0) {
		log_err("ublk %u queue %d: io_uring setup: %s", q->dev_id,
			q->q_id, strerror(-ret));
		return ret;
	}
	for (int i = 0; i < q->workers; i++) {
		q->worker[i].q = q;
		q->worker[i].idx = i;
		ret = fm_loop_spawn(q->loop, worker_fiber, &q->worker[i]);
		if (ret < 0)
			return ret;
	}
	for (int tag = 0; tag < q->depth; tag++) {
		ret = queue_prep(q, tag, UBLK_IO_FETCH_REQ, -1);
		if (ret < 0)
			return ret;
	}
	ret = io_uring_submit(fm_loop_ring(q->loop));
	if (ret < 0) {
		log_err("ublk %u queue %d: submit FETCH_REQ: %s", q->dev_id,
			q->q_id, strerror(-ret));
		return ret;
	}
	return 0;
}

/* Let the workers finish and leave, then give the ring back. */
static void queue_wind_down(struct ublk_queue *q)
{
	q->stopping = 1;
	while (q->nidle)
		wake_one_worker(q);
	while (fm_loop_busy(q->loop) && fm_loop_turn(q->loop) == 0)
		;
	fm_loop_detach(q->loop);
}

static void *queue_thread(void *arg)
{
	struct ublk_queue *q = arg;
	int ret;

	fm_set_io_flusher();
	q->err = queue_fetch_all(q);
	sem_post(q->ready);
	if (q->err) {
		queue_wind_down(q);
		return NULL;
	}
	while (q->inflight > 0 || q->busy > 0) {
		ret = fm_loop_turn(q->loop);
		if (ret < 0) {
			log_err("ublk %u queue %d: io_uring_submit_and_wait: %s",
				q->dev_id, q->q_id, strerror(-ret));
			break;
		}
	}
	log_debug("ublk %u queue %d: all tags done", q->dev_id, q->q_id);
	queue_wind_down(q);
	return NULL;
}

int ublk_queue_start(struct ublk_queue *q)
{
	struct fm_loop_params lp = { 0 };
	int ret;

	if (q->workers > UBLK_QUEUE_MAX_WORKERS)
		q->workers = UBLK_QUEUE_MAX_WORKERS;
	if (q->workers < 1)
		q->workers = 1;
	ret = queue_map(q);
	if (ret < 0)
		goto fail;
	lp.fibers = (unsigned)q->workers;
	lp.sq_entries = (unsigned)q->depth + 1;
	ret = fm_loop_create(&lp, &q->loop);
	if (ret < 0) {
		log_err("ublk %u queue %d: %d worker fibers: %s", q->dev_id, q->q_id,
			q->workers, strerror(-ret));
		goto fail;
	}
	ret = -pthread_create(&q->thread, NULL, queue_thread, q);
	if (ret < 0) {
		log_err("ublk %u queue %d: pthread_create: %s", q->dev_id,
			q->q_id, strerror(-ret));
		goto fail;
	}
	q->started = 1;
	return 0;
fail:
	fm_loop_destroy(q->loop);
	q->loop = NULL;
	queue_unmap(q);
	return ret;
}

void ublk_queue_join(struct ublk_queue *q)
{
	if (q->started)
		pthread_join(q->thread, NULL);
	q->started = 0;
	fm_loop_destroy(q->loop);
	q->loop = NULL;
	queue_unmap(q);
}
