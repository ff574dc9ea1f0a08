/* shrink.c — a pool that gives memory back when its host needs it, and
 * drain.
 *
 * A donor is somebody's production machine: when its MemAvailable (or
 * its cgroup's headroom) falls below `reserve`, the memserver first
 * retires free slots (their pages go back to the kernel), then asks the
 * clients holding segments to move some away (NOTICE with a deadline),
 * retiring each slot as it is freed, down to `min-size`.  A client that
 * has not moved a noticed segment by the deadline loses it here (logged:
 * its other copies keep the data).  With room again — a band above
 * reserve, so the pool's own growth never pushes it back under — retired
 * slots are taken back, up to `size`.
 *
 * Drain is the same asking without the pressure: every device is told to
 * move everything, no ALLOC is served, and nothing is ever freed behind
 * a client's back (the operator waits or gives up; the data stays).
 */
#include "memserver.h"
#include "log.h"

#include <errno.h>
#include <string.h>

#define DRAIN_RESEND_MS 5000   /* a client that reconnected hears it again */
#define NOTICE_MIN_MS   1000

static struct ms_device *device_by_id(struct ms_devtab *d, uint32_t id)
{
	for (struct ms_device *dev = d->head; dev; dev = dev->next)
		if (dev->id == id)
			return dev;
	return NULL;
}

/* How many connections took the notice (0: the owner was not told). */
static int notify(struct ms_ctx *ctx, uint32_t owner, uint64_t deadline_ms,
		  uint16_t flags, const uint64_t *ids, uint16_t n)
{
	if (deadline_ms < NOTICE_MIN_MS)
		deadline_ms = NOTICE_MIN_MS;
	if (deadline_ms > FM_NOTICE_DEADLINE_MAX)
		deadline_ms = FM_NOTICE_DEADLINE_MAX;
	if (!ctx->notify.fn)
		return 0;
	return ctx->notify.fn(ctx->notify.arg, owner, (uint32_t)deadline_ms, flags, ids, n);
}

uint64_t ms_pool_current_bytes(const struct ms_ctx *ctx)
{
	return ms_segtab_pool_bytes(&ctx->segs);
}

enum ms_pool_state ms_elastic_state(const struct ms_ctx *ctx)
{
	if (ctx->el.draining)
		return MS_POOL_DRAINING;
	if (ctx->segs.retire_want)
		return MS_POOL_SHRINKING;
	return ctx->segs.nretired ? MS_POOL_SHRUNK : MS_POOL_FULL;
}

const char *ms_pool_state_name(enum ms_pool_state st)
{
	static const char *const names[] = { "full", "shrunk", "shrinking", "draining" };

	return (unsigned)st < 4 ? names[st] : "?";
}

int ms_elastic_alloc_ok(const struct ms_ctx *ctx)
{
	return ctx->el.draining || ctx->segs.retire_want ? -ENOSPC : 0;
}

#define SKIP_OWNERS 16

static int owner_skipped(const uint32_t *skip, int nskip, uint32_t owner)
{
	for (int i = 0; i < nskip; i++)
		if (skip[i] == owner)
			return 1;
	return 0;
}

/* Ask owners to move up to k segments not already asked for; returns
 * how many were asked for.  Only a notice that reached its owner starts
 * a deadline: segments of a device with no connection now (leased,
 * reconnecting, RDMA only) are never freed behind its back; they are
 * asked for again later (ask_missing). */
static uint32_t notice_segments(struct ms_ctx *ctx, uint32_t k, uint64_t now)
{
	struct ms_segtab *t = &ctx->segs;
	uint64_t ids[FM_NOTICE_MAX];
	uint32_t slots[FM_NOTICE_MAX], skip[SKIP_OWNERS];
	uint32_t asked = 0;
	int nskip = 0;

	while (asked < k && nskip < SKIP_OWNERS) {
		uint32_t owner = 0;
		uint16_t n = 0;

		/* From the top down: the same slots retire first every time. */
		for (uint32_t i = t->nslots; i-- > 0 && asked + n < k && n < FM_NOTICE_MAX; ) {
			struct ms_slot *s = &t->slots[i];

			if (!s->owner || s->notice_end || (owner && s->owner != owner) ||
			    owner_skipped(skip, nskip, s->owner))
				continue;
			owner = s->owner;
			slots[n] = i;
			ids[n++] = ms_segtab_id(t, i);
		}
		if (n == 0)
			break;
		if (notify(ctx, owner, ctx->el.notice_ms, 0, ids, n) == 0) {
			skip[nskip++] = owner;
			continue;
		}
		for (uint16_t j = 0; j < n; j++)
			t->slots[slots[j]].notice_end = now + ctx->el.notice_ms;
		if (!ctx->el.next_notice_end || now + ctx->el.notice_ms < ctx->el.next_notice_end)
			ctx->el.next_notice_end = now + ctx->el.notice_ms;
		asked += n;
	}
	ctx->el.noticed += asked;
	return asked;
}

