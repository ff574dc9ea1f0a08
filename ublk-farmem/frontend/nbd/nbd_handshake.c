/* nbd_handshake.c — newstyle fixed option haggling: EXPORT_NAME, INFO, GO,
 * LIST, ABORT, STARTTLS; everything else is answered NBD_REP_ERR_UNSUP so
 * clients fall back (we speak simple replies only).
 *
 * With TLS configured it is required (as nbdkit's --tls=require): before
 * STARTTLS every option but ABORT is answered NBD_REP_ERR_TLS_REQD, and
 * EXPORT_NAME, which cannot be refused, closes the connection.  Every
 * read and write here ends at the connection's handshake deadline. */
#include "nbd_int.h"
#include "nbd_proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define OPT_HDR_SIZE 16
#define REP_HDR_SIZE 20

static int send_rep(struct nbd_io *io, uint32_t opt, uint32_t type, const void *data,
		    uint32_t len)
{
	uint8_t h[REP_HDR_SIZE];
	int rc;

	nbd_put64(h, NBD_REP_MAGIC);
	nbd_put32(h + 8, opt);
	nbd_put32(h + 12, type);
	nbd_put32(h + 16, len);
	rc = nbd_write_full(io, h, sizeof(h));
	if (rc == 0 && len)
		rc = nbd_write_full(io, data, len);
	return rc;
}

/* An error reply carries a human-readable message the client may print. */
static int send_err(struct nbd_io *io, uint32_t opt, uint32_t type,
		    const char *msg)
{
	log_debug("nbd conn %u: option %u refused: %s", io->id, opt, msg);
	return send_rep(io, opt, type, msg, (uint32_t)strlen(msg));
}

static int send_info_export(struct nbd_server *srv, struct nbd_io *io, uint32_t opt)
{
	uint8_t b[12];

	nbd_put16(b, NBD_INFO_EXPORT);
	nbd_put64(b + 2, srv->be.size);
	nbd_put16(b + 10, srv->tflags);
	return send_rep(io, opt, NBD_REP_INFO, b, sizeof(b));
}

static int send_info_block_size(struct nbd_server *srv, struct nbd_io *io, uint32_t opt)
{
	uint8_t b[14];

	nbd_put16(b, NBD_INFO_BLOCK_SIZE);
	nbd_put32(b + 2, 4096);         /* minimum: our page */
	nbd_put32(b + 6, 4096);         /* preferred */
	nbd_put32(b + 10, srv->p.max_block);
	return send_rep(io, opt, NBD_REP_INFO, b, sizeof(b));
}

static int send_info_string(struct nbd_io *io, uint32_t opt, uint16_t type, const char *s)
{
	uint8_t b[2 + NBD_MAX_STRING];
	size_t n = strnlen(s, NBD_MAX_STRING);

	nbd_put16(b, type);
	memcpy(b + 2, s, n);
	return send_rep(io, opt, NBD_REP_INFO, b, (uint32_t)(2 + n));
}

