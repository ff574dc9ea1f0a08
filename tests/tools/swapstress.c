/* swapstress — a memory workload that forces swap and proves every page
 * comes back intact.
 *
 *   swapstress [--mib N | --ram-factor F] [--passes P] [--random-pct R]
 *              [--scatter] [--progress] [--corrupt-one]
 *
 * Allocates N MiB of anonymous memory (or F times MemTotal), and for each
 * pass p = 1..P writes every 4 KiB page with content derived from
 * (page index, p), then reads every page back (in order, or with
 * --scatter in a scattered order that defeats swap readahead) and
 * compares it with the content regenerated from (index, p).  Each page
 * starts with a header (magic, index, pass, checksum of the rest) so a
 * mismatch says what came back instead: a stale page (older pass), a
 * page from elsewhere (other index), zeroes, or garbage.
 *
 * R percent of each page (default 25) is pseudo-random, the rest a
 * repeated word: pages compress about 4:1, as real anonymous memory
 * roughly does, so zswap and farmem's codec both have work to do.
 *
 * --corrupt-one flips one bit of one page between writing and verifying,
 * to prove the check catches it (the harness's own test).
 *
 * Exit status: 0 every page verified, 1 any mismatch, 2 usage or setup
 * error.  Runtime is bounded by the size: P writes and P reads of N MiB.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define MAGIC UINT64_C(0x46524d5354524553) /* "FRMSTRES" */
#define MAX_REPORTS 10

struct page_hdr {
	uint64_t magic;
	uint64_t index;
	uint64_t pass;
	uint64_t sum; /* checksum of words 4..WORDS-1 */
};

struct opts {
	uint64_t mib;
	double ram_factor;
	unsigned passes;
	unsigned random_pct;
	int progress;
	int scatter;
	int corrupt_one; /* self-test: flip a bit after writing, expect exit 1 */
};

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* A simple order-dependent checksum; corruption anywhere changes it. */
static uint64_t checksum(const uint64_t *w, size_t n)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (size_t i = 0; i < n; i++) {
		h ^= w[i];
		h *= UINT64_C(0x100000001b3);
		h ^= h >> 29;
	}
	return h;
}

/* The content page INDEX holds in pass PASS. */
static void fill_page(uint64_t *w, uint64_t index, uint64_t pass, unsigned random_pct)
{
	struct page_hdr *h = (struct page_hdr *)w;
	uint64_t seed = index * UINT64_C(0x100000001b3) ^ (pass << 48) ^ 0x5eed;
	size_t first = sizeof(*h) / 8;
	size_t nrand = (WORDS - first) * random_pct / 100;
	uint64_t filler = splitmix(&seed);

	for (size_t i = first; i < WORDS; i++)
		w[i] = i < first + nrand ? splitmix(&seed) : filler;
	h->magic = MAGIC;
	h->index = index;
	h->pass = pass;
	h->sum = checksum(w + first, WORDS - first);
}

