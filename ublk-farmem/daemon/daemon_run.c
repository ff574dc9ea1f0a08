/* daemon_run.c — the device daemon: store, frontend, control socket.
 *
 * Stopping: `del` asks over the control socket; the daemon stops the
 * device (its queue threads then end), frees the remote memory, deletes
 * the kernel device and answers.  Being killed (crash, SIGKILL, SIGTERM)
 * leaves the ublk device quiesced with its I/O held, for `recover`. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "daemon.h"
#include "frontend/frontend.h"
#include "log.h"
#include "store/store.h"
#include "store/store_metrics.h"

/* The log ring: room for a few thousand lines while the writer waits. */
#define DAEMON_LOG_RING    (256u << 10)
/* How long an exiting daemon waits for its last lines to be written. */
#define DAEMON_LOG_STOP_MS 2000

struct devd {
	const struct devd_config *cfg;
	struct store *store;
	const struct blk_frontend_ops *fe;
	void *dev;               /* the frontend's device, once started */
	struct keeper keeper;
	struct store_metrics sm;             /* [device] metrics */
	struct metrics_server *metrics;      /* NULL: off */
	char name[32];
	pthread_mutex_t lock;
	int del_fd;              /* the `del` client waiting for its answer */
};

static int ctl_handle(void *arg, const char *cmd, FILE *f, int fd)
{
	struct devd *d = arg;
	struct store_stats st;
	int ret;

	if (!strcmp(cmd, "ping")) {
		fprintf(f, "ok %s %d\n", d->name, (int)getpid());
		return 0;
	}
	if (!strcmp(cmd, "stats")) {
		store_get_stats(d->store, &st);
		fprintf(f, "ok\n");
		ctl_stats_write(f, &st);
		return 0;
	}
	if (!strcmp(cmd, "del")) {
		pthread_mutex_lock(&d->lock);
		if (d->del_fd >= 0) {
			pthread_mutex_unlock(&d->lock);
			fprintf(f, "err already being deleted\n");
			return 0;
		}
		d->del_fd = fd;
		pthread_mutex_unlock(&d->lock);
		ret = d->fe->stop(d->dev);
		if (ret < 0) {
			pthread_mutex_lock(&d->lock);
			d->del_fd = -1;
			pthread_mutex_unlock(&d->lock);
			fprintf(f, "err stopping %s: %s\n", d->name, strerror(-ret));
			return 0;
		}
		return 1; /* answered by daemon_run_device() once done */
	}
	fprintf(f, "err unknown command '%s'\n", cmd);
	return 0;
}

static int frontend_start(struct devd *d, char *err, size_t errlen)
{
	const struct blk_frontend_ops *fe = d->fe;
	const struct blk_frontend_opts *o = &d->cfg->fe;
	int ret;

	if (o->dev_id < 0)
		ret = fe->start(o, d->store, &d->dev, err, errlen);
	else if (fe->recover)
		ret = fe->recover(o, d->store, &d->dev, err, errlen);
	else {
		snprintf(err, errlen, "%s devices cannot be recovered", fe->name);
		ret = -EOPNOTSUPP;
	}
	if (ret == 0)
		blk_frontend_dev_name(fe, fe->dev_id(d->dev), d->name, sizeof(d->name));
	return ret;
}

static int publish(struct devd *d, char *err, size_t errlen)
{
	int ret = 0;

	if (d->cfg->record)
		ret = dev_conf_write(d->name, d->cfg->record);
	if (ret == 0)
		ret = pidfile_write(d->name, getpid());
	if (ret == 0 && d->keeper.pid > 0) {
		pid_t old;

		/* After recover the previous keeper is redundant: the new one
		 * holds the same pages. */
		if (keeperfile_read(d->name, &old) == 0 && old != d->keeper.pid &&
		    pid_alive(old))
			keeper_stop_pid(old);
		ret = keeperfile_write(d->name, d->keeper.pid);
	}
	if (ret < 0)
		snprintf(err, errlen, "%s: writing %s/%s.*: %s", d->name, run_dir(),
			 d->name, strerror(-ret));
	return ret;
}

/* [device] metrics: the store's counters over HTTP while the store is
 * open.  A bad address fails `add`; a recovering daemon goes on without
 * metrics rather than leave the device's I/O held. */
static int metrics_start(struct devd *d, int recover, char *err, size_t errlen)
{
	const char *addr = d->cfg->metrics;
	int ret;

	if (!addr || !addr[0])
		return 0;
	d->sm = (struct store_metrics){ .st = d->store };
	ret = store_metrics_start(addr, &d->sm, &d->metrics);
	if (ret == 0 || recover) {
		if (ret < 0)
			log_warn("recover: no metrics on %s: %s", addr, strerror(-ret));
		return 0;
	}
	snprintf(err, errlen, "metrics on %s: %s", addr, strerror(-ret));
	return ret;
}

/* The device was stopped (by `del`, or by anyone through STOP_DEV):
 * release the remote memory if `del` asked, delete the device, answer. */
