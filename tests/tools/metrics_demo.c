/* metrics_demo.c — serve sample farmem metrics for tests/integration/metrics.bats.
 *
 * usage: metrics_demo LISTEN PORTFILE
 * Starts the real /metrics server on LISTEN (port 0 picks one), writes the
 * bound port to PORTFILE once it accepts connections, and serves until
 * SIGTERM or SIGINT.  Each scrape advances the counters and the histogram
 * so a test can see two scrapes differ.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "metrics_http.h"

static struct metrics_hist read_lat, write_lat;
static uint64_t scrapes;

static void provide(struct metrics_buf *b, void *arg)
{
	static const char *servers[] = { "tcp://127.0.0.1:7000",
					 "tcp://[::1]:7001" };
	char esc[128], lab[160];

	(void)arg;
	scrapes++;
	metrics_hist_observe_ns(&read_lat, 20000 * scrapes);
	metrics_hist_observe_ns(&write_lat, 70000 * scrapes);

	metrics_counter(b, "farmem_demo_scrapes_total", "Scrapes served.", scrapes);
	metrics_gauge(b, "farmem_demo_compression_ratio",
		      "Uncompressed over compressed bytes.", 2.75);
	metrics_family(b, "farmem_demo_server_bytes", "gauge",
		       "Bytes stored per memserver.");
	for (int i = 0; i < 2; i++) {
		snprintf(lab, sizeof(lab), "server=\"%s\"",
			 metrics_label_escape(servers[i], esc, sizeof(esc)));
		metrics_sample_u64(b, "farmem_demo_server_bytes", lab,
				   4096 * (uint64_t)(i + 1) * scrapes);
	}
	metrics_family(b, "farmem_demo_io_latency_seconds", "histogram",
		       "I/O latency from request to completion.");
	metrics_hist_write(b, "farmem_demo_io_latency_seconds", "op=\"read\"",
			   &read_lat);
	metrics_hist_write(b, "farmem_demo_io_latency_seconds", "op=\"write\"",
			   &write_lat);
}

int main(int argc, char **argv)
{
	struct metrics_server *srv;
	sigset_t set;
	FILE *f;
	int sig, rc;

	if (argc != 3) {
		fprintf(stderr, "usage: metrics_demo LISTEN PORTFILE\n");
		return 2;
	}
	log_init("metrics_demo", LOG_LVL_INFO);
	/* Block before the server thread starts so only sigwait sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	rc = metrics_server_start(argv[1], provide, NULL, &srv);
	if (rc < 0)
		return 1;
	/* Write then rename, so a reader never sees a half-written port. */
	char tmp[4096];

	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[2]);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%u\n", metrics_server_port(srv)) < 0 ||
	    fclose(f) != 0 || rename(tmp, argv[2]) < 0) {
		fprintf(stderr, "metrics_demo: %s: %s\n", argv[2], strerror(errno));
		metrics_server_stop(srv);
		return 1;
	}
	sigwait(&set, &sig);
	metrics_server_stop(srv);
	return 0;
}
