/* fm-mitm.c — a man in the middle between farmem clients and one
 * memserver, for the channel tests.  Loopback only.
 *
 *   fm-mitm --listen PORT --to PORT [--mode MODE] [--arm FILE]
 *           [--lifetime SECONDS]
 *
 * Accepts clients on 127.0.0.1:PORT and relays each to the memserver on
 * 127.0.0.1:--to, cutting both streams into frames as the protocol does
 * (HELLO and AUTH plain, every other frame followed by its 16-byte tag).
 * It holds no key.  Modes, each done once, at the first client frame
 * after FILE exists (--arm; at once without it):
 *   pass          relay unchanged (the control)
 *   inject-free   send a FREE of a segment id seen so far before it
 *   replay-write  send again the first WRITE frame it relayed
 *   flip-write    flip one data byte of the next WRITE frame
 * Stdout gets one line per event: "listening", "conn N open", "attack
 * ...", "conn N closed by server|client".  Exits after --lifetime
 * (default 300) seconds or on SIGTERM.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "chan.h"
#include "protocol.h"

#define MAX_PAIRS   64
#define IN_MAX      (FM_HDR_SIZE + FM_MAX_PAYLOAD + FM_CHAN_TAG_LEN)
#define OUT_HIGH    (8u << 20)     /* stop reading the other side above this */

enum mode { M_PASS, M_INJECT_FREE, M_REPLAY_WRITE, M_FLIP_WRITE };

struct buf {
	uint8_t *data;
	size_t len, cap;
};

/* One direction: bytes read from `from`, cut into frames, queued for `to`. */
struct dir {
	int from, to;
	struct buf in;
	struct buf *out;        /* the other side's queue */
	int raw;                /* gave up parsing: pass bytes as they come */
	int c2s;
};

struct pair {
	int id, cfd, sfd;
	struct buf to_c, to_s;
	struct dir up, down;    /* client->server, server->client */
	int open;
};

