/* frame_batch.h — a loop-mode connection's outgoing frames.
 *
 * The fibers of an event loop (fiber.h) submit their requests during a
 * turn; the frames are staged here and leave together at the start of
 * the next turn, in one sendmsg.  Staged frames are sealed (chan.h) only
 * then, in the order they go on the wire, so the batch can still be
 * reshaped: WRITEs to one segment at consecutive offsets, which is what
 * the store's appends to one segment look like, become one WRITE frame,
 * even when frames of other segments came in between.
 * The first request's tag names the merged frame; the others ride on it
 * (fm_fb_rider()) and complete with its reply.  The memserver then
 * checks one tag, copies once and answers once instead of once per
 * request.
 *
 * Everything is allocated at init; the loop's thread alone uses a batch.
 */
#ifndef FARMEM_FRAME_BATCH_H
#define FARMEM_FRAME_BATCH_H

#include <stdint.h>
#include <sys/uio.h>

#include "chan.h"
#include "protocol.h"

#define FM_FB_HEAD_MAX   (FM_HDR_SIZE + FM_RANGE_LEN)
#define FM_FB_IOV_MAX    1024            /* iovecs staged, and on the wire */
/* A merged WRITE carries at most this much data: the memserver holds a
 * whole frame before it acts on it. */
#define FM_FB_MERGE_MAX  (256u << 10)
#define FM_FB_NONE       UINT32_MAX

/* What the batch needs to know of a request to merge it. */
struct fm_fb_span {
	uint8_t op;
	uint64_t seg_id;
	uint32_t offset, len;
};

struct fm_fb_frame {
	uint32_t idx;                 /* the request's slot */
	uint16_t first, n;            /* its iovecs in stage: head, then data */
	struct fm_fb_span span;
	uint8_t taken;                /* already rides on an earlier frame */
};

struct fm_frame_batch {
	struct iovec *stage;          /* FM_FB_IOV_MAX */
	int nstage;
	struct fm_fb_frame *frames;   /* FM_FB_IOV_MAX */
	int nframes;
	struct iovec *wire;           /* sealed, not yet sent: FM_FB_IOV_MAX */
	int nwire;
	int *run;                     /* scratch: the frames merged into one */
	uint8_t (*heads)[FM_FB_HEAD_MAX];     /* per slot */
	uint8_t (*trailers)[FM_CHAN_TAG_LEN]; /* per slot */
	uint32_t *rider;              /* per slot: the next request its frame carries */
	unsigned long merged;         /* requests that rode on another's frame */
};

/* 0 or -ENOMEM. */
int fm_fb_init(struct fm_frame_batch *b, unsigned nslots);
void fm_fb_fini(struct fm_frame_batch *b);

/* Is there room to stage a frame of n iovecs (head and data)? */
int fm_fb_has_room(const struct fm_frame_batch *b, int n);
/* Stage slot idx's frame: iov[0] is its head (copied into the slot's
 * head buffer), iov[1..n-1] its data, which must stay valid until sent.
 * The caller checked the room. */
void fm_fb_stage(struct fm_frame_batch *b, uint32_t idx, const struct fm_fb_span *span,
		 const struct iovec *iov, int n);
/* When the wire is empty, merge and seal (with tx) everything staged
 * onto it; frames already on the wire go first, so tags number in wire
 * order. */
void fm_fb_seal(struct fm_frame_batch *b, struct fm_chan_dir *tx);
/* bytes of the wire went out. */
void fm_fb_sent(struct fm_frame_batch *b, size_t bytes);
/* The stream ended: forget staged and unsent frames (their requests are
 * failed by the connection). */
void fm_fb_clear(struct fm_frame_batch *b);

/* The request that rode on slot idx's frame, or FM_FB_NONE; taking it
 * unlinks it, so a reused slot never carries an old rider. */
static inline uint32_t fm_fb_take_rider(struct fm_frame_batch *b, uint32_t idx)
{
	uint32_t next = b->rider[idx];

	b->rider[idx] = FM_FB_NONE;
	return next;
}

#endif
