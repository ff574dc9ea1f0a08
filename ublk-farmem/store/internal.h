/* internal.h — what the store's files share; not for frontends.
 *
 * Files: store.c (open/close), store_stats.c (what status and metrics
 * read), server_conn.c (the shared connections and their state),
 * state_file.c (the mapped metadata), ioctx.c (per-queue contexts),
 * store_write.c and store_read.c (the I/O path), append.c (records onto
 * every replica: the write path and the cleaner),
 * stream.c (shared append streams), segment.c (segment life cycle and
 * the request waiter), store_loop.c and store_aio.c (frontend loops and
 * the asynchronous API), cleaner.c, repair.c, sweep.c (orphans and lost
 * copies), maint.c (the background thread running those three),
 * store_key.c (the device's record key and algorithm), membership.c
 * (servers from etcd, followed while the device runs).
 *
 * Locking: s->lock guards the page map, the segment table and the
 * accounting in the state header.  It is held only for short in-memory
 * work, never across a remote request.  A queue's mutex serialises that
 * queue's requests (and lets maint seal an idle queue's open segment).
 */
#ifndef FARMEM_STORE_INTERNAL_H
#define FARMEM_STORE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>

#include "clock.h"
#include "codec.h"
#include "fiber.h"
#include "pagemap.h"
#include "placement.h"
#include "record.h"
#include "store.h"

#define SEG_NONE UINT32_MAX

enum seg_state {
	SEG_FREE = 0,
	SEG_ALLOCATING,       /* slot taken, remote ALLOCs in flight */
	SEG_OPEN,             /* a stream appends to it */
	SEG_FULL,             /* no more appends; writes still in flight */
	SEG_SEALED,           /* complete and immutable: cleaner/repair may act */
	SEG_FREEING,          /* cleaner moved its records; waiting for readers */
};

struct seg_rep {
	uint64_t remote_id;
	int32_t server;       /* -1: empty slot */
	uint32_t boot;        /* boot_tag() of the server's boot id when it
			       * handed out remote_id; 0: unknown (older
			       * state).  Another boot: the copy is gone. */
};

/* A replica's record of which memserver run it lives in: 32 bits of
 * the 64-bit boot id, never 0 for a known one. */
static inline uint32_t boot_tag(uint64_t boot_id)
{
	uint32_t t = (uint32_t)(boot_id ^ (boot_id >> 32));

	return boot_id && !t ? 1 : t;
}

/* One segment table entry (lives in the state mapping). */
struct seg {
	uint32_t state;
	uint32_t used;        /* bytes appended (same on every replica) */
	uint32_t live;        /* bytes of records the page map points at */
	uint32_t flags;       /* SEGF_* */
	struct seg_rep rep[STORE_MAX_REPLICAS];
	uint32_t readers;     /* reads in flight (reset on attach) */
	uint32_t writers;     /* appends in flight (reset on attach) */
};

#define SEGF_DEGRADED  1u     /* lost a replica; seal and repair */
#define SEGF_NOCLEAN   2u     /* cleaning failed (bad record); leave it */
/* Its server asked for replica r to move away (NOTICE): SEGF_EVAC << r. */
#define SEGF_EVAC      0x100u

#define STATE_MAGIC    0x3154534d454d5246ull /* "FRMEMST1" */
#define STATE_VERSION  2u   /* 2: record key and algorithm */

/* Header of the state mapping; the segment table and page map follow. */
struct state_hdr {
	uint64_t magic;
	uint32_t version;
	uint32_t hdr_size;
	uint8_t uuid[FM_UUID_LEN];
	uint64_t size;
	uint64_t npages;
	uint32_t nsegs;
	uint32_t segment_size;
	uint32_t replicas;
	uint32_t nservers;
	uint64_t server_hash[STORE_MAX_SERVERS]; /* XXH3 of each address */
	uint64_t next_version;                   /* atomic */
	uint64_t seg_off, map_off, total_len;
	/* Accounting, rebuilt from the map on attach. */
	uint64_t pages_stored, zero_pages, bytes_stored;
	uint64_t cleaned_segments, rereplicated_segments;
	uint64_t checksum_errors;
	/* The device's records (record.h): enum rec_aead and its key.  The
	 * key never leaves this file and the process; the file is 0600. */
	uint32_t aead;
	uint32_t pad;
	uint8_t key[REC_KEY_SIZE];
	uint64_t auth_errors;
};

