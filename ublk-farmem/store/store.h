/* store.h — a block device's 4 KiB pages kept in memservers.
 *
 * The store knows no frontend and no particular transport.  Frontends
 * (NBD, ublk) call it from their own threads, each with its own queue
 * index: every queue has buffers and request slots allocated at
 * store_open(), so the I/O path never allocates.  Calls are synchronous
 * for the caller but parallel inside: the pages of one request are sent
 * to all their replicas at once and the call returns when all are done.
 *
 * Offsets and lengths are multiples of STORE_PAGE; len <= config max_io.
 * Return values are 0 or a negative errno (-EIO when no good copy is
 * left, -ENOSPC when no server can give a new segment, -EINVAL for a
 * misaligned or out-of-range request).
 */
#ifndef FARMEM_STORE_H
#define FARMEM_STORE_H

#include <stdint.h>

#include "auth.h"
#include "etcd.h"
#include "parse.h"
#include "transport.h"

#define STORE_PAGE          4096u
#define STORE_MAX_SERVERS   32
#define STORE_MAX_REPLICAS  4
#define STORE_MAX_QUEUES    64

enum store_compress { STORE_COMPRESS_NONE = 0, STORE_COMPRESS_ZSTD, STORE_COMPRESS_LZ4 };

/* How records are protected where they are stored (record.h).  AUTO:
 * AES-256-GCM where the CPU has AES-NI, else XChaCha20-Poly1305.  The
 * choice is kept in the state with the device's key, so attaching to
 * existing state (recover) uses what the device was created with; an
 * explicit value that differs from it is refused. */
enum store_encrypt {
	STORE_ENCRYPT_AUTO = 0,
	STORE_ENCRYPT_NONE,             /* plain records, XXH3 checksum */
	STORE_ENCRYPT_AES256GCM,
	STORE_ENCRYPT_XCHACHA20POLY1305,
};

struct store_config {
	struct fm_addr servers[STORE_MAX_SERVERS];
	int nservers;
	struct fm_secret secret;        /* used when identity.name is empty */
	struct fm_identity identity;    /* who we authenticate as (a key file,
					 * or the cluster's own from the secret) */
	uint8_t uuid[FM_UUID_LEN];      /* device identity; survives restarts */
	uint64_t size;                  /* device bytes, multiple of STORE_PAGE */
	int replicas;                   /* 0: 2 when nservers >= 2, else 1 */
	enum store_compress compress;
	int level;                      /* zstd level (negative allowed); 0 = default */
	enum store_encrypt encrypt;     /* 0: AUTO (on) */
	uint32_t segment_size;          /* 0: 4 MiB */
	int queues;                     /* frontend queues (threads) */
	uint32_t max_io;                /* largest request bytes; 0: 1 MiB */
	uint32_t timeout_ms;            /* per remote request; 0: 5000 */
	const char *state_path;         /* NULL: private memory; else a file
					 * (under /run/farmem) mapped shared so
					 * a restarted daemon can attach */
	int attach;                     /* 1: state_path holds existing state */
	const struct fm_transport_ops *transport; /* NULL: by address kind */
	int streams;                    /* open segments appended to at once;
					 * 0: min(queues, nservers) */
	int no_background;              /* 1: no cleaner/repair thread; the
					 * caller runs store_maintain() (tests) */
	/* Membership through etcd (membership.c): with etcd.n > 0, servers[]
	 * is ignored; the cluster's members are the servers at open, and a
	 * member that joins later is added, one whose key goes is lost. */
	struct etcd_endpoints etcd;
	char cluster[ETCD_CLUSTER_MAX];
};

struct store_server_stats {
	char addr[300];
	int up;
	uint64_t segments;              /* this device's segments on it */
	uint64_t bytes;                 /* remote bytes allocated */
	uint64_t reads, writes, errors;
	/* etcd: what the member published; gone once its key went. */
	uint64_t pool_free;
	char zone[ETCD_ZONE_MAX];
	int gone;
};

enum store_etcd_state {
	STORE_ETCD_OFF = 0,             /* a fixed server list */
	STORE_ETCD_OK,                  /* the last call to etcd succeeded */
	STORE_ETCD_UNREACHABLE,         /* the last view is kept meanwhile */
};

