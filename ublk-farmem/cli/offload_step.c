/* offload_step.c — how much to reclaim from one cgroup this interval.
 *
 * Proportional to memory.current so a big cgroup and a small one both
 * lose about the same share per interval, and scaled by how far the
 * pressure still is from the target: at zero pressure the full
 * max-step, at the target nothing.  Past the target it backs off
 * entirely and lets the kernel fault the hot pages back in; the next
 * quiet interval resumes.  The floor keeps what cannot be reclaimed
 * (and a margin) out of the arithmetic. */
#include "offload.h"

double offload_pressure_share(uint64_t prev_total_us, uint64_t total_us,
			      uint64_t elapsed_us)
{
	double share;

	if (!elapsed_us || total_us < prev_total_us)
		return 0.0;
	share = (double)(total_us - prev_total_us) / (double)elapsed_us;
	/* "some" can exceed wall time only by rounding between two reads. */
	return share > 1.0 ? 1.0 : share;
}

uint64_t offload_step_bytes(const struct offload_sample *s, double target,
			    double max_step)
{
	double room, want;
	uint64_t step, above;

	if (target <= 0 || max_step <= 0 || s->pressure >= target ||
	    s->current <= s->floor)
		return 0;
	room = 1.0 - s->pressure / target;
	want = (double)s->current * max_step * room;
	if (want < OFFLOAD_PAGE)
		return 0;
	step = (uint64_t)want;
	above = s->current - s->floor;
	if (step > above)
		step = above;
	step -= step % OFFLOAD_PAGE;
	return step;
}