/* Remote requests in flight for one caller.  A fiber waits by parking
 * (the last done() wakes it, from whichever thread completes it); a
 * plain thread (tools, tests, maintenance) on the condition variable. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	unsigned pending;
	struct fm_fiber *fiber;   /* parked in waiter_wait, under lock */
};

/* A request slot: the transport request plus who waits for it. */
struct qreq {
	struct fm_req req;
	struct waiter *w;
	int status;
	int server;
	uint64_t boot;        /* the server's boot id when submitted */
	struct iovec iov;
};

/* Per page of a request, while it is in flight. */
struct page_io {
	uint32_t rec_off;     /* in the staging/read buffer */
	uint32_t rec_len;     /* 0: zero page */
	uint64_t version;
	uint32_t seg, seg_off;
	struct pm_entry e;    /* read: the entry looked up; cleaner: the old home */
	uint64_t page;        /* cleaner: which page the record is */
	int ok;
	int status, server;   /* read: how the batched fetch went */
};

/* A run of records written to one segment with one WRITE per replica. */
struct wchunk {
	uint32_t seg, seg_off, len, buf_off;
	int first, last;      /* page indexes in the request */
	int req0, nreq;       /* slots used, one per replica */
};

/* An append stream: one open segment that several queues append to
 * concurrently.  The lock serialises only choosing (and opening) the
 * segment; space is reserved under s->lock and written in parallel. */
struct stream {
	struct fm_mutex lock;     /* held across a segment's ALLOCs */
	uint32_t open_seg;    /* SEG_NONE when none */
};

/* A frontend loop's own connection to each tcp server (NULL where it
 * has none): requests, replies and the wake-up stay in the loop's
 * thread.  The shared connections in store_server stay the fallback and
 * the source of truth for a server's up/down state. */
struct store_lconns {
	struct fm_loop *loop;
	int first, n;                 /* the store queues that use it */
	struct fm_conn *conn[STORE_MAX_SERVERS];
	uint32_t max_io;              /* largest READ/WRITE they take */
	/* store_submit(): the queues with no I/O in flight (a stack). */
	int idle_q[STORE_MAX_QUEUES];
	int nidle;
};

/* A thread's I/O context: a frontend queue, or the maintenance thread. */
struct ioctx {
	pthread_mutex_t lock;
	int id;
	struct stream *st;    /* where its writes append */
	struct store_lconns *lc; /* its loop's connections, or NULL */
	uint8_t *buf;         /* staging (write) / landing (read): npages * REC_MAX_LEN */
	size_t buf_len;
	uint8_t *clear;       /* REC_MAX_PLEN: one payload in the clear on a
			       * sealed device (compressed before sealing,
			       * opened before decompressing) */
	struct page_io *pio;  /* npages */
	struct wchunk *chunks; /* npages */
	uint32_t *held;       /* npages: segments holding records that are
			       * written but not yet in the page map; each
			       * keeps a writer count (so it stays FULL, never
			       * SEALED with live 0 for the cleaner to free)
			       * until records_settle() */
	unsigned nheld;
	struct qreq *reqs;    /* nreqs */
	unsigned nreqs;
	unsigned npages;
	struct waiter w;
	struct waiter cw;     /* control requests (ALLOC) while data is in flight */
	struct fm_codec codec;
	int transient;        /* records_append: what failed failed only on
			       * transport errors (worth another round) */
};

struct store_server {
	struct fm_conn *conn;
	int up;               /* atomic */
	char addr[300];
	struct fm_addr fa;
	uint64_t reads, writes, errors; /* atomic */
	struct store *s;
	int idx;
	uint64_t retry_ns;    /* maint: next connect attempt when conn is NULL */
	int need_sweep;       /* maint: look for orphaned segments when up */
	/* A NOTICE for every segment here (drain): atomic; cleared once
	 * none is left.  evac_deadline_ns: when the server stops waiting. */
	int evac_all;
	uint64_t evac_deadline_ns;
	uint64_t evacuated;   /* copies moved off it (atomic) */
};

struct store {
	struct store_config cfg;
	struct rec_key rkey;      /* how records are framed; read-only after open */
	int replicas;
	uint32_t seg_size;
	uint32_t max_io;
	uint32_t timeout_ms;
	uint32_t retry_ms;        /* how long an I/O keeps retrying rounds over
				   * replicas that all failed transiently */
	uint64_t npages;

