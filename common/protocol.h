/* protocol.h — farmem's wire protocol between farmem-blk and memservers.
 *
 * Framed, tagged, pipelined, little-endian.  Every message is a 24-byte
 * header followed by `len` payload bytes:
 *
 *   off size field
 *   0   4    magic    FM_MAGIC ("FMEM" read as LE u32)
 *   4   1    version  FM_PROTO_VERSION
 *   5   1    op       enum fm_op (replies: same op with FM_OP_REPLY bit)
 *   6   2    flags    0 (reserved, must be 0)
 *   8   4    tag      chosen by the client, echoed in the reply
 *   12  4    status   replies: 0 or a negative Linux errno; requests: 0
 *   16  4    len      payload bytes that follow (<= FM_MAX_PAYLOAD)
 *   20  4    reserved 0
 *
 * Payloads (all integers LE; fixed layouts, no padding on the wire):
 *   HELLO  req : u16 version, u8 name_len, u8 reserved, u8 device_uuid[16],
 *                u8 client_nonce[32], then name_len bytes of the client's name
 *                (1..FM_NAME_MAX, [a-z0-9][a-z0-9._-]*; see fm_client_name_check)
 *          rep : u16 version, u16 reserved, u32 segment_max, u8 server_nonce[32],
 *                u64 boot_id (random per memserver start, never 0)
 *   AUTH   req : u8 client_mac[32]   HMAC(key, "farmem-client-v2" | server_nonce | client_nonce | T)
 *          rep : u8 server_mac[32]   HMAC(key, "farmem-server-v2" | client_nonce | server_nonce | T)
 *                key = the client's key, derived from the cluster secret and
 *                the name (auth.h); T = uuid | boot_id (LE64) | name_len | name
 *   ALLOC  req : u32 size (multiple of FM_PAGE, <= segment_max); -ENOSPC
 *                when the pool is full, -EDQUOT when the client's quota is
 *                used up (other clients may still get space)
 *          rep : u64 seg_id, u32 size, u32 rkey, u64 remote_addr   (rkey/addr 0 on TCP)
 *   FREE   req : u64 seg_id                                  rep : empty
 *   WRITE  req : u64 seg_id, u32 offset, u32 len, then len data bytes
 *          rep : empty
 *   READ   req : u64 seg_id, u32 offset, u32 len             rep : len data bytes
 *   STAT   req : empty       rep : struct fm_stat encoded (FM_STAT_WIRE bytes)
 *   PING   req : any bytes (<= FM_PING_MAX)                  rep : the same bytes
 *   LIST   req : u32 start_index
 *          rep : u32 count, then count x (u64 seg_id, u32 size) of this device's
 *                segments from start_index on (at most FM_LIST_MAX per reply)
 *   DRAIN  req : u32 deadline_ms                             rep : empty
 *                Only the cluster identity (FM_CLUSTER_NAME, i.e. the
 *                secret itself) may ask: anyone else gets -EPERM.  The
 *                server then refuses every ALLOC (-ENOSPC) and sends each
 *                device holding segments a NOTICE for all of them, with
 *                deadline_ms (<= FM_NOTICE_DEADLINE_MAX).  It stays
 *                draining until it restarts.
 *   NOTICE (server -> client, unsolicited; op FM_OP_NOTICE without the
 *          reply bit, tag 0, status 0; never answered):
 *                u32 deadline_ms, u16 flags, u16 count, then count x u64
 *                seg_id.  "Move these segments of yours elsewhere and FREE
 *                them here within deadline_ms."  flags FM_NOTICE_ALL: every
 *                segment of yours (count must be 0).  count <=
 *                FM_NOTICE_MAX; len must be exactly 8 + 8 * count.  After
 *                the deadline the server may free them itself (a donor
 *                under memory pressure); the client's other copies keep
 *                the data.  Like every frame after AUTH it carries a tag
 *                and takes the next number of the server-to-client
 *                direction, between replies.
 *
 * After a successful AUTH every frame, both ways, is followed by a
 * 16-byte tag (FM_CHAN_TAG_LEN, not counted in len) over its header and
 * payload and its implicit per-direction number: see common/chan.h.  A
 * frame whose tag fails closes the connection.  HELLO and AUTH and their
 * replies carry none.
 *
 * Rules the server enforces: HELLO must come first, AUTH second; anything
 * else before a successful AUTH closes the connection.  A device is (client name, uuid): two
 * clients naming the same uuid get two devices.  seg_id, offset and
 * len are checked against segments owned by the connection's device; a
 * segment of another device is -ENOENT (never distinguishable from a
 * missing one).  A bad magic, version, reserved field or an oversized len
 * closes the connection.
 */
