/* protocol.c — encode and decode farmem's wire frames (see protocol.h).
 *
 * Decoders trust nothing: every length is compared with the exact size
 * the message must have before a single field is read.
 */
#include "protocol.h"

#include <errno.h>
#include <string.h>

void fm_hdr_encode(uint8_t *buf, const struct fm_hdr *h)
{
	put_le32(buf, FM_MAGIC);
	buf[4] = FM_PROTO_VERSION;
	buf[5] = h->op;
	put_le16(buf + 6, h->flags);
	put_le32(buf + 8, h->tag);
	put_le32(buf + 12, (uint32_t)h->status);
	put_le32(buf + 16, h->len);
	put_le32(buf + 20, 0);
}

static int op_known(uint8_t op)
{
	uint8_t base = op & (uint8_t)~FM_OP_REPLY;

	/* NOTICE only ever goes from server to client: never with the reply bit. */
	if (op == (FM_OP_NOTICE | FM_OP_REPLY))
		return 0;
	return base >= FM_OP_HELLO && base <= FM_OP_NOTICE;
}

int fm_hdr_decode(const uint8_t *buf, size_t len, struct fm_hdr *h)
{
	if (len < FM_HDR_SIZE)
		return -EPROTO;
	if (get_le32(buf) != FM_MAGIC || buf[4] != FM_PROTO_VERSION)
		return -EPROTO;
	if (!op_known(buf[5]) || get_le16(buf + 6) != 0 || get_le32(buf + 20) != 0)
		return -EPROTO;
	h->op = buf[5];
	h->flags = 0;
	h->tag = get_le32(buf + 8);
	h->status = (int32_t)get_le32(buf + 12);
	h->len = get_le32(buf + 16);
	if (h->len > FM_MAX_PAYLOAD)
		return -EMSGSIZE;
	/* Requests carry no status; replies carry 0 or a negative errno. */
	if (!(h->op & FM_OP_REPLY) && h->status != 0)
		return -EPROTO;
	if ((h->op & FM_OP_REPLY) && (h->status > 0 || h->status < -4095))
		return -EPROTO;
	return 0;
}

int fm_client_name_check(const char *name, size_t len)
{
	if (len == 0 || len > FM_NAME_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return -EINVAL;
	}
	return 0;
}

size_t fm_hello_req_encode(uint8_t *buf, const struct fm_hello_req *m)
{
	size_t n = strnlen(m->name, sizeof(m->name));

	if (fm_client_name_check(m->name, n) < 0)
		return 0;
	put_le16(buf, m->version);
	buf[2] = (uint8_t)n;
	buf[3] = 0;
	memcpy(buf + 4, m->uuid, FM_UUID_LEN);
	memcpy(buf + 4 + FM_UUID_LEN, m->client_nonce, FM_NONCE_LEN);
	memcpy(buf + FM_HELLO_REQ_MIN, m->name, n);
	return FM_HELLO_REQ_MIN + n;
}

int fm_hello_req_decode(const uint8_t *buf, size_t len, struct fm_hello_req *m)
{
	size_t n;

	if (len < FM_HELLO_REQ_MIN || buf[3] != 0)
		return -EPROTO;
	n = buf[2];
	if (len != FM_HELLO_REQ_MIN + n ||
	    fm_client_name_check((const char *)buf + FM_HELLO_REQ_MIN, n) < 0)
		return -EPROTO;
	m->version = get_le16(buf);
	memcpy(m->uuid, buf + 4, FM_UUID_LEN);
	memcpy(m->client_nonce, buf + 4 + FM_UUID_LEN, FM_NONCE_LEN);
	memcpy(m->name, buf + FM_HELLO_REQ_MIN, n);
	m->name[n] = '\0';
	return 0;
}

size_t fm_hello_rep_encode(uint8_t *buf, const struct fm_hello_rep *m)
{
	put_le16(buf, m->version);
	put_le16(buf + 2, 0);
	put_le32(buf + 4, m->segment_max);
	memcpy(buf + 8, m->server_nonce, FM_NONCE_LEN);
	put_le64(buf + 8 + FM_NONCE_LEN, m->boot_id);
	return FM_HELLO_REP_LEN;
}