/* The pool still wants more slots back than owners have been told
 * about (a notice reached no connection, or a device came back): ask. */
static void ask_missing(struct ms_ctx *ctx, uint64_t now)
{
	struct ms_segtab *t = &ctx->segs;
	uint32_t pending = 0;

	if (!t->retire_want)
		return;
	for (uint32_t i = 0; i < t->nslots; i++)
		pending += t->slots[i].owner && t->slots[i].notice_end;
	if (pending < t->retire_want)
		ctx->el.asked_n += notice_segments(ctx, t->retire_want - pending, now);
}

static void shrink(struct ms_ctx *ctx, uint32_t k, uint64_t now)
{
	struct ms_segtab *t = &ctx->segs;
	uint32_t freed = ms_segtab_retire_free(t, k), asked = 0;

	if (k > freed) {
		t->retire_want += k - freed;
		asked = notice_segments(ctx, k - freed, now);
		if (asked && !ctx->el.asked_at)
			ctx->el.asked_at = now;
		ctx->el.asked_n += asked;
	}
	log_info("pool: %llu MiB left on the host, reserve %llu MiB: gave %u free "
		 "segment(s) back, asked clients to move %u (pool now %llu MiB, "
		 "%u more to retire)", (unsigned long long)(ctx->el.last_avail >> 20),
		 (unsigned long long)(ctx->el.reserve >> 20), freed, asked,
		 (unsigned long long)(ms_segtab_pool_bytes(t) >> 20), t->retire_want);
}

/* Memory taken back per look: restoring faults in (and locks) every
 * page, in the event loop; a pool that shrank by many GiB grows back
 * over several looks instead of stalling every connection at once. */
#define GROW_MAX_BYTES  (256ull << 20)

static void grow(struct ms_ctx *ctx, uint32_t k)
{
	struct ms_segtab *t = &ctx->segs;
	uint32_t cap = (uint32_t)(GROW_MAX_BYTES / t->seg_max);
	uint32_t cancel = k < t->retire_want ? k : t->retire_want, back;

	if (cap == 0)
		cap = 1;
	if (k - cancel > cap)
		k = cancel + cap;

	t->retire_want -= cancel;
	back = ms_segtab_restore(t, k - cancel);
	if (back || cancel)
		log_info("pool: %llu MiB left on the host: took %u segment(s) back "
			 "(pool now %llu MiB)",
			 (unsigned long long)(ctx->el.last_avail >> 20), back,
			 (unsigned long long)(ms_segtab_pool_bytes(t) >> 20));
}

/* Noticed segments past their deadline: freed here while the pool still
 * wants slots back; otherwise the notice is simply over.  The table is
 * walked only once the earliest deadline is due (this runs every loop
 * turn). */
static void expire_notices(struct ms_ctx *ctx, uint64_t now)
{
	struct ms_segtab *t = &ctx->segs;
	uint64_t next = 0;

	if (!ctx->el.next_notice_end || now < ctx->el.next_notice_end)
		return;
	for (uint32_t i = 0; i < t->nslots; i++) {
		struct ms_slot *s = &t->slots[i];
		struct ms_device *dev;
		uint64_t id;
		uint32_t owner;

		if (!s->notice_end)
			continue;
		if (now < s->notice_end) {
			if (!next || s->notice_end < next)
				next = s->notice_end;
			continue;
		}
		if (!t->retire_want) {
			s->notice_end = 0;
			continue;
		}
		id = ms_segtab_id(t, i);
		owner = ms_segtab_force_free(t, i);
		dev = device_by_id(&ctx->devs, owner);
		log_warn("pool: client %s did not move segment %016llx by its "
			 "deadline: freed it (its other copies keep the data)",
			 dev ? dev->client->name : "?", (unsigned long long)id);
		if (dev)
			ms_devtab_count(dev, -1);
		for (struct ms_free_hook *k = ctx->free_hooks; k; k = k->next)
			k->fn(k->arg, id);
		ctx->el.forced++;
	}
	ctx->el.next_notice_end = next;
}