/* Say what came back instead of the expected page. */
static void report_mismatch(const uint64_t *got, uint64_t index, uint64_t pass)
{
	const struct page_hdr *h = (const struct page_hdr *)got;
	size_t first = sizeof(*h) / 8;
	int zero = 1;

	for (size_t i = 0; i < WORDS && zero; i++)
		zero = got[i] == 0;
	if (zero) {
		fprintf(stderr, "swapstress: page %" PRIu64 " pass %" PRIu64
			": all zeroes\n", index, pass);
		return;
	}
	if (h->magic != MAGIC) {
		fprintf(stderr, "swapstress: page %" PRIu64 " pass %" PRIu64
			": no header (garbage, first word %#" PRIx64 ")\n",
			index, pass, h->magic);
		return;
	}
	fprintf(stderr, "swapstress: page %" PRIu64 " pass %" PRIu64
		": holds page %" PRIu64 " pass %" PRIu64 ", checksum %s\n",
		index, pass, h->index, h->pass,
		checksum(got + first, WORDS - first) == h->sum ? "intact" : "bad");
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void progress(const struct opts *o, const char *what, uint64_t pass,
		     uint64_t done, uint64_t n)
{
	if (!o->progress || done * 10 / n == (done - 1) * 10 / n)
		return;
	printf("swapstress: pass %" PRIu64 " %s %" PRIu64 "%%\n", pass, what,
	       done * 100 / n);
	fflush(stdout);
}

static void write_pass(const struct opts *o, uint8_t *mem, uint64_t n, uint64_t pass)
{
	for (uint64_t i = 0; i < n; i++) {
		fill_page((uint64_t *)(mem + i * PAGE), i, pass, o->random_pct);
		progress(o, "written", pass, i + 1, n);
	}
}

/* Read every page back, in order or (--scatter) with a stride coprime
 * with n, so that swap-in is one synchronous read per page instead of
 * sequential readahead.  Returns the mismatch count. */
static uint64_t verify_pass(const struct opts *o, uint8_t *mem, uint64_t n, uint64_t pass)
{
	static uint64_t want[WORDS];
	/* Both primes: a prime stride visits every page unless it divides n,
	 * and n (a multiple of 256 pages) cannot be a multiple of both. */
	uint64_t stride = !o->scatter ? 1 : n % 7919 ? 7919 : 7907, bad = 0, idx = 0;

	for (uint64_t k = 0; k < n; k++) {
		const uint64_t *got = (const uint64_t *)(mem + idx * PAGE);

		fill_page(want, idx, pass, o->random_pct);
		if (memcmp(got, want, PAGE) != 0) {
			if (bad < MAX_REPORTS)
				report_mismatch(got, idx, pass);
			bad++;
		}
		progress(o, "verified", pass, k + 1, n);
		idx = (idx + stride) % n;
	}
	return bad;
}

static uint64_t mem_total_kib(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	uint64_t kib = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option lopts[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "ram-factor", required_argument, NULL, 'f' },
		{ "passes", required_argument, NULL, 'p' },
		{ "random-pct", required_argument, NULL, 'r' },
		{ "progress", no_argument, NULL, 'P' },
		{ "corrupt-one", no_argument, NULL, 'C' },
		{ "scatter", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	int c;

	*o = (struct opts){ .passes = 2, .random_pct = 25, .ram_factor = 0 };
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		errno = 0;
		switch (c) {
		case 'm':
			o->mib = strtoull(optarg, &end, 10);
			break;
		case 'f':
			o->ram_factor = strtod(optarg, &end);
			break;
		case 'p':
			o->passes = (unsigned)strtoul(optarg, &end, 10);
			break;
		case 'r':
			o->random_pct = (unsigned)strtoul(optarg, &end, 10);
			break;
		case 'P':
			o->progress = 1;
			continue;
		case 'C':
			o->corrupt_one = 1;
			continue;
		case 'S':
			o->scatter = 1;
			continue;
		default:
			return -EINVAL;
		}
		if (errno || *end || end == optarg) {
			fprintf(stderr, "swapstress: bad number '%s'\n", optarg);
			return -EINVAL;
		}
	}
	if (o->ram_factor > 0) {
		uint64_t kib = mem_total_kib();

		if (!kib) {
			fprintf(stderr, "swapstress: cannot read MemTotal\n");
			return -EIO;
		}
		o->mib = (uint64_t)(kib * o->ram_factor / 1024);
	}
	if (!o->mib || !o->passes || o->random_pct > 100 || optind != argc) {
		fprintf(stderr, "usage: swapstress [--mib N | --ram-factor F] [--passes P]"
			" [--random-pct R] [--scatter] [--progress] [--corrupt-one]\n");
		return -EINVAL;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	uint64_t n, total_bad = 0, verified = 0;
	uint8_t *mem;
	double t0;

	if (parse_opts(argc, argv, &o) < 0)
		return 2;
	n = o.mib * (1024 * 1024 / PAGE);
	mem = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "swapstress: mmap %" PRIu64 " MiB: %s\n", o.mib,
			strerror(errno));
		return 2;
	}
	/* Swap is the point: keep THP from making 2 MiB units of it. */
	madvise(mem, n * PAGE, MADV_NOHUGEPAGE);
	printf("swapstress: %" PRIu64 " MiB, %" PRIu64 " pages, %u passes, %u%% random,"
	       " %s reads\n", o.mib, n, o.passes, o.random_pct,
	       o.scatter ? "scattered" : "sequential");
	fflush(stdout);
	for (unsigned p = 1; p <= o.passes; p++) {
		uint64_t bad;

		t0 = now();
		write_pass(&o, mem, n, p);
		printf("swapstress: pass %u wrote %" PRIu64 " MiB in %.1fs\n", p, o.mib,
		       now() - t0);
		fflush(stdout);
		if (o.corrupt_one)
			mem[(n / 2) * PAGE + 100] ^= 0x10;
		t0 = now();
		bad = verify_pass(&o, mem, n, p);
		printf("swapstress: pass %u verified %" PRIu64 " pages in %.1fs, %" PRIu64
		       " mismatches\n", p, n, now() - t0, bad);
		fflush(stdout);
		total_bad += bad;
		verified += n - bad;
	}
	printf("swapstress: %s: %" PRIu64 " pages verified, %" PRIu64 " mismatches\n",
	       total_bad ? "FAIL" : "ok", verified, total_bad);
	munmap(mem, n * PAGE);
	return total_bad ? 1 : 0;
}
