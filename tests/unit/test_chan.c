/* test_chan.c — the protected channel's tags (common/chan.c) and the
 * memserver's use of them (memserver/session_chan.c).
 *
 * A client and a server side derived from the same handshake must
 * accept each other's frames in order and nothing else: a flipped bit,
 * a replay, a reorder, a frame from the other direction or from another
 * session all fail, and a failed check does not move the numbering.
 * Then a real session: the AUTH reply goes out plain, the next reply is
 * tagged, and an injected FREE is refused without freeing anything.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "chan.h"
#include "log.h"
#include "memserver/memserver.h"
#include "protocol.h"
#include "tap.h"

static const uint8_t key[] = "a secret of thirty-two bytes....";

struct pair {
	struct fm_chan client, server;
	uint8_t cn[FM_NONCE_LEN], sn[FM_NONCE_LEN];
};

static void pair_init(struct pair *p)
{
	fm_random(p->cn, sizeof(p->cn));
	fm_random(p->sn, sizeof(p->sn));
	fm_chan_init(&p->client, FM_CHAN_CLIENT, key, sizeof(key) - 1, p->cn, p->sn);
	fm_chan_init(&p->server, FM_CHAN_SERVER, key, sizeof(key) - 1, p->cn, p->sn);
}

/* A frame: a header of op/tag and a payload of fill bytes. */
static size_t frame_make(uint8_t *buf, uint8_t op, uint32_t tag, uint8_t fill,
			 uint32_t len)
{
	struct fm_hdr h = { .op = op, .tag = tag, .len = len };

	fm_hdr_encode(buf, &h);
	memset(buf + FM_HDR_SIZE, fill, len);
	return FM_HDR_SIZE + len;
}

static int t_derive_directions_differ(void)
{
	uint8_t cn[FM_NONCE_LEN] = { 1 }, sn[FM_NONCE_LEN] = { 2 };
	uint8_t c2s[FM_CHAN_KEY_LEN], s2c[FM_CHAN_KEY_LEN];
	uint8_t c2s_b[FM_CHAN_KEY_LEN], s2c_b[FM_CHAN_KEY_LEN];

	fm_chan_derive(key, sizeof(key) - 1, cn, sn, c2s, s2c);
	CHECK(memcmp(c2s, s2c, sizeof(c2s)) != 0);
	/* Deterministic: both sides get the same. */
	fm_chan_derive(key, sizeof(key) - 1, cn, sn, c2s_b, s2c_b);
	CHECK(memcmp(c2s, c2s_b, sizeof(c2s)) == 0);
	CHECK(memcmp(s2c, s2c_b, sizeof(s2c)) == 0);
	/* Each nonce and the key count. */
	sn[0] ^= 1;
	fm_chan_derive(key, sizeof(key) - 1, cn, sn, c2s_b, s2c_b);
	CHECK(memcmp(c2s, c2s_b, sizeof(c2s)) != 0);
	sn[0] ^= 1;
	cn[5] ^= 1;
	fm_chan_derive(key, sizeof(key) - 1, cn, sn, c2s_b, s2c_b);
	CHECK(memcmp(c2s, c2s_b, sizeof(c2s)) != 0);
	cn[5] ^= 1;
	fm_chan_derive(key, sizeof(key) - 2, cn, sn, c2s_b, s2c_b);
	CHECK(memcmp(c2s, c2s_b, sizeof(c2s)) != 0);
	return 0;
}

static int t_good_frames_accepted_in_order(void)
{
	struct pair p;
	uint8_t f[FM_HDR_SIZE + FM_PAGE], tag[FM_CHAN_TAG_LEN];

	pair_init(&p);
	for (uint32_t i = 0; i < 100; i++) {
		size_t n = frame_make(f, FM_OP_WRITE, i, (uint8_t)i, i * 41 % FM_PAGE);
		struct iovec iov = { f, n };

		fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
		CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == 0);
		/* And the other way. */
		fm_chan_seal_iov(&p.server.tx, &iov, 1, tag);
		CHECK(fm_chan_check_frame(&p.client.rx, f, n, tag) == 0);
	}
	CHECK(p.server.rx.seq == 100 && p.client.tx.seq == 100);
	return 0;
}

static int t_scattered_equals_contiguous(void)
{
	struct pair p;
	uint8_t f[FM_HDR_SIZE + FM_PAGE], tag[FM_CHAN_TAG_LEN];
	size_t n;
	struct iovec iov[3];

	pair_init(&p);
	n = frame_make(f, FM_OP_WRITE, 9, 0x5a, FM_PAGE);
	iov[0] = (struct iovec){ f, 40 };
	iov[1] = (struct iovec){ f + 40, 0 };
	iov[2] = (struct iovec){ f + 40, n - 40 };
	fm_chan_seal_iov(&p.client.tx, iov, 3, tag);
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == 0);
	return 0;
}

