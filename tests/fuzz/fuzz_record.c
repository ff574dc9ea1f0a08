/* fuzz_record.c — libFuzzer target for stored records, which come back
 * from donors (untrusted): rec_open and rec_parse under each format must
 * reject anything malformed without reading past the bytes given, and
 * never accept what was not sealed with the key.  The second half seals
 * the input as a payload and opens it again: the round trip must hold.
 */
#include <stdlib.h>
#include <string.h>

#include "ublk-farmem/store/record.h"

static struct rec_key keys[REC_AEAD_MAX + 1];
static int nkeys;

static void setup(void)
{
	static const uint8_t uuid[FM_UUID_LEN] = { 9, 8, 7 };
	uint8_t key[REC_KEY_SIZE];

	memset(key, 0x33, sizeof(key));
	for (int a = 0; a <= REC_AEAD_MAX; a++)
		if (rec_key_init(&keys[nkeys], a, key, uuid, 1) == 0)
			nkeys++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t clear[REC_MAX_PLEN], rec[REC_MAX_LEN];
	const uint8_t *payload;
	struct rec_hdr h;
	uint8_t *copy;

	if (!nkeys)
		setup();
	/* An exact-size heap copy: ASan catches any read past it. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	for (int k = 0; k < nkeys; k++) {
		if (rec_parse(&keys[k], copy, size, &h) == 0 &&
		    (rec_len(h.plen) > size || h.dlen > REC_MAX_PLEN))
			abort();
		if (rec_open(&keys[k], copy, size, &h, clear, &payload) == 0) {
			/* Only plain records can be made without the key. */
			if (keys[k].aead != REC_AEAD_NONE || h.dlen > REC_MAX_PLEN ||
			    rec_len(h.plen) > size)
				abort();
		}
	}
	free(copy);
	/* Round trip: the input as a payload. */
	if (size >= 1 && size <= REC_MAX_PLEN) {
		for (int k = 0; k < nkeys; k++) {
			uint32_t len = rec_put(&keys[k], rec, data, 5, size, 1, (uint16_t)size);

			if (rec_open(&keys[k], rec, len, &h, clear, &payload) != 0 ||
			    h.dlen != size || h.page != 5 || memcmp(payload, data, size))
				abort();
		}
	}
	return 0;
}
