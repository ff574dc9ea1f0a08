#!/usr/bin/env bats
# The /metrics endpoint, scraped by a real HTTP client (curl) and checked
# against the Prometheus text format by prom_validate.pl.  The server is
# the real common/metrics_http.c inside tests/tools/metrics_demo; the two
# programs get the same checks once they accept --metrics.

bats_require_minimum_version 1.5.0

load helpers
load nbd_helpers

setup_file() {
	: "${FARMEM_BUILD:=$BATS_TEST_DIRNAME/../../build}"
	export FARMEM_BUILD
	export VALIDATE="$BATS_TEST_DIRNAME/prom_validate.pl"
}

setup() {
	command -v curl >/dev/null || skip "curl not installed"
	command -v perl >/dev/null || skip "perl not installed"
	PIDS=()
	DEMO="$FARMEM_BUILD/tests/tools/metrics_demo"
}

teardown() {
	local p
	stop_all
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
}

# Waits (bounded: 10 s) for a port file to appear; prints the port.
wait_port_file() {
	local f=$1 i
	for i in $(seq 100); do
		if [ -s "$f" ]; then
			cat "$f"
			return 0
		fi
		sleep 0.1
	done
	echo "no port in $f after 10 s" >&2
	return 1
}

start_demo() {
	[ -x "$DEMO" ] || skip "$DEMO not built (make all)"
	"$DEMO" "${1:-127.0.0.1:0}" "$BATS_TEST_TMPDIR/port" \
		2>"$BATS_TEST_TMPDIR/demo.log" &
	PIDS+=($!)
	PORT=$(wait_port_file "$BATS_TEST_TMPDIR/port")
}

@test "curl scrape parses as Prometheus text format" {
	start_demo
	curl -fsS --max-time 10 "http://127.0.0.1:$PORT/metrics" \
		>"$BATS_TEST_TMPDIR/scrape"
	run -0 "$VALIDATE" "$BATS_TEST_TMPDIR/scrape"
	[[ "$output" == "ok families=4 samples="* ]]
	grep -qx 'farmem_demo_compression_ratio 2.75' "$BATS_TEST_TMPDIR/scrape"
	grep -qx 'farmem_demo_server_bytes{server="tcp://\[::1\]:7001"} 8192' \
		"$BATS_TEST_TMPDIR/scrape"
	grep -q '^farmem_demo_io_latency_seconds_bucket{op="write",le="+Inf"} 1$' \
		"$BATS_TEST_TMPDIR/scrape"
}

@test "response carries the exposition content type and HTTP/1.0" {
	start_demo
	run -0 curl -sS --max-time 10 -D - -o /dev/null "http://127.0.0.1:$PORT/metrics"
	[[ "${lines[0]}" == "HTTP/1.0 200 OK"* ]]
	[[ "$output" == *"Content-Type: text/plain; version=0.0.4; charset=utf-8"* ]]
}

@test "each scrape sees fresh values" {
	start_demo
	run -0 curl -fsS --max-time 10 "http://127.0.0.1:$PORT/metrics"
	[[ "$output" == *$'farmem_demo_scrapes_total 1\n'* ]]
	run -0 curl -fsS --max-time 10 "http://127.0.0.1:$PORT/metrics"
	[[ "$output" == *$'farmem_demo_scrapes_total 2\n'* ]]
	[[ "$output" == *'farmem_demo_io_latency_seconds_count{op="read"} 2'* ]]
}

@test "other paths get 404, other methods 405" {
	start_demo
	run -0 curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/"
	[ "$output" = 404 ]
	run -0 curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/metrics/x"
	[ "$output" = 404 ]
	run -0 curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/metrics"
	[ "$output" = 405 ]
}

@test "IPv6 loopback listen address works" {
	[ -e /proc/net/if_inet6 ] || skip "no IPv6 in this kernel"
	start_demo "[::1]:0"
	curl -fsS --max-time 10 "http://[::1]:$PORT/metrics" >"$BATS_TEST_TMPDIR/scrape"
	run -0 "$VALIDATE" "$BATS_TEST_TMPDIR/scrape"
}

@test "a bad listen address is refused with a message" {
	[ -x "$DEMO" ] || skip "$DEMO not built (make all)"
	run -1 "$DEMO" "localhost" "$BATS_TEST_TMPDIR/port"
	[[ "$output" == *"bad listen address 'localhost'"* ]]
	[ ! -e "$BATS_TEST_TMPDIR/port" ]
}

@test "SIGTERM stops the server and frees the port" {
	start_demo
	local rc=0
	kill -TERM "${PIDS[0]}"
	wait "${PIDS[0]}" || rc=$?
	PIDS=()
	[ "$rc" -eq 0 ]
	run curl -s --max-time 5 "http://127.0.0.1:$PORT/metrics"
	[ "$status" -ne 0 ]
}