static int t_flipped_bit_refused(void)
{
	struct pair p;
	uint8_t f[FM_HDR_SIZE + 64], tag[FM_CHAN_TAG_LEN];
	size_t n;

	pair_init(&p);
	n = frame_make(f, FM_OP_FREE, 3, 0x11, 8);
	struct iovec iov = { f, n };

	fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
	/* Every bit of the frame counts: header, payload, and the tag. */
	for (size_t bit = 0; bit < n * 8; bit += 7) {
		f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == -EBADMSG);
		f[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	tag[15] ^= 0x80;
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == -EBADMSG);
	tag[15] ^= 0x80;
	/* Failures did not move the numbering: the real frame still checks. */
	CHECK(p.server.rx.seq == 0);
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == 0);
	/* A frame one byte shorter (a truncated payload) fails too. */
	fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
	CHECK(fm_chan_check_frame(&p.server.rx, f, n - 1, tag) == -EBADMSG);
	return 0;
}

static int t_replay_refused(void)
{
	struct pair p;
	uint8_t f[FM_HDR_SIZE + FM_PAGE], tag[FM_CHAN_TAG_LEN];
	size_t n;

	pair_init(&p);
	n = frame_make(f, FM_OP_WRITE, 1, 0x77, FM_PAGE);
	struct iovec iov = { f, n };

	fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == 0);
	/* The same frame and tag again. */
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == -EBADMSG);
	return 0;
}

static int t_reorder_and_drop_refused(void)
{
	struct pair p;
	uint8_t a[FM_HDR_SIZE + 16], b[FM_HDR_SIZE + 16], c[FM_HDR_SIZE + 16];
	uint8_t ta[FM_CHAN_TAG_LEN], tb[FM_CHAN_TAG_LEN], tc[FM_CHAN_TAG_LEN];
	size_t na, nb, nc;

	pair_init(&p);
	na = frame_make(a, FM_OP_READ, 1, 1, 16);
	nb = frame_make(b, FM_OP_READ, 2, 2, 16);
	nc = frame_make(c, FM_OP_READ, 3, 3, 16);
	struct iovec ia = { a, na }, ib = { b, nb }, ic = { c, nc };

	fm_chan_seal_iov(&p.client.tx, &ia, 1, ta);
	fm_chan_seal_iov(&p.client.tx, &ib, 1, tb);
	fm_chan_seal_iov(&p.client.tx, &ic, 1, tc);
	/* b before a: refused. */
	CHECK(fm_chan_check_frame(&p.server.rx, b, nb, tb) == -EBADMSG);
	CHECK(fm_chan_check_frame(&p.server.rx, a, na, ta) == 0);
	/* b dropped, c next: refused. */
	CHECK(fm_chan_check_frame(&p.server.rx, c, nc, tc) == -EBADMSG);
	CHECK(fm_chan_check_frame(&p.server.rx, b, nb, tb) == 0);
	CHECK(fm_chan_check_frame(&p.server.rx, c, nc, tc) == 0);
	return 0;
}

static int t_other_direction_refused(void)
{
	struct pair p;
	uint8_t f[FM_HDR_SIZE + 8], tag[FM_CHAN_TAG_LEN];
	size_t n;

	pair_init(&p);
	n = frame_make(f, FM_OP_FREE | FM_OP_REPLY, 5, 0, 0);
	struct iovec iov = { f, n };

	/* A server reply (number 0) reflected back to the server as if
	 * the client sent it, also number 0. */
	fm_chan_seal_iov(&p.server.tx, &iov, 1, tag);
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == -EBADMSG);
	/* The client's own frame fed back to the client. */
	fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
	CHECK(fm_chan_check_frame(&p.client.rx, f, n, tag) == -EBADMSG);
	return 0;
}

static int t_other_session_refused(void)
{
	struct pair p, q;
	uint8_t f[FM_HDR_SIZE + 8], tag[FM_CHAN_TAG_LEN];
	size_t n;

	pair_init(&p);
	pair_init(&q);   /* same key, fresh nonces */
	n = frame_make(f, FM_OP_FREE, 5, 0x42, 8);
	struct iovec iov = { f, n };

	fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
	CHECK(fm_chan_check_frame(&q.server.rx, f, n, tag) == -EBADMSG);
	CHECK(fm_chan_check_frame(&p.server.rx, f, n, tag) == 0);
	/* Same nonces, another key (another client's, or a wrong secret). */
	fm_chan_init(&q.server, FM_CHAN_SERVER, key, sizeof(key) - 2, p.cn, p.sn);
	fm_chan_seal_iov(&p.client.tx, &iov, 1, tag);
	CHECK(fm_chan_check_frame(&q.server.rx, f, n, tag) == -EBADMSG);
	return 0;
}

