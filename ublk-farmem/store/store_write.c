/* store_write.c — the write path: encode pages into records, append
 * them (append.c) through the queue's stream to every replica, then point
 * the map at them; discard and flush.
 *
 * Everything uses the queue's preallocated context; nothing allocates.
 * The store lock is taken only for short map and segment updates.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "internal.h"

/* A compressed page must save at least this much to be stored
 * compressed; otherwise the raw page is cheaper to decode. */
#define RAW_THRESHOLD (STORE_PAGE - STORE_PAGE / 32)

static int page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (unsigned i = 0; i < STORE_PAGE / 8; i++)
		if (w[i])
			return 0;
	return 1;
}

/* Compress one page (raw when that does not pay) and frame it as a
 * record at rec in the device's format.  Plain records compress in
 * place; sealed ones compress into io->clear and encrypt from there (or
 * from the page itself when raw), so no plaintext reaches io->buf. */
static uint32_t encode_page(struct store *s, struct ioctx *io, struct fm_codec *codec,
			    uint8_t *rec, const uint8_t *page, uint64_t pageno,
			    uint64_t version)
{
	int sealed = s->rkey.aead != REC_AEAD_NONE;
	uint8_t *out = sealed ? io->clear : rec + REC_HDR_SIZE;
	const uint8_t *src = out;
	uint8_t algo = FM_CODEC_NONE;
	ssize_t c = 0;

	if (codec->algo != FM_CODEC_NONE)
		c = fm_codec_compress(codec, page, STORE_PAGE, out, RAW_THRESHOLD);
	if (c > 0) {
		algo = (uint8_t)codec->algo;
	} else {
		src = page;
		c = STORE_PAGE;
	}
	return rec_put(&s->rkey, rec, src, pageno, version, algo, (uint16_t)c);
}

/* Compress and frame every non-zero page into the staging buffer.  An
 * all-zero page becomes no record at all (on either format): the map
 * says PM_ZERO and no memserver hears of it. */
static void encode_pages(struct store *s, struct ioctx *io, uint64_t first,
			 unsigned n, const uint8_t *buf)
{
	uint64_t ver = __atomic_fetch_add(&s->hdr->next_version, n, __ATOMIC_RELAXED);
	struct fm_codec *codec = codec_get(s, io);
	uint32_t pos = 0;

	for (unsigned i = 0; i < n; i++) {
		const uint8_t *page = buf + (size_t)i * STORE_PAGE;
		struct page_io *p = &io->pio[i];

		p->version = ver + i;
		p->ok = 0;
		p->rec_off = pos;
		p->rec_len = 0;
		if (page_is_zero(page)) {
			p->ok = 1;
			continue;
		}
		p->rec_len = encode_page(s, io, codec, io->buf + pos, page, first + i,
					 p->version);
		pos += p->rec_len;
	}
	codec_put(s, io, codec);
}

/* Point the map at the new records; a page whose entry already carries
 * a newer version (a later write or discard finished first) keeps it. */
static void map_apply(struct store *s, struct ioctx *io, uint64_t first, unsigned n)
{
	struct state_hdr *h = s->hdr;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < n; i++) {
		struct page_io *p = &io->pio[i];
		struct pm_entry *e = &s->map[first + i];

		if (!p->ok || !pm_newer(e, p->version))
			continue;
		map_release(s, e);
		if (!p->rec_len) {
			*e = pm_make(PM_ZERO, 0, 0, 0, p->version);
			h->zero_pages++;
			continue;
		}
		*e = pm_make(PM_STORED, p->seg, p->seg_off, p->rec_len - REC_HDR_SIZE, p->version);
		s->segs[p->seg].live += p->rec_len;
		h->pages_stored++;
		h->bytes_stored += p->rec_len;
	}
	pthread_mutex_unlock(&s->lock);
}

int store_write(struct store *s, int queue, uint64_t off, uint32_t len, const void *buf)
{
	struct ioctx *io;
	uint64_t deadline = 0;
	unsigned n, backoff_ms = 50;
	int rc;

	rc = io_check_range(s, queue, off, len, s->max_io);
	if (rc < 0)
		return rc;
	io = &s->q[queue];
	n = len / STORE_PAGE;
	pthread_mutex_lock(&io->lock);
	encode_pages(s, io, off / STORE_PAGE, n, buf);
	for (int attempt = 0; ; attempt++) {
		int appended;

		rc = records_append(s, io, n);
		appended = rc == 0;
		if (appended)
			for (unsigned i = 0; i < n; i++)
				if (!io->pio[i].ok)
					rc = -EIO;
		if (rc == 0)
			break;
		/* Some chunk reached no replica: the segment was retired (or
		 * its failed replicas dropped), so the retry appends to a
		 * fresh segment placed on servers that are still up. */
		if (appended && attempt < 2)
			continue;
		/* Every replica (or every server we could place a segment
		 * on) failed on its transport: wait for them within the
		 * deadline, as reads do.  Pages already written stay so. */
		if (!io->transient)
			break;
		if (!deadline)
			deadline = io_deadline_ns(s);
		if (io_retry_wait(s, deadline, &backoff_ms) < 0)
			break;
	}
	map_apply(s, io, off / STORE_PAGE, n);
	records_settle(s, io);
	pthread_mutex_unlock(&io->lock);
	atomic_add64(&s->writes, 1);
	if (rc < 0) {
		atomic_add64(&s->write_errors, 1);
		log_err("store: write %llu+%u: %s", (unsigned long long)off, len, strerror(-rc));
	}
	return rc;
}

int store_discard(struct store *s, int queue, uint64_t off, uint64_t len)
{
	uint64_t first = off / STORE_PAGE, n = len / STORE_PAGE, ver;
	int rc;

	rc = io_check_range(s, queue, off, len, s->cfg.size);
	if (rc < 0)
		return rc;
	ver = __atomic_fetch_add(&s->hdr->next_version, 1, __ATOMIC_RELAXED);
	/* Batches keep the lock hold short on a whole-device discard. */
	for (uint64_t b = 0; b < n; b += 4096) {
		uint64_t end = b + 4096 < n ? b + 4096 : n;

		pthread_mutex_lock(&s->lock);
		for (uint64_t i = b; i < end; i++) {
			struct pm_entry *e = &s->map[first + i];

			if (!pm_newer(e, ver))
				continue;
			map_release(s, e);
			*e = pm_make(PM_UNMAPPED, 0, 0, 0, ver);
		}
		pthread_mutex_unlock(&s->lock);
	}
	atomic_add64(&s->discards, 1);
	if (n)
		maint_kick(s);
	return 0;
}

int store_flush(struct store *s, int queue)
{
	if (queue < 0 || queue >= s->nqueues)
		return -EINVAL;
	return 0;
}
