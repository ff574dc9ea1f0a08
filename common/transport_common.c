/* transport_common.c — what the client transports (tcp, rdma) share;
 * see transport_common.h. */
#include "transport_common.h"

#include "fiber.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

void fm_tc_conf_init(struct fm_tc_conf *cf, const struct fm_conn_params *p,
		     const char *who)
{
	cf->addr = p->addr;
	addr_str(&p->addr, cf->name, sizeof(cf->name));
	cf->who = who;
	if (p->identity)
		cf->id = *p->identity;
	else if (fm_identity_derive(p->secret, FM_CLUSTER_NAME, &cf->id) < 0)
		memset(&cf->id, 0, sizeof(cf->id));
	memcpy(cf->uuid, p->uuid, FM_UUID_LEN);
	cf->timeout_ms = p->timeout_ms ? p->timeout_ms : FM_TC_DEFAULT_TIMEOUT_MS;
	cf->connect_timeout_ms = p->connect_timeout_ms ? p->connect_timeout_ms
						       : FM_TC_DEFAULT_CONNECT_MS;
	cf->nslots = p->max_inflight ? p->max_inflight : FM_TC_DEFAULT_INFLIGHT;
	cf->max_io = p->max_io && p->max_io < FM_MAX_IO ? p->max_io : FM_MAX_IO;
	cf->data_only = p->data_only;
	cf->reconnect = p->reconnect;
	cf->state_cb = p->state_cb;
	cf->state_arg = p->state_arg;
	cf->notice_cb = p->notice_cb;
	cf->notice_arg = p->notice_arg;
}

int fm_tc_notice(const struct fm_tc_conf *cf, const uint8_t *payload, uint32_t len)
{
	struct fm_notice n;

	if (fm_notice_decode(payload, len, &n) < 0) {
		log_warn("%s%s: NOTICE of %u bytes does not decode; ignored",
			 cf->who, cf->name, len);
		return -EPROTO;
	}
	if (cf->notice_cb)
		cf->notice_cb(cf->notice_arg, &n);
	return 0;
}

int fm_tc_resolve(struct fm_tc_conf *cf)
{
	const char *why = NULL;
	int rc = fm_resolve(cf->addr.host, cf->addr.port, &cf->peer, &why);

	if (rc)
		log_err("%s%s: cannot resolve %s: %s", cf->who, cf->name, cf->addr.host, why);
	return rc;
}

void fm_tc_conf_fini(struct fm_tc_conf *cf)
{
	explicit_bzero(&cf->id, sizeof(cf->id));
}

/* ---- the handshake ---- */

void fm_tc_hs_hello(const struct fm_tc_conf *cf, struct fm_tc_hs *hs)
{
	struct fm_hello_req hello = { .version = FM_PROTO_VERSION };

	memset(hs, 0, sizeof(*hs));
	memcpy(hs->sess.name, cf->id.name, sizeof(hs->sess.name));
	memcpy(hs->sess.uuid, cf->uuid, FM_UUID_LEN);
	memcpy(hs->sess.key, cf->id.key, FM_KEY_LEN);
	fm_random(hs->sess.client_nonce, FM_NONCE_LEN);
	memcpy(hello.uuid, cf->uuid, FM_UUID_LEN);
	memcpy(hello.client_nonce, hs->sess.client_nonce, FM_NONCE_LEN);
	memcpy(hello.name, cf->id.name, sizeof(hello.name));
	hs->hello_len = fm_hello_req_encode(hs->hello, &hello);
}

