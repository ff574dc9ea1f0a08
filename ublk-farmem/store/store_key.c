/* store_key.c — the device's record key: which AEAD, the key itself,
 * where it lives.
 *
 * A new device (store_open without attach) gets a random 256-bit key
 * from libsodium's CSPRNG, written into the state header.  For `add`
 * the header is the state file in the state dir (mode 0600; recover and
 * del attach to it and read the key back); for `serve` and tests it is
 * anonymous memory, so the key dies with the process — as does that
 * page map, without which the records are unreachable anyway.  The key
 * is never sent anywhere.  The working copy (s->rkey, with the expanded
 * AES key) is locked in memory, kept out of core dumps, and wiped at
 * close.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include "auth.h"
#include "log.h"
#include "internal.h"

static int rec_aead_of(enum store_encrypt e)
{
	switch (e) {
	case STORE_ENCRYPT_NONE: return REC_AEAD_NONE;
	case STORE_ENCRYPT_AES256GCM: return REC_AEAD_AES256GCM;
	case STORE_ENCRYPT_XCHACHA20POLY1305: return REC_AEAD_XCHACHA20POLY1305;
	case STORE_ENCRYPT_AUTO: break;
	}
	return -1;
}

static enum store_encrypt store_encrypt_of(int aead)
{
	switch (aead) {
	case REC_AEAD_AES256GCM: return STORE_ENCRYPT_AES256GCM;
	case REC_AEAD_XCHACHA20POLY1305: return STORE_ENCRYPT_XCHACHA20POLY1305;
	default: return STORE_ENCRYPT_NONE;
	}
}

const char *store_encrypt_name(enum store_encrypt e)
{
	return e == STORE_ENCRYPT_AUTO ? "auto" : rec_aead_name(rec_aead_of(e));
}

int store_encrypt_parse(const char *name, enum store_encrypt *out)
{
	int a;

	if (!strcasecmp(name, "auto")) {
		*out = STORE_ENCRYPT_AUTO;
		return 0;
	}
	a = rec_aead_by_name(name);
	if (a < 0)
		return -EINVAL;
	*out = store_encrypt_of(a);
	return 0;
}

int store_encrypt_resolve(enum store_encrypt want, enum store_encrypt *out)
{
	int aead = rec_aead_of(want);

	if (want == STORE_ENCRYPT_AUTO)
		aead = rec_aead_available(REC_AEAD_AES256GCM) ? REC_AEAD_AES256GCM
							     : REC_AEAD_XCHACHA20POLY1305;
	if (aead < 0)
		return -EINVAL;
	if (!rec_aead_available(aead))
		return -ENOTSUP;
	*out = store_encrypt_of(aead);
	return 0;
}

int key_choose(const struct store_config *c, int *aead, char *err, size_t errlen)
{
	enum store_encrypt e;
	int rc;

	if (fm_auth_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -EIO;
	}
	rc = store_encrypt_resolve(c->encrypt, &e);
	if (rc == -ENOTSUP)
		snprintf(err, errlen, "encrypt %s: this CPU lacks AES-NI/PCLMUL "
			 "(use auto or xchacha20poly1305)", store_encrypt_name(c->encrypt));
	else if (rc < 0)
		snprintf(err, errlen, "encrypt: unknown algorithm %d", (int)c->encrypt);
	if (rc < 0)
		return rc;
	*aead = rec_aead_of(e);
	return 0;
}

void key_generate(struct state_hdr *h, int aead)
{
	h->aead = (uint32_t)aead;
	memset(h->key, 0, sizeof(h->key));
	if (aead != REC_AEAD_NONE)
		fm_random(h->key, sizeof(h->key));
}

int key_setup(struct store *s, char *err, size_t errlen)
{
	const struct state_hdr *h = s->hdr;
	int want = rec_aead_of(s->cfg.encrypt), rc;
	uint32_t epoch;

	if (h->aead > REC_AEAD_MAX) {
		snprintf(err, errlen, "%s: unknown record algorithm %u",
			 s->cfg.state_path ? s->cfg.state_path : "state", h->aead);
		return -EINVAL;
	}
	/* Attaching: the state says what the records are. */
	if (s->cfg.encrypt != STORE_ENCRYPT_AUTO && want != (int)h->aead) {
		snprintf(err, errlen, "%s: the device was created with encrypt %s, "
			 "not %s", s->cfg.state_path ? s->cfg.state_path : "state",
			 rec_aead_name((int)h->aead), rec_aead_name(want));
		return -EINVAL;
	}
	fm_random(&epoch, sizeof(epoch));
	rc = rec_key_init(&s->rkey, (int)h->aead, h->key, s->cfg.uuid, epoch);
	if (rc < 0) {
		snprintf(err, errlen, "encrypt %s: %s", rec_aead_name((int)h->aead),
			 rc == -ENOTSUP ? "not available on this CPU (AES-NI/PCLMUL)" :
			 strerror(-rc));
		return rc;
	}
	/* Best effort (the daemon locks everything anyway: mlockall): keep
	 * both copies out of swap and core dumps.  The header's is never
	 * wiped here: for add it is the state file's copy recover needs. */
	if (sodium_mlock(&s->rkey, sizeof(s->rkey)) < 0 ||
	    mlock(s->map_base, sizeof(*s->hdr)) < 0)
		log_debug("store: cannot lock the record key in memory");
	madvise(s->map_base, sizeof(*s->hdr), MADV_DONTDUMP);
	return 0;
}

void key_fini(struct store *s)
{
	/* Unlocks, and zeroes first. */
	sodium_munlock(&s->rkey, sizeof(s->rkey));
}

enum store_encrypt key_encrypt(const struct store *s)
{
	return store_encrypt_of(s->rkey.aead);
}
