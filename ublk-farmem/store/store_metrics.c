/* store_metrics.c — a store's counters as Prometheus text (see
 * store_metrics.h). */
#include <stdio.h>

#include "chan.h"
#include "store.h"
#include "store_metrics.h"

static void metrics_servers(struct metrics_buf *b, const struct store_stats *s)
{
	static const struct { const char *name, *type, *help; } fam[] = {
		{ "farmem_blk_server_up", "gauge", "1 when the memserver answers" },
		{ "farmem_blk_server_segments", "gauge", "this device's segments on the server" },
		{ "farmem_blk_server_bytes", "gauge", "remote bytes allocated on the server" },
		{ "farmem_blk_server_requests_total", "counter", "reads and writes sent to the server" },
		{ "farmem_blk_server_errors_total", "counter", "failed requests to the server" },
	};

	for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
		metrics_family(b, fam[f].name, fam[f].type, fam[f].help);
		for (int i = 0; i < s->nservers && i < STORE_MAX_SERVERS; i++) {
			const struct store_server_stats *v = &s->server[i];
			char esc[700], lbl[760];

			metrics_label_escape(v->addr, esc, sizeof(esc));
			snprintf(lbl, sizeof(lbl), "server=\"%s\"", esc);
			if (f == 0)
				metrics_sample_u64(b, fam[f].name, lbl, (uint64_t)v->up);
			else if (f == 1)
				metrics_sample_u64(b, fam[f].name, lbl, v->segments);
			else if (f == 2)
				metrics_sample_u64(b, fam[f].name, lbl, v->bytes);
			else if (f == 3) {
				snprintf(lbl, sizeof(lbl), "server=\"%s\",op=\"read\"", esc);
				metrics_sample_u64(b, fam[f].name, lbl, v->reads);
				snprintf(lbl, sizeof(lbl), "server=\"%s\",op=\"write\"", esc);
				metrics_sample_u64(b, fam[f].name, lbl, v->writes);
			} else
				metrics_sample_u64(b, fam[f].name, lbl, v->errors);
		}
	}
}

/* Only for a device that follows etcd: scrapes of a fixed list stay as
 * they were. */
static void metrics_membership(struct metrics_buf *b, const struct store_stats *s)
{
	if (s->etcd == STORE_ETCD_OFF)
		return;
	metrics_gauge(b, "farmem_blk_etcd_up", "1 when the last call to etcd succeeded "
		      "(0: etcd unreachable, the last view of the servers is kept)",
		      s->etcd == STORE_ETCD_OK ? 1 : 0);
	metrics_counter(b, "farmem_blk_etcd_errors_total", "failed rounds with etcd",
			s->etcd_errors);
	metrics_counter(b, "farmem_blk_members_joined_total",
			"memservers that joined the cluster while the device ran", s->members_joined);
	metrics_counter(b, "farmem_blk_members_lost_total",
			"memservers whose etcd key went (treated as lost)", s->members_lost);
	metrics_gauge(b, "farmem_blk_servers", "servers this device knows (joined ones "
		      "included)", s->nservers);
}

void store_metrics_provide(struct metrics_buf *b, void *arg)
{
	const struct store_metrics *m = arg;
	struct metrics_hist h;
	struct store_stats s;

	store_get_stats(m->st, &s);
	metrics_gauge(b, "farmem_blk_size_bytes", "device size", (double)s.size);
	metrics_gauge(b, "farmem_blk_pages_stored", "non-zero pages held", (double)s.pages_stored);
	metrics_gauge(b, "farmem_blk_bytes_logical", "pages stored x 4096", (double)s.bytes_logical);
	metrics_gauge(b, "farmem_blk_bytes_stored", "live compressed record bytes",
		      (double)s.bytes_stored);
	metrics_gauge(b, "farmem_blk_bytes_remote", "segment bytes allocated, all replicas",
		      (double)s.bytes_remote);
	metrics_gauge(b, "farmem_blk_compression_ratio", "logical / stored bytes (0: none stored)",
		      s.bytes_stored ? (double)s.bytes_logical / (double)s.bytes_stored : 0.0);
	metrics_counter(b, "farmem_blk_incompressible_pages_total",
			"page writes stored raw: their sampled bytes could not shrink",
			s.incompressible_pages);
	metrics_gauge(b, "farmem_blk_segments", "segments of this device", (double)s.segments);
	metrics_gauge(b, "farmem_blk_degraded_segments", "segments with fewer than R live copies",
		      (double)s.degraded_segments);
	metrics_gauge(b, "farmem_blk_replicas", "copies of each page", s.replicas);
	metrics_counter(b, "farmem_blk_reads_total", "read requests", s.reads);
	metrics_counter(b, "farmem_blk_writes_total", "write requests", s.writes);
	metrics_counter(b, "farmem_blk_discards_total", "discard and zero requests", s.discards);
	metrics_counter(b, "farmem_blk_cleaned_segments_total", "segments freed by the cleaner",
			s.cleaned_segments);
	metrics_counter(b, "farmem_blk_rereplicated_segments_total",
			"segments copied to a new server after a loss", s.rereplicated_segments);
	metrics_counter(b, "farmem_blk_frames_rejected_total",
			"replies whose channel tag failed; each dropped its connection",
			fm_chan_rejected());
	metrics_family(b, "farmem_blk_errors_total", "counter",
		       "bad copies detected (checksum: plain records; auth: sealed records "
		       "that failed to open) and requests failed (read, write)");
	metrics_sample_u64(b, "farmem_blk_errors_total", "kind=\"checksum\"", s.checksum_errors);
	metrics_sample_u64(b, "farmem_blk_errors_total", "kind=\"auth\"", s.auth_errors);
	metrics_sample_u64(b, "farmem_blk_errors_total", "kind=\"read\"", s.read_errors);
	metrics_sample_u64(b, "farmem_blk_errors_total", "kind=\"write\"", s.write_errors);
	metrics_servers(b, &s);
	metrics_membership(b, &s);
	if (!m->lat_read || !m->lat_write)
		return;
	metrics_family(b, "farmem_blk_io_latency_seconds", "histogram",
		       m->lat_help ? m->lat_help : "store read and write time per request");
	metrics_hist_snapshot(m->lat_read, &h);
	metrics_hist_write(b, "farmem_blk_io_latency_seconds", "op=\"read\"", &h);
	metrics_hist_snapshot(m->lat_write, &h);
	metrics_hist_write(b, "farmem_blk_io_latency_seconds", "op=\"write\"", &h);
}

int store_metrics_start(const char *listen_addr, struct store_metrics *m,
			struct metrics_server **out)
{
	*out = NULL;
	return metrics_server_start(listen_addr, store_metrics_provide, m, out);
}
