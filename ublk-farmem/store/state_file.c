/* state_file.c — the page map and segment table in one mapping.
 *
 * With cfg->state_path the mapping is a shared file (under /run, so
 * memory-backed) that a restarted daemon attaches to; otherwise it is
 * anonymous.  Its header also holds the device's record key
 * (store_key.c), so the file is mode 0600.  Either way it is allocated in full at open, so the I/O
 * path never allocates metadata.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "log.h"
#include "internal.h"

static size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

/* Enough segments for the whole device written at 50% segment use, plus
 * one open segment per queue and the cleaner, plus slack for repair. */
static uint32_t nsegs_for(const struct store *s)
{
	uint64_t n = 2 * (s->cfg.size / s->seg_size + 1) + (uint64_t)s->nqueues + 8;

	return n > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)n;
}

static void fill_header(struct store *s, struct state_hdr *h, uint32_t nsegs)
{
	memset(h, 0, sizeof(*h));
	h->magic = STATE_MAGIC;
	h->version = STATE_VERSION;
	h->hdr_size = sizeof(*h);
	memcpy(h->uuid, s->cfg.uuid, FM_UUID_LEN);
	h->size = s->cfg.size;
	h->npages = s->npages;
	h->nsegs = nsegs;
	h->segment_size = s->seg_size;
	h->replicas = (uint32_t)s->replicas;
	h->nservers = (uint32_t)s->nservers;
	for (int i = 0; i < s->nservers; i++)
		h->server_hash[i] = fm_xxh3(s->srv[i].addr, strlen(s->srv[i].addr));
	h->next_version = 1;
	h->seg_off = align_up(sizeof(*h), 4096);
	h->map_off = align_up(h->seg_off + (uint64_t)nsegs * sizeof(struct seg), 4096);
	h->total_len = align_up(h->map_off + s->npages * sizeof(struct pm_entry), 4096);
}

/* A version 1 state (before records were sealed) belongs to a plain
 * device: the fields added since sat in zero padding before the segment
 * table, so it becomes version 2 in place, with no key.  A daemon
 * upgraded under a running device thus still recovers it. */
static void upgrade_v1(const struct store *s, struct state_hdr *h, size_t flen)
{
	if (flen < sizeof(*h) || h->magic != STATE_MAGIC || h->version != 1 ||
	    h->hdr_size != offsetof(struct state_hdr, aead) || h->seg_off < sizeof(*h) ||
	    memcmp(h->uuid, s->cfg.uuid, FM_UUID_LEN))
		return;
	h->aead = REC_AEAD_NONE;
	memset(h->key, 0, sizeof(h->key));
	h->auth_errors = 0;
	h->hdr_size = sizeof(*h);
	h->version = STATE_VERSION;
	log_info("state: upgraded a version 1 state file (plain records)");
}

static int check_header(struct store *s, struct state_hdr *h, size_t flen,
			char *err, size_t errlen)
{
	const char *why = NULL;

	upgrade_v1(s, h, flen);
	/* etcd: this device's state only (the server list is checked below). */
	if (s->cfg.etcd.n && flen >= sizeof(*h) && h->magic == STATE_MAGIC &&
	    h->version == STATE_VERSION && h->hdr_size == sizeof(*h) &&
	    !memcmp(h->uuid, s->cfg.uuid, FM_UUID_LEN))
		server_order_from_state(s, h);
	if (flen < sizeof(*h) || h->magic != STATE_MAGIC)
		why = "not a farmem state file";
	else if (h->version != STATE_VERSION || h->hdr_size != sizeof(*h))
		why = "state file version differs";
	else if (memcmp(h->uuid, s->cfg.uuid, FM_UUID_LEN))
		why = "state file belongs to another device (uuid)";
	else if (h->size != s->cfg.size || h->npages != s->npages)
		why = "device size differs from the state file";
	else if (h->segment_size != s->seg_size)
		why = "segment size differs from the state file";
	else if (h->nservers != (uint32_t)s->nservers)
		why = "server list differs from the state file";
	else if (h->total_len > flen || h->map_off + s->npages * sizeof(struct pm_entry) > flen ||
		 h->seg_off + (uint64_t)h->nsegs * sizeof(struct seg) > h->map_off)
		why = "state file is truncated or inconsistent";
	for (int i = 0; !why && i < s->nservers; i++)
		if (h->server_hash[i] != fm_xxh3(s->srv[i].addr, strlen(s->srv[i].addr)))
			why = "server list differs from the state file";
	if (!why)
		return 0;
	snprintf(err, errlen, "%s: %s", s->cfg.state_path, why);
	log_err("%s", err);
	return -EINVAL;
}