int fm_tc_hs_auth(const struct fm_tc_conf *cf, struct fm_tc_hs *hs,
		  const uint8_t *rep, size_t len, uint8_t mac[FM_MAC_LEN])
{
	struct fm_hello_rep r;

	if (fm_hello_rep_decode(rep, len, &r) < 0 || r.version != FM_PROTO_VERSION) {
		log_err("%s%s: HELLO reply unusable (version %u, ours %u)", cf->who,
			cf->name, len >= 2 ? get_le16(rep) : 0, FM_PROTO_VERSION);
		return -EPROTO;
	}
	memcpy(hs->sess.server_nonce, r.server_nonce, FM_NONCE_LEN);
	hs->sess.boot_id = r.boot_id;
	hs->segment_max = r.segment_max;
	fm_auth_mac(&hs->sess, FM_AUTH_CLIENT, mac);
	return 0;
}

int fm_tc_hs_verify(const struct fm_tc_conf *cf, struct fm_tc_hs *hs,
		    const uint8_t mac[FM_MAC_LEN])
{
	if (fm_auth_verify(&hs->sess, FM_AUTH_SERVER, mac) == 0)
		return 0;
	log_err("%s%s: its AUTH proof is wrong: it does not hold the secret "
		"behind our key (client %s)", cf->who, cf->name, cf->id.name);
	return -EACCES;
}

void fm_tc_hs_done(const struct fm_tc_conf *cf, struct fm_conn *base,
		   const struct fm_tc_hs *hs)
{
	uint64_t was = __atomic_exchange_n(&base->boot_id, hs->sess.boot_id,
					   __ATOMIC_ACQ_REL);

	if (was && was != hs->sess.boot_id)
		log_warn("%s%s: the memserver restarted (boot id %016llx, was "
			 "%016llx): what it held for us is gone", cf->who, cf->name,
			 (unsigned long long)hs->sess.boot_id, (unsigned long long)was);
}

/* ---- slots ---- */

void fm_tc_free_stack_init(uint32_t *free_idx, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		free_idx[i] = n - 1 - i;
}

void fm_tc_req_start(struct fm_req *r, uint32_t tag, uint32_t timeout_ms)
{
	r->t_tag = tag;
	r->t_deadline_ns = fm_mono_after_ms(timeout_ms);
	r->t_next = NULL;
}

/* ---- dropping the connection ---- */

int fm_tc_drop_status(const struct fm_tc_conf *cf, const struct fm_req *r, int why,
		      const struct fm_req *culprit, uint64_t now)
{
	int status = why == -ECANCELED ? -ECANCELED : -ECONNRESET;

	if (r == culprit)
		status = why == -EIO ? -EIO : -EPROTO;
	else if (why == -ETIMEDOUT && r->t_deadline_ns <= now)
		status = -ETIMEDOUT;
	if (status == -ETIMEDOUT)
		log_warn("%s%s: %s (tag 0x%08x) got no reply in %u ms", cf->who, cf->name,
			 fm_op_name(r->op), r->t_tag, cf->timeout_ms);
	return status;
}

void fm_tc_report_down(const struct fm_tc_conf *cf, int was_up, int why,
		       unsigned failed)
{
	if (!was_up || why == -ECANCELED)
		return;
	log_warn("%s%s: connection down (%s), %u request(s) failed%s", cf->who, cf->name,
		 strerror(-why), failed, cf->reconnect ? "; reconnecting" : "");
	if (cf->state_cb)
		cf->state_cb(cf->state_arg, 0);
}

/* ---- the link thread ---- */

int fm_tc_poll(struct pollfd *pfd, int n, int ms)
{
	int rc;

	if (fm_fiber_self()) {
		if (ms > (int)FM_TC_FIBER_SLICE_MS)
			ms = FM_TC_FIBER_SLICE_MS;
		rc = fm_fiber_poll_timeout(pfd[0].fd, pfd[0].events,
					   (uint64_t)ms * 1000000ull);
		if (rc < 0)
			return rc;
		ms = 0;
	}
	rc = poll(pfd, (nfds_t)n, ms);
	if (rc < 0)
		return errno == EINTR ? 0 : -errno;
	return rc;
}

