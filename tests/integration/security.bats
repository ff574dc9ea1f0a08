#!/usr/bin/env bats
# Every attack of issue 11, tried as an attacker would against real
# processes on loopback (memservers, `farmem-blk serve`, NBD clients), each
# asserting that it now fails, with control runs that show the test sees
# the attack succeed where the protection is off.  One section per
# mechanism; a test's name starts with its section, which setup() uses:
#
#   identity:  per-client keys, devices scoped per client, quotas, boot ids
#   channel:   a man in the middle (fm-mitm) injecting, replaying, altering
#   pages:     a hostile donor reading and rewriting its own pool memory
#   listeners: handshake floods, slow-loris, stalled readers, metrics
#   nbd:       serve's TLS, socket mode, open listener, deadlines
bats_require_minimum_version 1.5.0
load helpers
load nbd_helpers

MITM="$FARMEM_BUILD/tests/tools/fm-mitm"
PROCMEM="$FARMEM_BUILD/tests/tools/procmem"
FLOOD="$FARMEM_BUILD/tests/tools/fm-flood"
POOL=64M
POOL_MIN=$(( 32 << 20 ))   # the pool mapping is at least this big

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_file "$FM_CLIENT"
	require_cmd nbdinfo nbdcopy perl
	case "$BATS_TEST_DESCRIPTION" in
	channel:*)
		require_file "$MITM"
		fm_setup
		start_memservers 2 --size 64M --segment-size 1M ;;
	pages:*)
		require_file "$PROCMEM"
		[ "$(id -u)" -eq 0 ] || skip "reading /proc/PID/mem of the memservers needs root"
		fm_setup
		start_memservers 2 --size "$POOL" ;;
	listeners:*)
		require_file "$FLOOD"
		fm_setup ;;
	*)
		fm_setup ;;
	esac
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ]; then
		for f in mitm.log serve/log; do
			[ -f "$FM_DIR/$f" ] || continue
			echo "--- $f:" >&2
			tail -n 40 "$FM_DIR/$f" >&2
		done
	fi
}


# ==== identity ====================================================
# Client identities (issue 11): per-client keys, devices scoped per
# client, quotas, and boot ids that make segment ids unique across
# memserver restarts.  Real memservers on loopback, real `farmem-blk
# serve` and real NBD clients; fm-client plays the other clients.

# make_key NAME [SECRET]: $FM_DIR/NAME.key, made the documented way.
make_key() {
	(umask 077 && "$FM_MEMSERVER" --client-key "$1" --secret-file "${2:-$FM_SECRET}" \
		>"$FM_DIR/$1.key")
}

# as_client KEYNAME MS [fm-client options] CMD [ARGS]: fm-client against
# memserver MS authenticated with that client's key file.
as_client() {
	local key=$1 ms=$2
	shift 2
	"$FM_CLIENT" --server "$(ms_addr "$ms")" --key-file "$FM_DIR/$key.key" "$@"
}

# serve_as KEYNAME [serve flags]: serve the memservers as that client.
serve_as() {
	local key=$1
	shift
	serve_sock
	launch_serve --servers "$FM_SERVERS" --key-file "$FM_DIR/$key.key" \
		--nbd "unix:$NBD_SOCK" "$@"
}

list_count() {
	sed -n 's/^count=//p'
}

@test "identity: key files: made by --client-key, strict, reserved name refused" {
	make_key alice
	[ "$(stat -c %a "$FM_DIR/alice.key")" = 600 ]
	grep -qx 'name = alice' "$FM_DIR/alice.key"
	grep -Eqx 'key = [0-9a-f]{64}' "$FM_DIR/alice.key"
	# The same name and secret always give the same key; another secret not.
	make_secret "$FM_DIR/other"
	"$FM_MEMSERVER" --client-key alice --secret-file "$FM_SECRET" | cmp - "$FM_DIR/alice.key"
	run bash -c "'$FM_MEMSERVER' --client-key alice --secret-file '$FM_DIR/other' | cmp -s - '$FM_DIR/alice.key'"
	[ "$status" -ne 0 ]
	run "$FM_MEMSERVER" --client-key cluster --secret-file "$FM_SECRET"
	[ "$status" -eq 2 ]
	[[ "$output" == *"reserved"* ]]
	run "$FM_MEMSERVER" --client-key 'Bob/x' --secret-file "$FM_SECRET"
	[ "$status" -eq 2 ]
	[[ "$output" == *"'Bob/x'"* ]]
	run "$FM_MEMSERVER" --client-key bob
	[ "$status" -eq 2 ]
	[[ "$output" == *"--secret-file"* ]]
}