static enum mode mode;
static const char *arm_file;
static int attacked;
static uint64_t seen_seg;
static int have_seg;
static uint8_t *first_write;
static size_t first_write_len;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static int buf_add(struct buf *b, const void *p, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 65536;
		uint8_t *d;

		while (cap < b->len + n)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static void buf_drop(struct buf *b, size_t n)
{
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
}

static size_t trailer_of(uint8_t op)
{
	uint8_t base = op & (uint8_t)~FM_OP_REPLY;

	return base == FM_OP_HELLO || base == FM_OP_AUTH ? 0 : FM_CHAN_TAG_LEN;
}

static int armed(void)
{
	struct stat st;

	return !attacked && mode != M_PASS && (!arm_file || stat(arm_file, &st) == 0);
}

/* Note segment ids: from ALLOC replies and from READ/WRITE requests. */
static void note_seg(const struct dir *d, const struct fm_hdr *h, const uint8_t *pl)
{
	if (have_seg)
		return;
	if ((d->c2s && (h->op == FM_OP_WRITE || h->op == FM_OP_READ) &&
	     h->len >= FM_RANGE_LEN) ||
	    (!d->c2s && h->op == (FM_OP_ALLOC | FM_OP_REPLY) && h->status == 0 &&
	     h->len >= 8)) {
		seen_seg = get_le64(pl);
		have_seg = 1;
	}
}

static int inject_free(struct pair *p)
{
	uint8_t f[FM_HDR_SIZE + 8 + FM_CHAN_TAG_LEN];
	struct fm_hdr h = { .op = FM_OP_FREE, .tag = 0x7fff0001, .len = 8 };

	fm_hdr_encode(f, &h);
	put_le64(f + FM_HDR_SIZE, seen_seg);
	fm_random(f + FM_HDR_SIZE + 8, FM_CHAN_TAG_LEN);   /* no key: a guess */
	say("attack conn %d: injected FREE seg=%llu", p->id,
	    (unsigned long long)seen_seg);
	return buf_add(&p->to_s, f, sizeof(f));
}

/* A client frame about to be relayed: the attack goes here. */
static int attack(struct pair *p, uint8_t *f, size_t n, const struct fm_hdr *h)
{
	if (h->op == FM_OP_WRITE && !first_write) {
		first_write = malloc(n);
		if (!first_write)
			return -ENOMEM;
		memcpy(first_write, f, n);
		first_write_len = n;
	}
	if (trailer_of(h->op) == 0 || !armed())
		return 0;
	switch (mode) {
	case M_INJECT_FREE:
		if (!have_seg)
			return 0;
		attacked = 1;
		return inject_free(p);
	case M_REPLAY_WRITE:
		if (!first_write)
			return 0;
		attacked = 1;
		say("attack conn %d: replayed a WRITE frame (%zu bytes)", p->id,
		    first_write_len);
		return buf_add(&p->to_s, first_write, first_write_len);
	case M_FLIP_WRITE:
		if (h->op != FM_OP_WRITE || h->len <= FM_RANGE_LEN)
			return 0;
		attacked = 1;
		f[FM_HDR_SIZE + h->len - 1] ^= 0x01;
		say("attack conn %d: flipped the last data byte of a WRITE "
		    "(seg=%llu)", p->id, (unsigned long long)get_le64(f + FM_HDR_SIZE));
		return 0;
	default:
		return 0;
	}
}

/* Cut what came in into frames and queue them on the other side. */
static int dir_frames(struct pair *p, struct dir *d)
{
	while (!d->raw && d->in.len >= FM_HDR_SIZE) {
		struct fm_hdr h;
		size_t n;

		if (fm_hdr_decode(d->in.data, d->in.len, &h) < 0) {
			d->raw = 1;   /* not ours to judge: the peer will */
			break;
		}
		n = FM_HDR_SIZE + h.len + trailer_of(h.op);
		if (d->in.len < n)
			return 0;
		note_seg(d, &h, d->in.data + FM_HDR_SIZE);
		if (d->c2s && attack(p, d->in.data, n, &h) < 0)
			return -ENOMEM;
		if (buf_add(d->out, d->in.data, n) < 0)
			return -ENOMEM;
		buf_drop(&d->in, n);
	}
	if (d->raw && d->in.len) {
		if (buf_add(d->out, d->in.data, d->in.len) < 0)
			return -ENOMEM;
		d->in.len = 0;
	}
	return 0;
}

static int dir_read(struct pair *p, struct dir *d)
{
	uint8_t tmp[65536];
	ssize_t n = recv(d->from, tmp, sizeof(tmp), MSG_DONTWAIT);

	if (n == 0)
		return -ECONNRESET;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	if (d->in.len + (size_t)n > IN_MAX + sizeof(tmp))
		return -EMSGSIZE;
	if (buf_add(&d->in, tmp, (size_t)n) < 0)
		return -ENOMEM;
	return dir_frames(p, d);
}

static int flush_to(int fd, struct buf *b)
{
	while (b->len) {
		ssize_t n = send(fd, b->data, b->len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -errno;
		buf_drop(b, (size_t)n);
	}
	return 0;
}

static void pair_close(struct pair *p, const char *by)
{
	say("conn %d closed by %s", p->id, by);
	close(p->cfd);
	close(p->sfd);
	free(p->to_c.data);
	free(p->to_s.data);
	free(p->up.in.data);
	free(p->down.in.data);
	memset(p, 0, sizeof(*p));
}

static int tcp_socket(uint16_t port, int do_listen)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (do_listen) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 64))
			goto fail;
	} else if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

static void pair_open(struct pair *pairs, int lfd, uint16_t to, int *next_id)
{
	int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), sfd;
	struct pair *p = NULL;

	if (cfd < 0)
		return;
	for (int i = 0; i < MAX_PAIRS && !p; i++)
		if (!pairs[i].open)
			p = &pairs[i];
	sfd = p ? tcp_socket(to, 0) : -1;
	if (sfd < 0) {
		close(cfd);
		return;
	}
	*p = (struct pair){ .id = (*next_id)++, .cfd = cfd, .sfd = sfd, .open = 1 };
	p->up = (struct dir){ .from = cfd, .to = sfd, .out = &p->to_s, .c2s = 1 };
	p->down = (struct dir){ .from = sfd, .to = cfd, .out = &p->to_c };
	say("conn %d open", p->id);
}

