/* make_seeds.c — writes a few valid inputs for the fuzz targets, so a
 * short run starts from real frames instead of discovering "FMEM".
 * usage: make_seeds FRAME_DIR SESSION_DIR [KEYFILE_DIR [CHAN_DIR]] */
#include "protocol.h"

#include <stdio.h>
#include <string.h>

static uint8_t buf[1 << 16];
static size_t len;
static uint32_t tag;

static void frame(uint8_t op, const uint8_t *payload, uint32_t plen)
{
	struct fm_hdr h = { .op = op, .tag = ++tag, .len = plen };

	fm_hdr_encode(buf + len, &h);
	memcpy(buf + len + FM_HDR_SIZE, payload, plen);
	len += FM_HDR_SIZE + plen;
}

static int save(const char *dir, const char *name)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		return 1;
	}
	len = 0;
	return 0;
}

/* The session's conversation again: byte 0 says how tags come. */
static void conversation(const struct fm_range *r, uint8_t *p, int tagged)
{
	uint8_t tag[16] = { 0 };

	frame(FM_OP_ALLOC, p, (uint32_t)fm_alloc_req_encode(p, 1u << 14));
	if (tagged) {
		memcpy(buf + len, tag, sizeof(tag));
		len += sizeof(tag);
	}
	fm_range_encode(p, r);
	frame(FM_OP_WRITE, p, FM_RANGE_LEN + 4096);
	if (tagged) {
		memcpy(buf + len, tag, sizeof(tag));
		len += sizeof(tag);
	}
	frame(FM_OP_READ, p, FM_RANGE_LEN);
	frame(FM_OP_FREE, p, (uint32_t)fm_u64_encode(p, r->seg_id));
}

/* fuzz_chan: sealed by the harness (byte 0 = 1), and with the input's
 * own (wrong) tags (byte 0 = 0). */
static int chan_seeds(const char *dir, const struct fm_range *r, uint8_t *p)
{
	int rc = 0;

	buf[len++] = 1;
	conversation(r, p, 0);
	rc |= save(dir, "sealed");
	buf[len++] = 0;
	conversation(r, p, 1);
	rc |= save(dir, "forged");
	return rc;
}

int main(int argc, char **argv)
{
	struct fm_hello_req hq = { .version = FM_PROTO_VERSION, .uuid = { 1 },
				   .name = "alice" };
	struct fm_range r = { .seg_id = 1ull << 32, .offset = 4096, .len = 4096 };
	uint8_t p[FM_RANGE_LEN + 4096] = { 0 };
	int rc = 0;

	if (argc < 3 || argc > 5)
		return 2;
	/* Frame decoder: one frame of each request kind. */
	frame(FM_OP_HELLO, p, (uint32_t)fm_hello_req_encode(p, &hq));
	rc |= save(argv[1], "hello");
	frame(FM_OP_ALLOC, p, (uint32_t)fm_alloc_req_encode(p, 1u << 14));
	rc |= save(argv[1], "alloc");
	fm_range_encode(p, &r);
	frame(FM_OP_WRITE, p, FM_RANGE_LEN + 4096);
	rc |= save(argv[1], "write");
	frame(FM_OP_READ, p, FM_RANGE_LEN);
	rc |= save(argv[1], "read");

	/* Session: authenticated (byte 0 = 1), a whole conversation. */
	buf[len++] = 1;
	frame(FM_OP_ALLOC, p, (uint32_t)fm_alloc_req_encode(p, 1u << 14));
	fm_range_encode(p, &r);
	frame(FM_OP_WRITE, p, FM_RANGE_LEN + 4096);
	frame(FM_OP_READ, p, FM_RANGE_LEN);
	frame(FM_OP_LIST, p, (uint32_t)fm_list_req_encode(p, 0));
	frame(FM_OP_STAT, p, 0);
	frame(FM_OP_PING, (const uint8_t *)"ping", 4);
	frame(FM_OP_FREE, p, (uint32_t)fm_u64_encode(p, r.seg_id));
	rc |= save(argv[2], "conversation");
	/* Unauthenticated: HELLO, then an AUTH with a wrong MAC. */
	buf[len++] = 0;
	frame(FM_OP_HELLO, p, (uint32_t)fm_hello_req_encode(p, &hq));
	memset(p, 0x42, FM_MAC_LEN);
	frame(FM_OP_AUTH, p, FM_MAC_LEN);
	rc |= save(argv[2], "handshake");
	/* Key files: a good one, one with comments and blanks. */
	if (argc >= 4) {
		static const char good[] = "name = alice\nkey = "
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
		static const char loose[] = "# client key\n\n  key=ffeeddccbbaa99887766554433221100"
			"ffeeddccbbaa99887766554433221100\r\n\tname\t=\tbob-1.x_y \n";

		memcpy(buf, good, sizeof(good) - 1);
		len = sizeof(good) - 1;
		rc |= save(argv[3], "good");
		memcpy(buf, loose, sizeof(loose) - 1);
		len = sizeof(loose) - 1;
		rc |= save(argv[3], "loose");
	}
	if (argc == 5)
		rc |= chan_seeds(argv[4], &r, p);
	return rc;
}
