/* session.c — one connection's protocol: authentication, then requests.
 *
 * Knows frames, not sockets: the server hands it complete frames and
 * sends what it appends to the output queue, so tests and the fuzzer can
 * drive it directly.  A peer that breaks the protocol is closed with the
 * reason logged; a request that is well formed but cannot be served
 * (pool full, not your segment, range too long) gets an error reply.
 */
#include "memserver.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef int (*op_fn)(struct ms_ctx *ctx, struct ms_session *s,
		     const struct fm_hdr *h, const uint8_t *pl,
		     struct ms_buf *out);

void ms_session_init(struct ms_session *s, const char *peer)
{
	memset(s, 0, sizeof(*s));
	s->state = MS_HELLO;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
}

uint32_t ms_session_max_payload(const struct ms_session *s)
{
	switch (s->state) {
	case MS_HELLO:
		return FM_HELLO_REQ_MAX;
	case MS_AUTH:
		return FM_AUTH_LEN;
	default:
		return FM_MAX_PAYLOAD;
	}
}

/* Reserve a reply of plen payload bytes; the caller fills the payload
 * at the returned pointer and calls reply_done(). */
static uint8_t *reply_begin(struct ms_buf *out, size_t plen)
{
	uint8_t *p = ms_buf_reserve(out, FM_HDR_SIZE + plen);

	return p ? p + FM_HDR_SIZE : NULL;
}

static void reply_done(struct ms_buf *out, const struct fm_hdr *req,
		       int32_t status, uint32_t plen)
{
	struct fm_hdr rh = {
		.op = (uint8_t)(req->op | FM_OP_REPLY),
		.tag = req->tag,
		.status = status,
		.len = plen,
	};

	fm_hdr_encode(out->data + out->head + out->len, &rh);
	ms_buf_commit(out, FM_HDR_SIZE + plen);
}

static int reply_status(struct ms_buf *out, const struct fm_hdr *req,
			int32_t status)
{
	if (!reply_begin(out, 0))
		return -ENOMEM;
	reply_done(out, req, status, 0);
	return 0;
}

static int malformed(struct ms_session *s, const struct fm_hdr *h)
{
	log_warn("%s: closing: malformed %s payload (%u bytes)", s->peer,
		 fm_op_name(h->op), h->len);
	return -EPROTO;
}

static int op_hello(struct ms_ctx *ctx, struct ms_session *s,
		    const struct fm_hdr *h, const uint8_t *pl,
		    struct ms_buf *out)
{
	struct fm_hello_req req;
	struct fm_hello_rep rep = { .version = FM_PROTO_VERSION };
	uint8_t *p;

	if (fm_hello_req_decode(pl, h->len, &req) < 0)
		return malformed(s, h);
	snprintf(s->auth.name, sizeof(s->auth.name), "%s", req.name);
	memcpy(s->auth.uuid, req.uuid, FM_UUID_LEN);
	memcpy(s->auth.client_nonce, req.client_nonce, FM_NONCE_LEN);
	fm_random(s->auth.server_nonce, FM_NONCE_LEN);
	s->auth.boot_id = ctx->boot_id;
	rep.segment_max = ctx->segs.seg_max;
	rep.boot_id = ctx->boot_id;
	memcpy(rep.server_nonce, s->auth.server_nonce, FM_NONCE_LEN);
	p = reply_begin(out, FM_HELLO_REP_LEN);
	if (!p)
		return -ENOMEM;
	fm_hello_rep_encode(p, &rep);
	if (req.version != FM_PROTO_VERSION) {
		log_warn("%s: closing: speaks protocol version %u, we speak %u",
			 s->peer, req.version, FM_PROTO_VERSION);
		reply_done(out, h, -EPROTONOSUPPORT, FM_HELLO_REP_LEN);
		return MS_CLOSE_AFTER_FLUSH;
	}
	reply_done(out, h, 0, FM_HELLO_REP_LEN);
	s->state = MS_AUTH;
	return 0;
}

