/* test_frame_batch.c — a turn's frames: merged where they continue one
 * another, sealed in wire order, and read back as a memserver would. */
#include <string.h>

#include "chan.h"
#include "frame_batch.h"
#include "protocol.h"
#include "tap.h"

#define NSLOTS 64

static struct fm_chan client, server;
static uint8_t data[8][FM_PAGE];
static uint8_t stream[2u << 20];

static void chans(void)
{
	uint8_t cn[FM_NONCE_LEN] = { 1 }, sn[FM_NONCE_LEN] = { 2 };

	fm_chan_init(&client, FM_CHAN_CLIENT, (const uint8_t *)"secret", 6, cn, sn);
	fm_chan_init(&server, FM_CHAN_SERVER, (const uint8_t *)"secret", 6, cn, sn);
}

/* Stage slot idx's request the way the tcp transport does. */
static void stage(struct fm_frame_batch *b, uint32_t idx, uint8_t op, uint64_t seg,
		  uint32_t off, uint32_t len, const void *payload)
{
	uint8_t head[FM_FB_HEAD_MAX];
	struct fm_range r = { .seg_id = seg, .offset = off, .len = len };
	struct fm_hdr h = { .op = op, .tag = 1000 + idx };
	struct fm_fb_span span = { .op = op, .seg_id = seg, .offset = off, .len = len };
	struct iovec iov[2];
	int n = 1;

	h.len = FM_RANGE_LEN + (op == FM_OP_WRITE ? len : 0);
	fm_hdr_encode(head, &h);
	fm_range_encode(head + FM_HDR_SIZE, &r);
	iov[0] = (struct iovec){ head, FM_FB_HEAD_MAX };
	if (op == FM_OP_WRITE)
		iov[n++] = (struct iovec){ (void *)payload, len };
	fm_fb_stage(b, idx, &span, iov, n);
}

/* The wire's bytes, copied to stream + at. */
static size_t flatten_at(const struct fm_frame_batch *b, size_t at)
{
	size_t pos = 0;

	for (int i = 0; i < b->nwire; i++) {
		memcpy(stream + at + pos, b->wire[i].iov_base, b->wire[i].iov_len);
		pos += b->wire[i].iov_len;
	}
	return pos;
}

static size_t flatten(const struct fm_frame_batch *b)
{
	return flatten_at(b, 0);
}

struct seen {
	struct fm_hdr h;
	struct fm_range r;
	const uint8_t *data;
};

/* Read frames off the stream as a memserver: header, payload, tag
 * checked with the receiving direction.  Returns the frame count, or -1
 * on a bad tag or a short stream. */
static int parse(size_t len, struct seen *out, int max)
{
	size_t pos = 0;
	int n = 0;

	while (pos < len && n < max) {
		struct seen *s = &out[n];

		if (len - pos < FM_HDR_SIZE || fm_hdr_decode(stream + pos, FM_HDR_SIZE, &s->h))
			return -1;
		if (len - pos < FM_HDR_SIZE + s->h.len + FM_CHAN_TAG_LEN ||
		    fm_chan_check_frame(&server.rx, stream + pos, FM_HDR_SIZE + s->h.len,
					stream + pos + FM_HDR_SIZE + s->h.len))
			return -1;
		if (s->h.op == FM_OP_WRITE) {
			if (fm_write_req_decode(stream + pos + FM_HDR_SIZE, s->h.len, &s->r, &s->data))
				return -1;
		} else if (fm_read_req_decode(stream + pos + FM_HDR_SIZE, s->h.len, &s->r)) {
			return -1;
		}
		pos += FM_HDR_SIZE + s->h.len + FM_CHAN_TAG_LEN;
		n++;
	}
	return pos == len ? n : -1;
}

