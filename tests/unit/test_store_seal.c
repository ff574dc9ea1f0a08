/* test_store_seal.c — sealed records through the whole store, attacked
 * from the donor's side (fault servers), with plain records as the
 * control that shows each attack would have worked.
 *
 * The "donor" reads and rewrites a record's bytes on a replica through
 * the store's own maintenance context (no background thread runs), as a
 * memserver could rewrite its pool.  Pages are stored raw (compress
 * none) so every record has the same length and can stand in for any
 * other. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_fixture.h"
#include "tap.h"
#include "ublk-farmem/store/internal.h"

#define NPAGES 64u

static uint8_t page_a[STORE_PAGE], page_b[STORE_PAGE], got[STORE_PAGE];

static struct store *open_dev(enum store_encrypt enc, int nservers, int replicas)
{
	struct store_config c;

	fault_reset();
	fix_config(&c, nservers, replicas, NPAGES * STORE_PAGE);
	c.compress = STORE_COMPRESS_NONE;
	c.encrypt = enc;
	return fix_open(&c);
}

static void close_dev(struct store *s)
{
	store_close(s);
	fault_reset();
}

/* Replica r of page's record: its bytes (donor_get) or new ones put in
 * its place (donor_put). */
static int donor_get(struct store *s, uint64_t page, int r, uint8_t *rec, uint32_t *len)
{
	struct pm_entry e = s->map[page];

	if (pm_state(&e) != PM_STORED || s->segs[e.seg].rep[r].server < 0)
		return -1;
	*len = rec_len(pm_plen(&e));
	return seg_read_range(s, &s->maint_io, &s->segs[e.seg].rep[r], e.off, *len, rec);
}

static int donor_put(struct store *s, uint64_t page, int r, const uint8_t *rec, uint32_t len)
{
	struct pm_entry e = s->map[page];

	if (pm_state(&e) != PM_STORED || rec_len(pm_plen(&e)) != len)
		return -1;
	return write_copy_sync(s, &s->maint_io, &s->segs[e.seg].rep[r], e.off, rec, len);
}

static int put_all(struct store *s, uint64_t page, const uint8_t *rec, uint32_t len)
{
	for (int r = 0; r < s->replicas; r++)
		if (donor_put(s, page, r, rec, len) < 0)
			return -1;
	return 0;
}

enum attack { FORGE, REPLAY_OLD, REPLAY_RELABELLED, MOVE };

static const char *const attack_names[] = { "forge", "replay", "replay-relabelled", "move" };

/* The donor rewrites page 5's record on every replica.  Plain records
 * get a recomputed checksum; a sealed one can only be relabelled, or
 * sealed under a key of the donor's own.  Returns what the read gave. */
static int attack_page(struct store *s, enum attack how, int *rc_read)
{
	uint8_t old[REC_MAX_LEN], cur[REC_MAX_LEN], forged[REC_MAX_LEN];
	uint32_t len, len2;
	int plain = s->rkey.aead == REC_AEAD_NONE;
	struct rec_key donor_key;
	uint8_t donor_bytes[REC_KEY_SIZE];

	fix_fill(page_a, 5, 1, 2);
	fix_fill(page_b, 5, 2, 2);
	if (store_write(s, 0, 5 * STORE_PAGE, STORE_PAGE, page_a) < 0 ||
	    donor_get(s, 5, 0, old, &len) < 0)
		return -1;
	fix_fill(page_a, 6, 1, 2);
	if (store_write(s, 0, 6 * STORE_PAGE, STORE_PAGE, page_a) < 0 ||
	    store_write(s, 1, 5 * STORE_PAGE, STORE_PAGE, page_b) < 0 ||
	    donor_get(s, 5, 0, cur, &len2) < 0 || len2 != len)
		return -1;
	switch (how) {
	case FORGE:
		/* Different contents under the current page and version. */
		memset(page_a, 'F', sizeof(page_a));
		memset(donor_bytes, 'D', sizeof(donor_bytes));
		if (rec_key_init(&donor_key, s->rkey.aead, donor_bytes, s->cfg.uuid, 1) < 0)
			return -1;
		len = rec_put(&donor_key, forged, page_a, 5, get_le64(cur + 16),
			      FM_CODEC_NONE, STORE_PAGE);
		break;
	case REPLAY_OLD:
		memcpy(forged, old, len);
		break;
	case REPLAY_RELABELLED:
		/* The old record, relabelled with the current version. */
		memcpy(forged, old, len);
		put_le64(forged + 16, get_le64(cur + 16));
		if (plain)
			rec_seal(forged, 5, get_le64(cur + 16), forged[6], get_le16(forged + 4));
		break;
	case MOVE:
		/* Page 6's record, relabelled as page 5's current one. */
		if (donor_get(s, 6, 0, forged, &len2) < 0 || len2 != len)
			return -1;
		put_le64(forged + 8, 5);
		put_le64(forged + 16, get_le64(cur + 16));
		if (plain)
			rec_seal(forged, 5, get_le64(cur + 16), forged[6], get_le16(forged + 4));
		break;
	}
	if (put_all(s, 5, forged, len) < 0)
		return -1;
	*rc_read = store_read(s, 1, 5 * STORE_PAGE, STORE_PAGE, got);
	return 0;
}

