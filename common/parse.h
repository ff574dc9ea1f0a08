/* parse.h — checked parsing of numbers, sizes and addresses.
 *
 * Every parser returns 0 or -EINVAL/-ERANGE and never accepts trailing
 * garbage, octal surprises ("042" is 42) or silent overflow.
 */
#ifndef FARMEM_PARSE_H
#define FARMEM_PARSE_H

#include <stdint.h>
#include <stddef.h>

/* Decimal unsigned integer within [min, max]. */
int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* Decimal signed integer within [min, max]. */
int parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/* Size with optional K/M/G/T suffix (powers of 1024; "KiB" etc. too). */
int parse_size(const char *s, uint64_t *out);
/* Duration: plain number is seconds; suffixes ms, s, m, h. Result in ms. */
int parse_duration_ms(const char *s, uint64_t *out);
/* yes/no/true/false/on/off/1/0. */
int parse_bool(const char *s, int *out);

enum addr_kind { ADDR_TCP = 1, ADDR_RDMA, ADDR_UNIX };

#define ADDR_HOST_MAX 256
#define ADDR_PATH_MAX 108 /* sizeof(sun_path) */

struct fm_addr {
	enum addr_kind kind;
	char host[ADDR_HOST_MAX];  /* tcp/rdma: host name or IP (no brackets) */
	uint16_t port;             /* tcp/rdma */
	char path[ADDR_PATH_MAX];  /* unix */
};

/* "tcp://host:port", "rdma://host:port", "[::1]:port" forms, and
 * "unix:/path" (only when allow_unix).  Returns -EINVAL on anything else. */
int parse_addr(const char *s, int allow_unix, struct fm_addr *out);
/* Back to text, for messages. */
const char *addr_str(const struct fm_addr *a, char *buf, size_t len);

/* The value of one hex digit (either case), or -1. */
int hex_digit(char c);

/* Split a comma-separated list in place; returns count or -E2BIG. */
int split_list(char *s, char **items, int max_items);

#endif
