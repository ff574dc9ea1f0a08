#!/usr/bin/env bats
# Client identities (issue 11): per-client keys, devices scoped per
# client, quotas, and boot ids that make segment ids unique across
# memserver restarts.  Real memservers on loopback, real `farmem-blk
# serve` and real NBD clients; fm-client plays the other clients.

load helpers
load nbd_helpers

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_file "$FM_CLIENT"
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

@test "key files: made by --client-key, strict, reserved name refused" {
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

@test "takeover: bob claims alice's device uuid and sees, reads, writes and frees nothing of hers" {
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

@test "a wrong key is refused, by the memserver and by serve" {
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

@test "quota: one client cannot take every free segment; another still gets space" {
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

@test "quota: serve treats a client's used-up quota like a full server" {
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

@test "an id from before a memserver restart names nothing after it" {
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

@test "memserver restart: the new boot id makes serve re-replicate, data intact (R=2)" {
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
