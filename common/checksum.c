/* checksum.c — thin wrapper so no other file includes xxhash.h. */
#include "checksum.h"

#include <xxhash.h>

uint64_t fm_xxh3(const void *buf, size_t len)
{
	return XXH3_64bits(buf, len);
}

uint64_t fm_xxh3_seed(const void *buf, size_t len, uint64_t seed)
{
	return XXH3_64bits_withSeed(buf, len, seed);
}
