/* checksum.h — the one checksum farmem uses for stored data: XXH3-64
 * from libxxhash (fast, well tested, stable output across versions).
 */
#ifndef FARMEM_CHECKSUM_H
#define FARMEM_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

uint64_t fm_xxh3(const void *buf, size_t len);
uint64_t fm_xxh3_seed(const void *buf, size_t len, uint64_t seed);

#endif
