/* nbd_exec.c — one NBD request against the backend, in a worker.
 *
 * The backend takes whole 4 KiB pages only.  We advertise 4096 as the
 * minimum block size, but a client may still send unaligned requests, so
 * the edge pages of an unaligned write or zero are read, merged and
 * written back.  That read-modify-write holds the server's rmw_lock for
 * writing, every other write holds it for reading: no write can land
 * between an edge page's read and its write-back.
 *
 * FUA needs nothing extra: a write is on every live replica when the
 * backend returns, before we reply.
 */
#include "nbd_int.h"
#include "nbd_proto.h"

#include <errno.h>
#include <string.h>

#define PAGE 4096u
#define PAGE_DOWN(x) ((x) & ~(uint64_t)(PAGE - 1))
#define PAGE_UP(x) PAGE_DOWN((x) + PAGE - 1)

static int be_read(struct nbd_worker *w, uint64_t off, uint64_t len, uint8_t *buf)
{
	const struct nbd_backend *be = &w->slot->srv->be;

	while (len) {
		uint32_t n = len < be->max_io ? (uint32_t)len : be->max_io;
		int rc = be->read(be->ctx, w->queue, off, n, buf);

		if (rc < 0)
			return rc;
		off += n;
		buf += n;
		len -= n;
	}
	return 0;
}

static int be_write(struct nbd_worker *w, uint64_t off, uint64_t len,
		    const uint8_t *buf)
{
	const struct nbd_backend *be = &w->slot->srv->be;

	while (len) {
		uint32_t n = len < be->max_io ? (uint32_t)len : be->max_io;
		int rc = be->write(be->ctx, w->queue, off, n, buf);

		if (rc < 0)
			return rc;
		off += n;
		buf += n;
		len -= n;
	}
	return 0;
}

/* Fill the bytes of the first and last page around [off, off+len) from
 * the backend; the data is at buf + off % PAGE. */
static int fill_edges(struct nbd_worker *w, uint64_t off, uint32_t len)
{
	uint64_t first = PAGE_DOWN(off), end = off + len, last = PAGE_DOWN(end);
	uint32_t head = (uint32_t)(off - first), tail = (uint32_t)(end - last);
	int rc;

	if (head) {
		rc = be_read(w, first, PAGE, w->page);
		if (rc < 0)
			return rc;
		memcpy(w->buf, w->page, head);
	}
	if (tail) {
		if (last != first || !head) {
			rc = be_read(w, last, PAGE, w->page);
			if (rc < 0)
				return rc;
		}
		memcpy(w->buf + (last - first) + tail, w->page + tail, PAGE - tail);
	}
	return 0;
}

static int do_write(struct nbd_worker *w, uint64_t off, uint32_t len)
{
	struct fm_rwlock *l = &w->slot->srv->rmw_lock;
	uint64_t first = PAGE_DOWN(off), end = PAGE_UP(off + len);
	int rc;

	if (off % PAGE == 0 && len % PAGE == 0) {
		fm_rwlock_rdlock(l);
		rc = be_write(w, off, len, w->buf);
		fm_rwlock_unlock(l);
		return rc;
	}
	fm_rwlock_wrlock(l);
	rc = fill_edges(w, off, len);
	if (rc == 0)
		rc = be_write(w, first, end - first, w->buf);
	fm_rwlock_unlock(l);
	return rc;
}

/* Zero bytes [from, to) of the page at pg (caller holds rmw_lock). */
static int zero_in_page(struct nbd_worker *w, uint64_t pg, uint32_t from, uint32_t to)
{
	int rc = be_read(w, pg, PAGE, w->page);

	if (rc < 0)
		return rc;
	memset(w->page + from, 0, to - from);
	return be_write(w, pg, PAGE, w->page);
}

static int do_zero(struct nbd_worker *w, uint64_t off, uint64_t len, int trim)
{
	struct nbd_server *srv = w->slot->srv;
	uint64_t end = off + len, lo = PAGE_UP(off), hi = PAGE_DOWN(end);
	int partial = !trim && (off % PAGE || end % PAGE), rc = 0;

	if (len == 0)
		return 0;
	if (partial)
		fm_rwlock_wrlock(&srv->rmw_lock);
	else
		fm_rwlock_rdlock(&srv->rmw_lock);
	if (partial && PAGE_DOWN(off) == PAGE_DOWN(end - 1)) {
		/* Inside one page. */
		rc = zero_in_page(w, PAGE_DOWN(off), (uint32_t)(off % PAGE),
				  (uint32_t)((end - 1) % PAGE + 1));
	} else {
		if (partial && off % PAGE)
			rc = zero_in_page(w, PAGE_DOWN(off), (uint32_t)(off % PAGE), PAGE);
		if (rc == 0 && partial && end % PAGE)
			rc = zero_in_page(w, hi, 0, (uint32_t)(end % PAGE));
		/* Trim drops only whole pages; the spec lets it ignore the rest. */
		if (rc == 0 && hi > lo)
			rc = srv->be.discard(srv->be.ctx, w->queue, lo, hi - lo);
	}
	fm_rwlock_unlock(&srv->rmw_lock);
	return rc;
}

int nbd_exec(struct nbd_worker *w, const struct nbd_req *r)
{
	struct nbd_server *srv = w->slot->srv;
	uint64_t first = PAGE_DOWN(r->off);

	switch (r->type) {
	case NBD_CMD_READ:
		return be_read(w, first, PAGE_UP(r->off + r->len) - first, w->buf);
	case NBD_CMD_WRITE:
		return do_write(w, r->off, r->len);
	case NBD_CMD_WRITE_ZEROES:
		return do_zero(w, r->off, r->len, 0);
	case NBD_CMD_TRIM:
		return do_zero(w, r->off, r->len, 1);
	case NBD_CMD_FLUSH:
		return srv->be.flush(srv->be.ctx, w->queue);
	}
	return -EINVAL;
}
