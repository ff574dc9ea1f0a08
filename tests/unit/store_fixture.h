/* store_fixture.h — a store on in-process fault servers, for unit tests.
 *
 * Servers are fault-transport servers keyed by port (no sockets).  The
 * store runs without its background thread unless asked, so tests call
 * store_maintain() and see deterministic results.
 */
#ifndef FARMEM_STORE_FIXTURE_H
#define FARMEM_STORE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ublk-farmem/store/record.h"
#include "ublk-farmem/store/store.h"
#include "transport_fault.h"

#define FIX_PORT0 41000

static inline void fix_config(struct store_config *c, int nservers, int replicas,
			      uint64_t size)
{
	memset(c, 0, sizeof(*c));
	for (int i = 0; i < nservers; i++) {
		c->servers[i].kind = ADDR_TCP;
		snprintf(c->servers[i].host, sizeof(c->servers[i].host), "127.0.0.1");
		c->servers[i].port = (uint16_t)(FIX_PORT0 + i);
	}
	c->nservers = nservers;
	c->secret.len = 16;
	memset(c->secret.bytes, 'k', 16);
	for (int i = 0; i < FM_UUID_LEN; i++)
		c->uuid[i] = (uint8_t)(i + 1);
	c->size = size;
	c->replicas = replicas;
	c->compress = STORE_COMPRESS_ZSTD;
	c->segment_size = 64u << 10;
	c->queues = 2;
	c->max_io = 64u << 10;
	c->timeout_ms = 300;
	c->transport = &fm_transport_fault;
	c->no_background = 1;
}

/* The fixture's devices seal their records (encrypt AUTO, the default):
 * a bad copy counts as an auth error there, a checksum error when plain. */
#define FIX_BAD_COPIES(st) ((st).checksum_errors + (st).auth_errors)
/* An incompressible page's record on a sealed device. */
#define FIX_RAW_REC rec_len(STORE_PAGE + REC_TAG_SIZE)

static inline struct store *fix_open(const struct store_config *c)
{
	struct store *s = NULL;
	char err[256] = "";
	int rc = store_open(c, &s, err, sizeof(err));

	if (rc < 0)
		printf("# store_open: %d %s\n", rc, err);
	return s;
}

/* Deterministic page contents: kind 0 zero, 1 text-like, 2 random. */
static inline void fix_fill(uint8_t *p, uint64_t page, uint32_t gen, int kind)
{
	uint64_t x = page * 0x9e3779b97f4a7c15ull + gen * 0xbf58476d1ce4e5b9ull + 1;

	if (kind == 0) {
		memset(p, 0, STORE_PAGE);
		return;
	}
	for (unsigned i = 0; i < STORE_PAGE; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = kind == 1 ? (uint8_t)("farmem page text "[(i + page) % 17] + (i % 64 == 0 ? gen % 7 : 0))
				 : (uint8_t)x;
	}
	/* Every non-zero page names itself, so a misplaced page is caught. */
	memcpy(p, &page, sizeof(page));
	memcpy(p + 8, &gen, sizeof(gen));
}

static inline int fix_servers_total(int n, struct fault_stats *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (int i = 0; i < n; i++) {
		struct fault_stats st;

		fault_get_stats((uint16_t)(FIX_PORT0 + i), &st);
		sum->segments += st.segments;
		sum->bytes += st.bytes;
		sum->reads += st.reads;
		sum->writes += st.writes;
	}
	return 0;
}

static inline void fix_quiet(void)
{
	log_init("test", getenv("FARMEM_TEST_VERBOSE") ? LOG_LVL_DEBUG : LOG_LVL_ERR);
}

#endif
