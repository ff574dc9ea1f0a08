/* admit.c — who may start a handshake (see admit.h).
 *
 * A connection that has not authenticated costs us a socket, buffers and
 * a deadline while costing its sender one SYN: a cap on how many may be
 * in progress keeps that bounded, and a cap per source address keeps one
 * host from taking all of them.  New connections beyond either cap are
 * refused; none already in progress is evicted, so a flood cannot push a
 * genuine client out half-way through its handshake.  Used by the
 * memserver's listeners and by `farmem-blk serve`; not locked: callers
 * that share one across threads hold their own lock.
 *
 * Sources are counted in an open-addressing table (linear probing,
 * backward-shift deletion) with room for twice the global cap, so it
 * never fills and a lookup probes at most max_total slots.  IPv6 peers
 * are counted per /64: a host usually owns a whole /64, and counting
 * single addresses would let it take every slot.
 */
#include "admit.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

struct fm_admit_src {
	uint8_t key[17];     /* family tag, then the address (or /64) */
	uint32_t count;      /* 0: empty slot */
};

int fm_admit_init(struct fm_admit *a, unsigned max_total, unsigned max_per_src)
{
	unsigned n = 16;

	memset(a, 0, sizeof(*a));
	if (max_total == 0 || max_per_src == 0 || max_total > (1u << 24))
		return -EINVAL;
	while (n < 2 * max_total)
		n *= 2;
	a->slots = calloc(n, sizeof(*a->slots));
	if (!a->slots)
		return -ENOMEM;
	a->nslots = n;
	a->max_total = max_total;
	a->max_per_src = max_per_src;
	return 0;
}

void fm_admit_fini(struct fm_admit *a)
{
	free(a->slots);
	memset(a, 0, sizeof(*a));
}

/* The part of the address that names the source host. */
static int source_key(const struct sockaddr *sa, uint8_t key[17])
{
	memset(key, 0, 17);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = { [10] = 0xff, [11] = 0xff };

		if (memcmp(b, v4mapped, 12) == 0) {
			key[0] = 4;
			memcpy(key + 1, b + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, b, 8);
		}
		return 0;
	}
	return -EAFNOSUPPORT;
}

static unsigned key_hash(const uint8_t key[17], unsigned mask)
{
	uint32_t h = 2166136261u;   /* FNV-1a */

	for (int i = 0; i < 17; i++)
		h = (h ^ key[i]) * 16777619u;
	return h & mask;
}

/* The slot holding key, or the empty slot where it would go. */
static unsigned find(const struct fm_admit *a, const uint8_t key[17])
{
	unsigned mask = a->nslots - 1, i = key_hash(key, mask);

	while (a->slots[i].count && memcmp(a->slots[i].key, key, 17))
		i = (i + 1) & mask;
	return i;
}

int fm_admit_take(struct fm_admit *a, const struct sockaddr *sa)
{
	uint8_t key[17];
	unsigned i;

	if (source_key(sa, key) < 0)
		return -EAFNOSUPPORT;
	i = find(a, key);
	if (a->slots[i].count >= a->max_per_src)
		return -EBUSY;
	if (a->total >= a->max_total)
		return -EAGAIN;
	if (a->slots[i].count == 0)
		memcpy(a->slots[i].key, key, 17);
	a->slots[i].count++;
	a->total++;
	return 0;
}

/* Empty slot i, moving later entries of its probe run back so that
 * every lookup still finds them. */
static void remove_slot(struct fm_admit *a, unsigned i)
{
	unsigned mask = a->nslots - 1, j = i;

	for (;;) {
		unsigned home;

		j = (j + 1) & mask;
		if (!a->slots[j].count)
			break;
		home = key_hash(a->slots[j].key, mask);
		/* Entry j may fill the hole at i unless its home lies
		 * cyclically in (i, j]. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			a->slots[i] = a->slots[j];
			i = j;
		}
	}
	a->slots[i].count = 0;
}

void fm_admit_put(struct fm_admit *a, const struct sockaddr *sa)
{
	uint8_t key[17];
	unsigned i;

	if (source_key(sa, key) < 0)
		return;
	i = find(a, key);
	if (!a->slots[i].count)
		return;   /* not ours: nothing to give back */
	a->total--;
	if (--a->slots[i].count == 0)
		remove_slot(a, i);
}

unsigned fm_admit_source_count(const struct fm_admit *a, const struct sockaddr *sa)
{
	uint8_t key[17];

	if (source_key(sa, key) < 0)
		return 0;
	return a->slots[find(a, key)].count;
}