@test "identity: takeover: bob claims alice's device uuid and sees, reads, writes and frees nothing of hers" {
	start_memservers 2 --size 64M --segment-size 1M
	make_key alice
	make_key bob
	serve_as alice --size 16M --replicas 2 --segment-size 1M
	uuid=$(serve_uuid)
	[ -n "$uuid" ]
	head -c 2M /dev/urandom >"$FM_DIR/in"
	nbdcopy "$FM_DIR/in" "$NBD_URI"

	# Control: the same tool authenticated as alice sees her segments
	# and reads them: the attack below would work without scoping.
	as_client alice m1 --uuid "$uuid" list >"$FM_DIR/alice.list"
	n=$(list_count <"$FM_DIR/alice.list")
	[ "$n" -gt 0 ]
	seg=$(awk '/^[0-9]/ {print $1; exit}' "$FM_DIR/alice.list")
	as_client alice m1 --uuid "$uuid" read "$seg" 0 4096 "$FM_DIR/alice.page"
	[ -s "$FM_DIR/alice.page" ]

	# bob (a valid key of his own) claiming alice's uuid: an empty device.
	for m in m1 m2; do
		run as_client bob "$m" --uuid "$uuid" list
		[ "$status" -eq 0 ]
		[ "$(echo "$output" | list_count)" -eq 0 ]
	done
	run as_client bob m1 --uuid "$uuid" read "$seg" 0 4096 "$FM_DIR/bob.page"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	head -c 4096 /dev/zero >"$FM_DIR/zeros"
	run as_client bob m1 --uuid "$uuid" write "$seg" 0 "$FM_DIR/zeros"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	run as_client bob m1 --uuid "$uuid" free "$seg"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	# The cluster's own identity (the secret) is just another client.
	run fm_client m1 --uuid "$uuid" list
	[ "$status" -eq 0 ]
	[ "$(echo "$output" | list_count)" -eq 0 ]
	# bob's own device of that uuid is his alone.
	as_client bob m1 --uuid "$uuid" --keep alloc 1048576
	[ "$(as_client alice m1 --uuid "$uuid" list | list_count)" -eq "$n" ]

	# alice's segment is untouched and her data reads back whole.
	as_client alice m1 --uuid "$uuid" read "$seg" 0 4096 "$FM_DIR/alice.again"
	cmp "$FM_DIR/alice.page" "$FM_DIR/alice.again"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 2 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	[ "$(serve_stat checksum_errors)" -eq 0 ]
}

@test "identity: a wrong key is refused, by the memserver and by serve" {
	start_memservers 1 --size 64M
	make_secret "$FM_DIR/other"
	make_key alice "$FM_DIR/other"       # alice's name, another cluster's key
	run as_client alice m1 ping
	[ "$status" -eq 3 ]
	[[ "$output" == *EACCES* ]]
	grep -q "authentication failed for client alice" "$FM_DIR/ms-m1/log"
	serve_sock
	run timeout 60 "$FM_BLK" serve --servers "$FM_SERVERS" --key-file "$FM_DIR/alice.key" \
		--size 16M --nbd "unix:$NBD_SOCK"
	[ "$status" -ne 0 ]
	[ "$status" -ne 124 ]
	[[ "$output" == *"refused"* || "$output" == *"key"* ]]
	# Control: the right key of the same name is let in.
	make_key alice
	as_client alice m1 ping
	# A damaged key file is an error naming the file and the line.
	sed -i 's/^key = ./key = g/' "$FM_DIR/alice.key"
	run "$FM_BLK" serve --servers "$FM_SERVERS" --key-file "$FM_DIR/alice.key" \
		--size 16M --nbd "unix:$NBD_SOCK"
	[ "$status" -ne 0 ]
	[[ "$output" == *"$FM_DIR/alice.key"* ]]
	[[ "$output" == *"line 3"* ]]
	# A key file and the secret at once: which identity would be a guess.
	make_key alice
	run "$FM_BLK" serve --servers "$FM_SERVERS" --key-file "$FM_DIR/alice.key" \
		--secret-file "$FM_SECRET" --size 16M --nbd "unix:$NBD_SOCK" --check-config
	[ "$status" -ne 0 ]
	[[ "$output" == *"not both"* ]]
}

@test "identity: quota: one client cannot take every free segment; another still gets space" {
	# Control first: without a quota bob takes the whole pool.
	start_memserver open --size 64M --segment-size 1M
	start_memserver limited --size 64M --segment-size 1M --quota 50% \
		--quota-clients carol:4M
	make_key alice
	make_key bob
	make_key carol
	run as_client bob open --keep fill
	[[ "$output" == *"allocated=64 "*"error=ENOSPC"* ]]
	run as_client alice open --keep fill
	[[ "$output" == *"allocated=0 "*"error=ENOSPC"* ]]

	run as_client bob limited --keep fill
	[ "$status" -eq 0 ]
	[[ "$output" == *"allocated=32 "*"error=EDQUOT"* ]]
	# Another uuid of bob's shares his quota.
	run as_client bob limited --uuid 00000000-0000-4000-8000-0000000000b2 alloc 1048576
	[ "$status" -eq 1 ]
	[[ "$output" == *EDQUOT* ]]
	run as_client alice limited --keep fill
	[[ "$output" == *"allocated=32 "* ]]
	# A named limit overrides the default.
	run as_client carol limited --keep fill
	[[ "$output" == *"allocated=0 "* ]]          # the pool is full now
	stop_memserver limited
	restart_memserver limited
	run as_client carol limited --keep fill
	[[ "$output" == *"allocated=4 "*"error=EDQUOT"* ]]
	grep -q "quota 50%" "$FM_DIR/ms-limited/log"
}

