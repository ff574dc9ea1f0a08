/* hotcold — a workload with a small hot set and a large cold one, for
 * `farmem-blk offload`'s guest scenario.
 *
 *   hotcold --mib 400 --hot-pct 10 --ready FILE --stop FILE [--max-seconds S]
 *
 * Fills MIB of anonymous memory with pages derived from their index,
 * writes FILE (--ready) once filled, then reads the first HOT-PCT of the
 * pages over and over (each touch checks one word) until the --stop file
 * appears, SIGTERM, or --max-seconds.  Then it prints the hot loop's rate
 * in its first and last 10 s windows (information, nothing judged), how
 * much of the hot and the cold set is resident (mincore), and verifies
 * every word of every page.  Exit 0 only when every page verifies. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define WINDOW_S 10.0

static volatile sig_atomic_t stop_flag;

static void on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Word w of page i: an LCG seeded by the index, so every page differs
 * and a page from elsewhere never passes. */
static uint64_t word_of(uint64_t i, unsigned w)
{
	uint64_t v = i * 0x9E3779B97F4A7C15ull + 1;

	for (unsigned k = 0; k <= w; k++)
		v = v * 6364136223846793005ull + 1442695040888963407ull;
	return v;
}

static void fill_page(uint64_t *p, uint64_t i)
{
	uint64_t v = i * 0x9E3779B97F4A7C15ull + 1;

	for (unsigned w = 0; w < WORDS; w++) {
		v = v * 6364136223846793005ull + 1442695040888963407ull;
		p[w] = v;
	}
}

static int check_page(const uint64_t *p, uint64_t i)
{
	uint64_t v = i * 0x9E3779B97F4A7C15ull + 1;

	for (unsigned w = 0; w < WORDS; w++) {
		v = v * 6364136223846793005ull + 1442695040888963407ull;
		if (p[w] != v)
			return -1;
	}
	return 0;
}

static double resident_pct(unsigned char *base, uint64_t first, uint64_t n)
{
	unsigned char *vec;
	uint64_t in = 0;

	if (!n)
		return 0.0;
	vec = malloc(n);
	if (!vec || mincore(base + first * PAGE, n * PAGE, vec) < 0) {
		free(vec);
		return -1.0;
	}
	for (uint64_t i = 0; i < n; i++)
		in += vec[i] & 1;
	free(vec);
	return 100.0 * (double)in / (double)n;
}

static int usage(void)
{
	fprintf(stderr, "usage: hotcold --mib N --hot-pct P --ready FILE --stop FILE "
		"[--max-seconds S]\n");
	return 2;
}

int main(int argc, char **argv)
{
	uint64_t mib = 0, pages, hot, sweeps = 0, first_sweeps = 0, bad = 0;
	double hot_pct = 0, max_s = 3600, t0, t_first = 0, last_rate = 0, win_t;
	uint64_t win_sweeps = 0;
	const char *ready = NULL, *stopf = NULL;
	unsigned char *mem;
	FILE *f;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--mib"))
			mib = strtoull(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--hot-pct"))
			hot_pct = strtod(argv[i + 1], NULL);
		else if (!strcmp(argv[i], "--ready"))
			ready = argv[i + 1];
		else if (!strcmp(argv[i], "--stop"))
			stopf = argv[i + 1];
		else if (!strcmp(argv[i], "--max-seconds"))
			max_s = strtod(argv[i + 1], NULL);
		else
			return usage();
	}
	if (!mib || hot_pct <= 0 || hot_pct > 100 || !ready || !stopf || max_s <= 0)
		return usage();
	signal(SIGTERM, on_term);
	pages = mib * (1u << 20) / PAGE;
	hot = (uint64_t)((double)pages * hot_pct / 100.0);
	if (!hot)
		hot = 1;
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("hotcold: mmap");
		return 1;
	}
	for (uint64_t i = 0; i < pages; i++)
		fill_page((uint64_t *)(mem + i * PAGE), i);
	printf("hotcold: filled %llu pages, hot set %llu pages\n",
	       (unsigned long long)pages, (unsigned long long)hot);
	fflush(stdout);
	f = fopen(ready, "w");
	if (f)
		fclose(f);
	t0 = win_t = now_s();
	while (!stop_flag && access(stopf, F_OK) < 0 && now_s() - t0 < max_s) {
		for (uint64_t i = 0; i < hot; i++) {
			unsigned w = (unsigned)(sweeps % 4);

			if (((uint64_t *)(mem + i * PAGE))[w] != word_of(i, w))
				bad++;
		}
		sweeps++;
		win_sweeps++;
		if (now_s() - win_t >= WINDOW_S) {
			double rate = (double)win_sweeps / (now_s() - win_t);

			if (!t_first) {
				t_first = rate;
				first_sweeps = win_sweeps;
			}
			last_rate = rate;
			printf("hotcold: hot loop %.2f sweeps/s\n", rate);
			fflush(stdout);
			win_sweeps = 0;
			win_t = now_s();
		}
	}
	printf("hotcold: %llu sweeps of the hot set in %.0fs; first window %.2f/s "
	       "(%llu sweeps), last %.2f/s\n", (unsigned long long)sweeps,
	       now_s() - t0, t_first, (unsigned long long)first_sweeps, last_rate);
	printf("hotcold: resident hot %.1f%% cold %.1f%%\n",
	       resident_pct(mem, 0, hot), resident_pct(mem, hot, pages - hot));
	for (uint64_t i = 0; i < pages; i++)
		if (check_page((const uint64_t *)(mem + i * PAGE), i) < 0)
			bad++;
	printf("hotcold: verified %llu pages, %llu mismatches\n",
	       (unsigned long long)pages, (unsigned long long)bad);
	return bad ? 1 : 0;
}
