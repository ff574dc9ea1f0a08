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

	/* In user copy mode a tag needs a buffer only while the store
	 * serves it, and the store serves `workers` at once: a 2-queue
	 * daemon locks 1 MiB for data instead of 16 MiB. */
	q->bufs_len = (size_t)(q->user_copy ? q->workers : q->depth) * q->max_io;
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
	q->buf_free = calloc((size_t)q->workers, sizeof(uint16_t));
	if (!q->ops || !q->todo.tags || !q->buf_free)
		return -ENOMEM;
	q->todo.size = (unsigned)q->depth;
	for (int i = 0; i < q->depth; i++)
		q->ops[i].buf = -1;
	q->nbuf_free = 0;
	for (int i = q->workers - 1; i >= 0; i--)
		q->buf_free[q->nbuf_free++] = (uint16_t)i;
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
	free(q->buf_free);
	q->ops = NULL;
	q->todo.tags = NULL;
	q->buf_free = NULL;
}

/* --- user copy: a worker buffer per served tag -------------------- */

/* The position of (queue, tag)'s data on the char device. */
static off_t user_copy_pos(const struct ublk_queue *q, int tag)
{
	return (off_t)(UBLKSRV_IO_BUF_OFFSET + ((uint64_t)q->q_id << UBLK_QID_OFF) +
		       ((uint64_t)tag << UBLK_TAG_OFF));
}

static uint8_t *tag_buf(struct ublk_queue *q, int tag)
{
	int i = q->user_copy ? q->ops[tag].buf : tag;

	return q->bufs + (size_t)i * q->max_io;
}

/* Take a buffer for a tag: 0, or -EBUSY when every worker holds one. */
static int buf_take(struct ublk_queue *q, int tag)
{
	if (!q->user_copy || q->ops[tag].buf >= 0)
		return 0;
	if (!q->nbuf_free)
		return -EBUSY;
	q->ops[tag].buf = q->buf_free[--q->nbuf_free];
	return 0;
}

static void buf_give(struct ublk_queue *q, int tag)
{
	if (!q->user_copy || q->ops[tag].buf < 0)
		return;
	q->buf_free[q->nbuf_free++] = (uint16_t)q->ops[tag].buf;
	q->ops[tag].buf = -1;
}

/* Move a request's data between the kernel and the tag's buffer:
 * 0 or -errno (a short copy is -EIO: the request is not what its
 * descriptor said). */
