/* fuzz_session.c — libFuzzer target for the memserver's request handling.
 *
 * The input is what a hostile peer sends: byte 0 chooses whether the
 * session starts authenticated (the fuzzer cannot forge a MAC, and the
 * requests after authentication are where the segment checks live),
 * the rest is a stream of frames cut exactly as the server cuts them.
 * Every reply the session writes must be a well-formed reply to the
 * request before it, and the pool must never be touched out of bounds
 * (ASan guards the pool's edges: it is its own allocation).
 */
#include "log.h"
#include "memserver/memserver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEG  (16u << 10)
#define NSEG 8

static uint64_t now_ms;
static uint64_t clock_fn(void) { return now_ms; }

static void check_replies(const struct ms_buf *out, const struct fm_hdr *req,
			  size_t before)
{
	size_t at = before;

	while (at < out->len) {
		struct fm_hdr h;
		const uint8_t *p = out->data + out->head + at;

		if (out->len - at < FM_HDR_SIZE ||
		    fm_hdr_decode(p, out->len - at, &h) != 0 ||
		    h.op != (req->op | FM_OP_REPLY) || h.tag != req->tag ||
		    out->len - at < FM_HDR_SIZE + (size_t)h.len)
			abort();
		at += FM_HDR_SIZE + h.len;
	}
}

static void run_stream(struct ms_ctx *ctx, struct ms_session *s,
		       const uint8_t *d, size_t n)
{
	struct ms_buf out = { 0 };

	while (n >= FM_HDR_SIZE) {
		struct fm_hdr h;
		uint8_t *payload;
		size_t before;
		int rc;

		if (fm_hdr_decode(d, n, &h) != 0 ||
		    h.len > ms_session_max_payload(s) ||
		    n - FM_HDR_SIZE < h.len)
			break;
		/* Exactly h.len bytes of its own, as ASan should see it. */
		payload = malloc(h.len ? h.len : 1);
		if (!payload)
			break;
		memcpy(payload, d + FM_HDR_SIZE, h.len);
		before = out.len;
		rc = ms_session_frame(ctx, s, &h, payload, &out);
		free(payload);
		check_replies(&out, &h, before);
		d += FM_HDR_SIZE + h.len;
		n -= FM_HDR_SIZE + h.len;
		/* Drop sent bytes now and then, like the socket would. */
		if (out.len > 65536)
			ms_buf_consume(&out, out.len);
		now_ms += 10;
		ms_devtab_expire(&ctx->devs, &ctx->segs, now_ms);
		if (rc != 0)
			break;
	}
	ms_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ms_ctx ctx;
	static struct ms_quota quota;
	static int ready;
	uint8_t *pool;
	struct ms_session s;
	const uint8_t uuid[FM_UUID_LEN] = { 1, 2, 3 };
	struct ms_device *o = NULL;
	uint64_t other_id = 0;

	if (!ready) {
		log_init("fuzz_session", LOG_LVL_ERR);
		if (fm_auth_init() < 0)
			abort();
		ready = 1;
	}
	if (size < 1)
		return 0;
	pool = calloc(NSEG, SEG);  /* the real pool is fresh anonymous memory */
	if (!pool)
		return 0;
	memset(&ctx, 0, sizeof(ctx));
	memset(ctx.secret.bytes, 'k', 32);
	ctx.secret.len = 32;
	ctx.now_ms = clock_fn;
	ctx.boot_id = 0x600d;
	ms_devtab_init(&ctx.devs, 50);
	if (ms_segtab_init(&ctx.segs, pool, SEG * NSEG, SEG) != 0)
		abort();
	/* A quota of a few segments, so -EDQUOT paths are reached too. */
	quota.dflt.kind = MS_LIMIT_BYTES;
	quota.dflt.value = 3 * SEG;
	ms_devtab_set_quota(&ctx.devs, &quota, NSEG, SEG);
	ms_session_init(&s, "fuzz");
	if (data[0] & 1) {
		/* What a successful AUTH leaves behind. */
		memcpy(s.auth.uuid, uuid, FM_UUID_LEN);
		snprintf(s.auth.name, sizeof(s.auth.name), "fuzz");
		s.dev = ms_devtab_attach(&ctx.devs, "fuzz", uuid);
		s.state = MS_READY;
		ctx.stats.clients++;
		/* Another device's segment, which must stay out of reach:
		 * another client's device of the very same uuid (bit 2), or
		 * another uuid of ours. */
		if (data[0] & 2) {
			const uint8_t other[FM_UUID_LEN] = { 9 };

			o = (data[0] & 4) ? ms_devtab_attach(&ctx.devs, "other", uuid)
					  : ms_devtab_attach(&ctx.devs, "fuzz", other);
			if (o && ms_segtab_alloc(&ctx.segs, o->id, SEG, &other_id) == 0)
				ms_devtab_count(o, 1);
		}
	}
	run_stream(&ctx, &s, data + 1, size - 1);
	if (o && o->segs) {
		uint8_t *p;

		/* Still there, and still all zero: nothing reached it. */
		if (ms_segtab_range(&ctx.segs, o->id, other_id, 0, SEG, &p) != 0)
			abort();
		for (size_t i = 0; i < SEG; i++)
			if (p[i])
				abort();
	}
	ms_session_end(&ctx, &s);
	ms_devtab_fini(&ctx.devs);
	ms_segtab_fini(&ctx.segs);
	free(pool);
	return 0;
}
