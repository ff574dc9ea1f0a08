#!/usr/bin/env bats
# Bounded listeners (issue 11): real memservers on loopback against the
# hostile clients of tests/tools/fm-flood.c — a handshake flood from one
# source, a slow-loris handshake, an idle authenticated connection, 40
# readers that never read their replies, and a client trickling bytes
# to the metrics endpoint.  Waits are bounded polls; bounds on counts
# (log lines, RSS) are derived from the limits, not from timings.

bats_require_minimum_version 1.5.0

load helpers

setup() {
	fm_setup
	FLOOD="$FARMEM_BUILD/tests/tools/fm-flood"
	require_file "$FLOOD"
	require_file "$FM_CLIENT"
}

teardown() {
	stop_all
}

# rss_kb PID: resident set size in KiB.
rss_kb() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# flood_bg NAME SOURCE CONNS SECONDS: fm-flood flood against memserver
# NAME in the background; its output goes to $FM_DIR/flood.out.
flood_bg() {
	"$FLOOD" flood 127.0.0.1 "$(ms_port "$1")" "$2" "$3" "$4" >"$FM_DIR/flood.out" 2>&1 &
	FLOOD_PID=$!
	track_pid "$FLOOD_PID"
}

@test "handshake flood from one source: every genuine handshake succeeds, log lines bounded" {
	start_memserver a --size 16M --segment-size 1M
	log="$FM_DIR/ms-a/log"
	start=$SECONDS
	# 300 connections at once from 127.0.0.2, each re-opened as soon as
	# the server drops it, for 6 s; genuine clients come from 127.0.0.1.
	flood_bg a 127.0.0.2 300 6
	wait_until 20 grep -q "refusing tcp 127.0.0.2" "$log"
	failed=0
	for i in $(seq 40); do
		fm_client a ping >/dev/null 2>&1 || failed=$((failed + 1))
	done
	wait "$FLOOD_PID"
	elapsed=$(( SECONDS - start + 1 ))
	cat "$FM_DIR/flood.out"
	echo "genuine failures: $failed of 40"
	[ "$failed" -eq 0 ]
	# The flood was real: far more attempts than slots, refused ones closed.
	attempts=$(sed -n 's/.*attempts=\([0-9]*\).*/\1/p' "$FM_DIR/flood.out")
	closed=$(sed -n 's/.*closed_by_server=\([0-9]*\).*/\1/p' "$FM_DIR/flood.out")
	[ "$attempts" -gt 1000 ]
	[ "$closed" -gt 1000 ]
	# Every 10 s at most: 20 lines about unauthenticated peers, 10 per
	# refusal kind (two kinds), and a "suppressed" line for each limiter.
	lines=$(grep -c "127.0.0.2\|similar messages suppressed" "$log" || true)
	bound=$(( (elapsed / 10 + 1) * (20 + 10 + 10 + 3) ))
	echo "log lines about the flood: $lines (bound $bound, $elapsed s)"
	[ "$lines" -le "$bound" ]
	# Refused, never evicted: no handshake was dropped to make room.
	! grep -q "dropping the oldest" "$log"
}

@test "control: with no per-source cap the same flood locks genuine clients out" {
	# The per-source cap as high as the global one: one source can take
	# every handshake slot, and then genuine handshakes are refused.
	start_memserver a --size 16M --segment-size 1M \
		--max-handshakes 16 --max-handshakes-per-source 16
	log="$FM_DIR/ms-a/log"
	flood_bg a 127.0.0.2 64 6
	wait_until 20 grep -q "refusing tcp 127.0.0.2" "$log"
	failed=0
	for i in $(seq 5); do
		fm_client a --timeout 2000 ping >/dev/null 2>&1 || failed=$((failed + 1))
	done
	wait "$FLOOD_PID"
	echo "genuine failures: $failed of 5"
	[ "$failed" -gt 0 ]
	grep -q "refusing tcp 127.0.0.1.*(max-handshakes)" "$log"
}

@test "slow-loris: a byte a second is cut at the handshake deadline" {
	start_memserver a --size 16M --segment-size 1M --handshake-timeout 3s
	run -0 "$FLOOD" trickle 127.0.0.1 "$(ms_port a)" 1000 60
	echo "$output"
	[[ "$output" == "closed after_ms="* ]]
	after=$(sed -n 's/.*after_ms=\([0-9]*\).*/\1/p' <<<"$output")
	bytes=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' <<<"$output")
	# Not before the deadline; well before the 76-byte HELLO was whole
	# (each byte renewed nothing).
	[ "$after" -ge 3000 ]
	[ "$bytes" -lt 76 ]
	grep -q "closing: handshake not done within 3000 ms (handshake-timeout)" \
		"$FM_DIR/ms-a/log"
	run -0 fm_client a ping
}

