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
 *
 * It also notices the crash itself (its pipe from the daemon ends) and
 * runs `farmem-blk recover` at once, like a service manager's restart,
 * while the memory the dead daemon held is still free: under heavy swap
 * the rest of the system takes it within seconds, and a new daemon
 * started later may find none left to start with.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "proc_text.h"
#include "proc_util.h"

/* Memory held for the next daemon: a crash frees what the daemon held,
 * but under swap the rest of the system takes it long before a new
 * daemon has connected; everything else then waits on the stalled
 * device while the new daemon needs pages to send its first replies.
 * The keeper gives this back when the new daemon asks (SIGUSR1).  It
 * holds 16 MiB all the time and takes the rest of what a new daemon
 * needs at the crash (keeper_cushion_take): with 32 MiB standing, a
 * 256 MiB guest under zswap was OOM-killed in 2 runs of 5. */
#define KEEPER_RESERVE_DEFAULT (16u << 20)
#define KEEPER_RESERVE_RETRY_MS 1000

static void *reserve;
static size_t reserve_len;
static int reserve_wanted;   /* the device is live: hold a reserve */
static int reserve_deferred; /* ...but only once memory is plentiful */
static volatile sig_atomic_t reserve_given;   /* SIGUSR1 came */

static size_t reserve_hint;  /* the daemon's own anonymous memory */
static void *cushion;        /* taken at the crash, given with the reserve */
static size_t cushion_len;