@test "identity: quota: serve treats a client's used-up quota like a full server" {
	start_memservers 1 --size 64M --segment-size 1M --quota-clients bob:8M
	make_key bob
	serve_as bob --size 32M --replicas 1 --segment-size 1M --timeout 2s
	head -c 24M /dev/urandom >"$FM_DIR/in"
	run timeout 180 nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	[ "$status" -ne 0 ]
	[ "$status" -ne 124 ]
	# The memserver said why; the store answered the write as full.
	grep -q "alloc: Disk quota exceeded" "$FM_DIR/serve/log"
	grep -q "No space left on device" "$FM_DIR/serve/log"
	# Bounded: bob holds at most his 8 segments; the rest of the pool is free.
	[ "$(stat_field m1 used_bytes)" -le $(( 8 << 20 )) ]
	nbd_ready
}

@test "identity: an id from before a memserver restart names nothing after it" {
	start_memserver m1 --size 8M --segment-size 1M
	make_key alice
	before=$(as_client alice m1 boot)
	old=$(as_client alice m1 --keep alloc 1048576)
	stop_memserver m1
	restart_memserver m1
	after=$(as_client alice m1 boot)
	[ "$before" != "$after" ]
	new=$(as_client alice m1 --keep alloc 1048576)
	# The same slot again (low 32 bits), but not the same id.
	[ $(( old & 0xffffffff )) -eq $(( new & 0xffffffff )) ]
	[ "$old" != "$new" ]
	run as_client alice m1 read "$old" 0 4096 "$FM_DIR/x"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	as_client alice m1 read "$new" 0 4096 "$FM_DIR/x"
}

@test "identity: memserver restart: the new boot id makes serve re-replicate, data intact (R=2)" {
	start_memservers 2 --size 64M --segment-size 1M
	make_key alice
	serve_as alice --size 16M --replicas 2 --segment-size 1M --timeout 2s
	head -c 4M /dev/urandom >"$FM_DIR/in"
	nbdcopy --connections=1 "$FM_DIR/in" "$NBD_URI"
	before=$(as_client alice m2 boot)
	stop_memserver m2
	restart_memserver m2
	[ "$(as_client alice m2 boot)" != "$before" ]
	# serve notices on reconnect and copies every segment back to m2.
	wait_until 120 grep -q "restarted (new boot id)" "$FM_DIR/serve/log"
	wait_until 120 serve_stat_is degraded_segments -eq 0
	[ "$(serve_stat rereplicated_segments)" -gt 0 ]
	uuid=$(serve_uuid)
	[ "$(as_client alice m2 --uuid "$uuid" list | list_count)" -gt 0 ]
	# Both copies good: stop m1 and read everything from m2 alone.
	stop_memserver m1
	nbdcopy --connections=1 "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 4 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	[ "$(serve_stat read_errors)" -eq 0 ]
}


# ==== channel =====================================================
# The protected channel against a man in the middle: fm-mitm relays
# farmem-blk serve's connections to memserver m1 (m2 is reached
# directly, replicas 2) and, once armed, attacks one frame.  Without
# the key it cannot make a tag, so m1 must refuse the frame (close the
# connection, log it, count it), act on nothing, and the data read
# through NBD must still be what was written.  The pass-through run is
# the control: the relay itself is transparent.

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

@test "channel: control: through the relay untouched, the export works and m1 holds data" {
	start_mitm pass
	start_serve --size 16M --replicas 2 --segment-size 1M
	write_and_check in 16
	grep -q '^conn 1 open' "$FM_DIR/mitm.log"
	written=$(stat_field m1 bytes_written)
	[ "$written" -gt 0 ]
	! grep -q 'fails its channel check' "$FM_DIR/ms-m1/log"
	! grep -q '^attack' "$FM_DIR/mitm.log"
}

