/* fm-flood.c — hostile clients for tests/integration/security.bats (listeners).
 *
 *   fm-flood flood HOST PORT SOURCE CONNS SECONDS
 *       Keeps up to CONNS connections from address SOURCE open at once,
 *       each sending the first 8 bytes of a HELLO frame and nothing more;
 *       one the server closes is reopened at once.  Stops after SECONDS.
 *       Prints "attempts=A closed_by_server=C open_at_end=O".
 *   fm-flood trickle HOST PORT INTERVAL_MS SECONDS [http]
 *       One connection sending one byte every INTERVAL_MS: a HELLO frame
 *       (or, with "http", an HTTP request whose headers never end).
 *       Exit 0 with "closed after_ms=T bytes=B" once the server closes
 *       it; exit 1 if it is still open after SECONDS.
 *   fm-flood stall SERVER SECRET_FILE CONNS READS GO_FILE
 *       CONNS authenticated connections (real transport), each with a
 *       segment written; prints "written", waits for GO_FILE to exist,
 *       then submits READS 1 MiB reads on each and stops reading replies
 *       after the first (the transport's receiver blocks in the done
 *       callback); prints "stalled" and holds for at most 600 s.
 *   fm-flood idle SERVER SECRET_FILE SECONDS
 *       One authenticated connection that sends nothing.  Exit 0 with
 *       "closed after_ms=T" once the server closed it; exit 1 if it is
 *       still up after SECONDS.
 *
 * Every loop is bounded by its SECONDS (at most 600) or a count.
 * Exit 2: usage; 3: could not connect or authenticate.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "log.h"
#include "parse.h"
#include "protocol.h"
#include "transport.h"

#define MAX_SECONDS  600
#define MAX_CONNS    4096
#define SEG_BYTES    (1u << 20)
#define WRITE_CHUNK  (256u << 10)  /* under the server's 256 KiB read buffer */

static int usage(void)
{
	fprintf(stderr, "usage: fm-flood flood HOST PORT SOURCE CONNS SECONDS\n"
		"       fm-flood trickle HOST PORT INTERVAL_MS SECONDS [http]\n"
		"       fm-flood stall SERVER SECRET_FILE CONNS READS GO_FILE\n"
		"       fm-flood idle SERVER SECRET_FILE SECONDS\n");
	return 2;
}

static int num(const char *s, uint64_t max, uint64_t *out)
{
	return parse_u64(s, 0, max, out);
}

/* ---- raw sockets ---- */

static int dial(const char *host, uint16_t port, const char *source, int nonblock)
{
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in from = { .sin_family = AF_INET };
	int fd;

	if (inet_pton(AF_INET, host, &to.sin_addr) != 1 ||
	    (source && inet_pton(AF_INET, source, &from.sin_addr) != 1))
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		return -errno;
	if (source) {
		int one = 1;

		/* The port is picked at connect, per destination: a flood
		 * from one bound address does not run out of ports. */
		setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	}
	if ((source && bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0) ||
	    (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0 && errno != EINPROGRESS)) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* A whole HELLO frame (as the cluster identity), to be sent piece by
 * piece.  buf holds FM_HDR_SIZE + FM_HELLO_REQ_MAX bytes. */
static size_t hello_frame(uint8_t *buf)
{
	struct fm_hello_req req = { .version = FM_PROTO_VERSION };
	struct fm_hdr h = { .op = FM_OP_HELLO, .tag = 1 };

	snprintf(req.name, sizeof(req.name), "%s", FM_CLUSTER_NAME);
	fm_random(req.client_nonce, FM_NONCE_LEN);
	h.len = (uint32_t)fm_hello_req_encode(buf + FM_HDR_SIZE, &req);
	fm_hdr_encode(buf, &h);
	return FM_HDR_SIZE + h.len;
}

/* Did the peer close (EOF, reset)?  Drains what it sent. */
static int peer_closed(int fd)
{
	char sink[512];

	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (n == 0)
			return 1;
		if (n < 0)
			return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
	}
	return 0;
}

