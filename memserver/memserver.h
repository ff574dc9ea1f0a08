/* memserver.h — farmem-memserver's internal interfaces, listed by file.
 *
 * main ─► server (sockets, epoll) ─► session (one connection's protocol)
 *                                      ─► segtab (slots in the pool)
 *                                      ─► devtab (clients, devices, leases)
 *                                      ─► quota (what one client may hold)
 * pool owns the memory; settings turns flags and the config file into a
 * checked ms_settings.  Functions return 0 or -errno.
 */
#ifndef FARMEM_MEMSERVER_H
#define FARMEM_MEMSERVER_H

#include <stddef.h>
#include <stdint.h>

#include "admit.h"
#include "auth.h"
#include "chan.h"
#include "config.h"
#include "etcd.h"
#include "parse.h"
#include "protocol.h"

struct metrics_pool_snap;

/* ---- pool.c: the memory pool, allocated up front and pinned ---- */

enum ms_huge { MS_HUGE_AUTO, MS_HUGE_YES, MS_HUGE_NO };

struct ms_pool {
	uint8_t *base;
	size_t size;        /* usable bytes, as asked */
	size_t map_size;    /* bytes mapped (rounded to the page size used) */
	int huge;           /* 1: hugetlbfs pages; 2: transparent huge pages asked */
	int locked;         /* 1 when mlock() succeeded */
};

int ms_pool_create(struct ms_pool *p, uint64_t size, enum ms_huge huge,
		   int allow_unlocked);
void ms_pool_destroy(struct ms_pool *p);
/* Give the pages of [p, p+len) back to the kernel (a donor under
 * pressure): munlock, then MADV_DONTNEED.  0 or -errno (logged). */
int ms_pool_release(uint8_t *p, size_t len, int locked);
/* Take them again: mlock (which faults them in) when the pool is
 * locked, else touch every page.  0 or -errno (logged). */
int ms_pool_restore(uint8_t *p, size_t len, int locked);
/* Would mlock of size bytes succeed here?  0, or -ENOMEM with why. */
int ms_pool_lock_check(uint64_t size, char *why, size_t len);

/* ---- segtab.c: fixed-size slots of the pool, owned by devices ----
 *
 * A segment id is (generation << 32 | slot).  Freeing a slot bumps its
 * generation, so an old id of a reused slot is rejected as -ENOENT.
 */

struct ms_slot {
	uint32_t owner;      /* device id; 0 when free */
	uint32_t gen;        /* never 0 */
	uint32_t size;       /* bytes the owner asked for */
	uint32_t next_free;  /* free list link */
	uint32_t retired;    /* 1: memory given back, on no list, never handed out */
	uint64_t notice_end; /* ms: its owner was told to move it by then; 0: not */
};

/* Called with a slot's memory when it is retired or restored (the pool's
 * ms_pool_release/ms_pool_restore); NULL in unit tests. */
struct ms_slot_mem {
	int (*release)(uint8_t *p, size_t len, int locked);
	int (*restore)(uint8_t *p, size_t len, int locked);
	int locked;
	int pinned_by_device;  /* an RDMA region holds the pool: no release */
};

struct ms_segtab {
	uint8_t *base;
	uint32_t seg_max;
	uint32_t nslots;
	uint32_t nused;
	uint32_t free_head;  /* nslots when none */
	struct ms_slot *slots;
	/* Shrinking (shrink.c): retired slots gave their memory back;
	 * retire_want more are to be retired as soon as they are freed. */
	uint32_t nretired;
	uint32_t retire_want;
	struct ms_slot_mem mem;
};

int ms_segtab_init(struct ms_segtab *t, uint8_t *base, uint64_t pool_bytes,
		   uint32_t seg_max);
/* Start every slot's generation at gen (not 0), from the boot id: ids
 * handed out before a restart then name nothing after it. */
void ms_segtab_seed(struct ms_segtab *t, uint32_t gen);
void ms_segtab_fini(struct ms_segtab *t);
/* -EINVAL for a size that is 0, not page-aligned or above seg_max;
 * -ENOSPC when the pool is full. */
int ms_segtab_alloc(struct ms_segtab *t, uint32_t owner, uint32_t size,
		    uint64_t *seg_id);
