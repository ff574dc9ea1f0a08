/* placement.h — which servers get a new segment's replicas. */
#ifndef FARMEM_PLACEMENT_H
#define FARMEM_PLACEMENT_H

/* Pick up to want distinct servers among n for which usable[i] is set
 * and that are not in exclude[0..nexclude).  The scan starts at *cursor
 * (mod n), which then advances by one so consecutive segments start on
 * consecutive servers: that is the striping.  Returns how many were
 * written to out (fewer than want when not enough servers qualify). */
int place_pick(const int *usable, int n, int want, unsigned *cursor,
	       const int *exclude, int nexclude, int *out);

#endif
