/* nbd_int.h — what the NBD server's files share; not for other callers.
 * Each file's exports are listed under its name. */
#ifndef FARMEM_NBD_INT_H
#define FARMEM_NBD_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "nbd.h"

struct nbd_slot;

/* One request as parsed by the reader and run by a worker. */
struct nbd_req {
	uint16_t flags;
	uint16_t type;
	uint64_t cookie;
	uint64_t off;
	uint32_t len;
};

struct nbd_worker {
	struct nbd_slot *slot;
	int queue;                  /* backend queue index */
	pthread_t thread;
	pthread_cond_t cond;        /* under slot->lock: has_req or quit */
	int has_req;
	struct nbd_req req;
	uint8_t *buf;               /* max_block + 2 pages, page aligned;
				     * request data sits at buf + (off % 4096) */
	uint8_t *page;              /* one scratch page for edge RMW */
	struct nbd_worker *next_free;
};

/* A connection's share of the server: workers and the reply lock. */
struct nbd_slot {
	struct nbd_server *srv;
	int index;
	int in_use;                 /* under srv->lock */
	int fd;                     /* the connection while in use */
	pthread_mutex_t lock;       /* free list, inflight, worker wake-ups */
	pthread_cond_t idle;        /* a worker became free */
	struct nbd_worker *free_list;
	int inflight;
	int quit;                   /* workers exit */
	pthread_mutex_t send_lock;  /* one reply at a time on fd */
	int send_failed;
	uint64_t requests, errors;  /* for the close log line */
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

struct nbd_server {
	struct nbd_server_params p;
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
	pthread_rwlock_t rmw_lock;  /* edge read-modify-write vs other writes */
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

/* nbd_transmit.c: serve requests until DISC, EOF or error; waits for
 * every in-flight request before returning. */
void nbd_transmit(struct nbd_slot *slot, int fd, unsigned id);
/* Send a simple reply (and data) under the slot's send lock. */
int nbd_send_reply(struct nbd_slot *slot, uint64_t cookie, int err,
		   const void *data, uint32_t len);

/* nbd_exec.c: run one request in a worker; returns 0 or -errno for the
 * reply (read data is left at w->buf + off % 4096). */
int nbd_exec(struct nbd_worker *w, const struct nbd_req *r);

#endif
