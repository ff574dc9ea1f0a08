/* cli_serve.c — `farmem-blk serve`: the store exported over NBD in the
 * foreground until SIGTERM or SIGINT.  SIGUSR1 prints the store's
 * statistics on stderr; they are printed once more at exit.  With
 * --metrics, the same counters and I/O latency histograms are served
 * in the Prometheus text format. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "blk_config.h"
#include "cli.h"
#include "frontend/nbd/nbd.h"
#include "frontend/nbd/nbd_store.h"
#include "log.h"
#include "metrics_http.h"
#include "store/store.h"
#include "store/store_metrics.h"

#define SERVE_MAX_IO (1u << 20)

static void print_stats(struct store *st)
{
	struct store_stats s;

	store_get_stats(st, &s);
	fprintf(stderr, "farmem-blk: stats pages_stored=%llu zero_pages=%llu "
		"bytes_logical=%llu bytes_stored=%llu bytes_remote=%llu "
		"segments=%llu degraded_segments=%llu checksum_errors=%llu "
		"auth_errors=%llu read_errors=%llu write_errors=%llu rereplicated_segments=%llu "
		"cleaned_segments=%llu incompressible_pages=%llu\n",
		(unsigned long long)s.pages_stored, (unsigned long long)s.zero_pages,
		(unsigned long long)s.bytes_logical, (unsigned long long)s.bytes_stored,
		(unsigned long long)s.bytes_remote, (unsigned long long)s.segments,
		(unsigned long long)s.degraded_segments,
		(unsigned long long)s.checksum_errors,
		(unsigned long long)s.auth_errors,
		(unsigned long long)s.read_errors, (unsigned long long)s.write_errors,
		(unsigned long long)s.rereplicated_segments,
		(unsigned long long)s.cleaned_segments,
		(unsigned long long)s.incompressible_pages);
	if (s.etcd != STORE_ETCD_OFF)
		fprintf(stderr, "farmem-blk: membership servers=%d etcd=%s etcd_errors=%llu "
			"members_joined=%llu members_lost=%llu%s%s\n", s.nservers,
			s.etcd == STORE_ETCD_OK ? "ok" : "unreachable",
			(unsigned long long)s.etcd_errors,
			(unsigned long long)s.members_joined,
			(unsigned long long)s.members_lost,
			s.etcd_error[0] ? " error=" : "", s.etcd_error);
}

struct sig_ctx {
	sigset_t set;
	struct nbd_server *srv;
	struct store *store;
};

static struct nbd_store_glue serve_glue;   /* histograms: zero-initialised */

/* Signals arrive here only (blocked everywhere else), so the handlers
 * can do ordinary work. */
static void *signal_main(void *arg)
{
	struct sig_ctx *c = arg;

	for (;;) {
		int sig;

		if (sigwait(&c->set, &sig))
			continue;
		if (sig == SIGUSR1) {
			print_stats(c->store);
			continue;
		}
		log_info("serve: %s, closing connections", strsignal(sig));
		nbd_server_stop(c->srv);
		return NULL;
	}
}

static struct store_stats sst;   /* big: not on the stack */

static int run_server(const struct blk_config *cfg, struct store *st,
		      struct sig_ctx *sc)
{
	struct nbd_backend be;
	struct nbd_server_params p = {
		.listen = cfg->nbd, .max_conns = cfg->queues, .workers = cfg->depth,
		.max_block = SERVE_MAX_IO, .export_name = "",
		.description = "farmem store",
		.handshake_timeout_ms = (uint32_t)cfg->set.handshake_timeout_ms,
		.idle_timeout_ms = (uint32_t)cfg->set.idle_timeout_ms,
		.tls_psk_file = cfg->set.tls_psk[0] ? cfg->set.tls_psk : NULL,
		.tls_cert_file = cfg->set.tls_cert[0] ? cfg->set.tls_cert : NULL,
		.tls_key_file = cfg->set.tls_key[0] ? cfg->set.tls_key : NULL,
	};
	struct metrics_server *ms = NULL;
	struct nbd_server *srv;
	pthread_t sig_thread;
	char a[400];
	int rc;

