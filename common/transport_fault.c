/* transport_fault.c — in-process fault-injecting memservers for tests. */
#include "transport_fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "clock.h"
#include "log.h"

#define FAULT_MAX_SERVERS 64
#define FAULT_MAX_CONNS   64
#define FAULT_MAX_SEGS    16384  /* seg id = generation << 16 | slot */

struct fault_seg {
	uint64_t id;
	uint32_t size;
	uint8_t *data;
	int owned_uuid_set;
	uint8_t uuid[FM_UUID_LEN];
};

struct fault_conn;

struct fault_server {
	uint16_t port;
	enum fault_mode mode;
	unsigned fail_n;
	int fail_err;
	int nospc;
	unsigned delay_ms;
	uint32_t segment_max;
	uint64_t next_id;
	struct fault_seg *segs;     /* FAULT_MAX_SEGS slots, id 0 = empty */
	struct fault_stats st;
	struct fault_conn *conns[FAULT_MAX_CONNS];
};

struct fault_conn {
	struct fm_conn base;
	struct fault_server *srv;
	struct fm_conn_params p;
	pthread_t worker;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	struct fm_req *head, *tail;
	int up;
	int stop;
	uint64_t down_ns;     /* when it dropped, for the reconnect backoff */
};

/* One lock for every server's state; tests are not about speed. */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fault_server *g_servers[FAULT_MAX_SERVERS];

static struct fault_server *server_get(uint16_t port, int create)
{
	int freeslot = -1;

	for (int i = 0; i < FAULT_MAX_SERVERS; i++) {
		if (g_servers[i] && g_servers[i]->port == port)
			return g_servers[i];
		if (!g_servers[i] && freeslot < 0)
			freeslot = i;
	}
	if (!create || freeslot < 0)
		return NULL;
	struct fault_server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->segs = calloc(FAULT_MAX_SEGS, sizeof(*s->segs));
	if (!s->segs) {
		free(s);
		return NULL;
	}
	s->port = port;
	s->segment_max = 64u << 20;
	s->next_id = 1000 + port * 7ull;
	g_servers[freeslot] = s;
	return s;
}

static struct fault_seg *seg_find(struct fault_server *s, uint64_t id)
{
	uint64_t slot = id & 0xffff;

	if (id == 0 || slot >= FAULT_MAX_SEGS || s->segs[slot].id != id)
		return NULL;
	return &s->segs[slot];
}

/* Runs one request against the server's memory; g_lock held. */
static int serve(struct fault_conn *c, struct fm_req *r)
{
	struct fault_server *s = c->srv;
	struct fault_seg *g;

	if (s->fail_n && r->op >= FM_OP_ALLOC && r->op <= FM_OP_READ) {
		s->fail_n--;
		return s->fail_err;
	}
	switch (r->op) {
	case FM_OP_ALLOC:
		if (s->nospc || r->arg == 0 || r->arg % FM_PAGE || r->arg > s->segment_max)
			return s->nospc ? -ENOSPC : -EINVAL;
		for (int i = 0; i < FAULT_MAX_SEGS; i++) {
			if (s->segs[i].id)
				continue;
			g = &s->segs[i];
			g->data = calloc(1, r->arg);
			if (!g->data)
				return -ENOSPC;
			g->id = (s->next_id++ << 16) | (uint64_t)i;
			g->size = r->arg;
			memcpy(g->uuid, c->p.uuid, FM_UUID_LEN);
			memset(&r->rep.alloc, 0, sizeof(r->rep.alloc));
			r->rep.alloc.seg_id = g->id;
			r->rep.alloc.size = g->size;
			s->st.allocs++;
			s->st.segments++;
			s->st.bytes += g->size;
			return 0;
		}
		return -ENOSPC;
	case FM_OP_FREE:
		g = seg_find(s, r->seg_id);
		if (!g || memcmp(g->uuid, c->p.uuid, FM_UUID_LEN))
			return -ENOENT;
		s->st.frees++;
		s->st.segments--;
		s->st.bytes -= g->size;
		free(g->data);
		memset(g, 0, sizeof(*g));
		return 0;
	case FM_OP_WRITE:
	case FM_OP_READ:
		g = seg_find(s, r->seg_id);
		if (!g || memcmp(g->uuid, c->p.uuid, FM_UUID_LEN))
			return -ENOENT;
		if (r->len > FM_MAX_IO || r->offset > g->size || r->len > g->size - r->offset)
			return -EINVAL;
		if (r->op == FM_OP_READ) {
			memcpy(r->buf, g->data + r->offset, r->len);
			s->st.reads++;
			return 0;
		}
		{
			uint32_t pos = r->offset, sum = 0;

			for (int i = 0; i < r->iovcnt; i++)
				sum += (uint32_t)r->iov[i].iov_len;
			if (sum != r->len)
				return -EINVAL;
			for (int i = 0; i < r->iovcnt; i++) {
				memcpy(g->data + pos, r->iov[i].iov_base, r->iov[i].iov_len);
				pos += (uint32_t)r->iov[i].iov_len;
			}
		}
		s->st.writes++;
		return 0;
	case FM_OP_PING:
		return 0;
	case FM_OP_STAT:
		memset(&r->rep.stat, 0, sizeof(r->rep.stat));
		r->rep.stat.used_bytes = s->st.bytes;
		r->rep.stat.segments = (uint32_t)s->st.segments;
		r->rep.stat.segment_max = s->segment_max;
		return 0;
	case FM_OP_LIST: {
		uint32_t n = 0, idx = 0;

		for (int i = 0; i < FAULT_MAX_SEGS && n < FM_LIST_MAX; i++) {
			g = &s->segs[i];
			if (!g->id || memcmp(g->uuid, c->p.uuid, FM_UUID_LEN))
				continue;
			if (idx++ < r->arg)
				continue;
			r->rep.list.seg_ids[n] = g->id;
			r->rep.list.sizes[n] = g->size;
			n++;
		}
		r->rep.list.count = n;
		return 0;
	}
	default:
		return -EOPNOTSUPP;
	}
}

