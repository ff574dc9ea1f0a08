/* test_segtab.c — the memserver's own logic without sockets: segment
 * slots and generations, device leases, and whole sessions driven frame
 * by frame (authentication, isolation between devices and between
 * clients, quotas, a full pool, protocol violations). */
#include "log.h"
#include "tap.h"
#include "../../memserver/memserver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SEG   (64u << 10)
#define NSEG  8

static uint8_t pool[SEG * NSEG];

/* ---- segtab.c ---- */

static int t_alloc_free_generation(void)
{
	struct ms_segtab t;
	uint64_t a, b;
	uint8_t *p;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	CHECK(t.nslots == NSEG && ms_segtab_pool_bytes(&t) == sizeof(pool));
	CHECK(ms_segtab_alloc(&t, 1, SEG, &a) == 0);
	CHECK(ms_segtab_used_bytes(&t) == SEG);
	CHECK(ms_segtab_free(&t, 1, a) == 0);
	CHECK(ms_segtab_free(&t, 1, a) == -ENOENT);   /* twice */
	/* The slot comes back with a new generation: the old id is dead. */
	CHECK(ms_segtab_alloc(&t, 1, SEG, &b) == 0);
	CHECK((uint32_t)a == (uint32_t)b && a != b);
	CHECK(ms_segtab_range(&t, 1, a, 0, 4096, &p) == -ENOENT);
	CHECK(ms_segtab_range(&t, 1, b, 0, 4096, &p) == 0);
	CHECK(ms_segtab_free(&t, 1, a) == -ENOENT);
	ms_segtab_fini(&t);
	return 0;
}

static int t_alloc_sizes(void)
{
	struct ms_segtab t;
	uint64_t id;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	CHECK(ms_segtab_alloc(&t, 1, 0, &id) == -EINVAL);
	CHECK(ms_segtab_alloc(&t, 1, 1000, &id) == -EINVAL);
	CHECK(ms_segtab_alloc(&t, 1, SEG + 4096, &id) == -EINVAL);
	CHECK(ms_segtab_alloc(&t, 0, SEG, &id) == -EINVAL);  /* no owner */
	CHECK(ms_segtab_alloc(&t, 1, 4096, &id) == 0);
	CHECK(t.nused == 1);
	ms_segtab_fini(&t);
	CHECK(ms_segtab_init(&t, pool, SEG - 1, SEG) == -EINVAL);
	CHECK(ms_segtab_init(&t, pool, sizeof(pool), 1000) == -EINVAL);
	return 0;
}

static int t_full_pool(void)
{
	struct ms_segtab t;
	uint64_t ids[NSEG], extra;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	for (int i = 0; i < NSEG; i++)
		CHECK(ms_segtab_alloc(&t, 1 + (uint32_t)(i % 2), SEG, &ids[i]) == 0);
	CHECK(ms_segtab_alloc(&t, 3, SEG, &extra) == -ENOSPC);
	CHECK(ms_segtab_used_bytes(&t) == sizeof(pool));
	CHECK(ms_segtab_free(&t, 2, ids[1]) == 0);
	CHECK(ms_segtab_alloc(&t, 3, SEG, &extra) == 0);
	CHECK((uint32_t)extra == (uint32_t)ids[1]);
	ms_segtab_fini(&t);
	return 0;
}

static int t_ownership_and_ranges(void)
{
	struct ms_segtab t;
	uint64_t a;
	uint8_t *p;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	CHECK(ms_segtab_alloc(&t, 1, 8192, &a) == 0);
	CHECK(ms_segtab_range(&t, 2, a, 0, 4096, &p) == -ENOENT);
	CHECK(ms_segtab_free(&t, 2, a) == -ENOENT);
	CHECK(ms_segtab_range(&t, 1, a, 4096, 4096, &p) == 0);
	CHECK(p == pool + (size_t)(uint32_t)a * SEG + 4096);
	CHECK(ms_segtab_range(&t, 1, a, 4096, 4097, &p) == -ERANGE);
	CHECK(ms_segtab_range(&t, 1, a, 8192, 1, &p) == -ERANGE);
	CHECK(ms_segtab_range(&t, 1, a, UINT32_MAX, UINT32_MAX, &p) == -ERANGE);
	/* Ids that name no slot at all. */
	CHECK(ms_segtab_range(&t, 1, a + NSEG, 0, 1, &p) == -ENOENT);
	CHECK(ms_segtab_range(&t, 1, UINT64_MAX, 0, 1, &p) == -ENOENT);
	CHECK(ms_segtab_range(&t, 1, 0, 0, 1, &p) == -ENOENT);
	ms_segtab_fini(&t);
	return 0;
}

static int t_freed_memory_is_zeroed(void)
{
	struct ms_segtab t;
	uint64_t a, b;
	uint8_t *p;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &a) == 0);
	CHECK(ms_segtab_range(&t, 1, a, 0, SEG, &p) == 0);
	memset(p, 0xab, SEG);
	CHECK(ms_segtab_free(&t, 1, a) == 0);
	CHECK(ms_segtab_alloc(&t, 2, SEG, &b) == 0);
	CHECK(ms_segtab_range(&t, 2, b, 0, SEG, &p) == 0);
	for (size_t i = 0; i < SEG; i++)
		CHECK(p[i] == 0);      /* device 2 never sees device 1's bytes */
	ms_segtab_fini(&t);
	return 0;
}

