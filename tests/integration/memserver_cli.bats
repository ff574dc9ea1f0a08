#!/usr/bin/env bats
# farmem-memserver's command line: flags, --check-config, config errors
# that name file (or flag), key and value, the secret file, memory
# locking, --stat, several listeners and clean stops on signals.

load helpers

setup() {
	require_file "$FM_MEMSERVER"
	fm_setup
}

teardown() {
	stop_all
}

# conf NAME TEXT: write a config file, print its path.
conf() {
	printf '%b' "$2" >"$FM_DIR/$1"
	echo "$FM_DIR/$1"
}

# A complete, valid [memserver] section plus extra lines.
good_conf() {
	conf "$1" "[memserver]\nlisten = tcp://127.0.0.1:7070\nsize = 64M\nsecret-file = $FM_SECRET\n${2:-}"
}

# check_bad FILE KEY VALUE: --check-config fails, naming all three.
check_bad() {
	run "$FM_MEMSERVER" --check-config --config "$1"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"$1"* ]]
	[[ "$output" == *"$2"* ]]
	[[ "$output" == *"$3"* ]]
}

@test "--help lists the flags and the config keys" {
	run "$FM_MEMSERVER" --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--listen"* ]]
	[[ "$output" == *"--check-config"* ]]
	[[ "$output" == *"--stat"* ]]
	[[ "$output" == *"memserver:segment-size"* ]]
}

@test "--version prints the version" {
	run "$FM_MEMSERVER" --version
	[ "$status" -eq 0 ]
	[ "$output" = "farmem-memserver $(cat "$BATS_TEST_DIRNAME/../../VERSION")" ]
}

@test "an unknown flag or a stray argument is a usage error (2)" {
	run "$FM_MEMSERVER" --no-such-flag
	[ "$status" -eq 2 ]
	[[ "$output" == *usage* ]]
	run "$FM_MEMSERVER" --size 64M stray
	[ "$status" -eq 2 ]
	[[ "$output" == *"stray"* ]]
}

@test "--check-config accepts the shipped example (with a real secret)" {
	sed "s|^secret-file = .*|secret-file = $FM_SECRET|" \
		"$BATS_TEST_DIRNAME/../../conf/memserver.conf" >"$FM_DIR/example.conf"
	run "$FM_MEMSERVER" --check-config --config "$FM_DIR/example.conf"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"configuration OK"* ]]
}

@test "--check-config with flags only" {
	run "$FM_MEMSERVER" --check-config --listen tcp://127.0.0.1:7070 \
		--listen "tcp://[::1]:7070" --size 1G --secret-file "$FM_SECRET" \
		--lease 5m --segment-size 1M --hugepages no --log syslog
	echo "$output"
	[ "$status" -eq 0 ]
}

@test "bad values in the file are named with file, key and value" {
	check_bad "$(good_conf a.conf 'size = lots')" size lots
	check_bad "$(good_conf b.conf 'segment-size = 3G')" segment-size 3G
	check_bad "$(good_conf c.conf 'lease = forever')" lease forever
	check_bad "$(good_conf d.conf 'allow-unlocked = perhaps')" allow-unlocked perhaps
	check_bad "$(good_conf e.conf 'hugepages = maybe')" hugepages maybe
	check_bad "$(good_conf f.conf 'log = journal')" log journal
	check_bad "$(good_conf g.conf 'segment-size = 100000')" segment-size 100000
}

@test "bad listen addresses are named with file, key and value" {
	check_bad "$(conf a.conf "[memserver]\nlisten = 127.0.0.1:7070\nsize = 64M\nsecret-file = $FM_SECRET\n")" \
		listen 127.0.0.1:7070
	check_bad "$(conf b.conf "[memserver]\nlisten = tcp://127.0.0.1:7070, tcp://h:99999\nsize = 64M\nsecret-file = $FM_SECRET\n")" \
		listen tcp://h:99999
}

@test "unknown keys, unknown sections and keys outside a section are refused" {
	check_bad "$(good_conf a.conf 'sise = 1G')" sise unknown
	check_bad "$(good_conf b.conf '[extra]\nx = 1')" extra unknown
	check_bad "$(conf c.conf "size = 1G\n[memserver]\nlisten = tcp://127.0.0.1:7070\nsecret-file = $FM_SECRET\n")" \
		size 1G
}

@test "a missing config file is named" {
	run "$FM_MEMSERVER" --check-config --config "$FM_DIR/absent.conf"
	[ "$status" -eq 1 ]
	[[ "$output" == *"$FM_DIR/absent.conf"* ]]
}

@test "flags override the file; a bad flag is named as the flag" {
	f=$(good_conf a.conf 'size = lots')
	run "$FM_MEMSERVER" --check-config --config "$f"
	[ "$status" -eq 1 ]
	f=$(good_conf b.conf)
	run "$FM_MEMSERVER" --check-config --config "$f" --size 128M
	[ "$status" -eq 0 ]
	run "$FM_MEMSERVER" --check-config --config "$f" --size big
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"--size"* ]]
	[[ "$output" == *"big"* ]]
	run "$FM_MEMSERVER" --check-config --config "$f" --listen nowhere
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"--listen"* ]]
	[[ "$output" == *"nowhere"* ]]
}

