/* fuzz_chan.c — libFuzzer target for the channel around a memserver
 * session (memserver/session_chan.c, common/chan.c).
 *
 * Each input first runs a real HELLO/AUTH, so the channel is up with
 * keys the harness knows.  Byte 0 then chooses how the rest, a stream
 * of frames cut as the server cuts them, gets its tags:
 *   bit 0 set    the harness tags each frame with the client's key (the
 *                fuzzer reaches the requests behind the channel)
 *   bit 0 clear  the tags are the input's own bytes after each payload
 *                (the fuzzer attacks the check: it must fail, and fail
 *                with nothing appended and nothing done)
 * Every reply must be exactly one frame whose tag checks under the
 * client's receive key, in order.
 */
#include "log.h"
#include "memserver/memserver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SEG  (16u << 10)
#define NSEG 8
#define MAX_FRAME (FM_HDR_SIZE + FM_MAX_PAYLOAD + FM_CHAN_TAG_LEN)

static uint64_t clock_fn(void) { return 1000; }

/* The reply the session just appended, checked and taken off. */
static void take_reply(struct ms_buf *out, struct fm_chan *client, int tagged)
{
	struct fm_hdr h;
	const uint8_t *p = out->data + out->head;
	size_t n;

	if (out->len == 0)
		return;
	if (out->len < FM_HDR_SIZE || fm_hdr_decode(p, out->len, &h) != 0)
		abort();
	n = FM_HDR_SIZE + h.len;
	if (out->len != n + (tagged ? FM_CHAN_TAG_LEN : 0))
		abort();
	if (tagged && fm_chan_check_frame(&client->rx, p, n, p + n) != 0)
		abort();
	ms_buf_consume(out, out->len);
}

static int send_frame(struct ms_ctx *ctx, struct ms_session *s, struct ms_buf *out,
		      struct fm_chan *client, uint8_t *f, int seal)
{
	struct fm_hdr h;
	size_t n;
	int rc, tagged = s->chan.up, good = 1;
	uint64_t rx_before = s->chan.rx.seq;

	if (fm_hdr_decode(f, FM_HDR_SIZE, &h) != 0)
		return -EPROTO;
	n = FM_HDR_SIZE + h.len;
	if (tagged) {
		/* What the right tag is: sealed in, or compared with the
		 * input's own. */
		struct iovec iov = { f, n };
		uint8_t want[FM_CHAN_TAG_LEN];

		fm_chan_seal_iov(&client->tx, &iov, 1, want);
		if (seal)
			memcpy(f + n, want, sizeof(want));
		else
			good = memcmp(want, f + n, sizeof(want)) == 0;
	}
	rc = ms_session_wire_frame(ctx, s, &h, f, out);
	if (!good && rc != -EBADMSG)
		abort();   /* a wrong tag got through */
	if (rc == -EBADMSG) {
		/* Refused: nothing appended, the numbering did not move. */
		if (out->len != 0 || s->chan.rx.seq != rx_before || good)
			abort();
		return rc;
	}
	if (rc >= 0 || out->len)
		take_reply(out, client, tagged);
	return rc;
}

static int handshake(struct ms_ctx *ctx, struct ms_session *s, struct ms_buf *out,
		     struct fm_chan *client, uint8_t *f)
{
	struct fm_hello_req hq = { .version = FM_PROTO_VERSION, .uuid = { 1, 2, 3 },
				   .name = "fuzz" };
	struct fm_hello_rep hr;
	struct fm_auth_session a = { .name = "fuzz", .uuid = { 1, 2, 3 } };
	struct fm_identity id;
	struct fm_hdr h = { .op = FM_OP_HELLO };
	int rc = -1;

	memset(hq.client_nonce, 0x33, FM_NONCE_LEN);
	h.len = (uint32_t)fm_hello_req_encode(f + FM_HDR_SIZE, &hq);
	fm_hdr_encode(f, &h);
	if (h.len == 0 || ms_session_wire_frame(ctx, s, &h, f, out) != 0 ||
	    fm_hello_rep_decode(out->data + out->head + FM_HDR_SIZE,
				out->len - FM_HDR_SIZE, &hr) != 0 ||
	    fm_identity_derive(&ctx->secret, "fuzz", &id) != 0)
		return -1;
	ms_buf_consume(out, out->len);
	memcpy(a.key, id.key, FM_KEY_LEN);
	memcpy(a.client_nonce, hq.client_nonce, FM_NONCE_LEN);
	memcpy(a.server_nonce, hr.server_nonce, FM_NONCE_LEN);
	a.boot_id = hr.boot_id;
	h = (struct fm_hdr){ .op = FM_OP_AUTH, .len = FM_MAC_LEN };
	fm_hdr_encode(f, &h);
	fm_auth_mac(&a, FM_AUTH_CLIENT, f + FM_HDR_SIZE);
	if (ms_session_wire_frame(ctx, s, &h, f, out) == 0 && s->chan.up) {
		ms_buf_consume(out, out->len);
		fm_chan_init(client, FM_CHAN_CLIENT, id.key, FM_KEY_LEN,
			     hq.client_nonce, hr.server_nonce);
		rc = 0;
	}
	fm_wipe(&id, sizeof(id));
	fm_wipe(&a, sizeof(a));
	return rc;
}

static void run_stream(struct ms_ctx *ctx, struct ms_session *s, struct ms_buf *out,
		       struct fm_chan *client, uint8_t *f, const uint8_t *d, size_t n,
		       int seal)
{
	while (n >= FM_HDR_SIZE) {
		struct fm_hdr h;
		size_t take, trailer;

		if (fm_hdr_decode(d, n, &h) != 0 || h.len > ms_session_max_payload(s))
			break;
		/* Sealed mode: the input has no tag, the harness adds it. */
		trailer = seal ? 0 : ms_session_trailer(s);
		take = FM_HDR_SIZE + h.len + trailer;
		if (n < take)
			break;
		memcpy(f, d, take);
		if (send_frame(ctx, s, out, client, f, seal) != 0)
			break;
		d += take;
		n -= take;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ms_ctx ctx;
	static uint8_t *frame;
	static int ready;
	struct ms_session s;
	struct ms_buf out = { 0 };
	struct fm_chan client;
	uint8_t *pool;

	if (!ready) {
		log_init("fuzz_chan", LOG_LVL_ERR);
		frame = malloc(MAX_FRAME);
		if (fm_auth_init() < 0 || !frame)
			abort();
		ready = 1;
	}
	if (size < 1)
		return 0;
	pool = calloc(NSEG, SEG);
	if (!pool)
		return 0;
	memset(&ctx, 0, sizeof(ctx));
	memset(ctx.secret.bytes, 'k', 32);
	ctx.secret.len = 32;
	ctx.now_ms = clock_fn;
	ctx.boot_id = 0x5eed;
	ms_devtab_init(&ctx.devs, 50);
	if (ms_segtab_init(&ctx.segs, pool, SEG * NSEG, SEG) != 0)
		abort();
	ms_session_init(&s, "fuzz");
	if (handshake(&ctx, &s, &out, &client, frame) != 0)
		abort();
	run_stream(&ctx, &s, &out, &client, frame, data + 1, size - 1, data[0] & 1);
	ms_session_end(&ctx, &s);
	ms_buf_free(&out);
	ms_devtab_fini(&ctx.devs);
	ms_segtab_fini(&ctx.segs);
	free(pool);
	return 0;
}
