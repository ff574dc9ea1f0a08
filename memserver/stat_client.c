/* stat_client.c — `farmem-memserver --stat ADDRESS`: ask a running server.
 *
 * Uses the same authenticated client connection as farmem-blk, under a
 * fresh random identity that holds no segments (the server forgets it
 * when the connection closes).
 */
#include "memserver.h"
#include "transport.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void print_human(const char *addr, const struct fm_stat *st)
{
	printf("server        %s\n", addr);
	printf("pool          %llu bytes (%llu MiB)%s\n",
	       (unsigned long long)st->pool_bytes,
	       (unsigned long long)(st->pool_bytes >> 20),
	       st->locked ? ", locked" : ", NOT locked");
	printf("used          %llu bytes (%llu MiB)\n",
	       (unsigned long long)st->used_bytes,
	       (unsigned long long)(st->used_bytes >> 20));
	printf("free          %llu bytes (%llu MiB)\n",
	       (unsigned long long)st->free_bytes,
	       (unsigned long long)(st->free_bytes >> 20));
	printf("segments      %u (at most %u bytes each)\n", st->segments,
	       st->segment_max);
	printf("clients       %u\n", st->clients);
	printf("devices       %u (%u leased, no connection)\n", st->devices,
	       st->leased);
	printf("bytes read    %llu (%llu reads)\n",
	       (unsigned long long)st->bytes_read, (unsigned long long)st->reads);
	printf("bytes written %llu (%llu writes)\n",
	       (unsigned long long)st->bytes_written,
	       (unsigned long long)st->writes);
}

static void print_json(const char *addr, const struct fm_stat *st)
{
	/* addr passed parse_addr: no quote or backslash can be in it. */
	printf("{\"server\":\"%s\",\"pool_bytes\":%llu,\"used_bytes\":%llu,"
	       "\"free_bytes\":%llu,\"segments\":%u,\"segment_max\":%u,"
	       "\"clients\":%u,\"devices\":%u,\"leased\":%u,\"locked\":%s,"
	       "\"bytes_read\":%llu,\"bytes_written\":%llu,\"reads\":%llu,"
	       "\"writes\":%llu}\n", addr,
	       (unsigned long long)st->pool_bytes,
	       (unsigned long long)st->used_bytes,
	       (unsigned long long)st->free_bytes, st->segments,
	       st->segment_max, st->clients, st->devices, st->leased,
	       st->locked ? "true" : "false",
	       (unsigned long long)st->bytes_read,
	       (unsigned long long)st->bytes_written,
	       (unsigned long long)st->reads, (unsigned long long)st->writes);
}

int ms_admin_open(struct fm_conn_params *p, char *text, size_t len, struct fm_conn **c)
{
	int rc;

	addr_str(&p->addr, text, len);
	fm_uuid_generate(p->uuid);
	rc = fm_conn_open(p, c);
	if (rc < 0)
		fprintf(stderr, "farmem-memserver: %s: %s%s\n", text, strerror(-rc),
			rc == -EACCES ? " (wrong secret?)" : "");
	return rc;
}

int ms_stat_client(const char *addr, const struct fm_secret *secret, int json)
{
	struct fm_conn_params p = { .secret = secret };
	struct fm_req req = { .op = FM_OP_STAT };
	struct fm_conn *c;
	char text[320];
	int rc;

	/* The transport follows the address: tcp:// or rdma://. */
	if (parse_addr(addr, 0, &p.addr) < 0 || p.addr.kind == ADDR_UNIX) {
		fprintf(stderr, "farmem-memserver: --stat '%s': not an address "
			"(tcp://HOST:PORT or rdma://HOST:PORT)\n", addr);
		return -EINVAL;
	}
	rc = ms_admin_open(&p, text, sizeof(text), &c);
	if (rc < 0)
		return rc;
	rc = fm_conn_call(c, &req);
	fm_conn_close(c);
	if (rc < 0) {
		fprintf(stderr, "farmem-memserver: %s: STAT: %s\n", text,
			strerror(-rc));
		return rc;
	}
	if (json)
		print_json(text, &req.rep.stat);
	else
		print_human(text, &req.rep.stat);
	return 0;
}