static int t_list_and_free_owner(void)
{
	struct ms_segtab t;
	uint64_t ids[NSEG], got[NSEG];
	uint32_t sizes[NSEG];

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	for (int i = 0; i < 6; i++)
		CHECK(ms_segtab_alloc(&t, i < 4 ? 1 : 2, SEG, &ids[i]) == 0);
	CHECK(ms_segtab_list(&t, 1, 0, got, sizes, NSEG) == 4);
	CHECK(ms_segtab_list(&t, 1, 3, got, sizes, NSEG) == 1);
	CHECK(ms_segtab_list(&t, 1, 4, got, sizes, NSEG) == 0);
	CHECK(ms_segtab_list(&t, 1, 0, got, sizes, 2) == 2);
	CHECK(ms_segtab_list(&t, 2, 0, got, sizes, NSEG) == 2);
	CHECK(got[0] == ids[4] || got[0] == ids[5]);
	CHECK(sizes[0] == SEG);
	CHECK(ms_segtab_free_owner(&t, 1) == 4);
	CHECK(t.nused == 2);
	CHECK(ms_segtab_list(&t, 1, 0, got, sizes, NSEG) == 0);
	ms_segtab_fini(&t);
	return 0;
}

/* ---- devtab.c ---- */

static const uint8_t uuid_a[FM_UUID_LEN] = { 0xaa, 1 };
static const uint8_t uuid_b[FM_UUID_LEN] = { 0xbb, 2 };

static int t_lease_cycle(void)
{
	struct ms_segtab t;
	struct ms_devtab d;
	struct ms_device *a, *a2;
	uint64_t id;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	ms_devtab_init(&d, 1000);
	a = ms_devtab_attach(&d, "c", uuid_a);
	CHECK(a && a->conns == 1 && d.count == 1);
	CHECK(ms_segtab_alloc(&t, a->id, SEG, &id) == 0);
	a->segs++;
	CHECK(ms_devtab_next_expiry(&d) == UINT64_MAX);
	ms_devtab_detach(&d, a, 5000);
	CHECK(ms_devtab_next_expiry(&d) == 6000 && ms_devtab_leased(&d) == 1);
	ms_devtab_expire(&d, &t, 5999);          /* not yet */
	CHECK(d.count == 1 && t.nused == 1);
	/* Back within the lease: same device, lease cancelled. */
	a2 = ms_devtab_attach(&d, "c", uuid_a);
	CHECK(a2 == a && a2->conns == 1 && ms_devtab_leased(&d) == 0);
	ms_devtab_expire(&d, &t, 100000);
	CHECK(t.nused == 1);
	ms_devtab_detach(&d, a2, 7000);
	ms_devtab_expire(&d, &t, 8000);          /* lease over */
	CHECK(d.count == 0 && t.nused == 0);
	CHECK(ms_devtab_next_expiry(&d) == UINT64_MAX);
	ms_devtab_fini(&d);
	ms_segtab_fini(&t);
	return 0;
}

static int t_lease_two_connections(void)
{
	struct ms_devtab d;
	struct ms_device *a, *b;

	ms_devtab_init(&d, 1000);
	a = ms_devtab_attach(&d, "c", uuid_a);
	CHECK(ms_devtab_attach(&d, "c", uuid_a) == a && a->conns == 2);
	b = ms_devtab_attach(&d, "c", uuid_b);
	CHECK(b != a && b->id != a->id && d.count == 2);
	a->segs = 1;
	ms_devtab_detach(&d, a, 0);              /* one of two: no lease */
	CHECK(ms_devtab_next_expiry(&d) == UINT64_MAX);
	ms_devtab_detach(&d, a, 0);
	CHECK(ms_devtab_next_expiry(&d) == 1000);
	/* A device holding nothing is forgotten at once. */
	ms_devtab_detach(&d, b, 0);
	CHECK(d.count == 1 && ms_devtab_holding(&d) == 1);
	ms_devtab_fini(&d);
	return 0;
}

/* ---- session.c: whole conversations ---- */

static uint64_t fake_now;
static uint64_t now_fake(void) { return fake_now; }

struct rig {
	struct ms_ctx ctx;
	struct ms_buf out;
	uint32_t tag;
};

static int rig_init(struct rig *r)
{
	memset(r, 0, sizeof(*r));
	if (fm_auth_init() < 0)
		return -1;
	memset(r->ctx.secret.bytes, 's', 32);
	r->ctx.secret.len = 32;
	r->ctx.now_ms = now_fake;
	r->ctx.boot_id = 0x0123456789abcdefull;
	ms_devtab_init(&r->ctx.devs, 1000);
	return ms_segtab_init(&r->ctx.segs, pool, sizeof(pool), SEG);
}

static void rig_fini(struct rig *r)
{
	ms_devtab_fini(&r->ctx.devs);
	ms_segtab_fini(&r->ctx.segs);
	ms_buf_free(&r->out);
}

/* Send one request; return the session's verdict.  The reply (if any)
 * is decoded into *rh and its payload copied to rp. */
static int send_req(struct rig *r, struct ms_session *s, uint8_t op,
		    const uint8_t *pl, uint32_t len, struct fm_hdr *rh,
		    uint8_t *rp)
{
	struct fm_hdr h = { .op = op, .tag = ++r->tag, .len = len };
	int rc;

	r->out.head = r->out.len = 0;
	rc = ms_session_frame(&r->ctx, s, &h, pl, &r->out);
	memset(rh, 0, sizeof(*rh));
	if (r->out.len >= FM_HDR_SIZE) {
		const uint8_t *o = r->out.data + r->out.head;

		if (fm_hdr_decode(o, r->out.len, rh) < 0 || rh->tag != h.tag ||
		    rh->op != (op | FM_OP_REPLY) || r->out.len != FM_HDR_SIZE + rh->len)
			return -9999;
		if (rp)
			memcpy(rp, o + FM_HDR_SIZE, rh->len);
	}
	return rc;
}

