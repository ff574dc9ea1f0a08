/* server.c — listeners, connections and the epoll loop.
 *
 * One thread, level-triggered epoll, non-blocking sockets.  Each
 * connection owns a read buffer (grown to one whole frame at most) and a
 * reply queue.  When a connection has OUT_HIGH reply bytes queued the
 * server stops reading from it until the peer drains them: a client that
 * pipelines reads but never receives cannot make the server buffer
 * without bound.  Anything that breaks the protocol closes that one
 * connection, with the reason in the log; the loop goes on.
 *
 * Bounds (struct ms_limits, from the settings): a whole handshake must
 * finish within handshake_ms of accept, however the bytes trickle in;
 * handshakes in progress are capped per source and in all (admit.c), and
 * a connection over a cap is refused, never one already in progress
 * evicted; after authentication, idle_ms without any progress closes it
 * (off by default: clients send nothing while idle).  Lines logged for
 * unauthenticated peers go through one rate limiter.
 *
 * Memory per connection is bounded: the read buffer by one frame
 * (FM_HDR_SIZE + FM_MAX_PAYLOAD), the reply queue by OUT_HIGH plus one
 * reply; both shrink back at the sweep once drained.
 */
#include "memserver.h"
#include "clock.h"
#include "log.h"
#include "metrics_pool.h"
#include "rdma_listener.h"
#include "sdnotify.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS        4096
#define OUT_HIGH         (1u << 20)   /* stop reading above this many queued bytes */
#define OUT_KEEP         (64u << 10)  /* a drained reply queue shrinks to this */
#define RBUF_SMALL       4096         /* before authentication */
#define RBUF_READY       (256u << 10) /* after: room for a pipelined burst */
#define SWEEP_MS         1000
/* Dead peers of authenticated connections: probes after a minute of
 * silence, gone after six unanswered.  A live peer's kernel answers the
 * probes, so this never cuts a healthy idle client. */
#define KEEPIDLE_S       60
#define KEEPINTVL_S      10
#define KEEPCNT          6
/* Lines about unauthenticated peers, all together. */
#define UNAUTH_LOG_BURST      20
#define UNAUTH_LOG_PERIOD_MS  10000
#define READS_PER_EVENT  16           /* fairness between busy connections */

enum src_kind { SRC_LISTEN, SRC_CONN, SRC_SIGNAL };

struct src {
	enum src_kind kind;
};

struct listener {
	struct src src;
	int fd;
	struct ms_rdma *rdma;     /* rdma:// (fd unused), else NULL */
	char name[300];
};

struct conn {
	struct src src;
	int fd;
	uint32_t events;          /* what epoll watches now */
	int close_after_flush;
	int admitted;             /* holds a handshake slot (admit.c) */
	uint64_t auth_deadline;
	uint64_t last_progress;   /* ms: a byte received or sent */
	struct sockaddr_storage sa;
	uint8_t *rbuf;            /* unparsed bytes are rbuf[rpos, rlen) */
	size_t rpos, rlen, rcap;
	struct ms_buf out;
	struct ms_session sess;
	struct conn *prev, *next;
};

struct server {
	struct ms_ctx *ctx;
	int ep;
	struct src sig_src;
	int sigfd;
	struct listener lis[MS_LISTEN_MAX];
	int nlis;
	int lis_paused;           /* listeners off epoll after EMFILE */
	struct conn *conns;
	unsigned nconns;
	int stop;
	struct ms_limits limits;
	struct fm_admit admit;
	struct log_limit unauth_log;   /* every line about unauthenticated peers */
};

uint64_t ms_now_ms(void)
{
	return fm_mono_ms();
}

/* ---- listeners ---- */

static int listen_one(struct listener *l, const struct fm_addr *a)
{
	struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	char port[8];
	int rc, one = 1, err = 0;

	addr_str(a, l->name, sizeof(l->name));
	snprintf(port, sizeof(port), "%u", a->port);
	rc = getaddrinfo(a->host, port, &hints, &res);
	if (rc) {
		log_err("listen %s: %s", l->name, gai_strerror(rc));
		return -EADDRNOTAVAIL;
	}
	l->fd = -1;
	for (ai = res; ai && l->fd < 0; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
				SOCK_CLOEXEC, ai->ai_protocol);

		if (fd < 0) {
			err = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* So that "tcp://[::]:7070" and "tcp://0.0.0.0:7070" can both
		 * be listed. */
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 128) == 0) {
			l->fd = fd;
			break;
		}
		err = errno;
		close(fd);
	}
	freeaddrinfo(res);
	if (l->fd < 0) {
		log_err("listen %s: %s", l->name, strerror(err));
		return -err;
	}
	l->src.kind = SRC_LISTEN;
	log_info("listening on %s", l->name);
	return 0;
}