static int cmd_flood(char **argv)
{
	uint64_t port, conns, secs, attempts = 0, closed = 0;
	static struct pollfd pf[MAX_CONNS];
	uint8_t hello[FM_HDR_SIZE + FM_HELLO_REQ_MAX];
	uint64_t end;
	unsigned open_now = 0;

	if (num(argv[1], 65535, &port) || num(argv[3], MAX_CONNS, &conns) || !conns ||
	    num(argv[4], MAX_SECONDS, &secs))
		return usage();
	hello_frame(hello);
	for (unsigned i = 0; i < conns; i++)
		pf[i].fd = -1;
	end = fm_mono_ms() + secs * 1000;
	while (fm_mono_ms() < end) {
		for (unsigned i = 0; i < conns; i++) {
			if (pf[i].fd >= 0)
				continue;
			pf[i].fd = dial(argv[0], (uint16_t)port, argv[2], 1);
			pf[i].events = POLLOUT;
			attempts++;
			if (pf[i].fd < 0) {
				pf[i].fd = -1;   /* out of ports or fds: try later */
				continue;
			}
			open_now++;
		}
		if (poll(pf, conns, 100) < 0 && errno != EINTR)
			break;
		for (unsigned i = 0; i < conns; i++) {
			if (pf[i].fd < 0 || !pf[i].revents)
				continue;
			if (pf[i].events == POLLOUT && !(pf[i].revents & (POLLERR | POLLHUP))) {
				/* Connected: start a handshake, never finish it. */
				if (send(pf[i].fd, hello, 8, MSG_NOSIGNAL) == 8) {
					pf[i].events = POLLIN;
					continue;
				}
			} else if (!peer_closed(pf[i].fd)) {
				continue;
			}
			close(pf[i].fd);
			pf[i].fd = -1;
			open_now--;
			closed++;
		}
	}
	printf("attempts=%llu closed_by_server=%llu open_at_end=%u\n",
	       (unsigned long long)attempts, (unsigned long long)closed, open_now);
	for (unsigned i = 0; i < conns; i++)
		if (pf[i].fd >= 0)
			close(pf[i].fd);
	return 0;
}

static int cmd_trickle(char **argv, int argc)
{
	static const char http_head[] = "GET /metrics HTTP/1.0\r\n";
	uint8_t hello[FM_HDR_SIZE + FM_HELLO_REQ_MAX];
	uint64_t port, interval, secs, start, end, sent = 0;
	int http = argc == 5 && strcmp(argv[4], "http") == 0;
	size_t hello_len;
	int fd;

	if (num(argv[1], 65535, &port) || num(argv[2], 60000, &interval) || !interval ||
	    num(argv[3], MAX_SECONDS, &secs) || (argc == 5 && !http))
		return usage();
	hello_len = hello_frame(hello);
	fd = dial(argv[0], (uint16_t)port, NULL, 0);
	if (fd < 0) {
		fprintf(stderr, "fm-flood: connect: %s\n", strerror(-fd));
		return 3;
	}
	start = fm_mono_ms();
	end = start + secs * 1000;
	while (fm_mono_ms() < end) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		uint8_t b;

		if (http)   /* the request line, then "X: y" header lines forever */
			b = sent < sizeof(http_head) - 1 ? (uint8_t)http_head[sent]
			    : (uint8_t)"X: y\r\n"[(sent - (sizeof(http_head) - 1)) % 6];
		else
			b = sent < hello_len ? hello[sent] : 0;
		if (!http && sent >= hello_len) {
			fprintf(stderr, "fm-flood: the whole HELLO went out\n");
			break;
		}
		if (send(fd, &b, 1, MSG_NOSIGNAL) != 1 ||
		    (poll(&pf, 1, (int)interval) > 0 && peer_closed(fd))) {
			printf("closed after_ms=%llu bytes=%llu\n",
			       (unsigned long long)(fm_mono_ms() - start),
			       (unsigned long long)sent + 1);
			close(fd);
			return 0;
		}
		sent++;
	}
	printf("still open after_ms=%llu bytes=%llu\n",
	       (unsigned long long)(fm_mono_ms() - start), (unsigned long long)sent);
	close(fd);
	return 1;
}

/* ---- authenticated connections through the real transport ---- */

static int open_conn(const char *server, const struct fm_secret *secret, unsigned i,
		     struct fm_conn **out)
{
	struct fm_conn_params p = { .secret = secret, .timeout_ms = 600000,
				    .max_inflight = 256 };
	int rc;

	if (parse_addr(server, 0, &p.addr) < 0)
		return -EINVAL;
	fm_random(p.uuid, FM_UUID_LEN);
	p.uuid[0] = (uint8_t)i;
	rc = fm_conn_open(&p, out);
	if (rc < 0)
		fprintf(stderr, "fm-flood: connection %u: %s\n", i, strerror(-rc));
	return rc;
}

static int load_secret(const char *file, struct fm_secret *s)
{
	char err[256];

	if (fm_secret_load(file, s, err, sizeof(err)) < 0) {
		fprintf(stderr, "fm-flood: %s\n", err);
		return -EINVAL;
	}
	return 0;
}

