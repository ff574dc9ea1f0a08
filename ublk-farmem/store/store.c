/* store.c — open, close, release and statistics of a page store.
 *
 * The I/O path is in store_io.c, segment handling in segment.c, the
 * mapped metadata in state_file.c, background work in maint.c,
 * cleaner.c and repair.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "internal.h"

/* The store's compression names are the codec's. */
_Static_assert((int)STORE_COMPRESS_NONE == (int)FM_CODEC_NONE &&
	       (int)STORE_COMPRESS_ZSTD == (int)FM_CODEC_ZSTD &&
	       (int)STORE_COMPRESS_LZ4 == (int)FM_CODEC_LZ4, "compress enums differ");

#define DEFAULT_SEGMENT (4u << 20)
#define DEFAULT_MAX_IO  (1u << 20)
#define DEFAULT_TIMEOUT 5000u
#define RETRY_MIN_MS    20000u

static int config_check(const struct store_config *c, char *err, size_t errlen)
{
	uint32_t seg = c->segment_size ? c->segment_size : DEFAULT_SEGMENT;
	uint32_t max_io = c->max_io ? c->max_io : DEFAULT_MAX_IO;
	int r = c->replicas;

	if (c->nservers < 1 || c->nservers > STORE_MAX_SERVERS)
		snprintf(err, errlen, "need 1 to %d servers, got %d", STORE_MAX_SERVERS, c->nservers);
	else if (!c->size || c->size % STORE_PAGE)
		snprintf(err, errlen, "device size must be a non-zero multiple of %u", STORE_PAGE);
	else if (r < 0 || r > STORE_MAX_REPLICAS || r > c->nservers)
		snprintf(err, errlen, "replicas %d: need 1 to %d and at most the %d servers",
			 r, STORE_MAX_REPLICAS, c->nservers);
	else if (seg % STORE_PAGE || seg < 4 * REC_MAX_LEN || seg > (256u << 20))
		snprintf(err, errlen, "segment size %u: need a multiple of %u between %u and 256 MiB",
			 seg, STORE_PAGE, 4 * REC_MAX_LEN);
	else if (c->streams < 0 || c->streams > STORE_MAX_QUEUES)
		snprintf(err, errlen, "streams %d: need 0 (automatic) to %d", c->streams,
			 STORE_MAX_QUEUES);
	else if (c->queues < 1 || c->queues > STORE_MAX_QUEUES)
		snprintf(err, errlen, "queues %d: need 1 to %d", c->queues, STORE_MAX_QUEUES);
	else if (max_io % STORE_PAGE || max_io > 4 * FM_MAX_IO)
		snprintf(err, errlen, "max_io %u: need a multiple of %u up to %u", max_io,
			 STORE_PAGE, 4 * FM_MAX_IO);
	else
		return fm_codec_check_level((enum fm_codec_algo)c->compress, c->level, err, errlen);
	return -EINVAL;
}

static void store_free(struct store *s)
{
	/* Stops the thread that may add servers before they are closed. */
	membership_close(s->mem);
	s->mem = NULL;
	for (int i = 0; i < s->nservers; i++)
		if (s->srv[i].conn)
			fm_conn_close(s->srv[i].conn);
	for (int i = 0; s->q && i < s->nqueues; i++)
		if (s->q[i].buf || s->q[i].reqs)
			ioctx_fini(&s->q[i]);
	free(s->q);
	free(s->codec_free);
	if (s->maint_io.buf || s->maint_io.reqs)
		ioctx_fini(&s->maint_io);
	for (int i = 0; s->streams && i < s->nstreams; i++)
		stream_fini(&s->streams[i]);
	free(s->streams);
	stream_fini(&s->maint_stream);
	free(s->maint_seg_buf);
	free(s->sweep_ids);
	free(s->sweep_sizes);
	free(s->sweep_ref);
	key_fini(s);
	state_close(s);
	free((char *)s->cfg.state_path);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->seg_cv);
	pthread_mutex_destroy(&s->retry_lock);
	pthread_cond_destroy(&s->retry_cv);
	pthread_mutex_destroy(&s->maint_run);
	pthread_mutex_destroy(&s->maint_lock);
	pthread_cond_destroy(&s->maint_cv);
	pthread_mutex_destroy(&s->codec_lock);
	free(s);
}