static int user_copy_data(struct ublk_queue *q, int tag, size_t len, int to_kernel)
{
	uint8_t *buf = tag_buf(q, tag);
	off_t pos = user_copy_pos(q, tag);
	size_t done = 0;

	while (done < len) {
		ssize_t n = to_kernel ?
			pwrite(q->cdev_fd, buf + done, len - done, pos + (off_t)done) :
			pread(q->cdev_fd, buf + done, len - done, pos + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;

			log_warn("ublk %u queue %d tag %d: %s %zu bytes: %s", q->dev_id,
				 q->q_id, tag, to_kernel ? "pwrite" : "pread", len,
				 strerror(e));
			return -e;
		}
		done += (size_t)n;
	}
	return 0;
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
static void tag_served(struct store_aio *a, int rc);

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
		/* User copy: no buffer address; the data moves by pread/pwrite. */
		.addr = q->user_copy ? 0 : (uint64_t)(uintptr_t)tag_buf(q, tag),
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

/* A read or write: the tag's buffer, in user copy mode filled from the
 * kernel first for a write.  A buffer goes back when the store cannot
 * take the request now; the tag waits in todo and copies again. */
static int tag_submit_data(struct ublk_queue *q, int tag, struct store_aio *a)
{
	int rc;

	if (a->len > q->max_io)
		return -EINVAL;
	rc = buf_take(q, tag);
	if (rc < 0)
		return rc;
	a->buf = tag_buf(q, tag);
	rc = a->op == STORE_OP_WRITE && q->user_copy ?
		user_copy_data(q, tag, a->len, 0) : 0;
	if (rc == 0)
		rc = store_submit(q->store, a);
	if (rc < 0)
		buf_give(q, tag);
	return rc;
}

/* Start serving a tag through the store's asynchronous API: 0, -EBUSY
 * when every store queue of this ublk queue is busy (the tag waits in
 * todo), or the -errno to commit at once. */
static int tag_submit(struct ublk_queue *q, int tag)
{
	const struct ublksrv_io_desc *iod = &q->descs[tag];
	struct store_aio *a = &q->ops[tag].aio;

	a->off = iod->start_sector << 9;
	a->len = (uint64_t)iod->nr_sectors << 9;
	a->buf = NULL;
	a->done = tag_served;
	a->priv = &q->ops[tag];
	switch (ublksrv_get_op(iod)) {
	case UBLK_IO_OP_READ:
		a->op = STORE_OP_READ;
		break;
	case UBLK_IO_OP_WRITE:
		a->op = STORE_OP_WRITE;
		break;
	case UBLK_IO_OP_FLUSH:
		a->op = STORE_OP_FLUSH;
		break;
	case UBLK_IO_OP_DISCARD:
	case UBLK_IO_OP_WRITE_ZEROES:
		a->op = STORE_OP_DISCARD;
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (a->op == STORE_OP_READ || a->op == STORE_OP_WRITE)
		return tag_submit_data(q, tag, a);
	return store_submit(q->store, a);
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

/* Submit waiting tags while the store takes them. */
static void queue_pump(struct ublk_queue *q)
{
	while (q->todo.count) {
		int tag = q->todo.tags[q->todo.head];
		int rc = tag_submit(q, tag);

		if (rc == -EBUSY)
			return;     /* the next completion pumps again */
		ring_pop(&q->todo);
		if (rc < 0) {
			queue_commit(q, tag, rc);
			q->busy--;
		}
	}
}

/* The store is done with a tag: the kernel gets bytes done for reads
 * and writes, 0 for the rest, or -errno. */
static void tag_served(struct store_aio *a, int rc)
{
	struct ublk_tag_op *t = a->priv;
	struct ublk_queue *q = t->q;
	int32_t res = rc;

	if (rc == 0 && a->op == STORE_OP_READ && q->user_copy)
		rc = res = user_copy_data(q, t->tag, a->len, 1);
	if (rc == 0 && (a->op == STORE_OP_READ || a->op == STORE_OP_WRITE))
		res = (int32_t)a->len;
	buf_give(q, t->tag);
	queue_commit(q, t->tag, res);
	q->busy--;
	queue_pump(q);
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
		queue_pump(q);
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
	/* This queue's store queues, served through the asynchronous API
	 * with this loop's own connections: a request, its memserver reply
	 * and its commit all stay in this thread. */
	ret = store_loop_attach(q->store, q->loop, q->q_id * q->workers, q->workers);
	if (ret < 0) {
		log_err("ublk %u queue %d: store queues: %s", q->dev_id, q->q_id,
			strerror(-ret));
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

/* Let the store finish what it serves, close the loop's connections,
 * then give the ring back. */
static void queue_wind_down(struct ublk_queue *q)
{
	while (q->busy && fm_loop_turn(q->loop) == 0)
		;
	store_loop_detach(q->store, q->q_id * q->workers, q->workers);
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
	lp.fibers = (unsigned)(q->workers + store_loop_fibers(q->store));  /* one per store queue */
	lp.sq_entries = (unsigned)q->depth + 1;
	/* Recovery after kill -9 (4-kill-daemon) stalled in 1 run of 2 with
	 * SINGLE_ISSUER | DEFER_TASKRUN queue rings on 6.12, never with the
	 * plain ring the queue had before: keep the plain one here. */
	lp.plain_ring = 1;
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
