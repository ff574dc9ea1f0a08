/* placement.c — rotate segment replicas over the usable servers. */
#include "placement.h"

static int in_list(int v, const int *list, int n)
{
	for (int i = 0; i < n; i++)
		if (list[i] == v)
			return 1;
	return 0;
}

int place_pick(const int *usable, int n, int want, unsigned *cursor,
	       const int *exclude, int nexclude, int *out)
{
	int got = 0;
	unsigned start;

	if (n <= 0 || want <= 0)
		return 0;
	start = *cursor % (unsigned)n;
	*cursor = start + 1;
	for (int k = 0; k < n && got < want; k++) {
		int i = (int)((start + (unsigned)k) % (unsigned)n);

		if (usable[i] && !in_list(i, exclude, nexclude) && !in_list(i, out, got))
			out[got++] = i;
	}
	return got;
}