/* HELLO and AUTH as client name with key (NULL: name's real key,
 * derived from the rig's secret).  0 when both sides proved themselves,
 * else the AUTH reply's status or a negative test code. */
static int handshake_key(struct rig *r, struct ms_session *s, const char *name,
			 const uint8_t *uuid, const uint8_t *key)
{
	struct fm_hello_req hq = { .version = FM_PROTO_VERSION };
	struct fm_hello_rep hp;
	struct fm_auth_session a = { 0 };
	struct fm_identity id;
	uint8_t buf[128], mac[FM_MAC_LEN];
	struct fm_hdr rh;
	size_t len;
	int rc;

	ms_session_init(s, "test");
	memcpy(hq.uuid, uuid, FM_UUID_LEN);
	snprintf(hq.name, sizeof(hq.name), "%s", name);
	fm_random(hq.client_nonce, FM_NONCE_LEN);
	len = fm_hello_req_encode(buf, &hq);
	if (send_req(r, s, FM_OP_HELLO, buf, (uint32_t)len, &rh, buf) != 0 ||
	    rh.status != 0 || fm_hello_rep_decode(buf, rh.len, &hp) < 0 ||
	    hp.segment_max != SEG || hp.boot_id != r->ctx.boot_id)
		return -1;
	if (fm_identity_derive(&r->ctx.secret, name, &id) < 0)
		return -4;
	snprintf(a.name, sizeof(a.name), "%s", name);
	memcpy(a.uuid, uuid, FM_UUID_LEN);
	memcpy(a.key, key ? key : id.key, FM_KEY_LEN);
	memcpy(a.client_nonce, hq.client_nonce, FM_NONCE_LEN);
	memcpy(a.server_nonce, hp.server_nonce, FM_NONCE_LEN);
	a.boot_id = hp.boot_id;
	fm_auth_mac(&a, FM_AUTH_CLIENT, mac);
	rc = send_req(r, s, FM_OP_AUTH, mac, FM_MAC_LEN, &rh, buf);
	if (rc != 0)
		return rc == MS_CLOSE_AFTER_FLUSH ? rh.status : -2;
	/* The server proves it holds the secret behind our key too, and
	 * both ends now hold the same session (what channel keys use). */
	if (fm_auth_verify(&a, FM_AUTH_SERVER, buf) != 0 ||
	    memcmp(s->auth.key, a.key, FM_KEY_LEN) ||
	    memcmp(s->auth.client_nonce, a.client_nonce, FM_NONCE_LEN) ||
	    memcmp(s->auth.server_nonce, a.server_nonce, FM_NONCE_LEN))
		return -3;
	return 0;
}

static int handshake(struct rig *r, struct ms_session *s, const uint8_t *uuid,
		     int good_secret)
{
	uint8_t wrong[FM_KEY_LEN];

	memset(wrong, 'w', sizeof(wrong));
	return handshake_key(r, s, FM_CLUSTER_NAME, uuid, good_secret ? NULL : wrong);
}

static int do_alloc(struct rig *r, struct ms_session *s, uint32_t size,
		    uint64_t *id)
{
	uint8_t buf[64];
	struct fm_hdr rh;
	struct fm_alloc_rep rep;

	fm_alloc_req_encode(buf, size);
	if (send_req(r, s, FM_OP_ALLOC, buf, FM_ALLOC_REQ_LEN, &rh, buf) != 0)
		return -9998;
	if (rh.status)
		return rh.status;
	if (fm_alloc_rep_decode(buf, rh.len, &rep) < 0 || rep.size != size)
		return -9997;
	*id = rep.seg_id;
	return 0;
}

static int do_io(struct rig *r, struct ms_session *s, uint8_t op, uint64_t id,
		 uint32_t off, uint32_t len, uint8_t *data)
{
	static uint8_t buf[FM_RANGE_LEN + 8192];
	struct fm_range rg = { .seg_id = id, .offset = off, .len = len };
	struct fm_hdr rh;
	uint32_t plen = FM_RANGE_LEN;

	fm_range_encode(buf, &rg);
	if (op == FM_OP_WRITE) {
		memcpy(buf + FM_RANGE_LEN, data, len);
		plen += len;
	}
	if (send_req(r, s, op, buf, plen, &rh, op == FM_OP_READ ? data : NULL))
		return -9996;
	if (rh.status == 0 && op == FM_OP_READ && rh.len != len)
		return -9995;
	return rh.status;
}

static int t_session_auth(void)
{
	struct rig r;
	struct ms_session s;

	CHECK(rig_init(&r) == 0);
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);
	CHECK(s.state == MS_READY && r.ctx.stats.clients == 1);
	ms_session_end(&r.ctx, &s);
	CHECK(r.ctx.stats.clients == 0);
	/* The wrong secret: an EACCES reply, then the connection closes. */
	CHECK(handshake(&r, &s, uuid_a, 0) == -EACCES);
	CHECK(s.state != MS_READY && r.ctx.devs.count == 0);
	ms_session_end(&r.ctx, &s);
	rig_fini(&r);
	return 0;
}

static int t_session_needs_auth(void)
{
	static const uint8_t ops[] = { FM_OP_ALLOC, FM_OP_READ, FM_OP_STAT,
				       FM_OP_PING, FM_OP_LIST, FM_OP_AUTH };
	struct rig r;
	struct ms_session s;
	struct fm_hdr rh;
	uint8_t pl[FM_MAC_LEN] = { 0 };

	CHECK(rig_init(&r) == 0);
	for (size_t i = 0; i < sizeof(ops); i++) {
		ms_session_init(&s, "test");
		CHECK(send_req(&r, &s, ops[i], pl, 4, &rh, NULL) < 0);
		CHECK(r.out.len == 0);          /* nothing served */
	}
	rig_fini(&r);
	return 0;
}