static int test_consecutive_writes_merge(void)
{
	struct fm_frame_batch b;
	struct seen f[8];

	chans();
	CHECK(fm_fb_init(&b, NSLOTS) == 0);
	for (int i = 0; i < 4; i++) {
		memset(data[i], 'a' + i, FM_PAGE);
		stage(&b, (uint32_t)(10 + i), FM_OP_WRITE, 9, 4096u + (uint32_t)i * 700, 700, data[i]);
	}
	fm_fb_seal(&b, &client.tx);
	CHECK(parse(flatten(&b), f, 8) == 1);
	CHECK(f[0].h.tag == 1010);               /* the first request names it */
	CHECK(f[0].r.seg_id == 9 && f[0].r.offset == 4096 && f[0].r.len == 2800);
	for (int i = 0; i < 4; i++)
		CHECK(memcmp(f[0].data + i * 700, data[i], 700) == 0);
	/* The others ride on it, in order, and leave the chain as taken. */
	CHECK(fm_fb_take_rider(&b, 10) == 11);
	CHECK(fm_fb_take_rider(&b, 11) == 12);
	CHECK(fm_fb_take_rider(&b, 12) == 13);
	CHECK(fm_fb_take_rider(&b, 13) == FM_FB_NONE);
	CHECK(fm_fb_take_rider(&b, 10) == FM_FB_NONE);
	CHECK(b.merged == 3);
	fm_fb_fini(&b);
	return 0;
}

static int test_what_does_not_continue_stays_apart(void)
{
	struct fm_frame_batch b;
	struct seen f[16];
	static uint8_t big[200u << 10];

	chans();
	CHECK(fm_fb_init(&b, NSLOTS) == 0);
	stage(&b, 0, FM_OP_WRITE, 9, 0, 100, data[0]);
	stage(&b, 1, FM_OP_WRITE, 9, 200, 100, data[1]);     /* a gap */
	stage(&b, 2, FM_OP_WRITE, 8, 300, 100, data[2]);     /* another segment */
	stage(&b, 3, FM_OP_READ, 8, 400, 100, NULL);         /* not a write */
	stage(&b, 4, FM_OP_WRITE, 8, 400, 100, data[3]);     /* after the read: its own */
	stage(&b, 5, FM_OP_WRITE, 7, 0, sizeof(big), big);
	stage(&b, 6, FM_OP_WRITE, 7, sizeof(big), sizeof(big), big); /* over the cap */
	fm_fb_seal(&b, &client.tx);
	CHECK(parse(flatten(&b), f, 16) == 7);
	for (int i = 0; i < 7; i++) {
		CHECK(f[i].h.tag == 1000u + (uint32_t)i);
		CHECK(fm_fb_take_rider(&b, (uint32_t)i) == FM_FB_NONE);
	}
	CHECK(f[1].r.offset == 200 && f[1].r.len == 100);
	CHECK(b.merged == 0);
	fm_fb_fini(&b);
	return 0;
}

static int test_interleaved_segments_merge_apart(void)
{
	/* Two streams' appends, interleaved on one connection. */
	struct fm_frame_batch b;
	struct seen f[8];

	chans();
	CHECK(fm_fb_init(&b, NSLOTS) == 0);
	stage(&b, 0, FM_OP_WRITE, 1, 0, 100, data[0]);
	stage(&b, 1, FM_OP_WRITE, 2, 500, 100, data[1]);
	stage(&b, 2, FM_OP_WRITE, 1, 100, 100, data[2]);
	stage(&b, 3, FM_OP_READ, 2, 0, 100, NULL);       /* another segment's read */
	stage(&b, 4, FM_OP_WRITE, 1, 200, 100, data[3]);
	stage(&b, 5, FM_OP_WRITE, 2, 600, 100, data[4]);  /* never passes that READ */
	fm_fb_seal(&b, &client.tx);
	size_t len = flatten(&b);

	CHECK(parse(len, f, 8) == 4);
	fm_fb_sent(&b, len);
	CHECK(f[0].h.tag == 1000 && f[0].r.seg_id == 1 && f[0].r.len == 300);
	CHECK(memcmp(f[0].data + 100, data[2], 100) == 0 && memcmp(f[0].data + 200, data[3], 100) == 0);
	CHECK(f[1].h.tag == 1001 && f[1].r.len == 100);  /* stopped by the READ of segment 2 */
	CHECK(f[2].h.tag == 1003 && f[2].h.op == FM_OP_READ);
	CHECK(f[3].h.tag == 1005 && f[3].r.offset == 600);
	CHECK(fm_fb_take_rider(&b, 0) == 2 && fm_fb_take_rider(&b, 2) == 4);
	CHECK(fm_fb_take_rider(&b, 4) == FM_FB_NONE && fm_fb_take_rider(&b, 1) == FM_FB_NONE);
	CHECK(b.merged == 2);
	/* Any other op is a barrier: nothing moves past a FREE. */
	stage(&b, 0, FM_OP_WRITE, 1, 300, 100, data[0]);
	stage(&b, 1, FM_OP_FREE, 7, 0, 8, NULL);   /* any non-zero range: parse() reads one */
	stage(&b, 2, FM_OP_WRITE, 1, 400, 100, data[1]);
	fm_fb_seal(&b, &client.tx);
	CHECK(parse(flatten(&b), f, 8) == 3);
	CHECK(f[0].r.len == 100 && f[1].h.op == FM_OP_FREE && f[2].r.offset == 400);
	CHECK(b.merged == 2);
	fm_fb_fini(&b);
	return 0;
}

