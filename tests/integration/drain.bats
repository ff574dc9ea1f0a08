#!/usr/bin/env bats
# farmem-memserver --drain and the pool that gives memory back (reserve):
# real memservers on loopback, a real `farmem-blk serve` moving its
# segments when told (NOTICE), data compared byte for byte through NBD.

load helpers
load nbd_helpers

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_file "$FM_CLIENT"
	require_cmd nbdcopy
	fm_setup
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ] && [ -f "$FM_DIR/serve/log" ]; then
		echo "--- serve log:" >&2
		tail -n 40 "$FM_DIR/serve/log" >&2
	fi
}

drain() {
	"$FM_MEMSERVER" --drain "$(ms_addr "$1")" --secret-file "${3:-$FM_SECRET}" \
		--timeout "${2:-60s}"
}

segments_of() {
	stat_field "$1" segments
}

# fake_root DIR AVAIL_KIB: a /proc/meminfo saying MemAvailable is that.
fake_meminfo() {
	mkdir -p "$1/proc"
	printf 'MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:   %s kB\n' \
		"$2" >"$1/proc/meminfo.new"
	mv "$1/proc/meminfo.new" "$1/proc/meminfo"
}

@test "--drain of one of three servers under serve: nothing lost, it ends empty" {
	start_memservers 3 --size 64M --segment-size 1M
	start_serve --size 32M --replicas 2 --segment-size 1M
	make_mixed "$FM_DIR/in" 24
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	held=$(segments_of m1)
	[ "$held" -gt 0 ]
	t0=$(date +%s%N)
	run drain m1 60s
	t1=$(date +%s%N)
	echo "$output"
	[ "$status" -eq 0 ]
	echo "# drained $held segment(s) of 1 MiB in $(( (t1 - t0) / 1000000 )) ms" >&3
	[ "$(segments_of m1)" -eq 0 ]
	# It refuses new segments now; the others hold every copy.
	run fm_client m1 alloc 1048576
	[ "$status" -eq 1 ]
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n "$(stat -c %s "$FM_DIR/in")" "$FM_DIR/in" "$FM_DIR/out"
	grep -q "asked to move every segment away" "$FM_DIR/serve/log"
}

# fio against the export (as in nbd_serve.bats).
fio_nbd() {
	(cd "$FM_DIR" && fio --name=farmem --ioengine=nbd --uri="$NBD_URI" --bs=4k \
		--randrepeat=1 --verify_fatal=1 --output="$FM_DIR/fio.out" "$@")
}

ms_holds_more_than() {
	local u
	u=$(stat_field "$1" used_bytes) && [ -n "$u" ] && [ "$u" -gt "$2" ]
}

@test "--drain during a fio verify run: no errors, the drained server ends empty" {
	require_cmd fio
	start_memservers 3 --size 256M --segment-size 1M
	start_serve --size 128M --replicas 2 --segment-size 1M
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --do_verify=1 &
	fio_pid=$!
	track_pid "$fio_pid"
	wait_until 60 ms_holds_more_than m2 $(( 8 << 20 ))
	run drain m2 120s
	echo "$output"
	[ "$status" -eq 0 ]
	fio_rc=0
	wait_exit "$fio_pid" || fio_rc=$?
	cat "$FM_DIR/fio.out"
	[ "$fio_rc" -eq 0 ]
	grep -q 'err= 0' "$FM_DIR/fio.out"
	# Segments opened while fio ran went elsewhere: m2 still holds none.
	[ "$(segments_of m2)" -eq 0 ]
	[ "$(serve_stat read_errors)" -eq 0 ]
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --verify_only
	grep -q 'err= 0' "$FM_DIR/fio.out"
}

@test "a drain the client cannot follow (no other server has room) times out: exit 1, nothing lost" {
	start_memservers 2 --size 64M --segment-size 1M
	start_serve --size 16M --replicas 2 --segment-size 1M
	make_mixed "$FM_DIR/in" 8
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	held=$(segments_of m1)
	[ "$held" -gt 0 ]
	run drain m1 3s
	echo "$output"
	[ "$status" -eq 1 ]
	echo "$output" | grep -q "timed out"
	# Nothing was freed behind the client's back.
	[ "$(segments_of m1)" -eq "$held" ]
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n "$(stat -c %s "$FM_DIR/in")" "$FM_DIR/in" "$FM_DIR/out"
}

@test "drain: a wrong secret, a client's key file and a bad address are refused" {
	start_memserver m1 --size 16M --segment-size 1M
	make_secret "$FM_DIR/other"
	run drain m1 5s "$FM_DIR/other"
	[ "$status" -eq 2 ]
	echo "$output" | grep -qi "permission denied\|wrong secret"
	"$FM_MEMSERVER" --client-key bob --secret-file "$FM_SECRET" >"$FM_DIR/bob.key"
	run "$FM_CLIENT" --server "$(ms_addr m1)" --key-file "$FM_DIR/bob.key" drain 5000
	[ "$status" -eq 1 ]
	echo "$output" | grep -q EPERM
	ms_log m1 | grep -q "DRAIN refused: client bob is not the cluster identity"
	# Still serving: bob gets a segment.
	run "$FM_CLIENT" --server "$(ms_addr m1)" --key-file "$FM_DIR/bob.key" alloc 1048576
	[ "$status" -eq 0 ]
	run "$FM_MEMSERVER" --drain "udp://x" --secret-file "$FM_SECRET"
	[ "$status" -eq 2 ]
	# local: the config's first tcp listen address (the unit's ExecStop).
	printf '[memserver]\nlisten = rdma://127.0.0.1:1\nsecret-file = %s\n' "$FM_SECRET" >"$FM_DIR/r.conf"
	run "$FM_MEMSERVER" --config "$FM_DIR/r.conf" --drain local
	[ "$status" -eq 2 ]
	echo "$output" | grep -q "does not start with a tcp"
	run "$FM_MEMSERVER" --drain "$(ms_addr m1)" --secret-file "$FM_SECRET" --timeout bogus
	[ "$status" -eq 2 ]
	echo "$output" | grep -q -- "--timeout 'bogus'"
}