static int store_setup(struct store *s, const struct store_config *cfg,
		       char *err, size_t errlen)
{
	int rc, aead;

	s->cfg = *cfg;
	s->cfg.state_path = NULL;
	if (cfg->state_path && !(s->cfg.state_path = strdup(cfg->state_path)))
		return -ENOMEM;
	if (!s->cfg.state_path)
		s->cfg.attach = 0;
	s->replicas = cfg->replicas ? cfg->replicas : (cfg->nservers >= 2 ? 2 : 1);
	s->seg_size = cfg->segment_size ? cfg->segment_size : DEFAULT_SEGMENT;
	s->max_io = cfg->max_io ? cfg->max_io : DEFAULT_MAX_IO;
	s->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT;
	/* I/O that failed on every replica with transport errors retries
	 * whole rounds this long: a few request timeouts, and never less
	 * than the transport needs to reconnect at its longest backoff
	 * (5 s) a few times over.  A swap device's EIO kills a process. */
	s->retry_ms = 4 * s->timeout_ms > RETRY_MIN_MS ? 4 * s->timeout_ms : RETRY_MIN_MS;
	s->npages = cfg->size / STORE_PAGE;
	s->nqueues = cfg->queues;
	s->nservers = cfg->nservers;
	for (int i = 0; i < s->nservers; i++) {
		s->srv[i].fa = cfg->servers[i];
		s->srv[i].s = s;
		s->srv[i].idx = i;
		s->srv[i].need_sweep = 1;
		addr_str(&cfg->servers[i], s->srv[i].addr, sizeof(s->srv[i].addr));
	}
	rc = key_choose(cfg, &aead, err, errlen);
	if (rc < 0)
		return rc;
	rc = state_open(s, err, errlen);
	if (rc < 0)
		return rc;
	if (!s->cfg.attach)
		key_generate(s->hdr, aead);
	rc = key_setup(s, err, errlen);
	if (rc < 0)
		return rc;
	s->nstreams = cfg->streams ? cfg->streams :
		      (cfg->queues < cfg->nservers ? cfg->queues : cfg->nservers);
	s->q = calloc((size_t)s->nqueues, sizeof(*s->q));
	s->streams = calloc((size_t)s->nstreams, sizeof(*s->streams));
	s->maint_seg_buf = malloc(s->seg_size);
	s->sweep_cap = s->hdr->nsegs + FM_LIST_MAX;
	s->sweep_ids = calloc(s->sweep_cap, sizeof(uint64_t));
	s->sweep_sizes = calloc(FM_LIST_MAX, sizeof(uint32_t));
	s->sweep_ref = calloc(s->hdr->nsegs, sizeof(uint64_t));
	if (!s->q || !s->streams || !s->maint_seg_buf || !s->sweep_ids ||
	    !s->sweep_sizes || !s->sweep_ref)
		return -ENOMEM;
	for (int i = 0; i < s->nstreams; i++)
		stream_init(&s->streams[i]);
	for (int i = 0; i < s->nqueues; i++) {
		rc = ioctx_init(s, &s->q[i], i);
		if (rc < 0) {
			snprintf(err, errlen, "queue %d: cannot set up buffers or codec: %s",
				 i, strerror(-rc));
			return rc;
		}
		s->q[i].st = &s->streams[i % s->nstreams];
	}
	rc = codec_pool_init(s);
	if (rc < 0)
		return rc;
	rc = ioctx_init(s, &s->maint_io, -1);
	if (rc < 0)
		snprintf(err, errlen, "maintenance buffers: %s", strerror(-rc));
	/* The cleaner appends to a stream of its own, so moved (cold)
	 * records do not mix with fresh (hot) ones. */
	s->maint_io.st = &s->maint_stream;
	return rc;
}

/* A segment larger than a server hands out would fail every ALLOC;
 * say so now, naming the server and both sizes. */
static int check_segment_max(struct store *s, char *err, size_t errlen)
{
	for (int i = 0; i < s->nservers; i++) {
		struct fm_req r;

		if (!srv_conn(&s->srv[i]))
			continue;
		memset(&r, 0, sizeof(r));
		r.op = FM_OP_STAT;
		if (fm_conn_call(srv_conn(&s->srv[i]), &r) < 0)
			continue;   /* it will be marked down on use */
		if (r.rep.stat.segment_max && r.rep.stat.segment_max < s->seg_size) {
			snprintf(err, errlen, "server %s hands out segments of at most %u bytes; "
				 "the segment size is %u", s->srv[i].addr,
				 r.rep.stat.segment_max, s->seg_size);
			return -EINVAL;
		}
	}
	return 0;
}

/* Opens the store on cfg's servers.  mem (may be NULL): the membership
 * that found them, owned from here on (closed on failure). */
static int store_open_cfg(const struct store_config *cfg, struct membership *mem,
			  struct store **out, char *err, size_t errlen)
{
	struct store *s = NULL;
	int rc, up = 0;

