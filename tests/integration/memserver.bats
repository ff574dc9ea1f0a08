#!/usr/bin/env bats
# farmem-memserver against real clients on loopback: the transport
# (through fm-client), authentication, device isolation, hostile frames,
# pool exhaustion, leases and shutdown.

load helpers

DEV_A=11111111-1111-4111-8111-111111111111
DEV_B=22222222-2222-4222-8222-222222222222
DEV_C=33333333-3333-4333-8333-333333333333
SEG=1048576

setup() {
	require_file "$FM_MEMSERVER"
	require_file "$FM_CLIENT"
	fm_setup
	# 16 segments of 1 MiB: small enough to fill quickly.
	start_memserver a --size 16M --segment-size 1M
}

teardown() {
	stop_all
}

# alloc_seg NAME UUID: allocate one segment, print its id.
alloc_seg() {
	fm_client "$1" --uuid "$2" alloc "$SEG"
}

# server_alive NAME: the process runs and a good client gets a pong.
server_alive() {
	kill -0 "$(ms_pid "$1")" && fm_client "$1" --uuid "$DEV_C" ping >/dev/null
}

@test "ping: a pong comes back" {
	run fm_client a ping
	[ "$status" -eq 0 ]
	[[ "$output" == pong* ]]
}

@test "pipelined writes then reads verify byte for byte" {
	run fm_client a --uuid "$DEV_A" pipeline 3000
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"writes=3000 write_errors=0 reads=3000 read_errors=0 mismatches=0"* ]]
}

@test "pipelined 64 KiB requests across several segments verify" {
	run fm_client a --uuid "$DEV_A" --io-size 64K pipeline 64
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"mismatches=0"* ]]
	[[ "$output" == *"write_errors=0"* ]]
	[[ "$output" == *"read_errors=0"* ]]
}

@test "a file written at an offset reads back identical" {
	head -c 300000 /dev/urandom >"$FM_DIR/in"
	seg=$(alloc_seg a "$DEV_A")
	fm_client a --uuid "$DEV_A" write "$seg" 12288 "$FM_DIR/in"
	fm_client a --uuid "$DEV_A" read "$seg" 12288 300000 "$FM_DIR/out"
	cmp "$FM_DIR/in" "$FM_DIR/out"
}

@test "a wrong secret is refused and the server keeps serving" {
	make_secret "$FM_DIR/other"
	run "$FM_CLIENT" --server "$(ms_addr a)" --secret-file "$FM_DIR/other" ping
	echo "$output"
	[ "$status" -eq 3 ]
	[[ "$output" == *EACCES* ]]
	server_alive a
}

@test "another device cannot read, write or free a segment (ENOENT)" {
	head -c 4096 /dev/urandom >"$FM_DIR/page"
	seg=$(alloc_seg a "$DEV_A")
	fm_client a --uuid "$DEV_A" write "$seg" 0 "$FM_DIR/page"

	run fm_client a --uuid "$DEV_B" read "$seg" 0 4096 "$FM_DIR/stolen"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	run fm_client a --uuid "$DEV_B" write "$seg" 0 "$FM_DIR/page"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	run fm_client a --uuid "$DEV_B" free "$seg"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	run fm_client a --uuid "$DEV_B" list
	[ "$status" -eq 0 ]
	[[ "$output" == *"count=0"* ]]

	# The owner still has it, untouched.
	fm_client a --uuid "$DEV_A" read "$seg" 0 4096 "$FM_DIR/back"
	cmp "$FM_DIR/page" "$FM_DIR/back"
}

@test "a missing segment and a freed one are ENOENT" {
	run fm_client a --uuid "$DEV_A" read 123456789 0 4096 "$FM_DIR/x"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	seg=$(alloc_seg a "$DEV_A")
	fm_client a --uuid "$DEV_A" free "$seg"
	run fm_client a --uuid "$DEV_A" read "$seg" 0 4096 "$FM_DIR/x"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
	run fm_client a --uuid "$DEV_A" free "$seg"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
}

@test "out-of-range I/O and bad alloc sizes are error replies, not hangs" {
	seg=$(alloc_seg a "$DEV_A")
	run fm_client a --uuid "$DEV_A" read "$seg" $((SEG - 4096)) 8192 "$FM_DIR/x"
	[ "$status" -eq 1 ]
	run fm_client a --uuid "$DEV_A" alloc 1000
	[ "$status" -eq 1 ]
	[[ "$output" == *EINVAL* ]]
	run fm_client a --uuid "$DEV_A" alloc 2M
	[ "$status" -eq 1 ]
	server_alive a
}