/* The receiver thread that delivers a READ blocks here for good: it
 * reads nothing more from its socket, so the server's replies back up. */
static pthread_mutex_t stall_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stall_cv = PTHREAD_COND_INITIALIZER;

static void stall_done(struct fm_req *r, int status)
{
	(void)r;
	(void)status;
	pthread_mutex_lock(&stall_lock);
	for (;;)
		pthread_cond_wait(&stall_cv, &stall_lock);
}

static int write_segment(struct fm_conn *c, uint64_t *seg_id)
{
	static uint8_t data[WRITE_CHUNK];
	struct fm_req a = { .op = FM_OP_ALLOC, .arg = SEG_BYTES };
	int rc = fm_conn_call(c, &a);

	memset(data, 0xa5, sizeof(data));
	*seg_id = a.rep.alloc.seg_id;
	for (uint32_t off = 0; rc == 0 && off < SEG_BYTES; off += WRITE_CHUNK) {
		struct iovec iov = { .iov_base = data, .iov_len = WRITE_CHUNK };
		struct fm_req w = { .op = FM_OP_WRITE, .seg_id = *seg_id, .offset = off,
				    .len = WRITE_CHUNK, .iov = &iov, .iovcnt = 1 };

		rc = fm_conn_call(c, &w);
	}
	return rc;
}

static int wait_file(const char *path, unsigned seconds)
{
	for (unsigned i = 0; i < seconds * 20; i++) {
		if (access(path, F_OK) == 0)
			return 0;
		usleep(50000);
	}
	return -ETIMEDOUT;
}

static int cmd_stall(char **argv)
{
	static struct fm_conn *conns[MAX_CONNS];
	static uint64_t segs[MAX_CONNS];
	static uint8_t sink[SEG_BYTES];
	static struct fm_secret secret;
	uint64_t n, reads;
	struct fm_req *reqs;

	if (num(argv[2], MAX_CONNS, &n) || !n || num(argv[3], 256, &reads) || !reads ||
	    load_secret(argv[1], &secret))
		return usage();
	reqs = calloc(n * reads, sizeof(*reqs));
	if (!reqs)
		return 3;
	for (unsigned i = 0; i < n; i++) {
		if (open_conn(argv[0], &secret, i, &conns[i]) < 0 ||
		    write_segment(conns[i], &segs[i]) < 0)
			return 3;
	}
	printf("written\n");
	fflush(stdout);
	if (wait_file(argv[4], MAX_SECONDS) < 0)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		for (unsigned k = 0; k < reads; k++) {
			struct fm_req *r = &reqs[i * reads + k];

			*r = (struct fm_req){ .op = FM_OP_READ, .seg_id = segs[i],
					      .len = SEG_BYTES, .buf = sink,
					      .done = stall_done };
			if (fm_conn_submit(conns[i], r) < 0)
				return 1;
		}
	}
	printf("stalled\n");
	fflush(stdout);
	sleep(MAX_SECONDS);
	_exit(0);   /* receiver threads are blocked for good: no cleanup */
}

static int cmd_idle(char **argv)
{
	static struct fm_secret secret;
	struct fm_conn *c;
	uint64_t secs, start;

	if (num(argv[2], MAX_SECONDS, &secs) || load_secret(argv[1], &secret))
		return usage();
	if (open_conn(argv[0], &secret, 0, &c) < 0)
		return 3;
	start = fm_mono_ms();
	printf("up\n");
	fflush(stdout);
	while (fm_mono_ms() - start < secs * 1000) {
		if (!fm_conn_is_up(c)) {
			printf("closed after_ms=%llu\n",
			       (unsigned long long)(fm_mono_ms() - start));
			fm_conn_close(c);
			return 0;
		}
		usleep(50000);
	}
	printf("still up after_ms=%llu\n", (unsigned long long)(fm_mono_ms() - start));
	fm_conn_close(c);
	return 1;
}

int main(int argc, char **argv)
{
	log_init("fm-flood", LOG_LVL_WARN);
	if (fm_auth_init() < 0)
		return 3;
	if (argc == 7 && strcmp(argv[1], "flood") == 0)
		return cmd_flood(argv + 2);
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "trickle") == 0)
		return cmd_trickle(argv + 2, argc - 2);
	if (argc == 7 && strcmp(argv[1], "stall") == 0)
		return cmd_stall(argv + 2);
	if (argc == 5 && strcmp(argv[1], "idle") == 0)
		return cmd_idle(argv + 2);
	return usage();
}