int fm_tc_sleep_or_stop(int wake_fd, const int *stop, unsigned ms)
{
	struct pollfd pfd = { .fd = wake_fd, .events = POLLIN };
	uint64_t until = fm_mono_after_ms(ms);

	while (!fm_tc_stopping(stop)) {
		int left = fm_mono_ms_until(until);

		if (left == 0)
			return 0;
		/* A link fiber sleeps in slices (close sets stop, then
		 * waits for it) and leaves its thread to the others. */
		if (fm_fiber_self()) {
			unsigned slice = (unsigned)left < FM_TC_FIBER_SLICE_MS ?
					 (unsigned)left : FM_TC_FIBER_SLICE_MS;

			fm_fiber_sleep_ns((uint64_t)slice * 1000000ull);
			continue;
		}
		poll(&pfd, 1, left);
	}
	return 1;
}

void fm_tc_backoff_init(struct fm_tc_backoff *b)
{
	b->ms = FM_TC_BACKOFF_MIN_MS;
	b->tries = 0;
}

void fm_tc_backoff_failed(struct fm_tc_backoff *b, const struct fm_tc_conf *cf, int rc,
			  int log_retries)
{
	/* First failure says why; the rest are debug noise. */
	if (b->tries == 0)
		log_warn("%s%s: reconnect failed: %s; retrying every %u..%u ms", cf->who,
			 cf->name, strerror(-rc), FM_TC_BACKOFF_MIN_MS, FM_TC_BACKOFF_MAX_MS);
	else if (log_retries)
		log_debug("%s%s: reconnect attempt %u failed: %s", cf->who, cf->name,
			  b->tries + 1, strerror(-rc));
	b->tries++;
	b->ms = b->ms * 2 > FM_TC_BACKOFF_MAX_MS ? FM_TC_BACKOFF_MAX_MS : b->ms * 2;
}

void fm_tc_backoff_succeeded(struct fm_tc_backoff *b, const struct fm_tc_conf *cf)
{
	log_info("%s%s: reconnected after %u failed attempt(s)", cf->who, cf->name, b->tries);
	fm_tc_backoff_init(b);
	if (cf->state_cb)
		cf->state_cb(cf->state_arg, 1);
}

int fm_tc_slot_wait(pthread_mutex_t *lock, pthread_cond_t *cv,
		    const struct fm_loop *loop, uint64_t deadline_ns)
{
	struct timespec ts;

	if (fm_mono_ns() >= deadline_ns)
		return -ETIMEDOUT;
	if (fm_fiber_self()) {
		pthread_mutex_unlock(lock);
		fm_fiber_sleep_ns(FM_TC_SLOT_POLL_NS);
		pthread_mutex_lock(lock);
		return 0;
	}
	if (loop)
		return -EAGAIN;
	ts = fm_mono_abstime(deadline_ns);
	pthread_cond_timedwait(cv, lock, &ts);
	return 0;
}

void fm_tc_loop_wait(struct fm_loop *loop, int (*done)(void *arg), void *arg)
{
	while (!done(arg)) {
		if (fm_fiber_self())
			fm_fiber_sleep_ns(1000000u);
		else if (fm_loop_turn(loop) < 0)
			break;
	}
}

void fm_tc_request_stop(const struct fm_tc_conf *cf, pthread_mutex_t *lock,
			pthread_cond_t *cv, int *stop, int wake_fd, const char *thread)
{
	uint64_t one = 1;

	pthread_mutex_lock(lock);
	__atomic_store_n(stop, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(cv);
	pthread_mutex_unlock(lock);
	if (write(wake_fd, &one, sizeof(one)) < 0)
		log_warn("%s%s: cannot wake the %s: %s", cf->who, cf->name, thread,
			 strerror(errno));
}

int fm_tc_start_thread(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = -pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int fm_tc_locked_flag(pthread_mutex_t *lock, const int *flag)
{
	int v;

	pthread_mutex_lock(lock);
	v = *flag;
	pthread_mutex_unlock(lock);
	return v;
}
