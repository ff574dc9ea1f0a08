/* nbd.h — an NBD server (newstyle fixed handshake, simple replies) over a
 * block backend: `farmem-blk serve` puts the store behind it.
 *
 * Threads: one accept loop (nbd_server_run, the caller's thread) and one
 * thread per connection that does the handshake and then runs the
 * connection's event loop: per connection slot `workers` worker fibers,
 * each owning one backend queue (slot * workers + i) and buffers
 * allocated at create time, so requests of one connection run in
 * parallel in that one thread and nothing is allocated per request.
 */
#ifndef FARMEM_NBD_H
#define FARMEM_NBD_H

#include <stdint.h>

#include "parse.h"

struct fm_loop;

/* What the server serves.  Offsets and lengths handed to these are
 * multiples of 4096 and within size; len of read/write <= max_io. */
struct nbd_backend {
	void *ctx;
	uint64_t size;
	uint32_t max_io;        /* largest single read/write the backend takes */
	int (*read)(void *ctx, int queue, uint64_t off, uint32_t len, void *buf);
	int (*write)(void *ctx, int queue, uint64_t off, uint32_t len, const void *buf);
	int (*discard)(void *ctx, int queue, uint64_t off, uint64_t len);
	int (*flush)(void *ctx, int queue);
	/* Optional: a connection's thread has set up its event loop for
	 * queues [first, first + n) / is about to tear it down. */
	int (*attach)(void *ctx, struct fm_loop *loop, int first, int n);
	void (*detach)(void *ctx, int first, int n);
	int extra_fibers;       /* fibers attach() needs in the loop */
};

struct nbd_server_params {
	struct fm_addr listen;  /* ADDR_UNIX or ADDR_TCP; kind 0: no listener */
	int max_conns;          /* connections served at once */
	int workers;            /* worker contexts per connection */
	uint32_t max_block;     /* advertised maximum request; multiple of 4096 */
	const char *export_name;   /* listed by OPT_LIST; any name is accepted */
	const char *description;   /* NBD_INFO_DESCRIPTION, may be NULL */
	/* Bounds on what a client may hold (0: none, for trusted sockets
	 * such as the kernel's socketpair): the whole handshake, from
	 * accept to GO, and the time without a request while none is in
	 * flight (or to send one reply) after it. */
	uint32_t handshake_timeout_ms;
	uint32_t idle_timeout_ms;
	/* TLS (NBD_OPT_STARTTLS through GnuTLS).  With either set, TLS is
	 * required: every option but STARTTLS and ABORT before it gets
	 * NBD_REP_ERR_TLS_REQD. */
	const char *tls_psk_file;  /* "username:hexkey" lines (psktool's format) */
	const char *tls_cert_file; /* x509: PEM certificate chain ... */
	const char *tls_key_file;  /* ... and its private key */
};

struct nbd_server;

/* Loads the TLS credentials, binds and listens (a unix socket is made
 * mode 0600 whatever the umask; a stale socket at its path is replaced,
 * and it is removed again at destroy), allocates every slot.  0 or
 * -errno (logged). */
int nbd_server_create(const struct nbd_server_params *p,
		      const struct nbd_backend *be, struct nbd_server **out);
/* Accepts and serves connections until nbd_server_stop(); then lets every
 * connection finish its in-flight requests and closes it.  0 or -errno. */
int nbd_server_run(struct nbd_server *s);
/* Async-signal-safe: makes nbd_server_run() return. */
void nbd_server_stop(struct nbd_server *s);
void nbd_server_destroy(struct nbd_server *s);

/* The bound TCP port (useful with port 0) or 0 for unix sockets. */
uint16_t nbd_server_port(const struct nbd_server *s);

/* Serve one already-connected socket to the end (handshake, requests,
 * disconnect) in the calling thread, using slot 0: for unit tests over a
 * socketpair.  The server must have been created with max_conns >= 1. */
int nbd_server_serve_fd(struct nbd_server *s, int fd);

#endif
