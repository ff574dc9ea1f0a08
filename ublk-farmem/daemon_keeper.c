/* daemon_keeper.c — a small process that outlives a crashed daemon and
 * keeps in memory what the next one needs.
 *
 * While the daemon runs, mlockall() keeps its program, libraries and the
 * mapped page map resident.  The moment it dies those pages become
 * ordinary reclaimable memory; where they live in tmpfs (an initramfs
 * root, /run) reclaim may swap them out to the very device whose I/O
 * the kernel now holds for `recover` — and `recover` then waits forever
 * to read its own program back.  The keeper, forked before the daemon
 * grows, locks the same program and libraries and, once the store made
 * it, the page map file, and sleeps until `del` (or a newer keeper after
 * `recover`) ends it.  It shares those pages with the daemon: its only
 * own memory is the little that existed at fork time.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"

static void keeper_lock_file(const char *path)
{
	struct stat st;
	void *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && st.st_size > 0) {
		p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
		if (p != MAP_FAILED && mlock(p, (size_t)st.st_size) < 0)
			log_warn("keeper: mlock %s: %s", path, strerror(errno));
	}
	close(fd);
}

/* Lock every file this program maps (itself, ld.so, its libraries) as
 * a whole: the pages behind a mapping's copy-on-write data are not
 * locked by mlockall(), yet the next exec of farmem-blk reads them. */
static void keeper_lock_program(void)
{
	char line[PATH_MAX + 128], last[PATH_MAX] = "";
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *path = strchr(line, '/');

		if (!path)
			continue;
		path[strcspn(path, "\n")] = '\0';
		if (!strcmp(path, last))
			continue;
		snprintf(last, sizeof(last), "%s", path);
		keeper_lock_file(path);
	}
	fclose(f);
}

/* The keeper's life: lock, wait for the state file's name, lock it,
 * then sleep until a signal ends it. */
static void keeper_main(int rfd)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_NAME, "farmem-keeper", 0, 0, 0);
	fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "-1000", 5) < 0)
			log_warn("keeper: oom_score_adj: %s", strerror(errno));
		close(fd);
	}
	/* Nothing of the caller's: a `$(farmem-blk add)` must see EOF. */
	fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	for (int i = 3; i < 1024; i++)
		if (i != rfd)
			close(i);
	if (mlockall(MCL_CURRENT) < 0)
		log_warn("keeper: mlockall: %s", strerror(errno));
	keeper_lock_program();
	n = read(rfd, path, sizeof(path) - 1);
	if (n > 0) {
		path[n] = '\0';
		keeper_lock_file(path);
	}
	/* EOF (the daemon died or is done telling) changes nothing. */
	close(rfd);
	for (;;)
		pause();
}

int keeper_start(struct keeper *k)
{
	int p[2];
	pid_t pid;

	k->pid = -1;
	k->wfd = -1;
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		close(p[1]);
		keeper_main(p[0]);
		_exit(0);
	}
	close(p[0]);
	k->pid = pid;
	k->wfd = p[1];
	return 0;
}

void keeper_lock_state(struct keeper *k, const char *state_path)
{
	if (k->wfd < 0)
		return;
	if (state_path && write(k->wfd, state_path, strlen(state_path)) < 0)
		log_warn("keeper: %s", strerror(errno));
	close(k->wfd);
	k->wfd = -1;
}

void keeper_stop_pid(pid_t pid)
{
	if (pid > 0)
		kill(pid, SIGTERM);
}