static int t_session_isolation(void)
{
	struct rig r;
	struct ms_session a, b;
	uint8_t page[4096], back[4096];
	uint64_t id;
	uint8_t buf[64];
	struct fm_hdr rh;

	CHECK(rig_init(&r) == 0);
	CHECK(handshake(&r, &a, uuid_a, 1) == 0);
	CHECK(handshake(&r, &b, uuid_b, 1) == 0);
	CHECK(do_alloc(&r, &a, SEG, &id) == 0);
	memset(page, 0x5a, sizeof(page));
	CHECK(do_io(&r, &a, FM_OP_WRITE, id, 4096, 4096, page) == 0);
	CHECK(do_io(&r, &b, FM_OP_READ, id, 4096, 4096, back) == -ENOENT);
	CHECK(do_io(&r, &b, FM_OP_WRITE, id, 0, 4096, page) == -ENOENT);
	fm_u64_encode(buf, id);
	CHECK(send_req(&r, &b, FM_OP_FREE, buf, 8, &rh, NULL) == 0);
	CHECK(rh.status == -ENOENT);
	CHECK(do_io(&r, &a, FM_OP_READ, id, 4096, 4096, back) == 0);
	CHECK(memcmp(page, back, 4096) == 0);
	CHECK(do_io(&r, &a, FM_OP_READ, id, SEG - 4096, 8192, back) == -ERANGE);
	CHECK(r.ctx.stats.bytes_written == 4096 && r.ctx.stats.bytes_read == 4096);
	ms_session_end(&r.ctx, &a);
	ms_session_end(&r.ctx, &b);
	rig_fini(&r);
	return 0;
}

struct hook_seen {
	unsigned calls;
	uint64_t last_id;
};

static void hook_record(void *arg, uint64_t seg_id)
{
	struct hook_seen *h = arg;

	h->calls++;
	h->last_id = seg_id;
}

/* The rdma listeners learn of every successful FREE at once (to revoke
 * grants before the slot is reused), and of nothing else. */
static int t_session_free_hooks(void)
{
	struct hook_seen seen1 = { 0 }, seen2 = { 0 };
	struct ms_free_hook h1 = { .fn = hook_record, .arg = &seen1 };
	struct ms_free_hook h2 = { .fn = hook_record, .arg = &seen2, .next = &h1 };
	struct rig r;
	struct ms_session a, b;
	uint64_t id;
	uint8_t buf[8];
	struct fm_hdr rh;

	CHECK(rig_init(&r) == 0);
	r.ctx.free_hooks = &h2;
	CHECK(handshake(&r, &a, uuid_a, 1) == 0);
	CHECK(handshake(&r, &b, uuid_b, 1) == 0);
	CHECK(do_alloc(&r, &a, SEG, &id) == 0);
	fm_u64_encode(buf, id);
	CHECK(send_req(&r, &b, FM_OP_FREE, buf, 8, &rh, NULL) == 0);
	CHECK(rh.status == -ENOENT);
	CHECK(seen1.calls == 0 && seen2.calls == 0);   /* not b's to free */
	CHECK(send_req(&r, &a, FM_OP_FREE, buf, 8, &rh, NULL) == 0);
	CHECK(rh.status == 0);
	CHECK(seen1.calls == 1 && seen1.last_id == id);
	CHECK(seen2.calls == 1 && seen2.last_id == id);
	CHECK(send_req(&r, &a, FM_OP_FREE, buf, 8, &rh, NULL) == 0);
	CHECK(rh.status == -ENOENT);                  /* already gone */
	CHECK(seen1.calls == 1 && seen2.calls == 1);
	ms_session_end(&r.ctx, &a);
	ms_session_end(&r.ctx, &b);
	rig_fini(&r);
	return 0;
}

static int t_session_full_pool_and_stat(void)
{
	struct rig r;
	struct ms_session s;
	uint64_t id;
	uint8_t buf[FM_STAT_WIRE];
	struct fm_hdr rh;
	struct fm_stat st;

	CHECK(rig_init(&r) == 0);
	r.ctx.pool_locked = 1;
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);
	for (int i = 0; i < NSEG; i++)
		CHECK(do_alloc(&r, &s, SEG, &id) == 0);
	CHECK(do_alloc(&r, &s, SEG, &id) == -ENOSPC);
	CHECK(do_alloc(&r, &s, 1000, &id) == -EINVAL);
	CHECK(send_req(&r, &s, FM_OP_STAT, NULL, 0, &rh, buf) == 0);
	CHECK(rh.status == 0 && fm_stat_decode(buf, rh.len, &st) == 0);
	CHECK(st.pool_bytes == sizeof(pool) && st.free_bytes == 0);
	CHECK(st.segments == NSEG && st.segment_max == SEG);
	CHECK(st.clients == 1 && st.devices == 1 && st.locked == 1);
	ms_session_end(&r.ctx, &s);
	rig_fini(&r);
	return 0;
}

static int t_session_lease(void)
{
	struct rig r;
	struct ms_session s;
	uint8_t page[4096], back[4096];
	uint64_t id;

	CHECK(rig_init(&r) == 0);
	fake_now = 1000;
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);
	CHECK(do_alloc(&r, &s, SEG, &id) == 0);
	memset(page, 0x77, sizeof(page));
	CHECK(do_io(&r, &s, FM_OP_WRITE, id, 0, 4096, page) == 0);
	ms_session_end(&r.ctx, &s);                   /* client gone */
	ms_devtab_expire(&r.ctx.devs, &r.ctx.segs, 1500);
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);     /* back in time */
	CHECK(do_io(&r, &s, FM_OP_READ, id, 0, 4096, back) == 0);
	CHECK(memcmp(page, back, 4096) == 0);
	fake_now = 3000;
	ms_session_end(&r.ctx, &s);
	ms_devtab_expire(&r.ctx.devs, &r.ctx.segs, 4000);  /* lease over */
	CHECK(r.ctx.segs.nused == 0);
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);
	CHECK(do_io(&r, &s, FM_OP_READ, id, 0, 4096, back) == -ENOENT);
	ms_session_end(&r.ctx, &s);
	rig_fini(&r);
	return 0;
}