int ms_segtab_free(struct ms_segtab *t, uint32_t owner, uint64_t seg_id);
/* Bytes [offset, offset+len) of owner's segment: -ENOENT for an id that
 * is not owner's, -ERANGE for a range beyond the segment. */
int ms_segtab_range(struct ms_segtab *t, uint32_t owner, uint64_t seg_id,
		    uint32_t offset, uint32_t len, uint8_t **ptr);
/* Frees every segment of owner; returns how many. */
uint32_t ms_segtab_free_owner(struct ms_segtab *t, uint32_t owner);
/* Owner's segments in slot order, skipping the first `start`; fills up to
 * max entries and returns the count. */
uint32_t ms_segtab_list(const struct ms_segtab *t, uint32_t owner,
			uint32_t start, uint64_t *ids, uint32_t *sizes,
			uint32_t max);
/* Pool bytes now: the slots not retired. */
uint64_t ms_segtab_pool_bytes(const struct ms_segtab *t);
/* Take up to n free slots off the free list and give their memory back;
 * returns how many. */
uint32_t ms_segtab_retire_free(struct ms_segtab *t, uint32_t n);
/* Put up to n retired slots back on the free list (memory taken again);
 * returns how many. */
uint32_t ms_segtab_restore(struct ms_segtab *t, uint32_t n);
/* A slot's id, whoever owns it (0 when free or retired). */
uint64_t ms_segtab_id(const struct ms_segtab *t, uint32_t slot);
/* Free slot i whatever its owner (a notice's deadline passed); returns
 * the owner it had (0: was free). */
uint32_t ms_segtab_force_free(struct ms_segtab *t, uint32_t slot);
uint64_t ms_segtab_used_bytes(const struct ms_segtab *t);

/* ---- quota.c: how many segments one client may hold ---- */

#define MS_QUOTA_RULES 64

/* One limit: none, a share of the pool, or bytes. */
struct ms_limit {
	enum { MS_LIMIT_NONE, MS_LIMIT_PERCENT, MS_LIMIT_BYTES } kind;
	uint64_t value;           /* percent 1..100, or bytes */
};

struct ms_quota {
	struct ms_limit dflt;     /* memserver:quota */
	struct {
		char name[FM_NAME_MAX + 1];
		struct ms_limit limit;
	} rule[MS_QUOTA_RULES];   /* memserver:quota-clients */
	int nrules;
};

/* "none", "N%" (1..100) or a size ("2G").  0 or -EINVAL. */
int ms_limit_parse(const char *text, struct ms_limit *l);
/* "NAME:LIMIT, NAME:LIMIT ..." into q's rules; on error why names the
 * item at fault.  0 or -EINVAL. */
int ms_quota_parse_rules(const char *text, struct ms_quota *q, char *why,
			 size_t whylen);
/* The segments a limit allows on a pool of nslots slots of seg_max. */
uint32_t ms_limit_segments(const struct ms_limit *l, uint32_t nslots,
			   uint32_t seg_max);
/* The limit that applies to client name: its rule, else the default. */
const struct ms_limit *ms_quota_for(const struct ms_quota *q, const char *name);

/* ---- devtab.c: clients, their devices, connections and leases ----
 *
 * A device is (client name, uuid): the same uuid under another name is
 * another device, with its own (empty) segments.  A client's segments,
 * over all its devices, count against its quota.
 */

struct ms_client {
	char name[FM_NAME_MAX + 1];
	uint32_t segs;            /* segments held, all its devices */
	uint32_t limit;           /* most it may hold (its quota) */
	unsigned devices;         /* its devices in the table */
	struct ms_client *next;
};

struct ms_device {
	uint8_t uuid[FM_UUID_LEN];
	struct ms_client *client;
	uint32_t id;              /* owner id in the segment table, never 0 */
	unsigned conns;           /* authenticated connections */
	uint32_t segs;            /* segments held */
	uint64_t lease_end_ms;    /* when conns == 0: segments go back then */
	struct ms_device *next;
};

struct ms_devtab {
	struct ms_device *head;
	struct ms_client *clients;
	uint32_t next_id;
	uint32_t count;
	uint64_t lease_ms;
	const struct ms_quota *quota;   /* NULL: no limits */
	uint32_t nslots, seg_max;       /* the pool the quota shares out */
};