#ifndef FARMEM_PROTOCOL_H
#define FARMEM_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define FM_MAGIC          0x4d454d46u /* "FMEM" */
#define FM_PROTO_VERSION  4  /* 2: client names; 3: frames after AUTH carry a
			     * tag; 4: DRAIN, and server-sent NOTICE frames */
#define FM_HDR_SIZE       24
#define FM_PAGE           4096u
#define FM_MAX_IO         (1u << 20)              /* largest READ/WRITE data */
#define FM_MAX_PAYLOAD    (FM_MAX_IO + 64u)
#define FM_NONCE_LEN      32
#define FM_MAC_LEN        32
#define FM_UUID_LEN       16
#define FM_NAME_MAX       32                      /* client name bytes */
#define FM_PING_MAX       256
#define FM_LIST_MAX       4096
#define FM_NOTICE_MAX     64                      /* seg ids in one NOTICE */
#define FM_NOTICE_DEADLINE_MAX (24u * 3600 * 1000)  /* ms */
#define FM_NOTICE_ALL     1u                      /* NOTICE flags */
#define FM_OP_REPLY       0x80

enum fm_op {
	FM_OP_HELLO = 1,
	FM_OP_AUTH  = 2,
	FM_OP_ALLOC = 3,
	FM_OP_FREE  = 4,
	FM_OP_WRITE = 5,
	FM_OP_READ  = 6,
	FM_OP_STAT  = 7,
	FM_OP_PING  = 8,
	FM_OP_LIST  = 9,
	FM_OP_DRAIN = 10,
	FM_OP_NOTICE = 11,   /* server -> client only */
};

struct fm_hdr {
	uint8_t op;
	uint16_t flags;
	uint32_t tag;
	int32_t status;
	uint32_t len;
};

/* Fixed-size payload sizes. */
#define FM_HELLO_REQ_MIN  (4 + FM_UUID_LEN + FM_NONCE_LEN)   /* + the name */
#define FM_HELLO_REQ_MAX  (FM_HELLO_REQ_MIN + FM_NAME_MAX)
#define FM_HELLO_REP_LEN  (16 + FM_NONCE_LEN)
#define FM_AUTH_LEN       FM_MAC_LEN
#define FM_ALLOC_REQ_LEN  4
#define FM_ALLOC_REP_LEN  24
#define FM_FREE_REQ_LEN   8
#define FM_RANGE_LEN      16   /* seg_id, offset, len (READ req, WRITE req prefix) */
#define FM_LIST_REQ_LEN   4
#define FM_LIST_ENTRY_LEN 12
#define FM_STAT_WIRE      80
#define FM_DRAIN_REQ_LEN  4
#define FM_NOTICE_HDR_LEN 8
#define FM_NOTICE_LEN(n)  (FM_NOTICE_HDR_LEN + 8u * (n))

struct fm_hello_req {
	uint16_t version;
	uint8_t uuid[FM_UUID_LEN];
	uint8_t client_nonce[FM_NONCE_LEN];
	char name[FM_NAME_MAX + 1];   /* NUL-terminated; checked by decode */
};

struct fm_hello_rep {
	uint16_t version;
	uint32_t segment_max;
	uint8_t server_nonce[FM_NONCE_LEN];
	uint64_t boot_id;             /* changes whenever the memserver restarts */
};

struct fm_alloc_rep {
	uint64_t seg_id;
	uint32_t size;
	uint32_t rkey;
	uint64_t remote_addr;
};

struct fm_range {
	uint64_t seg_id;
	uint32_t offset;
	uint32_t len;
};

/* A decoded NOTICE: ids point into the frame's payload (read them with
 * fm_notice_id). */
struct fm_notice {
	uint32_t deadline_ms;
	uint16_t flags;
	uint16_t count;
	const uint8_t *ids;
};

struct fm_stat {
	uint64_t pool_bytes;
	uint64_t used_bytes;
	uint64_t free_bytes;
	uint64_t bytes_read;
	uint64_t bytes_written;
	uint64_t reads;
	uint64_t writes;
	uint32_t segments;      /* allocated segments, all devices */
	uint32_t segment_max;   /* largest segment the server hands out */
	uint32_t clients;       /* connected, authenticated connections */
	uint32_t devices;       /* device identities holding segments */
	uint32_t leased;        /* devices with no connection, inside their lease */
	uint32_t locked;        /* 1 when the pool is mlock()ed */
};