/* One pass over a pair's ready events; nonzero: the pair is done. */
static int pair_event(struct pair *p, const struct pollfd *cp, const struct pollfd *sp)
{
	if ((cp->revents & (POLLIN | POLLHUP | POLLERR)) && dir_read(p, &p->up) < 0) {
		pair_close(p, "client");
		return 1;
	}
	if ((sp->revents & (POLLIN | POLLHUP | POLLERR)) && dir_read(p, &p->down) < 0) {
		pair_close(p, "server");
		return 1;
	}
	if (flush_to(p->sfd, &p->to_s) < 0) {
		pair_close(p, "server");
		return 1;
	}
	if (flush_to(p->cfd, &p->to_c) < 0) {
		pair_close(p, "client");
		return 1;
	}
	return 0;
}

static int parse_mode(const char *s)
{
	static const char *const names[] = { "pass", "inject-free", "replay-write",
					     "flip-write" };

	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "to", required_argument, NULL, 't' },
		{ "mode", required_argument, NULL, 'm' },
		{ "arm", required_argument, NULL, 'a' },
		{ "lifetime", required_argument, NULL, 'T' },
		{ 0 }
	};
	static struct pair pairs[MAX_PAIRS];
	struct pollfd pfd[1 + 2 * MAX_PAIRS];
	long listen_port = 0, to_port = 0, lifetime = 300;
	int c, lfd, next_id = 1, m;
	time_t end;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_port = strtol(optarg, NULL, 10); break;
		case 't': to_port = strtol(optarg, NULL, 10); break;
		case 'a': arm_file = optarg; break;
		case 'T': lifetime = strtol(optarg, NULL, 10); break;
		case 'm':
			m = parse_mode(optarg);
			if (m < 0) {
				fprintf(stderr, "fm-mitm: --mode %s: unknown\n", optarg);
				return 2;
			}
			mode = (enum mode)m;
			break;
		default: return 2;
		}
	}
	if (listen_port <= 0 || listen_port > 65535 || to_port <= 0 || to_port > 65535 ||
	    lifetime <= 0) {
		fprintf(stderr, "usage: fm-mitm --listen PORT --to PORT [--mode MODE] "
			"[--arm FILE] [--lifetime SECONDS]\n");
		return 2;
	}
	if (fm_auth_init() < 0)
		return 1;
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	signal(SIGPIPE, SIG_IGN);
	lfd = tcp_socket((uint16_t)listen_port, 1);
	if (lfd < 0) {
		fprintf(stderr, "fm-mitm: listen on %ld: %s\n", listen_port, strerror(errno));
		return 1;
	}
	say("listening");
	end = time(NULL) + lifetime;
	while (!stop && time(NULL) < end) {
		int n = 1;

		pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
		for (int i = 0; i < MAX_PAIRS; i++) {
			struct pair *p = &pairs[i];

			if (!p->open) {
				pfd[1 + 2 * i].fd = pfd[2 + 2 * i].fd = -1;
				continue;
			}
			/* Backpressure: a side is read only while the other
			 * side's queue is short. */
			pfd[1 + 2 * i] = (struct pollfd){ .fd = p->cfd,
				.events = (short)((p->to_s.len < OUT_HIGH ? POLLIN : 0) |
						  (p->to_c.len ? POLLOUT : 0)) };
			pfd[2 + 2 * i] = (struct pollfd){ .fd = p->sfd,
				.events = (short)((p->to_c.len < OUT_HIGH ? POLLIN : 0) |
						  (p->to_s.len ? POLLOUT : 0)) };
			n = 3 + 2 * i;
		}
		if (poll(pfd, (nfds_t)n, 500) <= 0)
			continue;
		for (int i = 0; i < MAX_PAIRS; i++)
			if (pairs[i].open)
				pair_event(&pairs[i], &pfd[1 + 2 * i], &pfd[2 + 2 * i]);
		if (pfd[0].revents & POLLIN)
			pair_open(pairs, lfd, (uint16_t)to_port, &next_id);
	}
	for (int i = 0; i < MAX_PAIRS; i++)
		if (pairs[i].open)
			pair_close(&pairs[i], "exit");
	close(lfd);
	free(first_write);
	return 0;
}
