/* rdma_listener.h — farmem-memserver's rdma:// listener.
 *
 * Accepts RDMA connections (librdmacm), carries the ordinary control
 * frames over SEND/RECV into the same session code the TCP server uses
 * (ms_session_frame), and lets authenticated clients read and write their
 * own segments one-sidedly: the pool is registered once per RDMA device,
 * and each segment a client may touch is granted to it as
 * (remote_addr, rkey) in the ALLOC reply or a GRANT reply
 * (common/transport_rdma.h).  READ/WRITE frames are refused on rdma
 * (-EOPNOTSUPP): the data path never needs the server's CPU.
 *
 * Isolation.  When the device supports type-2 memory windows (rxe does),
 * the pool's memory region has no remote access at all; every grant binds
 * a window over exactly that segment to exactly that connection's queue
 * pair, so a key is useless to any other connection and outside the
 * segment, and FREE (or the connection's end) invalidates it.  A device
 * without memory windows is refused unless allow_shared_rkey is set
 * (struct ms_limits): then the listener falls back to remote access on
 * the whole region and warns, every authenticated client's key covers
 * the whole pool, and only the secret keeps strangers out.
 *
 * Before a connection authenticates it holds only what the handshake
 * needs (rdma_listener.c says how much), within the same handshake
 * caps and deadline as tcp (struct ms_limits, ms_ctx.admit).
 *
 * Threading: none of its own.  Everything runs from the memserver's
 * epoll loop, so the session code needs no locks: the listener exposes
 * one pollable fd (an epoll set of its own channels and a 1 s timer).
 *
 * server.c runs it: ms_rdma_listen() for each rdma:// --listen, its fd
 * in the main epoll set, ms_rdma_process() when readable, ms_rdma_close()
 * at teardown before the pool goes.  A FREE over any transport revokes
 * the segment's grants at once (struct ms_free_hook in ms_ctx); the 1 s
 * sweep catches anything else that took a granted segment away.
 */
#ifndef FARMEM_RDMA_LISTENER_H
#define FARMEM_RDMA_LISTENER_H

#include <stdint.h>

#include "memserver.h"
#include "parse.h"

struct ms_rdma;

/* Listen on addr (kind ADDR_RDMA) for the pool in ctx->segs.  Fails with
 * -ENODEV and a message naming the address and what to check when there
 * is no RDMA device or the address is not on one; with -EOPNOTSUPP when
 * the device has no type-2 memory windows and ctx->limits does not allow
 * a shared key. */
int ms_rdma_listen(struct ms_ctx *ctx, const struct fm_addr *addr, struct ms_rdma **out);
/* The port it listens on (the one chosen when addr asked for port 0). */
uint16_t ms_rdma_port(const struct ms_rdma *l);
/* Readable when ms_rdma_process() has work. */
int ms_rdma_fd(const struct ms_rdma *l);
/* Handle everything pending without blocking. */
void ms_rdma_process(struct ms_rdma *l);
/* A segment was freed (by any transport): revoke every grant of it.
 * arg is the struct ms_rdma (the shape of an ms_ctx callback). */
void ms_rdma_on_free(void *arg, uint64_t seg_id);
/* Ends every connection (their sessions end as with tcp) and frees. */
void ms_rdma_close(struct ms_rdma *l);

/* Counters for tests and numbers. */
struct ms_rdma_stats {
	uint64_t conns;       /* accepted so far */
	uint64_t ctrl_msgs;   /* control messages received */
	uint64_t grants;      /* windows bound (or keys handed out) */
	uint64_t revokes;     /* windows invalidated by FREE or the sweep */
	uint64_t send_areas;  /* LIST-sized send buffers registered (on authentication) */
	uint64_t refused;     /* connect requests over the handshake caps */
	int windows;          /* 1: per-segment memory windows; 0: whole-pool key */
};
void ms_rdma_get_stats(const struct ms_rdma *l, struct ms_rdma_stats *st);

#endif