/* rdma:// accepts through its own channels, watched from the start. */
static int rdma_listen_one(struct server *sv, struct listener *l,
			   const struct fm_addr *a)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &l->src };
	int rc;

	addr_str(a, l->name, sizeof(l->name));
	l->fd = -1;
	l->src.kind = SRC_LISTEN;
	rc = ms_rdma_listen(sv->ctx, a, &l->rdma);
	if (rc == 0 && epoll_ctl(sv->ep, EPOLL_CTL_ADD, ms_rdma_fd(l->rdma), &ev) < 0)
		rc = -errno;
	return rc;
}

static int listeners_watch(struct server *sv, int on)
{
	for (int i = 0; i < sv->nlis; i++) {
		struct epoll_event ev = { .events = EPOLLIN,
					  .data.ptr = &sv->lis[i].src };

		if (sv->lis[i].rdma)
			continue;
		if (epoll_ctl(sv->ep, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL,
			      sv->lis[i].fd, &ev) < 0) {
			log_err("epoll on %s: %s", sv->lis[i].name, strerror(errno));
			return -errno;
		}
	}
	sv->lis_paused = !on;
	return 0;
}

/* ---- connections ---- */

static void conn_close(struct server *sv, struct conn *c)
{
	if (c->admitted)
		fm_admit_put(&sv->admit, (struct sockaddr *)&c->sa);
	ms_session_end(sv->ctx, &c->sess);
	epoll_ctl(sv->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		sv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	sv->nconns--;
	free(c->rbuf);
	ms_buf_free(&c->out);
	free(c);
}

static int conn_paused(const struct conn *c)
{
	return c->close_after_flush || c->out.len >= OUT_HIGH;
}

static int conn_watch(struct server *sv, struct conn *c)
{
	uint32_t want = (conn_paused(c) ? 0 : EPOLLIN) |
			(c->out.len ? EPOLLOUT : 0);
	struct epoll_event ev = { .events = want, .data.ptr = &c->src };

	if (want == c->events)
		return 0;
	if (epoll_ctl(sv->ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
		log_err("%s: epoll: %s", c->sess.peer, strerror(errno));
		return -errno;
	}
	c->events = want;
	return 0;
}

/* Room for `need` bytes from rpos on: slide down, then grow. */
static int conn_room(struct conn *c, size_t need)
{
	if (c->rpos && c->rpos + need > c->rcap) {
		memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
		c->rlen -= c->rpos;
		c->rpos = 0;
	}
	if (need > c->rcap) {
		uint8_t *p = realloc(c->rbuf, need);

		if (!p) {
			log_err("%s: closing: no memory for a %zu-byte frame",
				c->sess.peer, need);
			return -ENOMEM;
		}
		c->rbuf = p;
		c->rcap = need;
	}
	return 0;
}

/* Which rule a refused header broke, for the log. */
static const char *hdr_problem(const uint8_t *p, int rc)
{
	static char why[96];

	if (rc == -EMSGSIZE)
		snprintf(why, sizeof(why), "payload length %u above %u",
			 get_le32(p + 16), FM_MAX_PAYLOAD);
	else if (get_le32(p) != FM_MAGIC)
		snprintf(why, sizeof(why), "bad magic %08x", get_le32(p));
	else if (p[4] != FM_PROTO_VERSION)
		snprintf(why, sizeof(why), "protocol version %u, we speak %u",
			 p[4], FM_PROTO_VERSION);
	else if (get_le16(p + 6) || get_le32(p + 20))
		snprintf(why, sizeof(why), "reserved fields not zero");
	else if (get_le32(p + 12))
		snprintf(why, sizeof(why), "status set in a request");
	else
		snprintf(why, sizeof(why), "unknown op %u", p[5]);
	return why;
}

/* The handshake slot goes back; dead peers are found by keepalive. */
static void conn_authenticated(struct server *sv, struct conn *c)
{
	int on = 1, idle = KEEPIDLE_S, intvl = KEEPINTVL_S, cnt = KEEPCNT;

	if (c->admitted) {
		fm_admit_put(&sv->admit, (struct sockaddr *)&c->sa);
		c->admitted = 0;
	}
	setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	ms_elastic_attached(sv->ctx, c->sess.dev);
}

/* shrink.c's way to a device: a NOTICE on each of its tcp connections
 * (owner 0: every device that holds segments).  Queued behind the
 * replies already there, so its place in the channel's numbering is
 * where the client reads it. */
static int notify_devices(void *arg, uint32_t owner, uint32_t deadline_ms,
			  uint16_t flags, const uint64_t *ids, uint16_t n)
{
	struct server *sv = arg;
	int reached = 0;

	for (struct conn *c = sv->conns; c; c = c->next) {
		struct ms_device *dev = c->sess.dev;

		if (c->sess.state != MS_READY || !dev || c->close_after_flush)
			continue;
		if (owner ? dev->id != owner : !dev->segs)
			continue;
		/* Never closed from here: the caller may be inside this very
		 * connection's frame.  A notice that reached no connection of
		 * its device starts no deadline: shrink.c asks again later. */
		if (ms_session_notice(&c->sess, &c->out, deadline_ms, flags, ids, n) < 0) {
			log_warn("%s: cannot queue a NOTICE (out of memory)", c->sess.peer);
			continue;
		}
		conn_watch(sv, c);
		reached++;
		log_debug("%s: NOTICE to client %s: %s within %u ms", c->sess.peer,
			  c->sess.auth.name, (flags & FM_NOTICE_ALL) ? "every segment" :
			  "some segments", deadline_ms);
	}
	return reached;
}

/* Handle every complete frame buffered, until backpressure says stop. */
static int conn_process(struct server *sv, struct conn *c)
{
	while (!conn_paused(c)) {
		size_t avail = c->rlen - c->rpos;
		const uint8_t *p = c->rbuf + c->rpos;
		enum ms_sess_state was;
		struct fm_hdr h;
		size_t flen;
		int rc;

		if (avail < FM_HDR_SIZE)
			break;
		rc = fm_hdr_decode(p, avail, &h);
		if (rc < 0) {
			log_warn("%s: closing: bad frame header: %s",
				 c->sess.peer, hdr_problem(p, rc));
			return rc;
		}
		if (h.len > ms_session_max_payload(&c->sess)) {
			log_warn("%s: closing: %s frame of %u payload bytes, at "
				 "most %u allowed now", c->sess.peer,
				 fm_op_name(h.op), h.len,
				 ms_session_max_payload(&c->sess));
			return -EMSGSIZE;
		}
		/* Once authenticated, a tag follows each frame. */
		flen = FM_HDR_SIZE + (size_t)h.len + ms_session_trailer(&c->sess);
		if (avail < flen)
			return conn_room(c, flen);
		was = c->sess.state;
		rc = ms_session_wire_frame(sv->ctx, &c->sess, &h, p, &c->out);
		c->rpos += flen;
		if (was != MS_READY && c->sess.state == MS_READY)
			conn_authenticated(sv, c);
		if (rc == -ENOMEM)
			log_err("%s: closing: no memory for a %s reply",
				c->sess.peer, fm_op_name(h.op));
		if (rc < 0)
			return rc;
		if (rc == MS_CLOSE_AFTER_FLUSH)
			c->close_after_flush = 1;
	}
	if (c->rpos == c->rlen)
		c->rpos = c->rlen = 0;
	return 0;
}

/* Read what the socket has (bounded), handling frames as they complete.
 * Returns 0, or -errno / -ECONNRESET (peer gone) to close. */
static int conn_read(struct server *sv, struct conn *c)
{
	for (int i = 0; i < READS_PER_EVENT && !conn_paused(c); i++) {
		ssize_t n;
		int rc;

		if (c->sess.state == MS_READY && c->rcap < RBUF_READY &&
		    conn_room(c, RBUF_READY) < 0)
			return -ENOMEM;
		if (c->rlen == c->rcap && conn_room(c, c->rlen - c->rpos + 1) < 0)
			return -ENOMEM;
		n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
		if (n == 0) {
			if (c->rlen > c->rpos)
				log_warn("%s: closing: connection ended inside a "
					 "frame (%zu bytes of it received)",
					 c->sess.peer, c->rlen - c->rpos);
			else
				log_debug("%s: peer closed the connection",
					  c->sess.peer);
			return -ECONNRESET;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			log_info("%s: closing: receive failed: %s", c->sess.peer,
				 strerror(errno));
			return -errno;
		}
		c->rlen += (size_t)n;
		c->last_progress = ms_now_ms();
		rc = conn_process(sv, c);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int conn_flush(struct conn *c)
{
	size_t before = c->out.len;

	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out.head, c->out.len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (errno == EINTR)
				continue;
			log_info("%s: closing: send failed: %s", c->sess.peer,
				 strerror(errno));
			return -errno;
		}
		ms_buf_consume(&c->out, (size_t)n);
	}
	if (c->out.len != before)
		c->last_progress = ms_now_ms();
	if (c->out.len)
		return 0;
	return c->close_after_flush ? -ECONNABORTED : 0;
}

static void conn_event(struct server *sv, struct conn *c, uint32_t events)
{
	int scoped = c->sess.state != MS_READY;
	struct log_limit *old = scoped ? log_limit_scope(&sv->unauth_log) : NULL;
	int rc = 0;

	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		rc = conn_read(sv, c);
	if (rc == 0)
		rc = conn_flush(c);
	/* Frames held back by backpressure go once the queue drained; each
	 * pass handles at least one frame or stops. */
	while (rc == 0 && !conn_paused(c) && c->rlen - c->rpos >= FM_HDR_SIZE) {
		size_t before = c->rpos;

		rc = conn_process(sv, c);
		if (rc == 0)
			rc = conn_flush(c);
		if (c->rpos == before)
			break;
	}
	if (rc == 0)
		rc = conn_watch(sv, c);
	if (rc < 0)
		conn_close(sv, c);
	if (scoped)
		log_limit_scope(old);
}

static void peer_name(const struct sockaddr_storage *ss, socklen_t len,
		      char *out, size_t outlen)
{
	char host[64], port[8]; /* numeric forms: both fit */

	if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof(host),
			port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(out, outlen, "tcp peer");
	else if (ss->ss_family == AF_INET6)
		snprintf(out, outlen, "tcp [%s]:%s", host, port);
	else
		snprintf(out, outlen, "tcp %s:%s", host, port);
}

/* A new connection that holds a handshake slot (taken by the caller). */
static int conn_add(struct server *sv, int fd, const struct sockaddr_storage *ss,
		    socklen_t len)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event ev = { .events = EPOLLIN };
	char peer[sizeof(c->sess.peer)];
	int one = 1;

	if (!c || !(c->rbuf = malloc(RBUF_SMALL))) {
		free(c);
		return -ENOMEM;
	}
	c->src.kind = SRC_CONN;
	c->fd = fd;
	c->rcap = RBUF_SMALL;
	c->events = EPOLLIN;
	c->admitted = 1;
	c->sa = *ss;
	c->last_progress = ms_now_ms();
	c->auth_deadline = c->last_progress + sv->limits.handshake_ms;
	peer_name(ss, len, peer, sizeof(peer));
	ms_session_init(&c->sess, peer);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ev.data.ptr = &c->src;
	if (epoll_ctl(sv->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;

		free(c->rbuf);
		free(c);
		return -e;
	}
	c->next = sv->conns;
	if (sv->conns)
		sv->conns->prev = c;
	sv->conns = c;
	sv->nconns++;
	log_debug("%s: connected", c->sess.peer);
	return 0;
}

/* Over a cap: refuse the newcomer (nothing in progress is evicted). */
static int admit(struct server *sv, struct listener *l,
		 const struct sockaddr_storage *ss, socklen_t len)
{
	char peer[sizeof(((struct conn *)0)->sess.peer)];
	int rc;

	if (sv->nconns >= MAX_CONNS) {
		log_warn_rl("%s: refusing a connection: %u already open",
			    l->name, sv->nconns);
		return -EMFILE;
	}
	rc = fm_admit_take(&sv->admit, (const struct sockaddr *)ss);
	if (rc == 0)
		return 0;
	peer_name(ss, len, peer, sizeof(peer));
	if (rc == -EBUSY)
		log_warn_rl("%s: refusing %s: %u handshakes from that source in "
			    "progress (max-handshakes-per-source)", l->name, peer,
			    fm_admit_source_count(&sv->admit,
						  (const struct sockaddr *)ss));
	else
		log_warn_rl("%s: refusing %s: %u handshakes in progress "
			    "(max-handshakes)", l->name, peer, sv->admit.total);
	return rc;
}

static void accept_all(struct server *sv, struct listener *l)
{
	for (;;) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept4(l->fd, (struct sockaddr *)&ss, &len,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
				/* Level-triggered: would spin.  Retry at the
				 * next sweep. */
				log_warn("%s: accept: %s; pausing new connections",
					 l->name, strerror(errno));
				listeners_watch(sv, 0);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				log_warn("%s: accept: %s", l->name, strerror(errno));
			}
			return;
		}
		if (admit(sv, l, &ss, len) < 0) {
			close(fd);
			continue;
		}
		if (conn_add(sv, fd, &ss, len) < 0) {
			fm_admit_put(&sv->admit, (struct sockaddr *)&ss);
			log_err_rl("%s: cannot set up a connection", l->name);
			close(fd);
		}
	}
}

