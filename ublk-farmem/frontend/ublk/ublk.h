/* ublk.h — the ublk frontend: a /dev/ublkbN served by a store.
 *
 * One thread per hardware queue (ublk_queue.c), control commands through
 * /dev/ublk-control (ublk_ctrl.c).  Devices are created with
 * UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE: when the daemon
 * dies the kernel keeps the disk and holds its I/O, and a new daemon
 * attaches with ublk_dev_recover(), the held I/O being reissued to it.
 */
#ifndef FARMEM_UBLK_H
#define FARMEM_UBLK_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct ublk_dev;

/* Device states (the kernel's UBLK_S_DEV_*), as ublk_dev_query reports. */
enum { UBLK_DEV_DEAD = 0, UBLK_DEV_LIVE = 1, UBLK_DEV_QUIESCED = 2 };

struct ublk_dev_opts {
	int dev_id;            /* start: -1 for any free id; recover: the device */
	int queues;            /* start only (recover takes the kernel's) */
	int depth;
	int workers;           /* store queues per ublk queue (ublk_workers()) */
	uint32_t max_io;       /* largest request bytes (per-tag buffer) */
	uint64_t size;         /* bytes, multiple of 4096 */
};

/* Worker threads per ublk queue, each with its own store queue, so a
 * queue has that many store requests in flight; the store then needs
 * queues * ublk_workers() queues.  Depends only on its arguments, so
 * `recover` computes the same as `add`. */
int ublk_workers(int queues, int depth);

/* Why ublk cannot be used here: 0 when /dev/ublk-control is usable, else
 * -errno with a message naming the fix (module, kernel, root). */
int ublk_check_available(char *err, size_t errlen);

/* ADD_DEV, SET_PARAMS, queue threads fetch, START_DEV: on success the
 * disk is live. */
int ublk_dev_start(const struct ublk_dev_opts *o, struct store *s,
		   struct ublk_dev **out, char *err, size_t errlen);
/* START_USER_RECOVERY (waiting while the old daemon goes away), queue
 * threads fetch, END_USER_RECOVERY. */
int ublk_dev_recover(const struct ublk_dev_opts *o, struct store *s,
		     struct ublk_dev **out, char *err, size_t errlen);
int ublk_dev_id(const struct ublk_dev *d);
/* Queues and depth the kernel device has (for recover's store config).
 * 0 or -errno (-ENODEV: no such device). */
int ublk_dev_query(int dev_id, int *queues, int *depth, uint32_t *max_io,
		   int *state, int *pid);
/* Blocks until every queue thread ended (the device was stopped). */
void ublk_dev_wait(struct ublk_dev *d);
/* Frees the daemon side; with del, also DEL_DEV (after the char device
 * is closed, as the kernel waits for that). */
void ublk_dev_close(struct ublk_dev *d, int del);

/* STOP_DEV from any process or thread: queue threads then end. */
int ublk_stop(int dev_id);
/* STOP_DEV + DEL_DEV for a device whose daemon is gone. */
int ublk_remove(int dev_id);

#endif