	/* State mapping. */
	void *map_base;
	size_t map_len;
	int state_fd;
	struct state_hdr *hdr;
	struct seg *segs;
	struct pm_entry *map;

	pthread_mutex_t lock;
	pthread_cond_t seg_cv;    /* readers dropped / a slot was freed; CLOCK_MONOTONIC */
	unsigned place_cursor;
	uint64_t alloc_gen;       /* bumped when a new segment gets replicas (lock) */
	int clean_urgent;         /* servers refused ALLOC: clean any dead bytes (lock) */
	uint32_t evac_cursor;     /* evacuate.c: where the next look starts (maint) */

	/* Servers: a membership thread may append one (server_add) while
	 * everything else runs; it fills srv[n] first, then publishes
	 * nservers with a release store, and never removes one. */
	int nservers;
	struct store_server srv[STORE_MAX_SERVERS];
	struct place_hints hints;     /* membership's view; zero without etcd */
	struct membership *mem;       /* NULL without etcd */

	int nqueues;
	struct ioctx *q;
	int nstreams;
	struct stream *streams;
	struct stream maint_stream;
	struct ioctx maint_io;
	uint8_t *maint_seg_buf;   /* one whole segment, for the cleaner */
	uint64_t *sweep_ids;      /* sweep_cap: LIST results */
	uint32_t *sweep_sizes;    /* FM_LIST_MAX */
	uint64_t *sweep_ref;      /* nsegs: ids the table references */
	uint32_t sweep_cap;

	/* Background thread. */
	pthread_t maint;
	int maint_running;
	pthread_mutex_t maint_run;   /* one maintenance pass at a time */
	pthread_mutex_t maint_lock;
	pthread_cond_t maint_cv;     /* CLOCK_MONOTONIC */
	int maint_stop, maint_kick;

	/* I/O waiting between retry rounds sleeps here; store_close() and a
	 * server coming back wake it. */
	pthread_mutex_t retry_lock;
	pthread_cond_t retry_cv;  /* CLOCK_MONOTONIC */
	int closing;              /* atomic: store_close() began; stop retrying */

	/* The queues' compressors, most recently used on top.  Frontends
	 * hand each request to whichever worker is idle, so requests rotate
	 * over every queue; a context used a moment ago still has its match
	 * tables in cache, a queue's own one is cold (a 4 KiB zstd compress
	 * took ~2x longer).  One per queue, and a queue takes at most one,
	 * under its lock: never empty.  Only compression is lent: a queue
	 * decompresses with its own codec's other contexts. */
	pthread_mutex_t codec_lock;
	struct fm_codec **codec_free;
	unsigned codec_nfree;

	/* Counters (atomic). */
	uint64_t reads, writes, discards, read_errors, write_errors;
};

