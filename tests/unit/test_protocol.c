/* test_protocol.c — wire codec: every message round-trips, every bad
 * header field, truncation and oversized length is refused. */
#include "protocol.h"
#include "tap.h"

#include <errno.h>
#include <string.h>

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed + i * 7);
}

static void good_hdr(uint8_t *buf)
{
	struct fm_hdr h = { .op = FM_OP_WRITE, .tag = 0xdeadbeef, .len = 4096 };

	fm_hdr_encode(buf, &h);
}

static int t_hdr_round_trip(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr in = { .op = FM_OP_READ | FM_OP_REPLY, .tag = 0x01020304,
			     .status = -ENOENT, .len = FM_MAX_PAYLOAD };
	struct fm_hdr out;

	fm_hdr_encode(buf, &in);
	CHECK(fm_hdr_decode(buf, sizeof(buf), &out) == 0);
	CHECK(out.op == in.op && out.tag == in.tag && out.status == -ENOENT);
	CHECK(out.len == FM_MAX_PAYLOAD && out.flags == 0);
	/* Little-endian on the wire whatever the host is. */
	CHECK(buf[0] == 'F' && buf[1] == 'M' && buf[2] == 'E' && buf[3] == 'M');
	CHECK(buf[8] == 0x04 && buf[11] == 0x01);
	return 0;
}

static int t_hdr_every_op(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	for (int op = FM_OP_HELLO; op <= FM_OP_NOTICE; op++) {
		struct fm_hdr in = { .op = (uint8_t)op, .tag = (uint32_t)op };

		fm_hdr_encode(buf, &in);
		CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == 0 && h.op == op);
		CHECK(strcmp(fm_op_name((uint8_t)op), "?") != 0);
	}
	return 0;
}

static int t_hdr_bad_magic(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	for (int i = 0; i < 4; i++) {
		good_hdr(buf);
		buf[i] ^= 0x20;
		CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	}
	return 0;
}

static int t_hdr_bad_version(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	good_hdr(buf);
	buf[4] = FM_PROTO_VERSION + 1;
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	buf[4] = 0;
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	return 0;
}

static int t_hdr_bad_op(void)
{
	static const uint8_t bad[] = { 0, FM_OP_NOTICE + 1, 0x7f, FM_OP_REPLY,
				       FM_OP_REPLY | FM_OP_NOTICE, 0xff };
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	for (size_t i = 0; i < sizeof(bad); i++) {
		good_hdr(buf);
		buf[5] = bad[i];
		CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	}
	return 0;
}

static int t_hdr_bad_reserved(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	for (int i = 6; i < 8; i++) {    /* flags */
		good_hdr(buf);
		buf[i] = 1;
		CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	}
	for (int i = 20; i < 24; i++) {  /* reserved */
		good_hdr(buf);
		buf[i] = 0x80;
		CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	}
	return 0;
}

static int t_hdr_status_rules(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	good_hdr(buf);                 /* a request with a status */
	put_le32(buf + 12, (uint32_t)-EIO);
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	buf[5] = FM_OP_WRITE | FM_OP_REPLY;
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == 0 && h.status == -EIO);
	put_le32(buf + 12, 5);         /* positive status in a reply */
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	put_le32(buf + 12, (uint32_t)-100000);
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EPROTO);
	return 0;
}

static int t_hdr_oversized(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	good_hdr(buf);
	put_le32(buf + 16, FM_MAX_PAYLOAD + 1);
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EMSGSIZE);
	put_le32(buf + 16, UINT32_MAX);
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == -EMSGSIZE);
	put_le32(buf + 16, FM_MAX_PAYLOAD);
	CHECK(fm_hdr_decode(buf, sizeof(buf), &h) == 0);
	return 0;
}

static int t_hdr_truncated(void)
{
	uint8_t buf[FM_HDR_SIZE];
	struct fm_hdr h;

	good_hdr(buf);
	for (size_t n = 0; n < FM_HDR_SIZE; n++)
		CHECK(fm_hdr_decode(buf, n, &h) == -EPROTO);
	return 0;
}