static int t_wipe_clears_keys(void)
{
	struct pair p;
	static const uint8_t zero[FM_CHAN_KEY_LEN];

	pair_init(&p);
	CHECK(p.client.up);
	fm_chan_wipe(&p.client);
	CHECK(!p.client.up);
	CHECK(memcmp(p.client.tx.key, zero, sizeof(zero)) == 0);
	CHECK(memcmp(p.client.rx.key, zero, sizeof(zero)) == 0);
	return 0;
}

/* ---- a memserver session through session_chan.c ---- */

#define POOL (1u << 20)
#define SEG  (64u << 10)

struct rig {
	struct ms_ctx ctx;
	uint8_t *pool;
	struct ms_session s;
	struct ms_buf out;
	struct fm_chan client;
};

static uint64_t fixed_now(void) { return 1000; }

/* Send one frame (tagged when the client's channel is up) and take the
 * reply off the queue, checking its tag when tagged.  Returns the
 * session's result; *rh the reply's header when one came. */
static int rig_frame(struct rig *r, uint8_t op, uint32_t tag, const uint8_t *pl,
		     uint32_t len, struct fm_hdr *rh, uint8_t *rpl, int tamper)
{
	uint8_t f[FM_HDR_SIZE + 128 + FM_CHAN_TAG_LEN];
	struct fm_hdr h = { .op = op, .tag = tag, .len = len };
	size_t n = FM_HDR_SIZE + len;
	int rc;

	if (len > 128)
		return -EINVAL;
	fm_hdr_encode(f, &h);
	memcpy(f + FM_HDR_SIZE, pl, len);
	if (r->client.up) {
		struct iovec iov = { f, n };

		fm_chan_seal_iov(&r->client.tx, &iov, 1, f + n);
	}
	if (tamper)
		f[n - 1] ^= 1;
	rc = ms_session_wire_frame(&r->ctx, &r->s, &h, f, &r->out);
	if (rc < 0 || r->out.len == 0)
		return rc;
	const uint8_t *o = r->out.data + r->out.head;

	if (fm_hdr_decode(o, r->out.len, rh) < 0 || rh->len > 128)
		return -EPROTO;
	memcpy(rpl, o + FM_HDR_SIZE, rh->len);
	n = FM_HDR_SIZE + rh->len;
	if (r->client.up) {
		if (r->out.len != n + FM_CHAN_TAG_LEN ||
		    fm_chan_check_frame(&r->client.rx, o, n, o + n) < 0)
			return -EBADMSG;
		n += FM_CHAN_TAG_LEN;
	} else if (r->out.len != n) {
		return -EPROTO;
	}
	ms_buf_consume(&r->out, n);
	return rc;
}

/* HELLO and AUTH as client "alice" (protocol.h), the channel up after. */
static int rig_open(struct rig *r)
{
	struct fm_hello_req hq = { .version = FM_PROTO_VERSION, .uuid = { 7 },
				   .name = "alice" };
	struct fm_hello_rep hr;
	struct fm_auth_session a = { .name = "alice", .uuid = { 7 } };
	struct fm_identity id;
	uint8_t pl[128], rpl[128], mac[FM_MAC_LEN];
	struct fm_hdr rh;
	size_t n;

	memset(r, 0, sizeof(*r));
	r->pool = calloc(1, POOL);
	if (!r->pool || ms_segtab_init(&r->ctx.segs, r->pool, POOL, SEG))
		return -1;
	ms_devtab_init(&r->ctx.devs, 60000);
	memcpy(r->ctx.secret.bytes, key, sizeof(key) - 1);
	r->ctx.secret.len = sizeof(key) - 1;
	r->ctx.now_ms = fixed_now;
	r->ctx.boot_id = 0x1234;
	ms_session_init(&r->s, "test");
	fm_random(hq.client_nonce, FM_NONCE_LEN);
	n = fm_hello_req_encode(pl, &hq);
	if (n == 0 || rig_frame(r, FM_OP_HELLO, 0, pl, (uint32_t)n, &rh, rpl, 0) ||
	    fm_hello_rep_decode(rpl, rh.len, &hr))
		return -1;
	if (ms_session_trailer(&r->s) != 0 ||
	    fm_identity_derive(&r->ctx.secret, "alice", &id) < 0)
		return -1;
	memcpy(a.key, id.key, FM_KEY_LEN);
	memcpy(a.client_nonce, hq.client_nonce, FM_NONCE_LEN);
	memcpy(a.server_nonce, hr.server_nonce, FM_NONCE_LEN);
	a.boot_id = hr.boot_id;
	fm_auth_mac(&a, FM_AUTH_CLIENT, mac);
	/* The AUTH reply is plain: the client's channel starts after it. */
	if (rig_frame(r, FM_OP_AUTH, 0, mac, FM_MAC_LEN, &rh, rpl, 0) || rh.status)
		return -1;
	/* Keyed by alice's key, not the cluster secret. */
	fm_chan_init(&r->client, FM_CHAN_CLIENT, id.key, FM_KEY_LEN, hq.client_nonce,
		     hr.server_nonce);
	fm_wipe(&id, sizeof(id));
	return ms_session_trailer(&r->s) == FM_CHAN_TAG_LEN ? 0 : -1;
}

