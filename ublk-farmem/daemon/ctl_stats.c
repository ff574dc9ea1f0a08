/* ctl_stats.c — store_stats as text on the control socket:
 *   <key> <u64>                       one per device-wide counter
 *   server <i> <up> <segments> <bytes> <reads> <writes> <errors> <addr>
 * The address goes last as it is the only field that may hold spaces. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "store/store.h"

#define F(name) { #name, offsetof(struct store_stats, name) }
static const struct { const char *key; size_t off; } u64_fields[] = {
	F(size), F(pages_stored), F(zero_pages), F(bytes_logical),
	F(bytes_stored), F(bytes_remote), F(segments), F(degraded_segments),
	F(reads), F(writes), F(discards), F(checksum_errors), F(read_errors),
	F(write_errors), F(cleaned_segments), F(rereplicated_segments),
	F(auth_errors), F(etcd_errors), F(members_joined), F(members_lost),
	F(incompressible_pages),
};
#undef F
#define NFIELDS (sizeof(u64_fields) / sizeof(u64_fields[0]))

void ctl_stats_write(FILE *f, const struct store_stats *st)
{
	for (size_t i = 0; i < NFIELDS; i++)
		fprintf(f, "%s %" PRIu64 "\n", u64_fields[i].key,
			*(const uint64_t *)((const char *)st + u64_fields[i].off));
	fprintf(f, "replicas %d\nnservers %d\nencrypt %d\n", st->replicas, st->nservers,
		(int)st->encrypt);
	/* Membership: state, then the error text last (it may hold spaces). */
	if (st->etcd != STORE_ETCD_OFF)
		fprintf(f, "etcd %d %s\n", (int)st->etcd, st->etcd_error);
	for (int i = 0; i < st->nservers && i < STORE_MAX_SERVERS; i++) {
		const struct store_server_stats *s = &st->server[i];

		fprintf(f, "server %d %d %" PRIu64 " %" PRIu64 " %" PRIu64 " %"
			PRIu64 " %" PRIu64 " %s\n", i, s->up ? 1 : 0, s->segments,
			s->bytes, s->reads, s->writes, s->errors, s->addr);
		if (s->gone)   /* after its server line, which resets it */
			fprintf(f, "server_gone %d\n", i);
	}
}

static int parse_server(const char *rest, struct store_stats *st)
{
	struct store_server_stats s;
	int i, up, pos = 0;

	memset(&s, 0, sizeof(s));
	if (sscanf(rest, "%d %d %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
		   " %" SCNu64 " %n", &i, &up, &s.segments, &s.bytes, &s.reads,
		   &s.writes, &s.errors, &pos) != 7 || pos == 0)
		return -EINVAL;
	if (i < 0 || i >= STORE_MAX_SERVERS)
		return -EINVAL;
	s.up = up;
	snprintf(s.addr, sizeof(s.addr), "%s", rest + pos);
	st->server[i] = s;
	return 0;
}

static int parse_etcd(const char *rest, struct store_stats *st)
{
	int state, pos = 0;

	if (sscanf(rest, "%d %n", &state, &pos) != 1 || state < STORE_ETCD_OK ||
	    state > STORE_ETCD_UNREACHABLE)
		return -EINVAL;
	st->etcd = (enum store_etcd_state)state;
	snprintf(st->etcd_error, sizeof(st->etcd_error), "%s", rest + pos);
	return 0;
}

static int parse_line(const char *line, struct store_stats *st)
{
	char key[32];
	int pos = 0;
	uint64_t v;

	if (sscanf(line, "%31s %n", key, &pos) != 1)
		return 0;
	if (!strcmp(key, "server"))
		return parse_server(line + pos, st);
	if (!strcmp(key, "etcd"))
		return parse_etcd(line + pos, st);
	if (sscanf(line + pos, "%" SCNu64, &v) != 1)
		return 0;
	if (!strcmp(key, "replicas"))
		st->replicas = (int)v;
	else if (!strcmp(key, "encrypt") && v <= STORE_ENCRYPT_XCHACHA20POLY1305)
		st->encrypt = (enum store_encrypt)v;
	else if (!strcmp(key, "server_gone") && v < STORE_MAX_SERVERS)
		st->server[v].gone = 1;
	else if (!strcmp(key, "nservers"))
		st->nservers = v > STORE_MAX_SERVERS ? STORE_MAX_SERVERS : (int)v;
	for (size_t i = 0; i < NFIELDS; i++)
		if (!strcmp(key, u64_fields[i].key))
			*(uint64_t *)((char *)st + u64_fields[i].off) = v;
	return 0;
}

int ctl_stats_parse(const char *text, struct store_stats *st)
{
	memset(st, 0, sizeof(*st));
	while (*text) {
		char line[600];
		size_t n = strcspn(text, "\n");

		if (n >= sizeof(line))
			return -EINVAL;
		memcpy(line, text, n);
		line[n] = '\0';
		if (parse_line(line, st) < 0)
			return -EINVAL;
		text += n + (text[n] == '\n');
	}
	return 0;
}