struct store_stats {
	uint64_t size;
	uint64_t pages_stored;          /* non-zero pages mapped */
	uint64_t zero_pages;            /* written as zero, cost nothing */
	uint64_t incompressible_pages;  /* writes stored raw, since open: their
					 * sampled bytes said zstd cannot shrink them */
	uint64_t bytes_logical;         /* pages_stored * 4096 */
	uint64_t bytes_stored;          /* live compressed record bytes */
	uint64_t bytes_remote;          /* allocated segment bytes, all replicas */
	uint64_t segments;
	uint64_t degraded_segments;     /* fewer than R live copies */
	uint64_t reads, writes, discards;
	uint64_t checksum_errors;       /* bad plain copies detected (then retried) */
	uint64_t auth_errors;           /* sealed copies that failed to open (then retried) */
	enum store_encrypt encrypt;     /* the device's (never AUTO) */
	uint64_t read_errors;           /* reads that failed on every replica */
	uint64_t write_errors;
	uint64_t cleaned_segments;
	uint64_t rereplicated_segments;
	int replicas;
	int nservers;
	struct store_server_stats server[STORE_MAX_SERVERS];
	enum store_etcd_state etcd;
	char etcd_endpoint[ETCD_URL_MAX]; /* the one last used */
	char etcd_error[160];           /* why it is unreachable */
	uint64_t etcd_errors;           /* failed rounds with etcd */
	uint64_t members_joined, members_lost; /* since open */
};

struct store;

/* Connects to the servers (at least `replicas` must answer), allocates
 * all metadata up front.  err gets a message for the user. */
int store_open(const struct store_config *cfg, struct store **out,
	       char *err, size_t errlen);
/* Stops background work and closes connections; remote segments stay
 * (held by the servers' lease) unless store_release() was called. */
void store_close(struct store *s);
/* Frees every remote segment of this device (for `del`). */
int store_release(struct store *s);

int store_read(struct store *s, int queue, uint64_t off, uint32_t len, void *buf);
int store_write(struct store *s, int queue, uint64_t off, uint32_t len, const void *buf);
/* Discard and write-zeroes both leave the pages reading as zero and free
 * their remote bytes. */
int store_discard(struct store *s, int queue, uint64_t off, uint64_t len);
/* Every acknowledged write is already on all live replicas; flush waits
 * for nothing more but is the frontend's barrier point. */
int store_flush(struct store *s, int queue);

/* Frontend event loops (fiber.h).  store_loop_attach(), from the loop's
 * thread after fm_loop_attach(), gives the loop its own connection to
 * every tcp server (rdma too with FARMEM_RDMA_QUEUE_CONNS=1, see
 * store_loop.c), which store queues [first, first + n) use from then
 * on: their requests, replies and wake-ups stay in that thread (a server
 * it cannot reach goes through the shared connection).  The loop needs
 * store_loop_fibers() fibers beyond the caller's own, for the
 * connections' link fibers.  store_loop_detach() closes them, from the
 * same thread, before fm_loop_detach(). */
int store_loop_attach(struct store *s, struct fm_loop *loop, int first, int n);
void store_loop_detach(struct store *s, int first, int n);
int store_loop_fibers(const struct store *s);

/* The asynchronous API, for a thread that runs an attached loop:
 * store_submit() starts a read, write, discard or flush of a page range
 * on one of the loop's idle store queues and returns at once; done()
 * runs later in the same thread with 0 or -errno, as the calls above
 * would return.  Up to n (store_loop_attach) are in flight at a time:
 * -EBUSY beyond that, so the caller queues and resubmits from a done().
 * -EINVAL when the thread has no loop attached to this store.  The
 * loop needs n fibers of its own for them (beyond store_loop_fibers()).
 * The synchronous calls above are what each runs, in its own fiber. */
enum store_op { STORE_OP_READ, STORE_OP_WRITE, STORE_OP_DISCARD, STORE_OP_FLUSH };

struct store_aio {
	enum store_op op;
	uint64_t off;
	uint64_t len;                   /* read/write: <= max_io */
	void *buf;
	void (*done)(struct store_aio *a, int rc);
	void *priv;
	/* Private to the store. */
	struct store *s;
	struct store_lconns *lc;
	int queue;
};

int store_submit(struct store *s, struct store_aio *a);

void store_get_stats(struct store *s, struct store_stats *st);
/* One maintenance pass now, in the caller's thread: mark servers up or
 * down, re-replicate degraded segments, clean sparse ones.  Returns how
 * many segments were repaired or cleaned.  The background thread runs
 * the same pass on its own. */
int store_maintain(struct store *s);
uint64_t store_size(const struct store *s);
/* "auto", "none", "aes256gcm", "xchacha20poly1305". */
const char *store_encrypt_name(enum store_encrypt e);
/* By that name: 0 with *out set, or -EINVAL. */
int store_encrypt_parse(const char *name, enum store_encrypt *out);
/* What a new device gets for want on this machine (AUTO resolved):
 * 0, or -ENOTSUP when want needs AES-NI that this CPU lacks. */
int store_encrypt_resolve(enum store_encrypt want, enum store_encrypt *out);

#endif