static int t_session_violations(void)
{
	struct rig r;
	struct ms_session s;
	struct fm_hdr rh;
	uint8_t pl[FM_PING_MAX + 1] = { 0 };

	CHECK(rig_init(&r) == 0);
	/* Each of these closes the connection and is not answered. */
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);
	CHECK(send_req(&r, &s, FM_OP_HELLO, pl, FM_HELLO_REQ_MIN + 1, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_AUTH, pl, FM_AUTH_LEN, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_ALLOC, pl, 3, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_FREE, pl, 9, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_READ, pl, 15, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_WRITE, pl, 20, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_STAT, pl, 1, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_PING, pl, FM_PING_MAX + 1, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_LIST, pl, 5, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, FM_OP_PING | FM_OP_REPLY, pl, 0, &rh, NULL) < 0);
	CHECK(send_req(&r, &s, 0x33, pl, 0, &rh, NULL) < 0);
	/* A ping is echoed. */
	memcpy(pl, "hello", 5);
	CHECK(send_req(&r, &s, FM_OP_PING, pl, 5, &rh, pl + 100) == 0);
	CHECK(rh.len == 5 && memcmp(pl + 100, "hello", 5) == 0);
	ms_session_end(&r.ctx, &s);
	/* Before authentication, only the tiny handshake sizes are taken. */
	ms_session_init(&s, "test");
	CHECK(ms_session_max_payload(&s) == FM_HELLO_REQ_MAX);
	rig_fini(&r);
	return 0;
}

static int t_session_version(void)
{
	struct rig r;
	struct ms_session s;
	struct fm_hello_req hq = { .version = FM_PROTO_VERSION + 1, .name = "a" };
	uint8_t buf[128];
	struct fm_hdr rh;
	size_t len;

	CHECK(rig_init(&r) == 0);
	ms_session_init(&s, "test");
	len = fm_hello_req_encode(buf, &hq);
	CHECK(send_req(&r, &s, FM_OP_HELLO, buf, (uint32_t)len, &rh, buf)
	      == MS_CLOSE_AFTER_FLUSH);
	CHECK(rh.status == -EPROTONOSUPPORT && s.state == MS_HELLO);
	rig_fini(&r);
	return 0;
}

static int t_session_list(void)
{
	struct rig r;
	struct ms_session s;
	uint64_t ids[3], id;
	uint8_t buf[4 + 8 * FM_LIST_ENTRY_LEN], req[4];
	uint32_t count, size;
	struct fm_hdr rh;

	CHECK(rig_init(&r) == 0);
	CHECK(handshake(&r, &s, uuid_a, 1) == 0);
	for (int i = 0; i < 3; i++)
		CHECK(do_alloc(&r, &s, 4096 * (uint32_t)(i + 1), &ids[i]) == 0);
	fm_list_req_encode(req, 1);
	CHECK(send_req(&r, &s, FM_OP_LIST, req, 4, &rh, buf) == 0);
	CHECK(fm_list_rep_decode(buf, rh.len, &count) == 0 && count == 2);
	fm_list_rep_entry(buf, 0, &id, &size);
	CHECK(id == ids[1] && size == 8192);
	ms_session_end(&r.ctx, &s);
	rig_fini(&r);
	return 0;
}

/* ---- clients: devices scoped per name, quotas, boot ids ---- */

static int list_count(struct rig *r, struct ms_session *s, uint32_t *count)
{
	uint8_t req[4], buf[4 + NSEG * FM_LIST_ENTRY_LEN];
	struct fm_hdr rh;

	fm_list_req_encode(req, 0);
	if (send_req(r, s, FM_OP_LIST, req, 4, &rh, buf) != 0 || rh.status)
		return -1;
	return fm_list_rep_decode(buf, rh.len, count);
}

static int t_devtab_scoped_by_client(void)
{
	struct ms_devtab d;
	struct ms_device *a, *b, *a2;

	ms_devtab_init(&d, 1000);
	a = ms_devtab_attach(&d, "alice", uuid_a);
	b = ms_devtab_attach(&d, "bob", uuid_a);     /* the same uuid */
	CHECK(a && b && a != b && a->id != b->id && d.count == 2);
	CHECK(a->client != b->client);
	a2 = ms_devtab_attach(&d, "alice", uuid_a);
	CHECK(a2 == a && a->conns == 2);
	/* Two devices of one client share its client record. */
	CHECK(ms_devtab_attach(&d, "alice", uuid_b)->client == a->client);
	CHECK(a->client->devices == 2);
	ms_devtab_fini(&d);
	return 0;
}

/* The attack of issue 11: bob holds a valid key of his own and claims
 * alice's device uuid.  He must see and touch nothing of hers. */
