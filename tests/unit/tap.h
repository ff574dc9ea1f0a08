/* tap.h — tiny TAP producer for the C unit tests, run through prove.
 *
 * A test file is a table of small functions; each returns 0 for pass
 * and uses CHECK() to report the first failing expression.
 */
#ifndef FARMEM_TAP_H
#define FARMEM_TAP_H

#include <stdio.h>

struct tap_case {
	const char *name;
	int (*fn)(void);
};

#define CHECK(expr) do { if (!(expr)) { \
	printf("#   %s:%d: check failed: %s\n", __FILE__, __LINE__, #expr); \
	return 1; } } while (0)

static inline int tap_run(const struct tap_case *cases, int n)
{
	int failed = 0;

	printf("1..%d\n", n);
	for (int i = 0; i < n; i++) {
		int rc = cases[i].fn();

		printf("%s %d - %s\n", rc ? "not ok" : "ok", i + 1, cases[i].name);
		fflush(stdout);
		failed += rc != 0;
	}
	return failed ? 1 : 0;
}

#define TAP_MAIN(cases) int main(void) { \
	return tap_run(cases, (int)(sizeof(cases) / sizeof(cases[0]))); }

#endif
