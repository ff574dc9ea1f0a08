#!/usr/bin/env bats
# The protected channel against a man in the middle: fm-mitm relays
# farmem-blk serve's connections to memserver m1 (m2 is reached
# directly, replicas 2) and, once armed, attacks one frame.  Without
# the key it cannot make a tag, so m1 must refuse the frame (close the
# connection, log it, count it), act on nothing, and the data read
# through NBD must still be what was written.  The pass-through run is
# the control: the relay itself is transparent.

load helpers
load nbd_helpers

MITM="$FARMEM_BUILD/tests/tools/fm-mitm"

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_file "$MITM"
	require_cmd nbdinfo nbdcopy
	fm_setup
	start_memservers 2 --size 64M --segment-size 1M
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ]; then
		for f in mitm.log serve/log; do
			[ -f "$FM_DIR/$f" ] || continue
			echo "--- $f:" >&2
			tail -n 30 "$FM_DIR/$f" >&2
		done
	fi
}

# start_mitm MODE: fm-mitm in front of m1, armed by $FM_DIR/arm; serve
# then reaches m1 through it and m2 directly.
start_mitm() {
	local port
	port=$(free_port)
	: >"$FM_DIR/mitm.log"
	"$MITM" --listen "$port" --to "$(ms_port m1)" --mode "$1" \
		--arm "$FM_DIR/arm" --lifetime 300 >"$FM_DIR/mitm.log" 2>&1 &
	track_pid "$!"
	wait_until 10 grep -q '^listening' "$FM_DIR/mitm.log"
	FM_SERVERS="tcp://127.0.0.1:$port,$(ms_addr m2)"
	export FM_SERVERS
}

# A file of MiB mixed data (helpers' make_mixed), written and checked.
write_and_check() {
	make_mixed "$FM_DIR/$1" "$2"
	nbdcopy "$FM_DIR/$1" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/back"
	cmp "$FM_DIR/$1" "$FM_DIR/back"
}

read_and_check() {
	rm -f "$FM_DIR/back"
	nbdcopy "$NBD_URI" "$FM_DIR/back"
	cmp "$FM_DIR/$1" "$FM_DIR/back"
}

refused_on_m1() {
	grep -q "closing: $1 frame .* fails its channel check" "$FM_DIR/ms-m1/log"
}

@test "control: through the relay untouched, the export works and m1 holds data" {
	start_mitm pass
	start_serve --size 16M --replicas 2 --segment-size 1M
	write_and_check in 16
	grep -q '^conn 1 open' "$FM_DIR/mitm.log"
	written=$(stat_field m1 bytes_written)
	[ "$written" -gt 0 ]
	! grep -q 'fails its channel check' "$FM_DIR/ms-m1/log"
	! grep -q '^attack' "$FM_DIR/mitm.log"
}

@test "an injected FREE is refused: connection closed, logged, nothing freed" {
	start_mitm inject-free
	start_serve --size 16M --replicas 2 --segment-size 1M
	write_and_check in 16
	segs=$(stat_field m1 segments)
	[ "$segs" -gt 0 ]
	touch "$FM_DIR/arm"
	read_and_check in
	wait_until 30 grep -q '^attack .*injected FREE' "$FM_DIR/mitm.log"
	wait_until 30 refused_on_m1 FREE
	grep -q 'closed by server' "$FM_DIR/mitm.log"
	[ "$(stat_field m1 segments)" -eq "$segs" ]
	# serve reconnects (through the relay, no longer attacking) and
	# the data is all there.
	read_and_check in
	wait_until 30 grep -q '^conn .* open' "$FM_DIR/mitm.log"
}

@test "a replayed WRITE is refused and overwrites nothing" {
	start_mitm replay-write
	start_serve --size 16M --replicas 2 --segment-size 1M
	write_and_check in 16
	touch "$FM_DIR/arm"
	# New data over the old: the replayed first WRITE would put old
	# bytes back if m1 took it.
	write_and_check in2 16
	wait_until 30 grep -q '^attack .*replayed a WRITE' "$FM_DIR/mitm.log"
	wait_until 30 refused_on_m1 WRITE
	wait_until 30 grep -q 'closed by server' "$FM_DIR/mitm.log"
	read_and_check in2
}

@test "a WRITE with one data byte flipped is refused; the data still verifies" {
	start_mitm flip-write
	start_serve --size 16M --replicas 2 --segment-size 1M
	write_and_check in 16
	touch "$FM_DIR/arm"
	write_and_check in2 16
	wait_until 30 grep -q '^attack .*flipped' "$FM_DIR/mitm.log"
	wait_until 30 refused_on_m1 WRITE
	wait_until 30 grep -q 'closed by server' "$FM_DIR/mitm.log"
	read_and_check in2
}

@test "the memserver counts refused frames in its metrics" {
	require_cmd curl
	local mport
	mport=$(free_port)
	start_memserver m3 --size 64M --segment-size 1M --metrics "127.0.0.1:$mport"
	# fm-client through the relay in front of m3: the first frame after
	# the handshake is preceded by a forged FREE.
	local port
	port=$(free_port)
	: >"$FM_DIR/mitm.log"
	touch "$FM_DIR/arm"
	"$MITM" --listen "$port" --to "$(ms_port m3)" --mode inject-free \
		--arm "$FM_DIR/arm" --lifetime 120 >"$FM_DIR/mitm.log" 2>&1 &
	track_pid "$!"
	wait_until 10 grep -q '^listening' "$FM_DIR/mitm.log"
	run "$FM_CLIENT" --server "tcp://127.0.0.1:$port" --secret-file "$FM_SECRET" \
		pipeline 50
	[ "$status" -ne 0 ]           # its connection was closed under it
	grep -q '^attack .*injected FREE' "$FM_DIR/mitm.log"
	wait_until 10 grep -q 'FREE frame .* fails its channel check' "$FM_DIR/ms-m3/log"
	curl -fsS --max-time 10 "http://127.0.0.1:$mport/metrics" >"$FM_DIR/scrape"
	grep -q '^farmem_memserver_frames_rejected_total 1$' "$FM_DIR/scrape"
	# And the same client straight to m3 is served.
	run fm_client m3 pipeline 50
	[ "$status" -eq 0 ]
}