@test "idle timeout closes an idle authenticated connection, not a busy one" {
	start_memserver a --size 16M --segment-size 1M --idle-timeout 2s
	run -0 "$FLOOD" idle "$(ms_addr a)" "$FM_SECRET" 60
	echo "$output"
	[[ "$output" == *"closed after_ms="* ]]
	after=$(sed -n 's/.*after_ms=\([0-9]*\).*/\1/p' <<<"$output")
	[ "$after" -ge 2000 ]
	grep -q "closing: idle for .* ms (idle-timeout)" "$FM_DIR/ms-a/log"
	# A connection that pings every 100 ms outlives the idle timeout.
	run -0 fm_client a hold 4s
}

@test "control: without an idle timeout an idle connection stays open" {
	start_memserver a --size 16M --segment-size 1M
	run -1 "$FLOOD" idle "$(ms_addr a)" "$FM_SECRET" 4
	echo "$output"
	[[ "$output" == *"still up"* ]]
}

@test "40 stalled readers: memserver RSS growth stays bounded" {
	start_memserver a --size 128M --segment-size 1M --hugepages no
	pid=$(ms_pid a)
	: >"$FM_DIR/stall.out"
	"$FLOOD" stall "$(ms_addr a)" "$FM_SECRET" 40 32 "$FM_DIR/go" \
		>>"$FM_DIR/stall.out" 2>&1 &
	track_pid $!
	# Segments written first, so pool pages are resident before the
	# baseline is taken.
	wait_until 60 grep -q written "$FM_DIR/stall.out" || { cat "$FM_DIR/stall.out"; false; }
	base=$(rss_kb "$pid")
	touch "$FM_DIR/go"
	wait_until 60 grep -q stalled "$FM_DIR/stall.out"
	# Each stalled connection ends with at least OUT_HIGH (1 MiB) queued;
	# seeing half of that for all 40 shows the attack took hold.
	grow() { [ $(( $(rss_kb "$pid") - base )) -ge $(( 40 * 512 )) ]; }
	wait_until 60 grow
	# Per connection the server holds at most: a reply queue of OUT_HIGH
	# plus one largest reply (1 MiB + header), grown to 64 KiB steps, and
	# a read buffer of one largest frame — about 3.1 MiB.  Before the fix
	# this attack added 295 MB.
	per_conn=$(( 1024 + 1024 + 64 + 1025 + 64 ))
	bound=$(( 40 * per_conn + 16 * 1024 ))
	max=0
	for i in $(seq 10); do
		g=$(( $(rss_kb "$pid") - base ))
		[ "$g" -gt "$max" ] && max=$g
		sleep 0.2
	done
	echo "RSS growth: $max KiB (bound $bound KiB)"
	[ "$max" -le "$bound" ]
	# The server still serves others.
	run -0 fm_client a ping
}

@test "the metrics endpoint answers scrapes while clients trickle bytes" {
	require_cmd curl
	mport=$(free_port)
	start_memserver a --size 16M --segment-size 1M --metrics "127.0.0.1:$mport"
	pids=()
	for i in 1 2 3 4; do
		"$FLOOD" trickle 127.0.0.1 "$mport" 500 60 http >"$FM_DIR/trickle$i" 2>&1 &
		pids+=($!)
		track_pid $!
	done
	# Every trickler is connected before the scrapes start.
	require_cmd ss
	conns() { [ "$(ss -Htn state established "( dport = :$mport )" | wc -l)" -ge 4 ]; }
	wait_until 20 conns
	for i in $(seq 5); do
		run -0 curl -fsS --max-time 10 "http://127.0.0.1:$mport/metrics"
		[[ "$output" == *"farmem_memserver_pool_bytes"* ]]
	done
	# And the tricklers are cut at the request deadline (5 s), not left
	# holding their slots: each exits 0 with "closed".
	for p in "${pids[@]}"; do
		wait_exit "$p"
	done
	for i in 1 2 3 4; do
		cat "$FM_DIR/trickle$i"
		grep -q "^closed after_ms=" "$FM_DIR/trickle$i"
	done
}
