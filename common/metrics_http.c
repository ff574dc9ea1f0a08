/* metrics_http.c — a minimal HTTP/1.0 server for `GET /metrics`.
 *
 * One thread polls up to MAX_CONNS connections at once, one request per
 * connection, each with an absolute deadline for the whole exchange
 * (request in, response out): a client that trickles bytes or never
 * reads is cut off at its deadline and never delays another scrape (it
 * did when connections were served one at a time).  At most PER_SOURCE
 * connections from one address; beyond either cap a newcomer is closed
 * at once.
 *
 * Why not libmicrohttpd: its timeouts count inactivity, so a byte every
 * few seconds keeps a connection forever and the per-request deadline
 * would still be ours to write; for one GET path this file stays small,
 * and neither program gains a dependency.
 *
 * The response body is rendered into a buffer owned by the server, grown
 * (off the I/O path) only when the provider outgrows it, then copied to
 * the connection's own response buffer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "metrics_http.h"
#include "parse.h"

#define REQ_MAX 4096                /* request line + headers */
#define BODY_INIT (64 * 1024)
#define BODY_MAX (16 * 1024 * 1024) /* far beyond any sane scrape */
#define MAX_CONNS 32
#define PER_SOURCE 8
#define REQ_DEADLINE_MS 5000        /* accept to last byte out */
#define LINGER_BUDGET (64 * 1024)

enum mc_state { MC_FREE, MC_READ, MC_WRITE, MC_LINGER };

struct mconn {
	enum mc_state state;
	int fd;
	uint64_t deadline;           /* fm_mono_ms() */
	struct sockaddr_storage sa;
	size_t rlen;
	char *out;
	size_t out_len, out_off;
	size_t linger_budget;
	char req[REQ_MAX + 1];
};

struct metrics_server {
	int lfd;
	int stop_pipe[2];
	pthread_t thread;
	metrics_provider_fn fn;
	void *arg;
	char *body;
	size_t body_cap;
	uint16_t port;
	struct mconn conns[MAX_CONNS];
};

