/* test_membership.c — recovering a device that follows etcd: each index
 * in the state file gets its server back, whatever order the members
 * come in; a member that left becomes a gone stand-in; new ones go last. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checksum.h"
#include "tap.h"
#include "ublk-farmem/store/internal.h"

static void set_server(struct store *s, int i, const char *addr)
{
	snprintf(s->srv[i].addr, sizeof(s->srv[i].addr), "%s", addr);
	parse_addr(addr, 0, &s->srv[i].fa);
	s->srv[i].idx = i;
}

static uint64_t hash(const char *a)
{
	return fm_xxh3(a, strlen(a));
}

static int test_reorder(void)
{
	struct store *s = calloc(1, sizeof(*s));
	struct state_hdr *h = calloc(1, sizeof(*h));

	CHECK(s && h);
	/* The state knew A, B, C at 0, 1, 2. */
	h->nservers = 3;
	h->server_hash[0] = hash("tcp://10.0.0.1:7070");
	h->server_hash[1] = hash("tcp://10.0.0.2:7070");
	h->server_hash[2] = hash("tcp://10.0.0.3:7070");
	/* etcd now lists D, C, A (B left, D is new). */
	s->nservers = 3;
	set_server(s, 0, "tcp://10.0.0.4:7070");
	set_server(s, 1, "tcp://10.0.0.3:7070");
	set_server(s, 2, "tcp://10.0.0.1:7070");
	server_order_from_state(s, h);
	CHECK(s->nservers == 4 && h->nservers == 4);
	CHECK(!strcmp(s->srv[0].addr, "tcp://10.0.0.1:7070") && !s->hints.gone[0]);
	CHECK(s->hints.gone[1] && s->srv[1].retry_ns == UINT64_MAX);
	CHECK(!strcmp(s->srv[2].addr, "tcp://10.0.0.3:7070") && !s->hints.gone[2]);
	CHECK(!strcmp(s->srv[3].addr, "tcp://10.0.0.4:7070") && !s->hints.gone[3]);
	CHECK(h->server_hash[3] == hash("tcp://10.0.0.4:7070"));
	for (int i = 0; i < 4; i++)
		CHECK(s->srv[i].idx == i && s->srv[i].s == s);
	/* The order now matches the state: a second pass changes nothing. */
	server_order_from_state(s, h);
	CHECK(s->nservers == 4 && !strcmp(s->srv[3].addr, "tcp://10.0.0.4:7070"));
	free(h);
	free(s);
	return 0;
}

static const struct tap_case cases[] = {
	{ "recover with etcd: servers back at their state index", test_reorder },
};

TAP_MAIN(cases)