/* ---- timers, signals, the loop ---- */

/* A drained connection gives back what a burst or a large frame grew. */
static void conn_shrink(struct conn *c)
{
	if (c->out.len == 0)
		ms_buf_shrink(&c->out, OUT_KEEP);
	if (c->rpos == c->rlen && c->rcap > RBUF_READY) {
		uint8_t *p = realloc(c->rbuf, RBUF_READY);

		if (p) {
			c->rbuf = p;
			c->rcap = RBUF_READY;
			c->rpos = c->rlen = 0;
		}
	}
}

/* Once a second: deadlines, idle connections, buffer shrinking. */
static void sweep(struct server *sv, uint64_t now)
{
	const struct ms_limits *lim = &sv->limits;
	struct conn *c = sv->conns;

	while (c) {
		struct conn *next = c->next;

		if (c->sess.state != MS_READY && now >= c->auth_deadline) {
			struct log_limit *old = log_limit_scope(&sv->unauth_log);

			log_warn("%s: closing: handshake not done within %llu ms "
				 "(handshake-timeout)", c->sess.peer,
				 (unsigned long long)lim->handshake_ms);
			conn_close(sv, c);
			log_limit_scope(old);
		} else if (c->sess.state == MS_READY && lim->idle_ms &&
			   now - c->last_progress >= lim->idle_ms) {
			log_info("%s: closing: idle for %llu ms (idle-timeout)",
				 c->sess.peer,
				 (unsigned long long)(now - c->last_progress));
			conn_close(sv, c);
		} else {
			conn_shrink(c);
		}
		c = next;
	}
	log_limit_flush(&sv->unauth_log, LOG_LVL_WARN);
	if (sv->lis_paused)
		listeners_watch(sv, 1);
}

