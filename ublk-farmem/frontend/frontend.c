/* frontend.c — the table of frontends (frontend.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "frontend.h"
#include "parse.h"

/* Highest device id a name may carry. */
#define DEV_ID_MAX (1u << 20)

static const struct blk_frontend_ops *const frontends[] = {
	[BLK_FRONTEND_UBLK] = &ublk_frontend_ops,
	[BLK_FRONTEND_NBD] = &nbd_kernel_frontend_ops,
};

#define NFRONTENDS (sizeof(frontends) / sizeof(frontends[0]))

const struct blk_frontend_ops *blk_frontend_get(enum blk_frontend f)
{
	return (unsigned)f < NFRONTENDS ? frontends[f] : NULL;
}

enum blk_frontend blk_frontend_by_name(const char *name)
{
	for (unsigned i = 0; i < NFRONTENDS; i++)
		if (frontends[i] && !strcasecmp(name, frontends[i]->name))
			return (enum blk_frontend)i;
	return 0;
}

const struct blk_frontend_ops *blk_frontend_of_dev(const char *name, int *id)
{
	for (unsigned i = 0; i < NFRONTENDS; i++) {
		const struct blk_frontend_ops *fe = frontends[i];
		uint64_t v;

		if (!fe || strncmp(name, fe->dev_prefix, strlen(fe->dev_prefix)) ||
		    parse_u64(name + strlen(fe->dev_prefix), 0, DEV_ID_MAX, &v) < 0)
			continue;
		if (id)
			*id = (int)v;
		return fe;
	}
	return NULL;
}

int blk_frontend_dev_name(const struct blk_frontend_ops *fe, int id,
			  char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s%d", fe->dev_prefix, id);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}
