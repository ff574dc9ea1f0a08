/* ublk.c — lifecycle of one ublk device served by this process. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "frontend/frontend.h"
#include "log.h"
#include "store/store.h"
#include "ublk.h"
#include "ublk_ctrl.h"
#include "ublk_queue.h"

#define UBLK_CDEV_FMT "/dev/ublkc%d"
/* Bounds on waiting for the kernel: the char device node to appear, and
 * a dead daemon's device to become recoverable (6.1 checks every 5 s). */
#define CDEV_WAIT_MS 5000
#define RECOVERY_WAIT_MS 30000
#define POLL_MS 20

struct ublk_dev {
	struct ublk_ctrl ctrl;
	struct ublksrv_ctrl_dev_info info;
	int cdev_fd;
	sem_t ready;
	int nq;
	struct ublk_queue q[STORE_MAX_QUEUES];
};

/* Swap reads come one page fault at a time but readahead and writeback
 * send many at once: a few store requests in flight per queue hide the
 * network round trip.  They are fibers of the queue's thread, so more
 * cost no threads, but each costs locked memory on the machine that is
 * short of it: a store queue's buffers and codec, and a fiber's stack.
 * 16 per queue took a 256 MiB guest's daemon to 113 MiB locked and the
 * swap workload was OOM-killed; 4 is what the guest scenarios pass with. */
#define UBLK_DEFAULT_WORKERS 4

