/* proc_text.h — values out of the text of /proc and cgroup files. */
#ifndef FARMEM_PROC_TEXT_H
#define FARMEM_PROC_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* The rest of the first line of text that starts with prefix, or NULL. */
const char *fm_line_after(const char *text, const char *prefix);

/* A field of /proc/meminfo's text in bytes, by its name without the
 * colon ("MemAvailable"): 0, -ENOENT when absent, -EINVAL when it is not
 * "N kB". */
int fm_meminfo_field(const char *text, const char *name, uint64_t *bytes);

/* Reads /proc/meminfo into buf (NUL-terminated): 0 or -errno.  Procfs:
 * it never waits on I/O, so a swap daemon may call it under pressure. */
int fm_meminfo_read(char *buf, size_t len);

#endif
