/* placement.h — which servers get a new segment's replicas. */
#ifndef FARMEM_PLACEMENT_H
#define FARMEM_PLACEMENT_H

#include <stdint.h>

#define PLACE_MAX_SERVERS 32

/* What membership (etcd) says about each server, read without a lock
 * (a stale value only changes where one segment goes).  All zero — no
 * etcd — leaves placement a plain rotation. */
struct place_hints {
	uint64_t free[PLACE_MAX_SERVERS];   /* bytes free in its pool; 0: unknown */
	uint32_t zone[PLACE_MAX_SERVERS];   /* its zone, hashed; 0: none */
	int gone[PLACE_MAX_SERVERS];        /* left the cluster: last resort */
};

/* Pick up to want distinct servers among n for which usable[i] is set
 * and that are not in exclude[0..nexclude).  The scan starts at *cursor
 * (mod n), which then advances by one so consecutive segments start on
 * consecutive servers: that is the striping.  Returns how many were
 * written to out (fewer than want when not enough servers qualify). */
int place_pick(const int *usable, int n, int want, unsigned *cursor,
	       const int *exclude, int nexclude, int *out);

/* The same with hints (may be NULL): each pick prefers, in this order,
 * a server whose zone no excluded or already picked server has and
 * that has at least half the free memory of the freest candidate; then
 * a new zone with less memory; then a used zone with more memory; then
 * any; servers gone from the cluster only when no other can take the
 * copy.  Within each, the rotation above decides: a segment's first copy
 * goes to the (*cursor mod m)-th of the m servers that qualify. */
int place_pick_hinted(const int *usable, int n, int want, unsigned *cursor,
		      const int *exclude, int nexclude,
		      const struct place_hints *h, int *out);

#endif