/* len bytes of memory, present and locked now; NULL if not had. */
static void *locked_region(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE | MAP_LOCKED, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static size_t keeper_reserve_size(void)
{
	const char *env = getenv("FARMEM_RECOVERY_RESERVE_MB");

	return env ? (size_t)strtoul(env, NULL, 10) << 20 : KEEPER_RESERVE_DEFAULT;
}

/* How much more than the reserve to take at a crash: what a new daemon
 * needs (the dead one's RssAnon, plus an eighth) beyond the reserve,
 * but never more than half of what is free, so that this never waits
 * in reclaim before `recover` even starts. */
size_t keeper_cushion_size(size_t daemon_anon, size_t held, uint64_t mem_free)
{
	size_t want = daemon_anon + daemon_anon / 8;

	if (want <= held)
		return 0;
	want -= held;
	if ((uint64_t)want > mem_free / 2)
		want = (size_t)(mem_free / 2);
	return want & ~(size_t)((1u << 20) - 1);
}

/* The daemon died, and what it held is free this instant (exit_mm()
 * comes before its files, our pipe, close).  A 2-queue daemon holds
 * 48 MiB of its own, far more than the standing reserve, and the
 * workload takes the rest back within moments: a recovery then hung in
 * reclaim with the reserve spent.  Holding the whole footprint all the
 * time cost too much (a 256 MiB guest ran out of memory under zswap);
 * taking the difference now, as a real-time task, costs nothing while
 * the daemon runs. */
static void keeper_cushion_take(void)
{
	char meminfo[4096];
	uint64_t mem_free;
	size_t len;

	if (getenv("FARMEM_RECOVERY_RESERVE_MB") ||
	    fm_read_small_file("/proc/meminfo", meminfo, sizeof(meminfo)) < 0 ||
	    fm_meminfo_field(meminfo, "MemFree", &mem_free) < 0)
		return;
	len = keeper_cushion_size(reserve_hint, reserve ? reserve_len : 0, mem_free);
	if (len && (cushion = locked_region(len)))
		cushion_len = len;
}

/* Whether a reserve of len bytes may be taken now, after a recovery.
 * Right after one the host is at its tightest: swap-outs held while no
 * daemon ran are all due at once, and the new daemon's sends need kernel
 * memory to carry them.  Taking the reserve then (it is locked) pushed
 * the new daemon's socket buffers into reclaim that could only wait on
 * the daemon itself: the guest hung.  So that reserve waits until memory
 * is plentiful again: twice its size free, four times available.  (After
 * `add` it is taken at once: the device is live and nothing is held; a
 * keeper that waited there never got one in a small guest under swap,
 * and the first crash's recovery then hung for want of it.) */
int keeper_reserve_fits(const char *meminfo, size_t len)
{
	uint64_t mem_free, available;

	if (fm_meminfo_field(meminfo, "MemFree", &mem_free) < 0 ||
	    fm_meminfo_field(meminfo, "MemAvailable", &available) < 0)
		return 0;
	return mem_free >= 2 * (uint64_t)len && available >= 4 * (uint64_t)len;
}

/* Frees the reserve once a recovering daemon asked for it (SIGUSR1). */
static void keeper_reserve_give_if_asked(void)
{
	if (!reserve_given)
		return;
	reserve_wanted = 0;
	if (reserve)
		munmap(reserve, reserve_len);
	reserve = NULL;
	if (cushion)
		munmap(cushion, cushion_len);
	cushion = NULL;
}

/* Takes the reserve if the device wants one, it has none and there is
 * room; 1 while one is still wanted (look again later), else 0. */
static int keeper_reserve_take(void)
{
	char meminfo[4096];
	size_t len = keeper_reserve_size();

	keeper_reserve_give_if_asked();
	if (!reserve_wanted || !len || reserve)
		return 0;
	if (reserve_deferred &&
	    (fm_read_small_file("/proc/meminfo", meminfo, sizeof(meminfo)) < 0 ||
	     !keeper_reserve_fits(meminfo, len)))
		return 1;
	reserve = locked_region(len);
	if (!reserve)
		return 1;
	reserve_len = len;
	return 0;
}

/* SIGUSR1 from a recovering daemon: the reserve is its now, for good
 * (this keeper is stopped once that daemon is live).  The main loop
 * frees it: SIGUSR1 is blocked except inside its ppoll(). */
static void keeper_reserve_give(int sig)
{
	(void)sig;
	reserve_given = 1;
}

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

/* The daemon died (its end of the pipe closed without `del` stopping
 * us first): attach a new daemon right away, while the memory the dead
 * one held is still free.  `recover` run by hand meanwhile waits on the
 * device lock and then finds the device live.  While it runs, the new
 * daemon asks for the reserve (SIGUSR1): the wait lets that signal in
 * and frees the reserve at once. */
static void keeper_recover(const char *exe, const char *name, const sigset_t *unblocked,
			   const sigset_t *orig)
{
	const struct timespec tick = { .tv_nsec = 100 * 1000 * 1000 };
	char log[PATH_MAX];
	pid_t pid, r;
	int fd;

	if (getenv("FARMEM_NO_AUTO_RECOVER"))
		return;
	pid = fork();
	if (pid == 0) {
		/* recover and its daemon get the signals we were given. */
		sigprocmask(SIG_SETMASK, orig, NULL);
		if (run_path(log, sizeof(log), name, ".log") == 0) {
			fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
			if (fd >= 0) {
				dup2(fd, STDOUT_FILENO);
				dup2(fd, STDERR_FILENO);
			}
		}
		execl(exe, "farmem-blk", "recover", name, (char *)NULL);
		_exit(127);
	}
	while (pid > 0) {
		keeper_reserve_give_if_asked();
		r = waitpid(pid, NULL, WNOHANG);
		if (r == pid || (r < 0 && errno != EINTR))
			break;
		ppoll(NULL, 0, &tick, unblocked);
	}
}

/* "NAME <dev>" (after add) or "RECOVERED <dev>" (after recover): the
 * device is live.  Sets name; 0 for NAME, 1 for RECOVERED, -EINVAL for
 * any other line. */
static int keeper_name_line(const char *line, char *name, size_t len)
{
	const char *dev = NULL;

	if (!strncmp(line, "NAME ", 5))
		dev = line + 5;
	else if (!strncmp(line, "RECOVERED ", 10))
		dev = line + 10;
	if (!dev || strlen(dev) >= len)
		return -EINVAL;
	memcpy(name, dev, strlen(dev) + 1);
	return dev != line + 5;
}

/* The keeper's life: lock, then follow the daemon's messages on the
 * pipe ("LOCK <file>", "RESERVE <bytes>", "NAME <device>", "RECOVERED
 * <device>"); EOF means the daemon is gone. */
static void keeper_main(int rfd)
{
	char buf[2 * PATH_MAX], name[64] = "", exe[PATH_MAX] = "";
	const struct timespec retry = { .tv_sec = KEEPER_RESERVE_RETRY_MS / 1000 };
	sigset_t usr1, unblocked, orig;
	int live;
	size_t got = 0;
	ssize_t n;
	int fd;

	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGUSR1, keeper_reserve_give);
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, &orig);
	unblocked = orig;
	sigdelset(&unblocked, SIGUSR1);
	/* Like the daemon (daemon_swap_safety), and before anything else:
	 * the fork and exec of `recover` after a crash happen while the
	 * device holds the swap path, and must neither wait on swap
	 * writeback nor lose the last free pages to the workload. */
	fm_set_io_flusher();
	daemon_set_realtime();
	prctl(PR_SET_NAME, "farmem-keeper", 0, 0, 0);
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[n > 0 ? n : 0] = '\0';
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
		if (i != rfd && i != fd)
			close(i);
	if (mlockall(MCL_CURRENT) < 0)
		log_warn("keeper: mlockall: %s", strerror(errno));
	keeper_lock_program();
	/* Read by ld.so at every exec of recover. */
	keeper_lock_file("/etc/ld.so.cache");
	for (;;) {
		struct pollfd pfd = { .fd = rfd, .events = POLLIN };
		char *nl;

		/* While a reserve is wanted but memory is short, look again
		 * each second; otherwise sleep until the daemon speaks. */
		if (ppoll(&pfd, 1, keeper_reserve_take() ? &retry : NULL, &unblocked) <= 0)
			continue;
		n = read(rfd, buf + got, sizeof(buf) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = '\0';
		while ((nl = strchr(buf, '\n'))) {
			*nl = '\0';
			if (!strncmp(buf, "LOCK ", 5))
				keeper_lock_file(buf + 5);
			else if (!strncmp(buf, "RESERVE ", 8))
				reserve_hint = (size_t)strtoull(buf + 8, NULL, 10);
			else if ((live = keeper_name_line(buf, name, sizeof(name))) >= 0) {
				reserve_wanted = 1;   /* only once the device is live */
				reserve_deferred = live;
			}
			got -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, got + 1);
		}
		if (got == sizeof(buf) - 1)
			got = 0; /* a line that long is not ours */
	}
	close(rfd);
	/* Only a device that was live is recovered: a daemon that died
	 * starting up reported its error and must not be restarted in a
	 * loop. */
	reserve_wanted = 0;   /* keep what we hold; take nothing new now */
	if (name[0])
		keeper_cushion_take();
	if (name[0] && exe[0] && dev_name_recoverable(name))
		keeper_recover(exe, name, &unblocked, &orig);
	_exit(0);
}