	nbd_store_backend(&serve_glue, st, SERVE_MAX_IO, &be);
	rc = nbd_server_create(&p, &be, &srv);
	if (rc < 0) {
		log_err("serve: cannot listen on %s: %s",
			addr_str(&cfg->nbd, a, sizeof(a)), strerror(-rc));
		return rc;
	}
	if (cfg->set.metrics[0]) {
		static struct store_metrics sm;

		sm = (struct store_metrics){
			.st = st, .lat_read = &serve_glue.lat_read,
			.lat_write = &serve_glue.lat_write,
			.lat_help = "store read and write time per NBD request",
		};
		rc = store_metrics_start(cfg->set.metrics, &sm, &ms);
		if (rc < 0) {
			nbd_server_destroy(srv);
			return rc;
		}
	}
	sc->srv = srv;
	sc->store = st;
	rc = pthread_create(&sig_thread, NULL, signal_main, sc);
	if (rc) {
		log_err("serve: cannot start signal thread: %s", strerror(rc));
		metrics_server_stop(ms);
		nbd_server_destroy(srv);
		return -rc;
	}
	/* The store's own numbers: with etcd the config has none. */
	store_get_stats(st, &sst);
	log_info("serve: device %s, %llu bytes, %d replicas over %d servers, "
		 "%s level %d; NBD on %s (%d connections x %d workers)",
		 cfg->uuid_text, (unsigned long long)cfg->store.size,
		 sst.replicas, sst.nservers,
		 blk_compress_name(cfg->store.compress), blk_compress_level(cfg),
		 addr_str(&cfg->nbd, a, sizeof(a)), cfg->queues, cfg->depth);
	if (cfg->nbd.kind == ADDR_TCP && cfg->nbd.port == 0)
		log_info("serve: listening on port %u", nbd_server_port(srv));
	log_info("serve: TLS %s; handshake within %llums, idle connections "
		 "closed after %llums", p.tls_psk_file || p.tls_cert_file ?
		 "required" : "off",
		 (unsigned long long)cfg->set.handshake_timeout_ms,
		 (unsigned long long)cfg->set.idle_timeout_ms);
	if (cfg->set.insecure && cfg->nbd.kind == ADDR_TCP && !p.tls_psk_file &&
	    !p.tls_cert_file)
		log_warn("serve: --insecure: NBD in the clear and without "
			 "authentication on %s", a);
	rc = nbd_server_run(srv);
	/* A stop from elsewhere than a signal still ends the signal thread. */
	pthread_kill(sig_thread, SIGTERM);
	pthread_join(sig_thread, NULL);
	metrics_server_stop(ms);
	nbd_server_destroy(srv);
	return rc;
}

int cmd_serve(int argc, char **argv)
{
	static struct blk_config cfg;   /* large (secret, server table) */
	char err[BLK_CONFIG_ERR_LEN];
	struct sig_ctx sc = { 0 };
	struct store *st;
	int first = 0, rc;

	rc = blk_config_parse(argc, argv, BLK_CMD_SERVE, NULL, &cfg, &first,
			      err, sizeof(err));
	if (rc == 1)
		return 0;
	if (rc < 0) {
		fprintf(stderr, "farmem-blk serve: %s\n", err);
		return rc == -EINVAL ? 2 : 1;
	}
	if (first < argc) {
		fprintf(stderr, "farmem-blk serve: unexpected argument '%s' "
			"(see --help)\n", argv[first]);
		return 2;
	}
	cfg.store.max_io = SERVE_MAX_IO;
	/* Before any thread starts, so only the signal thread takes them. */
	sigemptyset(&sc.set);
	sigaddset(&sc.set, SIGTERM);
	sigaddset(&sc.set, SIGINT);
	sigaddset(&sc.set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
	signal(SIGPIPE, SIG_IGN);

	rc = store_open(&cfg.store, &st, err, sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "farmem-blk serve: %s\n", err);
		return 1;
	}
	rc = run_server(&cfg, st, &sc);
	print_stats(st);
	store_close(st);
	return rc < 0 ? 1 : 0;
}