@test "missing listen, size or secret are explained" {
	run "$FM_MEMSERVER" --check-config --size 64M --secret-file "$FM_SECRET"
	[ "$status" -eq 1 ]
	[[ "$output" == *"--listen"* ]]
	run "$FM_MEMSERVER" --check-config --listen tcp://127.0.0.1:7070 --secret-file "$FM_SECRET"
	[ "$status" -eq 1 ]
	[[ "$output" == *"--size"* ]]
	run "$FM_MEMSERVER" --check-config --listen tcp://127.0.0.1:7070 --size 64M
	[ "$status" -eq 1 ]
	[[ "$output" == *"--secret-file"* ]]
	run "$FM_MEMSERVER" --check-config --listen tcp://127.0.0.1:7070 --size 2M --secret-file "$FM_SECRET"
	[ "$status" -eq 1 ]
	[[ "$output" == *"smaller than one segment"* ]]
}

@test "a bad secret file stops the server before it listens" {
	run "$FM_MEMSERVER" --listen tcp://127.0.0.1:7070 --size 64M \
		--secret-file "$FM_DIR/nope"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"$FM_DIR/nope"* ]]
	printf 'short\n' >"$FM_DIR/short"
	chmod 600 "$FM_DIR/short"
	run "$FM_MEMSERVER" --listen tcp://127.0.0.1:7070 --size 64M \
		--secret-file "$FM_DIR/short"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"at least 16"* ]]
}

@test "SIGTERM and SIGINT stop it with status 0 and remove the pid file" {
	start_memserver a --size 16M --segment-size 1M
	[ -s "$FM_DIR/ms-a/pid" ]
	pid=$(ms_pid a)
	kill -TERM "$pid"
	rc=0
	wait_exit "$pid" || rc=$?
	[ "$rc" -eq 0 ]
	[ ! -e "$FM_DIR/ms-a/pid" ]
	grep -q "stopping" "$FM_DIR/ms-a/log"

	start_memserver b --size 16M --segment-size 1M
	pid=$(ms_pid b)
	kill -INT "$pid"
	rc=0
	wait_exit "$pid" || rc=$?
	[ "$rc" -eq 0 ]
}

@test "several --listen addresses all accept" {
	p2=$(free_port)
	start_memserver a --size 16M --segment-size 1M --listen "tcp://127.0.0.1:$p2"
	accepts 127.0.0.1 "$(ms_port a)"
	accepts 127.0.0.1 "$p2"
	grep -q "listening on tcp://127.0.0.1:$p2" "$FM_DIR/ms-a/log"
}

@test "a port in use is an error naming the address" {
	start_memserver a --size 16M --segment-size 1M
	run "$FM_MEMSERVER" --listen "$(ms_addr a)" --size 16M --segment-size 1M \
		--secret-file "$FM_SECRET" --allow-unlocked
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"$(ms_addr a)"* ]]
	[[ "$output" == *"in use"* ]]
}

@test "rdma:// without an RDMA device is an error naming the address and what to check" {
	[ -z "$(ls /sys/class/infiniband 2>/dev/null)" ] || skip "this host has an RDMA device"
	run "$FM_MEMSERVER" --listen rdma://127.0.0.1:1 --size 16M --segment-size 1M \
		--secret-file "$FM_SECRET" --allow-unlocked
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"rdma://127.0.0.1:1"* ]]
	[[ "$output" == *"ibv_devices"* ]]
}

@test "--stat prints pool, use and clients; --json is valid JSON" {
	start_memserver a --size 16M --segment-size 1M
	run "$FM_MEMSERVER" --stat "$(ms_addr a)" --secret-file "$FM_SECRET"
	echo "$output"
	[ "$status" -eq 0 ]
	[[ "$output" == *"pool          16777216 bytes"* ]]
	[[ "$output" == *"segments      0 (at most 1048576 bytes each)"* ]]
	[[ "$output" == *"clients       1"* ]]
	run "$FM_MEMSERVER" --stat "$(ms_addr a)" --secret-file "$FM_SECRET" --json
	echo "$output"
	[ "$status" -eq 0 ]
	require_cmd jq
	[ "$(echo "$output" | jq .pool_bytes)" -eq 16777216 ]
	[ "$(echo "$output" | jq .free_bytes)" -eq 16777216 ]
	[ "$(echo "$output" | jq .segment_max)" -eq 1048576 ]
}

@test "--stat with a wrong secret or to a closed port fails" {
	start_memserver a --size 16M --segment-size 1M
	make_secret "$FM_DIR/other"
	run "$FM_MEMSERVER" --stat "$(ms_addr a)" --secret-file "$FM_DIR/other"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"wrong secret"* ]]
	grep -q "authentication failed" "$FM_DIR/ms-a/log"
	port=$(free_port)
	run "$FM_MEMSERVER" --stat "tcp://127.0.0.1:$port" --secret-file "$FM_SECRET"
	[ "$status" -eq 1 ]
	run "$FM_MEMSERVER" --stat "not-an-address" --secret-file "$FM_SECRET"
	[ "$status" -eq 1 ]
	[[ "$output" == *"not-an-address"* ]]
}

