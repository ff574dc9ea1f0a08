#!/usr/bin/env bats
# farmem-blk serve: the store behind NBD, with three real memservers on
# loopback and real NBD clients (nbdinfo, nbdcopy, qemu-img, fio).

load helpers
load nbd_helpers

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_cmd nbdinfo nbdcopy
	fm_setup
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ] && [ -f "$FM_DIR/serve/log" ]; then
		echo "--- serve log:" >&2
		tail -n 40 "$FM_DIR/serve/log" >&2
	fi
}

# fio against the export; extra flags pass through.  It runs in the
# test's directory: a verify run leaves its state file where it runs.
fio_nbd() {
	(cd "$FM_DIR" && fio --name=farmem --ioengine=nbd --uri="$NBD_URI" --bs=4k \
		--randrepeat=1 --verify_fatal=1 --output="$FM_DIR/fio.out" "$@")
}

usage_at_most() {
	local u
	u=$(used_bytes_total) && [ "$u" -le "$1" ]
}

ms_holds_more_than() {
	local u
	u=$(stat_field "$1" used_bytes) && [ -n "$u" ] && [ "$u" -gt "$2" ]
}

@test "nbdinfo shows the size and the 4096-byte block size constraints" {
	start_memservers 3 --size 64M
	start_serve --size 64M
	run nbdinfo "$NBD_URI"
	[ "$status" -eq 0 ]
	echo "$output" | grep -q 'export-size: 67108864'
	echo "$output" | grep -q 'block_size_minimum: 4096'
	echo "$output" | grep -q 'block_size_preferred: 4096'
	echo "$output" | grep -q 'can_multi_conn: true'
	echo "$output" | grep -q 'can_trim: true'
	echo "$output" | grep -q 'can_zero: true'
	run nbdinfo --list "$NBD_URI"
	[ "$status" -eq 0 ]
	echo "$output" | grep -q 'export=""'
}

@test "nbdcopy: 256 MiB of mixed data in and out, byte-identical" {
	start_memservers 3 --size 256M
	start_serve --size 256M --replicas 2
	make_mixed "$FM_DIR/in" 256
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp "$FM_DIR/in" "$FM_DIR/out"
	# A quarter of it was zeros and half compresses well: less is stored
	# than was written (replicas included).
	stored=$(serve_stat bytes_stored)
	[ "$stored" -gt 0 ]
	[ "$stored" -lt $(( 192 << 20 )) ]
	rm -f "$FM_DIR/in" "$FM_DIR/out"
}

@test "qemu-img convert into the export and back" {
	require_cmd qemu-img
	start_memservers 3 --size 64M
	start_serve --size 32M
	make_mixed "$FM_DIR/in" 32
	qemu-img convert -n -f raw -O raw "$FM_DIR/in" "$NBD_URI"
	qemu-img convert -f raw -O raw "$NBD_URI" "$FM_DIR/out"
	cmp "$FM_DIR/in" "$FM_DIR/out"
	run qemu-img info "$NBD_URI"
	[ "$status" -eq 0 ]
	echo "$output" | grep -q 'virtual size: 32 MiB'
}

@test "fio random write with crc32c verify, then verify-only on a new connection" {
	require_cmd fio
	start_memservers 3 --size 128M
	start_serve --size 128M
	fio_nbd --rw=randwrite --size=64M --iodepth=32 --verify=crc32c --do_verify=1
	grep -q 'err= 0' "$FM_DIR/fio.out"
	# The reader connection is a new one: everything comes from the store.
	fio_nbd --rw=randwrite --size=64M --iodepth=32 --verify=crc32c --verify_only
	grep -q 'err= 0' "$FM_DIR/fio.out"
	run grep -qi 'verify: bad' "$FM_DIR/fio.out"
	[ "$status" -ne 0 ]
}

@test "overwrite churn keeps memserver usage bounded" {
	start_memservers 3 --size 256M
	# Each store queue appends to its own open segment: 4 workers keep
	# at most 4 open segments (x2 replicas) besides the live data.
	start_serve --size 64M --replicas 2 --depth 4
	head -c 16M /dev/urandom >"$FM_DIR/live"
	nbdcopy "$FM_DIR/live" "$NBD_URI"
	# 16 MiB of random data lives on the device; overwrite it 12 times
	# (384 MiB written, 768 MiB with replicas: more than the 768 MiB pool).
	for i in $(seq 12); do
		head -c 16M /dev/urandom >"$FM_DIR/live"
		nbdcopy --connections=1 --requests=4 "$FM_DIR/live" "$NBD_URI"
	done
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 16 << 20 )) "$FM_DIR/live" "$FM_DIR/out"
	# The cleaner gives dead segments back: usage settles near the live
	# data x 2 replicas plus open segments, far below what was written.
	wait_until 60 usage_at_most $(( 160 << 20 )) || {
		echo "memservers use $(used_bytes_total) bytes; store: $(serve_log | tail -n 1)"
		false
	}
	[ "$(serve_stat cleaned_segments)" -gt 0 ]
}