static int t_hello(void)
{
	uint8_t buf[FM_HELLO_REQ_MAX + 1];
	struct fm_hello_req rq = { .version = FM_PROTO_VERSION, .name = "alice" }, rq2;
	struct fm_hello_rep rp = { .version = 7, .segment_max = 4u << 20,
				   .boot_id = 0x1122334455667788ull }, rp2;
	const size_t len = FM_HELLO_REQ_MIN + 5;

	fill(rq.uuid, FM_UUID_LEN, 1);
	fill(rq.client_nonce, FM_NONCE_LEN, 2);
	CHECK(fm_hello_req_encode(buf, &rq) == len);
	CHECK(fm_hello_req_decode(buf, len, &rq2) == 0);
	CHECK(rq2.version == rq.version);
	CHECK(!memcmp(rq2.uuid, rq.uuid, FM_UUID_LEN));
	CHECK(!memcmp(rq2.client_nonce, rq.client_nonce, FM_NONCE_LEN));
	CHECK(strcmp(rq2.name, "alice") == 0);
	CHECK(fm_hello_req_decode(buf, len - 1, &rq2) == -EPROTO);
	CHECK(fm_hello_req_decode(buf, len + 1, &rq2) == -EPROTO);
	buf[FM_HELLO_REQ_MIN] = 'A';   /* upper case is not a name */
	CHECK(fm_hello_req_decode(buf, len, &rq2) == -EPROTO);
	buf[FM_HELLO_REQ_MIN] = 'a';
	buf[2] = 0;                    /* no name at all */
	CHECK(fm_hello_req_decode(buf, FM_HELLO_REQ_MIN, &rq2) == -EPROTO);
	buf[2] = 5;
	buf[3] = 1;                    /* reserved */
	CHECK(fm_hello_req_decode(buf, len, &rq2) == -EPROTO);
	/* An encoder never sends a name the decoder refuses. */
	snprintf(rq.name, sizeof(rq.name), "-x");
	CHECK(fm_hello_req_encode(buf, &rq) == 0);
	memset(rq.name, 'a', FM_NAME_MAX);
	rq.name[FM_NAME_MAX] = '\0';
	CHECK(fm_hello_req_encode(buf, &rq) == FM_HELLO_REQ_MAX);
	CHECK(fm_hello_req_decode(buf, FM_HELLO_REQ_MAX, &rq2) == 0);

	fill(rp.server_nonce, FM_NONCE_LEN, 3);
	CHECK(fm_hello_rep_encode(buf, &rp) == FM_HELLO_REP_LEN);
	CHECK(fm_hello_rep_decode(buf, FM_HELLO_REP_LEN, &rp2) == 0);
	CHECK(rp2.version == 7 && rp2.segment_max == (4u << 20));
	CHECK(rp2.boot_id == 0x1122334455667788ull);
	CHECK(!memcmp(rp2.server_nonce, rp.server_nonce, FM_NONCE_LEN));
	CHECK(fm_hello_rep_decode(buf, FM_HELLO_REP_LEN - 1, &rp2) == -EPROTO);
	buf[3] = 1;
	CHECK(fm_hello_rep_decode(buf, FM_HELLO_REP_LEN, &rp2) == -EPROTO);
	buf[3] = 0;
	rp.boot_id = 0;                /* a boot id is never 0 */
	fm_hello_rep_encode(buf, &rp);
	CHECK(fm_hello_rep_decode(buf, FM_HELLO_REP_LEN, &rp2) == -EPROTO);
	return 0;
}

