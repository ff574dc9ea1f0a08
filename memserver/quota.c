/* quota.c — how much of the pool one client may hold.
 *
 * memserver:quota is the limit every client gets; memserver:quota-clients
 * gives named clients their own ("alice:2G, bob:50%, backup:none").  A
 * limit is a share of the pool or a size, turned into whole segments
 * (rounded down: a limit is a bound, never exceeded).  The table of
 * clients (devtab.c) does the counting.
 */
#include "memserver.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int ms_limit_parse(const char *text, struct ms_limit *l)
{
	size_t n = strlen(text);
	uint64_t v;

	if (strcmp(text, "none") == 0) {
		l->kind = MS_LIMIT_NONE;
		l->value = 0;
		return 0;
	}
	if (n > 1 && text[n - 1] == '%') {
		char num[8];

		if (n - 1 >= sizeof(num))
			return -EINVAL;
		memcpy(num, text, n - 1);
		num[n - 1] = '\0';
		if (parse_u64(num, 1, 100, &v) < 0)
			return -EINVAL;
		l->kind = MS_LIMIT_PERCENT;
		l->value = v;
		return 0;
	}
	if (parse_size(text, &v) < 0 || v == 0)
		return -EINVAL;
	l->kind = MS_LIMIT_BYTES;
	l->value = v;
	return 0;
}

static char *trim(char *p)
{
	char *e;

	while (*p == ' ' || *p == '\t')
		p++;
	e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
		*--e = '\0';
	return p;
}

static int parse_rule(char *item, struct ms_quota *q, char *why, size_t whylen)
{
	char *colon = strchr(item, ':'), *name, *limit;

	if (!colon) {
		snprintf(why, whylen, "'%s' is not NAME:LIMIT", item);
		return -EINVAL;
	}
	*colon = '\0';
	name = trim(item);
	limit = trim(colon + 1);
	if (fm_client_name_check(name, strlen(name)) < 0) {
		snprintf(why, whylen, "'%s' is not a client name (a-z 0-9 . _ -)", name);
		return -EINVAL;
	}
	for (int i = 0; i < q->nrules; i++) {
		if (strcmp(q->rule[i].name, name) == 0) {
			snprintf(why, whylen, "client '%s' is listed twice", name);
			return -EINVAL;
		}
	}
	if (q->nrules == MS_QUOTA_RULES) {
		snprintf(why, whylen, "more than %d clients", MS_QUOTA_RULES);
		return -EINVAL;
	}
	if (ms_limit_parse(limit, &q->rule[q->nrules].limit) < 0) {
		snprintf(why, whylen, "client '%s': '%s' is not none, N%% (1..100) "
			 "or a size", name, limit);
		return -EINVAL;
	}
	snprintf(q->rule[q->nrules].name, sizeof(q->rule[0].name), "%s", name);
	q->nrules++;
	return 0;
}

int ms_quota_parse_rules(const char *text, struct ms_quota *q, char *why,
			 size_t whylen)
{
	char copy[4096], *save = NULL;

	q->nrules = 0;
	if (strlen(text) >= sizeof(copy)) {
		snprintf(why, whylen, "longer than %zu bytes", sizeof(copy) - 1);
		return -EINVAL;
	}
	snprintf(copy, sizeof(copy), "%s", text);
	for (char *item = strtok_r(copy, ",", &save); item;
	     item = strtok_r(NULL, ",", &save)) {
		if (*trim(item) == '\0')
			continue;
		if (parse_rule(trim(item), q, why, whylen) < 0)
			return -EINVAL;
	}
	return 0;
}

uint32_t ms_limit_segments(const struct ms_limit *l, uint32_t nslots,
			   uint32_t seg_max)
{
	uint64_t n;

	switch (l->kind) {
	case MS_LIMIT_PERCENT:
		n = (uint64_t)nslots * l->value / 100;
		break;
	case MS_LIMIT_BYTES:
		n = seg_max ? l->value / seg_max : 0;
		break;
	default:
		return UINT32_MAX;
	}
	return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

const struct ms_limit *ms_quota_for(const struct ms_quota *q, const char *name)
{
	for (int i = 0; i < q->nrules; i++)
		if (strcmp(q->rule[i].name, name) == 0)
			return &q->rule[i].limit;
	return &q->dflt;
}
