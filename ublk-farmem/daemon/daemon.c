/* daemon.c — swap safety and detaching for the device daemon. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "clock.h"
#include "daemon.h"
#include "log.h"
#include "proc_util.h"

/* Every thread's stack gets locked and populated by MCL_FUTURE; glibc's
 * 8 MiB default would pin 8 MiB per thread of a swap daemon.  The store's
 * I/O runs on fibers with 256 KiB stacks (common/fiber.c); no thread runs
 * deeper code than they do, so threads get the same.  At 1 MiB the ten
 * threads of a 256 MiB guest's daemon held 9 MiB of its 70 MiB. */
#if defined(__SANITIZE_ADDRESS__)
#define DAEMON_THREAD_STACK (1024u << 10)   /* ASan's redzones grow frames */
#else
#define DAEMON_THREAD_STACK (256u << 10)
#endif
/* Low: above every normal task, below the kernel's own RT threads. */
#define DAEMON_RT_PRIO 1
/* How long add and recover wait for the daemon to say it is ready. */
#define DAEMON_READY_WAIT_MS 300000

static int write_oom_score_adj(void)
{
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, "-1000", 5);
	close(fd);
	return n == 5 ? 0 : -EIO;
}

/* A user-space swap daemon cannot mark its sockets __GFP_MEMALLOC as
 * the kernel's nbd does, and with PF_MEMALLOC_NOIO its allocations
 * (socket buffers in sendmsg, under the socket lock) cannot swap out to
 * make room: near the min watermark they would loop while the kernel
 * waits for this very daemon.  Real-time tasks may allocate below the
 * min watermark (ALLOC_MIN_RESERVE), which is the reserve this daemon
 * needs; its threads block on the network and never spin.  Threads
 * created later inherit the policy. */
void daemon_set_realtime(void)
{
	struct sched_param sp = { .sched_priority = DAEMON_RT_PRIO };

	if (getenv("FARMEM_NO_RT"))
		return;
	if (sched_setscheduler(0, SCHED_RR, &sp) < 0)
		log_warn("SCHED_RR: %s; under memory pressure the daemon competes "
			 "for the last free pages like any task", strerror(errno));
}

void daemon_small_thread_stacks(void)
{
	pthread_attr_t attr;

	if (pthread_attr_init(&attr) == 0) {
		pthread_attr_setstacksize(&attr, DAEMON_THREAD_STACK);
		pthread_setattr_default_np(&attr);
		pthread_attr_destroy(&attr);
	}
}

int daemon_swap_safety(char *err, size_t errlen)
{
	int ret;

	daemon_small_thread_stacks();
	if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0) {
		ret = -errno;
		snprintf(err, errlen, "mlockall: %s (a swap daemon must not be "
			 "swapped out itself; needs root or RLIMIT_MEMLOCK)",
			 strerror(-ret));
		return ret;
	}
	/* Before any thread exists: PF_MEMALLOC_NOIO and PF_LOCAL_THROTTLE
	 * are task flags copied at clone(), so every thread of the store and
	 * its transports (which send and receive for the swap path) inherits
	 * them, not only the queue threads this program starts itself. */
	fm_set_io_flusher();
	daemon_set_realtime();
	ret = write_oom_score_adj();
	if (ret < 0)
		log_warn("oom_score_adj -1000: %s; the OOM killer may pick this "
			 "daemon", strerror(-ret));
	return 0;
}

int daemon_detach(int *ready_fd)
{
	int p[2];
	pid_t pid = fm_fork_with_pipe(p);

	if (pid < 0)
		return (int)pid;
	if (pid > 0) {
		/* The CLI: reap the intermediate child, keep the read end. */
		close(p[1]);
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return p[0];
	}
	/* Intermediate child: new session, then fork again so the daemon
	 * is not a session leader and can never get a controlling tty. */
	close(p[0]);
	if (setsid() < 0)
		_exit(1);
	pid = fork();
	if (pid < 0)
		_exit(1);
	if (pid > 0)
		_exit(0);
	umask(022);
	if (chdir("/") < 0)
		_exit(1);
	*ready_fd = p[1];
	return 0;
}

void daemon_ready(int *ready_fd, int ok, const char *msg)
{
	char line[1024];
	int n;

	if (*ready_fd < 0) {
		/* Foreground: the user reads the path on stdout. */
		if (ok) {
			printf("%s\n", msg);
			fflush(stdout);
		}
		return;
	}
	n = snprintf(line, sizeof(line), "%s %s\n", ok ? "OK" : "ERR", msg);
	if (n > (int)sizeof(line) - 1)
		n = (int)sizeof(line) - 1;
	if (write(*ready_fd, line, (size_t)n) < 0)
		log_warn("readiness pipe: %s", strerror(errno));
	close(*ready_fd);
	*ready_fd = -1;
}

int daemon_wait_ready(int fd, char *msg, size_t len)
{
	char buf[1024];
	size_t got = 0;
	ssize_t n;

	/* The daemon either writes one line or exits (EOF).  Its start-up is
	 * bounded by connect timeouts and START_USER_RECOVERY's retries, but
	 * a daemon starved of memory waits on neither: the caller still gets
	 * an answer after DAEMON_READY_WAIT_MS (the daemon goes on). */
	uint64_t deadline = fm_mono_after_ms(DAEMON_READY_WAIT_MS);

	while (got < sizeof(buf) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		uint64_t now = fm_mono_ns();

		if (now >= deadline) {
			close(fd);
			snprintf(msg, len, "the device daemon was not ready after %d s; "
				 "it goes on trying (see its log)", DAEMON_READY_WAIT_MS / 1000);
			return -1;
		}
		if (poll(&p, 1, (int)((deadline - now) / 1000000) + 1) == 0)
			continue;
		n = read(fd, buf + got, sizeof(buf) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(buf, '\n', got))
			break;
	}
	close(fd);
	buf[got] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (!strncmp(buf, "OK ", 3)) {
		snprintf(msg, len, "%s", buf + 3);
		return 0;
	}
	if (!strncmp(buf, "ERR ", 4))
		snprintf(msg, len, "%s", buf + 4);
	else
		snprintf(msg, len, "the device daemon exited during start-up");
	return -1;
}

void daemon_redirect_output(const char *logfile)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	int log = logfile ? open(logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;

	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(log >= 0 ? log : null, STDERR_FILENO);
		close(null);
	}
	if (log >= 0)
		close(log);
}

void daemon_tune_queue(const char *name)
{
	char path[128];
	int fd;

	/* Writeback throttling would make every reclaiming task sleep on
	 * this device's latency, and on nothing at all while the daemon is
	 * being recovered; the store has its own limits (tags, workers). */
	snprintf(path, sizeof(path), "/sys/block/%s/queue/wbt_lat_usec", name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, "0", 1) < 0)
		log_debug("%s: %s", path, strerror(errno));
	close(fd);
}