	rc = config_check(cfg, err, errlen);
	if (rc == 0 && !(s = calloc(1, sizeof(*s))))
		rc = -ENOMEM;
	if (rc < 0) {
		membership_close(mem);
		return rc;
	}
	s->mem = mem;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->retry_lock, NULL);
	/* Every timed wait of the store runs on the monotonic clock. */
	if (fm_cond_init_mono(&s->seg_cv) || fm_cond_init_mono(&s->retry_cv) ||
	    fm_cond_init_mono(&s->maint_cv)) {
		snprintf(err, errlen, "cannot set up condition variables");
		membership_close(mem);
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->maint_run, NULL);
	pthread_mutex_init(&s->maint_lock, NULL);
	pthread_mutex_init(&s->codec_lock, NULL);
	s->state_fd = -1;
	stream_init(&s->maint_stream);
	rc = store_setup(s, cfg, err, errlen);
	if (rc < 0) {
		if (!err[0])
			snprintf(err, errlen, "store setup: %s", strerror(-rc));
		store_free(s);
		return rc;
	}
	for (int i = 0; i < s->nservers; i++)
		if (!s->hints.gone[i])   /* a member gone since (recover) */
			up += server_connect(s, i) == 0;
	if (up < s->replicas) {
		snprintf(err, errlen, "only %d of %d servers answered; %d replicas need %d",
			 up, s->nservers, s->replicas, s->replicas);
		store_free(s);
		return -EHOSTUNREACH;
	}
	rc = check_segment_max(s, err, errlen);
	if (rc < 0) {
		store_free(s);
		return rc;
	}
	if (!cfg->no_background) {
		rc = maint_start(s);
		if (rc < 0) {
			snprintf(err, errlen, "cannot start the maintenance thread: %s",
				 strerror(-rc));
			store_free(s);
			return rc;
		}
	}
	if (mem && (rc = membership_start(mem, s)) < 0) {
		snprintf(err, errlen, "cannot start following etcd: %s", strerror(-rc));
		store_close(s);
		return rc;
	}
	log_info("store: %llu bytes, %d servers (%d up), %d replicas, %s, records %s, "
		 "%u-byte segments%s",
		 (unsigned long long)s->cfg.size, s->nservers, up, s->replicas,
		 fm_codec_name((enum fm_codec_algo)s->cfg.compress),
		 rec_aead_name(s->rkey.aead), s->seg_size,
		 s->cfg.attach ? ", attached to existing state" : "");
	*out = s;
	return 0;
}

int store_open(const struct store_config *cfg, struct store **out,
	       char *err, size_t errlen)
{
	struct store_config *found;
	struct membership *mem;
	int rc;

	*out = NULL;
	if (cfg->etcd.n == 0)
		return store_open_cfg(cfg, NULL, out, err, errlen);
	/* etcd: the servers are the cluster's members now. */
	found = malloc(sizeof(*found));
	if (!found)
		return -ENOMEM;
	rc = membership_open(cfg, found, &mem, err, errlen);
	if (rc == 0)
		rc = store_open_cfg(found, mem, out, err, errlen);
	free(found);
	return rc;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	/* No server is added while the rest stops. */
	membership_close(s->mem);
	s->mem = NULL;
	/* I/O still waiting to retry gives up now. */
	pthread_mutex_lock(&s->retry_lock);
	__atomic_store_n(&s->closing, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&s->retry_cv);
	pthread_mutex_unlock(&s->retry_lock);
	maint_stop(s);
	/* A restarted daemon appends to new segments; the old open ones
	 * are complete as they are. */
	for (int i = 0; i < s->nstreams; i++)
		stream_retire_if(s, &s->streams[i], NULL, 1);
	stream_retire_if(s, &s->maint_stream, NULL, 1);
	store_free(s);
}

int store_release(struct store *s)
{
	int running = s->maint_running;

	maint_stop(s);
	for (int i = 0; i < s->nstreams; i++)
		stream_retire_if(s, &s->streams[i], NULL, 1);
	stream_retire_if(s, &s->maint_stream, NULL, 1);
	pthread_mutex_lock(&s->lock);
	for (uint64_t p = 0; p < s->npages; p++) {
		map_release(s, &s->map[p]);
		s->map[p] = pm_make(PM_UNMAPPED, 0, 0, 0, pm_version(&s->map[p]));
	}
	pthread_mutex_unlock(&s->lock);
	for (uint32_t i = 0; i < s->hdr->nsegs; i++)
		if (s->segs[i].state != SEG_FREE)
			seg_free_remote(s, &s->maint_io, i);
	if (running)
		return maint_start(s);
	return 0;
}
