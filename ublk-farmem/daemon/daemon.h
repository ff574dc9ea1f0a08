/* daemon.h — what a long-lived farmem-blk device daemon needs around its
 * frontend: swap safety, detaching with a readiness pipe, and the small
 * files under the run directory that `list`, `status`, `del` and
 * `recover` find it by.
 */
#ifndef FARMEM_DAEMON_H
#define FARMEM_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frontend/frontend.h"

/* --- daemon.c: process set-up ------------------------------------- */

/* The daemon frees memory for the kernel, so it must never wait for
 * memory itself: lock everything (now and later), keep thread stacks
 * small so locking them is cheap, and never be the OOM killer's pick.
 * Also fm_set_io_flusher() (proc_util.h) on the calling thread, which
 * threads created afterwards inherit; frontends call it on their I/O
 * threads too.  Returns 0 or -errno with err set (mlockall failing is
 * fatal). */
int daemon_swap_safety(char *err, size_t errlen);
/* Threads created from now on get the daemon's small stack.  Called
 * first thing in main(): a thread that `add` starts before it forks the
 * keeper and the daemon (probing the servers) leaves its stack mapped in
 * glibc's cache, fork copies the mapping, and mlockall() then locks all
 * of it in both children; with glibc's 8 MiB default that was 8 MiB in
 * each of a 256 MiB guest's daemon and keeper. */
void daemon_small_thread_stacks(void);

/* SCHED_RR: real-time tasks may allocate below the min watermark, the
 * reserve a swap daemon needs; also for `recover`, which must start while
 * the device holds the swap path.  FARMEM_NO_RT=1 leaves the policy. */
void daemon_set_realtime(void);
/* Queue settings of a live device /sys/block/NAME: no writeback
 * throttling. */
void daemon_tune_queue(const char *name);

/* Fork a detached daemon (fork, setsid, fork).  In the caller (the CLI)
 * returns the daemon's readiness pipe read end (> 0) after the
 * intermediate child was reaped; in the daemon returns 0 with *ready_fd
 * the write end.  -errno on failure. */
int daemon_detach(int *ready_fd);
/* Daemon side: report success ("/dev/ublkb0") or an error message to the
 * waiting CLI and close the pipe.  Safe with fd < 0 (foreground). */
void daemon_ready(int *ready_fd, int ok, const char *msg);
/* CLI side: wait for the daemon's word.  Returns 0 with msg = the device
 * path, or -1 with msg = the daemon's error. */
int daemon_wait_ready(int fd, char *msg, size_t len);
/* Daemon side, once ready: stdin/stdout to /dev/null, stderr to logfile
 * (so nothing holds the caller's terminal or pipe open). */
void daemon_redirect_output(const char *logfile);

/* --- daemon_state.c: files in the run directory --------------------- */

/* FARMEM_RUN_DIR or /run/farmem. */
const char *run_dir(void);
/* mkdir -p the run directory (0700). */
int run_dir_create(void);
/* "<run dir>/<name><suffix>" into buf; -ENAMETOOLONG if it does not fit. */
int run_path(char *buf, size_t len, const char *name, const char *suffix);

/* Device names are a frontend's prefix and id (frontend.h): "ublkb3"
 * for ublk id 3, "nbd0" for /dev/nbd0.  Accepts "3" (ublk, add's
 * default), "ublkb3", "/dev/ublkb3", "nbd0", "/dev/nbd0".  0 or -EINVAL. */
int dev_name_parse(const char *arg, char *name, size_t len);
/* 1 when the device outlives its daemon, so `recover` can attach a new
 * one (its frontend has recover: ublk, not nbd); else 0. */
int dev_name_recoverable(const char *name);

int pidfile_write(const char *name, pid_t pid);
/* 0 and *pid, or -ENOENT. */
int pidfile_read(const char *name, pid_t *pid);
/* The same for the keeper (<name>.keeper). */
int keeperfile_write(const char *name, pid_t pid);
int keeperfile_read(const char *name, pid_t *pid);
/* 1 when pid is a live process (a zombie is not). */
int pid_alive(pid_t pid);

/* Remove every run-dir file of a device (conf, pid, keeper, sock, log). */
void dev_files_remove(const char *name);
/* Names of the devices that have a .conf in the run directory, sorted.
 * Returns the count (<= max) or -errno. */
int dev_list_names(char names[][32], int max);

/* The device's record (<name>.conf): its settings as a [device] config
 * file, from which `recover`, `status` and `del` rebuild its config. */
int dev_conf_write(const char *name, const char *text);

/* --- daemon_run.c: the device daemon's life ------------------------- */
struct store_config;
/* What the CLI hands the device daemon (all of it outlives the call). */
struct devd_config {
	const struct store_config *store;      /* for store_open() */
	const struct blk_frontend_ops *frontend;
	struct blk_frontend_opts fe;           /* fe.dev_id >= 0: attach to that
						* device, whose daemon died
						* (recover); -1: a new device */
	const char *metrics;                   /* [device] metrics HOST:PORT; "" off */
	const char *secret_file;               /* key or secret file: kept resident for recover */
	const char *record;                    /* dev_conf_write() text; NULL:
						* keep the record there (recover) */
};
/* Open the store, bring the device up, tell the CLI through ready_fd
 * (-1 in the foreground), serve until the device is stopped.  Returns
 * the process exit status. */
int daemon_run_device(const struct devd_config *cfg, int ready_fd);

/* --- daemon_keeper.c: what must stay resident across a daemon crash -- */
struct keeper {
	pid_t pid;
	int wfd;
};
/* Fork the keeper (call while the process is still small).  0 or -errno. */
int keeper_start(struct keeper *k);
/* Have it lock one more file that `recover` needs (the page map, the
 * device record, the secret); NULL is ignored. */
void keeper_lock_file_of(struct keeper *k, const char *path);
/* The device is live: should this daemon die without `del`, the keeper
 * runs `farmem-blk recover NAME` at once (ublk only; not with
 * FARMEM_NO_AUTO_RECOVER set).  It also locks a reserve for that
 * recovery: at once after `add`; after a recovery (recovered != 0) only
 * once memory is plentiful again (keeper_reserve_fits). */
void keeper_device_live(struct keeper *k, const char *name, int recovered);
void keeper_stop_pid(pid_t pid);
/* Ask a keeper to free the memory it holds for a recovering daemon. */
void keeper_release_reserve(pid_t pid);
/* What the keeper takes beyond its reserve the moment its daemon dies:
 * the rest of what a new daemon needs (daemon_anon, the dead one's
 * RssAnon, plus an eighth) beyond the held reserve, at most half of
 * mem_free, in whole MiB. */
size_t keeper_cushion_size(size_t daemon_anon, size_t held, uint64_t mem_free);
/* Whether a keeper after a recovery may lock a reserve of len bytes,
 * given the text of /proc/meminfo: not while memory is short
 * (daemon_keeper.c says why). */
int keeper_reserve_fits(const char *meminfo, size_t len);

#endif
