/* keyfile.c — parse and write client key files (see keyfile.h).
 *
 * The parser walks the bytes itself rather than through iniparser: it
 * must refuse what iniparser forgives (a repeated key, a section, a
 * stray byte), and it is a fuzz target, so it works on a bounded buffer
 * and never allocates.
 */
#include "keyfile.h"
#include "log.h"
#include "parse.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int bad(char *why, size_t whylen, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int bad(char *why, size_t whylen, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(why, whylen, "line %u: ", line);

	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < whylen)
		vsnprintf(why + n, whylen - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* One line [p, end) without its newline, blanks around trimmed. */
struct kf_line {
	const char *p, *end;
	unsigned no;
};

static void trim(struct kf_line *l)
{
	while (l->p < l->end && is_blank(*l->p))
		l->p++;
	while (l->end > l->p && (is_blank(l->end[-1]) || l->end[-1] == '\r'))
		l->end--;
}

static int parse_key_hex(const char *v, size_t n, uint8_t key[FM_KEY_LEN])
{
	if (n != 2 * FM_KEY_LEN)
		return -EINVAL;
	for (size_t i = 0; i < FM_KEY_LEN; i++) {
		int hi = hex_digit(v[2 * i]), lo = hex_digit(v[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* "name = value" into the identity; *seen tracks which keys came. */
static int parse_setting(struct kf_line *l, struct fm_identity *id, int *seen,
			 char *why, size_t whylen)
{
	const char *eq = memchr(l->p, '=', (size_t)(l->end - l->p));
	struct kf_line k, v;

	if (!eq)
		return bad(why, whylen, l->no, "not 'name = ...' or 'key = ...'");
	k = (struct kf_line){ l->p, eq, l->no };
	v = (struct kf_line){ eq + 1, l->end, l->no };
	trim(&k);
	trim(&v);
	if ((size_t)(k.end - k.p) == 4 && memcmp(k.p, "name", 4) == 0) {
		size_t n = (size_t)(v.end - v.p);

		if (*seen & 1)
			return bad(why, whylen, l->no, "second 'name'");
		if (fm_client_name_check(v.p, n) < 0)
			return bad(why, whylen, l->no, "name '%.*s' is not 1..%d of "
				   "a-z 0-9 . _ - starting with a letter or digit",
				   (int)(n > 64 ? 64 : n), v.p, FM_NAME_MAX);
		if (n == strlen(FM_CLUSTER_NAME) && memcmp(v.p, FM_CLUSTER_NAME, n) == 0)
			return bad(why, whylen, l->no, "name '%s' is reserved for "
				   "clients holding the secret itself", FM_CLUSTER_NAME);
		memcpy(id->name, v.p, n);
		id->name[n] = '\0';
		*seen |= 1;
		return 0;
	}
	if ((size_t)(k.end - k.p) == 3 && memcmp(k.p, "key", 3) == 0) {
		if (*seen & 2)
			return bad(why, whylen, l->no, "second 'key'");
		if (parse_key_hex(v.p, (size_t)(v.end - v.p), id->key) < 0)
			return bad(why, whylen, l->no, "key is not %d hex digits",
				   2 * FM_KEY_LEN);
		*seen |= 2;
		return 0;
	}
	return bad(why, whylen, l->no, "unknown key '%.*s' (only name and key)",
		   (int)(k.end - k.p > 32 ? 32 : k.end - k.p), k.p);
}

int fm_keyfile_parse(const char *text, size_t len, struct fm_identity *id,
		     char *why, size_t whylen)
{
	const char *p = text, *end = text + len;
	unsigned no = 0;
	int seen = 0, rc = 0;

	memset(id, 0, sizeof(*id));
	if (len > FM_KEYFILE_MAX)
		return bad(why, whylen, 0, "file longer than %d bytes", FM_KEYFILE_MAX);
	if (memchr(text, '\0', len))
		return bad(why, whylen, 0, "file holds a NUL byte: not a key file");
	while (p < end && rc == 0) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		struct kf_line l = { p, nl ? nl : end, ++no };

		p = nl ? nl + 1 : end;
		trim(&l);
		if (l.p == l.end || *l.p == '#')
			continue;
		rc = parse_setting(&l, id, &seen, why, whylen);
	}
	if (rc == 0 && seen != 3)
		rc = bad(why, whylen, no, "missing '%s'", seen & 1 ? "key" : "name");
	if (rc < 0)
		fm_wipe(id, sizeof(*id));
	return rc;
}

int fm_keyfile_load(const char *path, struct fm_identity *id, char *err,
		    size_t errlen)
{
	char text[FM_KEYFILE_MAX + 1], why[160];
	size_t got = 0;
	struct stat st;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "key file %s: %s", path, strerror(-rc));
		return rc;
	}
	if (fstat(fd, &st) == 0 && (st.st_mode & 077))
		log_warn("key file %s is readable by group or others (mode %03o); chmod 600 it",
			 path, (unsigned)(st.st_mode & 0777));
	while (got < sizeof(text)) {
		ssize_t n = read(fd, text + got, sizeof(text) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : 0;
			break;
		}
		got += (size_t)n;
	}
	close(fd);
	if (rc == 0)
		rc = fm_keyfile_parse(text, got, id, why, sizeof(why));
	else
		snprintf(why, sizeof(why), "%s", strerror(-rc));
	fm_wipe(text, sizeof(text));
	if (rc < 0)
		snprintf(err, errlen, "key file %s: %s", path, why);
	return rc;
}

int fm_keyfile_format(const struct fm_identity *id, char *out, size_t outlen)
{
	char hex[2 * FM_KEY_LEN + 1];
	int n;

	for (size_t i = 0; i < FM_KEY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", id->key[i]);
	n = snprintf(out, outlen,
		     "# farmem client key: farmem-blk --key-file FILE (mode 0600)\n"
		     "name = %s\nkey = %s\n", id->name, hex);
	fm_wipe(hex, sizeof(hex));
	if (n < 0 || (size_t)n >= outlen)
		return -ENOSPC;
	return n;
}
