/* nbd_int.h — what the NBD server's files share; not for other callers.
 * Each file's exports are listed under its name. */
#ifndef FARMEM_NBD_INT_H
#define FARMEM_NBD_INT_H

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <sys/socket.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "admit.h"
#include "fiber.h"
#include "nbd.h"
#include "nbd_psk.h"

struct nbd_slot;

/* One client's byte stream: the socket (non-blocking: a wait parks a
 * fiber or polls a plain thread, always with the bound below), and the
 * TLS session once STARTTLS succeeded.
 *
 * Bounds: during the handshake every read and write ends at deadline_ns,
 * however the client trickles its bytes.  After GO (deadline_ns 0) a
 * read waits at most idle_ns past the last request read or reply sent,
 * renewed while requests are in flight; a reply must leave within
 * idle_ns of its start.  0 everywhere: no bound (the kernel's
 * socketpair). */
struct nbd_io {
	int fd;
	gnutls_session_t tls;       /* NULL until STARTTLS */
	unsigned id;                /* connection id, for messages */
	uint64_t deadline_ns;       /* fm_mono_ns() time; 0: none */
	uint64_t idle_ns;
	uint64_t last_active_ns;
	uint64_t send_start_ns;
	unsigned inflight;          /* requests read and not yet answered */
	int err;                    /* the socket's -errno behind a TLS error */
	/* Transmission on a plain socket: bytes read ahead of the parser,
	 * so requests a client sent together cost one recv, not two each
	 * (header, payload).  NULL during the handshake (STARTTLS must find
	 * every byte after it still in the socket) and under TLS. */
	uint8_t *rbuf;
	uint32_t rcap, rpos, rlen;
	int drained;                /* the last fill took less than rcap: the
				     * next waits for data before its recv
				     * (saves one that would say EAGAIN) */
};

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
	/* Its reply while it waits in the slot's batch (nbd_transmit.c). */
	uint8_t reply_head[16];     /* NBD_REPLY_SIZE */
	struct fm_fiber *fiber;
	int reply_state;            /* REPLY_* */
	int reply_rc;
};

/* A connection's share of the server: its workers, their event loop
 * (allocated at server start, run by the connection's thread) and the
 * socket locks. */
struct nbd_slot {
	struct nbd_server *srv;
	int index;
	int in_use;                 /* under srv->lock */
	struct nbd_io *io;          /* the connection while in use */
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
	/* Plain sockets: the replies a loop turn produced leave together in
	 * one sendmsg at the start of the next (flush_hook), so a client at
	 * queue depth 32 is woken once per batch, not once per reply.  Loop
	 * thread only.  pend: 2 iovecs per worker; pend_w: whose they are. */
	int batched;
	struct fm_loop_hook flush_hook;
	struct iovec *pend;
	int npend;
	struct nbd_worker **pend_w;
	int npend_w;
	int flushing;               /* a worker finishes a batch the socket
				     * did not take at once */
	uint8_t *rbuf;              /* the connection's read-ahead (nbd_io) */
};

/* One accepted socket and the thread that serves it. */
struct nbd_conn {
	struct nbd_server *srv;
	int fd;                     /* -1 when the entry is free */
	int done;                   /* thread finished; join it */
	pthread_t thread;
	unsigned id;
	struct sockaddr_storage peer;
	int admitted;               /* holds a place in srv->admit until GO */
};

#define NBD_THREAD_STACK (512u << 10)
/* A connection's read-ahead: a queue depth of 4 KiB writes, headers
 * included, in one recv. */
#define NBD_READ_AHEAD (128u << 10)

