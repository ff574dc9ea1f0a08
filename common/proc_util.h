/* proc_util.h — small process helpers shared by the daemons. */
#ifndef FARMEM_PROC_UTIL_H
#define FARMEM_PROC_UTIL_H

#include <sys/types.h>

/* pipe2(p, O_CLOEXEC), flush stdio (so the child does not print the
 * parent's buffered output again), then fork().  Returns the pid as
 * fork() does (0 in the child, > 0 in the parent) with both ends of p
 * open in each, or -errno with neither end open. */
pid_t fm_fork_with_pipe(int p[2]);

/* PR_SET_IO_FLUSHER on the calling thread: it is one that reclaim
 * depends on (a swap device's I/O thread), so its own allocations never
 * recurse into I/O (PF_MEMALLOC_NOIO) and dirty throttling leaves it
 * alone.  Threads created afterwards inherit it.  Logs when the kernel
 * is older than 5.6. */
void fm_set_io_flusher(void);

#endif
