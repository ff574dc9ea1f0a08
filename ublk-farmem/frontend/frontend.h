/* frontend.h — the kernel block devices a store can sit behind, as the
 * daemon and the CLI see them: one struct blk_frontend_ops per kind of
 * device, registered once in frontend.c's table and found by
 * enum blk_frontend (--frontend) or by a device's name ("ublkb3").
 *
 * A new frontend is one file that defines its ops plus one line in that
 * table; nothing above this layer names a particular frontend.
 */
#ifndef FARMEM_FRONTEND_H
#define FARMEM_FRONTEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct store;

enum blk_frontend { BLK_FRONTEND_UBLK = 1, BLK_FRONTEND_NBD };

/* What a device is brought up with. */
struct blk_frontend_opts {
	int dev_id;            /* recover: the kernel device; start: -1 (any) */
	int queues;            /* ublk: hardware queues; nbd: connections */
	int depth;             /* ublk: tags per queue */
	int store_queues;      /* store queues it may use (ops->store_queues()) */
	uint32_t max_io;       /* largest request, bytes */
	uint64_t size;         /* bytes, multiple of 4096 */
};

/* A kernel device as the kernel describes it (recover, del). */
struct blk_frontend_info {
	int queues;
	int depth;
	uint32_t max_io;
	int live;              /* served (or thought served) by pid */
	pid_t pid;
};

struct blk_frontend_ops {
	const char *name;          /* "ublk": the --frontend value */
	const char *dev_prefix;    /* "ublkb": a device is named prefix + id */
	/* 0 when this kernel can host the device, else -errno with a
	 * message naming the fix. */
	int (*check_available)(char *err, size_t errlen);
	/* Store queues a device of queues x depth uses; depends only on its
	 * arguments, so `recover` computes what `add` did. */
	int (*store_queues)(int queues, int depth);
	/* Bring a new device up; on success it is live and *dev is it. */
	int (*start)(const struct blk_frontend_opts *o, struct store *s,
		     void **dev, char *err, size_t errlen);
	/* Attach to device o->dev_id whose daemon died; NULL where the
	 * kernel cannot hold a device's I/O for a new daemon. */
	int (*recover)(const struct blk_frontend_opts *o, struct store *s,
		       void **dev, char *err, size_t errlen);
	int (*dev_id)(const void *dev);
	/* From any thread: end the device's service (wait() then returns). */
	int (*stop)(void *dev);
	/* Blocks until the device is stopped and its threads ended. */
	void (*wait)(void *dev);
	/* After wait: free the daemon side and delete the kernel device. */
	void (*destroy)(void *dev);
	/* The kernel's view of device dev_id (info may be NULL: does it
	 * exist?); -ENODEV when there is none.  NULL: nothing to ask. */
	int (*query)(int dev_id, struct blk_frontend_info *info);
	/* Stop and delete a device whose daemon is gone; NULL where the
	 * device does not outlive its daemon. */
	int (*remove)(int dev_id);
};

/* --- frontend.c: the table ------------------------------------------ */

/* The ops of a frontend, or NULL for a value not in the table. */
const struct blk_frontend_ops *blk_frontend_get(enum blk_frontend f);
/* By --frontend name (case-insensitive); 0 when unknown. */
enum blk_frontend blk_frontend_by_name(const char *name);
/* The frontend a device name ("ublkb3", "nbd0") belongs to, with its id
 * in *id (id may be NULL); NULL when no frontend names devices so. */
const struct blk_frontend_ops *blk_frontend_of_dev(const char *name, int *id);
/* "<prefix><id>" into buf; -ENAMETOOLONG if it does not fit. */
int blk_frontend_dev_name(const struct blk_frontend_ops *fe, int id,
			  char *buf, size_t len);

/* --- the frontends (each file's ops) -------------------------------- */
extern const struct blk_frontend_ops ublk_frontend_ops;       /* ublk.c */
extern const struct blk_frontend_ops nbd_kernel_frontend_ops; /* nbd_kernel.c */

#endif
