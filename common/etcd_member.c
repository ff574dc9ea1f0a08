/* etcd_member.c — a memserver's member value in etcd, both ways. */
#include "etcd.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

int etcd_zone_valid(const char *zone)
{
	size_t n = strlen(zone);

	return n < ETCD_ZONE_MAX && (n == 0 || etcd_cluster_valid(zone));
}

int etcd_member_encode(const struct etcd_member *m, char *out, size_t len)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "addr", json_object_new_string(m->addr));
	json_object_object_add(o, "size", json_object_new_uint64(m->size));
	json_object_object_add(o, "free", json_object_new_uint64(m->free));
	json_object_object_add(o, "zone", json_object_new_string(m->zone));
	return etcd_json_emit(o, 0, out, len);
}

static int get_str(json_object *o, const char *name, char *out, size_t len, int need)
{
	json_object *v;
	const char *s;

	out[0] = '\0';
	if (!json_object_object_get_ex(o, name, &v))
		return need ? -EPROTO : 0;
	if (!json_object_is_type(v, json_type_string))
		return -EPROTO;
	s = json_object_get_string(v);
	if (strlen(s) >= len)
		return -EPROTO;
	snprintf(out, len, "%s", s);
	return 0;
}

static int get_u64(json_object *o, const char *name, uint64_t *out)
{
	json_object *v;

	*out = 0;
	if (!json_object_object_get_ex(o, name, &v))
		return 0;
	if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
		return -EPROTO;
	*out = json_object_get_uint64(v);
	return 0;
}

int etcd_member_decode(const char *value, struct etcd_member *m)
{
	json_object *o = json_tokener_parse(value);
	int rc = -EPROTO;

	memset(m, 0, sizeof(*m));
	if (o && json_object_is_type(o, json_type_object) &&
	    get_str(o, "addr", m->addr, sizeof(m->addr), 1) == 0 && m->addr[0] &&
	    get_str(o, "zone", m->zone, sizeof(m->zone), 0) == 0 &&
	    etcd_zone_valid(m->zone) &&
	    get_u64(o, "size", &m->size) == 0 && get_u64(o, "free", &m->free) == 0 &&
	    m->free <= m->size)
		rc = 0;
	json_object_put(o);
	return rc;
}
