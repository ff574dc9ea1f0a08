/* pagemap.h — one 16-byte entry per device page, allocated up front.
 *
 *   seg   u32  segment table index of the record (PM_STORED only)
 *   off   u32  record offset in the segment
 *   meta  u64  bits 0-1 state, 2-14 payload length, 16-63 version
 *
 * The version is the write sequence number of the page's latest
 * submitted write or discard.  It stays in the entry when the page is
 * unmapped or zero, so a slower, older write can never overwrite a newer
 * discard.  48 bits do not wrap in practice (10^9 writes/s for 3 days
 * gives 2^48).
 */
#ifndef FARMEM_PAGEMAP_H
#define FARMEM_PAGEMAP_H

#include <stdint.h>

enum pm_state { PM_UNMAPPED = 0, PM_ZERO = 1, PM_STORED = 2 };

struct pm_entry {
	uint32_t seg;
	uint32_t off;
	uint64_t meta;
};

#define PM_VERSION_MASK ((1ull << 48) - 1)

static inline enum pm_state pm_state(const struct pm_entry *e) { return (enum pm_state)(e->meta & 3); }
static inline uint32_t pm_plen(const struct pm_entry *e) { return (uint32_t)(e->meta >> 2) & 0x1fff; }
static inline uint64_t pm_version(const struct pm_entry *e) { return e->meta >> 16; }

static inline struct pm_entry pm_make(enum pm_state st, uint32_t seg, uint32_t off,
				      uint32_t plen, uint64_t version)
{
	struct pm_entry e = {
		.seg = seg, .off = off,
		.meta = (uint64_t)st | ((uint64_t)(plen & 0x1fff) << 2) |
			((version & PM_VERSION_MASK) << 16),
	};
	return e;
}

/* Does a write or discard with version v supersede entry e? */
static inline int pm_newer(const struct pm_entry *e, uint64_t v)
{
	return (v & PM_VERSION_MASK) > pm_version(e);
}

#endif