int keeper_start(struct keeper *k)
{
	int p[2];
	pid_t pid;

	k->pid = -1;
	k->wfd = -1;
	pid = fm_fork_with_pipe(p);
	if (pid < 0)
		return (int)pid;
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

static void keeper_send(struct keeper *k, const char *what, const char *value)
{
	char line[PATH_MAX + 16];
	int n;

	if (k->wfd < 0 || !value)
		return;
	n = snprintf(line, sizeof(line), "%s %s\n", what, value);
	if (n > 0 && n < (int)sizeof(line) && write(k->wfd, line, (size_t)n) != n)
		log_warn("keeper: %s", strerror(errno));
}

void keeper_lock_file_of(struct keeper *k, const char *path)
{
	keeper_send(k, "LOCK", path);
}

/* The write end stays open for the daemon's life: its closing is how the
 * keeper learns of a crash. */
/* This process's anonymous memory in bytes; 0 if unknown. */
static uint64_t own_anon_bytes(void)
{
	char status[4096];
	uint64_t anon;

	if (fm_read_small_file("/proc/self/status", status, sizeof(status)) < 0 ||
	    fm_meminfo_field(status, "RssAnon", &anon) < 0)
		return 0;
	return anon;
}

void keeper_device_live(struct keeper *k, const char *name, int recovered)
{
	char bytes[32];

	snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)own_anon_bytes());
	keeper_send(k, "RESERVE", bytes);
	keeper_send(k, recovered ? "RECOVERED" : "NAME", name);
}

void keeper_release_reserve(pid_t pid)
{
	if (pid > 0)
		kill(pid, SIGUSR1);
}

void keeper_stop_pid(pid_t pid)
{
	if (pid > 0)
		kill(pid, SIGTERM);
}
