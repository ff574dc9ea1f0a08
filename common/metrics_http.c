/* metrics_http.c — a minimal HTTP/1.0 server for `GET /metrics`.
 *
 * One thread, one connection at a time, one request per connection: a
 * scraper asks every few seconds, so nothing more is needed, and a client
 * that stalls is cut off by socket timeouts instead of holding the thread.
 * The response body is built in a buffer owned by the server, grown (off
 * the I/O path) only when the provider outgrows it.
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

#include "log.h"
#include "metrics_http.h"
#include "parse.h"

#define REQ_MAX 4096                /* request line + headers */
#define BODY_INIT (64 * 1024)
#define BODY_MAX (16 * 1024 * 1024) /* far beyond any sane scrape */
#define IO_TIMEOUT_S 2

struct metrics_server {
	int lfd;
	int stop_pipe[2];
	pthread_t thread;
	metrics_provider_fn fn;
	void *arg;
	char *body;
	size_t body_cap;
	uint16_t port;
	char req[REQ_MAX + 1];
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

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads until the blank line that ends the headers; returns the request
 * length, 0 if the peer went away or stalled, -E2BIG if it is too long. */
static ssize_t read_request(struct metrics_server *s, int fd)
{
	size_t len = 0;

	while (len < REQ_MAX) {
		ssize_t n = recv(fd, s->req + len, REQ_MAX - len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		len += (size_t)n;
		s->req[len] = '\0';
		if (strstr(s->req, "\r\n\r\n") || strstr(s->req, "\n\n"))
			return (ssize_t)len;
	}
	return -E2BIG;
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
			log_err("metrics: output exceeds %d bytes", BODY_MAX);
			return -EFBIG;
		}
		char *nb = realloc(s->body, s->body_cap * 2);

		if (!nb) {
			log_err("metrics: cannot grow buffer to %zu bytes",
				s->body_cap * 2);
			return -ENOMEM;
		}
		s->body = nb;
		s->body_cap *= 2;
	}
}

static void respond(int fd, int status, const char *body, size_t len,
		    int head_only)
{
	const char *reason = status == 200 ? "OK" :
			     status == 404 ? "Not Found" :
			     status == 405 ? "Method Not Allowed" :
			     status == 431 ? "Request Header Fields Too Large" :
			     status == 500 ? "Internal Server Error" : "Bad Request";
	const char *ctype = status == 200 ?
		"text/plain; version=0.0.4; charset=utf-8" : "text/plain";
	char hdr[256];
	int n;

	if (status != 200) {
		body = reason;
		len = strlen(reason);
	}
	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n",
		     status, reason, ctype, len,
		     status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (write_all(fd, hdr, (size_t)n) < 0)
		return;
	if (!head_only)
		(void)write_all(fd, body, len);
}

/* Closing with unread input makes the kernel send a reset, which can
 * destroy the response before the client reads it (the 431 case): send
 * FIN, then discard what the client still sends until it closes, bounded
 * by the receive timeout and a byte budget. */
static void linger_close(int fd)
{
	char sink[1024];
	size_t budget = 64 * 1024;

	shutdown(fd, SHUT_WR);
	while (budget > 0) {
		ssize_t n = recv(fd, sink, sizeof(sink), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		budget -= (size_t)n < budget ? (size_t)n : budget;
	}
}

static void serve_one(struct metrics_server *s, int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };
	ssize_t rlen, blen = 0;
	int status, head_only = 0;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	rlen = read_request(s, fd);
	if (rlen == 0)
		return;
	if (rlen < 0) {
		status = 431;
	} else {
		status = metrics_http_classify(s->req, (size_t)rlen, &head_only);
		if (status == 200) {
			blen = render(s);
			if (blen < 0)
				status = 500;
		}
	}
	respond(fd, status, s->body, (size_t)(blen > 0 ? blen : 0), head_only);
	linger_close(fd);
}

static void *server_thread(void *p)
{
	struct metrics_server *s = p;
	struct pollfd pf[2] = {
		{ .fd = s->lfd, .events = POLLIN },
		{ .fd = s->stop_pipe[0], .events = POLLIN },
	};

	for (;;) {
		int fd;

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("metrics: poll: %s", strerror(errno));
			break;
		}
		if (pf[1].revents)
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue; /* ECONNABORTED, EMFILE: try again next time */
		serve_one(s, fd);
		close(fd);
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
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
				ai->ai_protocol);

		if (fd < 0) {
			err = -errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, 16) == 0) {
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
