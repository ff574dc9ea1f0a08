/* nbd.c — the NBD server's listener and connection threads. */
#include "nbd_int.h"
#include "nbd_proto.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

/* Every line logged while a client has not finished its handshake goes
 * through one limiter: a flood of clients that never get that far must
 * not be able to fill the log (or the disk under it). */
static struct log_limit handshake_log = LOG_LIMIT_INIT(20, 10000);

/* The handshake of c is over (GO, or closed): its place goes back. */
static void admit_end(struct nbd_server *srv, struct nbd_conn *c)
{
	if (!c || !c->admitted)
		return;
	pthread_mutex_lock(&srv->lock);
	fm_admit_put(&srv->admit, (struct sockaddr *)&c->peer);
	c->admitted = 0;
	pthread_mutex_unlock(&srv->lock);
}

/* Serve one connection (c: its entry, NULL for a handed-over socket):
 * handshake (the whole of it within the deadline, however the client
 * trickles), requests, goodbye. */
static void serve_conn(struct nbd_server *srv, struct nbd_conn *c, int fd, unsigned id)
{
	struct nbd_io io = { .fd = fd, .id = id };
	struct nbd_slot *slot = NULL;
	struct log_limit *outer = log_limit_scope(&handshake_log);
	int rc;

	if (srv->p.handshake_timeout_ms)
		io.deadline_ns = fm_mono_after_ms(srv->p.handshake_timeout_ms);
	rc = set_nonblock(fd);
	if (rc == 0)
		rc = nbd_handshake(srv, &io, &slot);
	if (rc < 0) {
		if (rc == -ETIMEDOUT)
			log_info("nbd conn %u: handshake not done within %ums, closing",
				 id, srv->p.handshake_timeout_ms);
		else if (rc != -ECONNABORTED && rc != -EPIPE)
			log_info("nbd conn %u: handshake ended: %s", id, strerror(-rc));
		log_limit_scope(outer);
		admit_end(srv, c);
		nbd_tls_end(&io);
		return;
	}
	log_limit_scope(outer);
	admit_end(srv, c);
	io.deadline_ns = 0;
	io.idle_ns = (uint64_t)srv->p.idle_timeout_ms * 1000000u;
	io.last_active_ns = fm_mono_ns();
	log_info("nbd conn %u: serving (slot %d%s)", id, slot->index,
		 io.tls ? ", TLS" : "");
	nbd_transmit(slot, &io);
	nbd_slot_release(slot);
	nbd_tls_end(&io);
}

static void *conn_main(void *arg)
{
	struct nbd_conn *c = arg;
	struct nbd_server *srv = c->srv;

	serve_conn(srv, c, c->fd, c->id);
	pthread_mutex_lock(&srv->lock);
	close(c->fd);
	c->fd = -1;
	c->done = 1;
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

/* Join finished connection threads so their entries can be reused. */
static void reap_conns(struct nbd_server *srv)
{
	for (int i = 0; i < srv->nconns; i++) {
		struct nbd_conn *c = &srv->conns[i];
		int done;

		pthread_mutex_lock(&srv->lock);
		done = c->done;
		pthread_mutex_unlock(&srv->lock);
		if (done) {
			pthread_join(c->thread, NULL);
			c->done = 0;
			c->thread = 0;
		}
	}
}

static struct nbd_conn *free_conn(struct nbd_server *srv)
{
	for (int i = 0; i < srv->nconns; i++)
		if (srv->conns[i].fd < 0 && !srv->conns[i].thread)
			return &srv->conns[i];
	return NULL;
}

/* May a handshake from peer start?  A tcp peer's host may have at most
 * half the entries in handshake (unix peers have no host to count).
 * 0 (c->admitted says whether a place was taken) or -EBUSY. */
static int admit_begin(struct nbd_server *srv, struct nbd_conn *c,
		       const struct sockaddr_storage *peer, socklen_t len, unsigned id)
{
	int rc;

	c->admitted = 0;
	if (srv->p.listen.kind != ADDR_TCP || len == 0)
		return 0;
	memcpy(&c->peer, peer, sizeof(*peer));
	pthread_mutex_lock(&srv->lock);
	rc = fm_admit_take(&srv->admit, (struct sockaddr *)&c->peer);
	pthread_mutex_unlock(&srv->lock);
	if (rc == 0) {
		c->admitted = 1;
		return 0;
	}
	if (rc == -EAFNOSUPPORT)
		return 0;
	log_warn_rl("nbd conn %u: refused: %s", id, rc == -EBUSY ?
		    "too many handshakes in progress from this host" :
		    "too many handshakes in progress");
	return -EBUSY;
}

static void start_conn(struct nbd_server *srv, int fd,
		       const struct sockaddr_storage *peer, socklen_t len)
{
	struct nbd_conn *c;
	unsigned id = __atomic_fetch_add(&srv->next_id, 1, __ATOMIC_RELAXED);
	int one = 1, rc;

	if (srv->p.listen.kind == ADDR_TCP)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	reap_conns(srv);
	c = free_conn(srv);
	if (!c) {
		/* Past twice the slot count even the handshake is refused. */
		log_warn_rl("nbd conn %u: refused: too many connections (at most %d)",
			    id, srv->p.max_conns);
		close(fd);
		return;
	}
	if (admit_begin(srv, c, peer, len, id) < 0) {
		close(fd);
		return;
	}
	c->srv = srv;
	c->id = id;
	c->done = 0;
	pthread_mutex_lock(&srv->lock);
	c->fd = fd;
	pthread_mutex_unlock(&srv->lock);
	rc = pthread_create(&c->thread, &srv->thread_attr, conn_main, c);
	if (rc) {
		log_err("nbd conn %u: cannot start thread: %s", id, strerror(rc));
		admit_end(srv, c);
		c->fd = -1;
		c->thread = 0;
		close(fd);
	}
}

int nbd_server_run(struct nbd_server *srv)
{
	struct pollfd pf[2] = {
		{ .fd = srv->listen_fd, .events = POLLIN },
		{ .fd = srv->stop_fd[0], .events = POLLIN },
	};

	while (!srv->stopping) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int fd;

		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_err("nbd: poll: %s", strerror(errno));
			return -errno;
		}
		if (pf[1].revents)
			break;
		if (!(pf[0].revents & POLLIN))
			continue;
		fd = accept4(srv->listen_fd, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
				log_warn("nbd: accept: %s", strerror(errno));
			continue;
		}
		start_conn(srv, fd, &peer, plen);
	}
	srv->stopping = 1;
	/* Stop every reader; workers finish, replies go out, then close. */
	pthread_mutex_lock(&srv->lock);
	for (int i = 0; i < srv->nconns; i++)
		if (srv->conns[i].fd >= 0)
			shutdown(srv->conns[i].fd, SHUT_RD);
	pthread_mutex_unlock(&srv->lock);
	for (int i = 0; i < srv->nconns; i++)
		if (srv->conns[i].thread) {
			pthread_join(srv->conns[i].thread, NULL);
			srv->conns[i].thread = 0;
		}
	return 0;
}

