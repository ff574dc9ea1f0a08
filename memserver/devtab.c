/* devtab.c — clients, their devices, live connections and leases.
 *
 * A device (a client's block device, named by a UUID that survives its
 * restarts) belongs to the client name that authenticated it: the same
 * UUID under another name is another device, so a client that learns a
 * device's UUID gains nothing by claiming it.  A device may hold
 * segments while it has no connection at all: when its last connection
 * drops, a lease starts, and the same client coming back with the same
 * UUID before it ends finds its segments untouched.  After the lease the
 * segments go back to the pool.  Each client's segments, over all its
 * devices, are counted against its quota.
 *
 * Linear lists: clients and devices are few (one per client block
 * device) and every walk is on the control path (authentication,
 * disconnect, a timer).
 */
#include "memserver.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ms_devtab_init(struct ms_devtab *d, uint64_t lease_ms)
{
	memset(d, 0, sizeof(*d));
	d->next_id = 1;
	d->lease_ms = lease_ms;
}

void ms_devtab_set_quota(struct ms_devtab *d, const struct ms_quota *q,
			 uint32_t nslots, uint32_t seg_max)
{
	d->quota = q;
	d->nslots = nslots;
	d->seg_max = seg_max;
}

void ms_devtab_fini(struct ms_devtab *d)
{
	struct ms_device *dev = d->head;
	struct ms_client *cl = d->clients;

	while (dev) {
		struct ms_device *next = dev->next;

		free(dev);
		dev = next;
	}
	while (cl) {
		struct ms_client *next = cl->next;

		free(cl);
		cl = next;
	}
	d->head = NULL;
	d->clients = NULL;
	d->count = 0;
}

static struct ms_client *client_get(struct ms_devtab *d, const char *name)
{
	struct ms_client *cl;

	for (cl = d->clients; cl; cl = cl->next)
		if (strcmp(cl->name, name) == 0)
			return cl;
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return NULL;
	snprintf(cl->name, sizeof(cl->name), "%s", name);
	cl->limit = d->quota ? ms_limit_segments(ms_quota_for(d->quota, name),
						 d->nslots, d->seg_max)
			     : UINT32_MAX;
	cl->next = d->clients;
	d->clients = cl;
	return cl;
}

/* The client's last device is gone: forget it (its limit is recomputed
 * when it comes back). */
static void client_put(struct ms_devtab *d, struct ms_client *cl)
{
	if (--cl->devices > 0)
		return;
	for (struct ms_client **pp = &d->clients; *pp; pp = &(*pp)->next) {
		if (*pp == cl) {
			*pp = cl->next;
			free(cl);
			return;
		}
	}
}

static struct ms_device *find(struct ms_devtab *d, const char *name,
			      const uint8_t uuid[FM_UUID_LEN])
{
	for (struct ms_device *dev = d->head; dev; dev = dev->next)
		if (memcmp(dev->uuid, uuid, FM_UUID_LEN) == 0 &&
		    strcmp(dev->client->name, name) == 0)
			return dev;
	return NULL;
}

static void dev_free(struct ms_devtab *d, struct ms_device *dev)
{
	d->count--;
	client_put(d, dev->client);
	free(dev);
}

static void unlink_dev(struct ms_devtab *d, struct ms_device *dev)
{
	for (struct ms_device **pp = &d->head; *pp; pp = &(*pp)->next) {
		if (*pp == dev) {
			*pp = dev->next;
			dev_free(d, dev);
			return;
		}
	}
}

int ms_devtab_quota_check(const struct ms_device *dev)
{
	return dev->client->segs >= dev->client->limit ? -EDQUOT : 0;
}

void ms_devtab_count(struct ms_device *dev, int delta)
{
	dev->segs += (uint32_t)delta;
	dev->client->segs += (uint32_t)delta;
}

struct ms_device *ms_devtab_attach(struct ms_devtab *d, const char *name,
				   const uint8_t uuid[FM_UUID_LEN])
{
	struct ms_device *dev = find(d, name, uuid);
	char text[37];

	if (!dev) {
		struct ms_client *cl = client_get(d, name);

		dev = cl ? calloc(1, sizeof(*dev)) : NULL;
		if (!dev) {
			if (cl && cl->devices == 0) {
				cl->devices = 1;
				client_put(d, cl);
			}
			return NULL;
		}
		cl->devices++;
		dev->client = cl;
		memcpy(dev->uuid, uuid, FM_UUID_LEN);
		dev->id = d->next_id++;
		if (d->next_id == 0) /* 2^32 identities later: skip "free" */
			d->next_id = 1;
		dev->next = d->head;
		d->head = dev;
		d->count++;
	} else if (dev->conns == 0 && dev->segs) {
		fm_uuid_format(uuid, text);
		log_info("client %s device %s: reconnected, reclaims %u "
			 "segments from its lease", name, text, dev->segs);
	}
	dev->conns++;
	dev->lease_end_ms = 0;
	return dev;
}

void ms_devtab_detach(struct ms_devtab *d, struct ms_device *dev,
		      uint64_t now_ms)
{
	char text[37];

	if (dev->conns == 0 || --dev->conns > 0)
		return;
	if (dev->segs == 0) {
		unlink_dev(d, dev);
		return;
	}
	dev->lease_end_ms = now_ms + d->lease_ms;
	fm_uuid_format(dev->uuid, text);
	log_info("client %s device %s: last connection gone, %u segments "
		 "kept for %llu ms", dev->client->name, text, dev->segs,
		 (unsigned long long)d->lease_ms);
}

void ms_devtab_expire(struct ms_devtab *d, struct ms_segtab *t,
		      uint64_t now_ms)
{
	struct ms_device **pp = &d->head;
	char text[37];

	while (*pp) {
		struct ms_device *dev = *pp;

		if (dev->conns || now_ms < dev->lease_end_ms) {
			pp = &dev->next;
			continue;
		}
		fm_uuid_format(dev->uuid, text);
		log_info("client %s device %s: lease ended, %u segments back "
			 "to the pool", dev->client->name, text,
			 ms_segtab_free_owner(t, dev->id));
		dev->client->segs -= dev->segs;
		*pp = dev->next;
		dev_free(d, dev);
	}
}

uint64_t ms_devtab_next_expiry(const struct ms_devtab *d)
{
	uint64_t next = UINT64_MAX;

	for (const struct ms_device *dev = d->head; dev; dev = dev->next)
		if (dev->conns == 0 && dev->lease_end_ms < next)
			next = dev->lease_end_ms;
	return next;
}

uint32_t ms_devtab_leased(const struct ms_devtab *d)
{
	uint32_t n = 0;

	for (const struct ms_device *dev = d->head; dev; dev = dev->next)
		n += dev->conns == 0;
	return n;
}

uint32_t ms_devtab_holding(const struct ms_devtab *d)
{
	uint32_t n = 0;

	for (const struct ms_device *dev = d->head; dev; dev = dev->next)
		n += dev->segs != 0;
	return n;
}
