/* elastic_metrics.c — the elastic pool's numbers for /metrics (apart
 * from shrink.c, so that the session fuzzers link shrink.c without the
 * metrics code). */
#include "memserver.h"
#include "metrics_pool.h"

void ms_elastic_publish(const struct ms_ctx *ctx, struct metrics_pool_snap *snap)
{
	struct metrics_pool_elastic el = {
		.size_max = (uint64_t)ctx->segs.nslots * ctx->segs.seg_max,
		.reserve = ctx->el.reserve,
		.host_avail = ctx->el.last_avail,
		.noticed = ctx->el.noticed,
		.forced = ctx->el.forced,
		.state = (unsigned)ms_elastic_state(ctx),
	};

	metrics_pool_publish_elastic(snap, &el);
}