static int finish(struct devd *d)
{
	int del_fd, ret = 0;

	pthread_mutex_lock(&d->lock);
	del_fd = d->del_fd;
	pthread_mutex_unlock(&d->lock);
	if (del_fd >= 0) {
		ret = store_release(d->store);
		if (ret < 0)
			log_err("%s: releasing remote memory: %s", d->name, strerror(-ret));
	}
	d->fe->destroy(d->dev);
	metrics_server_stop(d->metrics);
	d->metrics = NULL;
	store_close(d->store);
	keeper_stop_pid(d->keeper.pid);
	dev_files_remove(d->name);
	log_info("%s: removed%s", d->name, del_fd >= 0 ? ", remote memory released" : "");
	if (del_fd >= 0) {
		char line[128];
		int n = ret < 0 ? snprintf(line, sizeof(line), "err releasing remote memory: %s\n",
					   strerror(-ret))
				: snprintf(line, sizeof(line), "ok\n");

		if (write(del_fd, line, (size_t)n) < 0)
			log_warn("%s: answering del: %s", d->name, strerror(errno));
		close(del_fd);
	}
	log_async_stop(DAEMON_LOG_STOP_MS);
	return ret < 0 ? 1 : 0;
}

int daemon_run_device(const struct devd_config *cfg, int ready_fd)
{
	struct devd d = { .cfg = cfg, .fe = cfg->frontend, .del_fd = -1 };
	int recover_id = cfg->fe.dev_id;
	struct ctl_server *ctl = NULL;
	char err[1024] = "", path[PATH_MAX];
	int detached = ready_fd >= 0;
	int ret;

	pthread_mutex_init(&d.lock, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* A recovering daemon first takes the memory the old keeper saved
	 * for it, before the rest of the system can. */
	if (recover_id >= 0) {
		pid_t old_keeper;

		blk_frontend_dev_name(d.fe, recover_id, d.name, sizeof(d.name));
		if (keeperfile_read(d.name, &old_keeper) == 0)
			keeper_release_reserve(old_keeper);
	}
	/* First, while this process is small (the keeper is a fork). */
	if (keeper_start(&d.keeper) < 0)
		log_warn("no keeper process: after a crash, recover may wait for "
			 "pages swapped out to this device");
	/* Before any thread starts (the log writer is the first): threads
	 * inherit the I/O-flusher flag, the real-time policy and the small
	 * default stack, and a thread started earlier would keep an 8 MiB
	 * stack that mlockall() then locks whole. */
	ret = daemon_swap_safety(err, sizeof(err));
	/* After the fork: from here no log line waits on where it is stored
	 * (log.h says why a swap device must not). */
	if (log_async_start(DAEMON_LOG_RING) < 0)
		log_warn("log lines are written directly: a full or swapped-out "
			 "log file can stall this device");
	if (ret == 0)
		ret = store_open(cfg->store, &d.store, err, sizeof(err));
	if (ret < 0)
		goto fail;
	ret = metrics_start(&d, recover_id >= 0, err, sizeof(err));
	if (ret < 0)
		goto fail;
	keeper_lock_file_of(&d.keeper, cfg->store->state_path);
	keeper_lock_file_of(&d.keeper, cfg->secret_file);
	ret = frontend_start(&d, err, sizeof(err));
	if (ret < 0)
		goto fail;
	daemon_tune_queue(d.name);
	ret = publish(&d, err, sizeof(err));
	if (ret == 0 && run_path(path, sizeof(path), d.name, ".sock") == 0 &&
	    ctl_server_start(path, ctl_handle, &d, &ctl) < 0)
		log_warn("%s: no control socket; status and del will not reach "
			 "this daemon", d.name);
	/* Let go of the caller's terminal or pipe before it returns, so a
	 * `$(farmem-blk add ...)` ends as soon as add does. */
	if (detached && getenv("FARMEM_LOG") && !strcmp(getenv("FARMEM_LOG"), "kmsg"))
		daemon_redirect_output("/dev/kmsg"); /* test guests: logs in dmesg */
	else if (detached && run_path(path, sizeof(path), d.name, ".log") == 0)
		daemon_redirect_output(path);
	/* Everything `recover` reads lives in tmpfs: keep it resident. */
	if (run_path(path, sizeof(path), d.name, ".conf") == 0)
		keeper_lock_file_of(&d.keeper, path);
	if (run_path(path, sizeof(path), d.name, ".pid") == 0)
		keeper_lock_file_of(&d.keeper, path);
	if (run_path(path, sizeof(path), d.name, ".keeper") == 0)
		keeper_lock_file_of(&d.keeper, path);
	keeper_device_live(&d.keeper, d.name, recover_id >= 0);
	snprintf(path, sizeof(path), "/dev/%s", d.name);
	daemon_ready(&ready_fd, 1, path);

	d.fe->wait(d.dev);
	ctl_server_stop(ctl);
	return finish(&d);

fail:
	metrics_server_stop(d.metrics);
	keeper_stop_pid(d.keeper.pid);
	/* No store_close(): queue threads may still hold kernel commands
	 * and the store; the caller exits, which returns both. */
	log_err("%s", err);
	log_async_stop(DAEMON_LOG_STOP_MS);
	daemon_ready(&ready_fd, 0, err);
	return 1;
}