static int test_wire_order_survives_partial_sends(void)
{
	/* Frames staged while the wire still holds unsent bytes wait, so
	 * tags keep numbering frames in the order the server reads them. */
	struct fm_frame_batch b;
	struct seen f[8];
	size_t first_len, rest;

	chans();
	CHECK(fm_fb_init(&b, NSLOTS) == 0);
	stage(&b, 0, FM_OP_WRITE, 9, 0, 100, data[0]);
	fm_fb_seal(&b, &client.tx);
	first_len = flatten(&b);                 /* frame 1 at stream[0..) */
	fm_fb_sent(&b, 30);                      /* part of its head went */
	stage(&b, 1, FM_OP_WRITE, 9, 100, 100, data[1]);
	fm_fb_seal(&b, &client.tx);              /* the wire is busy: nothing sealed */
	CHECK(b.nframes == 1);
	rest = flatten_at(&b, first_len);        /* scratch: what is left of frame 1 */
	CHECK(rest == first_len - 30);
	CHECK(memcmp(stream + first_len, stream + 30, rest) == 0);
	fm_fb_sent(&b, rest);
	CHECK(b.nwire == 0);
	fm_fb_seal(&b, &client.tx);
	CHECK(b.nframes == 0);
	/* Frame 2 joins at once: it continues frame 1's range but frame 1
	 * already left, so it is a frame of its own, with the next number. */
	CHECK(parse(first_len + flatten_at(&b, first_len), f, 8) == 2);
	CHECK(f[0].r.offset == 0 && f[1].r.offset == 100 && f[1].h.tag == 1001);
	CHECK(b.merged == 0);
	fm_fb_fini(&b);
	return 0;
}

static int test_room_is_bounded(void)
{
	struct fm_frame_batch b;
	int staged = 0;

	CHECK(fm_fb_init(&b, 1024) == 0);
	while (fm_fb_has_room(&b, 2)) {
		stage(&b, (uint32_t)staged, FM_OP_WRITE, 9, (uint32_t)staged * 10, 10, data[0]);
		staged++;
	}
	/* Each frame takes 2 staged iovecs and a trailer's room on the wire. */
	CHECK(staged == (FM_FB_IOV_MAX - 1) / 3);
	chans();
	fm_fb_seal(&b, &client.tx);
	CHECK(b.nwire == 2 + staged);          /* all merged: one head, the data, one tag */
	fm_fb_clear(&b);
	CHECK(b.nwire == 0 && b.nframes == 0 && fm_fb_has_room(&b, 2));
	fm_fb_fini(&b);
	return 0;
}

static const struct tap_case cases[] = {
	{ "consecutive WRITEs to one segment leave as one frame", test_consecutive_writes_merge },
	{ "gaps, other segments, READs and the size cap keep frames apart", test_what_does_not_continue_stays_apart },
	{ "interleaved segments merge apart; a same-segment frame or another op stops a run", test_interleaved_segments_merge_apart },
	{ "frames wait behind a partly sent wire", test_wire_order_survives_partial_sends },
	{ "staging room is bounded by what the wire can hold", test_room_is_bounded },
};

TAP_MAIN(cases)