static int t_session_takeover_refused(void)
{
	struct rig r;
	struct ms_session alice, bob, alice2;
	uint8_t page[4096], back[4096], buf[64];
	struct fm_hdr rh;
	uint32_t n;
	uint64_t id, bob_id;

	CHECK(rig_init(&r) == 0);
	CHECK(handshake_key(&r, &alice, "alice", uuid_a, NULL) == 0);
	CHECK(do_alloc(&r, &alice, SEG, &id) == 0);
	memset(page, 0xa1, sizeof(page));
	CHECK(do_io(&r, &alice, FM_OP_WRITE, id, 0, 4096, page) == 0);

	CHECK(handshake_key(&r, &bob, "bob", uuid_a, NULL) == 0);
	CHECK(bob.dev != alice.dev);
	CHECK(list_count(&r, &bob, &n) == 0 && n == 0);
	CHECK(do_io(&r, &bob, FM_OP_READ, id, 0, 4096, back) == -ENOENT);
	memset(back, 0xbb, sizeof(back));
	CHECK(do_io(&r, &bob, FM_OP_WRITE, id, 0, 4096, back) == -ENOENT);
	fm_u64_encode(buf, id);
	CHECK(send_req(&r, &bob, FM_OP_FREE, buf, 8, &rh, NULL) == 0 &&
	      rh.status == -ENOENT);
	/* His own device of that uuid works, and is his alone. */
	CHECK(do_alloc(&r, &bob, SEG, &bob_id) == 0 && bob_id != id);
	CHECK(do_io(&r, &alice, FM_OP_READ, bob_id, 0, 4096, back) == -ENOENT);

	/* Control: the same conversation as alice does see her segment. */
	CHECK(handshake_key(&r, &alice2, "alice", uuid_a, NULL) == 0);
	CHECK(alice2.dev == alice.dev);
	CHECK(list_count(&r, &alice2, &n) == 0 && n == 1);
	CHECK(do_io(&r, &alice2, FM_OP_READ, id, 0, 4096, back) == 0);
	CHECK(memcmp(back, page, sizeof(page)) == 0);
	ms_session_end(&r.ctx, &alice);
	ms_session_end(&r.ctx, &alice2);
	ms_session_end(&r.ctx, &bob);
	rig_fini(&r);
	return 0;
}

/* A key is good for its own name only. */
static int t_session_key_bound_to_name(void)
{
	struct rig r;
	struct ms_session s;
	struct fm_identity alice;

	CHECK(rig_init(&r) == 0);
	CHECK(fm_identity_derive(&r.ctx.secret, "alice", &alice) == 0);
	CHECK(handshake_key(&r, &s, "alice", uuid_a, alice.key) == 0);
	ms_session_end(&r.ctx, &s);
	CHECK(handshake_key(&r, &s, "bob", uuid_a, alice.key) == -EACCES);
	CHECK(s.state != MS_READY && s.dev == NULL);
	CHECK(handshake_key(&r, &s, FM_CLUSTER_NAME, uuid_a, alice.key) == -EACCES);
	CHECK(r.ctx.stats.clients == 0 && r.ctx.devs.count == 0);
	rig_fini(&r);
	return 0;
}

/* DRAIN: a client's key may not ask, the cluster identity may; from
 * then on nobody gets a new segment, and a bad payload closes. */
static int t_session_drain(void)
{
	struct rig r;
	struct ms_session bob, admin;
	struct fm_identity id;
	struct fm_hdr rh;
	uint8_t pl[8];
	uint64_t seg;

	CHECK(rig_init(&r) == 0);
	CHECK(fm_identity_derive(&r.ctx.secret, "bob", &id) == 0);
	CHECK(handshake_key(&r, &bob, "bob", uuid_a, id.key) == 0);
	fm_drain_req_encode(pl, 5000);
	CHECK(send_req(&r, &bob, FM_OP_DRAIN, pl, FM_DRAIN_REQ_LEN, &rh, NULL) == 0);
	CHECK(rh.status == -EPERM && !r.ctx.el.draining);
	CHECK(do_alloc(&r, &bob, SEG, &seg) == 0);
	CHECK(handshake(&r, &admin, uuid_b, 1) == 0);
	/* Malformed: a deadline of 0, a short payload. */
	fm_drain_req_encode(pl, 0);
	CHECK(send_req(&r, &admin, FM_OP_DRAIN, pl, FM_DRAIN_REQ_LEN, &rh, NULL) == -EPROTO);
	CHECK(handshake(&r, &admin, uuid_b, 1) == 0);
	CHECK(send_req(&r, &admin, FM_OP_DRAIN, pl, 2, &rh, NULL) == -EPROTO);
	CHECK(!r.ctx.el.draining);
	CHECK(handshake(&r, &admin, uuid_b, 1) == 0);
	fm_drain_req_encode(pl, 5000);
	CHECK(send_req(&r, &admin, FM_OP_DRAIN, pl, FM_DRAIN_REQ_LEN, &rh, NULL) == 0);
	CHECK(rh.status == 0 && r.ctx.el.draining);
	CHECK(do_alloc(&r, &bob, SEG, &seg) == -ENOSPC);
	/* What bob holds stays his: reads and frees still work. */
	CHECK(r.ctx.segs.nused == 1);
	ms_session_end(&r.ctx, &bob);
	ms_session_end(&r.ctx, &admin);
	rig_fini(&r);
	return 0;
}

