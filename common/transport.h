/* transport.h — the client side of a memserver connection.
 *
 * One fm_conn is one authenticated connection to one memserver.  Requests
 * are asynchronous and pipelined: fm_conn_submit() queues a request and
 * returns; the request's done() callback runs exactly once, from the
 * transport's own thread, with 0 or a negative errno.  done() must be
 * short (record the result, wake a waiter): it must not submit on the
 * same connection synchronously or block.  Until done() runs, the
 * request, its iov array and the buffers they point at belong to the
 * transport: a read's data lands there at completion, and rdma posts a
 * transfer that waited for its GRANT after submit has returned.
 *
 * Transports are pluggable through fm_transport_ops (tcp today, rdma
 * later, a fault-injecting one in unit tests); fm_conn_open() picks one
 * from the address kind unless params->ops names one.
 *
 * Failure model: a request without a reply after timeout_ms fails with
 * -ETIMEDOUT and the connection is dropped (every in-flight request fails
 * with -ECONNRESET).  With reconnect set, the transport reconnects and
 * re-authenticates in the background with exponential backoff (100 ms up
 * to 5 s); while it is down, submit fails at once with -ENOTCONN.  The
 * server's host name is resolved once, at open: reconnects dial the same
 * addresses and never wait on DNS.
 * state_cb reports each up/down change.
 */
#ifndef FARMEM_TRANSPORT_H
#define FARMEM_TRANSPORT_H

#include <stdint.h>
#include <sys/uio.h>

#include "auth.h"
#include "parse.h"
#include "protocol.h"

struct fm_conn;
struct fm_loop;
struct fm_req;

struct fm_conn_params {
	struct fm_addr addr;
	/* Who we are: a client identity (a key file), or else the cluster
	 * secret, which acts as the reserved name FM_CLUSTER_NAME. */
	const struct fm_identity *identity;
	const struct fm_secret *secret;
	uint8_t uuid[FM_UUID_LEN];     /* the device identity this connection acts for */
	uint32_t timeout_ms;           /* per request; 0 means 5000 */
	uint32_t connect_timeout_ms;   /* 0 means 3000 */
	unsigned max_inflight;         /* request slots allocated at open; 0 means 256 */
	int reconnect;                 /* keep retrying after a loss */
	void (*state_cb)(void *arg, int up);
	void *state_arg;
	/* A NOTICE the server sent unasked (protocol.h): called from the
	 * transport's thread once the frame's tag and layout checked, with
	 * n pointing into the transport's buffer (copy what you keep).
	 * Short, like done().  NULL: notices are read and dropped.  tcp
	 * only today; rdma connections never see one. */
	void (*notice_cb)(void *arg, const struct fm_notice *n);
	void *notice_arg;
	const struct fm_transport_ops *ops; /* NULL: chosen by addr.kind */
	/* The largest READ or WRITE this connection will carry (0:
	 * FM_MAX_IO); longer ones fail with -EINVAL.  rdma registers bounce
	 * memory by it: a queue's connection needs far less than FM_MAX_IO. */
	uint32_t max_io;
	/* Only the data path's ops: LIST fails with -EOPNOTSUPP, so rdma
	 * posts receive buffers for the small replies, not for LIST's. */
	int data_only;
	struct fm_loop *loop;          /* tcp and rdma: the connection
					* belongs to this event loop
					* (fiber.h): open, submit and close
					* only from its thread, and done()
					* runs there, from the link fiber that
					* replaces the receiver (completion)
					* thread.  NULL: a thread of its own. */
};

struct fm_req {
	/* Set by the caller. */
	uint8_t op;                    /* enum fm_op */
	uint64_t seg_id;               /* FREE, READ, WRITE */
	uint32_t offset;               /* READ, WRITE */
	uint32_t len;                  /* READ, WRITE: bytes (<= FM_MAX_IO) */
	const struct iovec *iov;       /* WRITE: data, summing to len */
	int iovcnt;
	void *buf;                     /* READ: len bytes land here */
	uint32_t arg;                  /* ALLOC: size; LIST: start index */
	void (*done)(struct fm_req *req, int status);
	void *priv;
	/* Results (valid in done() when status is 0). */
	union {
		struct fm_alloc_rep alloc;
		struct fm_stat stat;
		struct {                   /* LIST: up to FM_LIST_MAX entries */
			uint32_t count;
			uint64_t *seg_ids; /* caller-provided arrays, FM_LIST_MAX long */
			uint32_t *sizes;
		} list;
	} rep;
	/* Private to the transport. */
	uint64_t t_deadline_ns;
	uint32_t t_tag;
	struct fm_req *t_next;
};

struct fm_transport_ops {
	const char *name;
	int (*open)(const struct fm_conn_params *p, struct fm_conn **out);
	int (*submit)(struct fm_conn *c, struct fm_req *r);
	int (*is_up)(struct fm_conn *c);
	void (*close)(struct fm_conn *c);
};

/* Every transport's connection struct starts with this. */
struct fm_conn {
	const struct fm_transport_ops *ops;
	/* The memserver's boot id as of the last handshake (0: none yet, or
	 * a transport without one); set before the connection reports up.
	 * Read it with fm_conn_boot_id(). */
	uint64_t boot_id;
};

extern const struct fm_transport_ops fm_transport_tcp;

/* Connects and authenticates before returning (also with reconnect set):
 * -ECONNREFUSED/-ETIMEDOUT/-EHOSTUNREACH for an unreachable server,
 * -EACCES for a wrong key or secret, -EPROTO for a peer that is not a memserver. */
int fm_conn_open(const struct fm_conn_params *p, struct fm_conn **out);
int fm_conn_submit(struct fm_conn *c, struct fm_req *r);
int fm_conn_is_up(struct fm_conn *c);
/* Fails in-flight requests with -ECANCELED, then frees. */
void fm_conn_close(struct fm_conn *c);

/* The server's boot id from the latest handshake: it changes when the
 * memserver restarted (and so lost every segment).  0 when unknown. */
uint64_t fm_conn_boot_id(struct fm_conn *c);

/* Submit and wait for the reply; returns the request's status. */
int fm_conn_call(struct fm_conn *c, struct fm_req *r);

#endif
