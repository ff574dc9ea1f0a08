/* config.h — table-driven configuration shared by both programs.
 *
 * A program describes its settings once as a table of cfg_key (name,
 * type, where in its struct); cfg_load() reads an iniparser file into the
 * struct, rejecting unknown sections and keys, and cfg_set() applies one
 * command-line override through the same checks.  Every error names the
 * origin (file or flag), the key and the value.
 */
#ifndef FARMEM_CONFIG_H
#define FARMEM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum cfg_type {
	CFG_STRING,     /* char[size] */
	CFG_SIZE,       /* uint64_t, K/M/G suffixes */
	CFG_U64,        /* uint64_t, decimal, within [min, max] */
	CFG_I64,        /* int64_t, decimal, within [min, max] */
	CFG_BOOL,       /* int */
	CFG_DURATION,   /* uint64_t milliseconds; "30s", "500ms", "5m" */
};

struct cfg_key {
	const char *name;    /* "section:key", lower case (iniparser's form) */
	enum cfg_type type;
	size_t offset;       /* offsetof(target struct, field) */
	size_t size;         /* CFG_STRING: buffer size */
	int64_t min, max;    /* CFG_U64/CFG_I64/CFG_SIZE/CFG_DURATION bounds (max 0 = none) */
	const char *help;    /* one line, for --help and docs */
};

#define CFG_ERR_LEN 512

/* Load FILE into target.  Returns 0, -ENOENT (file missing), -EINVAL
 * (bad key or value; err says which). */
int cfg_load(const char *file, const struct cfg_key *keys, size_t nkeys,
	     void *target, char *err, size_t errlen);

/* Set one key from text; origin names where it came from ("--size"). */
int cfg_set(const struct cfg_key *keys, size_t nkeys, void *target,
	    const char *name, const char *value, const char *origin,
	    char *err, size_t errlen);

/* Print "  section:key  help" lines for --help. */
void cfg_print_keys(const struct cfg_key *keys, size_t nkeys);

#endif
