/* fuzz_keyfile.c — libFuzzer target for the client key file parser.
 *
 * The input is a key file's bytes.  The parser must never read past
 * them, and what it accepts must survive a round trip: formatted again
 * and parsed again it is the same identity (a parser that accepts a
 * file it could not have written is reading it wrong).
 */
#include "keyfile.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct fm_identity id, again;
	char why[256], text[512];
	char *copy;
	int n;

	if (!ready) {
		log_init("fuzz_keyfile", LOG_LVL_ERR);
		ready = 1;
	}
	/* Exactly size bytes of its own, as ASan should see them. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (fm_keyfile_parse(copy, size, &id, why, sizeof(why)) == 0) {
		if (strlen(id.name) == 0 || strlen(id.name) > FM_NAME_MAX)
			abort();
		n = fm_keyfile_format(&id, text, sizeof(text));
		if (n < 0 || fm_keyfile_parse(text, (size_t)n, &again, why, sizeof(why)) != 0 ||
		    memcmp(&id, &again, sizeof(id)) != 0)
			abort();
	} else if (strnlen(why, sizeof(why)) == 0) {
		abort();          /* a refusal always says why */
	}
	free(copy);
	return 0;
}
