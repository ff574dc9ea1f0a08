/* devtab.c — device identities, their live connections and leases.
 *
 * A device (a client's block device, named by a UUID that survives its
 * restarts) may hold segments while it has no connection at all: when
 * its last connection drops, a lease starts, and a client that comes back
 * with the same identity and secret before it ends finds its segments
 * untouched.  After the lease the segments go back to the pool.
 *
 * A linear list: devices are few (one per client block device) and every
 * walk is on the control path (authentication, disconnect, a timer).
 */
#include "memserver.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

void ms_devtab_init(struct ms_devtab *d, uint64_t lease_ms)
{
	memset(d, 0, sizeof(*d));
	d->next_id = 1;
	d->lease_ms = lease_ms;
}

void ms_devtab_fini(struct ms_devtab *d)
{
	struct ms_device *dev = d->head;

	while (dev) {
		struct ms_device *next = dev->next;

		free(dev);
		dev = next;
	}
	d->head = NULL;
	d->count = 0;
}

static struct ms_device *find(struct ms_devtab *d,
			      const uint8_t uuid[FM_UUID_LEN])
{
	for (struct ms_device *dev = d->head; dev; dev = dev->next)
		if (memcmp(dev->uuid, uuid, FM_UUID_LEN) == 0)
			return dev;
	return NULL;
}

static void unlink_dev(struct ms_devtab *d, struct ms_device *dev)
{
	for (struct ms_device **pp = &d->head; *pp; pp = &(*pp)->next) {
		if (*pp == dev) {
			*pp = dev->next;
			d->count--;
			free(dev);
			return;
		}
	}
}

struct ms_device *ms_devtab_attach(struct ms_devtab *d,
				   const uint8_t uuid[FM_UUID_LEN])
{
	struct ms_device *dev = find(d, uuid);
	char text[37];

	if (!dev) {
		dev = calloc(1, sizeof(*dev));
		if (!dev)
			return NULL;
		memcpy(dev->uuid, uuid, FM_UUID_LEN);
		dev->id = d->next_id++;
		if (d->next_id == 0) /* 2^32 identities later: skip "free" */
			d->next_id = 1;
		dev->next = d->head;
		d->head = dev;
		d->count++;
	} else if (dev->conns == 0 && dev->segs) {
		fm_uuid_format(uuid, text);
		log_info("device %s: reconnected, reclaims %u segments from "
			 "its lease", text, dev->segs);
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
	log_info("device %s: last connection gone, %u segments kept for "
		 "%llu ms", text, dev->segs, (unsigned long long)d->lease_ms);
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
		log_info("device %s: lease ended, %u segments back to the pool",
			 text, ms_segtab_free_owner(t, dev->id));
		*pp = dev->next;
		d->count--;
		free(dev);
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
