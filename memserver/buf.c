/* buf.c — a connection's queue of reply bytes not yet sent.
 *
 * Replies are appended at the tail and sent from the head; the buffer
 * slides down (or grows) only when the tail has no room, so a pipelined
 * burst costs one memmove, not one per reply.  The server bounds how
 * much a connection may queue (backpressure), which bounds the growth.
 */
#include "memserver.h"

#include <stdlib.h>
#include <string.h>

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
	size_t cap = b->cap ? b->cap : 64 * 1024;

	while (cap < need)
		cap *= 2;
	uint8_t *p = malloc(cap);

	if (!p)
		return NULL;
	if (b->len)
		memcpy(p, b->data + b->head, b->len);
	free(b->data);
	b->data = p;
	b->cap = cap;
	b->head = 0;
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

void ms_buf_free(struct ms_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}