int ublk_workers(int queues, int depth)
{
	int w = UBLK_DEFAULT_WORKERS;

	if (w > depth)
		w = depth;
	if (queues > 0 && w > STORE_MAX_QUEUES / queues)
		w = STORE_MAX_QUEUES / queues;
	if (w > UBLK_QUEUE_MAX_WORKERS)
		w = UBLK_QUEUE_MAX_WORKERS;
	return w < 1 ? 1 : w;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

int ublk_check_available(char *err, size_t errlen)
{
	if (access(UBLK_CONTROL_PATH, F_OK) < 0) {
		snprintf(err, errlen, "ublk_drv not loaded: run 'modprobe ublk_drv' "
			 "(needs Linux 6.0+ with CONFIG_BLK_DEV_UBLK); on kernels "
			 "without ublk use --frontend nbd");
		return -ENOENT;
	}
	if (geteuid() != 0) {
		snprintf(err, errlen, "must run as root (creating a ublk device "
			 "needs CAP_SYS_ADMIN)");
		return -EPERM;
	}
	return 0;
}

static int dev_alloc(struct ublk_dev **out, char *err, size_t errlen)
{
	struct ublk_dev *d = calloc(1, sizeof(*d));
	int ret;

	if (!d)
		return -ENOMEM;
	d->cdev_fd = -1;
	sem_init(&d->ready, 0, 0);
	ret = ublk_ctrl_open(&d->ctrl);
	if (ret < 0) {
		snprintf(err, errlen, "%s: %s", UBLK_CONTROL_PATH, strerror(-ret));
		sem_destroy(&d->ready);
		free(d);
		return ret;
	}
	*out = d;
	return 0;
}

static int cdev_open(struct ublk_dev *d, char *err, size_t errlen)
{
	char path[64];

	snprintf(path, sizeof(path), UBLK_CDEV_FMT, (int)d->info.dev_id);
	/* The node shows up asynchronously (devtmpfs/udev), and after a
	 * crash the old daemon may still hold it for a moment (EBUSY). */
	for (int waited = 0; waited <= CDEV_WAIT_MS; waited += POLL_MS) {
		d->cdev_fd = open(path, O_RDWR | O_CLOEXEC);
		if (d->cdev_fd >= 0)
			return 0;
		if (errno != ENOENT && errno != EBUSY)
			break;
		sleep_ms(POLL_MS);
	}
	snprintf(err, errlen, "%s: %s", path, strerror(errno));
	return -errno;
}

/* Start one thread per queue and wait until each has fetched all its
 * tags (or failed). */
static int queues_start(struct ublk_dev *d, struct store *s, int workers,
			char *err, size_t errlen)
{
	int ret = 0;

	d->nq = d->info.nr_hw_queues;
	for (int i = 0; i < d->nq; i++) {
		struct ublk_queue *q = &d->q[i];

		q->dev_id = d->info.dev_id;
		q->q_id = i;
		q->depth = d->info.queue_depth;
		q->max_io = d->info.max_io_buf_bytes;
		q->cdev_fd = d->cdev_fd;
		q->ioctl_encode = d->ctrl.ioctl_encode;
		q->user_copy = !!(d->info.flags & UBLK_F_USER_COPY);
		q->store = s;
		q->workers = workers;
		q->ready = &d->ready;
		ret = ublk_queue_start(q);
		if (ret < 0) {
			snprintf(err, errlen, "queue %d: %s", i, strerror(-ret));
			d->nq = i;
			break;
		}
	}
	for (int i = 0; i < d->nq; i++) {
		while (sem_wait(&d->ready) < 0 && errno == EINTR)
			;
	}
	for (int i = 0; i < d->nq && ret == 0; i++) {
		if (d->q[i].err) {
			ret = d->q[i].err;
			snprintf(err, errlen, "queue %d: %s", i, strerror(-ret));
		}
	}
	return ret;
}

static void params_fill(struct ublk_params *p, uint64_t size, uint32_t max_io)
{
	memset(p, 0, sizeof(*p));
	p->types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
	/* No volatile cache: an acknowledged write is on every live
	 * replica already, so the kernel need not send flushes. */
	p->basic.logical_bs_shift = 12;
	p->basic.physical_bs_shift = 12;
	p->basic.io_min_shift = 12;
	p->basic.io_opt_shift = 12;
	p->basic.max_sectors = max_io >> 9;
	p->basic.dev_sectors = size >> 9;
	/* Discard (swapon --discard) and write-zeroes both free the pages'
	 * remote bytes; one range per request keeps the mapping simple. */
	p->discard.discard_granularity = STORE_PAGE;
	p->discard.max_discard_sectors = UINT32_MAX >> 9 & ~7u;
	p->discard.max_write_zeroes_sectors = UINT32_MAX >> 9 & ~7u;
	p->discard.max_discard_segments = 1;
}

int ublk_dev_start(const struct ublk_dev_opts *o, struct store *s,
		   struct ublk_dev **out, char *err, size_t errlen)
{
	struct ublk_params params;
	struct ublk_dev *d;
	int ret = dev_alloc(&d, err, errlen);

	if (ret < 0)
		return ret;
	d->info.nr_hw_queues = (uint16_t)o->queues;
	d->info.queue_depth = (uint16_t)o->depth;
	d->info.max_io_buf_bytes = o->max_io;
	d->info.dev_id = (uint32_t)o->dev_id;
	d->info.ublksrv_pid = getpid();
	d->info.flags = UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
	if (d->ctrl.features & UBLK_F_CMD_IOCTL_ENCODE)
		d->info.flags |= UBLK_F_CMD_IOCTL_ENCODE;
	/* User copy (6.5+): buffers only for the requests being served,
	 * not for every tag; the daemon locks that memory on a machine
	 * short of it.  FARMEM_UBLK_TAG_BUFFERS=1 keeps a buffer per tag
	 * (what kernels without it get), for tests of that path. */
	if ((d->ctrl.features & UBLK_F_USER_COPY) && !getenv("FARMEM_UBLK_TAG_BUFFERS"))
		d->info.flags |= UBLK_F_USER_COPY;
	ret = ublk_ctrl_add_dev(&d->ctrl, &d->info);
	if (ret < 0) {
		snprintf(err, errlen, "ADD_DEV (%d queues x %d tags): %s",
			 o->queues, o->depth, strerror(-ret));
		goto fail_ctrl;
	}
	if (d->info.max_io_buf_bytes > o->max_io || d->info.max_io_buf_bytes < STORE_PAGE)
		d->info.max_io_buf_bytes = o->max_io;
	params_fill(&params, o->size, d->info.max_io_buf_bytes);
	ret = ublk_ctrl_set_params(&d->ctrl, d->info.dev_id, &params);
	if (ret < 0) {
		snprintf(err, errlen, "ublk %u: SET_PARAMS: %s", d->info.dev_id,
			 strerror(-ret));
		goto fail_del;
	}
	ret = cdev_open(d, err, errlen);
	if (ret < 0)
		goto fail_del;
	ret = queues_start(d, s, o->workers, err, errlen);
	if (ret < 0)
		goto fail_started;
	ret = ublk_ctrl_start_dev(&d->ctrl, d->info.dev_id, getpid());
	if (ret < 0) {
		snprintf(err, errlen, "ublk %u: START_DEV: %s", d->info.dev_id,
			 strerror(-ret));
		goto fail_started;
	}
	log_info("ublk %u: live, %d queues x %d tags (%d workers each), max_io %u, "
		 "%s commands, %s", d->info.dev_id, d->nq, d->info.queue_depth,
		 o->workers, d->info.max_io_buf_bytes,
		 d->ctrl.ioctl_encode ? "ioctl-encoded" : "legacy",
		 d->info.flags & UBLK_F_USER_COPY ? "user copy" : "a buffer per tag");
	*out = d;
	return 0;

fail_started:
	/* Queue threads hold fetched commands on a device that never went
	 * live; the kernel only gives them back when this process exits,
	 * so the caller must exit and `del` cleans the id up. */
	log_err("ublk %u: start failed with queues running; exit to release them",
		d->info.dev_id);
	return ret;
fail_del:
	if (d->cdev_fd >= 0)
		close(d->cdev_fd);
	ublk_ctrl_del_dev(&d->ctrl, d->info.dev_id);
fail_ctrl:
	ublk_ctrl_close(&d->ctrl);
	sem_destroy(&d->ready);
	free(d);
	return ret;
}

/* A dead daemon's device becomes recoverable once the kernel noticed
 * (quiesced it) and the old char device is closed: retry while busy. */
static int recovery_begin(struct ublk_dev *d, char *err, size_t errlen)
{
	int ret = -EBUSY;

	for (int waited = 0; waited <= RECOVERY_WAIT_MS; waited += POLL_MS * 5) {
		ret = ublk_ctrl_start_recovery(&d->ctrl, d->info.dev_id);
		if (ret != -EBUSY)
			break;
		sleep_ms(POLL_MS * 5);
	}
	if (ret < 0)
		snprintf(err, errlen, "ublk %u: START_USER_RECOVERY: %s%s",
			 d->info.dev_id, strerror(-ret),
			 ret == -EBUSY ? " (is its daemon still running?)" : "");
	return ret;
}

int ublk_dev_recover(const struct ublk_dev_opts *o, struct store *s,
		     struct ublk_dev **out, char *err, size_t errlen)
{
	struct ublk_dev *d;
	int ret = dev_alloc(&d, err, errlen);

	if (ret < 0)
		return ret;
	ret = ublk_ctrl_get_info(&d->ctrl, (uint32_t)o->dev_id, &d->info);
	if (ret < 0) {
		snprintf(err, errlen, "ublk %d: %s", o->dev_id, ret == -ENODEV ?
			 "no such device" : strerror(-ret));
		goto fail;
	}
	if (!(d->info.flags & UBLK_F_USER_RECOVERY)) {
		snprintf(err, errlen, "ublk %d was created without user recovery",
			 o->dev_id);
		ret = -EINVAL;
		goto fail;
	}
	ret = recovery_begin(d, err, errlen);
	if (ret < 0)
		goto fail;
	ret = cdev_open(d, err, errlen);
	if (ret < 0)
		goto fail;
	ret = queues_start(d, s, ublk_workers(d->info.nr_hw_queues, d->info.queue_depth),
			   err, errlen);
	if (ret < 0) {
		log_err("ublk %d: recovery failed with queues running", o->dev_id);
		return ret;
	}
	ret = ublk_ctrl_end_recovery(&d->ctrl, d->info.dev_id, getpid());
	if (ret < 0) {
		snprintf(err, errlen, "ublk %d: END_USER_RECOVERY: %s", o->dev_id,
			 strerror(-ret));
		return ret;
	}
	log_info("ublk %d: recovered, %d queues x %d tags", o->dev_id, d->nq,
		 d->info.queue_depth);
	*out = d;
	return 0;
fail:
	if (d->cdev_fd >= 0)
		close(d->cdev_fd);
	ublk_ctrl_close(&d->ctrl);
	sem_destroy(&d->ready);
	free(d);
	return ret;
}

int ublk_dev_id(const struct ublk_dev *d)
{
	return (int)d->info.dev_id;
}

int ublk_dev_query(int dev_id, int *queues, int *depth, uint32_t *max_io,
		   int *state, int *pid)
{
	struct ublksrv_ctrl_dev_info info;
	struct ublk_ctrl c;
	int ret = ublk_ctrl_open(&c);

	if (ret < 0)
		return ret;
	ret = ublk_ctrl_get_info(&c, (uint32_t)dev_id, &info);
	ublk_ctrl_close(&c);
	if (ret < 0)
		return ret;
	if (queues)
		*queues = info.nr_hw_queues;
	if (depth)
		*depth = info.queue_depth;
	if (max_io)
		*max_io = info.max_io_buf_bytes;
	if (state)
		*state = info.state;
	if (pid)
		*pid = info.ublksrv_pid;
	return 0;
}

void ublk_dev_wait(struct ublk_dev *d)
{
	for (int i = 0; i < d->nq; i++)
		ublk_queue_join(&d->q[i]);
	d->nq = 0;
}

void ublk_dev_close(struct ublk_dev *d, int del)
{
	int ret;

	ublk_dev_wait(d);
	if (d->cdev_fd >= 0)
		close(d->cdev_fd);
	if (del) {
		ret = ublk_ctrl_del_dev(&d->ctrl, d->info.dev_id);
		if (ret < 0)
			log_warn("ublk %u: DEL_DEV: %s", d->info.dev_id, strerror(-ret));
	}
	ublk_ctrl_close(&d->ctrl);
	sem_destroy(&d->ready);
	free(d);
}

int ublk_stop(int dev_id)
{
	struct ublk_ctrl c;
	int ret = ublk_ctrl_open(&c);

	if (ret < 0)
		return ret;
	ret = ublk_ctrl_stop_dev(&c, (uint32_t)dev_id);
	ublk_ctrl_close(&c);
	return ret;
}

int ublk_remove(int dev_id)
{
	struct ublk_ctrl c;
	int ret = ublk_ctrl_open(&c);

	if (ret < 0)
		return ret;
	ret = ublk_ctrl_stop_dev(&c, (uint32_t)dev_id);
	if (ret < 0 && ret != -ENODEV)
		log_warn("ublk %d: STOP_DEV: %s", dev_id, strerror(-ret));
	ret = ublk_ctrl_del_dev(&c, (uint32_t)dev_id);
	ublk_ctrl_close(&c);
	return ret;
}

/* --- the frontend table's view (frontend.h) --------------------------- */

static int fe_store_queues(int queues, int depth)
{
	return queues * ublk_workers(queues, depth);
}

static struct ublk_dev_opts fe_opts(const struct blk_frontend_opts *o)
{
	return (struct ublk_dev_opts){
		.dev_id = o->dev_id,
		.queues = o->queues,
		.depth = o->depth,
		.workers = o->store_queues / (o->queues > 0 ? o->queues : 1),
		.max_io = o->max_io,
		.size = o->size,
	};
}

static int fe_start(const struct blk_frontend_opts *o, struct store *s,
		    void **dev, char *err, size_t errlen)
{
	struct ublk_dev_opts uo = fe_opts(o);

	return ublk_dev_start(&uo, s, (struct ublk_dev **)dev, err, errlen);
}

static int fe_recover(const struct blk_frontend_opts *o, struct store *s,
		      void **dev, char *err, size_t errlen)
{
	struct ublk_dev_opts uo = fe_opts(o);

	return ublk_dev_recover(&uo, s, (struct ublk_dev **)dev, err, errlen);
}

static int fe_dev_id(const void *dev)
{
	return ublk_dev_id(dev);
}

static int fe_stop(void *dev)
{
	return ublk_stop(ublk_dev_id(dev));
}

static void fe_wait(void *dev)
{
	ublk_dev_wait(dev);
}

static void fe_destroy(void *dev)
{
	ublk_dev_close(dev, 1);
}

static int fe_query(int dev_id, struct blk_frontend_info *info)
{
	struct blk_frontend_info i;
	int state, pid, ret;

	ret = ublk_dev_query(dev_id, &i.queues, &i.depth, &i.max_io, &state, &pid);
	if (ret == 0 && info) {
		i.live = state == UBLK_DEV_LIVE;
		i.pid = pid;
		*info = i;
	}
	return ret;
}

const struct blk_frontend_ops ublk_frontend_ops = {
	.name = "ublk",
	.dev_prefix = "ublkb",
	.check_available = ublk_check_available,
	.store_queues = fe_store_queues,
	.start = fe_start,
	.recover = fe_recover,
	.dev_id = fe_dev_id,
	.stop = fe_stop,
	.wait = fe_wait,
	.destroy = fe_destroy,
	.query = fe_query,
	.remove = ublk_remove,
};
