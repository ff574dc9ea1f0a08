/* buf.c — a connection's queue of reply bytes not yet sent.
 *
 * Replies are appended at the tail and sent from the head; the buffer
 * slides down (or grows) only when the tail has no room, so a pipelined
 * burst costs one memmove, not one per reply.  The server bounds how
 * much a connection may queue (backpressure), which bounds the growth;
 * past BUF_DOUBLE_MAX it grows to what is needed, not to twice that, so
 * the bound is not doubled again.  ms_buf_shrink() gives capacity back
 * once a large reply went out: 40 stalled readers once held 295 MB of
 * buffers that had doubled and never shrank.
 */
#include "memserver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define BUF_MIN        (64u * 1024)
#define BUF_DOUBLE_MAX (1u << 20)
#define BUF_ROUND      (64u * 1024)

/* Capacity for need bytes: doubling while small, then need rounded up. */
static size_t grown_cap(size_t cap, size_t need)
{
	if (!cap)
		cap = BUF_MIN;
	while (cap < need && cap < BUF_DOUBLE_MAX)
		cap *= 2;
	if (cap < need)
		cap = (need + BUF_ROUND - 1) / BUF_ROUND * BUF_ROUND;
	return cap;
}

static int move_to(struct ms_buf *b, size_t cap)
{
	uint8_t *p = cap ? malloc(cap) : NULL;

	if (cap && !p)
		return -ENOMEM;
	if (b->len)
		memcpy(p, b->data + b->head, b->len);
	free(b->data);
	b->data = p;
	b->cap = cap;
	b->head = 0;
	return 0;
}

uint8_t *ms_buf_reserve(struct ms_buf *b, size_t n)
{
	size_t need = b->len + n;

	if (b->head + need <= b->cap)
		return b->data + b->head + b->len;
	if (need <= b->cap) {
		memmove(b->data, b->data + b->head, b->len);
		b->head = 0;
		return b->data + b->len;
	}
	if (move_to(b, grown_cap(b->cap, need)) < 0)
		return NULL;
	return b->data + b->len;
}

void ms_buf_commit(struct ms_buf *b, size_t n)
{
	b->len += n;
}

void ms_buf_consume(struct ms_buf *b, size_t n)
{
	b->head += n;
	b->len -= n;
	if (b->len == 0)
		b->head = 0;
}

int ms_buf_shrink(struct ms_buf *b, size_t keep)
{
	if (b->cap <= keep || b->len > keep)
		return 0;
	return move_to(b, keep);
}

void ms_buf_free(struct ms_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}