static void stop_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
}

int ms_signals_block(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	stop_signals(&set);
	return sigprocmask(SIG_BLOCK, &set, NULL) < 0 ? -errno : 0;
}

static int signals_open(struct server *sv)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &sv->sig_src };
	sigset_t set;
	int rc = ms_signals_block();

	if (rc < 0)
		return rc;
	stop_signals(&set);
	sv->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sv->sigfd < 0)
		return -errno;
	sv->sig_src.kind = SRC_SIGNAL;
	if (epoll_ctl(sv->ep, EPOLL_CTL_ADD, sv->sigfd, &ev) < 0)
		return -errno;
	return 0;
}

static void on_signal(struct server *sv)
{
	struct signalfd_siginfo si;

	while (read(sv->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		log_info("stopping on %s", strsignal((int)si.ssi_signo));
		sv->stop = 1;
	}
}

static int next_timeout(struct server *sv, uint64_t now, uint64_t next_sweep)
{
	uint64_t t = ms_devtab_next_expiry(&sv->ctx->devs);

	const struct ms_elastic *el = &sv->ctx->el;

	if (el->reserve && el->next_check < t)
		t = el->next_check;
	/* Notice deadlines and a drain's resends are due on time even when
	 * nothing else wakes the loop. */
	if (el->next_notice_end && el->next_notice_end < t)
		t = el->next_notice_end;
	if (el->draining && el->drain_next_notice < t)
		t = el->drain_next_notice;
	if (next_sweep < t)
		t = next_sweep;
	return t <= now ? 0 : (int)(t - now);
}

static void loop(struct server *sv)
{
	struct epoll_event evs[64];
	uint64_t next_sweep = ms_now_ms() + SWEEP_MS;

	while (!sv->stop) {
		uint64_t now = ms_now_ms();
		int n = epoll_wait(sv->ep, evs, 64, next_timeout(sv, now, next_sweep));

		if (n < 0 && errno != EINTR) {
			log_err("epoll_wait: %s", strerror(errno));
			break;
		}
		for (int i = 0; i < n; i++) {
			struct src *s = evs[i].data.ptr;

			if (s->kind == SRC_SIGNAL)
				on_signal(sv);
			else if (s->kind == SRC_LISTEN && ((struct listener *)s)->rdma)
				ms_rdma_process(((struct listener *)s)->rdma);
			else if (s->kind == SRC_LISTEN)
				accept_all(sv, (struct listener *)s);
			else
				conn_event(sv, (struct conn *)s, evs[i].events);
		}
		ms_elastic_tick(sv->ctx, ms_now_ms());
		if (sv->ctx->metrics) {
			struct fm_stat st;

			ms_ctx_stat(sv->ctx, &st);
			metrics_pool_publish(sv->ctx->metrics, &st);
			ms_elastic_publish(sv->ctx, sv->ctx->metrics);
		}
		now = ms_now_ms();
		if (ms_devtab_next_expiry(&sv->ctx->devs) <= now)
			ms_devtab_expire(&sv->ctx->devs, &sv->ctx->segs, now);
		if (now >= next_sweep) {
			sweep(sv, now);
			next_sweep = now + SWEEP_MS;
		}
	}
}

static int write_pid_file(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
		log_err("pid file %s: %s", path, strerror(errno));
		return -errno;
	}
	return 0;
}