# Run without CAP_IPC_LOCK and with a 1 MiB RLIMIT_MEMLOCK.  prlimit
# and setpriv exec the command, so with exec here the command keeps this
# shell's pid: started in the background, $! is the memserver itself.
no_lock() {
	if [ "$(id -u)" -eq 0 ]; then
		exec prlimit --memlock=1048576:1048576 \
			setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock "$@"
	fi
	exec prlimit --memlock=1048576:1048576 "$@"
}

@test "a pool that cannot be locked: refused, explained, --allow-unlocked proceeds" {
	require_cmd prlimit setpriv
	# ASan intercepts mlock() as a no-op that succeeds: nothing to test.
	[ -z "${FARMEM_SANITIZED:-}" ] || skip "mlock is a no-op under ASan"
	port=$(free_port)
	run no_lock "$FM_MEMSERVER" --listen "tcp://127.0.0.1:$port" --size 64M \
		--secret-file "$FM_SECRET"
	echo "$output"
	[ "$status" -eq 1 ]
	[[ "$output" == *"RLIMIT_MEMLOCK"* ]]
	[[ "$output" == *"--allow-unlocked"* ]]
	# --check-config foresees it (a warning: the service's limits may differ).
	run no_lock "$FM_MEMSERVER" --check-config --listen "tcp://127.0.0.1:$port" \
		--size 64M --secret-file "$FM_SECRET"
	[ "$status" -eq 0 ]
	[[ "$output" == *"warning"*"RLIMIT_MEMLOCK"* ]]

	mkdir -p "$FM_DIR/nl"
	# In a subshell that execs: $! is the memserver, which stop_all ends;
	# fd 3 closed so bats never waits on it.
	(no_lock "$FM_MEMSERVER" --listen "tcp://127.0.0.1:$port" --size 64M \
		--secret-file "$FM_SECRET" --allow-unlocked \
		--pid-file "$FM_DIR/nl/pid" >"$FM_DIR/nl/log" 2>&1 3>&-) &
	pid=$!
	track_pid "$pid"
	wait_until 20 test -s "$FM_DIR/nl/pid"
	grep -q "UNLOCKED" "$FM_DIR/nl/log"
	out=$("$FM_MEMSERVER" --stat "tcp://127.0.0.1:$port" --secret-file "$FM_SECRET")
	[[ "$out" == *"NOT locked"* ]]
}

@test "--log syslog keeps stderr quiet" {
	start_memserver a --size 16M --segment-size 1M --log syslog
	accepts 127.0.0.1 "$(ms_port a)"
	run grep -q "listening on" "$FM_DIR/ms-a/log"
	[ "$status" -ne 0 ]
}

@test "idle unauthenticated sockets from one source are refused past its cap" {
	require_file "$FM_CLIENT"
	start_memserver a --size 16M --segment-size 1M --max-handshakes-per-source 8
	port=$(ms_port a)
	# 20 sockets that never say HELLO: the first 8 are kept (none is
	# evicted), the rest refused.  Floods from another source while
	# genuine clients connect: security.bats, its listeners section.
	fds=()
	for _ in $(seq 20); do
		exec {fd}<>"/dev/tcp/127.0.0.1/$port"
		fds+=("$fd")
	done
	wait_until 10 grep -q "refusing tcp 127.0.0.1:.*: 8 handshakes from that source in progress (max-handshakes-per-source)" \
		"$FM_DIR/ms-a/log"
	for fd in "${fds[@]}"; do exec {fd}>&-; done
	# Their slots come back as they close.
	wait_until 10 fm_client a ping
	run fm_client a ping
	[ "$status" -eq 0 ]
	[[ "$output" == pong* ]]
	! grep -q "dropping the oldest" "$FM_DIR/ms-a/log"
}

@test "each hostile frame is logged with its reason" {
	require_file "$FM_CLIENT"
	start_memserver a --size 16M --segment-size 1M
	log="$FM_DIR/ms-a/log"
	# raw-KIND: the reason the server must log for it.
	while IFS='|' read -r kind reason; do
		run fm_client a --after-auth "raw-$kind"
		[ "$status" -eq 0 ]
		[[ "$output" == *closed* ]]
		wait_until 10 grep -q "closing: .*$reason" "$log" ||
			{ echo "no '$reason' logged for raw-$kind"; cat "$log"; false; }
	done <<-'TABLE'
		garbage|bad magic
		oversized|payload length
		badversion|protocol version 5, we speak 4
		reserved|reserved fields not zero
		unknown-op|unknown op
		truncated|ended inside a frame
	TABLE
	run fm_client a raw-no-hello
	wait_until 10 grep -q "closing: READ before HELLO" "$log"
	run fm_client a raw-before-auth
	wait_until 10 grep -q "closing: READ before authentication" "$log"
	# And the server still serves.
	run fm_client a ping
	[ "$status" -eq 0 ]
}