/* Did the read hand back something other than what was written last? */
static int fooled(int rc_read)
{
	return rc_read == 0 && memcmp(got, page_b, STORE_PAGE) != 0;
}

static int test_donor_attacks(void)
{
	for (int how = FORGE; how <= MOVE; how++) {
		struct store_stats st;
		struct store *s;
		int rc = 1;

		/* Control: plain records, checksum recomputed.  The naive
		 * replay is caught by the map's version even there. */
		s = open_dev(STORE_ENCRYPT_NONE, 2, 2);
		CHECK(s);
		CHECK(attack_page(s, (enum attack)how, &rc) == 0);
		if (how == REPLAY_OLD) {
			CHECK(rc == -EIO);
		} else if (!fooled(rc)) {
			printf("#   plain %s: attack did not get through (rc %d)\n",
			       attack_names[how], rc);
			return 1;
		}
		close_dev(s);

		/* Sealed: every copy fails to open, the read is EIO, counted. */
		s = open_dev(STORE_ENCRYPT_AUTO, 2, 2);
		CHECK(s);
		CHECK(attack_page(s, (enum attack)how, &rc) == 0);
		if (rc != -EIO) {
			printf("#   sealed %s: read gave %d\n", attack_names[how], rc);
			return 1;
		}
		store_get_stats(s, &st);
		CHECK(st.auth_errors == 2 && st.checksum_errors == 0);
		CHECK(st.read_errors == 1);
		CHECK(st.server[0].errors >= 1 && st.server[1].errors >= 1);
		close_dev(s);
	}
	return 0;
}

/* One forged copy: the read falls back to the intact one, counts the
 * bad one and rewrites it; the next read finds nothing wrong. */
static int test_one_forged_copy(void)
{
	uint8_t rec[REC_MAX_LEN], other[REC_MAX_LEN];
	struct store_stats st;
	struct store *s = open_dev(STORE_ENCRYPT_AUTO, 3, 2);
	uint32_t len;

	CHECK(s);
	fix_fill(page_a, 9, 1, 1);
	CHECK(store_write(s, 0, 9 * STORE_PAGE, STORE_PAGE, page_a) == 0);
	CHECK(donor_get(s, 9, 0, rec, &len) == 0);
	rec[REC_HDR_SIZE + 100] ^= 0x40;
	CHECK(donor_put(s, 9, 0, rec, len) == 0);
	memset(got, 0, sizeof(got));
	CHECK(store_read(s, 1, 9 * STORE_PAGE, STORE_PAGE, got) == 0);
	CHECK(!memcmp(got, page_a, STORE_PAGE));
	store_get_stats(s, &st);
	CHECK(st.auth_errors == 1 && st.read_errors == 0);
	/* Healed: both copies are the same sealed bytes again. */
	CHECK(donor_get(s, 9, 0, rec, &len) == 0);
	CHECK(donor_get(s, 9, 1, other, &len) == 0);
	CHECK(!memcmp(rec, other, len));
	CHECK(store_read(s, 0, 9 * STORE_PAGE, STORE_PAGE, got) == 0);
	store_get_stats(s, &st);
	CHECK(st.auth_errors == 1);
	close_dev(s);
	return 0;
}