static int t_names(void)
{
	static const char *const good[] = { "a", "alice", "host-1.example", "0", "a_b" };
	static const char *const bad[] = { "", "Alice", "-a", ".a", "_a", "a b",
					   "a/b", "a:b", "a\n", "\xc3\xa9" };
	char longest[FM_NAME_MAX + 2];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(fm_client_name_check(good[i], strlen(good[i])) == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(fm_client_name_check(bad[i], strlen(bad[i])) == -EINVAL);
	memset(longest, 'z', sizeof(longest));
	CHECK(fm_client_name_check(longest, FM_NAME_MAX) == 0);
	CHECK(fm_client_name_check(longest, FM_NAME_MAX + 1) == -EINVAL);
	return 0;
}

static int t_alloc_free(void)
{
	uint8_t buf[64];
	struct fm_alloc_rep in = { .seg_id = 0x0000000500000003ull,
				   .size = 1u << 22, .rkey = 0x1234,
				   .remote_addr = 0xfedcba9876543210ull }, out;
	uint32_t size;
	uint64_t id;

	CHECK(fm_alloc_req_encode(buf, 1u << 22) == FM_ALLOC_REQ_LEN);
	CHECK(fm_alloc_req_decode(buf, FM_ALLOC_REQ_LEN, &size) == 0);
	CHECK(size == (1u << 22));
	CHECK(fm_alloc_req_decode(buf, 3, &size) == -EPROTO);
	CHECK(fm_alloc_req_decode(buf, 5, &size) == -EPROTO);

	CHECK(fm_alloc_rep_encode(buf, &in) == FM_ALLOC_REP_LEN);
	CHECK(fm_alloc_rep_decode(buf, FM_ALLOC_REP_LEN, &out) == 0);
	CHECK(out.seg_id == in.seg_id && out.size == in.size);
	CHECK(out.rkey == in.rkey && out.remote_addr == in.remote_addr);
	CHECK(fm_alloc_rep_decode(buf, FM_ALLOC_REP_LEN - 1, &out) == -EPROTO);

	CHECK(fm_u64_encode(buf, 0x8877665544332211ull) == FM_FREE_REQ_LEN);
	CHECK(buf[0] == 0x11 && buf[7] == 0x88);
	CHECK(fm_free_req_decode(buf, FM_FREE_REQ_LEN, &id) == 0);
	CHECK(id == 0x8877665544332211ull);
	CHECK(fm_free_req_decode(buf, 7, &id) == -EPROTO);
	CHECK(fm_free_req_decode(buf, 9, &id) == -EPROTO);
	return 0;
}

static int t_read_req(void)
{
	uint8_t buf[32];
	struct fm_range in = { .seg_id = 42, .offset = 8192, .len = FM_MAX_IO },
			out;

	CHECK(fm_range_encode(buf, &in) == FM_RANGE_LEN);
	CHECK(fm_read_req_decode(buf, FM_RANGE_LEN, &out) == 0);
	CHECK(out.seg_id == 42 && out.offset == 8192 && out.len == FM_MAX_IO);
	CHECK(fm_read_req_decode(buf, FM_RANGE_LEN - 1, &out) == -EPROTO);
	CHECK(fm_read_req_decode(buf, FM_RANGE_LEN + 1, &out) == -EPROTO);
	in.len = FM_MAX_IO + 1;        /* more than one reply may carry */
	fm_range_encode(buf, &in);
	CHECK(fm_read_req_decode(buf, FM_RANGE_LEN, &out) == -EPROTO);
	in.len = 0;
	fm_range_encode(buf, &in);
	CHECK(fm_read_req_decode(buf, FM_RANGE_LEN, &out) == -EPROTO);
	return 0;
}

static int t_write_req(void)
{
	static uint8_t buf[FM_RANGE_LEN + 4096 + 1];
	struct fm_range in = { .seg_id = 7, .offset = 4096, .len = 4096 }, out;
	const uint8_t *data = NULL;

	fm_range_encode(buf, &in);
	fill(buf + FM_RANGE_LEN, 4096, 9);
	CHECK(fm_write_req_decode(buf, FM_RANGE_LEN + 4096, &out, &data) == 0);
	CHECK(out.seg_id == 7 && out.offset == 4096 && out.len == 4096);
	CHECK(data == buf + FM_RANGE_LEN);
	/* Data shorter, longer, or no range at all. */
	CHECK(fm_write_req_decode(buf, FM_RANGE_LEN + 4095, &out, &data) == -EPROTO);
	CHECK(fm_write_req_decode(buf, FM_RANGE_LEN + 4097, &out, &data) == -EPROTO);
	CHECK(fm_write_req_decode(buf, FM_RANGE_LEN - 1, &out, &data) == -EPROTO);
	CHECK(fm_write_req_decode(buf, 0, &out, &data) == -EPROTO);
	in.len = 0;
	fm_range_encode(buf, &in);
	CHECK(fm_write_req_decode(buf, FM_RANGE_LEN, &out, &data) == -EPROTO);
	return 0;
}

static int t_stat(void)
{
	uint8_t buf[FM_STAT_WIRE + 1];
	struct fm_stat in = { .pool_bytes = 1ull << 40, .used_bytes = 3,
			      .free_bytes = (1ull << 40) - 3, .bytes_read = 5,
			      .bytes_written = 6, .reads = 7, .writes = 8,
			      .segments = 9, .segment_max = 10, .clients = 11,
			      .devices = 12, .leased = 13, .locked = 1 }, out;

	CHECK(fm_stat_encode(buf, &in) == FM_STAT_WIRE);
	CHECK(fm_stat_decode(buf, FM_STAT_WIRE, &out) == 0);
	CHECK(memcmp(&in, &out, sizeof(in)) == 0);
	CHECK(fm_stat_decode(buf, FM_STAT_WIRE - 1, &out) == -EPROTO);
	CHECK(fm_stat_decode(buf, FM_STAT_WIRE + 1, &out) == -EPROTO);
	return 0;
}

static int t_list(void)
{
	static uint8_t buf[4 + (FM_LIST_MAX + 1) * FM_LIST_ENTRY_LEN];
	uint32_t start, count, size;
	uint64_t id;

	CHECK(fm_list_req_encode(buf, 77) == FM_LIST_REQ_LEN);
	CHECK(fm_list_req_decode(buf, FM_LIST_REQ_LEN, &start) == 0 && start == 77);
	CHECK(fm_list_req_decode(buf, 3, &start) == -EPROTO);

	put_le32(buf, 3);
	for (uint32_t i = 0; i < 3; i++)
		CHECK(fm_list_entry_encode(buf + 4 + i * FM_LIST_ENTRY_LEN,
					   ((uint64_t)i << 32) | 1, 4096 * (i + 1))
		      == FM_LIST_ENTRY_LEN);
	CHECK(fm_list_rep_decode(buf, 4 + 3 * FM_LIST_ENTRY_LEN, &count) == 0);
	CHECK(count == 3);
	fm_list_rep_entry(buf, 2, &id, &size);
	CHECK(id == ((2ull << 32) | 1) && size == 3 * 4096);
	/* Count and length must agree; count is bounded. */
	CHECK(fm_list_rep_decode(buf, 4 + 2 * FM_LIST_ENTRY_LEN, &count) == -EPROTO);
	CHECK(fm_list_rep_decode(buf, 4 + 3 * FM_LIST_ENTRY_LEN + 1, &count) == -EPROTO);
	CHECK(fm_list_rep_decode(buf, 3, &count) == -EPROTO);
	put_le32(buf, FM_LIST_MAX + 1);
	CHECK(fm_list_rep_decode(buf, sizeof(buf), &count) == -EPROTO);
	put_le32(buf, UINT32_MAX);     /* count * 12 must not wrap */
	CHECK(fm_list_rep_decode(buf, 4 + (size_t)(UINT32_MAX * 12u), &count) == -EPROTO);
	return 0;
}

static int t_le_helpers(void)
{
	uint8_t b[8];

	put_le16(b, 0xa1b2);
	CHECK(b[0] == 0xb2 && b[1] == 0xa1 && get_le16(b) == 0xa1b2);
	put_le32(b, 0xa1b2c3d4);
	CHECK(b[0] == 0xd4 && b[3] == 0xa1 && get_le32(b) == 0xa1b2c3d4);
	put_le64(b, 0x0102030405060708ull);
	CHECK(b[0] == 8 && b[7] == 1 && get_le64(b) == 0x0102030405060708ull);
	return 0;
}

static int t_notice_and_drain(void)
{
	uint8_t buf[FM_NOTICE_LEN(FM_NOTICE_MAX) + 8];
	uint64_t ids[FM_NOTICE_MAX + 1];
	struct fm_notice n;
	uint32_t d;

	for (unsigned i = 0; i <= FM_NOTICE_MAX; i++)
		ids[i] = 0x100000000ull * i + 7;
	CHECK(fm_notice_encode(buf, 3000, 0, ids, 3) == FM_NOTICE_LEN(3));
	CHECK(fm_notice_decode(buf, FM_NOTICE_LEN(3), &n) == 0);
	CHECK(n.deadline_ms == 3000 && n.flags == 0 && n.count == 3);
	CHECK(fm_notice_id(&n, 2) == ids[2]);
	CHECK(fm_notice_decode(buf, FM_NOTICE_LEN(3) - 1, &n) == -EPROTO);
	CHECK(fm_notice_decode(buf, FM_NOTICE_LEN(3) + 8, &n) == -EPROTO);
	CHECK(fm_notice_encode(buf, 3000, FM_NOTICE_ALL, NULL, 0) == FM_NOTICE_LEN(0));
	CHECK(fm_notice_decode(buf, FM_NOTICE_LEN(0), &n) == 0 && n.flags == FM_NOTICE_ALL);
	CHECK(fm_notice_encode(buf, 3000, FM_NOTICE_ALL, ids, 1) == 0);
	CHECK(fm_notice_encode(buf, 3000, 0, ids, FM_NOTICE_MAX + 1) == 0);
	CHECK(fm_notice_encode(buf, 3000, 0, ids, FM_NOTICE_MAX) == FM_NOTICE_LEN(FM_NOTICE_MAX));
	put_le16(buf + 6, FM_NOTICE_MAX + 1);
	CHECK(fm_notice_decode(buf, sizeof(buf), &n) == -EPROTO);
	CHECK(fm_notice_encode(buf, 3000, 0, NULL, 0) == FM_NOTICE_LEN(0));
	CHECK(fm_notice_decode(buf, FM_NOTICE_LEN(0), &n) == -EPROTO);   /* names nothing */
	CHECK(fm_notice_encode(buf, 0, FM_NOTICE_ALL, NULL, 0) == FM_NOTICE_LEN(0));
	CHECK(fm_notice_decode(buf, FM_NOTICE_LEN(0), &n) == -EPROTO);   /* no deadline */
	CHECK(fm_notice_decode(buf, 3, &n) == -EPROTO);
	CHECK(fm_drain_req_encode(buf, 60000) == FM_DRAIN_REQ_LEN);
	CHECK(fm_drain_req_decode(buf, FM_DRAIN_REQ_LEN, &d) == 0 && d == 60000);
	CHECK(fm_drain_req_decode(buf, 3, &d) == -EPROTO);
	fm_drain_req_encode(buf, FM_NOTICE_DEADLINE_MAX + 1);
	CHECK(fm_drain_req_decode(buf, FM_DRAIN_REQ_LEN, &d) == -EPROTO);
	/* NOTICE never carries the reply bit. */
	{
		struct fm_hdr h = { .op = FM_OP_NOTICE | FM_OP_REPLY };

		fm_hdr_encode(buf, &h);
		CHECK(fm_hdr_decode(buf, FM_HDR_SIZE, &h) == -EPROTO);
	}
	return 0;
}

static const struct tap_case cases[] = {
	{ "NOTICE and DRAIN payloads: exact lengths, bounds, flags", t_notice_and_drain },
	{ "header round trip, little-endian", t_hdr_round_trip },
	{ "header accepts every op", t_hdr_every_op },
	{ "header rejects bad magic", t_hdr_bad_magic },
	{ "header rejects other versions", t_hdr_bad_version },
	{ "header rejects unknown ops", t_hdr_bad_op },
	{ "header rejects nonzero flags and reserved", t_hdr_bad_reserved },
	{ "header status rules for requests and replies", t_hdr_status_rules },
	{ "header rejects oversized len", t_hdr_oversized },
	{ "header rejects truncated input", t_hdr_truncated },
	{ "HELLO request and reply", t_hello },
	{ "client names: charset and length", t_names },
	{ "ALLOC and FREE", t_alloc_free },
	{ "READ request", t_read_req },
	{ "WRITE request", t_write_req },
	{ "STAT reply", t_stat },
	{ "LIST request and reply", t_list },
	{ "little-endian helpers", t_le_helpers },
};

TAP_MAIN(cases)
