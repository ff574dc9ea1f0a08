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

static const struct tap_case cases[] = {
	{ "replicas distinct; start rotates evenly over servers", test_distinct_and_rotating },
	{ "down and excluded servers never picked", test_skips_down_and_excluded },
	{ "fewer servers than replicas: returns what exists", test_fewer_than_wanted },
};

TAP_MAIN(cases)
