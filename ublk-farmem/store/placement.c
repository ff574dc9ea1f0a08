/* placement.c — rotate segment replicas over the usable servers,
 * preferring distinct zones and servers with more free memory. */
#include "placement.h"

#include <stddef.h>

/* Zone and memory, zone, memory, any; then servers gone from etcd. */
#define PASSES 5

static int in_list(int v, const int *list, int n)
{
	for (int i = 0; i < n; i++)
		if (list[i] == v)
			return 1;
	return 0;
}

static int zone_taken(const struct place_hints *h, int i, const int *exclude,
		      int nexclude, const int *out, int got)
{
	uint32_t z = h ? h->zone[i] : 0;

	if (!z)
		return 0;
	for (int k = 0; k < nexclude; k++)
		if (exclude[k] >= 0 && exclude[k] < PLACE_MAX_SERVERS && h->zone[exclude[k]] == z)
			return 1;
	for (int k = 0; k < got; k++)
		if (h->zone[out[k]] == z)
			return 1;
	return 0;
}

struct pick_ctx {
	const int *usable;
	int n;
	const int *exclude;
	int nexclude;
	const struct place_hints *h;
	uint64_t rich;          /* free bytes that count as "more memory" */
};

static int candidate(const struct pick_ctx *c, int i, const int *out, int got)
{
	return c->usable[i] && !(c->h && c->h->gone[i]) &&
	       !in_list(i, c->exclude, c->nexclude) && !in_list(i, out, got);
}

/* The last resort: a server that left the cluster but still answers.
 * Better a copy there than a write that fails for want of a server
 * (etcd may have lost every key while all servers run). */
static int last_resort(const struct pick_ctx *c, int i, const int *out, int got)
{
	return c->usable[i] && !in_list(i, c->exclude, c->nexclude) && !in_list(i, out, got);
}

/* Half the largest free among candidates: "more free memory" without
 * sending every segment to the single freest server between updates. */
static uint64_t rich_floor(const struct pick_ctx *c)
{
	uint64_t max = 0;

	for (int i = 0; c->h && i < c->n; i++)
		if (candidate(c, i, NULL, 0) && c->h->free[i] > max)
			max = c->h->free[i];
	return max / 2;
}

static int passes(const struct pick_ctx *c, int i, int pass, const int *out, int got)
{
	int need_zone = pass == 0 || pass == 1;
	int need_rich = pass == 0 || pass == 2;

	if (pass == PASSES - 1)
		return last_resort(c, i, out, got);
	if (!candidate(c, i, out, got))
		return 0;
	if (need_zone && zone_taken(c->h, i, c->exclude, c->nexclude, out, got))
		return 0;
	return !(need_rich && c->h && c->h->free[i] < c->rich);
}

/* The first pick of a segment: the (turn mod m)-th of the m servers
 * that pass, so the rotation spreads evenly over the preferred ones. */
static int scan_turn(const struct pick_ctx *c, unsigned turn, int pass)
{
	int m = 0, k = 0;

	for (int i = 0; i < c->n; i++)
		m += passes(c, i, pass, NULL, 0);
	if (m == 0)
		return -1;
	turn %= (unsigned)m;
	for (int i = 0; i < c->n; i++)
		if (passes(c, i, pass, NULL, 0) && (unsigned)k++ == turn)
			return i;
	return -1;
}

/* Later picks: the first server from pos on that passes. */
static int scan_from(const struct pick_ctx *c, unsigned pos, int pass, const int *out,
		     int got)
{
	for (int k = 0; k < c->n; k++) {
		int i = (int)((pos + (unsigned)k) % (unsigned)c->n);

		if (passes(c, i, pass, out, got))
			return i;
	}
	return -1;
}

int place_pick_hinted(const int *usable, int n, int want, unsigned *cursor,
		      const int *exclude, int nexclude,
		      const struct place_hints *h, int *out)
{
	struct pick_ctx c = { usable, n > PLACE_MAX_SERVERS ? PLACE_MAX_SERVERS : n,
			      exclude, nexclude, h, 0 };
	unsigned turn, pos = 0;
	int got = 0;

	if (c.n <= 0 || want <= 0)
		return 0;
	/* Not reduced mod n: it is reduced mod the servers that pass. */
	turn = *cursor;
	*cursor = turn + 1;
	c.rich = rich_floor(&c);
	while (got < want) {
		int i = -1;

		for (int pass = 0; pass < PASSES && i < 0; pass++)
			i = got ? scan_from(&c, pos, pass, out, got) : scan_turn(&c, turn, pass);
		if (i < 0)
			break;
		out[got++] = i;
		pos = (unsigned)i + 1;
	}
	return got;
}

int place_pick(const int *usable, int n, int want, unsigned *cursor,
	       const int *exclude, int nexclude, int *out)
{
	return place_pick_hinted(usable, n, want, cursor, exclude, nexclude, NULL, out);
}
