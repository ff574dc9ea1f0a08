/* segtab.c — the pool cut into fixed-size slots, each owned by a device.
 *
 * Fixed slots of segment_max bytes keep allocation O(1) (a free list)
 * and make fragmentation impossible; a client asking for less than
 * segment_max wastes the rest of its slot, which is why clients ask for
 * segment_max.  Ownership is checked on every access: an id that is not
 * the caller's is -ENOENT, exactly like an id that never existed, so a
 * client learns nothing about other devices.
 */
#include "memserver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_OF(id) ((uint32_t)((id) & 0xffffffffu))
#define GEN_OF(id)  ((uint32_t)((id) >> 32))

int ms_segtab_init(struct ms_segtab *t, uint8_t *base, uint64_t pool_bytes,
		   uint32_t seg_max)
{
	uint64_t n;

	memset(t, 0, sizeof(*t));
	if (seg_max == 0 || seg_max % FM_PAGE)
		return -EINVAL;
	n = pool_bytes / seg_max;
	if (n == 0 || n >= UINT32_MAX)
		return -EINVAL;
	t->slots = calloc(n, sizeof(*t->slots));
	if (!t->slots)
		return -ENOMEM;
	t->base = base;
	t->seg_max = seg_max;
	t->nslots = (uint32_t)n;
	for (uint32_t i = 0; i < t->nslots; i++) {
		t->slots[i].gen = 1;
		t->slots[i].next_free = i + 1;
	}
	t->free_head = 0;
	return 0;
}

void ms_segtab_seed(struct ms_segtab *t, uint32_t gen)
{
	for (uint32_t i = 0; i < t->nslots; i++)
		t->slots[i].gen = gen ? gen : 1;
}