@test "kill -9 of one memserver during a fio verify run: no errors, lost copies rebuilt" {
	require_cmd fio
	start_memservers 3 --size 256M
	start_serve --size 128M --replicas 2 --timeout 2s
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --do_verify=1 &
	fio_pid=$!
	track_pid "$fio_pid"
	# Kill m2 once it holds some of the device's data.
	wait_until 60 ms_holds_more_than m2 $(( 8 << 20 ))
	kill -KILL "$(ms_pid m2)"
	fio_rc=0
	wait_exit "$fio_pid" || fio_rc=$?
	cat "$FM_DIR/fio.out"
	[ "$fio_rc" -eq 0 ]
	grep -q 'err= 0' "$FM_DIR/fio.out"
	# Every segment gets its second copy back on the surviving servers.
	wait_until 120 serve_stat_is degraded_segments -eq 0
	[ "$(serve_stat rereplicated_segments)" -gt 0 ]
	[ "$(serve_stat read_errors)" -eq 0 ]
	# And the data reads back whole from what is left.
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --verify_only
	grep -q 'err= 0' "$FM_DIR/fio.out"
}

@test "all memservers gone: I/O fails with errors, within the timeout" {
	start_memservers 3 --size 64M
	start_serve --size 32M --timeout 2s
	head -c 4M /dev/urandom >"$FM_DIR/in"
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	for m in m1 m2 m3; do kill -KILL "$(ms_pid "$m")"; done
	# Reads of stored pages and new writes fail rather than hang
	# (timeout(1) is only the test's safety net, 124 would fail it).
	run timeout 120 nbdcopy --connections=1 "$NBD_URI" "$FM_DIR/out"
	[ "$status" -ne 0 ]
	[ "$status" -ne 124 ]
	run timeout 120 nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	[ "$status" -ne 0 ]
	[ "$status" -ne 124 ]
	# serve itself is still up and answering the handshake.
	nbd_ready
}

@test "a corrupted byte in one memserver's copy is detected and served from the other" {
	require_cmd od
	start_memservers 3 --size 64M
	# One store queue: records are appended back to back, in order.
	start_serve --size 16M --replicas 2 --queues 1 --depth 1
	uuid=$(serve_uuid)
	[ -n "$uuid" ]
	head -c 1M /dev/urandom >"$FM_DIR/in"
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	# Random pages are stored raw: 32-byte header + 4096 bytes (+ a
	# 16-byte tag, sealed: records then start 4144 bytes apart).  Flip
	# a payload byte of record 0 on m1, record 1 on m2, record 2 on m3:
	# every page keeps one good copy, and whichever copy a read picks
	# for a segment, one of its two corrupted records is read.
	n=0
	for i in 1 2 3; do
		off=$(( (i - 1) * 4144 + 2000 ))
		for seg in $(fm_client "m$i" --uuid "$uuid" list | awk '/^[0-9]/ {print $1}'); do
			fm_client "m$i" --uuid "$uuid" read "$seg" "$off" 1 "$FM_DIR/b"
			byte=$(od -An -tu1 "$FM_DIR/b" | tr -d ' ')
			printf "\\$(printf '%03o' $(( byte ^ 255 )))" >"$FM_DIR/b"
			fm_client "m$i" --uuid "$uuid" write "$seg" "$off" "$FM_DIR/b"
			n=$(( n + 1 ))
		done
	done
	[ "$n" -ge 2 ]
	nbdcopy --connections=1 "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 1 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	# Sealed by default: a damaged copy fails to open (auth_errors).
	[ "$(serve_stat auth_errors)" -gt 0 ]
	[ "$(serve_stat read_errors)" -eq 0 ]
}

@test "several connections at once, and a clear refusal past --queues" {
	start_memservers 3 --size 64M
	start_serve --size 16M --queues 2 --depth 4
	nbd_hold 1
	nbd_hold 2
	grep -q go "$FM_DIR/hold.1"
	grep -q go "$FM_DIR/hold.2"
	run nbdinfo "$NBD_URI"
	[ "$status" -ne 0 ]
	grep -q 'too many connections' "$FM_DIR/serve/log"
}