void nbd_server_stop(struct nbd_server *srv)
{
	char b = 1;
	ssize_t n;

	srv->stopping = 1;
	n = write(srv->stop_fd[1], &b, 1);
	(void)n;
}

int nbd_server_serve_fd(struct nbd_server *srv, int fd)
{
	serve_conn(srv, NULL, fd, __atomic_fetch_add(&srv->next_id, 1, __ATOMIC_RELAXED));
	return 0;
}

uint16_t nbd_server_port(const struct nbd_server *srv)
{
	return srv->port;
}

static int check_params(const struct nbd_server_params *p, const struct nbd_backend *be)
{
	if (p->max_conns < 1 || p->workers < 1 || p->max_block < 4096 ||
	    p->max_block % 4096 || be->size % 4096 || be->max_io < 4096 ||
	    be->max_io % 4096 || !be->read || !be->write || !be->discard || !be->flush) {
		log_err("nbd: bad server parameters (conns %d workers %d max_block %u "
			"size %llu max_io %u)", p->max_conns, p->workers, p->max_block,
			(unsigned long long)be->size, be->max_io);
		return -EINVAL;
	}
	return 0;
}

static int open_listener(struct nbd_server *srv)
{
	const struct fm_addr *a = &srv->p.listen;

	srv->listen_fd = -1;
	if (a->kind == ADDR_UNIX)
		srv->listen_fd = nbd_listen_unix(a->path);
	else if (a->kind == ADDR_TCP)
		srv->listen_fd = nbd_listen_tcp(a, &srv->port);
	else if (a->kind == 0)
		return 0;
	else
		return -EINVAL;
	return srv->listen_fd < 0 ? srv->listen_fd : 0;
}

int nbd_server_create(const struct nbd_server_params *p,
		      const struct nbd_backend *be, struct nbd_server **out)
{
	struct nbd_server *srv;
	int rc;

	if ((rc = check_params(p, be)) < 0)
		return rc;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->p = *p;
	srv->be = *be;
	srv->listen_fd = -1;
	srv->tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
		      NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
		      NBD_FLAG_CAN_MULTI_CONN; /* acked writes are durable everywhere */
	pthread_mutex_init(&srv->lock, NULL);
	/* Small stacks: a daemon that mlockall()s would otherwise pin 8 MiB
	 * for each of its many threads. */
	pthread_attr_init(&srv->thread_attr);
	pthread_attr_setstacksize(&srv->thread_attr, NBD_THREAD_STACK);
	/* Writer preference: an edge RMW must not starve behind a stream of
	 * aligned writes. */
	fm_rwlock_init(&srv->rmw_lock);
	srv->nconns = 2 * p->max_conns;
	srv->conns = calloc((size_t)srv->nconns, sizeof(*srv->conns));
	if (pipe2(srv->stop_fd, O_CLOEXEC | O_NONBLOCK) < 0) {
		rc = -errno;
		srv->stop_fd[0] = srv->stop_fd[1] = -1;
		goto fail;
	}
	if (!srv->conns) {
		rc = -ENOMEM;
		goto fail;
	}
	for (int i = 0; i < srv->nconns; i++)
		srv->conns[i].fd = -1;
	rc = fm_admit_init(&srv->admit, (unsigned)srv->nconns,
			   p->max_conns > 1 ? (unsigned)p->max_conns : 1u);
	if (rc < 0)
		goto fail;
	if ((rc = nbd_tls_server_init(srv)) < 0)
		goto fail;
	if ((rc = open_listener(srv)) < 0)
		goto fail;
	if ((rc = nbd_slots_create(srv)) < 0)
		goto fail;
	*out = srv;
	return 0;
fail:
	nbd_server_destroy(srv);
	return rc;
}

void nbd_server_destroy(struct nbd_server *srv)
{
	if (!srv)
		return;
	nbd_slots_destroy(srv);
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		if (srv->p.listen.kind == ADDR_UNIX)
			unlink(srv->p.listen.path);
	}
	if (srv->stop_fd[0] >= 0) {
		close(srv->stop_fd[0]);
		close(srv->stop_fd[1]);
	}
	free(srv->conns);
	fm_admit_fini(&srv->admit);
	nbd_tls_server_fini(srv);
	fm_rwlock_destroy(&srv->rmw_lock);
	pthread_mutex_destroy(&srv->lock);
	pthread_attr_destroy(&srv->thread_attr);
	free(srv);
}
