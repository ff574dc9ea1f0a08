#!/usr/bin/env bats
# Pages as a donor sees them: real memservers on loopback, `farmem-blk
# serve` and NBD clients, and the memservers' own memory read and
# rewritten through /proc/PID/mem (tests/tools/procmem) as a hostile
# donor could.  Each attack also runs with --encrypt none, the control
# that shows the test sees the attack succeed when the protection is off.
#
# Pages are written with --compress none so a plain record holds the
# page as it is: what the control must find, the sealed run must not.

load helpers
load nbd_helpers

PROCMEM="$FARMEM_BUILD/tests/tools/procmem"
POOL=64M
POOL_MIN=$(( 32 << 20 ))   # the pool mapping is at least this big

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_file "$PROCMEM"
	require_cmd nbdinfo nbdcopy
	[ "$(id -u)" -eq 0 ] || skip "reading /proc/PID/mem of the memservers needs root"
	fm_setup
	start_memservers 2 --size "$POOL"
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ] && [ -f "$FM_DIR/serve/log" ]; then
		echo "--- serve log:" >&2
		tail -n 40 "$FM_DIR/serve/log" >&2
	fi
}

# canary_file FILE TEXT: 1 MiB of TEXT lines.
canary_file() {
	yes "$2" | head -c 1048576 >"$1"
}

# found WHERE TEXT: occurrences of TEXT in both memservers (WHERE: pool,
# or all of their writable anonymous memory).
found() {
	local min=0 sum=0 n m
	[ "$1" = pool ] && min=$POOL_MIN
	for m in m1 m2; do
		n=$("$PROCMEM" count "$(ms_pid "$m")" "$min" "$2") || return 1
		sum=$(( sum + n ))
	done
	echo "$sum"
}

# forge_page PAGE MAGIC [SERVERS]: overwrite every MAGIC (FMRC: plain,
# FMRS: sealed) record of device page PAGE held by SERVERS (default
# both) with 0x58 bytes; plain ones get their checksum recomputed.
# Prints how many records were rewritten.
forge_page() {
	local page=$1 magic=$2 servers=${3:-m1 m2} m pid addr n=0
	for m in $servers; do
		pid=$(ms_pid "$m")
		for addr in $("$PROCMEM" records "$pid" "$POOL_MIN" "$page" |
			      awk -v m="$magic" '$4 == m { print $1 }'); do
			"$PROCMEM" forge "$pid" "$addr" 58 >&2 || return 1
			n=$(( n + 1 ))
		done
	done
	echo "$n"
}

# read_page PAGE: qemu-io reads one page and checks it is all 0x58
# (what forge_page wrote); its output is in $output.
read_forged_page() {
	run qemu-io -f raw -c "read -P 0x58 $(( $1 * 4096 )) 4096" "$NBD_URI"
}

@test "canaries written through serve: none in the memservers' memory when sealed, found with --encrypt none" {
	local sealed="FARMEM-CANARY-SEALED-$RANDOM$RANDOM" plain="FARMEM-CANARY-PLAIN-$RANDOM$RANDOM"
	start_serve --size 16M --replicas 2 --compress none
	grep -q "records aes256gcm\|records xchacha20poly1305" "$FM_DIR/serve/log"
	canary_file "$FM_DIR/in" "$sealed"
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	nbdcopy --connections=1 "$NBD_URI" "$FM_DIR/out"
	cmp -n 1048576 "$FM_DIR/in" "$FM_DIR/out"
	[ "$(serve_stat pages_stored)" -eq 256 ]
	# Nowhere in either memserver: not the pool, not a buffer.
	[ "$(found all "$sealed")" -eq 0 ]
	stop_serve
	# Control: the same scan finds a plain device's pages in the pool.
	start_serve --size 16M --replicas 2 --compress none --encrypt none
	canary_file "$FM_DIR/in" "$plain"
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	[ "$(found pool "$plain")" -gt 256 ]
	[ "$(found all "$sealed")" -eq 0 ]
}