@test "nbdcopy with four connections (multi-conn) round trip" {
	start_memservers 3 --size 64M
	start_serve --size 32M
	head -c 32M /dev/urandom >"$FM_DIR/in"
	nbdcopy --connections=4 "$FM_DIR/in" "$NBD_URI"
	nbdcopy --connections=4 "$NBD_URI" "$FM_DIR/out"
	cmp "$FM_DIR/in" "$FM_DIR/out"
	[ "$(grep -c 'nbd conn .*: serving' "$FM_DIR/serve/log")" -ge 4 ]
}

@test "TCP listener, settings from --config, SIGTERM ends serve cleanly" {
	start_memservers 3 --size 64M
	port=$(free_port)
	cat >"$FM_DIR/farmem.conf" <<-EOF
	# test config
	[device]
	servers = $FM_SERVERS
	secret-file = $FM_SECRET
	size = 16M
	replicas = 3
	compress = zstd
	level = -5
	[serve]
	nbd = tcp://127.0.0.1:$port
	EOF
	NBD_URI="nbd://127.0.0.1:$port/"
	launch_serve --config "$FM_DIR/farmem.conf"
	grep -q '3 replicas over 3 servers, zstd level -5' "$FM_DIR/serve/log"
	head -c 4M /dev/urandom >"$FM_DIR/in"
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 4 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	stop_serve TERM
	grep -q 'stats pages_stored=1024 ' "$FM_DIR/serve/log"
	# Random bytes: not one page was worth asking zstd about.
	grep -q ' incompressible_pages=1024$' "$FM_DIR/serve/log"
}

@test "bad flags and config values give clear errors" {
	s=tcp://127.0.0.1:1,tcp://127.0.0.1:2
	base=(--secret-file "$FM_SECRET" --nbd "unix:$FM_DIR/x.sock")
	run "$FM_BLK" serve --servers "$s" --size 1G --replicas 3 "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--replicas: 3 replicas need at least 3 servers, got 2"* ]]
	run "$FM_BLK" serve --servers "$s" --size 1000 "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--size: size 1000 is not a multiple of 4096"* ]]
	run "$FM_BLK" serve --servers "$s" --size 1G --compress gzip "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--compress: unknown compression 'gzip'"* ]]
	run "$FM_BLK" serve --servers "$s" --size 1G --replicas two "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--replicas"*"'two'"* ]]
	run "$FM_BLK" serve --servers "tcp://nohost" --size 1G "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"server 'tcp://nohost' is not tcp://host:port"* ]]
	run "$FM_BLK" serve --servers "$s" --size 1G --secret-file "$FM_SECRET"
	[ "$status" -eq 2 ]
	[[ "$output" == *"no NBD listen address"* ]]
	run "$FM_BLK" serve --servers "$s" --size 1G --bogus 1 "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"unknown option '--bogus'"* ]]
	run "$FM_BLK" serve --servers "$s" --size 1G --secret-file "$FM_DIR/none" --nbd "unix:$FM_DIR/x.sock"
	[ "$status" -ne 0 ]
	[[ "$output" == *"--secret-file"* ]]
	printf '[device]\nsize = 1G\nreplicaz = 2\n' >"$FM_DIR/bad.conf"
	run "$FM_BLK" serve --config "$FM_DIR/bad.conf"
	[ "$status" -eq 2 ]
	[[ "$output" == *"$FM_DIR/bad.conf"*"device:replicaz"* ]]
	run "$FM_BLK" serve --config "$FM_DIR/missing.conf"
	[ "$status" -ne 0 ]
	[[ "$output" == *"missing.conf"* ]]
	# Negative zstd levels are fine; --check-config prints the result.
	run "$FM_BLK" serve --servers "$s" --size 1G --level -7 --uuid \
		11111111-2222-4333-8444-555555555555 --check-config "${base[@]}"
	[ "$status" -eq 0 ]
	[[ "$output" == *"replicas     2"* ]]
	[[ "$output" == *"compress     zstd level -7"* ]]
	[[ "$output" == *"uuid         11111111-2222-4333-8444-555555555555"* ]]
	# No level given: the one the codec uses, zstd 1 for single pages.
	run "$FM_BLK" serve --servers "$s" --size 1G --check-config "${base[@]}"
	[ "$status" -eq 0 ]
	[[ "$output" == *"compress     zstd level 1"* ]]
	run "$FM_BLK" serve --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--nbd ADDR"* ]]
}