void ms_devtab_init(struct ms_devtab *d, uint64_t lease_ms);
/* Limits for clients from now on (q must outlive the table). */
void ms_devtab_set_quota(struct ms_devtab *d, const struct ms_quota *q,
			 uint32_t nslots, uint32_t seg_max);
/* Frees the table (not the segments: the pool goes with the process). */
void ms_devtab_fini(struct ms_devtab *d);
/* A connection of client name's device uuid authenticated: find or
 * create, count it, cancel any running lease.  NULL (-ENOMEM) only when
 * out of memory. */
struct ms_device *ms_devtab_attach(struct ms_devtab *d, const char *name,
				   const uint8_t uuid[FM_UUID_LEN]);
/* May dev's client hold one more segment?  0 or -EDQUOT. */
int ms_devtab_quota_check(const struct ms_device *dev);
/* dev got (delta 1) or gave back (-1) a segment. */
void ms_devtab_count(struct ms_device *dev, int delta);
/* The connection went away; the last one starts the lease (or forgets a
 * device holding nothing). */
void ms_devtab_detach(struct ms_devtab *d, struct ms_device *dev,
		      uint64_t now_ms);
/* Returns the segments of every device whose lease ended to the pool. */
void ms_devtab_expire(struct ms_devtab *d, struct ms_segtab *t,
		      uint64_t now_ms);
/* Earliest lease end, or UINT64_MAX. */
uint64_t ms_devtab_next_expiry(const struct ms_devtab *d);
uint32_t ms_devtab_leased(const struct ms_devtab *d);
uint32_t ms_devtab_holding(const struct ms_devtab *d);

/* ---- buf.c: a growable output byte queue ---- */

struct ms_buf {
	uint8_t *data;
	size_t head;  /* first unsent byte */
	size_t len;   /* bytes after head */
	size_t cap;
};

/* Room for n more bytes at the tail; NULL when out of memory. */
uint8_t *ms_buf_reserve(struct ms_buf *b, size_t n);
void ms_buf_commit(struct ms_buf *b, size_t n);
void ms_buf_consume(struct ms_buf *b, size_t n);
void ms_buf_free(struct ms_buf *b);
/* Give back capacity beyond keep bytes once what is queued fits in keep
 * (a large reply went out); 0, or -ENOMEM leaving the buffer as it was. */
int ms_buf_shrink(struct ms_buf *b, size_t keep);

/* ---- limits.c: bounds on listeners (common/admit.c: who may start a handshake) ---- */

#define MS_HANDSHAKE_MS_DEFAULT               10000
#define MS_MAX_HANDSHAKES_DEFAULT             256
#define MS_MAX_HANDSHAKES_PER_SOURCE_DEFAULT  32

/* What every listener (tcp, rdma) enforces; settings.c fills it. */
struct ms_limits {
	uint64_t handshake_ms;       /* whole HELLO+AUTH, from accept */
	uint64_t idle_ms;            /* after authentication, no request; 0: none */
	unsigned max_handshakes;     /* in progress, from all sources */
	unsigned max_handshakes_per_source;  /* per IPv4 address or IPv6 /64 */
	int allow_shared_rkey;       /* rdma: serve without memory windows */
};

void ms_limits_defaults(struct ms_limits *l);


/* ---- session.c: one connection's protocol state ---- */

struct ms_stats {
	uint64_t bytes_read, bytes_written, reads, writes;
	uint32_t clients;    /* authenticated connections */
};

/* What sessions share: the server's state minus sockets. */
/* Told when FREE returned a segment to the pool, whatever transport the
 * FREE came over: an rdma listener revokes its grants of the segment at
 * once, before the slot can be handed to another device. */
struct ms_free_hook {
	void (*fn)(void *arg, uint64_t seg_id);
	void *arg;
	struct ms_free_hook *next;
};

/* How the pool follows the host's memory (shrink.c); all 0: fixed. */
enum ms_pool_state { MS_POOL_FULL, MS_POOL_SHRUNK, MS_POOL_SHRINKING, MS_POOL_DRAINING };