# The validator must be able to fail, or the tests above prove nothing.
@test "validator rejects malformed exposition text" {
	local bad="$BATS_TEST_TMPDIR/bad"
	printf 'x 1\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # no TYPE
	printf '# TYPE x counter\nx -1\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # negative counter
	printf '# TYPE x gauge\nx{a="b} 1\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # unterminated label
	printf '# TYPE x gauge\nx 1' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # no final newline
	printf '# TYPE x gauge\nx one\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # not a number
	printf '# TYPE x gauge\n# TYPE y gauge\nx 1\ny 1\nx{a="1"} 2\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # family interleaved
	printf '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="2"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 2\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # buckets decrease
	printf '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 3\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # +Inf != _count
	printf '# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # no +Inf bucket
	printf '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n' >"$bad"
	run -1 "$VALIDATE" "$bad"                         # duplicate series
	printf '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 1\nh_sum 0.5\nh_count 1\n# TYPE x gauge\nx{a="q\\"\\\\"} NaN 1700000000000\n' >"$bad"
	run -0 "$VALIDATE" "$bad"                         # and accepts good text
}

# ---- the real programs ------------------------------------------------

# scrape PORT FILE: one scrape into FILE (fails on HTTP errors).
scrape() {
	curl -fsS --max-time 10 "http://127.0.0.1:$1/metrics" >"$2"
}

# metric FILE NAME: the value of an unlabelled sample.
metric() {
	awk -v n="$2" '$1 == n { print $2 }' "$1"
}

# metric_at_least PORT NAME MIN: a fresh scrape shows NAME >= MIN.
metric_at_least() {
	scrape "$1" "$FM_DIR/poll" || return 1
	local v
	v=$(metric "$FM_DIR/poll" "$2")
	[ -n "$v" ] && [ "$v" -ge "$3" ]
}

has_metrics_flag() {
	"$@" --help 2>&1 | grep -q -- '--metrics'
}

@test "farmem-memserver --metrics: pool use and I/O counts" {
	fm_setup
	require_file "$FM_MEMSERVER"
	has_metrics_flag "$FM_MEMSERVER" || skip "farmem-memserver has no --metrics yet"
	local mport
	mport=$(free_port)
	start_memserver a --size 32M --metrics "127.0.0.1:$mport"
	scrape "$mport" "$FM_DIR/s1"
	run -0 "$VALIDATE" "$FM_DIR/s1"
	[ "$(metric "$FM_DIR/s1" farmem_memserver_pool_bytes)" -eq 33554432 ]
	[ "$(metric "$FM_DIR/s1" farmem_memserver_writes_total)" -eq 0 ]
	fm_client a pipeline 50
	# The loop publishes after each batch of events: poll, bounded.
	wait_until 10 metric_at_least "$mport" farmem_memserver_writes_total 50
	wait_until 10 metric_at_least "$mport" farmem_memserver_reads_total 50
	run -0 "$VALIDATE" "$FM_DIR/poll"
}

@test "farmem-memserver --check-config rejects a bad --metrics address" {
	fm_setup
	require_file "$FM_MEMSERVER"
	has_metrics_flag "$FM_MEMSERVER" || skip "farmem-memserver has no --metrics yet"
	run ! "$FM_MEMSERVER" --check-config --listen tcp://127.0.0.1:1 --size 16M \
		--secret-file "$FM_SECRET" --metrics nonsense
	[[ "$output" == *"nonsense"* ]]
}

@test "farmem-blk serve --metrics: pages stored, compression ratio, servers, latency" {
	fm_setup
	require_file "$FM_BLK"
	require_cmd nbdcopy nbdinfo
	has_metrics_flag "$FM_BLK" serve || skip "farmem-blk serve has no --metrics yet"
	local mport
	mport=$(free_port)
	start_memservers 2 --size 64M
	start_serve --size 16M --metrics "127.0.0.1:$mport"
	scrape "$mport" "$FM_DIR/s1"
	run -0 "$VALIDATE" "$FM_DIR/s1"
	[ "$(metric "$FM_DIR/s1" farmem_blk_size_bytes)" -eq 16777216 ]
	[ "$(metric "$FM_DIR/s1" farmem_blk_pages_stored)" -eq 0 ]
	# 1 MiB of compressible, non-zero data, then 1 MiB of random bytes
	# that zstd is not even asked to shrink: 256 pages of each.
	yes farmem | head -c 1048576 >"$FM_DIR/data"
	head -c 1048576 /dev/urandom >>"$FM_DIR/data"
	nbdcopy "$FM_DIR/data" "$NBD_URI"
	wait_until 10 metric_at_least "$mport" farmem_blk_pages_stored 512
	[ "$(metric "$FM_DIR/poll" farmem_blk_incompressible_pages_total)" -eq 256 ]
	run -0 "$VALIDATE" "$FM_DIR/poll"
	local ratio
	ratio=$(metric "$FM_DIR/poll" farmem_blk_compression_ratio)
	awk -v r="$ratio" 'BEGIN { exit !(r > 1) }'   # text compresses
	grep -q '^farmem_blk_server_up{server="tcp://127.0.0.1:[0-9]*"} 1$' "$FM_DIR/poll"
	[ "$(grep -c '^farmem_blk_server_up{' "$FM_DIR/poll")" -eq 2 ]
	# nbdcopy wrote in requests of at most 1 MiB: at least one write was
	# timed, and the histogram's count matches the request counter.
	local writes count
	writes=$(metric "$FM_DIR/poll" farmem_blk_writes_total)
	count=$(awk '$1 == "farmem_blk_io_latency_seconds_count{op=\"write\"}" { print $2 }' "$FM_DIR/poll")
	[ "$writes" -ge 1 ]
	[ "$count" = "$writes" ]
}
