/* nbd_kernel.h — `add --frontend nbd`: the store behind a kernel
 * /dev/nbdN, for kernels without ublk (Debian 12's own 6.1 has nbd).
 *
 * The NBD server of nbd.h serves one end of a socketpair from a thread;
 * this file does the client side of the handshake on the other end and
 * hands it to the kernel (NBD_SET_SOCK, then NBD_DO_IT in a thread, the
 * ioctl interface every nbd module has).  No user recovery: if the
 * daemon dies, the device's I/O fails.
 */
#ifndef FARMEM_NBD_KERNEL_H
#define FARMEM_NBD_KERNEL_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct nbd_kernel;

/* What a device is started with. */
struct nbd_kernel_opts {
	int workers;           /* store queues (worker fibers) of the one
				* connection: nbd_kernel_store_queues() */
	uint32_t max_io;       /* largest request, bytes */
};

/* Store queues the nbd frontend uses for a device asked for with
 * `queues` (call before store_open and set the store's queues to it). */
int nbd_kernel_store_queues(int queues);
/* Picks a free /dev/nbdN and connects it.  0 or -errno. */
int nbd_kernel_start(struct store *s, const struct nbd_kernel_opts *o,
		     struct nbd_kernel **out, char *err, size_t errlen);
/* N of /dev/nbdN. */
int nbd_kernel_index(const struct nbd_kernel *k);
/* NBD_DISCONNECT: the kernel ends the session; nbd_kernel_wait returns. */
int nbd_kernel_stop(struct nbd_kernel *k);
void nbd_kernel_wait(struct nbd_kernel *k);
void nbd_kernel_close(struct nbd_kernel *k);
/* 0 when /dev/nbd0 exists, else -ENOENT with a message. */
int nbd_kernel_check_available(char *err, size_t errlen);

#endif
