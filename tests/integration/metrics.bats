#!/usr/bin/env bats
# The /metrics endpoint, scraped by a real HTTP client (curl) and checked
# against the Prometheus text format by prom_validate.pl.  The server is
# the real common/metrics_http.c inside tests/tools/metrics_demo; the two
# programs get the same checks once they accept --metrics.

bats_require_minimum_version 1.5.0

setup_file() {
	: "${FARMEM_BUILD:=$BATS_TEST_DIRNAME/../../build}"
	export FARMEM_BUILD
	export VALIDATE="$BATS_TEST_DIRNAME/prom_validate.pl"
}

setup() {
	command -v curl >/dev/null || skip "curl not installed"
	command -v perl >/dev/null || skip "perl not installed"
	DEMO="$FARMEM_BUILD/tests/tools/metrics_demo"
	[ -x "$DEMO" ] || skip "$DEMO not built (make all)"
	PIDS=()
}

teardown() {
	local p
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