/* The key of the client HELLO named, derived from the secret; on a MAC
 * that does not verify the session forgets it again. */
static int auth_check(struct ms_ctx *ctx, struct ms_session *s,
		      const uint8_t *mac)
{
	struct fm_identity id;
	int rc;

	rc = fm_identity_derive(&ctx->secret, s->auth.name, &id);
	if (rc == 0) {
		memcpy(s->auth.key, id.key, FM_KEY_LEN);
		rc = fm_auth_verify(&s->auth, FM_AUTH_CLIENT, mac);
	}
	fm_wipe(&id, sizeof(id));
	if (rc < 0)
		fm_wipe(s->auth.key, FM_KEY_LEN);
	return rc;
}

static int op_auth(struct ms_ctx *ctx, struct ms_session *s,
		   const struct fm_hdr *h, const uint8_t *pl,
		   struct ms_buf *out)
{
	char uuid[37];
	uint8_t *p;

	if (h->len != FM_AUTH_LEN)
		return malformed(s, h);
	fm_uuid_format(s->auth.uuid, uuid);
	if (auth_check(ctx, s, pl) < 0) {
		log_warn("%s: closing: authentication failed for client %s "
			 "device %s (wrong key or secret?)", s->peer,
			 s->auth.name, uuid);
		if (reply_status(out, h, -EACCES) < 0)
			return -ENOMEM;
		return MS_CLOSE_AFTER_FLUSH;
	}
	p = reply_begin(out, FM_MAC_LEN);
	if (!p)
		return -ENOMEM;
	s->dev = ms_devtab_attach(&ctx->devs, s->auth.name, s->auth.uuid);
	if (!s->dev) {
		log_err("%s: closing: out of memory for device %s", s->peer, uuid);
		return -ENOMEM;
	}
	fm_auth_mac(&s->auth, FM_AUTH_SERVER, p);
	reply_done(out, h, 0, FM_MAC_LEN);
	s->state = MS_READY;
	ctx->stats.clients++;
	log_debug("%s: client %s device %s authenticated", s->peer,
		  s->auth.name, uuid);
	return 0;
}

static int op_alloc(struct ms_ctx *ctx, struct ms_session *s,
		    const struct fm_hdr *h, const uint8_t *pl,
		    struct ms_buf *out)
{
	struct fm_alloc_rep rep = { 0 };
	uint32_t size;
	uint8_t *p;
	int rc;

	if (fm_alloc_req_decode(pl, h->len, &size) < 0)
		return malformed(s, h);
	rc = ms_elastic_alloc_ok(ctx);
	if (rc == 0)
		rc = ms_devtab_quota_check(s->dev);
	if (rc == 0)
		rc = ms_segtab_alloc(&ctx->segs, s->dev->id, size, &rep.seg_id);
	if (rc < 0) {
		log_debug("%s: ALLOC %u for client %s: %s", s->peer, size,
			  s->auth.name, strerror(-rc));
		return reply_status(out, h, rc);
	}
	ms_devtab_count(s->dev, 1);
	rep.size = size;
	p = reply_begin(out, FM_ALLOC_REP_LEN);
	if (!p)
		return -ENOMEM;
	fm_alloc_rep_encode(p, &rep);
	reply_done(out, h, 0, FM_ALLOC_REP_LEN);
	return 0;
}

static int op_free(struct ms_ctx *ctx, struct ms_session *s,
		   const struct fm_hdr *h, const uint8_t *pl,
		   struct ms_buf *out)
{
	uint64_t id;
	int rc;

	if (fm_free_req_decode(pl, h->len, &id) < 0)
		return malformed(s, h);
	rc = ms_segtab_free(&ctx->segs, s->dev->id, id);
	if (rc == 0) {
		ms_devtab_count(s->dev, -1);
		for (struct ms_free_hook *k = ctx->free_hooks; k; k = k->next)
			k->fn(k->arg, id);
	}
	return reply_status(out, h, rc);
}

