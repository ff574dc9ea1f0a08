/* daemon_state.c — a device's files in the run directory:
 *   <name>.conf  its settings ([device] section, read back by `recover`)
 *   <name>.pid   the daemon's pid
 *   <name>.sock  the daemon's control socket (ctl.h)
 *   <name>.log   the daemon's log after it detached
 * The page map itself lives in the state dir (<uuid>.state), owned by
 * the store. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "frontend/frontend.h"
#include "log.h"
#include "parse.h"

const char *run_dir(void)
{
	const char *d = getenv("FARMEM_RUN_DIR");

	return d && d[0] ? d : "/run/farmem";
}

int run_dir_create(void)
{
	char path[PATH_MAX];
	const char *d = run_dir();

	snprintf(path, sizeof(path), "%s", d);
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int run_path(char *buf, size_t len, const char *name, const char *suffix)
{
	int n = snprintf(buf, len, "%s/%s%s", run_dir(), name, suffix);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int dev_name_parse(const char *arg, char *name, size_t len)
{
	const struct blk_frontend_ops *fe;
	uint64_t v;
	int id;

	if (!strncmp(arg, "/dev/", 5))
		arg += 5;
	if (parse_u64(arg, 0, 1u << 20, &v) == 0) {
		fe = blk_frontend_get(BLK_FRONTEND_UBLK);
		id = (int)v;
	} else {
		fe = blk_frontend_of_dev(arg, &id);
	}
	if (!fe)
		return -EINVAL;
	blk_frontend_dev_name(fe, id, name, len);
	return 0;
}

int dev_name_recoverable(const char *name)
{
	const struct blk_frontend_ops *fe = blk_frontend_of_dev(name, NULL);

	return fe && fe->recover;
}

/* Write to a temporary file and rename, so readers never see half a file. */
static int write_atomic(const char *path, const char *text)
{
	char tmp[PATH_MAX + 8];
	size_t len = strlen(text);
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, text, len) != (ssize_t)len)
		ret = -EIO;
	if (close(fd) < 0 && !ret)
		ret = -errno;
	if (!ret && rename(tmp, path) < 0)
		ret = -errno;
	if (ret)
		unlink(tmp);
	return ret;
}

static int pid_write(const char *name, const char *suffix, pid_t pid)
{
	char path[PATH_MAX], text[32];
	int ret = run_path(path, sizeof(path), name, suffix);

	if (ret < 0)
		return ret;
	snprintf(text, sizeof(text), "%d\n", (int)pid);
	return write_atomic(path, text);
}

static int pid_read(const char *name, const char *suffix, pid_t *pid)
{
	char path[PATH_MAX], text[32] = "";
	uint64_t v;
	FILE *f;
	int ret = run_path(path, sizeof(path), name, suffix);

	if (ret < 0)
		return ret;
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(text, sizeof(text), f))
		text[0] = '\0';
	fclose(f);
	text[strcspn(text, "\n")] = '\0';
	if (parse_u64(text, 1, 1u << 30, &v) < 0)
		return -EINVAL;
	*pid = (pid_t)v;
	return 0;
}

int pidfile_write(const char *name, pid_t pid)
{
	return pid_write(name, ".pid", pid);
}

int pidfile_read(const char *name, pid_t *pid)
{
	return pid_read(name, ".pid", pid);
}

int keeperfile_write(const char *name, pid_t pid)
{
	return pid_write(name, ".keeper", pid);
}

int keeperfile_read(const char *name, pid_t *pid)
{
	return pid_read(name, ".keeper", pid);
}

/* The kernel's PF_EXITING (include/linux/sched.h): the task is in
 * do_exit() and will never run user code again. */
#define TASK_PF_EXITING 0x4u

/* 1 when /proc/PID/stat shows a process on its way out: a zombie, or one
 * whose exit has begun (its files, the keeper's pipe among them, close
 * before it becomes a zombie).  The command name may hold a ')': parse
 * after the last one. */
static int pid_exiting(pid_t pid)
{
	char path[64], buf[512], state = 0;
	const char *paren;
	unsigned flags = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	paren = strrchr(buf, ')');
	if (!paren || sscanf(paren + 1, " %c %*d %*d %*d %*d %*d %u", &state, &flags) != 2)
		return 0;
	return state == 'Z' || state == 'X' || (flags & TASK_PF_EXITING);
}

/* A killed daemon stays a zombie until its parent reaps it, and kill(0)
 * still succeeds on it.  Under heavy swap that parent (often init) may
 * itself wait on the very device the dead daemon served: treating the
 * zombie as alive made `recover` (and the keeper's own recover) say
 * "nothing to recover" while every swap I/O waited for good. */
int pid_alive(pid_t pid)
{
	if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
		return 0;
	return !pid_exiting(pid);
}

void dev_files_remove(const char *name)
{
	static const char *const suffixes[] = { ".conf", ".pid", ".keeper", ".sock", ".log", ".lock" };
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
		if (run_path(path, sizeof(path), name, suffixes[i]) == 0)
			unlink(path);
}

static int name_cmp(const void *a, const void *b)
{
	const char *x = a, *y = b;
	size_t lx = strcspn(x, "0123456789"), ly = strcspn(y, "0123456789");
	int c = strncmp(x, y, lx < ly ? lx : ly);

	if (c || lx != ly)
		return c ? c : (int)lx - (int)ly;
	return atoi(x + lx) - atoi(y + ly);
}

int dev_list_names(char names[][32], int max)
{
	DIR *d = opendir(run_dir());
	struct dirent *e;
	int n = 0;

	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)) && n < max) {
		size_t len = strlen(e->d_name);
		char name[32];

		if (len < 6 || len - 5 >= sizeof(name) || strcmp(e->d_name + len - 5, ".conf"))
			continue;
		memcpy(name, e->d_name, len - 5);
		name[len - 5] = '\0';
		if (dev_name_parse(name, names[n], sizeof(names[n])) == 0 &&
		    !strcmp(name, names[n]))
			n++;
	}
	closedir(d);
	qsort(names, (size_t)n, sizeof(names[0]), name_cmp);
	return n;
}

int dev_conf_write(const char *name, const char *text)
{
	char path[PATH_MAX];
	int ret = run_path(path, sizeof(path), name, ".conf");

	return ret < 0 ? ret : write_atomic(path, text);
}