int metrics_parse_listen(const char *s, char *host, size_t hostlen,
			 uint16_t *port)
{
	const char *hs, *he, *ps;
	uint64_t p;

	if (!s || !*s)
		return -EINVAL;
	if (strncmp(s, "tcp://", 6) == 0)
		s += 6;
	if (*s == '[') {
		hs = s + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return -EINVAL;
		ps = he + 2;
	} else {
		hs = s;
		he = strrchr(s, ':');
		/* A bare IPv6 address is ambiguous: require brackets. */
		if (!he || memchr(s, ':', (size_t)(he - s)))
			return -EINVAL;
		ps = he + 1;
	}
	if (he == hs || (size_t)(he - hs) >= hostlen)
		return -EINVAL;
	if (parse_u64(ps, 0, 65535, &p) < 0)
		return -EINVAL;
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int metrics_http_classify(const char *req, size_t len, int *head_only)
{
	const char *sp1, *sp2, *eol, *path;
	size_t plen;

	*head_only = 0;
	eol = memchr(req, '\n', len);
	if (!eol)
		return 400;
	sp1 = memchr(req, ' ', (size_t)(eol - req));
	if (!sp1)
		return 400;
	path = sp1 + 1;
	sp2 = memchr(path, ' ', (size_t)(eol - path));
	if (!sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
		return 400;
	plen = (size_t)(sp2 - path);
	if (sp1 - req == 4 && memcmp(req, "HEAD", 4) == 0)
		*head_only = 1;
	else if (!(sp1 - req == 3 && memcmp(req, "GET", 3) == 0))
		return 405;
	/* Scrapers may add a query string; it selects nothing here. */
	if (plen >= 8 && memcmp(path, "/metrics", 8) == 0 &&
	    (plen == 8 || path[8] == '?'))
		return 200;
	return 404;
}

/* ---- one connection: read the request, write the response, linger ---- */

static void conn_reset(struct mconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	c->fd = -1;
	c->out = NULL;
	c->state = MC_FREE;
}

/* Asks the provider for the text, growing the buffer while it overflows.
 * Returns the body length or -ENOMEM/-EFBIG. */
static ssize_t render(struct metrics_server *s)
{
	struct metrics_buf b;

	for (;;) {
		metrics_buf_init(&b, s->body, s->body_cap);
		s->fn(&b, s->arg);
		if (!b.overflow)
			return (ssize_t)b.len;
		if (s->body_cap * 2 > BODY_MAX) {
			log_err_rl("metrics: output exceeds %d bytes", BODY_MAX);
			return -EFBIG;
		}
		char *nb = realloc(s->body, s->body_cap * 2);

		if (!nb) {
			log_err_rl("metrics: cannot grow buffer to %zu bytes",
				   s->body_cap * 2);
			return -ENOMEM;
		}
		s->body = nb;
		s->body_cap *= 2;
	}
}

/* The whole response into the connection's own buffer, so that many
 * can be written at once, each at its reader's pace. */
static int build_response(struct metrics_server *s, struct mconn *c, int status,
			  int head_only)
{
	const char *reason = status == 200 ? "OK" :
			     status == 404 ? "Not Found" :
			     status == 405 ? "Method Not Allowed" :
			     status == 431 ? "Request Header Fields Too Large" :
			     status == 500 ? "Internal Server Error" : "Bad Request";
	const char *ctype = status == 200 ?
		"text/plain; version=0.0.4; charset=utf-8" : "text/plain";
	const char *body = reason;
	size_t len = strlen(reason);
	char hdr[256];
	int n;

	if (status == 200) {
		ssize_t blen = render(s);

		if (blen < 0)
			return build_response(s, c, 500, head_only);
		body = s->body;
		len = (size_t)blen;
	}
	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
		     status, reason, ctype, len,
		     status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (head_only)
		len = 0;
	c->out = malloc((size_t)n + len);
	if (!c->out)
		return -ENOMEM;
	memcpy(c->out, hdr, (size_t)n);
	memcpy(c->out + n, body, len);
	c->out_len = (size_t)n + len;
	c->out_off = 0;
	c->state = MC_WRITE;
	return 0;
}

static int request_complete(const struct mconn *c)
{
	return strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n");
}

static int conn_read(struct metrics_server *s, struct mconn *c)
{
	int head_only = 0, status;

	for (;;) {
		ssize_t n = recv(c->fd, c->req + c->rlen, REQ_MAX - c->rlen, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -ECONNRESET;
		c->rlen += (size_t)n;
		c->req[c->rlen] = '\0';
		if (request_complete(c))
			break;
		if (c->rlen == REQ_MAX)
			return build_response(s, c, 431, 0);
	}
	status = metrics_http_classify(c->req, c->rlen, &head_only);
	return build_response(s, c, status, head_only);
}

static int conn_write(struct mconn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -errno;
		c->out_off += (size_t)n;
	}
	/* Closing with unread input makes the kernel send a reset, which
	 * can destroy the response before the client reads it (the 431
	 * case): send FIN, then discard what the client still sends until
	 * it closes, within the deadline and a byte budget. */
	shutdown(c->fd, SHUT_WR);
	c->state = MC_LINGER;
	c->linger_budget = LINGER_BUDGET;
	return 0;
}

static int conn_linger(struct mconn *c)
{
	char sink[1024];

	for (;;) {
		ssize_t n = recv(c->fd, sink, sizeof(sink), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0 || (size_t)n >= c->linger_budget)
			return -ECONNRESET;   /* done: the client closed */
		c->linger_budget -= (size_t)n;
	}
}

static void conn_event(struct metrics_server *s, struct mconn *c, short revents)
{
	int rc = 0;

	if (c->state == MC_READ && (revents & (POLLIN | POLLHUP | POLLERR)))
		rc = conn_read(s, c);
	if (rc == 0 && c->state == MC_WRITE)
		rc = conn_write(c);
	if (rc == 0 && c->state == MC_LINGER && (revents & (POLLIN | POLLHUP | POLLERR)))
		rc = conn_linger(c);
	if (rc < 0)
		conn_reset(c);
}

/* ---- accepting: a slot per connection, a few per source ---- */

static int same_source(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	if (a->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
			      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
	return 0;
}

/* A free slot for a peer at ss, or NULL when it may not have one. */
static struct mconn *slot_for(struct metrics_server *s, const struct sockaddr_storage *ss)
{
	struct mconn *free_slot = NULL;
	unsigned same = 0;

	for (int i = 0; i < MAX_CONNS; i++) {
		if (s->conns[i].state == MC_FREE)
			free_slot = free_slot ? free_slot : &s->conns[i];
		else if (same_source(&s->conns[i].sa, ss))
			same++;
	}
	if (same >= PER_SOURCE) {
		log_warn_rl("metrics: refusing a connection: %u open from that "
			    "address", same);
		return NULL;
	}
	if (!free_slot)
		log_warn_rl("metrics: refusing a connection: %d open", MAX_CONNS);
	return free_slot;
}

static void accept_all(struct metrics_server *s, uint64_t now)
{
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(s->lfd, (struct sockaddr *)&ss, &sl,
				 SOCK_CLOEXEC | SOCK_NONBLOCK);
		struct mconn *c;

		if (fd < 0)
			return;   /* EAGAIN, or ECONNABORTED/EMFILE: next poll */
		c = slot_for(s, &ss);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->sa = ss;
		c->rlen = 0;
		c->req[0] = '\0';
		c->deadline = now + REQ_DEADLINE_MS;
		c->state = MC_READ;
	}
}

/* ---- the thread ---- */

static uint64_t now_ms(void)
{
	return fm_mono_ms();
}

/* Connections past their deadline go; returns the poll timeout until
 * the next deadline (-1: none). */
static int expire(struct metrics_server *s, uint64_t now)
{
	uint64_t next = UINT64_MAX;

	for (int i = 0; i < MAX_CONNS; i++) {
		struct mconn *c = &s->conns[i];

		if (c->state == MC_FREE)
			continue;
		if (now >= c->deadline) {
			if (c->state == MC_READ)
				log_debug("metrics: closing a connection: no whole "
					  "request within %d ms", REQ_DEADLINE_MS);
			conn_reset(c);
		} else if (c->deadline < next) {
			next = c->deadline;
		}
	}
	return next == UINT64_MAX ? -1 : (int)(next - now);
}

static void *server_thread(void *p)
{
	struct metrics_server *s = p;
	struct pollfd pf[2 + MAX_CONNS];
	int map[2 + MAX_CONNS];

	for (;;) {
		uint64_t now = now_ms();
		int timeout = expire(s, now), n = 2, rc;

		pf[0] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		pf[1] = (struct pollfd){ .fd = s->stop_pipe[0], .events = POLLIN };
		for (int i = 0; i < MAX_CONNS; i++) {
			struct mconn *c = &s->conns[i];

			if (c->state == MC_FREE)
				continue;
			pf[n] = (struct pollfd){ .fd = c->fd,
				.events = c->state == MC_WRITE ? POLLOUT : POLLIN };
			map[n++] = i;
		}
		rc = poll(pf, (nfds_t)n, timeout);
		if (rc < 0) {
			if (errno == EINTR)
				continue;
			log_err("metrics: poll: %s", strerror(errno));
			break;
		}
		if (pf[1].revents)
			break;
		for (int k = 2; k < n; k++)
			if (pf[k].revents)
				conn_event(s, &s->conns[map[k]], pf[k].revents);
		if (pf[0].revents & POLLIN)
			accept_all(s, now_ms());
	}
	return NULL;
}

static int bind_listen(const char *host, uint16_t port, int *out_fd)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV,
	};
	struct addrinfo *res, *ai;
	char pstr[8];
	int rc, err = -EADDRNOTAVAIL;

	snprintf(pstr, sizeof(pstr), "%u", port);
	rc = getaddrinfo(host, pstr, &hints, &res);
	if (rc != 0) {
		log_err("metrics: %s: %s", host, gai_strerror(rc));
		return -EINVAL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int one = 1;
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
				ai->ai_protocol);

		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 64) == 0) {
			*out_fd = fd;
			freeaddrinfo(res);
			return 0;
		}
		err = -errno;
		close(fd);
	}
	freeaddrinfo(res);
	return err;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return 0;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void server_free(struct metrics_server *s)
{
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->stop_pipe[0] >= 0)
		close(s->stop_pipe[0]);
	if (s->stop_pipe[1] >= 0)
		close(s->stop_pipe[1]);
	for (int i = 0; i < MAX_CONNS; i++)
		conn_reset(&s->conns[i]);
	free(s->body);
	free(s);
}

