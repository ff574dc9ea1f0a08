/* fuzz_psk.c — libFuzzer target for serve's TLS pre-shared key file
 * parser (ublk-farmem/frontend/nbd/nbd_psk.c).
 *
 * The input is a PSK file's bytes.  The parser must never read past
 * them; what it accepts must hold only entries within the documented
 * bounds, each findable by its own name; what it refuses must say why.
 */
#include "ublk-farmem/frontend/nbd/nbd_psk.h"
#include "log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_table(const struct nbd_psk_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		const struct nbd_psk_entry *e = &t->e[i];
		size_t ulen = strnlen(e->user, sizeof(e->user));

		if (ulen == 0 || ulen > NBD_PSK_USER_MAX || strchr(e->user, ':') ||
		    e->key_len < NBD_PSK_KEY_MIN || e->key_len > NBD_PSK_KEY_MAX ||
		    nbd_psk_find(t, e->user) != e)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	struct nbd_psk_table t = { 0 };
	char why[256] = "";
	char *copy;
	int rc;

	if (!ready) {
		log_init("fuzz_psk", LOG_LVL_ERR);
		ready = 1;
	}
	/* Exactly size bytes of its own, as ASan should see them. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	rc = nbd_psk_parse(copy, size, "fuzz.psk", &t, why, sizeof(why));
	if (rc == 0)
		check_table(&t);
	else if (rc == -EINVAL && strnlen(why, sizeof(why)) == 0)
		abort();          /* a refusal always says why */
	nbd_psk_free(&t);
	free(copy);
	return 0;
}