@test "list shows this device's segments only" {
	s1=$(alloc_seg a "$DEV_A")
	s2=$(alloc_seg a "$DEV_A")
	alloc_seg a "$DEV_B" >/dev/null
	run fm_client a --uuid "$DEV_A" list
	[ "$status" -eq 0 ]
	[[ "$output" == *"$s1 $SEG"* ]]
	[[ "$output" == *"$s2 $SEG"* ]]
	[[ "$output" == *"count=2"* ]]
}

@test "stat numbers follow allocations, writes and reads" {
	w0=$(stat_field a bytes_written)
	r0=$(stat_field a bytes_read)
	u0=$(stat_field a used_bytes)
	n0=$(stat_field a writes)
	seg=$(alloc_seg a "$DEV_A")
	head -c 65536 /dev/urandom >"$FM_DIR/in"
	fm_client a --uuid "$DEV_A" write "$seg" 0 "$FM_DIR/in"
	fm_client a --uuid "$DEV_A" read "$seg" 0 65536 "$FM_DIR/out"
	[ "$(stat_field a used_bytes)" -eq $((u0 + SEG)) ]
	[ "$(stat_field a bytes_written)" -eq $((w0 + 65536)) ]
	[ "$(stat_field a bytes_read)" -eq $((r0 + 65536)) ]
	[ "$(stat_field a writes)" -gt "$n0" ]
	[ "$(stat_field a pool_bytes)" -eq $((16 * SEG)) ]
	[ "$(stat_field a segment_max)" -eq "$SEG" ]
}

@test "garbage before the handshake: connection closed, server keeps serving" {
	run fm_client a raw-garbage
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	server_alive a
}

@test "garbage after authentication: connection closed, server keeps serving" {
	run fm_client a --after-auth raw-garbage
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	server_alive a
}

@test "a truncated frame does not stop the server" {
	run fm_client a --after-auth raw-truncated
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	[[ "$output" != *"status=0"* ]]
	run fm_client a raw-truncated
	[ "$status" -eq 0 ]
	server_alive a
}

@test "an oversized frame is refused by closing; server keeps serving" {
	run fm_client a --after-auth raw-oversized
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	run fm_client a raw-oversized
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	server_alive a
}

@test "a frame of another protocol version is refused by closing" {
	run fm_client a --after-auth raw-badversion
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	server_alive a
}

@test "a nonzero reserved field or an unknown op is refused by closing" {
	run fm_client a --after-auth raw-reserved
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	run fm_client a --after-auth raw-unknown-op
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	server_alive a
}

@test "requests before HELLO or before AUTH are never served" {
	seg=$(alloc_seg a "$DEV_A")
	run fm_client a --uuid "$DEV_A" raw-no-hello
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	[[ "$output" != *"op=READ status=0"* ]]
	run fm_client a --uuid "$DEV_A" raw-before-auth
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *closed* ]]
	[[ "$output" != *"op=READ status=0"* ]]
	server_alive a
}

@test "a good client is served while another sends garbage" {
	fm_client a --uuid "$DEV_A" pipeline 4000 >"$FM_DIR/pipe.out" 2>&1 &
	pipe=$!
	track_pid "$pipe"
	for i in $(seq 20); do
		fm_client a raw-garbage >/dev/null
		fm_client a --after-auth raw-oversized >/dev/null
	done
	wait_exit "$pipe"
	cat "$FM_DIR/pipe.out"
	grep -q "write_errors=0 reads=4000 read_errors=0 mismatches=0" "$FM_DIR/pipe.out"
}

@test "pool exhaustion is an ENOSPC reply and the connection goes on" {
	run fm_client a --uuid "$DEV_A" fill
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"allocated=16 "* ]]
	[[ "$output" == *"error=ENOSPC"* ]]
	# Freeing on the same connection after the refusal worked.
	[[ "$output" == *"freed=16"* ]]
	[ "$(stat_field a used_bytes)" -eq 0 ]
}