struct ms_elastic {
	uint64_t reserve;          /* keep this much MemAvailable; 0: off */
	uint64_t min_bytes;        /* never below */
	uint64_t interval_ms;      /* how often to look */
	uint64_t notice_ms;        /* deadline given to clients */
	const char *root;          /* where proc/ and sys/ are ("" = /) */
	uint64_t next_check;       /* ms */
	uint64_t last_avail;       /* bytes, as last read */
	uint64_t min_avail_seen;   /* lowest avail seen (for the report) */
	int draining;              /* DRAIN asked: no ALLOC, everything away */
	uint64_t drain_end;        /* ms: the drain's deadline */
	uint64_t drain_next_notice;
	uint64_t forced;           /* segments freed after a missed deadline */
	uint64_t noticed;          /* segments clients were asked to move */
	uint64_t next_notice_end;  /* ms: earliest deadline of a notice out; 0: none */
	uint64_t asked_at;         /* ms: clients were asked and slots are still owed */
	uint32_t asked_n;
	int warned_root;
};

struct ms_ctx;
/* The server's way to reach a device's connections: a NOTICE to every
 * authenticated connection of device owner (0: every device holding
 * segments, with FM_NOTICE_ALL). */
struct ms_notify {
	/* Returns how many connections took the NOTICE. */
	int (*fn)(void *arg, uint32_t owner, uint32_t deadline_ms,
		  uint16_t flags, const uint64_t *ids, uint16_t n);
	void *arg;
};

struct ms_ctx {
	struct ms_segtab segs;
	struct ms_elastic el;
	struct ms_notify notify;
	struct ms_devtab devs;
	struct fm_secret secret;
	uint64_t boot_id;         /* random per start, never 0: in HELLO */
	struct ms_stats stats;
	int pool_locked;
	uint64_t (*now_ms)(void);
	struct metrics_pool_snap *metrics; /* --metrics: the loop publishes here */
	struct ms_free_hook *free_hooks;
	const struct ms_limits *limits;  /* NULL: ms_limits_defaults() */
	struct fm_admit *admit;          /* shared by every listener; NULL: none */
};

enum ms_sess_state { MS_HELLO, MS_AUTH, MS_READY };

/* ---- pressure.c: the host's memory left, and what the pool should be ---- */

struct ms_pressure {
	uint64_t mem_available;   /* /proc/meminfo MemAvailable, bytes */
	uint64_t cg_headroom;     /* memory.max - memory.current; UINT64_MAX: no limit */
	uint64_t avail;           /* the smaller of the two */
};

/* MemAvailable out of /proc/meminfo's text: 0 or -ENOENT/-EINVAL. */
int ms_meminfo_parse(const char *text, uint64_t *bytes);
/* The cgroup v2 path ("0::/a/b") out of /proc/self/cgroup's text. */
int ms_cgroup_path_parse(const char *text, char *path, size_t len);
/* Headroom from memory.max ("max" or bytes) and memory.current texts. */
int ms_cgroup_headroom(const char *max, const char *cur, uint64_t *headroom);
/* All of it, reading root/proc/meminfo, root/proc/self/cgroup and
 * root/sys/fs/cgroup/PATH/memory.{max,current} (root "" is the host). */
int ms_pressure_read(const char *root, struct ms_pressure *p);

struct ms_shrink_policy {
	uint64_t reserve, min_bytes, max_bytes;
	uint32_t seg_max;
};
/* How many slots the pool should have now: below reserve it gives back
 * what is missing (not below min); it grows back only once avail is a
 * band above reserve, and only so far that it stays above reserve, so a
 * pool that just grew is never shrunk again by its own growth. */
uint32_t ms_pressure_target(const struct ms_shrink_policy *pol, uint64_t avail,
			    uint32_t cur_slots);
/* The band above reserve growth needs. */
uint64_t ms_pressure_band(const struct ms_shrink_policy *pol);

/* ---- shrink.c: giving memory back, asking clients to move, drain ---- */

/* Once per loop turn: read the pressure when due, shrink or grow,
 * resend drain notices, free what missed its deadline. */
void ms_elastic_tick(struct ms_ctx *ctx, uint64_t now);
/* A DRAIN request: refuse ALLOC from now on, notice every device. */
void ms_elastic_drain(struct ms_ctx *ctx, uint32_t deadline_ms);
/* May a new segment be handed out?  0 or -ENOSPC while shrinking or
 * draining. */