/* Header: encode always writes FM_HDR_SIZE bytes.  decode checks magic,
 * version, reserved fields and len <= FM_MAX_PAYLOAD: -EPROTO or
 * -EMSGSIZE on violation. */
void fm_hdr_encode(uint8_t *buf, const struct fm_hdr *h);
int fm_hdr_decode(const uint8_t *buf, size_t len, struct fm_hdr *h);

/* A client name: 1..FM_NAME_MAX bytes of [a-z0-9._-], starting with a
 * letter or digit (it appears in logs, config keys and key files).  0 or
 * -EINVAL. */
int fm_client_name_check(const char *name, size_t len);

/* Payload codecs.  Encoders return bytes written (the fixed length; for
 * HELLO requests FM_HELLO_REQ_MIN plus the name, 0 for a bad name);
 * decoders return 0 or -EPROTO when len is not exactly right (for WRITE
 * the range prefix must be followed by exactly range.len bytes). */
size_t fm_hello_req_encode(uint8_t *buf, const struct fm_hello_req *m);
int fm_hello_req_decode(const uint8_t *buf, size_t len, struct fm_hello_req *m);
size_t fm_hello_rep_encode(uint8_t *buf, const struct fm_hello_rep *m);
int fm_hello_rep_decode(const uint8_t *buf, size_t len, struct fm_hello_rep *m);
size_t fm_alloc_req_encode(uint8_t *buf, uint32_t size);
int fm_alloc_req_decode(const uint8_t *buf, size_t len, uint32_t *size);
size_t fm_alloc_rep_encode(uint8_t *buf, const struct fm_alloc_rep *m);
int fm_alloc_rep_decode(const uint8_t *buf, size_t len, struct fm_alloc_rep *m);
size_t fm_u64_encode(uint8_t *buf, uint64_t v);            /* FREE req */
int fm_free_req_decode(const uint8_t *buf, size_t len, uint64_t *seg_id);
size_t fm_range_encode(uint8_t *buf, const struct fm_range *r);
int fm_read_req_decode(const uint8_t *buf, size_t len, struct fm_range *r);
/* WRITE: payload = range + data; *data points into buf on success. */
int fm_write_req_decode(const uint8_t *buf, size_t len, struct fm_range *r,
			const uint8_t **data);
size_t fm_stat_encode(uint8_t *buf, const struct fm_stat *s);
int fm_stat_decode(const uint8_t *buf, size_t len, struct fm_stat *s);
size_t fm_list_req_encode(uint8_t *buf, uint32_t start);
int fm_list_req_decode(const uint8_t *buf, size_t len, uint32_t *start);
/* LIST reply: caller writes u32 count then entries with fm_list_entry_encode. */
size_t fm_list_entry_encode(uint8_t *buf, uint64_t seg_id, uint32_t size);
int fm_list_rep_decode(const uint8_t *buf, size_t len, uint32_t *count);
void fm_list_rep_entry(const uint8_t *buf, uint32_t i, uint64_t *seg_id,
		       uint32_t *size); /* after a successful decode */

/* DRAIN request: deadline_ms must be 1..FM_NOTICE_DEADLINE_MAX. */
size_t fm_drain_req_encode(uint8_t *buf, uint32_t deadline_ms);
int fm_drain_req_decode(const uint8_t *buf, size_t len, uint32_t *deadline_ms);
/* NOTICE: encode writes FM_NOTICE_LEN(count) bytes (0 when count is above
 * FM_NOTICE_MAX, or nonzero with FM_NOTICE_ALL).  decode checks the
 * exact length, the count, known flags and the deadline: 0 or -EPROTO. */
size_t fm_notice_encode(uint8_t *buf, uint32_t deadline_ms, uint16_t flags,
			const uint64_t *ids, uint16_t count);
int fm_notice_decode(const uint8_t *buf, size_t len, struct fm_notice *n);

const char *fm_op_name(uint8_t op);

/* Little-endian helpers, exported for the record format and tests. */
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t get_le32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static inline uint64_t get_le64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }

static inline uint64_t fm_notice_id(const struct fm_notice *n, unsigned i)
{
	return get_le64(n->ids + 8 * (size_t)i);
}

#endif
