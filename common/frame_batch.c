/* frame_batch.c — staging, merging and sealing a turn's frames. */
#include "frame_batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "iov.h"

int fm_fb_init(struct fm_frame_batch *b, unsigned nslots)
{
	memset(b, 0, sizeof(*b));
	b->stage = calloc(FM_FB_IOV_MAX, sizeof(*b->stage));
	b->frames = calloc(FM_FB_IOV_MAX, sizeof(*b->frames));
	b->wire = calloc(FM_FB_IOV_MAX, sizeof(*b->wire));
	b->run = calloc(FM_FB_IOV_MAX, sizeof(*b->run));
	b->heads = calloc(nslots, sizeof(*b->heads));
	b->trailers = calloc(nslots, sizeof(*b->trailers));
	b->rider = malloc(nslots * sizeof(*b->rider));
	if (!b->stage || !b->frames || !b->wire || !b->run || !b->heads || !b->trailers || !b->rider) {
		fm_fb_fini(b);
		return -ENOMEM;
	}
	memset(b->rider, 0xff, nslots * sizeof(*b->rider));   /* FM_FB_NONE */
	return 0;
}

void fm_fb_fini(struct fm_frame_batch *b)
{
	free(b->stage);
	free(b->frames);
	free(b->wire);
	free(b->run);
	free(b->heads);
	free(b->trailers);
	free(b->rider);
	memset(b, 0, sizeof(*b));
}

int fm_fb_has_room(const struct fm_frame_batch *b, int n)
{
	/* Sealing turns each frame's iovecs plus its trailer into wire
	 * entries: staged iovecs + frames bound what the wire needs. */
	return b->nstage + n + b->nframes + 1 <= FM_FB_IOV_MAX;
}

void fm_fb_stage(struct fm_frame_batch *b, uint32_t idx, const struct fm_fb_span *span,
		 const struct iovec *iov, int n)
{
	struct fm_fb_frame *f = &b->frames[b->nframes++];

	memcpy(b->heads[idx], iov[0].iov_base, iov[0].iov_len);
	b->stage[b->nstage] = (struct iovec){ .iov_base = b->heads[idx], .iov_len = iov[0].iov_len };
	memcpy(&b->stage[b->nstage + 1], &iov[1], (size_t)(n - 1) * sizeof(*iov));
	*f = (struct fm_fb_frame){ .idx = idx, .first = (uint16_t)b->nstage, .n = (uint16_t)n,
				   .span = *span, .taken = 0 };
	b->nstage += n;
	b->rider[idx] = FM_FB_NONE;
}

/* Does frame g continue the WRITE that started at f and has total bytes? */
static int continues(const struct fm_fb_frame *f, const struct fm_fb_frame *g, uint32_t total)
{
	return g->span.op == FM_OP_WRITE && g->span.seg_id == f->span.seg_id &&
	       g->span.offset == f->span.offset + total &&
	       total + g->span.len <= FM_FB_MERGE_MAX;
}

/* The leader's head now announces total bytes of data. */
static void head_grow(uint8_t *head, const struct fm_fb_span *lead, uint32_t total)
{
	struct fm_range r = { .seg_id = lead->seg_id, .offset = lead->offset, .len = total };
	struct fm_hdr h;

	fm_hdr_decode(head, FM_HDR_SIZE, &h);   /* we encoded it: it decodes */
	h.len = FM_RANGE_LEN + total;
	fm_hdr_encode(head, &h);
	fm_range_encode(head + FM_HDR_SIZE, &r);
}

/* Mark the staged frames after the WRITE at lead that continue it into
 * b->run (lead first); returns how many, and their bytes in *total.
 *
 * A store queue's fibers take turns on several streams, so one
 * segment's appends reach a connection interleaved with another's.  A
 * continuation may pass frames of other segments: READs and WRITEs of
 * another segment do not see the order.  It never passes a frame that
 * touches the same segment without continuing the run, nor any other
 * op (ALLOC, FREE...), so what the server sees in order stays in order. */
static int run_collect(struct fm_frame_batch *b, int lead, uint32_t *total)
{
	const struct fm_fb_frame *f = &b->frames[lead];
	int n = 0;

	b->run[n++] = lead;
	*total = f->span.len;
	if (f->span.op != FM_OP_WRITE)
		return n;
	for (int j = lead + 1; j < b->nframes; j++) {
		struct fm_fb_frame *g = &b->frames[j];

		if (g->taken)
			continue;
		if (g->span.op != FM_OP_WRITE && g->span.op != FM_OP_READ)
			break;
		if (g->span.seg_id != f->span.seg_id)
			continue;
		if (!continues(f, g, *total))
			break;
		g->taken = 1;
		*total += g->span.len;
		b->run[n++] = j;
	}
	return n;
}

/* The run's frames leave as one: the leader's head, every frame's data,
 * one tag; the others ride on the leader. */
static void wire_run(struct fm_frame_batch *b, int n, uint32_t total, struct fm_chan_dir *tx)
{
	const struct fm_fb_frame *lead = &b->frames[b->run[0]];
	int start = b->nwire;

	if (n > 1)
		head_grow(b->heads[lead->idx], &lead->span, total);
	b->wire[b->nwire++] = b->stage[lead->first];
	for (int k = 0; k < n; k++) {
		const struct fm_fb_frame *f = &b->frames[b->run[k]];

		memcpy(&b->wire[b->nwire], &b->stage[f->first + 1], (size_t)(f->n - 1) * sizeof(struct iovec));
		b->nwire += f->n - 1;
		if (k > 0)
			b->rider[b->frames[b->run[k - 1]].idx] = f->idx;
	}
	fm_chan_seal_iov(tx, &b->wire[start], b->nwire - start, b->trailers[lead->idx]);
	b->wire[b->nwire++] = (struct iovec){ .iov_base = b->trailers[lead->idx],
					      .iov_len = FM_CHAN_TAG_LEN };
	b->merged += (unsigned long)(n - 1);
}

void fm_fb_seal(struct fm_frame_batch *b, struct fm_chan_dir *tx)
{
	if (b->nwire)
		return;
	for (int i = 0; i < b->nframes; i++) {
		uint32_t total;
		int n;

		if (b->frames[i].taken)
			continue;
		n = run_collect(b, i, &total);
		wire_run(b, n, total, tx);
	}
	b->nframes = 0;
	b->nstage = 0;
}

void fm_fb_sent(struct fm_frame_batch *b, size_t bytes)
{
	b->nwire = fm_iov_consume(b->wire, b->nwire, bytes);
}

void fm_fb_clear(struct fm_frame_batch *b)
{
	b->nstage = 0;
	b->nframes = 0;
	b->nwire = 0;
}
