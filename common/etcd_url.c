/* etcd_url.c — etcd endpoint lists and the client's etcd:// URLs. */
#include "etcd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "parse.h"

#define ETCD_SCHEME "etcd://"

__attribute__((format(printf, 3, 4)))
static int why_fail(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;


	va_start(ap, fmt);
	if (why)
		vsnprintf(why, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* "host:port" or "[v6]:port" with a port in 1..65535. */
static int hostport_valid(const char *s)
{
	struct fm_addr a;
	char buf[ETCD_URL_MAX + 8];

	if (strchr(s, '/') || strlen(s) >= ETCD_URL_MAX - 16)
		return 0;
	snprintf(buf, sizeof(buf), "tcp://%s", s);
	return parse_addr(buf, 0, &a) == 0 && a.port != 0 && a.host[0];
}

static int add_endpoint(struct etcd_endpoints *eps, const char *item,
			char *why, size_t whylen)
{
	const char *hp = item;
	const char *scheme = "http://";

	if (!strncmp(item, "http://", 7)) {
		hp = item + 7;
	} else if (!strncmp(item, "https://", 8)) {
		hp = item + 8;
		scheme = "https://";
	} else if (strstr(item, "://")) {
		return why_fail(why, whylen, "'%s': want http://HOST:PORT or https://HOST:PORT", item);
	}
	if (!hostport_valid(hp))
		return why_fail(why, whylen, "'%s': not HOST:PORT", item);
	if (eps->n >= ETCD_MAX_ENDPOINTS)
		return why_fail(why, whylen, "more than 8 endpoints at '%s'", item);
	snprintf(eps->url[eps->n++], ETCD_URL_MAX, "%s%s", scheme, hp);
	return 0;
}

static void trim(char **s)
{
	char *end;

	while (**s == ' ' || **s == '\t')
		(*s)++;
	end = *s + strlen(*s);
	while (end > *s && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
}

int etcd_endpoints_parse(const char *list, struct etcd_endpoints *out,
			 char *why, size_t whylen)
{
	char copy[ETCD_MAX_ENDPOINTS * ETCD_URL_MAX];
	char *items[ETCD_MAX_ENDPOINTS + 1];
	int n;

	memset(out, 0, sizeof(*out));
	if (!list || strlen(list) >= sizeof(copy))
		return why_fail(why, whylen, "%s", "endpoint list too long");
	snprintf(copy, sizeof(copy), "%s", list);
	n = split_list(copy, items, ETCD_MAX_ENDPOINTS + 1);
	if (n < 0 || n > ETCD_MAX_ENDPOINTS)
		return why_fail(why, whylen, "%s", "more than 8 endpoints");
	for (int i = 0; i < n; i++) {
		trim(&items[i]);
		if (!items[i][0])
			continue;
		if (add_endpoint(out, items[i], why, whylen) < 0)
			return -EINVAL;
	}
	if (out->n == 0)
		return why_fail(why, whylen, "%s", "no endpoint given");
	return 0;
}

int etcd_url_is(const char *s)
{
	return s && !strncmp(s, ETCD_SCHEME, strlen(ETCD_SCHEME));
}

int etcd_cluster_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n >= ETCD_CLUSTER_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int etcd_url_parse(const char *url, struct etcd_endpoints *eps, char *cluster,
		   size_t clusterlen, char *why, size_t whylen)
{
	char hosts[ETCD_MAX_ENDPOINTS * ETCD_URL_MAX];
	const char *rest, *slash;

	if (!etcd_url_is(url))
		return why_fail(why, whylen, "'%s': want etcd://HOST:PORT[,HOST:PORT...]/CLUSTER", url);
	rest = url + strlen(ETCD_SCHEME);
	slash = strchr(rest, '/');
	if (!slash || slash == rest)
		return why_fail(why, whylen, "'%s': want etcd://HOST:PORT[,HOST:PORT...]/CLUSTER", url);
	if (!etcd_cluster_valid(slash + 1) || strlen(slash + 1) >= clusterlen)
		return why_fail(why, whylen, "'%s': the cluster name (after the /) must be "
				"1-63 of A-Z a-z 0-9 . _ -", url);
	if ((size_t)(slash - rest) >= sizeof(hosts))
		return why_fail(why, whylen, "'%s': too long", url);
	memcpy(hosts, rest, (size_t)(slash - rest));
	hosts[slash - rest] = '\0';
	/* Only HOST:PORT items here: the scheme is the URL's. */
	if (strstr(hosts, "://"))
		return why_fail(why, whylen, "'%s': list HOST:PORT items after etcd://", url);
	if (etcd_endpoints_parse(hosts, eps, why, whylen) < 0)
		return -EINVAL;
	snprintf(cluster, clusterlen, "%s", slash + 1);
	return 0;
}

void etcd_members_prefix(const char *cluster, char *out, size_t len)
{
	snprintf(out, len, "/farmem/%s/members/", cluster);
}
