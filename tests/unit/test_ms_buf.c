/* test_ms_buf.c — the memserver's reply queue: growth stays near what
 * is queued, and capacity goes back once a large reply went out. */
#include <stdint.h>
#include <string.h>

#include "memserver/memserver.h"
#include "tap.h"

static int push(struct ms_buf *b, size_t n, uint8_t fill)
{
	uint8_t *p = ms_buf_reserve(b, n);

	if (!p)
		return -1;
	memset(p, fill, n);
	ms_buf_commit(b, n);
	return 0;
}

/* A 1 MiB reply grows the queue; once sent, shrink gives it back. */
static int t_shrink_after_large_reply(void)
{
	struct ms_buf b = { 0 };

	CHECK(push(&b, 100, 1) == 0);
	CHECK(b.cap == 64 * 1024);
	CHECK(push(&b, (1u << 20) + 88, 2) == 0);
	CHECK(b.cap >= (1u << 20) + 188);
	ms_buf_consume(&b, b.len);
	CHECK(b.len == 0 && b.head == 0);
	CHECK(ms_buf_shrink(&b, 64 * 1024) == 0);
	CHECK(b.cap == 64 * 1024);
	/* Still usable after shrinking. */
	CHECK(push(&b, 10, 3) == 0 && b.data[0] == 3);
	ms_buf_free(&b);
	return 0;
}

/* Bytes still queued survive a shrink, in order; a queue that does not
 * fit the target is left alone. */
static int t_shrink_keeps_queued_bytes(void)
{
	struct ms_buf b = { 0 };

	CHECK(push(&b, 300 * 1024, 7) == 0);
	CHECK(push(&b, 1000, 8) == 0);
	CHECK(ms_buf_shrink(&b, 64 * 1024) == 0);
	CHECK(b.cap > 64 * 1024);           /* too much queued: unchanged */
	ms_buf_consume(&b, 300 * 1024 - 10);
	CHECK(ms_buf_shrink(&b, 64 * 1024) == 0);
	CHECK(b.cap == 64 * 1024 && b.len == 1010 && b.head == 0);
	CHECK(b.data[0] == 7 && b.data[9] == 7 && b.data[10] == 8 && b.data[1009] == 8);
	ms_buf_free(&b);
	return 0;
}

/* Past 1 MiB the queue grows to what is needed (rounded to 64 KiB), not
 * to twice that: the server's bound on queued bytes is the memory bound. */
static int t_growth_not_doubled_past_1m(void)
{
	struct ms_buf b = { 0 };
	size_t need;

	CHECK(push(&b, (1u << 20) - 100, 1) == 0);
	CHECK(b.cap == 1u << 20);
	CHECK(push(&b, (1u << 20) + 88, 2) == 0);
	need = (2u << 20) - 12;
	CHECK(b.len == need);
	CHECK(b.cap >= need && b.cap < need + 64 * 1024);
	ms_buf_free(&b);
	CHECK(b.cap == 0 && b.data == NULL);
	return 0;
}

/* Shrinking to 0 frees an empty queue entirely. */
static int t_shrink_to_nothing(void)
{
	struct ms_buf b = { 0 };

	CHECK(push(&b, 5000, 1) == 0);
	ms_buf_consume(&b, 5000);
	CHECK(ms_buf_shrink(&b, 0) == 0);
	CHECK(b.cap == 0 && b.data == NULL);
	CHECK(push(&b, 5, 9) == 0 && b.data[4] == 9);
	ms_buf_free(&b);
	return 0;
}

static const struct tap_case cases[] = {
	{ "a drained queue shrinks back after a 1 MiB reply", t_shrink_after_large_reply },
	{ "queued bytes survive a shrink; too much queued: no shrink", t_shrink_keeps_queued_bytes },
	{ "past 1 MiB growth follows need, not doubling", t_growth_not_doubled_past_1m },
	{ "shrinking an empty queue to 0 frees it", t_shrink_to_nothing },
};

TAP_MAIN(cases)