void ms_segtab_fini(struct ms_segtab *t)
{
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

int ms_segtab_alloc(struct ms_segtab *t, uint32_t owner, uint32_t size,
		    uint64_t *seg_id)
{
	struct ms_slot *s;
	uint32_t i;

	if (owner == 0 || size == 0 || size % FM_PAGE || size > t->seg_max)
		return -EINVAL;
	if (t->free_head >= t->nslots)
		return -ENOSPC;
	i = t->free_head;
	s = &t->slots[i];
	t->free_head = s->next_free;
	s->owner = owner;
	s->size = size;
	t->nused++;
	*seg_id = ((uint64_t)s->gen << 32) | i;
	return 0;
}

static struct ms_slot *lookup(struct ms_segtab *t, uint32_t owner,
			      uint64_t seg_id)
{
	uint32_t i = SLOT_OF(seg_id);

	if (owner == 0 || i >= t->nslots)
		return NULL;
	if (t->slots[i].owner != owner || t->slots[i].gen != GEN_OF(seg_id))
		return NULL;
	return &t->slots[i];
}

static uint8_t *slot_mem(const struct ms_segtab *t, uint32_t i)
{
	return t->base + (size_t)i * t->seg_max;
}

/* Off every list, memory back to the kernel (shrink.c decided). */
static void retire(struct ms_segtab *t, uint32_t i)
{
	t->slots[i].retired = 1;
	t->nretired++;
	/* Memory that is not given back keeps its bytes: zero them, so a
	 * slot restored later never shows the last owner's data. */
	if (!t->mem.release || t->mem.pinned_by_device ||
	    t->mem.release(slot_mem(t, i), t->seg_max, t->mem.locked) < 0)
		memset(slot_mem(t, i), 0, t->seg_max);
}

/* Back to the free list, zeroed so the next owner never sees this
 * owner's bytes, with a new generation so the old id is dead.  While
 * the pool is shrinking the slot is retired instead (its memory goes
 * back to the kernel, which zeroes it on the next use). */
static void release(struct ms_segtab *t, uint32_t i)
{
	struct ms_slot *s = &t->slots[i];

	s->owner = 0;
	s->gen = s->gen == UINT32_MAX ? 1 : s->gen + 1;
	s->notice_end = 0;
	t->nused--;
	if (t->retire_want) {
		t->retire_want--;
		s->size = 0;
		retire(t, i);
		return;
	}
	memset(slot_mem(t, i), 0, s->size);
	s->size = 0;
	s->next_free = t->free_head;
	t->free_head = i;
}

int ms_segtab_free(struct ms_segtab *t, uint32_t owner, uint64_t seg_id)
{
	if (!lookup(t, owner, seg_id))
		return -ENOENT;
	release(t, SLOT_OF(seg_id));
	return 0;
}

int ms_segtab_range(struct ms_segtab *t, uint32_t owner, uint64_t seg_id,
		    uint32_t offset, uint32_t len, uint8_t **ptr)
{
	struct ms_slot *s = lookup(t, owner, seg_id);

	if (!s)
		return -ENOENT;
	/* In 64 bits: offset + len cannot wrap. */
	if ((uint64_t)offset + len > s->size)
		return -ERANGE;
	*ptr = t->base + (size_t)SLOT_OF(seg_id) * t->seg_max + offset;
	return 0;
}

uint32_t ms_segtab_free_owner(struct ms_segtab *t, uint32_t owner)
{
	uint32_t n = 0;

	if (owner == 0)
		return 0;
	for (uint32_t i = 0; i < t->nslots; i++) {
		if (t->slots[i].owner == owner) {
			release(t, i);
			n++;
		}
	}
	return n;
}

uint32_t ms_segtab_list(const struct ms_segtab *t, uint32_t owner,
			uint32_t start, uint64_t *ids, uint32_t *sizes,
			uint32_t max)
{
	uint32_t seen = 0, n = 0;

	if (owner == 0)
		return 0;
	for (uint32_t i = 0; i < t->nslots && n < max; i++) {
		const struct ms_slot *s = &t->slots[i];

		if (s->owner != owner)
			continue;
		if (seen++ < start)
			continue;
		ids[n] = ((uint64_t)s->gen << 32) | i;
		sizes[n] = s->size;
		n++;
	}
	return n;
}

uint64_t ms_segtab_pool_bytes(const struct ms_segtab *t)
{
	return (uint64_t)(t->nslots - t->nretired) * t->seg_max;
}

uint32_t ms_segtab_retire_free(struct ms_segtab *t, uint32_t n)
{
	uint32_t done = 0;

	while (done < n && t->free_head < t->nslots) {
		uint32_t i = t->free_head;

		t->free_head = t->slots[i].next_free;
		retire(t, i);
		done++;
	}
	return done;
}

/* From the top down, so a pool that shrank and grew hands out its low
 * slots first again. */
uint32_t ms_segtab_restore(struct ms_segtab *t, uint32_t n)
{
	uint32_t done = 0;

	for (uint32_t i = t->nslots; i-- > 0 && done < n && t->nretired; ) {
		struct ms_slot *s = &t->slots[i];

		if (!s->retired)
			continue;
		if (t->mem.restore && !t->mem.pinned_by_device &&
		    t->mem.restore(slot_mem(t, i), t->seg_max, t->mem.locked) < 0)
			break;   /* logged; try again on the next look */
		s->retired = 0;
		t->nretired--;
		s->next_free = t->free_head;
		t->free_head = i;
		done++;
	}
	return done;
}

uint64_t ms_segtab_id(const struct ms_segtab *t, uint32_t slot)
{
	if (slot >= t->nslots || !t->slots[slot].owner)
		return 0;
	return ((uint64_t)t->slots[slot].gen << 32) | slot;
}

uint32_t ms_segtab_force_free(struct ms_segtab *t, uint32_t slot)
{
	uint32_t owner;

	if (slot >= t->nslots || !t->slots[slot].owner)
		return 0;
	owner = t->slots[slot].owner;
	release(t, slot);
	return owner;
}

uint64_t ms_segtab_used_bytes(const struct ms_segtab *t)
{
	return (uint64_t)t->nused * t->seg_max;
}
