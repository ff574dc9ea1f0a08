/* offload_parse.c — the texts offload reads: percentages from flags,
 * memory.pressure, memory.stat and /proc/swaps.  Pure functions over
 * strings, so unit tests feed them the kernel's formats directly. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "offload.h"
#include "parse.h"

int offload_parse_pct(const char *s, double *share)
{
	char *end;
	double v;
	size_t n = strlen(s);

	/* The '%' is required so "1" cannot mean 1 % to one reader and
	 * 100 % to another. */
	if (n < 2 || s[n - 1] != '%' || !((s[0] >= '0' && s[0] <= '9') || s[0] == '.'))
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end != s + n - 1 || !isfinite(v) || v <= 0 || v > 100)
		return -EINVAL;
	*share = v / 100.0;
	return 0;
}

/* The value after "NAME=" on one line, as u64. */
static int field_u64(const char *line, size_t linelen, const char *name, uint64_t *v)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i + nl < linelen; i++) {
		if ((i == 0 || line[i - 1] == ' ') && !strncmp(line + i, name, nl) &&
		    line[i + nl] == '=') {
			char num[24];
			size_t j = i + nl + 1, k = 0;

			while (j < linelen && line[j] >= '0' && line[j] <= '9' && k < sizeof(num) - 1)
				num[k++] = line[j++];
			num[k] = '\0';
			if (!k || (j < linelen && line[j] != ' ' && line[j] != '\n'))
				return -EINVAL;
			return parse_u64(num, 0, UINT64_MAX, v);
		}
	}
	return -EINVAL;
}

int offload_psi_some_total(const char *text, uint64_t *total_us)
{
	while (*text) {
		size_t n = strcspn(text, "\n");

		if (!strncmp(text, "some ", 5))
			return field_u64(text, n, "total", total_us);
		text += n + (text[n] == '\n');
	}
	return -EINVAL;
}

int offload_stat_get(const char *text, const char *key, uint64_t *v)
{
	size_t kl = strlen(key);

	while (*text) {
		size_t n = strcspn(text, "\n");

		if (n > kl && !strncmp(text, key, kl) && text[kl] == ' ') {
			char num[24];
			size_t vl = n - kl - 1;

			if (vl == 0 || vl >= sizeof(num))
				return -EINVAL;
			memcpy(num, text + kl + 1, vl);
			num[vl] = '\0';
			return parse_u64(num, 0, UINT64_MAX, v);
		}
		text += n + (text[n] == '\n');
	}
	return -ENOENT;
}

static uint64_t stat_or_zero(const char *text, const char *key)
{
	uint64_t v = 0;

	return offload_stat_get(text, key, &v) == 0 ? v : 0;
}

uint64_t offload_stat_unreclaimable(const char *text)
{
	uint64_t kernel;

	/* "kernel" (5.18+) sums the kernel's own memory in the cgroup; older
	 * kernels list the parts. */
	if (offload_stat_get(text, "kernel", &kernel) != 0)
		kernel = stat_or_zero(text, "kernel_stack") +
			 stat_or_zero(text, "pagetables") +
			 stat_or_zero(text, "percpu") +
			 stat_or_zero(text, "sock") +
			 stat_or_zero(text, "slab_unreclaimable");
	return kernel + stat_or_zero(text, "unevictable");
}

int offload_swaps_parse(const char *text, struct offload_swap *out, int max)
{
	int n = 0;

	/* Skip the header line ("Filename Type Size Used Priority"). */
	text += strcspn(text, "\n");
	while (*text == '\n' && n < max) {
		struct offload_swap s;
		char line[512], type[32];
		size_t len;

		text++;
		len = strcspn(text, "\n");
		if (len == 0)
			continue;
		if (len >= sizeof(line)) {
			text += len;
			continue;
		}
		memcpy(line, text, len);
		line[len] = '\0';
		text += len;
		memset(&s, 0, sizeof(s));
		if (sscanf(line, "%255s %31s %" SCNu64 " %" SCNu64, s.dev, type,
			   &s.size_kb, &s.used_kb) == 4)
			out[n++] = s;
	}
	return n;
}

int offload_read_u64(const char *path, uint64_t *v)
{
	char buf[64];
	int n = fm_read_small_file(path, buf, sizeof(buf));

	if (n < 0)
		return n;
	buf[strcspn(buf, "\n")] = '\0';
	if (!strcmp(buf, "max")) {
		*v = UINT64_MAX;
		return 0;
	}
	return parse_u64(buf, 0, UINT64_MAX, v);
}
