/* transport_common.h — what the client transports (tcp, rdma) share.
 *
 * Both transports implement the same contract (transport.h) the same
 * way around their wire: a fixed table of request slots whose tags carry
 * a generation, deadlines counted from when a request gets its slot, one
 * thread that owns the link and fails every in-flight request when it
 * drops, and background reconnects with exponential backoff.  The pieces
 * of that which do not depend on the wire live here, so the two cannot
 * drift apart (say, in which status a dropped request gets).
 */
#ifndef FARMEM_TRANSPORT_COMMON_H
#define FARMEM_TRANSPORT_COMMON_H

#include <poll.h>
#include <pthread.h>
#include <stdint.h>

#include "clock.h"
#include "resolve.h"
#include "transport.h"

#define FM_TC_DEFAULT_TIMEOUT_MS  5000u
#define FM_TC_DEFAULT_CONNECT_MS  3000u
#define FM_TC_DEFAULT_INFLIGHT    256u
#define FM_TC_BACKOFF_MIN_MS      100u
#define FM_TC_BACKOFF_MAX_MS      5000u
/* A link fiber (a connection driven by its owner's loop) looks at its
 * stop flag at least this often while it waits. */
#define FM_TC_FIBER_SLICE_MS      100u
/* A fiber waiting for a free request slot looks again this often. */
#define FM_TC_SLOT_POLL_NS        (200u * 1000u)

/* A connection's settings, fixed at open. */
struct fm_tc_conf {
	struct fm_addr addr;
	char name[ADDR_HOST_MAX + 32];
	const char *who;              /* log prefix before name ("server " or "") */
	struct fm_identity id;        /* who we authenticate as */
	uint8_t uuid[FM_UUID_LEN];
	uint32_t timeout_ms;
	uint32_t connect_timeout_ms;
	unsigned nslots;
	uint32_t max_io;              /* largest READ/WRITE taken (<= FM_MAX_IO) */
	int data_only;                /* LIST refused (-EOPNOTSUPP) */
	int reconnect;
	void (*state_cb)(void *arg, int up);
	void *state_arg;
	void (*notice_cb)(void *arg, const struct fm_notice *n);
	void *notice_arg;
	struct fm_resolved peer;      /* addr resolved at open; reconnects reuse it */
};

/* Copy p (with the defaults above filled in) into cf. */
void fm_tc_conf_init(struct fm_tc_conf *cf, const struct fm_conn_params *p,
		     const char *who);
/* Resolve cf->addr into cf->peer, once at open: reconnects must not
 * wait on DNS or allocate.  0, or -EHOSTUNREACH (logged). */
int fm_tc_resolve(struct fm_tc_conf *cf);
/* The key copy must not linger in freed memory. */
void fm_tc_conf_fini(struct fm_tc_conf *cf);

/* ---- the handshake's content (both transports send it their way) ---- */

/* One handshake in progress.  Once fm_tc_hs_verify() accepted the
 * server's proof, sess is the authenticated session: the key and both
 * nonces the per-frame channel keys derive from, and the boot id. */
struct fm_tc_hs {
	struct fm_auth_session sess;
	uint8_t hello[FM_HELLO_REQ_MAX];
	size_t hello_len;
	uint32_t segment_max;
};

/* A fresh client nonce and the HELLO payload (hs->hello, hello_len). */
void fm_tc_hs_hello(const struct fm_tc_conf *cf, struct fm_tc_hs *hs);
/* The HELLO reply's payload: checked (version, boot id), then our AUTH
 * MAC into mac.  0, or -EPROTO (logged) for a reply we cannot use. */
int fm_tc_hs_auth(const struct fm_tc_conf *cf, struct fm_tc_hs *hs,
		  const uint8_t *rep, size_t len, uint8_t mac[FM_MAC_LEN]);
/* The server's AUTH reply: 0 when it proves the server holds the secret
 * behind our key, else -EACCES (logged). */
int fm_tc_hs_verify(const struct fm_tc_conf *cf, struct fm_tc_hs *hs,
		    const uint8_t mac[FM_MAC_LEN]);
/* Publish the new session's boot id on the connection (before it is
 * reported up), and say so when the server restarted since the last. */
void fm_tc_hs_done(const struct fm_tc_conf *cf, struct fm_conn *base,
		   const struct fm_tc_hs *hs);

/* A NOTICE frame's payload (tag already checked): decoded and handed
 * to notice_cb.  A payload that does not decode is logged and dropped —
 * it changes nothing.  Returns 0 or -EPROTO. */
int fm_tc_notice(const struct fm_tc_conf *cf, const uint8_t *payload, uint32_t len);

/* ---- slots ---- */

