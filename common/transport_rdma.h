/* transport_rdma.h — the memserver connection over RDMA (rdma-core).
 *
 * The client transport `fm_transport_rdma` sits behind the same ops table
 * as tcp.  Control messages (HELLO, AUTH, ALLOC, FREE, STAT, PING, LIST)
 * are the ordinary 24-byte-header frames of protocol.h, one frame per
 * SEND/RECV message.  READ and WRITE never travel as frames: they are
 * one-sided RDMA READ / RDMA WRITE work requests against the segment's
 * (remote_addr, rkey), so the server's CPU is not on the data path.
 *
 * How the client learns a segment's (remote_addr, rkey): the ALLOC reply
 * carries them (protocol.h); for a segment allocated earlier (by another
 * connection, before a reconnect, or by a previous daemon after
 * `recover`) the client asks with GRANT, an RDMA-only control op:
 *
 *   GRANT req : u64 seg_id                      (same layout as FREE)
 *         rep : u64 seg_id, u32 size, u32 rkey, u64 remote_addr
 *               (same layout as the ALLOC reply)
 *
 * The server answers GRANT only on an authenticated connection and only
 * for a segment of that connection's device (-ENOENT otherwise, like a
 * READ of it over tcp).  A key may be scoped to one connection (a memory
 * window bound to its queue pair), so the client forgets every grant when
 * its connection drops and asks again after the reconnect.
 */
#ifndef FARMEM_TRANSPORT_RDMA_H
#define FARMEM_TRANSPORT_RDMA_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "protocol.h"
#include "transport.h"

extern const struct fm_transport_ops fm_transport_rdma;

/* RDMA-only control op (never valid on tcp).  Belongs in enum fm_op. */
#define FM_OP_RDMA_GRANT   0x10
#define FM_GRANT_REQ_LEN   8
#define FM_GRANT_REP_LEN   FM_ALLOC_REP_LEN

/* Largest control message either side sends: a full LIST reply and its
 * channel tag (chan.h: after AUTH every message ends with one). */
#define FM_RDMA_MSG_MAX    (FM_HDR_SIZE + 4u + FM_LIST_MAX * FM_LIST_ENTRY_LEN + 16u)
/* Control requests a client keeps outstanding on one connection; the
 * server posts this many receives per connection, so a client within
 * this credit never meets a receiver without a buffer. */
#define FM_RDMA_CTRL_DEPTH 16

/* Request slots one rdma connection may have at most;
 * bounce units, not slots, bound what is in flight long before this. */
#define FM_RDMA_MAX_INFLIGHT 4096u

/* The one text every "RDMA is not there" error carries. */
#define FM_RDMA_CHECK_HINT "check `rdma link` and `ibv_devices`"

/* fm_hdr_decode() that also accepts GRANT; msg_len is the message's
 * header and payload (without its tag) and must match the header's len
 * exactly. */
int fm_rdma_msg_decode(const uint8_t *msg, size_t msg_len, struct fm_hdr *h);

/* 0 when this machine has at least one RDMA device; -ENODEV (with a
 * message naming `what`, e.g. the address) when it has none. */
int fm_rdma_device_check(const char *what);

/* Turn an rdma_cm failure event into an errno, logging (at lvl) a message
 * that says what to check; stage is "resolving the address", ... */
int fm_rdma_cm_error(const char *name, const char *stage, int event, int status,
		     enum log_level lvl);

/* ---- the grant cache: seg_id -> (remote_addr, rkey, size) ----
 *
 * Open addressing over a fixed table allocated at open.  It is a cache:
 * when it is full it forgets everything (the next I/O on a segment asks
 * for a new GRANT), so no insert ever fails and nothing is allocated on
 * the I/O path. */
struct fm_rdma_grant {
	uint64_t seg_id;
	uint64_t addr;
	uint32_t rkey;
	uint32_t size;
	uint8_t used;
};

struct fm_rdma_grants {
	struct fm_rdma_grant *tab;
	uint32_t cap;     /* power of two */
	uint32_t count;
	uint64_t resets;  /* times the cache was full and forgot everything */
};

int fm_rdma_grants_init(struct fm_rdma_grants *g, uint32_t cap);
void fm_rdma_grants_fini(struct fm_rdma_grants *g);
const struct fm_rdma_grant *fm_rdma_grants_find(const struct fm_rdma_grants *g,
						uint64_t seg_id);
void fm_rdma_grants_put(struct fm_rdma_grants *g, uint64_t seg_id, uint64_t addr,
			uint32_t rkey, uint32_t size);
void fm_rdma_grants_del(struct fm_rdma_grants *g, uint64_t seg_id);
void fm_rdma_grants_clear(struct fm_rdma_grants *g);

/* Where [offset, offset+len) of the granted segment lives remotely;
 * -ERANGE when it is not inside the segment. */
int fm_rdma_grant_range(const struct fm_rdma_grant *e, uint32_t offset,
			uint32_t len, uint64_t *remote);

#endif