static int opt_list(struct nbd_server *srv, struct nbd_io *io,
		    uint32_t len)
{
	uint8_t b[4 + NBD_MAX_STRING];
	const char *name = srv->p.export_name ? srv->p.export_name : "";
	size_t n = strnlen(name, NBD_MAX_STRING);
	int rc;

	if (len != 0)
		return send_err(io, NBD_OPT_LIST, NBD_REP_ERR_INVALID,
				"NBD_OPT_LIST takes no data");
	nbd_put32(b, (uint32_t)n);
	memcpy(b + 4, name, n);
	rc = send_rep(io, NBD_OPT_LIST, NBD_REP_SERVER, b, (uint32_t)(4 + n));
	return rc ? rc : send_rep(io, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* INFO and GO: u32 name length, name, u16 count, count x u16 info type.
 * Returns 1 when GO succeeded (transmission starts), 0 to keep haggling,
 * -errno to close. */
static int opt_info_go(struct nbd_server *srv, struct nbd_io *io,
		       uint32_t opt, const uint8_t *d, uint32_t len,
		       struct nbd_slot **slot)
{
	int want_name = 0, want_desc = 0, rc;
	uint32_t namelen;
	uint16_t nreq;

	if (len < 6 || (namelen = nbd_get32(d)) > len - 6)
		return send_err(io, opt, NBD_REP_ERR_INVALID, "malformed request");
	nreq = nbd_get16(d + 4 + namelen);
	if (len != 6 + namelen + 2u * nreq)
		return send_err(io, opt, NBD_REP_ERR_INVALID,
				"information request count does not match length");
	for (uint16_t i = 0; i < nreq; i++) {
		uint16_t t = nbd_get16(d + 6 + namelen + 2u * i);

		want_name |= t == NBD_INFO_NAME;
		want_desc |= t == NBD_INFO_DESCRIPTION;
	}
	if (opt == NBD_OPT_GO) {
		if (srv->stopping)
			return send_err(io, opt, NBD_REP_ERR_SHUTDOWN,
					"server is shutting down");
		*slot = nbd_slot_claim(srv);
		if (!*slot) {
			char msg[128];

			snprintf(msg, sizeof(msg), "farmem-blk serve: too many "
				 "connections (at most %d; see --queues)",
				 srv->p.max_conns);
			log_warn("nbd conn %u: refused: %s", io->id, msg);
			return send_err(io, opt, NBD_REP_ERR_POLICY, msg);
		}
	}
	rc = send_info_export(srv, io, opt);
	if (!rc)
		rc = send_info_block_size(srv, io, opt);
	if (!rc && want_name)
		rc = send_info_string(io, opt, NBD_INFO_NAME,
				      srv->p.export_name ? srv->p.export_name : "");
	if (!rc && want_desc && srv->p.description)
		rc = send_info_string(io, opt, NBD_INFO_DESCRIPTION, srv->p.description);
	if (!rc)
		rc = send_rep(io, opt, NBD_REP_ACK, NULL, 0);
	if (opt != NBD_OPT_GO)
		return rc;
	if (rc < 0) {
		nbd_slot_release(*slot);
		*slot = NULL;
		return rc;
	}
	return 1;
}

/* Old-style end of haggling: no way to refuse but closing. */
static int opt_export_name(struct nbd_server *srv, struct nbd_io *io,
			   int no_zeroes, struct nbd_slot **slot)
{
	uint8_t b[8 + 2 + 124] = { 0 };
	int rc;

	*slot = srv->stopping ? NULL : nbd_slot_claim(srv);
	if (!*slot) {
		log_warn("nbd conn %u: refused (too many connections, at most %d, "
			 "or shutting down)", io->id, srv->p.max_conns);
		return -EBUSY;
	}
	nbd_put64(b, srv->be.size);
	nbd_put16(b + 8, srv->tflags);
	rc = nbd_write_full(io, b, no_zeroes ? 10 : sizeof(b));
	if (rc < 0) {
		nbd_slot_release(*slot);
		*slot = NULL;
		return rc;
	}
	return 1;
}

/* STARTTLS: acknowledged in the clear, then the TLS handshake; the
 * haggling goes on inside TLS.  0, or -errno to close. */
static int opt_starttls(struct nbd_server *srv, struct nbd_io *io, uint32_t len)
{
	int rc;

	if (!srv->tls_required)
		return send_err(io, NBD_OPT_STARTTLS, NBD_REP_ERR_UNSUP,
				"TLS is not configured on this server");
	if (io->tls)
		return send_err(io, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
				"TLS is already on");
	if (len)
		return send_err(io, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
				"NBD_OPT_STARTTLS takes no data");
	if ((rc = send_rep(io, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0)) < 0)
		return rc;
	return nbd_tls_start(srv, io);
}

/* Before STARTTLS where TLS is required: 1 when opt may go on. */
static int tls_allows(const struct nbd_server *srv, const struct nbd_io *io,
		      uint32_t opt)
{
	return !srv->tls_required || io->tls || opt == NBD_OPT_STARTTLS ||
	       opt == NBD_OPT_ABORT;
}

static int one_option(struct nbd_server *srv, struct nbd_io *io,
		      int no_zeroes, struct nbd_slot **slot)
{
	uint8_t h[OPT_HDR_SIZE], data[NBD_OPT_MAX_LEN];
	uint32_t opt, len;
	int rc = nbd_read_full(io, h, sizeof(h));

	if (rc < 0)
		return rc;
	if (nbd_get64(h) != NBD_IHAVEOPT) {
		log_warn("nbd conn %u: bad option magic, closing", io->id);
		return -EPROTO;
	}
	opt = nbd_get32(h + 8);
	len = nbd_get32(h + 12);
	if (len > NBD_OPT_MAX_LEN) {
		log_warn("nbd conn %u: option %u length %u > %u, closing",
			 io->id, opt, len, NBD_OPT_MAX_LEN);
		return -EMSGSIZE;
	}
	if ((rc = nbd_read_full(io, data, len)) < 0)
		return rc;
	if (!tls_allows(srv, io, opt)) {
		if (opt == NBD_OPT_EXPORT_NAME) {
			log_info("nbd conn %u: NBD_OPT_EXPORT_NAME without TLS, "
				 "closing", io->id);
			return -EACCES;
		}
		return send_err(io, opt, NBD_REP_ERR_TLS_REQD, "this server "
				"requires TLS: use NBD_OPT_STARTTLS (nbds:// URIs)");
	}
	switch (opt) {
	case NBD_OPT_STARTTLS:
		return opt_starttls(srv, io, len);
	case NBD_OPT_EXPORT_NAME:
		return opt_export_name(srv, io, no_zeroes, slot);
	case NBD_OPT_ABORT:
		send_rep(io, opt, NBD_REP_ACK, NULL, 0);
		return -ECONNABORTED;
	case NBD_OPT_LIST:
		return opt_list(srv, io, len);
	case NBD_OPT_INFO:
	case NBD_OPT_GO:
		return opt_info_go(srv, io, opt, data, len, slot);
	default:
		return send_err(io, opt, NBD_REP_ERR_UNSUP, "option not supported");
	}
}

int nbd_handshake(struct nbd_server *srv, struct nbd_io *io,
		  struct nbd_slot **slot)
{
	uint8_t hello[18], cflags_b[4];
	uint32_t cflags;
	int rc;

	*slot = NULL;
	nbd_put64(hello, NBD_MAGIC);
	nbd_put64(hello + 8, NBD_IHAVEOPT);
	nbd_put16(hello + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	if ((rc = nbd_write_full(io, hello, sizeof(hello))) < 0 ||
	    (rc = nbd_read_full(io, cflags_b, 4)) < 0)
		return rc;
	cflags = nbd_get32(cflags_b);
	if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		log_warn("nbd conn %u: unknown client flags 0x%x, closing", io->id, cflags);
		return -EPROTO;
	}
	/* Bounded: a client gets at most this many options before GO. */
	for (int i = 0; i < 1024; i++) {
		rc = one_option(srv, io, !!(cflags & NBD_FLAG_C_NO_ZEROES), slot);
		if (rc < 0)
			return rc;
		if (rc == 1)
			return 0;
	}
	log_warn("nbd conn %u: too many options without GO, closing", io->id);
	return -EPROTO;
}
