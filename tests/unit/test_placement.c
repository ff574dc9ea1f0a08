/* test_placement.c — replica placement: distinct, up, rotating. */
#include <string.h>

#include "tap.h"
#include "ublk-farmem/store/placement.h"

static int distinct(const int *v, int n)
{
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (v[i] == v[j])
				return 0;
	return 1;
}

static int test_distinct_and_rotating(void)
{
	int up[5] = { 1, 1, 1, 1, 1 }, out[4], first[5] = { 0 };
	unsigned cursor = 0;

	for (int k = 0; k < 50; k++) {
		CHECK(place_pick(up, 5, 3, &cursor, NULL, 0, out) == 3);
		CHECK(distinct(out, 3));
		first[out[0]]++;
	}
	/* Consecutive segments start on consecutive servers: even spread. */
	for (int i = 0; i < 5; i++)
		CHECK(first[i] == 10);
	return 0;
}

static int test_skips_down_and_excluded(void)
{
	int up[4] = { 1, 0, 1, 1 }, out[4], ex[1] = { 3 };
	unsigned cursor = 1;

	for (int k = 0; k < 8; k++) {
		int n = place_pick(up, 4, 2, &cursor, ex, 1, out);

		CHECK(n == 2);
		CHECK(distinct(out, 2));
		for (int i = 0; i < n; i++)
			CHECK(out[i] != 1 && out[i] != 3);
	}
	return 0;
}

static int test_fewer_than_wanted(void)
{
	int up[3] = { 0, 1, 0 }, out[4];
	unsigned cursor = 0;

	CHECK(place_pick(up, 3, 2, &cursor, NULL, 0, out) == 1 && out[0] == 1);
	memset(up, 0, sizeof(up));
	CHECK(place_pick(up, 3, 2, &cursor, NULL, 0, out) == 0);
	CHECK(place_pick(up, 0, 2, &cursor, NULL, 0, out) == 0);
	return 0;
}

/* Servers 0 and 1 have much more free memory than 2 and 3: every
 * segment's copies go to them while they can take them, still rotating. */
static int test_prefers_free_memory(void)
{
	struct place_hints h = { .free = { 8ull << 30, 6ull << 30, 1ull << 30, 1ull << 29 } };
	int up[4] = { 1, 1, 1, 1 }, out[4], first[4] = { 0 };
	unsigned cursor = 0;

	for (int k = 0; k < 8; k++) {
		CHECK(place_pick_hinted(up, 4, 2, &cursor, NULL, 0, &h, out) == 2);
		CHECK(distinct(out, 2));
		CHECK(out[0] <= 1 && out[1] <= 1);
		first[out[0]]++;
	}
	CHECK(first[0] == 4 && first[1] == 4);
	/* A third copy has to go to a poorer server. */
	CHECK(place_pick_hinted(up, 4, 3, &cursor, NULL, 0, &h, out) == 3);
	CHECK(distinct(out, 3) && (out[2] == 2 || out[2] == 3));
	/* The rich ones down: the others are used. */
	up[0] = up[1] = 0;
	CHECK(place_pick_hinted(up, 4, 2, &cursor, NULL, 0, &h, out) == 2);
	CHECK(out[0] >= 2 && out[1] >= 2);
	return 0;
}

/* Zones a a b b c: two copies never share a zone, even when the other
 * zone has less memory; a repair excluding zone a's survivor goes to b
 * or c; with only one zone left up, copies share it. */
static int test_distinct_zones(void)
{
	struct place_hints h = { .zone = { 1, 1, 2, 2, 3 },
				 .free = { 9, 9, 9, 9, 1 } };
	int up[5] = { 1, 1, 1, 1, 1 }, out[4], ex[1] = { 0 };
	unsigned cursor = 0;

	for (int k = 0; k < 20; k++) {
		CHECK(place_pick_hinted(up, 5, 3, &cursor, NULL, 0, &h, out) == 3);
		CHECK(h.zone[out[0]] != h.zone[out[1]] && h.zone[out[0]] != h.zone[out[2]] &&
		      h.zone[out[1]] != h.zone[out[2]]);
	}
	for (int k = 0; k < 10; k++) {
		CHECK(place_pick_hinted(up, 5, 1, &cursor, ex, 1, &h, out) == 1);
		CHECK(h.zone[out[0]] != 1);
	}
	up[2] = up[3] = up[4] = 0;
	CHECK(place_pick_hinted(up, 5, 2, &cursor, NULL, 0, &h, out) == 2);
	CHECK(distinct(out, 2) && out[0] <= 1 && out[1] <= 1);
	return 0;
}

/* A server that left the cluster is picked only when no other can take
 * the copy (it still answers: better there than a failed write). */
static int test_gone_last_resort(void)
{
	struct place_hints h = { .gone = { 0, 1, 0 } };
	int up[3] = { 1, 1, 1 }, out[3];
	unsigned cursor = 0;

	for (int k = 0; k < 6; k++) {
		CHECK(place_pick_hinted(up, 3, 2, &cursor, NULL, 0, &h, out) == 2);
		CHECK(out[0] != 1 && out[1] != 1);
		CHECK(place_pick_hinted(up, 3, 3, &cursor, NULL, 0, &h, out) == 3);
		CHECK(out[0] != 1 && out[1] != 1 && out[2] == 1);
	}
	return 0;
}

static const struct tap_case cases[] = {
	{ "replicas distinct; start rotates evenly over servers", test_distinct_and_rotating },
	{ "down and excluded servers never picked", test_skips_down_and_excluded },
	{ "fewer servers than replicas: returns what exists", test_fewer_than_wanted },
	{ "servers with more free memory preferred", test_prefers_free_memory },
	{ "copies in distinct zones", test_distinct_zones },
	{ "servers gone from the cluster only as a last resort", test_gone_last_resort },
};

TAP_MAIN(cases)