@test "a full pool refuses other devices too, until memory is freed" {
	run fm_client a --uuid "$DEV_A" --keep fill
	[ "$status" -eq 0 ]
	[[ "$output" == *"error=ENOSPC"* ]]
	run fm_client a --uuid "$DEV_B" alloc "$SEG"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOSPC* ]]
	seg=$(fm_client a --uuid "$DEV_A" list | head -n 1 | cut -d' ' -f1)
	fm_client a --uuid "$DEV_A" free "$seg"
	run fm_client a --uuid "$DEV_B" alloc "$SEG"
	[ "$status" -eq 0 ]
}

@test "reconnect within the lease keeps the segments and their data" {
	head -c 8192 /dev/urandom >"$FM_DIR/in"
	seg=$(alloc_seg a "$DEV_A")
	fm_client a --uuid "$DEV_A" write "$seg" 4096 "$FM_DIR/in"
	# DEV_A's client has gone: its device is leased (60 s by default).
	[ "$(stat_field a leased --uuid "$DEV_C")" -eq 1 ]
	run fm_client a --uuid "$DEV_A" list
	[[ "$output" == *"$seg $SEG"* ]]
	fm_client a --uuid "$DEV_A" read "$seg" 4096 8192 "$FM_DIR/out"
	cmp "$FM_DIR/in" "$FM_DIR/out"
}

used_is_zero() {
	[ "$(stat_field "$1" used_bytes --uuid "$DEV_C")" = 0 ]
}

@test "lease expiry returns a gone device's memory to the pool" {
	start_memserver short --size 16M --segment-size 1M --lease 1s
	seg=$(alloc_seg short "$DEV_A")
	[ "$(stat_field short used_bytes --uuid "$DEV_C")" -eq "$SEG" ]
	# Bounded wait for the lease to run out; no assumption on when.
	wait_until 30 used_is_zero short
	[ "$(stat_field short segments --uuid "$DEV_C")" -eq 0 ]
	run fm_client short --uuid "$DEV_A" read "$seg" 0 4096 "$FM_DIR/x"
	[ "$status" -eq 1 ]
	[[ "$output" == *ENOENT* ]]
}

# Not through `run`: its subshell cannot wait for the server's status.
@test "a reconnecting client rides out a memserver restart" {
	fm_client a --uuid "$DEV_A" --reconnect watch 60s >"$FM_DIR/watch.out" 2>&1 &
	watcher=$!
	track_pid "$watcher"
	wait_until 20 grep -q watching "$FM_DIR/watch.out"
	stop_memserver a TERM
	restart_memserver a
	rc=0
	wait_exit "$watcher" || rc=$?
	cat "$FM_DIR/watch.out"
	[ "$rc" -eq 0 ]
	grep -q "state down" "$FM_DIR/watch.out"
	grep -q "state up" "$FM_DIR/watch.out"
	grep -q "pong after reconnect" "$FM_DIR/watch.out"
}

@test "a frozen memserver times requests out; the client reconnects after" {
	fm_client a --uuid "$DEV_A" --reconnect --timeout 300 watch 60s \
		>"$FM_DIR/watch.out" 2>&1 &
	watcher=$!
	track_pid "$watcher"
	wait_until 20 grep -q watching "$FM_DIR/watch.out"
	kill -STOP "$(ms_pid a)"
	wait_until 20 grep -q "state down" "$FM_DIR/watch.out"
	kill -CONT "$(ms_pid a)"
	rc=0
	wait_exit "$watcher" || rc=$?
	cat "$FM_DIR/watch.out"
	[ "$rc" -eq 0 ]
	grep -q "ping: ETIMEDOUT" "$FM_DIR/watch.out"
	grep -q "pong after reconnect" "$FM_DIR/watch.out"
	server_alive a
}

@test "SIGTERM: the memserver exits 0" {
	rc=0
	stop_memserver a TERM || rc=$?
	echo "exit status $rc"
	[ "$rc" -eq 0 ]
}

@test "SIGTERM with a client connected: exits 0 and the client sees an error" {
	fm_client a --uuid "$DEV_A" hold 60s >"$FM_DIR/hold.out" 2>&1 &
	holder=$!
	track_pid "$holder"
	wait_until 20 grep -q holding "$FM_DIR/hold.out"
	rc=0
	stop_memserver a TERM || rc=$?
	echo "memserver exit status $rc"
	[ "$rc" -eq 0 ]
	rc=0
	wait_exit "$holder" || rc=$?
	cat "$FM_DIR/hold.out"
	[ "$rc" -eq 1 ]
	grep -Eq "ECONNRESET|ENOTCONN|ETIMEDOUT" "$FM_DIR/hold.out"
}
