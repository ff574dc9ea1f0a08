/* cli_text.h — text the subcommands write: error messages and JSON. */
#ifndef FARMEM_CLI_TEXT_H
#define FARMEM_CLI_TEXT_H

#include <stddef.h>
#include <stdio.h>

/* Format a message into err (for the caller to print) and return
 * -EINVAL: one line for "this flag or key has a bad value". */
int cli_fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* s as a JSON string: addresses, paths and names, with the two
 * characters that would break the syntax and control bytes escaped. */
void cli_json_str(FILE *f, const char *s);

#endif