int ms_elastic_alloc_ok(const struct ms_ctx *ctx);
enum ms_pool_state ms_elastic_state(const struct ms_ctx *ctx);
const char *ms_pool_state_name(enum ms_pool_state st);
/* The pool's size now, in bytes (what etcd and metrics publish). */
uint64_t ms_pool_current_bytes(const struct ms_ctx *ctx);
/* Pool size, state and pressure for /metrics. */
void ms_elastic_publish(const struct ms_ctx *ctx, struct metrics_pool_snap *snap);
/* A device just authenticated: while draining, tell it at once. */
void ms_elastic_attached(struct ms_ctx *ctx, struct ms_device *dev);

struct ms_session {
	enum ms_sess_state state;
	/* Who, which device, and (once MS_READY) the key and both nonces
	 * that authenticated this session: what channel keys derive from. */
	struct fm_auth_session auth;
	struct ms_device *dev;
	char peer[80];       /* for log lines: "tcp 127.0.0.1:5123" */
	struct fm_chan chan; /* up from AUTH on: frames carry tags (session_chan.c) */
};

/* ms_session_frame() results besides 0 (keep going). */
#define MS_CLOSE_AFTER_FLUSH 1

void ms_session_init(struct ms_session *s, const char *peer);
/* Largest payload this session accepts now: small until authenticated,
 * so an unauthenticated peer cannot make the server buffer a megabyte. */
uint32_t ms_session_max_payload(const struct ms_session *s);
/* One complete request frame.  Appends the reply to out.  Returns 0,
 * MS_CLOSE_AFTER_FLUSH (reply sent, then close) or -errno: close now;
 * the reason is logged here. */
int ms_session_frame(struct ms_ctx *ctx, struct ms_session *s,
		     const struct fm_hdr *h, const uint8_t *payload,
		     struct ms_buf *out);
/* The connection is gone. */
void ms_session_end(struct ms_ctx *ctx, struct ms_session *s);

/* ---- session_chan.c: the protected channel around a session ---- */

/* Bytes of tag after the next frame's payload: 0 until AUTH succeeded. */
size_t ms_session_trailer(const struct ms_session *s);
/* One whole frame as received: header, payload, then (once the channel
 * is up) its tag.  Checks the tag, runs ms_session_frame(), tags the
 * reply and starts the channel when this frame completed AUTH.  Returns
 * as ms_session_frame(); -EBADMSG (logged, counted) for a bad tag. */
int ms_session_wire_frame(struct ms_ctx *ctx, struct ms_session *s,
			  const struct fm_hdr *h, const uint8_t *frame,
			  struct ms_buf *out);
/* Its steps, for transports that answer some frames themselves (rdma):
 * check a frame's tag (0 before AUTH; -EBADMSG logged and counted), tag
 * the one reply frame written at `at` of out (nothing before AUTH), and
 * start the channel when the session went from `before` (MS_AUTH) to
 * MS_READY. */
int ms_session_chan_check(struct ms_session *s, const struct fm_hdr *h,
			  const uint8_t *frame);
int ms_session_chan_seal(struct ms_session *s, struct ms_buf *out, size_t at);
void ms_session_chan_after(struct ms_ctx *ctx, struct ms_session *s,
			   enum ms_sess_state before);
/* Append one tagged NOTICE frame to out (the channel must be up).
 * 0, -EINVAL (not ready / bad arguments) or -ENOMEM. */
int ms_session_notice(struct ms_session *s, struct ms_buf *out,
		      uint32_t deadline_ms, uint16_t flags,
		      const uint64_t *ids, uint16_t n);
void ms_ctx_stat(const struct ms_ctx *ctx, struct fm_stat *st);
/* A new random boot id (once per start, segment table set up): sent in
 * every HELLO reply and folded into segment generations, so no id from
 * an earlier run names a segment of this one. */
void ms_ctx_new_boot(struct ms_ctx *ctx);

/* ---- settings.c: flags and config file into checked settings ---- */

#define MS_LISTEN_MAX 16