@test "channel: an injected FREE is refused: connection closed, logged, nothing freed" {
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

@test "channel: a replayed WRITE is refused and overwrites nothing" {
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

@test "channel: a WRITE with one data byte flipped is refused; the data still verifies" {
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

@test "channel: the memserver counts refused frames in its metrics" {
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


# ==== pages =======================================================
# Pages as a donor sees them: real memservers on loopback, `farmem-blk
# serve` and NBD clients, and the memservers' own memory read and
# rewritten through /proc/PID/mem (tests/tools/procmem) as a hostile
# donor could.  Each attack also runs with --encrypt none, the control
# that shows the test sees the attack succeed when the protection is off.
#
# Pages are written with --compress none so a plain record holds the
# page as it is: what the control must find, the sealed run must not.

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

@test "pages: canaries written through serve: none in the memservers' memory when sealed, found with --encrypt none" {
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

@test "pages: a record forged on both replicas: sealed read is EIO, counted in stats and metrics" {
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

@test "pages: control: with --encrypt none the same forgery (checksum recomputed) is served as good, nothing counted" {
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

@test "pages: a record forged on one replica only: the read returns the right data from the other" {
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

@test "pages: --encrypt: bad values are refused naming the flag or file key; check-config shows it" {
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


# ==== listeners ===================================================
# Bounded listeners (issue 11): real memservers on loopback against the
# hostile clients of tests/tools/fm-flood.c — a handshake flood from one
# source, a slow-loris handshake, an idle authenticated connection, 40
# readers that never read their replies, and a client trickling bytes
# to the metrics endpoint.  Waits are bounded polls; bounds on counts
# (log lines, RSS) are derived from the limits, not from timings.

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

@test "listeners: handshake flood from one source: every genuine handshake succeeds, log lines bounded" {
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

@test "listeners: control: with no per-source cap the same flood locks genuine clients out" {
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

@test "listeners: slow-loris: a byte a second is cut at the handshake deadline" {
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

@test "listeners: idle timeout closes an idle authenticated connection, not a busy one" {
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

@test "listeners: control: without an idle timeout an idle connection stays open" {
	start_memserver a --size 16M --segment-size 1M
	run -1 "$FLOOD" idle "$(ms_addr a)" "$FM_SECRET" 4
	echo "$output"
	[[ "$output" == *"still up"* ]]
}

@test "listeners: 40 stalled readers: memserver RSS growth stays bounded" {
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

@test "listeners: the metrics endpoint answers scrapes while clients trickle bytes" {
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


# ==== nbd =========================================================
# farmem-blk serve's defences, tried as an attacker would against a real
# serve on real memservers (loopback): TLS with pre-shared keys (nbdinfo,
# nbdcopy, qemu-img as clients), refusal of clients without TLS or with a
# wrong key, the unix socket's mode, the open TCP listener, the deadline
# on the whole handshake and the idle timeout.

# make_psk FILE USER: a psktool-style key file, 32 random bytes in hex.
make_psk() {
	(umask 077 && printf '%s:%s\n' "$2" \
		"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$1")
}

# tls_uri PSKFILE USER: the libnbd URI of the test's socket over TLS.
tls_uri() {
	echo "nbds+unix://$2@/?socket=$NBD_SOCK&tls-psk-file=$1"
}

# start_tls_serve [flags]: serve on $NBD_SOCK requiring TLS with the key
# of user alice in $FM_DIR/keys.psk; NBD_URI speaks TLS.
start_tls_serve() {
	serve_sock
	make_psk "$FM_DIR/keys.psk" alice
	NBD_URI=$(tls_uri "$FM_DIR/keys.psk" alice)
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--nbd "unix:$NBD_SOCK" --tls-psk "$FM_DIR/keys.psk" "$@"
}

# raw_option OPT: greet the server on $NBD_SOCK in the clear, send option
# OPT (GO and INFO with an empty name) and print the reply type in hex,
# or "closed" when the server hangs up instead.
raw_option() {
	timeout 30 perl -MIO::Socket::UNIX -e '
		my ($path, $opt) = @ARGV;
		my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			my $r = sysread($s, $b, $n - length($b), length($b));
			return undef unless $r; } $b }
		defined rd(18) or die "no greeting";
		syswrite($s, pack("N", 3));
		my $d = ($opt == 6 || $opt == 7) ? pack("N n", 0, 0) : "";
		syswrite($s, pack("NNNN", 0x49484156, 0x454f5054, $opt, length($d)) . $d);
		my $h = rd(20);
		if (!defined $h) { print "closed\n"; exit 0; }
		printf("0x%08x\n", (unpack("NNNNN", $h))[3]);' "$NBD_SOCK" "$1"
}

# trickle N: a client that connects, reads the greeting and then sends a
# valid handshake one byte every half second (at most 2 minutes);
# $FM_DIR/trickle.N says "started", then "closed" once serve hangs up.
trickle() {
	perl -MIO::Socket::UNIX -MIO::Select -e '
		my ($path, $flag) = @ARGV;
		$SIG{PIPE} = "IGNORE";    # a write after serve hung up: an error
		sub mark { open(F, ">", $flag); print F "$_[0]\n"; close F; }
		my $s = IO::Socket::UNIX->new(Peer => $path) or exit 2;
		my $b = ""; while (length($b) < 18) {
			sysread($s, $b, 18 - length($b), length($b)) or exit 2; }
		mark("started");
		my $msg = pack("N", 3) . pack("NNNN", 0x49484156, 0x454f5054, 7, 4096)
			. ("x" x 4096);
		my $sel = IO::Select->new($s);
		for my $i (0 .. 239) {
			if ($sel->can_read(0.5)) {
				my $r = sysread($s, my $junk, 4096);
				if (!$r) { mark("closed"); exit 0; }
			}
			if (!defined syswrite($s, substr($msg, $i, 1))) {
				mark("closed"); exit 0; }
		}' "$NBD_SOCK" "$FM_DIR/trickle.$1" &
	track_pid $!
}

# hold N MODE: a client that completes the handshake (GO) and then stays
# idle (MODE idle) or reads the first page every 0.2 s (MODE active), at
# most 2 minutes.  $FM_DIR/hold.N says "go", then "replies COUNT" (active)
# and finally "closed" once serve hangs up.
hold() {
	perl -MIO::Socket::UNIX -MIO::Select -e '
		my ($path, $flag, $mode) = @ARGV;
		$SIG{PIPE} = "IGNORE";
		sub mark { open(F, ">", "$flag.tmp"); print F "$_[0]\n"; close F;
			rename("$flag.tmp", $flag); }
		my $s = IO::Socket::UNIX->new(Peer => $path) or exit 2;
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			my $r = sysread($s, $b, $n - length($b), length($b));
			if (!$r) { mark("closed"); exit 0; } } $b }
		rd(18);
		syswrite($s, pack("N", 3));
		syswrite($s, pack("NNNN", 0x49484156, 0x454f5054, 7, 6) . pack("N n", 0, 0));
		for (;;) {
			my ($m1, $m2, $opt, $type, $len) = unpack("NNNNN", rd(20));
			rd($len) if $len;
			last if $type == 1;
			if ($type & 0x80000000) { mark("refused"); exit 3; }
		}
		mark("go");
		my $sel = IO::Select->new($s);
		for my $i (1 .. 600) {
			if ($mode eq "idle") {
				next unless $sel->can_read(0.2);
				sysread($s, my $junk, 1) or do { mark("closed"); exit 0; };
				next;
			}
			syswrite($s, pack("NnnNNNNN", 0x25609513, 0, 0, 0, $i, 0, 0, 4096))
				or do { mark("closed"); exit 0; };
			rd(16 + 4096);
			mark("replies $i");
			select(undef, undef, undef, 0.2);
		}' "$NBD_SOCK" "$FM_DIR/hold.$1" "$2" &
	track_pid $!
}

# file_says FILE WORD: FILE exists and its first word is WORD.
file_says() {
	[ -f "$1" ] && [ "$(awk '{print $1; exit}' "$1")" = "$2" ]
}

replies_of() { awk '/^replies/ {print $2}' "$FM_DIR/hold.$1"; }
replies_above() { local n; n=$(replies_of "$1"); [ -n "$n" ] && [ "$n" -gt "$2" ]; }

@test "nbd: TLS-PSK: nbdinfo, nbdcopy and qemu-img work over TLS and the data verifies" {
	start_memservers 3 --size 64M
	start_tls_serve --size 32M
	run nbdinfo "$NBD_URI"
	[ "$status" -eq 0 ]
	[[ "$output" == *"with TLS"* ]]
	[[ "$output" == *"export-size: 33554432"* ]]
	make_mixed "$FM_DIR/in" 16
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 16 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	grep -q "PSK user 'alice'" "$FM_DIR/serve/log"
	grep -q 'serving (slot .*, TLS)' "$FM_DIR/serve/log"
	if command -v qemu-img >/dev/null; then
		# qemu reads keys.psk from a directory, the user from the object.
		mkdir -p "$FM_DIR/qtls"
		cp "$FM_DIR/keys.psk" "$FM_DIR/qtls/keys.psk"
		tls=(--object "tls-creds-psk,id=tls0,endpoint=client,dir=$FM_DIR/qtls,username=alice")
		img="driver=nbd,path=$NBD_SOCK,tls-creds=tls0"
		head -c 8M /dev/urandom >"$FM_DIR/q.in"
		qemu-img convert -n "${tls[@]}" -f raw "$FM_DIR/q.in" --target-image-opts "$img"
		qemu-img convert "${tls[@]}" --image-opts "$img" -O raw "$FM_DIR/q.out"
		cmp -n $(( 8 << 20 )) "$FM_DIR/q.in" "$FM_DIR/q.out"
	fi
}

@test "nbd: TLS required: no TLS, a wrong key or an unknown user is refused (control: open without --tls-psk)" {
	start_memservers 3 --size 64M
	# Control: without TLS configured a plain client is served, and
	# STARTTLS is answered "unsupported".
	start_serve --size 16M
	nbdinfo "$NBD_URI" >/dev/null
	[ "$(raw_option 5)" = 0x80000001 ]
	stop_serve TERM
	start_tls_serve --size 16M
	served=$(grep -c 'serving (slot' "$FM_DIR/serve/log")
	plain="nbd+unix:///?socket=$NBD_SOCK"
	run nbdinfo "$plain"
	[ "$status" -ne 0 ]
	# Every option before STARTTLS: NBD_REP_ERR_TLS_REQD; EXPORT_NAME,
	# which cannot be refused, makes serve hang up.
	[ "$(raw_option 7)" = 0x80000005 ]   # GO
	[ "$(raw_option 6)" = 0x80000005 ]   # INFO
	[ "$(raw_option 3)" = 0x80000005 ]   # LIST
	[ "$(raw_option 1)" = closed ]       # EXPORT_NAME
	[ "$(raw_option 5)" = 0x00000001 ]   # STARTTLS: ACK (then TLS)
	# The same user with another key.
	make_psk "$FM_DIR/wrong.psk" alice
	run nbdinfo "$(tls_uri "$FM_DIR/wrong.psk" alice)"
	[ "$status" -ne 0 ]
	# Another user, with alice's key.
	sed 's/^alice:/mallory:/' "$FM_DIR/keys.psk" >"$FM_DIR/mallory.psk"
	run nbdinfo "$(tls_uri "$FM_DIR/mallory.psk" mallory)"
	[ "$status" -ne 0 ]
	grep -q "unknown PSK user 'mallory'" "$FM_DIR/serve/log"
	# None of them got to the transmission phase; alice still does.
	[ "$(grep -c 'serving (slot' "$FM_DIR/serve/log")" -eq "$served" ]
	nbdinfo "$NBD_URI" >/dev/null
	[ "$(grep -c 'serving (slot' "$FM_DIR/serve/log")" -eq $(( served + 1 )) ]
}

@test "nbd: the unix socket is mode 0600 under umask 022; a stale socket is replaced, a file is not" {
	umask 022
	start_memservers 1 --size 64M
	serve_sock
	# Control: what a plain bind gives under this umask.
	(perl -MIO::Socket::UNIX -e \
		'IO::Socket::UNIX->new(Local => $ARGV[0], Listen => 1) or die' "$FM_DIR/plain.sock")
	[ "$(stat -c %a "$FM_DIR/plain.sock")" = 755 ]
	# A stale socket where serve listens is replaced.
	cp -a "$FM_DIR/plain.sock" "$NBD_SOCK"
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$NBD_SOCK"
	[ -S "$NBD_SOCK" ]
	[ "$(stat -c %a "$NBD_SOCK")" = 600 ]
	nbdinfo "$NBD_URI" >/dev/null
	# No temporary directory is left beside it.
	run ls -A "$FM_DIR/serve"
	[[ "$output" != *".nbd."* ]]
	stop_serve TERM
	[ ! -e "$NBD_SOCK" ]
	# A regular file at the path is not eaten.
	echo keep >"$FM_DIR/serve/file"
	run "$FM_BLK" serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$FM_DIR/serve/file"
	[ "$status" -ne 0 ]
	[[ "$output" == *"exists and is not a socket"* ]]
	[ "$(cat "$FM_DIR/serve/file")" = keep ]
}

@test "nbd: tcp://0.0.0.0 is refused without TLS or --insecure, served with either" {
	start_memservers 1 --size 64M
	base=(--servers "$FM_SERVERS" --secret-file "$FM_SECRET" --size 16M)
	port=$(free_port)
	run "$FM_BLK" serve "${base[@]}" --nbd "tcp://0.0.0.0:$port"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--nbd: 'tcp://0.0.0.0:$port' can be reached from other machines"* ]]
	[[ "$output" == *"--tls-psk"*"--insecure"* ]]
	! port_busy "$port"
	# The same from the config file names the file and key.
	printf '[serve]\nnbd = tcp://0.0.0.0:%s\n' "$port" >"$FM_DIR/farmem.conf"
	run "$FM_BLK" serve --config "$FM_DIR/farmem.conf" "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"$FM_DIR/farmem.conf: key 'serve:nbd'"* ]]
	# Loopback needs neither.
	run "$FM_BLK" serve "${base[@]}" --nbd "tcp://127.0.0.2:$port" --check-config
	[ "$status" -eq 0 ]
	run "$FM_BLK" serve "${base[@]}" --nbd "tcp://[::1]:$port" --check-config
	[ "$status" -eq 0 ]
	# --insecure: served in the clear, with a warning.
	NBD_URI="nbd://127.0.0.1:$port/"
	launch_serve "${base[@]}" --nbd "tcp://0.0.0.0:$port" --insecure
	nbdinfo "$NBD_URI" >/dev/null
	grep -q 'insecure: NBD in the clear' "$FM_DIR/serve/log"
	stop_serve TERM
	# TLS: served, and only over TLS.
	make_psk "$FM_DIR/keys.psk" alice
	NBD_URI="nbds://alice@127.0.0.1:$port/?tls-psk-file=$FM_DIR/keys.psk"
	launch_serve "${base[@]}" --nbd "tcp://0.0.0.0:$port" --tls-psk "$FM_DIR/keys.psk"
	run nbdinfo "nbd://127.0.0.1:$port/"
	[ "$status" -ne 0 ]
	nbdinfo "$NBD_URI" >/dev/null
}

@test "nbd: two trickling clients do not keep a new client out past the handshake deadline (control: a long deadline)" {
	start_memservers 1 --size 64M
	# --queues 1: two connections may be in their handshake at once.
	# Control: with a deadline of an hour the tricklers hold both and
	# a new client is turned away.
	start_serve --size 16M --queues 1 --handshake-timeout 1h
	trickle 1
	trickle 2
	wait_until 20 file_says "$FM_DIR/trickle.1" started
	wait_until 20 file_says "$FM_DIR/trickle.2" started
	run nbdinfo "$NBD_URI"
	[ "$status" -ne 0 ]
	grep -q 'refused: too many connections' "$FM_DIR/serve/log"
	stop_serve TERM
	# With a 2 s deadline serve hangs up on both, however they trickle,
	# and the new client is served.
	rm -f "$FM_DIR"/trickle.*
	start_serve --size 16M --queues 1 --handshake-timeout 2s
	trickle 1
	trickle 2
	wait_until 20 file_says "$FM_DIR/trickle.1" started
	wait_until 20 file_says "$FM_DIR/trickle.2" started
	wait_until 60 file_says "$FM_DIR/trickle.1" closed
	wait_until 60 file_says "$FM_DIR/trickle.2" closed
	[ "$(grep -c 'handshake not done within 2000ms' "$FM_DIR/serve/log")" -ge 2 ]
	wait_until 30 nbd_ready
	nbdinfo "$NBD_URI" >/dev/null
}

@test "nbd: the idle timeout closes an idle connection and keeps a busy one" {
	start_memservers 1 --size 64M
	start_serve --size 16M --idle-timeout 2s
	hold 1 idle
	hold 2 active
	wait_until 20 file_says "$FM_DIR/hold.1" go
	wait_until 20 replies_above 2 0
	wait_until 60 file_says "$FM_DIR/hold.1" closed
	grep -q 'idle for 2000ms, closing' "$FM_DIR/serve/log"
	# Control: the client that kept asking is still served.
	n=$(replies_of 2)
	wait_until 30 replies_above 2 $(( n + 3 ))
	! file_says "$FM_DIR/hold.2" closed
}

@test "nbd: bad TLS and timeout settings give clear errors" {
	s=tcp://127.0.0.1:1
	base=(--servers "$s" --secret-file "$FM_SECRET" --size 16M --nbd "unix:$FM_DIR/x.sock")
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/missing.psk" --check-config
	[ "$status" -ne 0 ]
	[[ "$output" == *"--tls-psk: PSK file $FM_DIR/missing.psk: No such file"* ]]
	printf 'alice:00112233\n' >"$FM_DIR/short.psk"
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/short.psk" --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"short.psk line 1: key shorter than 16 bytes"* ]]
	make_psk "$FM_DIR/two.psk" alice
	printf 'bob %s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$FM_DIR/two.psk"
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/two.psk" --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"two.psk line 2: not username:hexkey"* ]]
	run "$FM_BLK" serve "${base[@]}" --tls-cert "$FM_DIR/cert.pem" --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"--tls-cert: an x509 certificate needs its key"* ]]
	run "$FM_BLK" serve "${base[@]}" --handshake-timeout 0 --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"--handshake-timeout"*"'0'"* ]]
	run "$FM_BLK" serve "${base[@]}" --idle-timeout soon --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"--idle-timeout"*"'soon'"* ]]
	make_psk "$FM_DIR/good.psk" alice
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/good.psk" --check-config
	[ "$status" -eq 0 ]
	[[ "$output" == *"tls          psk $FM_DIR/good.psk"* ]]
	run "$FM_BLK" serve --help
	[[ "$output" == *"--tls-psk FILE"* ]]
	[[ "$output" == *"--idle-timeout"* ]]
}

@test "nbd: a client that stops reading replies is dropped after the idle timeout" {
	start_memservers 1 --size 64M
	# One connection at a time: the next client needs the stuck one's slot.
	start_serve --size 16M --idle-timeout 2s --queues 1
	# 64 reads of 1 MiB, never a reply read: serve's sends block.
	timeout 120 perl -MIO::Socket::UNIX -e '
		my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die;
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			sysread($s, $b, $n - length($b), length($b)) or die "eof"; } $b }
		rd(18);
		syswrite($s, pack("N", 3));
		syswrite($s, pack("NNNN", 0x49484156, 0x454f5054, 7, 6) . pack("N n", 0, 0));
		for (;;) { my @h = unpack("NNNNN", rd(20)); rd($h[4]) if $h[4];
			last if $h[3] == 1; die "refused" if $h[3] & 0x80000000; }
		for my $i (1 .. 64) {
			syswrite($s, pack("NnnNNNNN", 0x25609513, 0, 0, 0, $i, 0, 0, 1 << 20));
		}
		open(F, ">", $ARGV[1]); print F "sent\n"; close F;
		sleep 110;' "$NBD_SOCK" "$FM_DIR/stuck" &
	track_pid $!
	wait_until 60 grep -q 'client took no reply for 2000ms, closing' "$FM_DIR/serve/log"
	# The slot is free again: a new client is served.
	wait_until 30 nbd_ready
}

@test "nbd: x509: a certificate serves TLS clients that trust it, refuses plain ones" {
	require_cmd openssl
	start_memservers 1 --size 64M
	d="$FM_DIR/x509"
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$d/server-key.pem" -out "$d/server-cert.pem" -days 2 \
		-subj /CN=localhost -addext "subjectAltName=DNS:localhost" 2>/dev/null
	cp "$d/server-cert.pem" "$d/ca-cert.pem"
	port=$(free_port)
	NBD_URI="nbds://localhost:$port/?tls-certificates=$d"
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" --size 16M \
		--nbd "tcp://0.0.0.0:$port" --tls-cert "$d/server-cert.pem" \
		--tls-key "$d/server-key.pem"
	head -c 4M /dev/urandom >"$FM_DIR/in"
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 4 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	grep -q 'TLS TLS1.* (x509)' "$FM_DIR/serve/log"
	run nbdinfo "nbd://localhost:$port/"
	[ "$status" -ne 0 ]
	# A client that trusts another CA refuses this server.
	mkdir -p "$FM_DIR/other"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$FM_DIR/other/key.pem" -out "$FM_DIR/other/ca-cert.pem" \
		-days 2 -subj /CN=other 2>/dev/null
	run nbdinfo "nbds://localhost:$port/?tls-certificates=$FM_DIR/other"
	[ "$status" -ne 0 ]
}

@test "nbd: a flood of bad handshakes is refused without flooding the log" {
	start_memservers 1 --size 64M
	start_serve --size 16M
	local t0 t1 lines bound
	t0=$(date +%s)
	# 200 clients in turn, each sending a bad option magic after the
	# greeting, then waiting for the server to close.
	timeout 120 perl -MIO::Socket::UNIX -e '
		my ($path) = @ARGV;
		for my $i (1 .. 200) {
			my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
			my $b = "";
			while (length($b) < 18) {
				sysread($s, $b, 18 - length($b), length($b)) or die "no greeting";
			}
			syswrite($s, pack("N", 3) . "BADMAGIC" . pack("NN", 1, 0));
			1 while sysread($s, $b, 64);
			close($s);
		}' "$NBD_SOCK"
	t1=$(date +%s)
	lines=$(grep -c "bad option magic" "$FM_DIR/serve/log" || true)
	# The clients did get as far as the line being logged (an unlimited
	# server logs it 200 times)...
	[ "$lines" -ge 1 ]
	# ...but at most 20 lines per 10 s window pass (nbd.c's handshake
	# limiter); the bound stays below 200 for any run under 80 s.
	bound=$(( 20 * ((t1 - t0) / 10 + 2) ))
	echo "# lines=$lines bound=$bound in $((t1 - t0))s" >&3
	[ "$bound" -lt 200 ]
	[ "$lines" -le "$bound" ]
	# The export still serves a genuine client.
	nbdinfo --size "$NBD_URI"
}

probe_says_greeting() { [ "$(tcp_probe "$1" "$2")" = greeting ]; }

# tcp_probe SRC PORT [HOLD]: connect from SRC to serve on 127.0.0.1:PORT
# and print "greeting" (the handshake began) or "closed" (refused); with
# HOLD, then sit in the handshake for up to 60 s.
tcp_probe() {
	timeout 70 perl -MIO::Socket::INET -e '
		my ($src, $port, $hold) = @ARGV;
		my $s = IO::Socket::INET->new(LocalAddr => $src, PeerAddr => "127.0.0.1",
					      PeerPort => $port, Timeout => 5) or die "connect: $!";
		my $b = "";
		eval {
			local $SIG{ALRM} = sub { die "alarm\n" };
			alarm 5;
			while (length($b) < 18) {
				sysread($s, $b, 18 - length($b), length($b)) or last;
			}
			alarm 0;
		};
		$| = 1;
		print length($b) == 18 ? "greeting\n" : "closed\n";
		sleep 60 if $hold;' "$@"
}

@test "nbd: one host holds at most half the connections in handshake; others still get in" {
	start_memservers 1 --size 64M
	port=$(free_port)
	NBD_URI="nbd://127.0.0.1:$port/"
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" --size 16M \
		--nbd "tcp://127.0.0.1:$port" --queues 2 --handshake-timeout 60s
	# --queues 2: 4 connection entries, at most 2 in handshake per host.
	tcp_probe 127.0.0.1 "$port" hold >"$FM_DIR/h1" &
	h1=$!
	tcp_probe 127.0.0.1 "$port" hold >"$FM_DIR/h2" &
	h2=$!
	wait_until 20 grep -q greeting "$FM_DIR/h1"
	wait_until 20 grep -q greeting "$FM_DIR/h2"
	run tcp_probe 127.0.0.1 "$port"
	[ "$output" = closed ]
	grep -q "too many handshakes in progress from this host" "$FM_DIR/serve/log"
	# The control: another host is not refused, so the refusal above
	# was this host's cap, not a full server.
	run tcp_probe 127.0.0.2 "$port"
	[ "$output" = greeting ]
	# The stalled handshakes end: their places come back.
	pkill -P "$h1" 2>/dev/null || true
	pkill -P "$h2" 2>/dev/null || true
	kill "$h1" "$h2" 2>/dev/null || true
	wait "$h1" "$h2" 2>/dev/null || true
	wait_until 20 probe_says_greeting 127.0.0.1 "$port"
	nbdinfo --size "$NBD_URI"
}
