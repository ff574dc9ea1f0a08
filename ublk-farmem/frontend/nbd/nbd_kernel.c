/* nbd_kernel.c — attach the store to a kernel /dev/nbdN. */
#include <errno.h>
#include <fcntl.h>
#include <linux/nbd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frontend/frontend.h"
#include "log.h"
#include "nbd.h"
#include "nbd_kernel.h"
#include "nbd_store.h"
#include "proc_util.h"
#include "store/store.h"

#define NBD_MAX_DEVS 256
#define NBD_LIVE_WAIT_MS 5000
#define NBD_WORKERS_MIN 4
#define NBD_HS_MAGIC 0x4e42444d41474943ull   /* "NBDMAGIC" */
#define NBD_HS_IHAVEOPT 0x49484156454f5054ull
#define NBD_HS_FIXED_NEWSTYLE 1u
#define NBD_HS_NO_ZEROES 2u
#define NBD_HS_OPT_EXPORT_NAME 1u

struct nbd_kernel {
	struct store *store;
	struct nbd_server *srv;
	int sv[2];               /* [0] the kernel's end, [1] the server's */
	int nbd_fd;
	int index;
	pthread_t serve_thread, doit_thread;
	struct nbd_store_glue glue;   /* the server's backend */
	int serving, doing;
};

int nbd_kernel_store_queues(int queues)
{
	int w = queues > NBD_WORKERS_MIN ? queues : NBD_WORKERS_MIN;

	return w > STORE_MAX_QUEUES ? STORE_MAX_QUEUES : w;
}

int nbd_kernel_check_available(char *err, size_t errlen)
{
	if (access("/dev/nbd0", F_OK) == 0)
		return 0;
	snprintf(err, errlen, "nbd not loaded: run 'modprobe nbd' (needs "
		 "CONFIG_BLK_DEV_NBD)");
	return -ENOENT;
}

static int read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		got += (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	return write(fd, buf, len) == (ssize_t)len ? 0 : -EIO;
}

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* The client half of the newstyle fixed handshake (what nbd-client does
 * before NBD_SET_SOCK): the kernel only speaks the transmission phase. */
static int client_handshake(int fd, uint64_t *size, uint16_t *flags)
{
	uint8_t hello[18], opt[16], rep[10 + 124];
	int ret, no_zeroes;

	ret = read_full(fd, hello, sizeof(hello));
	if (ret < 0)
		return ret;
	if (be64(hello) != NBD_HS_MAGIC || be64(hello + 8) != NBD_HS_IHAVEOPT)
		return -EPROTO;
	no_zeroes = !!(hello[17] & NBD_HS_NO_ZEROES);
	put_be32(opt, NBD_HS_FIXED_NEWSTYLE | (no_zeroes ? NBD_HS_NO_ZEROES : 0));
	ret = write_full(fd, opt, 4);
	put_be64(opt, NBD_HS_IHAVEOPT);
	put_be32(opt + 8, NBD_HS_OPT_EXPORT_NAME);
	put_be32(opt + 12, 0); /* empty export name */
	if (ret == 0)
		ret = write_full(fd, opt, 16);
	if (ret == 0)
		ret = read_full(fd, rep, no_zeroes ? 10 : sizeof(rep));
	if (ret < 0)
		return ret;
	*size = be64(rep);
	*flags = (uint16_t)(rep[8] << 8 | rep[9]);
	return 0;
}

/* The kernel sends requests from whichever task is reclaiming.  When the
 * socket is full that task waits in sendmsg, and a signal arriving then
 * makes the kernel's nbd requeue a request it had half sent, with a new
 * cookie: our reply to the old one is "Double reply" and the device
 * shuts down (seen in the guest scenario, 6.12).  Room for many full
 * requests each way makes that wait rare while the workers are busy. */
#define NBD_SOCKBUF (8u << 20)

/* The same reason caps the kernel's requests: a 128 KiB write is many
 * partial sends and, in one fiber, 32 pages compressed before the
 * connection's reader runs again.  32 KiB keeps both short. */
#define NBD_KERNEL_MAX_REQ (32u << 10)

