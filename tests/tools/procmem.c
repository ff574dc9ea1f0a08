/* procmem.c — a donor's view of its own pool, for the security tests:
 * read and rewrite another process's anonymous memory through
 * /proc/PID/mem (root, or the same user with ptrace allowed).
 *
 *   procmem count PID MIN_BYTES STRING
 *       how often STRING occurs in PID's writable anonymous mappings of
 *       at least MIN_BYTES (the memserver's pool: its --size; 0: all of
 *       them up to 4 GiB each)
 *   procmem records PID MIN_BYTES PAGE
 *       every stored record header for device page PAGE found there:
 *       "ADDR LEN VERSION FMRC|FMRS" per line (hex address)
 *   procmem forge PID ADDR BYTE
 *       overwrite the payload of the record at ADDR with BYTE (hex); a
 *       plain record gets its XXH3 checksum recomputed, as an attacker
 *       holding the pool would; a sealed one keeps its old tag (the key
 *       is not the donor's to have)
 *
 * Every scan is bounded by the mappings' sizes; exit 0 on success, 1 on
 * an error (printed), 2 on a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checksum.h"
#include "protocol.h"

#define CHUNK      (1u << 20)
#define MAX_MAPS   4096
/* Larger anonymous mappings are address space reserved, not memory a
 * pool could be (ASan's shadow is terabytes): skipped, so a scan stays
 * bounded under sanitizers too. */
#define MAX_MAP    (4ull << 30)
#define HDR        32u
#define MAX_PLEN   (4096u + 16u)
#define MAGIC_PLAIN  0x43524d46u /* "FMRC" */
#define MAGIC_SEALED 0x53524d46u /* "FMRS" */

struct range { uint64_t lo, hi; };

/* Writable, private, anonymous (or anonymous huge page) mappings. */
static int pool_ranges(int pid, uint64_t min, struct range *r, int max)
{
	char path[64], line[512];
	FILE *f;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f) {
		fprintf(stderr, "procmem: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (n < max && fgets(line, sizeof(line), f)) {
		uint64_t lo, hi;
		char perms[8], name[256] = "";
		int fields = sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %*s %*s %*s %255s",
				    &lo, &hi, perms, name);

		if (fields < 3 || perms[0] != 'r' || perms[1] != 'w')
			continue;
		if (name[0] && !strstr(name, "anon_hugepage") && strcmp(name, "[heap]"))
			continue;
		if (hi - lo < min || hi - lo > MAX_MAP)
			continue;
		r[n++] = (struct range){ lo, hi };
	}
	fclose(f);
	return n;
}

static int open_mem(int pid, int flags)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		fprintf(stderr, "procmem: %s: %s\n", path, strerror(errno));
	return fd;
}

/* Calls hit(addr, bytes at addr, bytes available) for every offset of
 * every range where the first byte matches first; windows overlap by
 * keep bytes so nothing straddling a chunk border is missed. */
typedef void (*hit_fn)(uint64_t addr, const uint8_t *p, size_t avail, void *arg);

static int scan(int pid, uint64_t min, uint8_t first, size_t keep, hit_fn hit, void *arg)
{
	static struct range r[MAX_MAPS];
	static uint8_t buf[CHUNK + MAX_PLEN + HDR];
	int n = pool_ranges(pid, min, r, MAX_MAPS), fd;

	if (n < 0 || (fd = open_mem(pid, O_RDONLY)) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		for (uint64_t a = r[i].lo; a < r[i].hi; a += CHUNK) {
			size_t want = r[i].hi - a < CHUNK + keep ? r[i].hi - a : CHUNK + keep;
			ssize_t got = pread(fd, buf, want, (off_t)a);

			if (got <= 0)
				break;   /* unreadable (guard page): next range */
			size_t end = (size_t)got < CHUNK ? (size_t)got : CHUNK;
			for (size_t o = 0; o < end; o++) {
				const uint8_t *q = memchr(buf + o, first, end - o);

				if (!q)
					break;
				o = (size_t)(q - buf);
				hit(a + o, q, (size_t)got - o, arg);
			}
		}
	}
	close(fd);
	return 0;
}