/* Everything a donor holds for the device: every replica's used bytes. */
static int donor_holds(struct store *s, const char *needle)
{
	static uint8_t seg[64u << 10];
	int found = 0;

	for (uint32_t i = 0; i < s->hdr->nsegs; i++) {
		struct seg *g = &s->segs[i];

		if (g->state == SEG_FREE || !g->used || g->used > sizeof(seg))
			continue;
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			if (g->rep[r].server >= 0 &&
			    seg_read_range(s, &s->maint_io, &g->rep[r], 0, g->used, seg) == 0 &&
			    memmem(seg, g->used, needle, strlen(needle)))
				found++;
	}
	return found;
}

static int test_donor_sees_no_plaintext(void)
{
	static const char canary[] = "FARMEM-CANARY-7d1f0c";
	enum store_encrypt modes[] = { STORE_ENCRYPT_NONE, STORE_ENCRYPT_AUTO };

	for (int m = 0; m < 2; m++) {
		struct store *s = open_dev(modes[m], 2, 2);
		int n;

		CHECK(s);
		for (uint64_t p = 0; p < 8; p++) {
			fix_fill(page_a, p, 3, 2);
			memcpy(page_a + 100, canary, sizeof(canary) - 1);
			CHECK(store_write(s, 0, p * STORE_PAGE, STORE_PAGE, page_a) == 0);
		}
		n = donor_holds(s, canary);
		if (modes[m] == STORE_ENCRYPT_NONE)
			CHECK(n >= 2);   /* both copies of the segment show it */
		else
			CHECK(n == 0);
		close_dev(s);
	}
	return 0;
}

/* All-zero pages never reach a donor, sealed or not. */
static int test_zero_pages_stay_home(void)
{
	struct fault_stats before, after;
	struct store_stats st;
	struct store *s = open_dev(STORE_ENCRYPT_AUTO, 2, 2);

	CHECK(s);
	memset(page_a, 0, sizeof(page_a));
	fix_servers_total(2, &before);
	CHECK(store_write(s, 0, 3 * STORE_PAGE, STORE_PAGE, page_a) == 0);
	fix_servers_total(2, &after);
	CHECK(after.writes == before.writes && after.allocs == before.allocs);
	store_get_stats(s, &st);
	CHECK(st.zero_pages == 1 && st.pages_stored == 0);
	CHECK(store_read(s, 1, 3 * STORE_PAGE, STORE_PAGE, got) == 0);
	CHECK(!memcmp(got, page_a, STORE_PAGE));
	close_dev(s);
	return 0;
}

/* Each algorithm by name, through the store. */
static int test_each_algorithm(void)
{
	enum store_encrypt modes[] = { STORE_ENCRYPT_AES256GCM, STORE_ENCRYPT_XCHACHA20POLY1305,
				       STORE_ENCRYPT_NONE };

	for (int m = 0; m < 3; m++) {
		struct store_stats st;
		struct store_config c;
		struct store *s;

		if (modes[m] == STORE_ENCRYPT_AES256GCM && !rec_aead_available(REC_AEAD_AES256GCM))
			continue;
		fault_reset();
		fix_config(&c, 2, 2, NPAGES * STORE_PAGE);
		c.encrypt = modes[m];
		s = fix_open(&c);
		CHECK(s);
		for (uint64_t p = 0; p < 16; p++) {
			fix_fill(page_a, p, 4, (int)(p % 3));
			CHECK(store_write(s, (int)(p % 2), p * STORE_PAGE, STORE_PAGE, page_a) == 0);
		}
		for (uint64_t p = 0; p < 16; p++) {
			fix_fill(page_a, p, 4, (int)(p % 3));
			CHECK(store_read(s, 1, p * STORE_PAGE, STORE_PAGE, got) == 0);
			CHECK(!memcmp(got, page_a, STORE_PAGE));
		}
		store_get_stats(s, &st);
		CHECK(st.encrypt == modes[m]);
		CHECK(FIX_BAD_COPIES(st) == 0);
		close_dev(s);
	}
	return 0;
}

/* The key lives in the state file (0600, whatever was there before);
 * attaching reads it back and keeps the device's algorithm. */