static void rig_close(struct rig *r)
{
	ms_session_end(&r->ctx, &r->s);
	ms_buf_free(&r->out);
	ms_devtab_fini(&r->ctx.devs);
	ms_segtab_fini(&r->ctx.segs);
	free(r->pool);
}

static int t_session_tags_after_auth(void)
{
	struct rig r;
	uint8_t pl[8], rpl[128];
	struct fm_hdr rh;

	CHECK(rig_open(&r) == 0);
	/* A tagged PING is answered with a tagged echo. */
	memcpy(pl, "ping1234", 8);
	CHECK(rig_frame(&r, FM_OP_PING, 1, pl, 8, &rh, rpl, 0) == 0);
	CHECK(rh.status == 0 && rh.len == 8 && memcmp(rpl, "ping1234", 8) == 0);
	CHECK(rig_frame(&r, FM_OP_PING, 2, pl, 8, &rh, rpl, 0) == 0);
	rig_close(&r);
	return 0;
}

static int t_session_refuses_injected_free(void)
{
	struct rig r;
	uint8_t pl[8], rpl[128];
	struct fm_hdr rh;
	struct fm_alloc_rep a;
	uint64_t before;

	CHECK(rig_open(&r) == 0);
	put_le32(pl, SEG);
	CHECK(rig_frame(&r, FM_OP_ALLOC, 1, pl, 4, &rh, rpl, 0) == 0);
	CHECK(rh.status == 0 && fm_alloc_rep_decode(rpl, rh.len, &a) == 0);
	CHECK(r.ctx.segs.nused == 1);
	before = fm_chan_rejected();
	/* A FREE without the channel's tag (an attacker's, no key). */
	fm_u64_encode(pl, a.seg_id);
	struct fm_chan saved = r.client;

	r.client.up = 0;
	{
		uint8_t f[FM_HDR_SIZE + 8 + FM_CHAN_TAG_LEN] = { 0 };
		struct fm_hdr h = { .op = FM_OP_FREE, .tag = 2, .len = 8 };

		fm_hdr_encode(f, &h);
		memcpy(f + FM_HDR_SIZE, pl, 8);
		CHECK(ms_session_wire_frame(&r.ctx, &r.s, &h, f, &r.out) == -EBADMSG);
	}
	r.client = saved;
	CHECK(r.ctx.segs.nused == 1);       /* nothing freed */
	CHECK(r.out.len == 0);              /* no reply */
	CHECK(fm_chan_rejected() == before + 1);
	/* A tampered one fails too; the rightly tagged one works. */
	CHECK(rig_frame(&r, FM_OP_FREE, 2, pl, 8, &rh, rpl, 1) == -EBADMSG);
	CHECK(r.ctx.segs.nused == 1);
	r.client.tx.seq--;                  /* the tampered try used a number */
	CHECK(rig_frame(&r, FM_OP_FREE, 2, pl, 8, &rh, rpl, 0) == 0);
	CHECK(rh.status == 0 && r.ctx.segs.nused == 0);
	rig_close(&r);
	return 0;
}

static const struct tap_case cases[] = {
	{ "key derivation: directions, nonces and key all count", t_derive_directions_differ },
	{ "good frames accepted in order, both ways", t_good_frames_accepted_in_order },
	{ "a scattered frame tags as the contiguous one", t_scattered_equals_contiguous },
	{ "a flipped bit in header, payload or tag is refused", t_flipped_bit_refused },
	{ "a replayed frame is refused", t_replay_refused },
	{ "reordered or dropped frames are refused", t_reorder_and_drop_refused },
	{ "a frame from the other direction is refused", t_other_direction_refused },
	{ "a frame from another session is refused", t_other_session_refused },
	{ "wipe forgets the keys", t_wipe_clears_keys },
	{ "session: plain until AUTH, tagged after", t_session_tags_after_auth },
	{ "session: an injected FREE is refused, nothing freed", t_session_refuses_injected_free },
};

int main(void)
{
	log_init("test_chan", LOG_LVL_ERR);
	if (fm_auth_init() < 0)
		return 1;
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0])));
}
