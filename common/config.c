/* config.c — iniparser files and flags through one table of keys. */
#include "config.h"
#include "parse.h"

#include <errno.h>
#include <iniparser.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static const struct cfg_key *find_key(const struct cfg_key *keys, size_t n,
				      const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static int in_bounds(const struct cfg_key *k, uint64_t v)
{
	if ((int64_t)v < k->min && k->min > 0)
		return 0;
	return k->max == 0 || v <= (uint64_t)k->max;
}

static int set_value(const struct cfg_key *k, void *target, const char *value,
		     const char **why)
{
	char *field = (char *)target + k->offset;
	uint64_t u;
	int64_t i;
	int b, rc = 0;

	switch (k->type) {
	case CFG_STRING:
		if (strlen(value) >= k->size) {
			*why = "too long";
			return -EINVAL;
		}
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case CFG_SIZE:
		rc = parse_size(value, &u);
		*why = "not a size (use a number with K, M, G or T)";
		break;
	case CFG_U64:
		rc = parse_u64(value, 0, UINT64_MAX, &u);
		*why = "not a whole number";
		break;
	case CFG_DURATION:
		rc = parse_duration_ms(value, &u);
		*why = "not a duration (e.g. 30s, 500ms, 5m)";
		break;
	case CFG_I64:
		rc = parse_i64(value, k->min, k->max, &i);
		*why = "not a whole number in range";
		if (rc == 0)
			memcpy(field, &i, sizeof(i));
		return rc ? -EINVAL : 0;
	case CFG_BOOL:
		rc = parse_bool(value, &b);
		*why = "not a boolean (yes/no)";
		if (rc == 0)
			memcpy(field, &b, sizeof(b));
		return rc ? -EINVAL : 0;
	}
	if (rc < 0)
		return -EINVAL;
	if (!in_bounds(k, u)) {
		*why = "out of range";
		return -EINVAL;
	}
	memcpy(field, &u, sizeof(u));
	return 0;
}

int cfg_set(const struct cfg_key *keys, size_t nkeys, void *target,
	    const char *name, const char *value, const char *origin,
	    char *err, size_t errlen)
{
	const struct cfg_key *k = find_key(keys, nkeys, name);
	const char *why = "invalid";

	if (!k) {
		snprintf(err, errlen, "%s: unknown key '%s'", origin, name);
		return -EINVAL;
	}
	if (set_value(k, target, value, &why) < 0) {
		if (k->type != CFG_STRING && (k->min || k->max))
			snprintf(err, errlen,
				 "%s: key '%s' value '%s': %s (allowed %lld..%lld)",
				 origin, name, value, why,
				 (long long)k->min, (long long)k->max);
		else
			snprintf(err, errlen, "%s: key '%s' value '%s': %s",
				 origin, name, value, why);
		return -EINVAL;
	}
	return 0;
}

static char *trim(char *p)
{
	char *e;

	while (*p == ' ' || *p == '\t')
		p++;
	e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return p;
}

/* The line of file where section sec starts (key NULL) or where key is
 * set in it ("" = before any section), names compared as iniparser does
 * (case-insensitively, blanks trimmed, the last setting wins); 0 when not
 * found.  iniparser keeps no line numbers, and someone fixing a file
 * wants one. */
static unsigned line_of(const char *file, const char *sec, const char *key)
{
	FILE *f = fopen(file, "r");
	char *line = NULL, cur[256] = "";
	size_t cap = 0;
	unsigned n = 0, found = 0;

	if (!f)
		return 0;
	while (getline(&line, &cap, f) >= 0) {
		char *p = trim(line), *end;

		n++;
		if (*p == '[' && (end = strchr(p, ']'))) {
			*end = '\0';
			snprintf(cur, sizeof(cur), "%s", trim(p + 1));
			if (!key && strcasecmp(cur, sec) == 0)
				found = n;
			continue;
		}
		if (!key || *p == ';' || *p == '#' || !(end = strpbrk(p, "=:")))
			continue;
		*end = '\0';
		if (strcasecmp(cur, sec) == 0 && strcasecmp(trim(p), key) == 0)
			found = n;
	}
	free(line);
	fclose(f);
	return found;
}

