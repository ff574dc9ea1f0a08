/* proc_text.h — values out of the text of /proc and cgroup files. */
#ifndef FARMEM_PROC_TEXT_H
#define FARMEM_PROC_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* The rest of the first line of text that starts with prefix, or NULL. */
const char *fm_line_after(const char *text, const char *prefix);

/* A "Name:  N kB" field of /proc/meminfo or /proc/PID/status text, in
 * bytes, by its name without the colon ("MemAvailable"): 0, -ENOENT
 * when absent, -EINVAL when it is not "N kB". */
int fm_meminfo_field(const char *text, const char *name, uint64_t *bytes);

/* Reads a whole small file (a /proc or cgroup file) into buf,
 * NUL-terminated, with open/read only: no allocation, so a swap daemon
 * may call it under pressure.  Returns the length or -errno; -EFBIG when
 * it does not fit. */
int fm_read_small_file(const char *path, char *buf, size_t len);

#endif