static int t_quota_limits(void)
{
	struct ms_limit l;
	struct ms_quota q = { 0 };
	char why[160];

	CHECK(ms_limit_parse("none", &l) == 0 && l.kind == MS_LIMIT_NONE);
	CHECK(ms_limit_parse("25%", &l) == 0 && l.kind == MS_LIMIT_PERCENT && l.value == 25);
	CHECK(ms_limit_parse("2M", &l) == 0 && l.kind == MS_LIMIT_BYTES && l.value == 2u << 20);
	CHECK(ms_limit_parse("0%", &l) == -EINVAL);
	CHECK(ms_limit_parse("101%", &l) == -EINVAL);
	CHECK(ms_limit_parse("%", &l) == -EINVAL);
	CHECK(ms_limit_parse("0", &l) == -EINVAL);
	CHECK(ms_limit_parse("lots", &l) == -EINVAL);
	/* Whole segments, rounded down: a bound is never exceeded. */
	l = (struct ms_limit){ MS_LIMIT_PERCENT, 50 };
	CHECK(ms_limit_segments(&l, 7, SEG) == 3);
	l = (struct ms_limit){ MS_LIMIT_BYTES, 3 * SEG - 1 };
	CHECK(ms_limit_segments(&l, 7, SEG) == 2);
	l = (struct ms_limit){ MS_LIMIT_NONE, 0 };
	CHECK(ms_limit_segments(&l, 7, SEG) == UINT32_MAX);

	CHECK(ms_quota_parse_rules(" alice:2M, bob:50% ,carol:none,", &q, why,
				   sizeof(why)) == 0);
	CHECK(q.nrules == 3 && strcmp(q.rule[1].name, "bob") == 0);
	CHECK(ms_quota_for(&q, "bob")->kind == MS_LIMIT_PERCENT);
	CHECK(ms_quota_for(&q, "dave") == &q.dflt);
	CHECK(ms_quota_parse_rules("alice", &q, why, sizeof(why)) == -EINVAL &&
	      strstr(why, "NAME:LIMIT"));
	CHECK(ms_quota_parse_rules("Alice:1G", &q, why, sizeof(why)) == -EINVAL &&
	      strstr(why, "Alice"));
	CHECK(ms_quota_parse_rules("a:1G,a:2G", &q, why, sizeof(why)) == -EINVAL &&
	      strstr(why, "twice"));
	CHECK(ms_quota_parse_rules("a:many", &q, why, sizeof(why)) == -EINVAL &&
	      strstr(why, "many"));
	return 0;
}

/* bob may hold 2 segments; alice (default: none) still gets space; what
 * bob frees, and what his expired lease returns, he may take again. */
static int t_session_quota(void)
{
	struct rig r;
	struct ms_quota q = { 0 };
	struct ms_session alice, bob;
	uint64_t ids[NSEG], id;
	uint8_t buf[64];
	struct fm_hdr rh;

	CHECK(rig_init(&r) == 0);
	q.rule[0] = (typeof(q.rule[0])){ "bob", { MS_LIMIT_BYTES, 2 * SEG } };
	q.nrules = 1;
	ms_devtab_set_quota(&r.ctx.devs, &q, r.ctx.segs.nslots, r.ctx.segs.seg_max);
	CHECK(handshake_key(&r, &bob, "bob", uuid_b, NULL) == 0);
	CHECK(do_alloc(&r, &bob, SEG, &ids[0]) == 0);
	CHECK(do_alloc(&r, &bob, SEG, &ids[1]) == 0);
	CHECK(do_alloc(&r, &bob, SEG, &id) == -EDQUOT);
	CHECK(r.ctx.segs.nused == 2);             /* nothing taken for it */
	/* Another uuid of bob's shares his quota. */
	fake_now = 0;
	ms_session_end(&r.ctx, &bob);             /* lease until 1000 */
	CHECK(handshake_key(&r, &bob, "bob", uuid_a, NULL) == 0);
	CHECK(do_alloc(&r, &bob, SEG, &id) == -EDQUOT);
	/* Others are not limited by bob's quota. */
	CHECK(handshake_key(&r, &alice, "alice", uuid_b, NULL) == 0);
	CHECK(do_alloc(&r, &alice, SEG, &id) == 0);
	CHECK(do_alloc(&r, &alice, SEG, &id) == 0);
	CHECK(do_alloc(&r, &alice, SEG, &id) == 0);
	/* bob's first device's lease ends: its segments count no more. */
	ms_devtab_expire(&r.ctx.devs, &r.ctx.segs, 1000);
	CHECK(do_alloc(&r, &bob, SEG, &ids[2]) == 0);
	CHECK(do_alloc(&r, &bob, SEG, &ids[3]) == 0);
	CHECK(do_alloc(&r, &bob, SEG, &id) == -EDQUOT);
	fm_u64_encode(buf, ids[2]);
	CHECK(send_req(&r, &bob, FM_OP_FREE, buf, 8, &rh, NULL) == 0 && rh.status == 0);
	CHECK(do_alloc(&r, &bob, SEG, &id) == 0);
	ms_session_end(&r.ctx, &alice);
	ms_session_end(&r.ctx, &bob);
	rig_fini(&r);
	return 0;
}

/* Ids from before a restart (another boot id, so other generations)
 * name nothing after it, though the slots are the same. */
static int t_boot_seeds_generations(void)
{
	struct ms_segtab t;
	uint64_t before, after;
	uint8_t *p;

	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	ms_segtab_seed(&t, 0x1234);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &before) == 0);
	CHECK(before >> 32 == 0x1234);
	ms_segtab_fini(&t);
	CHECK(ms_segtab_init(&t, pool, sizeof(pool), SEG) == 0);
	ms_segtab_seed(&t, 0xbeef);
	CHECK(ms_segtab_alloc(&t, 1, SEG, &after) == 0);
	CHECK((uint32_t)after == (uint32_t)before && after != before);
	CHECK(ms_segtab_range(&t, 1, before, 0, 4096, &p) == -ENOENT);
	CHECK(ms_segtab_free(&t, 1, before) == -ENOENT);
	ms_segtab_seed(&t, 0);                    /* never generation 0 */
	CHECK(t.slots[1].gen == 1);
	ms_segtab_fini(&t);
	return 0;
}

