/* drain_client.c — `farmem-memserver --drain ADDRESS`: take a server out
 * of service without losing data.
 *
 * Connects as the cluster identity (the secret itself: a client's key
 * file cannot ask), sends DRAIN with the time it may take, then asks
 * STAT until the server holds no segment.  The clients do the moving
 * (NOTICE, then their maintenance thread copies and frees); this only
 * waits, with a bound.  Exit 0 drained, 1 timed out (the server stays
 * draining; nothing was freed behind a client's back), 2 when the server
 * could not be asked.
 */
#include "memserver.h"
#include "clock.h"
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define POLL_MS 200

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int ask_drain(struct fm_conn *c, const char *text, uint64_t timeout_ms)
{
	struct fm_req req = { .op = FM_OP_DRAIN, .arg = (uint32_t)timeout_ms };
	int rc = fm_conn_call(c, &req);

	if (rc < 0)
		fprintf(stderr, "farmem-memserver: %s: DRAIN: %s%s\n", text, strerror(-rc),
			rc == -EPERM ? " (only the cluster secret may drain a server)" : "");
	return rc;
}

/* STAT until no segment is left or the deadline; 0 or -ETIMEDOUT. */
static int wait_empty(struct fm_conn *c, const char *text, uint64_t deadline,
		      uint32_t *left)
{
	uint32_t last = UINT32_MAX;

	for (;;) {
		struct fm_req req = { .op = FM_OP_STAT };
		int rc = fm_conn_call(c, &req);

		if (rc < 0) {
			fprintf(stderr, "farmem-memserver: %s: STAT: %s\n", text,
				strerror(-rc));
			return rc;
		}
		*left = req.rep.stat.segments;
		if (*left == 0)
			return 0;
		if (*left != last)
			fprintf(stderr, "farmem-memserver: %s: %u segment(s) left\n",
				text, *left);
		last = *left;
		if (fm_mono_ms() + POLL_MS > deadline)
			return -ETIMEDOUT;
		sleep_ms(POLL_MS);
	}
}

int ms_drain_client(const char *addr, const struct fm_secret *secret,
		    uint64_t timeout_ms)
{
	struct fm_conn_params p = { .secret = secret, .reconnect = 0 };
	uint64_t start = fm_mono_ms(), deadline = start + timeout_ms;
	struct fm_conn *c;
	char text[320];
	uint32_t left = 0;
	int rc;

	/* tcp only: notices travel on tcp connections (transport.h). */
	if (parse_addr(addr, 0, &p.addr) < 0 || p.addr.kind != ADDR_TCP) {
		fprintf(stderr, "farmem-memserver: --drain '%s': not a tcp address "
			"(tcp://HOST:PORT)\n", addr);
		return 2;
	}
	if (ms_admin_open(&p, text, sizeof(text), &c) < 0)
		return 2;
	rc = ask_drain(c, text, timeout_ms);
	if (rc == 0)
		rc = wait_empty(c, text, deadline, &left);
	fm_conn_close(c);
	if (rc == -ETIMEDOUT) {
		fprintf(stderr, "farmem-memserver: %s: drain timed out after %llu ms "
			"with %u segment(s) still held (the server keeps refusing "
			"new ones)\n", text, (unsigned long long)timeout_ms, left);
		return 1;
	}
	if (rc < 0)
		return 2;
	printf("farmem-memserver: %s: drained in %llu ms\n", text,
	       (unsigned long long)(fm_mono_ms() - start));
	return 0;
}
