/* etcd_json.c — the JSON gateway's request bodies and replies.
 *
 * The gateway speaks protobuf's JSON mapping: bytes are base64, 64-bit
 * integers are strings ("revision":"12"), and fields at their default
 * value are left out (a keep-alive of a lease that is gone has no TTL, a
 * range with no keys no kvs).  Nothing here does I/O, so the unit tests
 * can feed it replies.
 */
#include "etcd.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

int etcd_b64_encode(const void *in, size_t len, char *out, size_t outlen)
{
	if (outlen < sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL))
		return -ENOSPC;
	sodium_bin2base64(out, outlen, in, len, sodium_base64_VARIANT_ORIGINAL);
	return 0;
}

int etcd_b64_decode(const char *in, void *out, size_t *outlen)
{
	size_t got = 0;
	const char *end = NULL;

	if (sodium_base642bin(out, *outlen, in, strlen(in), NULL, &got, &end,
			      sodium_base64_VARIANT_ORIGINAL) < 0)
		return end && *end == '\0' ? -ENOSPC : -EINVAL;
	if (*end)
		return -EINVAL;
	*outlen = got;
	return 0;
}

int etcd_prefix_end(const char *prefix, char *out, size_t outlen, size_t *len)
{
	size_t n = strlen(prefix);

	if (n == 0 || n > outlen)
		return -EINVAL;
	memcpy(out, prefix, n);
	/* Drop trailing 0xff bytes, then bump the last one. */
	while (n > 0 && (unsigned char)out[n - 1] == 0xff)
		n--;
	if (n == 0)
		return -EINVAL;
	out[n - 1] = (char)((unsigned char)out[n - 1] + 1);
	*len = n;
	return 0;
}

static int put_b64(json_object *o, const char *name, const void *data, size_t len)
{
	char b64[((ETCD_VALUE_MAX + 2) / 3) * 4 + 8];

	if (etcd_b64_encode(data, len, b64, sizeof(b64)) < 0)
		return -ENOSPC;
	json_object_object_add(o, name, json_object_new_string(b64));
	return 0;
}

int etcd_json_emit(struct json_object *o, int rc, char *out, size_t len)
{
	const char *text;

	if (rc == 0) {
		/* No "\/": member values carry addresses (tcp://...). */
		text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							 JSON_C_TO_STRING_NOSLASHESCAPE);
		if (!text || strlen(text) >= len)
			rc = -ENOSPC;
		else
			snprintf(out, len, "%s", text);
	}
	json_object_put(o);
	return rc;
}

static json_object *new_i64str(int64_t v)
{
	char s[24];

	snprintf(s, sizeof(s), "%" PRId64, v);
	return json_object_new_string(s);
}

int etcd_body_grant(int ttl_s, char *out, size_t len)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "TTL", json_object_new_int(ttl_s));
	return etcd_json_emit(o, 0, out, len);
}

int etcd_body_lease_id(int64_t id, char *out, size_t len)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "ID", new_i64str(id));
	return etcd_json_emit(o, 0, out, len);
}

int etcd_body_put(const char *key, const char *value, int64_t lease, char *out, size_t len)
{
	json_object *o = json_object_new_object();
	int rc = put_b64(o, "key", key, strlen(key));

	if (rc == 0)
		rc = put_b64(o, "value", value, strlen(value));
	if (lease)
		json_object_object_add(o, "lease", new_i64str(lease));
	return etcd_json_emit(o, rc, out, len);
}

static int add_prefix(json_object *o, const char *prefix)
{
	char end[ETCD_KEY_MAX];
	size_t n;
	int rc = put_b64(o, "key", prefix, strlen(prefix));

	if (rc == 0)
		rc = etcd_prefix_end(prefix, end, sizeof(end), &n);
	if (rc == 0)
		rc = put_b64(o, "range_end", end, n);
	return rc;
}

int etcd_body_range_prefix(const char *prefix, char *out, size_t len)
{
	json_object *o = json_object_new_object();

	return etcd_json_emit(o, add_prefix(o, prefix), out, len);
}

int etcd_body_watch_prefix(const char *prefix, int64_t start_rev, char *out, size_t len)
{
	json_object *o = json_object_new_object();
	json_object *c = json_object_new_object();
	int rc = add_prefix(c, prefix);

	if (start_rev > 0)
		json_object_object_add(c, "start_revision", new_i64str(start_rev));
	json_object_object_add(o, "create_request", c);
	return etcd_json_emit(o, rc, out, len);
}

