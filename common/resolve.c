/* resolve.c — host and port to socket addresses, once; see resolve.h. */
#include "resolve.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

int fm_resolve(const char *host, uint16_t port, struct fm_resolved *r, const char **why)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	char serv[8];
	int g;

	memset(r, 0, sizeof(*r));
	snprintf(serv, sizeof(serv), "%u", port);
	g = getaddrinfo(host, serv, &hints, &res);
	if (g) {
		*why = gai_strerror(g);
		return -EHOSTUNREACH;
	}
	for (ai = res; ai && r->n < FM_RESOLVED_MAX; ai = ai->ai_next) {
		struct fm_sockaddr *a = &r->a[r->n];

		if (ai->ai_addrlen > sizeof(a->ss))
			continue;
		memcpy(&a->ss, ai->ai_addr, ai->ai_addrlen);
		a->len = ai->ai_addrlen;
		a->family = ai->ai_family;
		a->socktype = ai->ai_socktype;
		a->protocol = ai->ai_protocol;
		r->n++;
	}
	freeaddrinfo(res);
	if (r->n == 0) {
		*why = "no usable address";
		return -EHOSTUNREACH;
	}
	return 0;
}