struct ms_settings {
	char listen[2048];
	uint64_t size;
	char secret_file[4096];
	uint64_t segment_size;
	uint64_t lease_ms;
	char hugepages[16];
	int allow_unlocked;
	char log[16];
	char pid_file[4096];
	char metrics[300];
	char quota[32];             /* default limit per client */
	char quota_clients[4096];   /* NAME:LIMIT, ... */
	/* Where each key's value came from (file or flag), by key index;
	 * NULL: the default. */
	const char *origin[32];
	/* Listener bounds (admit.c). */
	uint64_t handshake_ms;
	uint64_t idle_ms;
	uint64_t max_handshakes;
	uint64_t max_handshakes_per_source;
	int allow_shared_rkey;
	/* Membership through etcd (registry.c). */
	char etcd[2048];            /* endpoints, comma-separated; "" off */
	char cluster[ETCD_CLUSTER_MAX];
	char advertise[300];        /* address clients use; "" from listen */
	char zone[ETCD_ZONE_MAX];
	/* Elastic pool (shrink.c). */
	uint64_t reserve;
	uint64_t min_size;
	uint64_t pressure_interval_ms;
	uint64_t notice_ms;
};

/* Settings after the "config complete" pass. */
struct ms_resolved {
	struct fm_addr listen[MS_LISTEN_MAX];
	int nlisten;
	enum ms_huge huge;
	int use_syslog;
	struct ms_quota quota;
	struct ms_limits limits;
	/* --etcd: where to register, and as which address (addr_str form). */
	struct etcd_endpoints etcd;
	char advertise[300];
};

extern const struct cfg_key ms_cfg_keys[];
extern const size_t ms_cfg_nkeys;

void ms_settings_defaults(struct ms_settings *s);
/* cfg_load, remembering which keys the file set, for later messages. */
int ms_settings_load(struct ms_settings *s, const char *file, char *err,
		     size_t errlen);
/* A flag: origin is the flag's name. */
int ms_settings_set(struct ms_settings *s, const char *key, const char *value,
		    const char *origin, char *err, size_t errlen);
/* Cross-key checks, address and enum parsing, secret loading.  Errors
 * name where the value came from, the key and the value. */
int ms_settings_complete(struct ms_settings *s, struct ms_resolved *r,
			 struct fm_secret *secret, char *err, size_t errlen);

/* ---- registry.c: membership through etcd ----
 *
 * With --etcd, the server registers under a lease at
 * /farmem/CLUSTER/members/ADDR (value: etcd_member) and keeps it alive
 * from a thread of its own, so the event loop never waits on etcd; the
 * loop's published statistics (snap) give the free bytes.  Stopping
 * revokes the lease, which removes the key at once. */
struct ms_registry;
struct metrics_pool_snap;

int ms_registry_start(const struct ms_settings *s, const struct ms_resolved *r,
		      struct metrics_pool_snap *snap, struct ms_registry **out);
void ms_registry_stop(struct ms_registry *g);
/* The pool size published for these statistics: the one place that
 * decides it.  STAT's pool_bytes is the current pool (shrink.c: slots
 * given back under `reserve` do not count), so etcd follows it. */
uint64_t ms_registry_pool_size(const struct fm_stat *st);

/* ---- server.c: listeners, connections, the event loop ---- */

/* Runs until SIGTERM or SIGINT; 0 on a clean stop. */
int ms_server_run(struct ms_ctx *ctx, const struct ms_resolved *r,
		  const char *pid_file);
uint64_t ms_now_ms(void);
/* Hold SIGTERM/SIGINT from the start (locking a big pool takes a while):
 * one that arrives early stops the server cleanly once it runs. */
int ms_signals_block(void);

/* ---- stat_client.c: farmem-memserver --stat ---- */

/* Open an admin connection (a fresh device uuid) to p->addr, its text
 * into text; on failure says why on stderr.  0 or -errno. */
struct fm_conn_params;
struct fm_conn;
int ms_admin_open(struct fm_conn_params *p, char *text, size_t len, struct fm_conn **c);
int ms_stat_client(const char *addr, const struct fm_secret *secret, int json);

/* ---- drain_client.c: farmem-memserver --drain ---- */

#define MS_DRAIN_TIMEOUT_DEFAULT_MS 300000
/* Ask the server at addr to drain and wait until it holds no segment.
 * Returns the exit status: 0 drained, 1 timed out, 2 bad address,
 * unreachable or refused. */
int ms_drain_client(const char *addr, const struct fm_secret *secret,
		    uint64_t timeout_ms);

#endif