struct nbd_server {
	struct nbd_server_params p;
	pthread_attr_t thread_attr;  /* connection and worker threads */
	struct nbd_backend be;
	int listen_fd;
	int stop_fd[2];             /* self-pipe: nbd_server_stop() writes */
	uint16_t port;
	pthread_mutex_t lock;       /* slots' in_use, conns[], admit */
	/* Handshakes in progress per source host (tcp): one host may hold
	 * at most half the connection entries before GO. */
	struct fm_admit admit;
	struct nbd_slot *slots;
	struct nbd_conn *conns;     /* 2 * max_conns: room for refused ones */
	int nconns;
	unsigned next_id;
	volatile int stopping;
	struct fm_rwlock rmw_lock;  /* edge read-modify-write vs other writes */
	uint16_t tflags;            /* transmission flags we advertise */
	/* TLS, set up at create (nbd_tls.c); tls_required when any is. */
	int tls_required;
	struct nbd_psk_table psk;
	gnutls_psk_server_credentials_t psk_cred;
	gnutls_certificate_credentials_t x509_cred;
	gnutls_priority_t priority;
};

/* nbd_sock.c: whole-buffer I/O on a connection within its bounds (plain
 * or TLS).  0, -EPIPE at EOF, -ETIMEDOUT past a bound, -errno. */
int nbd_read_full(struct nbd_io *io, void *buf, size_t len);
int nbd_write_full(struct nbd_io *io, const void *buf, size_t len);
int nbd_writev_full(struct nbd_io *io, struct iovec *iov, int n);
int nbd_discard_bytes(struct nbd_io *io, uint64_t len);
/* nbd_wait.c: one recv/send on the socket itself, waiting within the
 * bounds: bytes moved, 0 at EOF (recv), or -errno.  GnuTLS's pull and
 * push.  nbd_io_wait: the socket would block; wait for events within
 * the bounds: 0 to retry, -ETIMEDOUT or -errno. */
int nbd_io_wait(struct nbd_io *io, short events);
/* After a socket call failed with errno: 0 to call again (EINTR, or the
 * socket became ready within the bounds), -ETIMEDOUT or -errno. */
int nbd_io_retry(struct nbd_io *io, short events);
ssize_t nbd_sock_recv(struct nbd_io *io, void *buf, size_t len);
ssize_t nbd_sock_send(struct nbd_io *io, const void *buf, size_t len);

/* nbd_listen.c: a listening socket; the unix one mode 0600.  fd or -errno. */
int nbd_listen_unix(const char *path);
int nbd_listen_tcp(const struct fm_addr *a, uint16_t *port);

/* nbd_tls.c */
int nbd_tls_server_init(struct nbd_server *srv);      /* 0 or -errno (logged) */
void nbd_tls_server_fini(struct nbd_server *srv);
/* After STARTTLS was acknowledged: the TLS handshake, within io's
 * deadline; on success io->tls is set.  0 or -errno. */
int nbd_tls_start(struct nbd_server *srv, struct nbd_io *io);
/* One record's worth: bytes moved, 0 at EOF (recv), or -errno. */
ssize_t nbd_tls_recv(struct nbd_io *io, void *buf, size_t len);
ssize_t nbd_tls_send(struct nbd_io *io, const void *buf, size_t len);
/* Say goodbye (bounded) and free the session. */
void nbd_tls_end(struct nbd_io *io);

/* nbd_handshake.c: negotiate; on success *slot is claimed for the
 * transmission phase.  0, or -errno when the connection must close. */
int nbd_handshake(struct nbd_server *srv, struct nbd_io *io,
		  struct nbd_slot **slot);

/* nbd_slot.c */
struct nbd_slot *nbd_slot_claim(struct nbd_server *srv);
void nbd_slot_release(struct nbd_slot *slot);
int nbd_slots_create(struct nbd_server *srv);
void nbd_slots_destroy(struct nbd_server *srv);

/* nbd_transmit.c: serve requests until DISC, EOF or error with all of
 * the slot's workers, in the calling thread; returns once every
 * in-flight request is answered. */
void nbd_transmit(struct nbd_slot *slot, struct nbd_io *io);

/* nbd_exec.c: run one request in a worker; returns 0 or -errno for the
 * reply (read data is left at w->buf + off % 4096). */
int nbd_exec(struct nbd_worker *w, const struct nbd_req *r);

#endif