@test "a record forged on both replicas: sealed read is EIO, counted in stats and metrics" {
	require_cmd qemu-io curl
	local port
	port=$(free_port)
	start_serve --size 16M --replicas 2 --compress none \
		--metrics "127.0.0.1:$port"
	head -c 1M /dev/urandom >"$FM_DIR/in"
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	[ "$(forge_page 3 FMRS)" -eq 2 ]
	read_forged_page 3
	[[ "$output" == *"Input/output error"* ]]
	[[ "$output" != *"read 4096/4096"* ]]
	[ "$(serve_stat auth_errors)" -ge 2 ]
	[ "$(serve_stat read_errors)" -ge 1 ]
	[ "$(serve_stat checksum_errors)" -eq 0 ]
	grep -q "page 3: record failed to open" "$FM_DIR/serve/log"
	run curl -fsS --max-time 10 "http://127.0.0.1:$port/metrics"
	[ "$status" -eq 0 ]
	local n
	n=$(echo "$output" | sed -n 's/^farmem_blk_errors_total{kind="auth"} //p')
	[ -n "$n" ] && [ "$n" -ge 2 ]
	# The pages around it are untouched.
	run qemu-io -f raw -c "read 8192 4096" -c "read 16384 4096" "$NBD_URI"
	[[ "$output" != *"error"* ]]
}

@test "control: with --encrypt none the same forgery (checksum recomputed) is served as good, nothing counted" {
	require_cmd qemu-io
	start_serve --size 16M --replicas 2 --compress none --encrypt none
	head -c 1M /dev/urandom >"$FM_DIR/in"
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	[ "$(forge_page 3 FMRC)" -eq 2 ]
	read_forged_page 3
	# The donor's bytes come back as the page, with status 0.
	[[ "$output" == *"read 4096/4096"* ]]
	[[ "$output" != *"Pattern verification failed"* ]]
	[[ "$output" != *"error"* ]]
	[ "$(serve_stat checksum_errors)" -eq 0 ]
	[ "$(serve_stat read_errors)" -eq 0 ]
	[ "$(serve_stat auth_errors)" -eq 0 ]
}

@test "a record forged on one replica only: the read returns the right data from the other" {
	require_cmd qemu-io
	start_serve --size 16M --replicas 2 --compress none
	# Page 3 is all 0x41, so the right data is easy to check.
	head -c 1M /dev/urandom >"$FM_DIR/in"
	printf 'A%.0s' $(seq 4096) | dd of="$FM_DIR/in" bs=4096 seek=3 conv=notrunc status=none
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	[ "$(forge_page 3 FMRS m1)" -eq 1 ]
	run qemu-io -f raw -c "read -P 0x41 12288 4096" "$NBD_URI"
	[[ "$output" == *"read 4096/4096"* ]]
	[[ "$output" != *"Pattern verification failed"* ]]
	[ "$(serve_stat read_errors)" -eq 0 ]
	# Whichever copy the read tried first, no more than the forged one
	# failed (test_store_seal pins the copy and checks the count).
	[ "$(serve_stat auth_errors)" -le 1 ]
	nbdcopy --connections=1 "$NBD_URI" "$FM_DIR/out"
	cmp -n 1048576 "$FM_DIR/in" "$FM_DIR/out"
}

@test "--encrypt: bad values are refused naming the flag or file key; check-config shows it" {
	run "$FM_BLK" serve --servers "$(ms_addr m1)" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$FM_DIR/sock" --encrypt rot13
	[ "$status" -eq 2 ]
	[[ "$output" == *"--encrypt"* && "$output" == *"'rot13'"* ]]
	printf '[device]\nservers = %s\nsecret-file = %s\nsize = 16M\nencrypt = des\n' \
		"$(ms_addr m1)" "$FM_SECRET" >"$FM_DIR/farmem.conf"
	run "$FM_BLK" serve --config "$FM_DIR/farmem.conf" --nbd "unix:$FM_DIR/sock"
	[ "$status" -eq 2 ]
	[[ "$output" == *"farmem.conf"* && "$output" == *"device:encrypt"* && "$output" == *"'des'"* ]]
	run "$FM_BLK" serve --servers "$(ms_addr m1)" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$FM_DIR/sock" --encrypt xchacha20poly1305 --check-config
	[ "$status" -eq 0 ]
	[[ "$output" == *"encrypt      xchacha20poly1305"* ]]
	run "$FM_BLK" serve --servers "$(ms_addr m1)" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$FM_DIR/sock" --check-config
	[[ "$output" == *"encrypt      auto"* ]]
}