/* tag = generation << 16 | slot: a reply to a slot's previous use (its
 * generation since bumped) never matches the request now in it. */
static inline uint32_t fm_tc_tag(uint16_t gen, uint32_t idx)
{
	return (uint32_t)gen << 16 | idx;
}

static inline uint32_t fm_tc_tag_idx(uint32_t tag)
{
	return tag & 0xffff;
}

static inline uint16_t fm_tc_tag_gen(uint32_t tag)
{
	return (uint16_t)(tag >> 16);
}

/* Fill the free-slot stack so low slots are handed out first (popped
 * from the top). */
void fm_tc_free_stack_init(uint32_t *free_idx, unsigned n);

/* A submitter found no free slot (or what else it needs): wait under
 * lock (dropped meanwhile) as the calling thread may, then the caller
 * looks again.  A fiber gives the thread to the others for a moment: the
 * link fiber that frees slots may be one of them.  A plain thread waits
 * on cv.  Returns 0 (look again), -ETIMEDOUT once deadline_ns passed, or
 * -EAGAIN in the thread of loop (the connection's owner) outside any
 * fiber, where waiting would stop the very link fiber that frees slots. */
int fm_tc_slot_wait(pthread_mutex_t *lock, pthread_cond_t *cv,
		    const struct fm_loop *loop, uint64_t deadline_ns);

/* Stamp a request that just got a slot: its tag, and its deadline
 * counted from now. */
void fm_tc_req_start(struct fm_req *r, uint32_t tag, uint32_t timeout_ms);

/* ---- dropping the connection ---- */

/* The status an in-flight request fails with when the connection drops
 * for why: closing -ECANCELED; the request whose reply broke the
 * protocol -EPROTO (-EIO when why is -EIO: its transfer failed); with
 * why -ETIMEDOUT the expired ones -ETIMEDOUT (logged); the rest
 * -ECONNRESET. */
int fm_tc_drop_status(const struct fm_tc_conf *cf, const struct fm_req *r, int why,
		      const struct fm_req *culprit, uint64_t now);

/* After a drop: say so and tell state_cb, unless it was down already or
 * the connection is closing. */
void fm_tc_report_down(const struct fm_tc_conf *cf, int was_up, int why,
		       unsigned failed);

/* ---- the link thread ---- */

static inline int fm_tc_stopping(const int *stop)
{
	return __atomic_load_n(stop, __ATOMIC_ACQUIRE);
}

/* poll(2) that a link fiber may call: in a fiber it waits for pfd[0]
 * through the loop's ring for at most FM_TC_FIBER_SLICE_MS (so callers
 * loop until their own deadline), then fills every revents with a poll
 * that does not wait; elsewhere a plain poll of ms.  Returns how many fds
 * have events (0: none yet), or -errno; EINTR counts as none. */
int fm_tc_poll(struct pollfd *pfd, int n, int ms);

/* Sleep ms unless wake_fd fires for close; returns nonzero when closing. */
int fm_tc_sleep_or_stop(int wake_fd, const int *stop, unsigned ms);

/* Reconnect backoff: 100 ms doubling up to 5 s, reset on success. */
struct fm_tc_backoff {
	unsigned ms;
	unsigned tries;               /* failed attempts since the last success */
};

void fm_tc_backoff_init(struct fm_tc_backoff *b);
/* A reconnect failed with rc: the first failure says why (and how often
 * we retry); later ones only at debug level, when log_retries is set. */
void fm_tc_backoff_failed(struct fm_tc_backoff *b, const struct fm_tc_conf *cf, int rc,
			  int log_retries);
/* A reconnect worked: say so, reset, and tell state_cb. */
void fm_tc_backoff_succeeded(struct fm_tc_backoff *b, const struct fm_tc_conf *cf);

/* close(): set stop under lock, wake slot waiters and the link thread.
 * thread names it in the warning when the wake fails. */
void fm_tc_request_stop(const struct fm_tc_conf *cf, pthread_mutex_t *lock,
			pthread_cond_t *cv, int *stop, int wake_fd, const char *thread);

/* Start the link thread with every signal blocked: it must not take
 * the process's signals (SIGTERM etc.).  0 or -errno. */
int fm_tc_start_thread(pthread_t *thread, void *(*fn)(void *), void *arg);

/* close() of a connection owned by loop: wait until done(arg) holds
 * (the link fiber has ended), turning the loop when called from its
 * thread outside a fiber, sleeping briefly in a fiber. */
void fm_tc_loop_wait(struct fm_loop *loop, int (*done)(void *arg), void *arg);

/* is_up(): `up` read under lock. */
int fm_tc_locked_flag(pthread_mutex_t *lock, const int *flag);

#endif