static int map_file(struct store *s, struct state_hdr *tmpl, char *err, size_t errlen)
{
	const char *path = s->cfg.state_path;
	struct stat st;
	int fd, rc;

	/* Open without truncating, then lock: a state file a live daemon
	 * still uses must be neither emptied nor attached twice.  The lock
	 * dies with its holder, so `recover` after a crash gets it. */
	fd = open(path, s->cfg.attach ? O_RDWR | O_CLOEXEC : O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(err, errlen, "%s: %s", path, rc == -EBUSY ?
			 "in use by another running farmem-blk" : strerror(-rc));
		close(fd);
		return rc;
	}
	/* The header holds the device's record key: owner only, whatever
	 * the umask was or an older file said. */
	if (fchmod(fd, 0600) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: chmod 600: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	if (!s->cfg.attach && ftruncate(fd, 0) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: truncate: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	if (!s->cfg.attach && ftruncate(fd, (off_t)tmpl->total_len) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: size %llu: %s", path,
			 (unsigned long long)tmpl->total_len, strerror(-rc));
		close(fd);
		return rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	s->map_len = (size_t)st.st_size;
	s->map_base = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (s->map_base == MAP_FAILED) {
		rc = -errno;
		s->map_base = NULL;
		snprintf(err, errlen, "%s: mmap: %s", path, strerror(-rc));
		close(fd);
		return rc;
	}
	s->state_fd = fd;
	return 0;
}

int state_open(struct store *s, char *err, size_t errlen)
{
	struct state_hdr tmpl;
	int rc;

	fill_header(s, &tmpl, nsegs_for(s));
	s->state_fd = -1;
	if (s->cfg.state_path) {
		rc = map_file(s, &tmpl, err, errlen);
		if (rc < 0)
			return rc;
	} else {
		s->map_len = tmpl.total_len;
		s->map_base = mmap(NULL, s->map_len, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (s->map_base == MAP_FAILED) {
			s->map_base = NULL;
			snprintf(err, errlen, "metadata: cannot map %zu bytes", s->map_len);
			return -ENOMEM;
		}
	}
	s->hdr = s->map_base;
	if (s->cfg.attach && s->cfg.state_path) {
		rc = check_header(s, s->hdr, s->map_len, err, errlen);
		if (rc < 0) {
			state_close(s);
			return rc;
		}
	}
	if (!s->cfg.attach)
		memcpy(s->hdr, &tmpl, sizeof(tmpl));
	s->segs = (struct seg *)((uint8_t *)s->map_base + s->hdr->seg_off);
	s->map = (struct pm_entry *)((uint8_t *)s->map_base + s->hdr->map_off);
	if (s->cfg.attach) {
		state_rebuild(s);
		return 0;
	}
	for (uint32_t i = 0; i < s->hdr->nsegs; i++)
		for (int r = 0; r < STORE_MAX_REPLICAS; r++)
			s->segs[i].rep[r].server = -1;
	return 0;
}

/* After a restart nothing is in flight: open segments lost their queue,
 * half-done cleaner/alloc steps are settled, accounting is recomputed
 * from the page map (the map is the truth). */
void state_rebuild(struct store *s)
{
	struct state_hdr *h = s->hdr;

	h->pages_stored = h->zero_pages = h->bytes_stored = 0;
	for (uint32_t i = 0; i < h->nsegs; i++) {
		struct seg *g = &s->segs[i];

		g->readers = 0;
		g->writers = 0;
		g->live = 0;
		if (g->state == SEG_ALLOCATING) {
			/* ALLOC replies may have been lost with the old
			 * process; the servers' lease reclaims them. */
			memset(g, 0, sizeof(*g));
			for (int r = 0; r < STORE_MAX_REPLICAS; r++)
				g->rep[r].server = -1;
		} else if (g->state == SEG_OPEN || g->state == SEG_FULL ||
			   g->state == SEG_FREEING) {
			g->state = SEG_SEALED;
		}
	}
	for (uint64_t p = 0; p < s->npages; p++) {
		struct pm_entry *e = &s->map[p];

		if (pm_state(e) == PM_ZERO) {
			h->zero_pages++;
		} else if (pm_state(e) == PM_STORED) {
			if (e->seg >= h->nsegs || s->segs[e->seg].state != SEG_SEALED) {
				log_err("state: page %llu points at bad segment %u; unmapping",
					(unsigned long long)p, e->seg);
				*e = pm_make(PM_UNMAPPED, 0, 0, 0, pm_version(e));
				continue;
			}
			h->pages_stored++;
			h->bytes_stored += rec_len(pm_plen(e));
			s->segs[e->seg].live += rec_len(pm_plen(e));
		}
	}
}

void state_close(struct store *s)
{
	if (s->map_base) {
		if (s->state_fd >= 0)
			msync(s->map_base, s->map_len, MS_SYNC);
		munmap(s->map_base, s->map_len);
	}
	if (s->state_fd >= 0)
		close(s->state_fd);
	s->map_base = NULL;
	s->state_fd = -1;
}
