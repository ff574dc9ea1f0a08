/* nbd_psk.c — the "username:hexkey" PSK file (see nbd_psk.h). */
#include "nbd_psk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "parse.h"

/* One line's user name: why it is refused, or NULL when good. */
static const char *check_user(const char *u, size_t n)
{
	if (n == 0)
		return "empty user name";
	if (n > NBD_PSK_USER_MAX)
		return "user name longer than 128 bytes";
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f)
			return "control character in the user name";
	return NULL;
}

/* Hex text of n chars into e->key: why it is refused, or NULL. */
static const char *parse_key(const char *h, size_t n, struct nbd_psk_entry *e)
{
	if (n % 2)
		return "key has an odd number of hex digits";
	if (n / 2 < NBD_PSK_KEY_MIN)
		return "key shorter than 16 bytes (32 hex digits; psktool makes 32 bytes)";
	if (n / 2 > NBD_PSK_KEY_MAX)
		return "key longer than 64 bytes";
	for (size_t i = 0; i < n; i += 2) {
		int hi = hex_digit(h[i]), lo = hex_digit(h[i + 1]);

		if (hi < 0 || lo < 0)
			return "key is not hexadecimal";
		e->key[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	e->key_len = n / 2;
	return NULL;
}

/* One non-blank line (no newline) into e: why it is refused, or NULL. */
static const char *parse_line(const char *l, size_t n, struct nbd_psk_entry *e)
{
	const char *colon = memchr(l, ':', n);
	const char *why;
	size_t ulen;

	if (!colon)
		return "not username:hexkey";
	ulen = (size_t)(colon - l);
	if ((why = check_user(l, ulen)))
		return why;
	memcpy(e->user, l, ulen);
	e->user[ulen] = '\0';
	return parse_key(colon + 1, n - ulen - 1, e);
}

/* A new array rather than realloc: the old one's keys are wiped. */
static int grow(struct nbd_psk_table *t)
{
	size_t nc = t->cap ? t->cap * 2 : 8;
	struct nbd_psk_entry *ne = calloc(nc, sizeof(*ne));

	if (!ne)
		return -ENOMEM;
	if (t->e) {
		memcpy(ne, t->e, t->n * sizeof(*ne));
		explicit_bzero(t->e, t->cap * sizeof(*t->e));
		free(t->e);
	}
	t->e = ne;
	t->cap = nc;
	return 0;
}

static int line_error(const char *name, unsigned line, const char *why,
		      struct nbd_psk_table *t, char *err, size_t errlen)
{
	snprintf(err, errlen, "PSK file %s line %u: %s", name, line, why);
	nbd_psk_free(t);
	return -EINVAL;
}

int nbd_psk_parse(const char *text, size_t len, const char *name,
		  struct nbd_psk_table *t, char *err, size_t errlen)
{
	size_t pos = 0;
	unsigned line = 0;

	t->e = NULL;
	t->n = t->cap = 0;
	if (memchr(text, '\0', len))
		return line_error(name, 1, "NUL byte in the file", t, err, errlen);
	while (pos < len) {
		const char *l = text + pos, *nl = memchr(l, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - l) : len - pos;
		const char *why;

		pos += n + (nl ? 1 : 0);
		line++;
		if (n && l[n - 1] == '\r')
			n--;
		if (n == 0 || l[0] == '#')
			continue;
		if (t->n == NBD_PSK_ENTRIES_MAX)
			return line_error(name, line, "more than 4096 keys", t, err, errlen);
		if (t->n == t->cap && grow(t) < 0) {
			nbd_psk_free(t);
			snprintf(err, errlen, "PSK file %s: out of memory", name);
			return -ENOMEM;
		}
		if ((why = parse_line(l, n, &t->e[t->n])))
			return line_error(name, line, why, t, err, errlen);
		if (nbd_psk_find(t, t->e[t->n].user))
			return line_error(name, line, "user name given twice", t, err, errlen);
		t->n++;
	}
	if (t->n == 0)
		return line_error(name, line ? line : 1, "no username:hexkey line",
				  t, err, errlen);
	return 0;
}

int nbd_psk_load(const char *path, struct nbd_psk_table *t, char *err, size_t errlen)
{
	struct stat st;
	char *text;
	size_t got = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "PSK file %s: %s", path, strerror(-rc));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > NBD_PSK_FILE_MAX) {
		snprintf(err, errlen, "PSK file %s: not a regular file of at most 1 MiB", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 077)
		log_warn("PSK file %s is readable by group or others (mode %03o); "
			 "chmod 600 it", path, (unsigned)(st.st_mode & 0777));
	text = malloc((size_t)st.st_size + 1);
	if (!text) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, text + got, (size_t)st.st_size - got);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	rc = nbd_psk_parse(text, got, path, t, err, errlen);
	explicit_bzero(text, (size_t)st.st_size);
	free(text);
	return rc;
}

const struct nbd_psk_entry *nbd_psk_find(const struct nbd_psk_table *t,
					 const char *user)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->e[i].user, user))
			return &t->e[i];
	return NULL;
}

void nbd_psk_free(struct nbd_psk_table *t)
{
	if (t->e)
		explicit_bzero(t->e, t->cap * sizeof(*t->e));
	free(t->e);
	t->e = NULL;
	t->n = t->cap = 0;
}
