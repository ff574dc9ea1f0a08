/* nbd_int.h — what the NBD server's files share; not for other callers.
 * Each file's exports are listed under its name. */
#ifndef FARMEM_NBD_INT_H
#define FARMEM_NBD_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "fiber.h"
#include "nbd.h"

struct nbd_slot;

/* One request as parsed from the wire. */
struct nbd_req {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t off;
	uint32_t len;
};

/* A worker takes turns with its slot's other workers reading the next
 * request (under read_lock), then runs it and replies on its own.  The
 * workers are fibers of the connection's thread: one waiting on the
 * store parks, the others go on; no request is handed between threads. */
struct nbd_worker {
	struct nbd_slot *slot;
	int queue;                  /* backend queue index */
	uint8_t *buf;               /* max_block + 2 pages, page aligned;
				     * request data sits at buf + (off % 4096) */
	uint8_t *page;              /* one scratch page for edge RMW */
};

/* A connection's share of the server: its workers, their event loop
 * (allocated at server start, run by the connection's thread) and the
 * socket locks. */
struct nbd_slot {
	struct nbd_server *srv;
	int index;
	int in_use;                 /* under srv->lock */
	int fd;                     /* the connection while in use */
	unsigned conn_id;
	struct fm_loop *loop;
	int active;                 /* worker fibers still serving */
	struct fm_mutex read_lock;  /* one reader of the socket at a time */
	int closing;                /* under read_lock: DISC, EOF or error seen */
	int close_rc;               /* why: 0 (DISC) or -errno */
	struct fm_mutex send_lock;  /* one reply at a time on fd */
	int send_failed;
	uint64_t requests, errors;  /* under send_lock, for the close log */
	struct nbd_worker *workers;
};

/* One accepted socket and the thread that serves it. */
struct nbd_conn {
	struct nbd_server *srv;
	int fd;                     /* -1 when the entry is free */
	int done;                   /* thread finished; join it */
	pthread_t thread;
	unsigned id;
};

#define NBD_THREAD_STACK (512u << 10)

struct nbd_server {
	struct nbd_server_params p;
	pthread_attr_t thread_attr;  /* connection and worker threads */
	struct nbd_backend be;
	int listen_fd;
	int stop_fd[2];             /* self-pipe: nbd_server_stop() writes */
	uint16_t port;
	pthread_mutex_t lock;       /* slots' in_use, conns[] */
	struct nbd_slot *slots;
	struct nbd_conn *conns;     /* 2 * max_conns: room for refused ones */
	int nconns;
	unsigned next_id;
	volatile int stopping;
	struct fm_rwlock rmw_lock;  /* edge read-modify-write vs other writes */
	uint16_t tflags;            /* transmission flags we advertise */
};

/* nbd_sock.c */
int nbd_read_full(int fd, void *buf, size_t len);     /* 0, -EPIPE at EOF, -errno */
int nbd_write_full(int fd, const void *buf, size_t len);
int nbd_discard_bytes(int fd, uint64_t len);

/* nbd_handshake.c: negotiate; on success *slot is claimed for the
 * transmission phase.  0, or -errno when the connection must close. */
int nbd_handshake(struct nbd_server *srv, int fd, unsigned id,
		  struct nbd_slot **slot);

/* nbd_slot.c */
struct nbd_slot *nbd_slot_claim(struct nbd_server *srv);
void nbd_slot_release(struct nbd_slot *slot);
int nbd_slots_create(struct nbd_server *srv);
void nbd_slots_destroy(struct nbd_server *srv);

/* nbd_transmit.c: serve requests until DISC, EOF or error with all of
 * the slot's workers, in the calling thread; returns once every
 * in-flight request is answered. */
void nbd_transmit(struct nbd_slot *slot, int fd, unsigned id);

/* nbd_exec.c: run one request in a worker; returns 0 or -errno for the
 * reply (read data is left at w->buf + off % 4096). */
int nbd_exec(struct nbd_worker *w, const struct nbd_req *r);

#endif
