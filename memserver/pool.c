/* pool.c — the memory pool: mapped up front, pinned, huge pages if we can.
 *
 * The pool is what the server donates, so it must really be there when
 * a client writes: mapping it lazily or letting the kernel swap it out
 * would turn remote "memory" into somebody else's disk.  Hence mlock,
 * and a loud refusal when RLIMIT_MEMLOCK forbids it unless the operator
 * asked to run unlocked.
 */
#include "memserver.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#define HUGE_2M (2u << 20)

static size_t round_up(size_t v, size_t to)
{
	return (v + to - 1) / to * to;
}

/* hugetlbfs pages: only when the admin reserved enough of them.
 * MAP_POPULATE: hugetlb pages are taken now or the map fails. */
static void *map_hugetlb(size_t size, size_t *mapped)
{
	size_t len = round_up(size, HUGE_2M);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_POPULATE,
		       -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	*mapped = len;
	return p;
}

static void *map_plain(size_t size, size_t *mapped)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	*mapped = size;
	return p;
}

static int pool_map(struct ms_pool *p, size_t size, enum ms_huge huge)
{
	if (huge != MS_HUGE_NO) {
		p->base = map_hugetlb(size, &p->map_size);
		if (p->base) {
			p->huge = 1;
			return 0;
		}
		if (huge == MS_HUGE_YES) {
			int e = errno;

			log_err("pool: cannot map %zu bytes of huge pages: %s "
				"(reserve them in /proc/sys/vm/nr_hugepages, or "
				"set hugepages = auto)", size, strerror(e));
			return -e;
		}
	}
	p->base = map_plain(size, &p->map_size);
	if (!p->base) {
		int e = errno;

		log_err("pool: cannot map %zu bytes: %s", size, strerror(e));
		return -e;
	}
	/* Transparent huge pages cut TLB misses on a big pool; a kernel
	 * without THP says EINVAL, which costs nothing. */
	if (huge == MS_HUGE_AUTO && madvise(p->base, p->map_size, MADV_HUGEPAGE) == 0)
		p->huge = 2;
	return 0;
}

static void explain_memlock(size_t size, int err)
{
	struct rlimit rl;
	char limit[32] = "unknown";

	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
		if (rl.rlim_cur == RLIM_INFINITY)
			snprintf(limit, sizeof(limit), "unlimited");
		else
			snprintf(limit, sizeof(limit), "%llu KiB",
				 (unsigned long long)rl.rlim_cur / 1024);
	}
	log_err("pool: cannot lock %zu MiB in memory: %s (RLIMIT_MEMLOCK is %s). "
		"Raise the limit (ulimit -l, LimitMEMLOCK=infinity in the "
		"systemd unit) or pass --allow-unlocked (allow-unlocked = yes) "
		"to serve memory the kernel may swap out", size >> 20,
		strerror(err), limit);
}

int ms_pool_create(struct ms_pool *p, uint64_t size, enum ms_huge huge,
		   int allow_unlocked)
{
	int rc;

	memset(p, 0, sizeof(*p));
	if (size == 0 || size > SIZE_MAX / 2)
		return -EINVAL;
	rc = pool_map(p, (size_t)size, huge);
	if (rc < 0)
		return rc;
	p->size = (size_t)size;
	/* mlock also faults every page in, so the pool is real memory now. */
	if (mlock(p->base, p->map_size) == 0) {
		p->locked = 1;
		return 0;
	}
	rc = -errno;
	if (!allow_unlocked) {
		explain_memlock(p->size, -rc);
		ms_pool_destroy(p);
		return rc;
	}
	/* Still allocate up front: touch every page (after MADV_HUGEPAGE,
	 * so the faults can take huge pages). */
	memset(p->base, 0, p->map_size);
	log_warn("pool: running UNLOCKED as asked (allow-unlocked): mlock of "
		 "%zu MiB failed: %s; the kernel may swap this pool out",
		 p->size >> 20, strerror(-rc));
	return 0;
}

/* CAP_IPC_LOCK lifts RLIMIT_MEMLOCK; read it from our own status rather
 * than link libcap for one bit. */
static int have_ipc_lock(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	unsigned long long caps = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &caps) == 1)
			break;
	fclose(f);
	return (caps >> 14) & 1; /* CAP_IPC_LOCK */
}

int ms_pool_lock_check(uint64_t size, char *why, size_t len)
{
	struct rlimit rl;

	if (have_ipc_lock() || getrlimit(RLIMIT_MEMLOCK, &rl) < 0 ||
	    rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= size)
		return 0;
	snprintf(why, len, "RLIMIT_MEMLOCK here is %llu KiB, less than the "
		 "pool, and there is no CAP_IPC_LOCK: the pool could not be "
		 "locked (the systemd unit sets LimitMEMLOCK=infinity)",
		 (unsigned long long)rl.rlim_cur / 1024);
	return -ENOMEM;
}

int ms_pool_release(uint8_t *p, size_t len, int locked)
{
	/* munlock first: MADV_DONTNEED refuses locked pages. */
	if (locked && munlock(p, len) < 0) {
		int e = errno;

		log_warn("pool: cannot unlock %zu KiB to give it back: %s",
			 len >> 10, strerror(e));
		return -e;
	}
	if (madvise(p, len, MADV_DONTNEED) < 0) {
		int e = errno;

		log_warn("pool: cannot give %zu KiB back to the kernel: %s",
			 len >> 10, strerror(e));
		return -e;
	}
	return 0;
}

int ms_pool_restore(uint8_t *p, size_t len, int locked)
{
	if (!locked) {
		memset(p, 0, len);
		return 0;
	}
	/* mlock faults the pages in: the memory is really there again. */
	if (mlock(p, len) < 0) {
		int e = errno;

		log_warn("pool: cannot take %zu KiB back (mlock): %s",
			 len >> 10, strerror(e));
		return -e;
	}
	return 0;
}

void ms_pool_destroy(struct ms_pool *p)
{
	if (p->base)
		munmap(p->base, p->map_size);
	memset(p, 0, sizeof(*p));
}