/* The body as an object, or NULL; an "error" member makes it -EIO. */
static json_object *parse_obj(const char *body, int *rc)
{
	json_object *o = json_tokener_parse(body);

	*rc = 0;
	if (!o || !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		*rc = -EPROTO;
		return NULL;
	}
	if (json_object_object_get_ex(o, "error", NULL) ||
	    json_object_object_get_ex(o, "code", NULL)) {
		json_object_put(o);
		*rc = -EIO;
		return NULL;
	}
	return o;
}

static int64_t get_i64(json_object *o, const char *name)
{
	json_object *v;

	if (!json_object_object_get_ex(o, name, &v))
		return 0;
	return json_object_get_int64(v);
}

int64_t etcd_parse_revision(const char *body)
{
	json_object *o, *h;
	int rc;
	int64_t rev = 0;

	o = parse_obj(body, &rc);
	if (!o)
		return 0;
	if (json_object_object_get_ex(o, "header", &h))
		rev = get_i64(h, "revision");
	json_object_put(o);
	return rev;
}

int etcd_parse_grant(const char *body, int64_t *id, int *ttl)
{
	int rc;
	json_object *o = parse_obj(body, &rc);

	if (!o)
		return rc;
	*id = get_i64(o, "ID");
	*ttl = (int)get_i64(o, "TTL");
	json_object_put(o);
	return *id && *ttl > 0 ? 0 : -EPROTO;
}

int etcd_parse_keepalive(const char *body, int *ttl)
{
	int rc;
	json_object *o = parse_obj(body, &rc), *r;

	if (!o)
		return rc;
	/* Streamed replies come wrapped in "result". */
	if (!json_object_object_get_ex(o, "result", &r)) {
		json_object_put(o);
		return -EPROTO;
	}
	*ttl = (int)get_i64(r, "TTL");
	json_object_put(o);
	return 0;
}

/* One base64 member of kv into out as text. */
static int kv_text(json_object *kv, const char *name, char *out, size_t len)
{
	json_object *v;
	size_t n = len - 1;

	out[0] = '\0';
	if (!json_object_object_get_ex(kv, name, &v))
		return 0;   /* empty value: left out */
	if (!json_object_is_type(v, json_type_string) ||
	    etcd_b64_decode(json_object_get_string(v), out, &n) < 0 ||
	    memchr(out, '\0', n))
		return -EPROTO;
	out[n] = '\0';
	return 0;
}

int etcd_parse_range(const char *body, struct etcd_kv *kvs, int max, int *n,
		     int64_t *revision)
{
	int rc;
	json_object *o = parse_obj(body, &rc), *h, *arr;
	size_t count;

	*n = 0;
	*revision = 0;
	if (!o)
		return rc;
	if (!json_object_object_get_ex(o, "header", &h)) {
		json_object_put(o);
		return -EPROTO;
	}
	*revision = get_i64(h, "revision");
	if (!json_object_object_get_ex(o, "kvs", &arr)) {
		json_object_put(o);
		return 0;
	}
	if (!json_object_is_type(arr, json_type_array)) {
		json_object_put(o);
		return -EPROTO;
	}
	count = json_object_array_length(arr);
	for (size_t i = 0; i < count && rc == 0; i++) {
		json_object *kv = json_object_array_get_idx(arr, i);

		if (*n >= max) {
			rc = -E2BIG;
			break;
		}
		if (!kv || !json_object_is_type(kv, json_type_object) ||
		    kv_text(kv, "key", kvs[*n].key, sizeof(kvs[*n].key)) < 0 ||
		    kv_text(kv, "value", kvs[*n].value, sizeof(kvs[*n].value)) < 0) {
			rc = -EPROTO;
			break;
		}
		kvs[*n].mod_revision = get_i64(kv, "mod_revision");
		(*n)++;
	}
	json_object_put(o);
	return rc;
}

int etcd_parse_watch_line(const char *line)
{
	int rc;
	json_object *o = parse_obj(line, &rc), *r, *ev;

	if (!o)
		return rc;
	if (!json_object_object_get_ex(o, "result", &r)) {
		json_object_put(o);
		return -EPROTO;
	}
	rc = json_object_object_get_ex(r, "events", &ev) &&
	     json_object_is_type(ev, json_type_array) &&
	     json_object_array_length(ev) > 0;
	/* A watch etcd cancelled (compacted revision) must be redone from
	 * a fresh range: report it as a change. */
	if (json_object_object_get_ex(r, "canceled", NULL))
		rc = 1;
	json_object_put(o);
	return rc;
}