/* "file:LINE" where sec/key is written, or just "file". */
static void origin_of(char *out, size_t len, const char *file, const char *sec,
		      const char *key)
{
	unsigned line = line_of(file, sec, key);

	if (line)
		snprintf(out, len, "%s:%u", file, line);
	else
		snprintf(out, len, "%s", file);
}

static int known_section(const struct cfg_key *keys, size_t n, const char *sec)
{
	size_t len = strlen(sec);

	for (size_t i = 0; i < n; i++)
		if (strncmp(keys[i].name, sec, len) == 0 && keys[i].name[len] == ':')
			return 1;
	return 0;
}

/* Every section and key in the file must be one we know. */
static int load_section(dictionary *d, const char *file, const char *sec,
			const struct cfg_key *keys, size_t nkeys, void *target,
			char *err, size_t errlen)
{
	int n = iniparser_getsecnkeys(d, sec);
	const char *names[256];
	char origin[PATH_MAX + 16];

	if (!known_section(keys, nkeys, sec)) {
		origin_of(origin, sizeof(origin), file, sec, NULL);
		snprintf(err, errlen, "%s: unknown section [%s]", origin, sec);
		return -EINVAL;
	}
	if (n < 0)
		return 0;
	if (n > 256) {
		snprintf(err, errlen, "%s: section [%s] has too many keys", file, sec);
		return -EINVAL;
	}
	iniparser_getseckeys(d, sec, names);
	for (int i = 0; i < n; i++) {
		const char *val = iniparser_getstring(d, names[i], "");

		if (cfg_set(keys, nkeys, target, names[i], val, file, err, errlen) < 0) {
			/* Only now, for the one bad key: read the file again
			 * for its line. */
			origin_of(origin, sizeof(origin), file, sec,
				  names[i] + strlen(sec) + 1);
			cfg_set(keys, nkeys, target, names[i], val, origin, err, errlen);
			return -EINVAL;
		}
	}
	return 0;
}

/* iniparser files a key written before any [section] as ":key" and no
 * section lists it (getsecnkeys(d, "") is 0): find it in the dictionary
 * itself and refuse it rather than ignore it silently. */
static int no_top_level_keys(const dictionary *d, const char *file, char *err,
			     size_t errlen)
{
	for (ssize_t i = 0; i < d->size; i++) {
		if (d->key[i] && d->key[i][0] == ':') {
			char origin[PATH_MAX + 16];

			origin_of(origin, sizeof(origin), file, "", d->key[i] + 1);
			snprintf(err, errlen, "%s: key '%s' value '%s': outside "
				 "any [section]", origin, d->key[i] + 1,
				 d->val[i] ? d->val[i] : "");
			return -EINVAL;
		}
	}
	return 0;
}

static int ini_quiet(const char *fmt, ...)
{
	(void)fmt;
	return 0;
}

int cfg_load(const char *file, const struct cfg_key *keys, size_t nkeys,
	     void *target, char *err, size_t errlen)
{
	dictionary *d;
	int rc = 0;

	if (access(file, R_OK) < 0) {
		int e = errno;

		snprintf(err, errlen, "%s: cannot read: %s", file, strerror(e));
		return -e;
	}
	iniparser_set_error_callback(ini_quiet);
	d = iniparser_load(file);
	if (!d) {
		snprintf(err, errlen, "%s: not a valid ini file", file);
		return -EINVAL;
	}
	rc = no_top_level_keys(d, file, err, errlen);
	for (int s = 0; s < iniparser_getnsec(d) && rc == 0; s++)
		rc = load_section(d, file, iniparser_getsecname(d, s), keys,
				  nkeys, target, err, errlen);
	iniparser_freedict(d);
	return rc;
}

void cfg_print_keys(const struct cfg_key *keys, size_t nkeys)
{
	for (size_t i = 0; i < nkeys; i++)
		printf("  %-28s %s\n", keys[i].name, keys[i].help);
}
