/* test_evacuate.c — the store moving copies a server asks back (NOTICE):
 * what it does with a good notice, and that a hostile one (ids the
 * server does not hold for us, another server's ids, a payload that
 * does not decode) changes nothing.  Fault-transport servers. */
#include <errno.h>
#include <string.h>

#include "store_fixture.h"
#include "tap.h"
#include "transport_common.h"
#include "ublk-farmem/store/internal.h"

#define NPAGES 256u

static uint8_t buf[64 << 10];

static int write_all(struct store *s)
{
	for (uint64_t p = 0; p < NPAGES; p += 16) {
		for (int i = 0; i < 16; i++)
			fix_fill(buf + i * STORE_PAGE, p + i, 1, (int)((p + i) % 3));
		if (store_write(s, 0, p * STORE_PAGE, 16 * STORE_PAGE, buf) < 0)
			return -1;
	}
	return 0;
}

static int verify_all(struct store *s)
{
	uint8_t want[STORE_PAGE];

	for (uint64_t p = 0; p < NPAGES; p += 16) {
		if (store_read(s, 1, p * STORE_PAGE, 16 * STORE_PAGE, buf) < 0)
			return -1;
		for (int i = 0; i < 16; i++) {
			fix_fill(want, p + i, 1, (int)((p + i) % 3));
			if (memcmp(want, buf + i * STORE_PAGE, STORE_PAGE))
				return -1;
		}
	}
	return 0;
}

static struct store *open3(void)
{
	struct store_config c;

	fault_reset();
	fix_config(&c, 3, 2, NPAGES * STORE_PAGE);
	return fix_open(&c);
}

/* Up to max ids of copies server i holds, from the table. */
static unsigned ids_on(struct store *s, int i, uint64_t *ids, unsigned max)
{
	unsigned n = 0;

	for (uint32_t k = 0; k < s->hdr->nsegs && n < max; k++)
		for (int r = 0; r < STORE_MAX_REPLICAS && n < max; r++)
			if (s->segs[k].state != SEG_FREE && s->segs[k].rep[r].server == i)
				ids[n++] = s->segs[k].rep[r].remote_id;
	return n;
}

static int referenced(struct store *s, int i, uint64_t id)
{
	int hit = 0;

	for (uint32_t k = 0; k < s->hdr->nsegs; k++)
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			hit |= s->segs[k].state != SEG_FREE &&
			       s->segs[k].rep[r].server == i &&
			       s->segs[k].rep[r].remote_id == id;
	return hit;
}

static unsigned marked(struct store *s)
{
	unsigned n = 0;

	for (uint32_t k = 0; k < s->hdr->nsegs; k++)
		n += (s->segs[k].flags & (SEGF_EVAC * ((1u << STORE_MAX_REPLICAS) - 1))) != 0;
	return n;
}

static uint64_t held_by(int i)
{
	struct fault_stats fs;

	fault_get_stats((uint16_t)(FIX_PORT0 + i), &fs);
	return fs.segments;
}

/* Deliver a NOTICE payload as the transport would (decode, then cb). */
static int deliver(struct store *s, int from, const uint8_t *pl, uint32_t len)
{
	struct fm_tc_conf cf;

	memset(&cf, 0, sizeof(cf));
	cf.who = "server ";
	snprintf(cf.name, sizeof(cf.name), "server %d", from);
	cf.notice_cb = evacuate_notice_cb;
	cf.notice_arg = &s->srv[from];
	return fm_tc_notice(&cf, pl, len);
}

static void maintain(struct store *s, int rounds)
{
	for (int i = 0; i < rounds; i++)
		store_maintain(s);
}

