/* resolve.h — a server's host and port turned into socket addresses once.
 *
 * getaddrinfo() allocates and may wait on DNS.  The client transports
 * used to call it on every reconnect, from the thread that swap I/O is
 * waiting on; now they resolve at open and keep the result here, and a
 * reconnect dials the addresses it already has.
 */
#ifndef FARMEM_RESOLVE_H
#define FARMEM_RESOLVE_H

#include <stdint.h>
#include <sys/socket.h>

/* More than a dual-stack host name gives; the rest are dropped. */
#define FM_RESOLVED_MAX 8

struct fm_sockaddr {
	struct sockaddr_storage ss;
	socklen_t len;
	int family, socktype, protocol;   /* as socket() takes them */
};

struct fm_resolved {
	unsigned n;
	struct fm_sockaddr a[FM_RESOLVED_MAX];
};

/* Resolve host:port for a stream socket into r, in getaddrinfo()'s
 * order.  0, or -EHOSTUNREACH with *why set to getaddrinfo's reason. */
int fm_resolve(const char *host, uint16_t port, struct fm_resolved *r, const char **why);

static inline const struct sockaddr *fm_sockaddr_ptr(const struct fm_sockaddr *a)
{
	return (const struct sockaddr *)&a->ss;
}

#endif
