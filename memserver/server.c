/* server.c — listeners, connections and the epoll loop.
 *
 * One thread, level-triggered epoll, non-blocking sockets.  Each
 * connection owns a read buffer (grown to one whole frame at most) and a
 * reply queue.  When a connection has OUT_HIGH reply bytes queued the
 * server stops reading from it until the peer drains them: a client that
 * pipelines reads but never receives cannot make the server buffer
 * without bound.  Anything that breaks the protocol closes that one
 * connection, with the reason in the log; the loop goes on.
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
#define MAX_UNAUTH       256          /* handshakes in progress at once */
#define OUT_HIGH         (4u << 20)   /* stop reading above this many queued bytes */
#define RBUF_SMALL       4096         /* before authentication */
#define RBUF_READY       (256u << 10) /* after: room for a pipelined burst */
#define AUTH_TIMEOUT_MS  10000
#define SWEEP_MS         1000
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
	uint64_t auth_deadline;
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

/* Handle every complete frame buffered, until backpressure says stop. */
static int conn_process(struct server *sv, struct conn *c)
{
	while (!conn_paused(c)) {
		size_t avail = c->rlen - c->rpos;
		const uint8_t *p = c->rbuf + c->rpos;
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
		rc = ms_session_wire_frame(sv->ctx, &c->sess, &h, p, &c->out);
		c->rpos += flen;
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
		rc = conn_process(sv, c);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int conn_flush(struct conn *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, c->out.data + c->out.head, c->out.len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			log_info("%s: closing: send failed: %s", c->sess.peer,
				 strerror(errno));
			return -errno;
		}
		ms_buf_consume(&c->out, (size_t)n);
	}
	return c->close_after_flush ? -ECONNABORTED : 0;
}

static void conn_event(struct server *sv, struct conn *c, uint32_t events)
{
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
	c->auth_deadline = ms_now_ms() + AUTH_TIMEOUT_MS;
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

/* Peers still in the handshake are cheap to open and hold (10 s each),
 * so they get a quota of their own: beyond it the oldest is dropped,
 * and a flood of idle sockets cannot lock real clients out. */
static void limit_unauthenticated(struct server *sv)
{
	struct conn *oldest = NULL;
	unsigned n = 0;

	for (struct conn *c = sv->conns; c; c = c->next) {
		if (c->sess.state == MS_READY)
			continue;
		n++;
		if (!oldest || c->auth_deadline < oldest->auth_deadline)
			oldest = c;
	}
	if (n <= MAX_UNAUTH || !oldest)
		return;
	log_warn("%s: closing: %u connections are not authenticated yet; "
		 "dropping the oldest", oldest->sess.peer, n);
	conn_close(sv, oldest);
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
		if (sv->nconns >= MAX_CONNS) {
			log_warn("%s: refusing a connection: %u already open",
				 l->name, sv->nconns);
			close(fd);
			continue;
		}
		if (conn_add(sv, fd, &ss, len) < 0) {
			log_err("%s: cannot set up a connection", l->name);
			close(fd);
			continue;
		}
		limit_unauthenticated(sv);
	}
}

/* ---- timers, signals, the loop ---- */

static void sweep(struct server *sv, uint64_t now)
{
	struct conn *c = sv->conns;

	while (c) {
		struct conn *next = c->next;

		if (c->sess.state != MS_READY && now >= c->auth_deadline) {
			log_warn("%s: closing: not authenticated within %d ms",
				 c->sess.peer, AUTH_TIMEOUT_MS);
			conn_close(sv, c);
		}
		c = next;
	}
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
		if (sv->ctx->metrics) {
			struct fm_stat st;

			ms_ctx_stat(sv->ctx, &st);
			metrics_pool_publish(sv->ctx->metrics, &st);
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
	struct server sv = { .ctx = ctx, .ep = -1, .sigfd = -1 };
	int rc;

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
	if (pid_file && pid_file[0] && rc == 0)
		unlink(pid_file);
	return rc;
}