static void server_teardown(struct server *sv)
{
	while (sv->conns)
		conn_close(sv, sv->conns);
	for (int i = 0; i < sv->nlis; i++) {
		if (sv->lis[i].rdma)
			ms_rdma_close(sv->lis[i].rdma);
		else
			close(sv->lis[i].fd);
	}
	if (sv->sigfd >= 0)
		close(sv->sigfd);
	if (sv->ep >= 0)
		close(sv->ep);
}

/* Room for MAX_CONNS sockets: the usual soft limit of 1024 is lower. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = MAX_CONNS + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
		log_warn("open files limited to %llu: fewer than %d clients "
			 "can connect", (unsigned long long)rl.rlim_cur, MAX_CONNS);
}

int ms_server_run(struct ms_ctx *ctx, const struct ms_resolved *r,
		  const char *pid_file)
{
	struct server sv = { .ctx = ctx, .ep = -1, .sigfd = -1,
			     .limits = r->limits,
			     .unauth_log = LOG_LIMIT_INIT(UNAUTH_LOG_BURST,
							  UNAUTH_LOG_PERIOD_MS) };
	int rc;

	rc = fm_admit_init(&sv.admit, sv.limits.max_handshakes,
			   sv.limits.max_handshakes_per_source);
	if (rc < 0) {
		log_err("handshake limits: %s", strerror(-rc));
		return rc;
	}
	ctx->limits = &sv.limits;
	ctx->admit = &sv.admit;
	ctx->notify.fn = notify_devices;
	ctx->notify.arg = &sv;
	raise_fd_limit();
	sv.ep = epoll_create1(EPOLL_CLOEXEC);
	if (sv.ep < 0) {
		log_err("epoll_create1: %s", strerror(errno));
		return -errno;
	}
	rc = signals_open(&sv);
	if (rc < 0)
		log_err("signals: %s", strerror(-rc));
	for (int i = 0; i < r->nlisten && rc == 0; i++) {
		if (r->listen[i].kind == ADDR_RDMA)
			rc = rdma_listen_one(&sv, &sv.lis[i], &r->listen[i]);
		else
			rc = listen_one(&sv.lis[i], &r->listen[i]);
		if (rc == 0)
			sv.nlis++;
	}
	if (rc == 0)
		rc = listeners_watch(&sv, 1);
	if (rc == 0 && pid_file && pid_file[0])
		rc = write_pid_file(pid_file);
	if (rc == 0) {
		/* The pool is allocated and locked and we listen: units
		 * ordered after ours (Type=notify) may start clients now. */
		sd_notify_state("READY=1");
		loop(&sv);
		sd_notify_state("STOPPING=1");
	}
	server_teardown(&sv);
	ctx->limits = NULL;
	ctx->admit = NULL;
	ctx->notify.fn = NULL;
	fm_admit_fini(&sv.admit);
	if (pid_file && pid_file[0] && rc == 0)
		unlink(pid_file);
	return rc;
}