static int op_write(struct ms_ctx *ctx, struct ms_session *s,
		    const struct fm_hdr *h, const uint8_t *pl,
		    struct ms_buf *out)
{
	struct fm_range r;
	const uint8_t *data;
	uint8_t *dst;
	int rc;

	if (fm_write_req_decode(pl, h->len, &r, &data) < 0)
		return malformed(s, h);
	rc = ms_segtab_range(&ctx->segs, s->dev->id, r.seg_id, r.offset,
			     r.len, &dst);
	if (rc == 0) {
		memcpy(dst, data, r.len);
		ctx->stats.writes++;
		ctx->stats.bytes_written += r.len;
	}
	return reply_status(out, h, rc);
}

static int op_read(struct ms_ctx *ctx, struct ms_session *s,
		   const struct fm_hdr *h, const uint8_t *pl,
		   struct ms_buf *out)
{
	struct fm_range r;
	uint8_t *src, *p;
	int rc;

	if (fm_read_req_decode(pl, h->len, &r) < 0)
		return malformed(s, h);
	if (r.len > FM_MAX_IO)
		return reply_status(out, h, -EINVAL);
	rc = ms_segtab_range(&ctx->segs, s->dev->id, r.seg_id, r.offset,
			     r.len, &src);
	if (rc < 0)
		return reply_status(out, h, rc);
	p = reply_begin(out, r.len);
	if (!p)
		return -ENOMEM;
	memcpy(p, src, r.len);
	reply_done(out, h, 0, r.len);
	ctx->stats.reads++;
	ctx->stats.bytes_read += r.len;
	return 0;
}

void ms_ctx_new_boot(struct ms_ctx *ctx)
{
	do
		fm_random(&ctx->boot_id, sizeof(ctx->boot_id));
	while (ctx->boot_id == 0);
	ms_segtab_seed(&ctx->segs, (uint32_t)(ctx->boot_id >> 32));
}

void ms_ctx_stat(const struct ms_ctx *ctx, struct fm_stat *st)
{
	memset(st, 0, sizeof(*st));
	st->pool_bytes = ms_segtab_pool_bytes(&ctx->segs);
	st->used_bytes = ms_segtab_used_bytes(&ctx->segs);
	st->free_bytes = st->pool_bytes - st->used_bytes;
	st->bytes_read = ctx->stats.bytes_read;
	st->bytes_written = ctx->stats.bytes_written;
	st->reads = ctx->stats.reads;
	st->writes = ctx->stats.writes;
	st->segments = ctx->segs.nused;
	st->segment_max = ctx->segs.seg_max;
	st->clients = ctx->stats.clients;
	st->devices = ms_devtab_holding(&ctx->devs);
	st->leased = ms_devtab_leased(&ctx->devs);
	st->locked = (uint32_t)ctx->pool_locked;
}

static int op_stat(struct ms_ctx *ctx, struct ms_session *s,
		   const struct fm_hdr *h, const uint8_t *pl,
		   struct ms_buf *out)
{
	struct fm_stat st;
	uint8_t *p;

	(void)pl;
	if (h->len != 0)
		return malformed(s, h);
	ms_ctx_stat(ctx, &st);
	p = reply_begin(out, FM_STAT_WIRE);
	if (!p)
		return -ENOMEM;
	fm_stat_encode(p, &st);
	reply_done(out, h, 0, FM_STAT_WIRE);
	return 0;
}

static int op_ping(struct ms_ctx *ctx, struct ms_session *s,
		   const struct fm_hdr *h, const uint8_t *pl,
		   struct ms_buf *out)
{
	uint8_t *p;

	(void)ctx;
	if (h->len > FM_PING_MAX)
		return malformed(s, h);
	p = reply_begin(out, h->len);
	if (!p)
		return -ENOMEM;
	if (h->len)
		memcpy(p, pl, h->len);
	reply_done(out, h, 0, h->len);
	return 0;
}

