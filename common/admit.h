/* admit.h — who may start a handshake: a cap on connections not yet
 * authenticated, in total and per source host (IPv4 address or IPv6
 * /64).  New connections beyond either are refused; none in progress is
 * evicted.  Not thread-safe: callers sharing one hold a lock. */
#ifndef FARMEM_ADMIT_H
#define FARMEM_ADMIT_H

struct sockaddr;
struct fm_admit_src;

struct fm_admit {
	unsigned max_total, max_per_src, total, nslots;
	struct fm_admit_src *slots;
};

int fm_admit_init(struct fm_admit *a, unsigned max_total, unsigned max_per_src);
void fm_admit_fini(struct fm_admit *a);
/* A handshake from sa may start: 0; -EBUSY when its source already has
 * max_per_src in progress, -EAGAIN when max_total are, -EAFNOSUPPORT for
 * an address that is not IPv4 or IPv6.  Refused ones take nothing. */
int fm_admit_take(struct fm_admit *a, const struct sockaddr *sa);
/* That handshake ended (authenticated or closed). */
void fm_admit_put(struct fm_admit *a, const struct sockaddr *sa);
unsigned fm_admit_source_count(const struct fm_admit *a, const struct sockaddr *sa);

#endif