static int test_notice_moves_named_copies(void)
{
	struct store *s = open3();
	uint8_t pl[FM_NOTICE_LEN(FM_NOTICE_MAX)];
	uint64_t ids[4];
	uint64_t before;
	unsigned n;

	CHECK(s);
	CHECK(write_all(s) == 0);
	maintain(s, 2);                /* seals what can be sealed */
	n = ids_on(s, 0, ids, 4);
	CHECK(n > 0);
	before = held_by(0);
	CHECK(deliver(s, 0, pl, (uint32_t)fm_notice_encode(pl, 5000, 0, ids, (uint16_t)n)) == 0);
	CHECK(marked(s) == n);
	maintain(s, 4);
	for (unsigned k = 0; k < n; k++)
		CHECK(!referenced(s, 0, ids[k]));
	CHECK(held_by(0) == before - n);
	CHECK(marked(s) == 0);
	CHECK(verify_all(s) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static int test_notice_all_empties_server(void)
{
	struct store *s = open3();
	uint8_t pl[FM_NOTICE_LEN(0)];
	uint64_t ids[1];

	CHECK(s);
	CHECK(write_all(s) == 0);
	CHECK(held_by(1) > 0);
	CHECK(deliver(s, 1, pl, (uint32_t)fm_notice_encode(pl, 5000, FM_NOTICE_ALL, NULL, 0)) == 0);
	CHECK(s->srv[1].evac_all == 1);
	/* New segments go elsewhere at once (it would refuse them anyway). */
	{
		struct fault_stats before, after;

		fault_get_stats(FIX_PORT0 + 1, &before);
		CHECK(write_all(s) == 0);
		fault_get_stats(FIX_PORT0 + 1, &after);
		CHECK(after.allocs == before.allocs);
	}
	maintain(s, 8);
	CHECK(ids_on(s, 1, ids, 1) == 0);
	CHECK(held_by(1) == 0);
	CHECK(s->srv[1].evac_all == 0);   /* nothing left: the notice is done */
	CHECK(verify_all(s) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* Ids the server does not hold for us, or another server's ids, or a
 * payload that does not decode: nothing is marked, nothing moves. */
static int test_hostile_notice_changes_nothing(void)
{
	struct store *s = open3();
	uint8_t pl[FM_NOTICE_LEN(FM_NOTICE_MAX) + 8];
	uint64_t ids[4], junk[3] = { 0x1234, 0xdeadbeef00000001ull, ~0ull };
	uint64_t held[3];
	unsigned n;
	size_t len;

	CHECK(s);
	CHECK(write_all(s) == 0);
	maintain(s, 2);
	for (int i = 0; i < 3; i++)
		held[i] = held_by(i);
	/* Unknown ids. */
	len = fm_notice_encode(pl, 5000, 0, junk, 3);
	CHECK(deliver(s, 0, pl, (uint32_t)len) == 0);
	CHECK(marked(s) == 0);
	/* Server 2 names server 0's copies: not its to ask about. */
	n = ids_on(s, 0, ids, 4);
	CHECK(n > 0);
	for (unsigned k = 0; k < n; k++)
		CHECK(!referenced(s, 2, ids[k]));
	len = fm_notice_encode(pl, 5000, 0, ids, (uint16_t)n);
	CHECK(deliver(s, 2, pl, (uint32_t)len) == 0);
	CHECK(marked(s) == 0);
	/* Bad layouts: the length disagrees with the count, too many ids,
	 * ALL with ids, no deadline, unknown flags, short. */
	len = fm_notice_encode(pl, 5000, 0, ids, 1);
	CHECK(deliver(s, 0, pl, (uint32_t)len + 8) == -EPROTO);
	CHECK(deliver(s, 0, pl, (uint32_t)len - 1) == -EPROTO);
	put_le16(pl + 6, FM_NOTICE_MAX + 1);
	CHECK(deliver(s, 0, pl, FM_NOTICE_LEN(FM_NOTICE_MAX + 1) > sizeof(pl) ?
		      (uint32_t)sizeof(pl) : FM_NOTICE_LEN(FM_NOTICE_MAX + 1)) == -EPROTO);
	len = fm_notice_encode(pl, 5000, 0, ids, 1);
	put_le16(pl + 4, FM_NOTICE_ALL);
	CHECK(deliver(s, 0, pl, (uint32_t)len) == -EPROTO);
	len = fm_notice_encode(pl, 0, 0, ids, 1);
	CHECK(deliver(s, 0, pl, (uint32_t)len) == -EPROTO);
	len = fm_notice_encode(pl, 5000, 0, ids, 1);
	put_le16(pl + 4, 0x8000);
	CHECK(deliver(s, 0, pl, (uint32_t)len) == -EPROTO);
	CHECK(deliver(s, 0, pl, 4) == -EPROTO);
	CHECK(marked(s) == 0 && s->srv[0].evac_all == 0);
	maintain(s, 4);
	for (int i = 0; i < 3; i++)
		CHECK(held_by(i) == held[i]);
	CHECK(verify_all(s) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

/* Nowhere to go (two servers, two copies): the copy stays, the data too. */
static int test_notice_without_room_keeps_copy(void)
{
	struct store_config c;
	struct store *s;
	uint8_t pl[FM_NOTICE_LEN(0)];
	uint64_t before;

	fault_reset();
	fix_config(&c, 2, 2, NPAGES * STORE_PAGE);
	s = fix_open(&c);
	CHECK(s);
	CHECK(write_all(s) == 0);
	before = held_by(0);
	CHECK(before > 0);
	CHECK(deliver(s, 0, pl, (uint32_t)fm_notice_encode(pl, 5000, FM_NOTICE_ALL, NULL, 0)) == 0);
	maintain(s, 4);
	CHECK(held_by(0) == before);
	CHECK(verify_all(s) == 0);
	store_close(s);
	fault_reset();
	return 0;
}

static const struct tap_case cases[] = {
	{ "a notice's named copies move to another server and are freed there", test_notice_moves_named_copies },
	{ "a notice for everything empties that server (drain), data intact", test_notice_all_empties_server },
	{ "hostile notices (unknown ids, another server's, bad layout) change nothing", test_hostile_notice_changes_nothing },
	{ "no other server has room: the copy stays, nothing lost", test_notice_without_room_keeps_copy },
};

int main(void)
{
	fix_quiet();
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