static int test_key_in_state_file(void)
{
	char path[] = "/tmp/farmem-test-seal-XXXXXX", err[256];
	struct store_config c;
	struct store_stats st;
	struct store *s;
	struct stat sb;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	CHECK(fchmod(fd, 0644) == 0);
	close(fd);
	fault_reset();
	fix_config(&c, 2, 2, NPAGES * STORE_PAGE);
	c.state_path = path;
	c.encrypt = STORE_ENCRYPT_XCHACHA20POLY1305;
	s = fix_open(&c);
	CHECK(s);
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	fix_fill(page_a, 7, 5, 2);
	CHECK(store_write(s, 0, 7 * STORE_PAGE, STORE_PAGE, page_a) == 0);
	store_close(s);
	/* recover: auto takes what the state says. */
	c.attach = 1;
	c.encrypt = STORE_ENCRYPT_AUTO;
	s = fix_open(&c);
	CHECK(s);
	CHECK(store_read(s, 1, 7 * STORE_PAGE, STORE_PAGE, got) == 0);
	CHECK(!memcmp(got, page_a, STORE_PAGE));
	store_get_stats(s, &st);
	CHECK(st.encrypt == STORE_ENCRYPT_XCHACHA20POLY1305 && st.auth_errors == 0);
	store_close(s);
	/* An explicit other algorithm, or none, is refused by name. */
	c.encrypt = STORE_ENCRYPT_NONE;
	s = NULL;
	CHECK(store_open(&c, &s, err, sizeof(err)) == -EINVAL && !s);
	CHECK(strstr(err, path) && strstr(err, "xchacha20poly1305") && strstr(err, "none"));
	/* A state file whose key was changed opens nothing. */
	c.encrypt = STORE_ENCRYPT_AUTO;
	s = fix_open(&c);
	CHECK(s);
	s->rkey.key[0] ^= 1;
	CHECK(rec_key_init(&s->rkey, s->rkey.aead, s->rkey.key, c.uuid, 1) == 0);
	CHECK(store_read(s, 1, 7 * STORE_PAGE, STORE_PAGE, got) == -EIO);
	store_close(s);
	unlink(path);
	fault_reset();
	return 0;
}

/* A state file from before sealing (version 1) still attaches, as a
 * plain device, and reads back what was written. */
static int test_v1_state_attaches_plain(void)
{
	char path[] = "/tmp/farmem-test-seal-XXXXXX";
	struct store_config c;
	struct store_stats st;
	struct store *s;
	int fd = mkstemp(path);

	CHECK(fd >= 0);
	close(fd);
	fault_reset();
	fix_config(&c, 2, 2, NPAGES * STORE_PAGE);
	c.state_path = path;
	c.encrypt = STORE_ENCRYPT_NONE;
	s = fix_open(&c);
	CHECK(s);
	fix_fill(page_a, 4, 6, 1);
	CHECK(store_write(s, 0, 4 * STORE_PAGE, STORE_PAGE, page_a) == 0);
	/* What version 1 wrote: no fields from aead on. */
	s->hdr->version = 1;
	s->hdr->hdr_size = offsetof(struct state_hdr, aead);
	memset(&s->hdr->aead, 0, sizeof(*s->hdr) - offsetof(struct state_hdr, aead));
	store_close(s);
	c.attach = 1;
	c.encrypt = STORE_ENCRYPT_AUTO;
	s = fix_open(&c);
	CHECK(s);
	CHECK(s->hdr->version == STATE_VERSION && s->hdr->hdr_size == sizeof(*s->hdr));
	CHECK(store_read(s, 1, 4 * STORE_PAGE, STORE_PAGE, got) == 0);
	CHECK(!memcmp(got, page_a, STORE_PAGE));
	store_get_stats(s, &st);
	CHECK(st.encrypt == STORE_ENCRYPT_NONE);
	store_close(s);
	unlink(path);
	fault_reset();
	return 0;
}

static const struct tap_case cases[] = {
	{ "donor forgery, replay and move: plain fooled, sealed EIO + counted",
	  test_donor_attacks },
	{ "one forged copy: served from the other, counted, healed", test_one_forged_copy },
	{ "donor memory holds the canary only when plain", test_donor_sees_no_plaintext },
	{ "zero pages never reach a donor", test_zero_pages_stay_home },
	{ "each algorithm round-trips through the store", test_each_algorithm },
	{ "key in the 0600 state file; attach keeps the algorithm", test_key_in_state_file },
	{ "a version 1 state file attaches as a plain device", test_v1_state_attaches_plain },
};

TAP_MAIN(cases)
