/* transport_fault.h — an in-process memserver behind fm_transport_ops,
 * with knobs to inject failures.  Unit tests only.
 *
 * Servers are keyed by addr.port and created on first connect; their
 * segments outlive connections (like a memserver's lease) until
 * fault_reset().  Replies come from one worker thread per connection, so
 * done() never runs inside submit(), as with the real transports.  A
 * dropped connection with reconnect set comes back when is_up() is asked
 * at least 100 ms later and its server is UP (or at once on
 * fault_set_mode(FAULT_UP)).
 */
#ifndef FARMEM_TRANSPORT_FAULT_H
#define FARMEM_TRANSPORT_FAULT_H

#include <stdint.h>

#include "transport.h"

extern const struct fm_transport_ops fm_transport_fault;

enum fault_mode {
	FAULT_UP = 0,     /* normal service */
	FAULT_DOWN,       /* connections dropped: in flight -ECONNRESET, submit -ENOTCONN, connect refused */
	FAULT_HANG,       /* requests are never answered: each times out (-ETIMEDOUT) */
};

struct fault_stats {
	uint64_t segments, bytes;     /* currently allocated */
	uint64_t allocs, frees, reads, writes;
};

/* Frees every fault server and its segments (no connection may be open). */
void fault_reset(void);
/* Forgets every segment a server holds, as a restarted memserver would. */
void fault_reset_server(uint16_t port);
/* Changes a server's mode; state callbacks of its connections run. */
void fault_set_mode(uint16_t port, enum fault_mode mode);
/* The next n READ/WRITE/ALLOC/FREE requests fail with err (< 0). */
void fault_fail_next(uint16_t port, unsigned n, int err);
/* ALLOC answers -ENOSPC while on. */
void fault_set_nospc(uint16_t port, int on);
/* Largest segment ALLOC hands out (STAT reports it); default 64 MiB. */
void fault_set_segment_max(uint16_t port, uint32_t bytes);
/* Each reply is delayed by ms; ms >= the connection's timeout makes
 * every request time out. */
void fault_set_delay(uint16_t port, unsigned ms);
/* Flips the bits of one stored byte; -ENOENT when there is no such byte. */
int fault_corrupt(uint16_t port, uint64_t seg_id, uint32_t off);
/* Sets one stored byte (a forged header); -ENOENT as above. */
int fault_poke(uint16_t port, uint64_t seg_id, uint32_t off, uint8_t value);
void fault_get_stats(uint16_t port, struct fault_stats *st);

#endif