static int t_settings_quota_errors(void)
{
	struct ms_settings st;
	struct ms_resolved res;
	struct fm_secret sec;
	char err[512];

	ms_settings_defaults(&st);
	CHECK(ms_settings_set(&st, "memserver:listen", "tcp://127.0.0.1:1", "--listen",
			      err, sizeof(err)) == 0);
	CHECK(ms_settings_set(&st, "memserver:size", "64M", "--size", err, sizeof(err)) == 0);
	CHECK(ms_settings_set(&st, "memserver:quota", "lots", "test.conf", err,
			      sizeof(err)) == 0);
	CHECK(ms_settings_complete(&st, &res, &sec, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "test.conf") && strstr(err, "'memserver:quota'") &&
	      strstr(err, "'lots'"));
	/* 1M with 4M segments would refuse everything: said so. */
	CHECK(ms_settings_set(&st, "memserver:quota", "1M", "--quota", err, sizeof(err)) == 0);
	CHECK(ms_settings_complete(&st, &res, &sec, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "--quota") && strstr(err, "less than one segment"));
	CHECK(ms_settings_set(&st, "memserver:quota", "10%", "--quota", err, sizeof(err)) == 0);
	CHECK(ms_settings_set(&st, "memserver:quota-clients", "alice:2G,bob", "x.conf",
			      err, sizeof(err)) == 0);
	CHECK(ms_settings_complete(&st, &res, &sec, err, sizeof(err)) == -EINVAL);
	CHECK(strstr(err, "x.conf") && strstr(err, "'memserver:quota-clients'") &&
	      strstr(err, "'bob'"));
	return 0;
}

static int t_buf(void)
{
	struct ms_buf b = { 0 };
	uint8_t *p;

	p = ms_buf_reserve(&b, 10);
	CHECK(p != NULL);
	memcpy(p, "0123456789", 10);
	ms_buf_commit(&b, 10);
	ms_buf_consume(&b, 4);
	CHECK(b.len == 6 && memcmp(b.data + b.head, "456789", 6) == 0);
	p = ms_buf_reserve(&b, 1 << 20);      /* grows, keeps the bytes */
	CHECK(p != NULL && b.cap >= (1u << 20) + 6);
	CHECK(memcmp(b.data + b.head, "456789", 6) == 0);
	ms_buf_consume(&b, 6);
	CHECK(b.len == 0 && b.head == 0);
	ms_buf_free(&b);
	return 0;
}

/* ---- pool.c ---- */

static int t_pool(void)
{
	struct ms_pool p;
	char why[256];
	int rc;

	/* allow_unlocked: whatever the limits here, a pool comes back. */
	CHECK(ms_pool_create(&p, 8u << 20, MS_HUGE_AUTO, 1) == 0);
	CHECK(p.base != NULL && p.size == 8u << 20 && p.map_size >= p.size);
	for (size_t i = 0; i < p.size; i += 4096)
		CHECK(p.base[i] == 0);
	p.base[p.size - 1] = 1;                  /* writable to the end */
	/* Locked exactly when the lock check says it can be. */
	rc = ms_pool_lock_check(p.map_size, why, sizeof(why));
	CHECK(rc == 0 ? p.locked == 1 : 1);
	ms_pool_destroy(&p);
	CHECK(p.base == NULL);
	CHECK(ms_pool_create(&p, 4u << 20, MS_HUGE_NO, 1) == 0 && p.huge == 0);
	ms_pool_destroy(&p);
	CHECK(ms_pool_create(&p, 0, MS_HUGE_NO, 1) == -EINVAL);
	return 0;
}

static const struct tap_case cases[] = {
	{ "session: DRAIN only from the cluster identity; then no ALLOC", t_session_drain },
	{ "pool: mapped, zeroed, locked when allowed", t_pool },
	{ "segtab: free bumps the generation, old ids die", t_alloc_free_generation },
	{ "segtab: alloc sizes checked", t_alloc_sizes },
	{ "segtab: full pool is ENOSPC, freeing makes room", t_full_pool },
	{ "segtab: other owners get ENOENT, ranges checked", t_ownership_and_ranges },
	{ "segtab: a freed slot comes back zeroed", t_freed_memory_is_zeroed },
	{ "segtab: list by owner, free all of an owner", t_list_and_free_owner },
	{ "devtab: lease starts, is reclaimed, expires", t_lease_cycle },
	{ "devtab: several connections per device", t_lease_two_connections },
	{ "session: HELLO+AUTH, wrong secret refused", t_session_auth },
	{ "session: nothing before authentication", t_session_needs_auth },
	{ "session: devices cannot touch each other", t_session_isolation },
	{ "session: a FREE tells the free hooks, once", t_session_free_hooks },
	{ "session: full pool and stat", t_session_full_pool_and_stat },
	{ "session: lease keeps data, expiry frees it", t_session_lease },
	{ "session: protocol violations close", t_session_violations },
	{ "session: other protocol versions refused", t_session_version },
	{ "session: LIST pages through this device's segments", t_session_list },
	{ "devtab: a device is (client, uuid)", t_devtab_scoped_by_client },
	{ "session: another client claiming a uuid gets its own device", t_session_takeover_refused },
	{ "session: a key authenticates its own name only", t_session_key_bound_to_name },
	{ "quota: limits and per-client rules parse", t_quota_limits },
	{ "session: quota bounds one client, not the others", t_session_quota },
	{ "segtab: the boot id seeds generations", t_boot_seeds_generations },
	{ "settings: quota errors name origin, key and value", t_settings_quota_errors },
	{ "buf: reserve, commit, consume, grow", t_buf },
};

/* The closes and leases these tests cause are logged as they should be;
 * keep the TAP output readable. */
__attribute__((constructor)) static void quiet(void)
{
	log_init("test_segtab", LOG_LVL_ERR);
}

TAP_MAIN(cases)
