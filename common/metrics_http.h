/* metrics_http.h — optional Prometheus text metrics over HTTP.
 *
 * A program that was given `--metrics HOST:PORT` starts one metrics server:
 * a thread that answers `GET /metrics` (HTTP/1.0, one request per
 * connection, several connections at once, each with a deadline for the
 * whole exchange) by calling the program's provider callback, which appends
 * Prometheus text exposition format (version 0.0.4) into a buffer the
 * server owns.  Other paths get 404, other methods 405, oversized or
 * malformed requests 400.  The thread is never on an I/O path: it only
 * reads counters the program keeps anyway (atomics), so the provider must
 * not take locks that the I/O path holds for long.
 *
 * The format helpers and the latency histogram are in metrics_text.h,
 * included here so a program needs only this header.
 */
#ifndef FARMEM_METRICS_HTTP_H
#define FARMEM_METRICS_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "metrics_text.h"

/* ---- HTTP server ------------------------------------------------------ */

/* Appends the current metrics to b.  Called from the metrics thread. */
typedef void (*metrics_provider_fn)(struct metrics_buf *b, void *arg);

struct metrics_server;

/* "HOST:PORT", "[V6]:PORT" or "tcp://HOST:PORT"; port 0 picks a free
 * port (see metrics_server_port).  Host and port go to *host (NUL-
 * terminated, brackets removed) and *port. */
int metrics_parse_listen(const char *s, char *host, size_t hostlen,
			 uint16_t *port);
/* The status a request gets: 200 for GET or HEAD of /metrics (a query
 * string is ignored), 404 other paths, 405 other methods, 400 malformed.
 * *head_only is set for HEAD.  Exposed for unit tests. */
int metrics_http_classify(const char *req, size_t len, int *head_only);
/* Binds and starts the thread; 0 or -errno (logged with the address). */
int metrics_server_start(const char *listen_addr, metrics_provider_fn fn,
			 void *arg, struct metrics_server **out);
/* The bound port (useful after asking for port 0). */
uint16_t metrics_server_port(const struct metrics_server *s);
/* Stops the thread, closes the socket, frees everything.  NULL is a no-op. */
void metrics_server_stop(struct metrics_server *s);

#endif