struct count_arg { const char *s; size_t len; uint64_t n; };

static void count_hit(uint64_t addr, const uint8_t *p, size_t avail, void *arg)
{
	struct count_arg *c = arg;

	(void)addr;
	if (avail >= c->len && !memcmp(p, c->s, c->len))
		c->n++;
}

struct rec_arg { uint64_t page; int n; };

static void rec_hit(uint64_t addr, const uint8_t *p, size_t avail, void *arg)
{
	struct rec_arg *ra = arg;
	uint32_t magic, plen;

	if (avail < HDR)
		return;
	magic = get_le32(p);
	plen = get_le16(p + 4);
	if ((magic != MAGIC_PLAIN && magic != MAGIC_SEALED) || plen == 0 ||
	    plen > MAX_PLEN || get_le64(p + 8) != ra->page)
		return;
	printf("%" PRIx64 " %u %" PRIu64 " %s\n", addr, HDR + plen, get_le64(p + 16),
	       magic == MAGIC_PLAIN ? "FMRC" : "FMRS");
	ra->n++;
}

static int forge(int pid, uint64_t addr, uint8_t byte)
{
	uint8_t rec[HDR + MAX_PLEN];
	uint32_t magic, plen;
	int fd = open_mem(pid, O_RDWR), rc = 1;

	if (fd < 0)
		return 1;
	if (pread(fd, rec, HDR, (off_t)addr) != HDR) {
		fprintf(stderr, "procmem: read %" PRIx64 ": %s\n", addr, strerror(errno));
		goto out;
	}
	magic = get_le32(rec);
	plen = get_le16(rec + 4);
	if ((magic != MAGIC_PLAIN && magic != MAGIC_SEALED) || !plen || plen > MAX_PLEN) {
		fprintf(stderr, "procmem: no record at %" PRIx64 "\n", addr);
		goto out;
	}
	if (magic == MAGIC_PLAIN) {
		memset(rec + HDR, byte, plen);
		put_le64(rec + 24, fm_xxh3_seed(rec + HDR, plen, fm_xxh3(rec, 24)));
	} else {
		memset(rec + HDR, byte, plen - 16);   /* the tag stays */
	}
	if (pwrite(fd, rec, HDR + plen, (off_t)addr) != (ssize_t)(HDR + plen)) {
		fprintf(stderr, "procmem: write %" PRIx64 ": %s\n", addr, strerror(errno));
		goto out;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

static int usage(void)
{
	fprintf(stderr, "usage: procmem count PID MIN_BYTES STRING\n"
		"       procmem records PID MIN_BYTES PAGE\n"
		"       procmem forge PID ADDR BYTE\n");
	return 2;
}

int main(int argc, char **argv)
{
	int pid;

	if (argc != 5)
		return usage();
	pid = atoi(argv[2]);
	if (pid <= 0)
		return usage();
	if (!strcmp(argv[1], "count")) {
		struct count_arg c = { argv[4], strlen(argv[4]), 0 };

		if (!c.len || c.len > CHUNK)
			return usage();
		if (scan(pid, strtoull(argv[3], NULL, 0), (uint8_t)c.s[0], c.len, count_hit, &c) < 0)
			return 1;
		printf("%" PRIu64 "\n", c.n);
		return 0;
	}
	if (!strcmp(argv[1], "records")) {
		struct rec_arg ra = { strtoull(argv[4], NULL, 0), 0 };

		return scan(pid, strtoull(argv[3], NULL, 0), 'F', HDR + MAX_PLEN, rec_hit, &ra) < 0;
	}
	if (!strcmp(argv[1], "forge"))
		return forge(pid, strtoull(argv[3], NULL, 16),
			     (uint8_t)strtoul(argv[4], NULL, 16));
	return usage();
}
