/* ioctx.c — per-thread I/O contexts (every buffer, request slot and
 * codec a queue needs, allocated at open), the pool that lends the
 * warmest codec out, and request range checks.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "internal.h"

int ioctx_init(struct store *s, struct ioctx *io, int id)
{
	int rc;

	memset(io, 0, sizeof(*io));
	io->id = id;
	io->npages = s->max_io / STORE_PAGE;
	io->buf_len = (size_t)io->npages * REC_MAX_LEN;
	/* One spare record at the end: the landing area for one-page
	 * retries, which must not clobber records still to be decoded. */
	io->buf = malloc(io->buf_len + REC_MAX_LEN);
	io->clear = malloc(REC_MAX_PLEN);
	io->pio = calloc(io->npages, sizeof(*io->pio));
	io->chunks = calloc(io->npages, sizeof(*io->chunks));
	io->held = calloc(io->npages, sizeof(*io->held));
	io->nreqs = io->npages * (unsigned)s->replicas + STORE_MAX_REPLICAS;
	io->reqs = calloc(io->nreqs, sizeof(*io->reqs));
	pthread_mutex_init(&io->lock, NULL);
	waiter_init(&io->w);
	waiter_init(&io->cw);
	if (!io->buf || !io->clear || !io->pio || !io->chunks || !io->held || !io->reqs) {
		ioctx_fini(io);
		return -ENOMEM;
	}
	rc = fm_codec_init(&io->codec, (enum fm_codec_algo)s->cfg.compress, s->cfg.level);
	if (rc < 0) {
		ioctx_fini(io);
		return rc;
	}
	return 0;
}

void ioctx_fini(struct ioctx *io)
{
	fm_codec_fini(&io->codec);
	free(io->buf);
	if (io->clear)
		sodium_memzero(io->clear, REC_MAX_PLEN);   /* a page in the clear */
	free(io->clear);
	free(io->pio);
	free(io->chunks);
	free(io->held);
	free(io->reqs);
	pthread_mutex_destroy(&io->lock);
	waiter_destroy(&io->w);
	waiter_destroy(&io->cw);
	memset(io, 0, sizeof(*io));
}

int codec_pool_init(struct store *s)
{
	s->codec_free = calloc((size_t)s->nqueues, sizeof(*s->codec_free));
	if (!s->codec_free)
		return -ENOMEM;
	for (int i = 0; i < s->nqueues; i++)
		s->codec_free[s->codec_nfree++] = &s->q[i].codec;
	return 0;
}

struct fm_codec *codec_get(struct store *s, struct ioctx *io)
{
	struct fm_codec *c;

	/* Maintenance is not a queue: it keeps its own. */
	if (io->id < 0)
		return &io->codec;
	pthread_mutex_lock(&s->codec_lock);
	c = s->codec_free[--s->codec_nfree];
	pthread_mutex_unlock(&s->codec_lock);
	return c;
}

void codec_put(struct store *s, struct ioctx *io, struct fm_codec *c)
{
	if (io->id < 0)
		return;
	pthread_mutex_lock(&s->codec_lock);
	s->codec_free[s->codec_nfree++] = c;
	pthread_mutex_unlock(&s->codec_lock);
}

int io_check_range(struct store *s, int queue, uint64_t off, uint64_t len,
		       uint64_t maxlen)
{
	if (queue < 0 || queue >= s->nqueues)
		return -EINVAL;
	if (off % STORE_PAGE || len % STORE_PAGE || len > maxlen ||
	    off > s->cfg.size || len > s->cfg.size - off)
		return -EINVAL;
	return 0;
}