static void drain_tick(struct ms_ctx *ctx, uint64_t now)
{
	if (now < ctx->el.drain_next_notice || ctx->segs.nused == 0)
		return;
	ctx->el.drain_next_notice = now + DRAIN_RESEND_MS;
	notify(ctx, 0, ctx->el.drain_end > now ? ctx->el.drain_end - now : 0,
	       FM_NOTICE_ALL, NULL, 0);
}

static void pressure_tick(struct ms_ctx *ctx, uint64_t now)
{
	struct ms_elastic *el = &ctx->el;
	struct ms_segtab *t = &ctx->segs;
	struct ms_shrink_policy pol = {
		.reserve = el->reserve, .min_bytes = el->min_bytes,
		.max_bytes = (uint64_t)t->nslots * t->seg_max, .seg_max = t->seg_max,
	};
	struct ms_pressure p;
	uint32_t cur, target;
	int rc;

	el->next_check = now + el->interval_ms;
	rc = ms_pressure_read(el->root, &p);
	if (rc < 0) {
		if (!el->warned_root++)
			log_warn("pool: cannot read %s/proc/meminfo: %s; reserve "
				 "not enforced", el->root, strerror(-rc));
		return;
	}
	el->last_avail = p.avail;
	if (!el->min_avail_seen || p.avail < el->min_avail_seen)
		el->min_avail_seen = p.avail;
	cur = t->nslots - t->nretired - t->retire_want;
	target = ms_pressure_target(&pol, p.avail, cur);
	if (target < cur)
		shrink(ctx, cur - target, now);
	else if (target > cur && !el->draining)
		grow(ctx, target - cur);
	else
		ask_missing(ctx, now);
}

/* Say once when what was asked for is all back: how long the clients
 * took is the number an operator wants. */
static void shrink_done(struct ms_ctx *ctx, uint64_t now)
{
	if (!ctx->el.asked_at || ctx->segs.retire_want)
		return;
	log_info("pool: the %u segment(s) asked for are back after %llu ms (%llu freed "
		 "at a deadline so far); pool now %llu MiB", ctx->el.asked_n,
		 (unsigned long long)(now - ctx->el.asked_at),
		 (unsigned long long)ctx->el.forced,
		 (unsigned long long)(ms_segtab_pool_bytes(&ctx->segs) >> 20));
	ctx->el.asked_at = 0;
	ctx->el.asked_n = 0;
}

void ms_elastic_tick(struct ms_ctx *ctx, uint64_t now)
{
	if (ctx->el.draining)
		drain_tick(ctx, now);
	expire_notices(ctx, now);
	shrink_done(ctx, now);
	if (ctx->el.reserve && now >= ctx->el.next_check)
		pressure_tick(ctx, now);
}

void ms_elastic_drain(struct ms_ctx *ctx, uint32_t deadline_ms)
{
	uint64_t now = ctx->now_ms ? ctx->now_ms() : 0;

	if (!ctx->el.draining)
		log_info("drain: asked to move every segment away within %u ms "
			 "(%u segment(s) held); refusing new ones", deadline_ms,
			 ctx->segs.nused);
	ctx->el.draining = 1;
	ctx->el.drain_end = now + deadline_ms;
	ctx->el.drain_next_notice = 0;
	drain_tick(ctx, now);
}

void ms_elastic_attached(struct ms_ctx *ctx, struct ms_device *dev)
{
	uint64_t now;

	if (!dev || !dev->segs)
		return;
	now = ctx->now_ms ? ctx->now_ms() : 0;
	if (!ctx->el.draining) {
		ask_missing(ctx, now);   /* it may be the one not yet told */
		return;
	}
	notify(ctx, dev->id, ctx->el.drain_end > now ? ctx->el.drain_end - now : 0,
	       FM_NOTICE_ALL, NULL, 0);
}