/* Fails everything queued; c->lock held, drops it around callbacks. */
static void fail_queued(struct fault_conn *c, int err)
{
	while (c->head) {
		struct fm_req *r = c->head;

		c->head = r->t_next;
		if (!c->head)
			c->tail = NULL;
		pthread_mutex_unlock(&c->lock);
		r->done(r, err);
		pthread_mutex_lock(&c->lock);
	}
}

static void set_conn_up(struct fault_conn *c, int up)
{
	int changed;

	pthread_mutex_lock(&c->lock);
	changed = c->up != up;
	c->up = up;
	if (!up)
		c->down_ns = fm_mono_ns();
	if (!up)
		fail_queued(c, -ECONNRESET);
	pthread_mutex_unlock(&c->lock);
	if (changed && c->p.state_cb)
		c->p.state_cb(c->p.state_arg, up);
}

static enum fault_mode server_mode(struct fault_conn *c, unsigned *delay)
{
	enum fault_mode m;

	pthread_mutex_lock(&g_lock);
	m = c->srv->mode;
	if (delay)
		*delay = c->srv->delay_ms;
	pthread_mutex_unlock(&g_lock);
	return m;
}

static void sleep_until_ns(struct fault_conn *c, uint64_t until)
{
	pthread_mutex_lock(&c->lock);
	for (uint64_t now = fm_mono_ns(); !c->stop && now < until; now = fm_mono_ns()) {
		/* Wake at least every 10 ms to look at stop. */
		uint64_t step = until - now > 10000000ull ? 10000000ull : until - now;
		struct timespec ts = fm_mono_abstime(now + step);

		pthread_cond_timedwait(&c->cv, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
}

static void *worker(void *arg)
{
	struct fault_conn *c = arg;

	pthread_mutex_lock(&c->lock);
	for (;;) {
		while (!c->stop && !c->head)
			pthread_cond_wait(&c->cv, &c->lock);
		if (c->stop) {
			fail_queued(c, -ECANCELED);
			break;
		}
		struct fm_req *r = c->head;
		pthread_mutex_unlock(&c->lock);

		unsigned delay;
		enum fault_mode m = server_mode(c, &delay);
		uint64_t deadline = r->t_deadline_ns;
		int status;

		/* Whether a slow reply times out depends only on the delay
		 * and the timeout, not on how busy the test machine is. */
		if (m == FAULT_HANG || (delay && delay >= c->p.timeout_ms)) {
			/* No reply in time: the request times out and, as the
			 * transport contract says, the connection drops. */
			sleep_until_ns(c, deadline);
			pthread_mutex_lock(&c->lock);
			if (c->head == r) {
				c->head = r->t_next;
				if (!c->head)
					c->tail = NULL;
				pthread_mutex_unlock(&c->lock);
				r->done(r, c->stop ? -ECANCELED : -ETIMEDOUT);
				if (!c->stop)
					set_conn_up(c, 0);
			} else {
				pthread_mutex_unlock(&c->lock);
			}
			pthread_mutex_lock(&c->lock);
			continue;
		}
		if (delay)
			sleep_until_ns(c, fm_mono_ns() + delay * 1000000ull);
		pthread_mutex_lock(&c->lock);
		if (c->head != r) /* failed meanwhile by a drop */
			continue;
		c->head = r->t_next;
		if (!c->head)
			c->tail = NULL;
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_lock(&g_lock);
		status = serve(c, r);
		pthread_mutex_unlock(&g_lock);
		r->done(r, status);
		pthread_mutex_lock(&c->lock);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

static int fault_open(const struct fm_conn_params *p, struct fm_conn **out)
{
	struct fault_conn *c;
	struct fault_server *s;
	int slot = -1;

	pthread_mutex_lock(&g_lock);
	s = server_get(p->addr.port, 1);
	if (s && s->mode != FAULT_UP) {
		pthread_mutex_unlock(&g_lock);
		return s->mode == FAULT_DOWN ? -ECONNREFUSED : -ETIMEDOUT;
	}
	for (int i = 0; s && i < FAULT_MAX_CONNS; i++)
		if (!s->conns[i]) {
			slot = i;
			break;
		}
	if (!s || slot < 0) {
		pthread_mutex_unlock(&g_lock);
		return -ENOMEM;
	}
	c = calloc(1, sizeof(*c));
	if (!c || fm_cond_init_mono(&c->cv)) {
		pthread_mutex_unlock(&g_lock);
		free(c);
		return -ENOMEM;
	}
	c->base.ops = &fm_transport_fault;
	c->srv = s;
	c->p = *p;
	c->p.secret = NULL;
	if (!c->p.timeout_ms)
		c->p.timeout_ms = 5000;
	c->up = 1;
	pthread_mutex_init(&c->lock, NULL);
	s->conns[slot] = c;
	pthread_mutex_unlock(&g_lock);
	if (pthread_create(&c->worker, NULL, worker, c)) {
		pthread_mutex_lock(&g_lock);
		s->conns[slot] = NULL;
		pthread_mutex_unlock(&g_lock);
		free(c);
		return -ENOMEM;
	}
	*out = &c->base;
	return 0;
}

static int fault_submit(struct fm_conn *base, struct fm_req *r)
{
	struct fault_conn *c = (struct fault_conn *)base;

	pthread_mutex_lock(&c->lock);
	if (!c->up || c->stop) {
		pthread_mutex_unlock(&c->lock);
		return -ENOTCONN;
	}
	r->t_next = NULL;
	r->t_deadline_ns = fm_mono_after_ms(c->p.timeout_ms);
	if (c->tail)
		c->tail->t_next = r;
	else
		c->head = r;
	c->tail = r;
	pthread_cond_signal(&c->cv);
	pthread_mutex_unlock(&c->lock);
	return 0;
}

#define RECONNECT_NS 100000000ull

/* Like the tcp transport's background reconnect: a connection with
 * reconnect set comes back (state_cb(1)) once its server is UP again,
 * noticed here lazily, at least 100 ms after the drop. */
static int fault_is_up(struct fm_conn *base)
{
	struct fault_conn *c = (struct fault_conn *)base;
	int up, retry;

	pthread_mutex_lock(&c->lock);
	up = c->up;
	retry = !up && !c->stop && c->p.reconnect && fm_mono_ns() >= c->down_ns + RECONNECT_NS;
	pthread_mutex_unlock(&c->lock);
	if (retry && server_mode(c, NULL) == FAULT_UP) {
		set_conn_up(c, 1);
		up = 1;
	}
	return up;
}

static void fault_close(struct fm_conn *base)
{
	struct fault_conn *c = (struct fault_conn *)base;

	pthread_mutex_lock(&g_lock);
	for (int i = 0; i < FAULT_MAX_CONNS; i++)
		if (c->srv->conns[i] == c)
			c->srv->conns[i] = NULL;
	pthread_mutex_unlock(&g_lock);
	pthread_mutex_lock(&c->lock);
	c->stop = 1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->worker, NULL);
	pthread_mutex_destroy(&c->lock);
	pthread_cond_destroy(&c->cv);
	free(c);
}

const struct fm_transport_ops fm_transport_fault = {
	.name = "fault",
	.open = fault_open,
	.submit = fault_submit,
	.is_up = fault_is_up,
	.close = fault_close,
};

void fault_reset(void)
{
	pthread_mutex_lock(&g_lock);
	for (int i = 0; i < FAULT_MAX_SERVERS; i++) {
		struct fault_server *s = g_servers[i];

		if (!s)
			continue;
		for (int j = 0; j < FAULT_MAX_SEGS; j++)
			free(s->segs[j].data);
		free(s->segs);
		free(s);
		g_servers[i] = NULL;
	}
	pthread_mutex_unlock(&g_lock);
}

void fault_reset_server(uint16_t port)
{
	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 0);
	for (int j = 0; s && j < FAULT_MAX_SEGS; j++) {
		free(s->segs[j].data);
		memset(&s->segs[j], 0, sizeof(s->segs[j]));
	}
	if (s) {
		s->st.segments = 0;
		s->st.bytes = 0;
	}
	pthread_mutex_unlock(&g_lock);
}

void fault_set_mode(uint16_t port, enum fault_mode mode)
{
	struct fault_conn *conns[FAULT_MAX_CONNS];
	int n = 0;

	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 1);
	if (s) {
		s->mode = mode;
		for (int i = 0; i < FAULT_MAX_CONNS; i++)
			if (s->conns[i])
				conns[n++] = s->conns[i];
	}
	pthread_mutex_unlock(&g_lock);
	/* HANG leaves connections up until a request times out; DOWN drops
	 * them now; UP stands for a successful reconnect. */
	for (int i = 0; i < n; i++) {
		if (mode == FAULT_DOWN)
			set_conn_up(conns[i], 0);
		else if (mode == FAULT_UP)
			set_conn_up(conns[i], 1);
		pthread_mutex_lock(&conns[i]->lock);
		pthread_cond_broadcast(&conns[i]->cv);
		pthread_mutex_unlock(&conns[i]->lock);
	}
}

void fault_fail_next(uint16_t port, unsigned n, int err)
{
	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 1);
	if (s) {
		s->fail_n = n;
		s->fail_err = err;
	}
	pthread_mutex_unlock(&g_lock);
}

