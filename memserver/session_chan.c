/* session_chan.c — the protected channel around a session (chan.h).
 *
 * The session code (session.c) knows requests; this file knows that
 * after AUTH every frame carries a tag.  It checks the tag of each
 * request before the session sees it, seals the reply the session
 * appended, and installs the keys the moment AUTH succeeds, so the
 * AUTH reply itself goes out plain and everything after it is tagged.
 * Transports that cut frames from a stream (server.c, the unit tests'
 * in-process servers) call ms_session_wire_frame() instead of
 * ms_session_frame().
 */
#include "memserver.h"
#include "log.h"

#include <errno.h>
#include <string.h>

size_t ms_session_trailer(const struct ms_session *s)
{
	return s->chan.up ? FM_CHAN_TAG_LEN : 0;
}

/* From the session AUTH authenticated: the client's key (derived from
 * the secret and its name) and both nonces, as op_auth verified them. */
static void chan_start(struct ms_session *s)
{
	fm_chan_init(&s->chan, FM_CHAN_SERVER, s->auth.key, FM_KEY_LEN,
		     s->auth.client_nonce, s->auth.server_nonce);
}

int ms_session_chan_check(struct ms_session *s, const struct fm_hdr *h,
			  const uint8_t *frame)
{
	size_t flen = FM_HDR_SIZE + (size_t)h->len;

	if (!s->chan.up || fm_chan_check_frame(&s->chan.rx, frame, flen, frame + flen) == 0)
		return 0;
	fm_chan_count_reject();
	log_warn("%s: closing: %s frame %llu (tag 0x%08x) fails its channel "
		 "check: forged, replayed, reordered or from another connection",
		 s->peer, fm_op_name(h->op), (unsigned long long)s->chan.rx.seq, h->tag);
	return -EBADMSG;
}

int ms_session_chan_seal(struct ms_session *s, struct ms_buf *out, size_t at)
{
	size_t flen = out->len - at;
	uint8_t *tag, *frame;
	struct iovec iov;

	if (flen == 0 || !s->chan.up)
		return 0;
	if (flen < FM_HDR_SIZE || flen != FM_HDR_SIZE + (size_t)get_le32(
		    out->data + out->head + at + 16)) {
		log_err("%s: closing: a reply of %zu bytes is not one frame", s->peer, flen);
		return -EPROTO;
	}
	tag = ms_buf_reserve(out, FM_CHAN_TAG_LEN);   /* may move the data */
	if (!tag)
		return -ENOMEM;
	frame = out->data + out->head + at;
	iov = (struct iovec){ .iov_base = frame, .iov_len = flen };
	fm_chan_seal_iov(&s->chan.tx, &iov, 1, tag);
	ms_buf_commit(out, FM_CHAN_TAG_LEN);
	return 0;
}

void ms_session_chan_after(struct ms_ctx *ctx, struct ms_session *s,
			   enum ms_sess_state before)
{
	(void)ctx;
	if (!s->chan.up && before == MS_AUTH && s->state == MS_READY)
		chan_start(s);
}

int ms_session_wire_frame(struct ms_ctx *ctx, struct ms_session *s,
			  const struct fm_hdr *h, const uint8_t *frame,
			  struct ms_buf *out)
{
	enum ms_sess_state before = s->state;
	size_t at = out->len;
	int rc, sr;

	rc = ms_session_chan_check(s, h, frame);
	if (rc < 0)
		return rc;
	rc = ms_session_frame(ctx, s, h, frame + FM_HDR_SIZE, out);
	if (rc < 0)
		return rc;
	sr = ms_session_chan_seal(s, out, at);
	if (sr < 0)
		return sr;
	ms_session_chan_after(ctx, s, before);
	return rc;
}

int ms_session_notice(struct ms_session *s, struct ms_buf *out,
		      uint32_t deadline_ms, uint16_t flags,
		      const uint64_t *ids, uint16_t n)
{
	struct fm_hdr h = { .op = FM_OP_NOTICE, .tag = 0, .len = FM_NOTICE_LEN(n) };
	size_t at = out->len;
	uint8_t *p;
	int rc;

	/* Untagged, a client would close the connection on it. */
	if (s->state != MS_READY || !s->chan.up || n > FM_NOTICE_MAX)
		return -EINVAL;
	p = ms_buf_reserve(out, FM_HDR_SIZE + FM_NOTICE_LEN(n));
	if (!p)
		return -ENOMEM;
	if (fm_notice_encode(p + FM_HDR_SIZE, deadline_ms, flags, ids, n) == 0)
		return -EINVAL;
	fm_hdr_encode(p, &h);
	ms_buf_commit(out, FM_HDR_SIZE + FM_NOTICE_LEN(n));
	rc = ms_session_chan_seal(s, out, at);
	if (rc < 0)
		out->len = at;   /* no frame without its tag in the stream */
	return rc;
}