int fm_hello_rep_decode(const uint8_t *buf, size_t len, struct fm_hello_rep *m)
{
	if (len != FM_HELLO_REP_LEN || get_le16(buf + 2) != 0)
		return -EPROTO;
	m->version = get_le16(buf);
	m->segment_max = get_le32(buf + 4);
	memcpy(m->server_nonce, buf + 8, FM_NONCE_LEN);
	m->boot_id = get_le64(buf + 8 + FM_NONCE_LEN);
	if (m->boot_id == 0)
		return -EPROTO;
	return 0;
}

size_t fm_alloc_req_encode(uint8_t *buf, uint32_t size)
{
	put_le32(buf, size);
	return FM_ALLOC_REQ_LEN;
}

int fm_alloc_req_decode(const uint8_t *buf, size_t len, uint32_t *size)
{
	if (len != FM_ALLOC_REQ_LEN)
		return -EPROTO;
	*size = get_le32(buf);
	return 0;
}

size_t fm_alloc_rep_encode(uint8_t *buf, const struct fm_alloc_rep *m)
{
	put_le64(buf, m->seg_id);
	put_le32(buf + 8, m->size);
	put_le32(buf + 12, m->rkey);
	put_le64(buf + 16, m->remote_addr);
	return FM_ALLOC_REP_LEN;
}

int fm_alloc_rep_decode(const uint8_t *buf, size_t len, struct fm_alloc_rep *m)
{
	if (len != FM_ALLOC_REP_LEN)
		return -EPROTO;
	m->seg_id = get_le64(buf);
	m->size = get_le32(buf + 8);
	m->rkey = get_le32(buf + 12);
	m->remote_addr = get_le64(buf + 16);
	return 0;
}

size_t fm_u64_encode(uint8_t *buf, uint64_t v)
{
	put_le64(buf, v);
	return 8;
}

int fm_free_req_decode(const uint8_t *buf, size_t len, uint64_t *seg_id)
{
	if (len != FM_FREE_REQ_LEN)
		return -EPROTO;
	*seg_id = get_le64(buf);
	return 0;
}

size_t fm_range_encode(uint8_t *buf, const struct fm_range *r)
{
	put_le64(buf, r->seg_id);
	put_le32(buf + 8, r->offset);
	put_le32(buf + 12, r->len);
	return FM_RANGE_LEN;
}

static void range_get(const uint8_t *buf, struct fm_range *r)
{
	r->seg_id = get_le64(buf);
	r->offset = get_le32(buf + 8);
	r->len = get_le32(buf + 12);
}

int fm_read_req_decode(const uint8_t *buf, size_t len, struct fm_range *r)
{
	if (len != FM_RANGE_LEN)
		return -EPROTO;
	range_get(buf, r);
	if (r->len == 0 || r->len > FM_MAX_IO)
		return -EPROTO;
	return 0;
}

int fm_write_req_decode(const uint8_t *buf, size_t len, struct fm_range *r,
			const uint8_t **data)
{
	if (len < FM_RANGE_LEN)
		return -EPROTO;
	range_get(buf, r);
	if (r->len == 0 || r->len > FM_MAX_IO || r->len != len - FM_RANGE_LEN)
		return -EPROTO;
	*data = buf + FM_RANGE_LEN;
	return 0;
}

size_t fm_stat_encode(uint8_t *buf, const struct fm_stat *s)
{
	const uint64_t w64[] = { s->pool_bytes, s->used_bytes, s->free_bytes,
				 s->bytes_read, s->bytes_written, s->reads,
				 s->writes };
	const uint32_t w32[] = { s->segments, s->segment_max, s->clients,
				 s->devices, s->leased, s->locked };
	uint8_t *p = buf;

	for (size_t i = 0; i < 7; i++, p += 8)
		put_le64(p, w64[i]);
	for (size_t i = 0; i < 6; i++, p += 4)
		put_le32(p, w32[i]);
	memset(p, 0, FM_STAT_WIRE - (size_t)(p - buf));
	return FM_STAT_WIRE;
}