static void widen_socketpair(const int sv[2])
{
	int size = (int)NBD_SOCKBUF;

	for (int i = 0; i < 2; i++) {
		if (setsockopt(sv[i], SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
			setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
		if (setsockopt(sv[i], SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
			setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	}
}

static void *serve_thread(void *arg)
{
	struct nbd_kernel *k = arg;

	fm_set_io_flusher();
	nbd_server_serve_fd(k->srv, k->sv[1]);
	/* After NBD_CMD_DISC (or an error) the kernel's receiver waits for
	 * the socket to end: give it EOF, so NBD_DO_IT returns. */
	shutdown(k->sv[1], SHUT_RDWR);
	return NULL;
}

static void *doit_thread(void *arg)
{
	struct nbd_kernel *k = arg;

	/* Returns when the session ends (NBD_DISCONNECT or a dead socket). */
	if (ioctl(k->nbd_fd, NBD_DO_IT) < 0 && errno != EPIPE && errno != ECONNRESET)
		log_debug("nbd%d: NBD_DO_IT: %s", k->index, strerror(errno));
	ioctl(k->nbd_fd, NBD_CLEAR_QUE);
	ioctl(k->nbd_fd, NBD_CLEAR_SOCK);
	return NULL;
}

static int sys_exists(int index, const char *leaf)
{
	char path[96];

	snprintf(path, sizeof(path), "/sys/block/nbd%d/%s", index, leaf);
	return access(path, F_OK) == 0;
}

/* A device the kernel has but nobody connected (no pid attribute). */
static int pick_free(struct nbd_kernel *k, char *err, size_t errlen)
{
	for (int i = 0; i < NBD_MAX_DEVS; i++) {
		char path[32];

		if (!sys_exists(i, "size") || sys_exists(i, "pid"))
			continue;
		snprintf(path, sizeof(path), "/dev/nbd%d", i);
		k->nbd_fd = open(path, O_RDWR | O_CLOEXEC);
		if (k->nbd_fd < 0)
			continue;
		k->index = i;
		return 0;
	}
	snprintf(err, errlen, "no free /dev/nbdN (modprobe nbd nbds_max=N for more)");
	return -EBUSY;
}

static int setup_kernel(struct nbd_kernel *k, uint64_t size, uint16_t flags,
			char *err, size_t errlen)
{
	if (ioctl(k->nbd_fd, NBD_SET_BLKSIZE, (unsigned long)STORE_PAGE) < 0 ||
	    ioctl(k->nbd_fd, NBD_SET_SIZE_BLOCKS, (unsigned long)(size / STORE_PAGE)) < 0 ||
	    ioctl(k->nbd_fd, NBD_SET_FLAGS, (unsigned long)flags) < 0 ||
	    ioctl(k->nbd_fd, NBD_SET_SOCK, (unsigned long)k->sv[0]) < 0) {
		snprintf(err, errlen, "/dev/nbd%d: setting up: %s", k->index,
			 strerror(errno));
		return -errno;
	}
	return 0;
}

/* The kernel's nbd allows requests of up to 32 MiB (its own
 * max_hw_sectors) and the ioctl interface cannot say otherwise; our
 * server takes max_io at most, so cap the queue through sysfs. */
static int limit_requests(struct nbd_kernel *k, uint32_t max_io, char *err,
			  size_t errlen)
{
	char path[96], val[32];
	int fd, n, ret = 0;

	snprintf(path, sizeof(path), "/sys/block/nbd%d/queue/max_sectors_kb", k->index);
	n = snprintf(val, sizeof(val), "%u", max_io / 1024);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, val, (size_t)n) != n) {
		ret = -errno;
		snprintf(err, errlen, "%s = %s: %s", path, val, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

static int wait_live(struct nbd_kernel *k)
{
	struct timespec ts = { 0, 10 * 1000000L };

	for (int waited = 0; waited < NBD_LIVE_WAIT_MS; waited += 10) {
		if (sys_exists(k->index, "pid"))
			return 0;
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

int nbd_kernel_start(struct store *s, const struct nbd_kernel_opts *o,
		     struct nbd_kernel **out, char *err, size_t errlen)
{
	struct nbd_server_params p = {
		.max_conns = 1,
		.workers = o->workers,
		.max_block = o->max_io,
		.export_name = "farmem",
	};
	struct nbd_backend be;
	struct nbd_kernel *k = calloc(1, sizeof(*k));
	uint64_t size;
	uint16_t flags;
	int ret;

	if (!k)
		return -ENOMEM;
	k->store = s;
	nbd_store_backend(&k->glue, s, o->max_io, &be);
	k->nbd_fd = k->sv[0] = k->sv[1] = -1;
	ret = nbd_kernel_check_available(err, errlen);
	if (ret == 0)
		ret = pick_free(k, err, errlen);
	if (ret < 0)
		goto fail;
	ret = nbd_server_create(&p, &be, &k->srv);
	if (ret < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, k->sv) < 0) {
		ret = ret < 0 ? ret : -errno;
		snprintf(err, errlen, "nbd server: %s", strerror(-ret));
		goto fail;
	}
	widen_socketpair(k->sv);
	ret = -pthread_create(&k->serve_thread, NULL, serve_thread, k);
	if (ret < 0)
		goto fail;
	k->serving = 1;
	ret = client_handshake(k->sv[0], &size, &flags);
	if (ret < 0) {
		snprintf(err, errlen, "nbd handshake: %s", strerror(-ret));
		goto fail;
	}
	ret = setup_kernel(k, size, flags, err, errlen);
	if (ret == 0)
		ret = limit_requests(k, o->max_io < NBD_KERNEL_MAX_REQ ? o->max_io
							: NBD_KERNEL_MAX_REQ, err, errlen);
	if (ret < 0)
		goto fail;
	ret = -pthread_create(&k->doit_thread, NULL, doit_thread, k);
	if (ret < 0)
		goto fail;
	k->doing = 1;
	ret = wait_live(k);
	if (ret < 0) {
		snprintf(err, errlen, "/dev/nbd%d did not come up", k->index);
		goto fail;
	}
	log_info("nbd%d: live, %d workers", k->index, p.workers);
	*out = k;
	return 0;
fail:
	nbd_kernel_stop(k);
	nbd_kernel_close(k);
	return ret;
}

int nbd_kernel_index(const struct nbd_kernel *k)
{
	return k->index;
}

int nbd_kernel_stop(struct nbd_kernel *k)
{
	if (k->doing && ioctl(k->nbd_fd, NBD_DISCONNECT) < 0)
		return -errno;
	if (!k->doing && k->sv[0] >= 0)
		shutdown(k->sv[0], SHUT_RDWR); /* ends the server thread */
	return 0;
}

void nbd_kernel_wait(struct nbd_kernel *k)
{
	if (k->doing)
		pthread_join(k->doit_thread, NULL);
	k->doing = 0;
	/* The kernel dropped its end: the server sees EOF and returns. */
	if (k->sv[0] >= 0)
		shutdown(k->sv[0], SHUT_RDWR);
	if (k->serving)
		pthread_join(k->serve_thread, NULL);
	k->serving = 0;
}

void nbd_kernel_close(struct nbd_kernel *k)
{
	nbd_kernel_wait(k);
	if (k->srv)
		nbd_server_destroy(k->srv);
	for (int i = 0; i < 2; i++)
		if (k->sv[i] >= 0)
			close(k->sv[i]);
	if (k->nbd_fd >= 0)
		close(k->nbd_fd);
	free(k);
}

/* --- the frontend table's view (frontend.h) --------------------------- */

static int fe_store_queues(int queues, int depth)
{
	(void)depth; /* one connection; its workers are the store queues */
	return nbd_kernel_store_queues(queues);
}

static int fe_start(const struct blk_frontend_opts *o, struct store *s,
		    void **dev, char *err, size_t errlen)
{
	struct nbd_kernel_opts ko = {
		.workers = o->store_queues,
		.max_io = o->max_io,
	};

	return nbd_kernel_start(s, &ko, (struct nbd_kernel **)dev, err, errlen);
}

static int fe_dev_id(const void *dev)
{
	return nbd_kernel_index(dev);
}

static int fe_stop(void *dev)
{
	return nbd_kernel_stop(dev);
}

static void fe_wait(void *dev)
{
	nbd_kernel_wait(dev);
}

static void fe_destroy(void *dev)
{
	nbd_kernel_close(dev);
}

/* No recover, query or remove: the kernel's nbd fails a device's I/O
 * when its server dies, and the device goes with the daemon. */
const struct blk_frontend_ops nbd_kernel_frontend_ops = {
	.name = "nbd",
	.dev_prefix = "nbd",
	.check_available = nbd_kernel_check_available,
	.store_queues = fe_store_queues,
	.start = fe_start,
	.dev_id = fe_dev_id,
	.stop = fe_stop,
	.wait = fe_wait,
	.destroy = fe_destroy,
};
