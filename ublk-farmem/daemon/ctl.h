/* ctl.h — a device daemon's control socket (<run dir>/<name>.sock).
 *
 * A tiny line protocol on a unix stream socket, one request per
 * connection: the client sends one line ("stats", "ping", "del"), the
 * daemon answers with text lines and closes.  Replies start with "ok" or
 * "err <message>".  Only root can connect (the socket is 0600 in a 0700
 * directory).
 */
#ifndef FARMEM_CTL_H
#define FARMEM_CTL_H

#include <stddef.h>
#include <stdio.h>

struct store_stats;
struct ctl_server;

#define CTL_LINE_MAX 256

/* Handles one request line; writes the reply to f.  Returns 0 to have
 * the connection closed now, 1 to keep it: the handler then owns fd and
 * answers later (`del` answers once the device is gone). */
typedef int (*ctl_handler)(void *arg, const char *cmd, FILE *f, int fd);

/* Bind path (replacing a stale socket) and serve requests from a thread. */
int ctl_server_start(const char *path, ctl_handler h, void *arg,
		     struct ctl_server **out);
/* Stop the thread, close and unlink the socket. */
void ctl_server_stop(struct ctl_server *s);

/* Send cmd, read the whole reply (NUL-terminated) within timeout_ms.
 * Returns the reply length, -ECONNREFUSED/-ENOENT when no daemon
 * listens, -ETIMEDOUT, or another -errno. */
int ctl_request(const char *path, const char *cmd, char *reply, size_t len,
		int timeout_ms);

/* --- ctl_stats.c: store_stats as "key value" lines and back --------- */
void ctl_stats_write(FILE *f, const struct store_stats *st);
/* Parses the lines ctl_stats_write wrote (unknown keys ignored, so old
 * and new versions talk).  0 or -EINVAL. */
int ctl_stats_parse(const char *text, struct store_stats *st);

#endif