int fm_stat_decode(const uint8_t *buf, size_t len, struct fm_stat *s)
{
	uint64_t *r64[] = { &s->pool_bytes, &s->used_bytes, &s->free_bytes,
			    &s->bytes_read, &s->bytes_written, &s->reads,
			    &s->writes };
	uint32_t *r32[] = { &s->segments, &s->segment_max, &s->clients,
			    &s->devices, &s->leased, &s->locked };
	const uint8_t *p = buf;

	if (len != FM_STAT_WIRE)
		return -EPROTO;
	for (size_t i = 0; i < 7; i++, p += 8)
		*r64[i] = get_le64(p);
	for (size_t i = 0; i < 6; i++, p += 4)
		*r32[i] = get_le32(p);
	return 0;
}

size_t fm_list_req_encode(uint8_t *buf, uint32_t start)
{
	put_le32(buf, start);
	return FM_LIST_REQ_LEN;
}

int fm_list_req_decode(const uint8_t *buf, size_t len, uint32_t *start)
{
	if (len != FM_LIST_REQ_LEN)
		return -EPROTO;
	*start = get_le32(buf);
	return 0;
}

size_t fm_list_entry_encode(uint8_t *buf, uint64_t seg_id, uint32_t size)
{
	put_le64(buf, seg_id);
	put_le32(buf + 8, size);
	return FM_LIST_ENTRY_LEN;
}

int fm_list_rep_decode(const uint8_t *buf, size_t len, uint32_t *count)
{
	uint32_t n;

	if (len < 4)
		return -EPROTO;
	n = get_le32(buf);
	if (n > FM_LIST_MAX || len != 4 + (size_t)n * FM_LIST_ENTRY_LEN)
		return -EPROTO;
	*count = n;
	return 0;
}

void fm_list_rep_entry(const uint8_t *buf, uint32_t i, uint64_t *seg_id,
		       uint32_t *size)
{
	const uint8_t *e = buf + 4 + (size_t)i * FM_LIST_ENTRY_LEN;

	*seg_id = get_le64(e);
	*size = get_le32(e + 8);
}

size_t fm_drain_req_encode(uint8_t *buf, uint32_t deadline_ms)
{
	put_le32(buf, deadline_ms);
	return FM_DRAIN_REQ_LEN;
}

int fm_drain_req_decode(const uint8_t *buf, size_t len, uint32_t *deadline_ms)
{
	uint32_t d;

	if (len != FM_DRAIN_REQ_LEN)
		return -EPROTO;
	d = get_le32(buf);
	if (d == 0 || d > FM_NOTICE_DEADLINE_MAX)
		return -EPROTO;
	*deadline_ms = d;
	return 0;
}

size_t fm_notice_encode(uint8_t *buf, uint32_t deadline_ms, uint16_t flags,
			const uint64_t *ids, uint16_t count)
{
	if (count > FM_NOTICE_MAX || ((flags & FM_NOTICE_ALL) && count))
		return 0;
	put_le32(buf, deadline_ms);
	put_le16(buf + 4, flags);
	put_le16(buf + 6, count);
	for (uint16_t i = 0; i < count; i++)
		put_le64(buf + FM_NOTICE_HDR_LEN + 8 * (size_t)i, ids[i]);
	return FM_NOTICE_LEN(count);
}

int fm_notice_decode(const uint8_t *buf, size_t len, struct fm_notice *n)
{
	uint16_t flags, count;

	if (len < FM_NOTICE_HDR_LEN)
		return -EPROTO;
	flags = get_le16(buf + 4);
	count = get_le16(buf + 6);
	if (count > FM_NOTICE_MAX || len != FM_NOTICE_LEN(count))
		return -EPROTO;
	if ((flags & ~FM_NOTICE_ALL) || ((flags & FM_NOTICE_ALL) ? count != 0 : count == 0))
		return -EPROTO;
	n->deadline_ms = get_le32(buf);
	if (n->deadline_ms == 0 || n->deadline_ms > FM_NOTICE_DEADLINE_MAX)
		return -EPROTO;
	n->flags = flags;
	n->count = count;
	n->ids = buf + FM_NOTICE_HDR_LEN;
	return 0;
}

const char *fm_op_name(uint8_t op)
{
	static const char *const names[] = {
		"?", "HELLO", "AUTH", "ALLOC", "FREE", "WRITE", "READ", "STAT",
		"PING", "LIST", "DRAIN", "NOTICE",
	};
	uint8_t base = op & (uint8_t)~FM_OP_REPLY;

	return base < sizeof(names) / sizeof(names[0]) ? names[base] : "?";
}