static inline uint64_t atomic_add64(uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
static inline uint64_t atomic_get64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline int srv_up(const struct store_server *v) { return __atomic_load_n(&v->up, __ATOMIC_ACQUIRE); }
/* The shared connection: maint stores it atomically when it (re)connects. */
static inline struct fm_conn *srv_conn(const struct store_server *v) { return __atomic_load_n(&v->conn, __ATOMIC_ACQUIRE); }
/* May new segments go to v?  Up, and not being drained (it would only
 * refuse the ALLOC). */
static inline int srv_placeable(const struct store_server *v)
{
	return srv_conn(v) && srv_up(v) && !__atomic_load_n(&v->evac_all, __ATOMIC_ACQUIRE);
}

/* A copy that failed verification: sealed records count apart, as an
 * authentication failure is what a forgery looks like. */
static inline void count_bad_copy(struct store *s)
{
	atomic_add64(s->rkey.aead != REC_AEAD_NONE ? &s->hdr->auth_errors :
		     &s->hdr->checksum_errors, 1);
}
static inline const char *bad_copy_text(const struct store *s)
{
	return s->rkey.aead != REC_AEAD_NONE ? "record failed to open" : "bad copy";
}

/* server_conn.c */
/* The transports' state callback for server arg (a store_server). */
void store_server_state_cb(void *arg, int up);
int server_connect(struct store *s, int i);
/* What every connection to server i is opened with (no state_cb). */
void server_conn_params(struct store *s, int i, struct fm_conn_params *p);
/* Request slots for a connection to server i that carries queues'
 * requests: one per page of the largest I/O each, within the
 * transport's limit. */
unsigned server_conn_slots(const struct store *s, int i, int queues);
/* boot_tag() of server i's current boot id; 0 when not known. */
uint32_t server_boot_tag(const struct store *s, int i);
/* r lives in an earlier run of its server (which restarted since): its
 * id names nothing there now, or someone else's segment. */
int rep_stale(const struct store *s, const struct seg_rep *r);
/* Drop every replica on server i that is stale; returns how many.
 * Lock held. */
uint32_t server_drop_stale(struct store *s, int i);

/* Append a server (membership): connects it, records its address in the
 * state header, publishes it.  Its index, or -ENOSPC when full. */
int server_add(struct store *s, const struct fm_addr *fa);
struct state_hdr;
/* Attach with etcd: reorder srv[] to the state file's indexes. */
void server_order_from_state(struct store *s, struct state_hdr *h);
/* Index of the server with this address text (addr_str form), or -1. */
int server_find(const struct store *s, const char *addr);

/* membership.c */
/* Opens etcd and reads the members: servers[] and nservers of *out (a
 * copy of cfg) are set from them.  err for the user. */
int membership_open(const struct store_config *cfg, struct store_config *out,
		    struct membership **m, char *err, size_t errlen);
/* Gives the store the members' hints and starts the watch thread. */
int membership_start(struct membership *m, struct store *s);
/* Stops the thread (bounded by one watch period) and closes etcd. */
void membership_close(struct membership *m);
void membership_stats(struct membership *m, struct store_stats *st);

/* state_file.c */
int state_open(struct store *s, char *err, size_t errlen);
void state_close(struct store *s);
void state_rebuild(struct store *s);

/* store_key.c */
/* The algorithm a new device gets (AUTO resolved); err for the user. */
int key_choose(const struct store_config *c, int *aead, char *err, size_t errlen);
/* A fresh random key for a new device's header. */
void key_generate(struct state_hdr *h, int aead);
/* s->rkey from the state header (checked against the config), with a
 * fresh epoch, in locked memory. */
int key_setup(struct store *s, char *err, size_t errlen);
void key_fini(struct store *s);
enum store_encrypt key_encrypt(const struct store *s);

/* segment.c */
void waiter_init(struct waiter *w);
void waiter_destroy(struct waiter *w);
void waiter_add(struct waiter *w, unsigned n);
void waiter_wait(struct waiter *w);
/* Submit a prepared slot to server idx (counts it in the waiter).  A
 * submit error is recorded as the slot's status; returns nothing. */
void req_submit(struct store *s, struct ioctx *io, struct qreq *q, int server);
void req_submit_w(struct store *s, struct ioctx *io, struct waiter *w,
		  struct qreq *q, int server);
/* One WRITE of buf to a replica, waited for, through io's first slot.
 * Returns the request's status; the caller decides what a failure means. */
int write_copy_sync(struct store *s, struct ioctx *io, const struct seg_rep *rep,
		    uint32_t off, const void *buf, uint32_t len);
int is_conn_error(int err);
/* A transport failure that may pass (timeout, reset, reconnecting) —
 * not -ECANCELED, which means the connection is being closed. */
int is_transient_error(int err);
/* Between retry rounds of one I/O: sleeps *backoff_ms (doubling it, up
 * to a cap; never past deadline_ns), then lifts mark-downs of servers
 * whose transport is back.  -ETIMEDOUT when the deadline has passed,
 * -ECANCELED when the store is closing: give up. */
int io_retry_wait(struct store *s, uint64_t deadline_ns, unsigned *backoff_ms);
uint64_t io_deadline_ns(const struct store *s);
/* Mark servers whose connection is up again as up (what maint does). */
void servers_refresh(struct store *s);
void server_failed(struct store *s, int server, int err, const char *what);
int seg_open(struct store *s, struct ioctx *io, uint32_t *out);
/* No more appends; sealed once the appends in flight are done. */
void seg_retire(struct store *s, uint32_t idx);
/* An append to idx finished. */
void seg_write_done(struct store *s, uint32_t idx);
int seg_live_replicas(const struct store *s, const struct seg *g);
void seg_drop_replica(struct store *s, uint32_t idx, int server);
void seg_free_remote(struct store *s, struct ioctx *io, uint32_t idx);
/* Whole segment into s->maint_seg_buf, verified (maintenance thread). */
int seg_load(struct store *s, uint32_t idx, uint32_t *used);
/* The same, but a record for which must_open() says 0 is only parsed,
 * not opened: the cleaner verifies the records it moves, not the dead
 * ones around them.  A forged header among those can only cut the walk
 * short (the copy counts as bad) or skip records, which then stay live
 * in the segment and keep it. */
int seg_load_opening(struct store *s, uint32_t idx, uint32_t *used,
		     int (*must_open)(struct store *s, uint32_t idx, uint32_t off,
				      const struct rec_hdr *h));
/* Read len bytes at off from replica r of segment idx into buf. */
int seg_read_range(struct store *s, struct ioctx *io, const struct seg_rep *r,
		   uint32_t off, uint32_t len, void *buf);
/* Account a map entry's record as dead (entry being replaced).  Lock held. */
void map_release(struct store *s, const struct pm_entry *e);

/* stream.c */
void stream_init(struct stream *st);
void stream_fini(struct stream *st);
/* Reserve room for up to want bytes of records starting at pio[first]
 * (only whole records, at least one): opens a segment when needed.
 * Fills *c (seg, seg_off, len, first, last) and counts a writer. */
int stream_reserve(struct store *s, struct ioctx *io, unsigned first, unsigned n,
		   struct wchunk *c);
/* Retire the stream's open segment when it is no longer fit for appends
 * or pred says so (always when pred is NULL).  A busy stream is skipped
 * unless wait. */
void stream_retire_if(struct store *s, struct stream *st,
		      int (*pred)(const struct store *, const struct seg *), int wait);

/* ioctx.c */
int ioctx_init(struct store *s, struct ioctx *io, int id);
void ioctx_fini(struct ioctx *io);
int io_check_range(struct store *s, int queue, uint64_t off, uint64_t len, uint64_t maxlen);
/* The pool of the queues' compressors (s->q set up); 0 or -ENOMEM. */
int codec_pool_init(struct store *s);
/* The warmest free codec to compress with, io->lock held; give it back
 * with codec_put() before unlocking. */
struct fm_codec *codec_get(struct store *s, struct ioctx *io);
void codec_put(struct store *s, struct ioctx *io, struct fm_codec *c);

/* append.c */
/* Append records pio[0..n) not yet ok (rec_len > 0) from io->buf to
 * io's open segment(s), writing every replica; sets pio[].ok/seg/seg_off.
 * Returns 0 or the error that stopped it (seg_open). */
int records_append(struct store *s, struct ioctx *io, unsigned n);
/* The appended records are in the map (or never will be): let their
 * segments seal.  Call after every records_append(), map lock not held. */
void records_settle(struct store *s, struct ioctx *io);

/* cleaner.c */
int cleaner_run(struct store *s);        /* 1 when a segment was cleaned */
int cleaner_wanted(struct store *s);

/* repair.c */
int repair_run(struct store *s);         /* 1 when a segment was repaired */
void repair_seal_degraded(struct store *s);
/* A new segment on an up server holding none of reps (maint's slot 0):
 * 0 with *out filled, or -ENOSPC when no server took it. */
int repair_alloc_target(struct store *s, struct ioctx *io, const struct seg_rep *reps,
			struct seg_rep *out);
/* Sealed segment idx (copies reps) onto to, verified records first. */
int repair_copy(struct store *s, struct ioctx *io, uint32_t idx,
		const struct seg_rep *reps, const struct seg_rep *to);

/* evacuate.c: segments a server asked us to move away (NOTICE) */
/* notice_cb of every connection to a server (arg: its store_server). */
void evacuate_notice_cb(void *arg, const struct fm_notice *n);
/* Seal open segments with a copy to move, then move one sealed
 * segment's copy; 1 when one moved. */
int evacuate_run(struct store *s);

/* sweep.c */
int sweep_server(struct store *s, int i);

/* maint.c */
int maint_start(struct store *s);
void maint_stop(struct store *s);

/* Wake the maintenance thread (a server changed, a segment needs
 * repair or cleaning).  The I/O path only ever does this: it never calls
 * into maintenance itself. */
static inline void maint_kick(struct store *s)
{
	pthread_mutex_lock(&s->maint_lock);
	s->maint_kick = 1;
	pthread_cond_signal(&s->maint_cv);
	pthread_mutex_unlock(&s->maint_lock);
}

#endif