/* The thread must not take the program's signals (SIGTERM handling,
 * SIGINT in the foreground): block them all while it is created so it
 * inherits a full mask. */
static int start_thread(struct metrics_server *s)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&s->thread, NULL, server_thread, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc == 0)
		pthread_setname_np(s->thread, "farmem-metrics");
	return -rc;
}

int metrics_server_start(const char *listen_addr, metrics_provider_fn fn,
			 void *arg, struct metrics_server **out)
{
	char host[ADDR_HOST_MAX];
	uint16_t port;
	struct metrics_server *s;
	int rc;

	rc = metrics_parse_listen(listen_addr, host, sizeof(host), &port);
	if (rc < 0) {
		log_err("metrics: bad listen address '%s' (want HOST:PORT)",
			listen_addr ? listen_addr : "");
		return rc;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->lfd = s->stop_pipe[0] = s->stop_pipe[1] = -1;
	for (int i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = -1;
	s->fn = fn;
	s->arg = arg;
	s->body_cap = BODY_INIT;
	s->body = malloc(s->body_cap);
	if (!s->body) {
		rc = -ENOMEM;
		goto fail;
	}
	if (pipe2(s->stop_pipe, O_CLOEXEC) < 0) {
		rc = -errno;
		log_err("metrics: pipe: %s", strerror(errno));
		goto fail;
	}
	rc = bind_listen(host, port, &s->lfd);
	if (rc < 0) {
		log_err("metrics: cannot listen on %s: %s", listen_addr,
			strerror(-rc));
		goto fail;
	}
	s->port = bound_port(s->lfd);
	rc = start_thread(s);
	if (rc < 0) {
		log_err("metrics: cannot start thread: %s", strerror(-rc));
		goto fail;
	}
	log_info("metrics: serving http://%s%s%s:%u/metrics",
		 strchr(host, ':') ? "[" : "", host,
		 strchr(host, ':') ? "]" : "", s->port);
	*out = s;
	return 0;
fail:
	server_free(s);
	return rc;
}

uint16_t metrics_server_port(const struct metrics_server *s)
{
	return s->port;
}

void metrics_server_stop(struct metrics_server *s)
{
	char c = 'q';

	if (!s)
		return;
	/* A pipe write cannot block here: the thread reads nothing from it,
	 * and one byte fits any pipe buffer. */
	if (write(s->stop_pipe[1], &c, 1) != 1)
		log_err("metrics: stop: %s", strerror(errno));
	pthread_join(s->thread, NULL);
	server_free(s);
}