void fault_set_nospc(uint16_t port, int on)
{
	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 1);
	if (s)
		s->nospc = on;
	pthread_mutex_unlock(&g_lock);
}

void fault_set_segment_max(uint16_t port, uint32_t bytes)
{
	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 1);
	if (s)
		s->segment_max = bytes;
	pthread_mutex_unlock(&g_lock);
}

void fault_set_delay(uint16_t port, unsigned ms)
{
	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 1);
	if (s)
		s->delay_ms = ms;
	pthread_mutex_unlock(&g_lock);
}

/* Change one stored byte: set it to value, or flip its bits when value
 * is negative. */
static int stored_byte_change(uint16_t port, uint64_t seg_id, uint32_t off, int value)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 0);
	struct fault_seg *g = s ? seg_find(s, seg_id) : NULL;
	if (g && off < g->size) {
		g->data[off] = value < 0 ? (uint8_t)(g->data[off] ^ 0xff) : (uint8_t)value;
		rc = 0;
	}
	pthread_mutex_unlock(&g_lock);
	return rc;
}

int fault_corrupt(uint16_t port, uint64_t seg_id, uint32_t off)
{
	return stored_byte_change(port, seg_id, off, -1);
}

int fault_poke(uint16_t port, uint64_t seg_id, uint32_t off, uint8_t value)
{
	return stored_byte_change(port, seg_id, off, value);
}

void fault_get_stats(uint16_t port, struct fault_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&g_lock);
	struct fault_server *s = server_get(port, 0);
	if (s)
		*st = s->st;
	pthread_mutex_unlock(&g_lock);
}