static int op_list(struct ms_ctx *ctx, struct ms_session *s,
		   const struct fm_hdr *h, const uint8_t *pl,
		   struct ms_buf *out)
{
	/* The server is one thread; one reply's worth of entries. */
	static uint64_t ids[FM_LIST_MAX];
	static uint32_t sizes[FM_LIST_MAX];
	uint32_t start, n;
	uint8_t *p;

	if (fm_list_req_decode(pl, h->len, &start) < 0)
		return malformed(s, h);
	n = ms_segtab_list(&ctx->segs, s->dev->id, start, ids, sizes,
			   FM_LIST_MAX);
	p = reply_begin(out, 4 + (size_t)n * FM_LIST_ENTRY_LEN);
	if (!p)
		return -ENOMEM;
	put_le32(p, n);
	for (uint32_t i = 0; i < n; i++)
		fm_list_entry_encode(p + 4 + (size_t)i * FM_LIST_ENTRY_LEN,
				     ids[i], sizes[i]);
	reply_done(out, h, 0, 4 + n * FM_LIST_ENTRY_LEN);
	return 0;
}

/* Only the cluster identity (the secret itself, never a client's key
 * file) may take a whole server out of service. */
static int op_drain(struct ms_ctx *ctx, struct ms_session *s,
		    const struct fm_hdr *h, const uint8_t *pl,
		    struct ms_buf *out)
{
	uint32_t deadline_ms;

	if (fm_drain_req_decode(pl, h->len, &deadline_ms) < 0)
		return malformed(s, h);
	if (strcmp(s->auth.name, FM_CLUSTER_NAME) != 0) {
		log_warn("%s: DRAIN refused: client %s is not the cluster identity",
			 s->peer, s->auth.name);
		return reply_status(out, h, -EPERM);
	}
	ms_elastic_drain(ctx, deadline_ms);
	return reply_status(out, h, 0);
}

static const op_fn ready_ops[] = {
	[FM_OP_ALLOC] = op_alloc,
	[FM_OP_FREE] = op_free,
	[FM_OP_WRITE] = op_write,
	[FM_OP_READ] = op_read,
	[FM_OP_STAT] = op_stat,
	[FM_OP_PING] = op_ping,
	[FM_OP_LIST] = op_list,
	[FM_OP_DRAIN] = op_drain,
};

static int refuse(struct ms_session *s, const struct fm_hdr *h,
		  const char *why)
{
	log_warn("%s: closing: %s %s", s->peer, fm_op_name(h->op), why);
	return -EPROTO;
}

int ms_session_frame(struct ms_ctx *ctx, struct ms_session *s,
		     const struct fm_hdr *h, const uint8_t *payload,
		     struct ms_buf *out)
{
	if (h->status != 0 || (h->op & FM_OP_REPLY))
		return refuse(s, h, "is not a request (reply bit or status set)");
	if (h->len > ms_session_max_payload(s))
		return refuse(s, h, "payload too large for this stage");
	switch (s->state) {
	case MS_HELLO:
		if (h->op != FM_OP_HELLO)
			return refuse(s, h, "before HELLO");
		return op_hello(ctx, s, h, payload, out);
	case MS_AUTH:
		if (h->op != FM_OP_AUTH)
			return refuse(s, h, "before authentication");
		return op_auth(ctx, s, h, payload, out);
	case MS_READY:
		break;
	}
	if (h->op >= sizeof(ready_ops) / sizeof(ready_ops[0]) || !ready_ops[h->op])
		return refuse(s, h, "is not a valid request here");
	return ready_ops[h->op](ctx, s, h, payload, out);
}

void ms_session_end(struct ms_ctx *ctx, struct ms_session *s)
{
	if (s->state == MS_READY && s->dev) {
		ms_devtab_detach(&ctx->devs, s->dev, ctx->now_ms());
		ctx->stats.clients--;
	}
	s->dev = NULL;
	s->state = MS_HELLO;
	fm_wipe(&s->auth, sizeof(s->auth));
	fm_chan_wipe(&s->chan);
}