pool_is() {
	[ "$(stat_field "$1" pool_bytes)" -eq "$2" ]
}

held_at_most() {
	[ "$(segments_of "$1")" -le "$2" ]
}

@test "--drain local drains the server the config names (as the unit's ExecStop does)" {
	start_memserver m1 --size 16M --segment-size 1M
	printf '[memserver]\nlisten = tcp://0.0.0.0:%s\nsecret-file = %s\n' \
		"$(ms_port m1)" "$FM_SECRET" >"$FM_DIR/ms.conf"
	fm_client m1 alloc 1048576 >/dev/null
	run "$FM_MEMSERVER" --config "$FM_DIR/ms.conf" --drain local --timeout 2s
	[ "$status" -eq 1 ]      # the test client moves nothing
	ms_log m1 | grep -q "drain: asked to move every segment away"
}

@test "reserve: below it the pool gives memory back and clients move segments; it grows back" {
	root="$FM_DIR/root1"
	fake_meminfo "$root" 8000000
	FARMEM_TEST_PRESSURE_ROOT="$root" start_memserver m1 --size 64M --segment-size 1M \
		--reserve 1G --min-size 2M
	start_memserver m2 --size 64M --segment-size 1M
	start_memserver m3 --size 64M --segment-size 1M
	FM_SERVERS="$(ms_addr m1),$(ms_addr m2),$(ms_addr m3)"
	start_serve --size 32M --replicas 2 --segment-size 1M
	make_mixed "$FM_DIR/in" 32
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	held=$(segments_of m1)
	[ "$held" -gt 2 ]
	pool_is m1 $(( 64 << 20 ))
	# 62 MiB short of reserve: every free slot goes back at once, then
	# clients are asked for what is over min-size (2 MiB).
	fake_meminfo "$root" $(( 1024 * 1024 - 62 * 1024 ))
	wait_until 60 pool_is m1 $(( 2 << 20 ))
	wait_until 60 held_at_most m1 2
	ms_log m1 | grep -q "asked clients to move"
	grep -q "asked to move .* segment(s) away" "$FM_DIR/serve/log"
	run fm_client m1 alloc 1048576
	[ "$status" -eq 1 ]
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n "$(stat -c %s "$FM_DIR/in")" "$FM_DIR/in" "$FM_DIR/out"
	# Room again, far above reserve: the pool grows back to its size.
	fake_meminfo "$root" 8000000
	wait_until 30 pool_is m1 $(( 64 << 20 ))
	ms_log m1 | grep -q "took .* segment(s) back"
}

scrape() {
	curl -fsS --max-time 10 "http://127.0.0.1:$1/metrics"
}

@test "reserve: a hovering MemAvailable does not make the pool flap" {
	root="$FM_DIR/root1"
	mport=$(free_port)
	fake_meminfo "$root" $(( 1024 * 1024 - 16 * 1024 ))
	FARMEM_TEST_PRESSURE_ROOT="$root" start_memserver m1 --size 64M --segment-size 1M \
		--reserve 1G --metrics "127.0.0.1:$mport"
	wait_until 30 pool_is m1 $(( 48 << 20 ))
	if command -v curl >/dev/null; then
		out=$(scrape "$mport")
		echo "$out" | grep -qx "farmem_memserver_pool_bytes $(( 48 << 20 ))"
		echo "$out" | grep -qx "farmem_memserver_pool_size_max_bytes $(( 64 << 20 ))"
		echo "$out" | grep -qx 'farmem_memserver_pool_state{state="shrunk"} 1'
		echo "$out" | grep -qx "farmem_memserver_host_available_bytes $(( (1024 * 1024 - 16 * 1024) * 1024 ))"
	fi
	# Back just above reserve (less than the band): no growth.
	fake_meminfo "$root" $(( 1024 * 1024 + 16 * 1024 ))
	sleep 2.5
	pool_is m1 $(( 48 << 20 ))
	[ "$(ms_log m1 | grep -c 'took .* segment(s) back')" -eq 0 ]
}

@test "reserve: a client that cannot move its segments loses them here, not its data" {
	root="$FM_DIR/root1"
	fake_meminfo "$root" 8000000
	printf '[memserver]\nnotice-deadline = 2s\n' >"$FM_DIR/ms.conf"
	FARMEM_TEST_PRESSURE_ROOT="$root" start_memserver m1 --size 64M --segment-size 1M \
		--reserve 1G --config "$FM_DIR/ms.conf"
	start_memserver m2 --size 64M --segment-size 1M
	FM_SERVERS="$(ms_addr m1),$(ms_addr m2)"
	start_serve --size 16M --replicas 2 --segment-size 1M
	make_mixed "$FM_DIR/in" 8
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	[ "$(segments_of m1)" -gt 0 ]
	# Everything must go, and m2 already holds every other copy.
	fake_meminfo "$root" 1024
	wait_until 60 held_at_most m1 0
	ms_log m1 | grep -q "did not move segment .* by its deadline: freed it"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n "$(stat -c %s "$FM_DIR/in")" "$FM_DIR/in" "$FM_DIR/out"
}
