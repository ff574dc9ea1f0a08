#!/usr/bin/env bats
# Membership through etcd: memservers register under a lease, serve finds
# them with --servers etcd://..., follows joins, and keeps its view while
# etcd is away.  A real etcd (Debian's etcd-server) runs on loopback for
# each test, with its own data directory and free ports, and is killed
# in teardown; a system etcd, if any, is never used.

load helpers
load nbd_helpers

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	command -v etcd >/dev/null 2>&1 ||
		skip "etcd is not installed (Debian: apt-get install etcd-server)"
	command -v etcdctl >/dev/null 2>&1 ||
		skip "etcdctl is not installed (Debian: apt-get install etcd-client)"
	fm_setup
	CLUSTER="t$$"
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ]; then
		[ -f "$FM_DIR/serve/log" ] && { echo "--- serve log:" >&2; tail -n 40 "$FM_DIR/serve/log" >&2; }
		[ -f "$FM_DIR/etcd/log" ] && { echo "--- etcd log:" >&2; tail -n 20 "$FM_DIR/etcd/log" >&2; }
	fi
	return 0
}

etcd_healthy() {
	curl -sf --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

# start_etcd: a one-member etcd on two free loopback ports; sets ETCD_URL.
start_etcd() {
	local cport pport dir="$FM_DIR/etcd"
	mkdir -p "$dir"
	cport=$(free_port) && pport=$(free_port) || return 1
	[ "$cport" != "$pport" ] || pport=$(free_port)
	ETCD_URL="http://127.0.0.1:$cport"
	etcd --name "fm$$" --data-dir "$dir/data" \
		--listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
		--listen-peer-urls "http://127.0.0.1:$pport" \
		--initial-advertise-peer-urls "http://127.0.0.1:$pport" \
		--initial-cluster "fm$$=http://127.0.0.1:$pport" \
		--initial-cluster-state new >"$dir/log" 2>&1 &
	ETCD_PID=$!
	track_pid "$ETCD_PID"
	export ETCD_URL ETCD_PID
	wait_until "$FM_START_TIMEOUT" etcd_healthy || {
		echo "etcd did not become healthy:" >&2
		tail -n 20 "$dir/log" >&2
		return 1
	}
}

# The member keys of the test's cluster, one per line.
member_keys() {
	ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" --command-timeout=3s \
		get --prefix --keys-only "/farmem/$CLUSTER/members/" | grep .
}
member_count_is() {
	[ "$(member_keys | grep -c .)" -eq "$1" ]
}
has_member() {
	member_keys | grep -qxF "/farmem/$CLUSTER/members/$1"
}
no_member() {
	! has_member "$1"
}

# start_member NAME [flags]: a memserver registered in the test's etcd.
start_member() {
	local name=$1
	shift
	start_memserver "$name" --size 128M --etcd "$ETCD_URL" --cluster "$CLUSTER" "$@"
}

# etcd and three registered members; FM_SERVERS names them through etcd.
three_members() {
	start_etcd
	start_member m1
	start_member m2
	start_member m3
	wait_until 20 member_count_is 3
	FM_SERVERS="etcd://${ETCD_URL#http://}/$CLUSTER"
}

fio_nbd() {
	(cd "$FM_DIR" && fio --name=farmem --ioengine=nbd --uri="$NBD_URI" --bs=4k \
		--randrepeat=1 --verify_fatal=1 --output="$FM_DIR/fio.out" "$@")
}

# serve_membership KEY: one field of serve's membership line, fresh
# (serve_stat makes serve print both lines).
serve_membership() {
	serve_stat pages_stored >/dev/null || return 1
	grep '^farmem-blk: membership ' "$FM_DIR/serve/log" | tail -n 1 |
		tr ' ' '\n' | sed -n "s/^$1=//p"
}
membership_is() {
	[ "$(serve_membership "$1")" = "$2" ]
}

ms_used_above() {
	local u
	u=$(stat_field "$1" used_bytes) && [ -n "$u" ] && [ "$u" -gt "$2" ]
}

@test "memservers register under a lease; kill -9 lets the key expire, a clean stop removes it" {
	start_etcd
	start_member m1 --zone rack-a
	# m2 lists an endpoint where nothing listens first: it fails over.
	dead=$(free_port)
	start_memserver m2 --size 128M --etcd "http://127.0.0.1:$dead,$ETCD_URL" \
		--cluster "$CLUSTER"
	wait_until 20 member_count_is 2
	value=$(ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URL" get --print-value-only \
		"/farmem/$CLUSTER/members/$(ms_addr m1)")
	echo "$value" | grep -qF "\"addr\":\"$(ms_addr m1)\""
	echo "$value" | grep -qF '"size":134217728'
	echo "$value" | grep -qF '"zone":"rack-a"'
	echo "$value" | grep -q '"free":[0-9]'
	# The lease holds the key while the server lives; once it is killed
	# nobody keeps the lease alive and etcd drops the key after the TTL.
	kill -KILL "$(ms_pid m1)"
	wait_until 30 no_member "$(ms_addr m1)"
	has_member "$(ms_addr m2)"
	# A clean stop revokes the lease: deregistered, and the key is gone.
	stop_memserver m2
	ms_log m2 | grep -q 'etcd: deregistered'
	no_member "$(ms_addr m2)"
}

@test "etcd settings: --advertise needed on a wildcard, bad values named" {
	port=$(free_port)
	run "$FM_MEMSERVER" --listen "tcp://0.0.0.0:$port" --size 64M --secret-file "$FM_SECRET" \
		--etcd http://127.0.0.1:2379 --check-config
	[ "$status" -eq 1 ]
	[[ "$output" == *"advertise"* ]]
	[[ "$output" == *"wildcard"* ]]
	run "$FM_MEMSERVER" --listen "tcp://0.0.0.0:$port" --size 64M --secret-file "$FM_SECRET" \
		--etcd http://127.0.0.1:2379 --advertise 10.0.0.2 --check-config
	[ "$status" -eq 0 ]
	run "$FM_MEMSERVER" --listen "tcp://127.0.0.1:$port" --size 64M --secret-file "$FM_SECRET" \
		--etcd ftp://127.0.0.1:2379 --check-config
	[ "$status" -eq 1 ]
	[[ "$output" == *"etcd"*"ftp://127.0.0.1:2379"* ]]
	run "$FM_MEMSERVER" --listen "tcp://127.0.0.1:$port" --size 64M --secret-file "$FM_SECRET" \
		--etcd http://127.0.0.1:2379 --zone "bad zone" --check-config
	[ "$status" -eq 1 ]
	[[ "$output" == *"zone"*"bad zone"* ]]
	run "$FM_BLK" serve --servers etcd://127.0.0.1:2379 --secret-file "$FM_SECRET" \
		--size 64M --nbd "unix:$FM_DIR/sock"
	[ "$status" -ne 0 ]
	[[ "$output" == *"--servers"*"CLUSTER"* ]]
	# add asks etcd before starting a daemon: nobody listens on $port.
	run "$FM_BLK" add --servers "etcd://127.0.0.1:$port/x" --secret-file "$FM_SECRET" \
		--size 64M
	[ "$status" -ne 0 ]
	[[ "$output" == *"etcd cluster x"*"127.0.0.1:$port"* ]]
}

@test "serve --servers etcd:// finds three, a fourth joins under fio verify and gets new segments" {
	require_cmd fio
	three_members
	start_serve --size 128M --replicas 2
	[ "$(serve_membership servers)" -eq 3 ]
	[ "$(serve_membership etcd)" = ok ]
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --do_verify=1 &
	fio_pid=$!
	track_pid "$fio_pid"
	wait_until 60 ms_used_above m1 $(( 4 << 20 ))
	start_member m4
	wait_until 30 grep -q "server $(ms_addr m4) joined" "$FM_DIR/serve/log"
	fio_rc=0
	wait_exit "$fio_pid" || fio_rc=$?
	cat "$FM_DIR/fio.out"
	[ "$fio_rc" -eq 0 ]
	grep -q 'err= 0' "$FM_DIR/fio.out"
	# New segments after the join go to m4 too (it has the most free
	# memory): a second pass of writes makes sure some were opened.
	head -c 32M /dev/urandom >"$FM_DIR/more"
	nbdcopy "$FM_DIR/more" "$NBD_URI"
	ms_used_above m4 0
	[ "$(serve_membership servers)" -eq 4 ]
	[ "$(serve_membership members_joined)" -eq 1 ]
	nbdcopy "$NBD_URI" "$FM_DIR/back"
	cmp -n $(( 32 << 20 )) "$FM_DIR/more" "$FM_DIR/back"
	[ "$(serve_stat read_errors)" -eq 0 ]
}

@test "zones: a segment's two copies always land in different zones" {
	start_etcd
	# Three servers in one rack, one in the other: without zones most
	# segments would have both copies in rack-a.
	start_member m1 --zone rack-a
	start_member m2 --zone rack-a
	start_member m3 --zone rack-a
	start_member m4 --zone rack-b
	wait_until 20 member_count_is 4
	FM_SERVERS="etcd://${ETCD_URL#http://}/$CLUSTER"
	start_serve --size 128M --replicas 2
	make_mixed "$FM_DIR/data" 48
	nbdcopy "$FM_DIR/data" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/back"
	cmp -n $(( 48 << 20 )) "$FM_DIR/data" "$FM_DIR/back"
	# One copy of every segment in each rack: m4 alone holds as much as
	# the three others together.
	a=$(( $(stat_field m1 used_bytes) + $(stat_field m2 used_bytes) + $(stat_field m3 used_bytes) ))
	b=$(stat_field m4 used_bytes)
	echo "rack-a $a bytes, rack-b $b bytes"
	[ "$b" -gt 0 ]
	[ "$a" -eq "$b" ]
}

@test "a member killed: its key expires, it is counted lost, its copies are rebuilt" {
	three_members
	# A dead endpoint first: serve fails over to the live one.
	FM_SERVERS="etcd://127.0.0.1:$(free_port),${ETCD_URL#http://}/$CLUSTER"
	start_serve --size 64M --replicas 2 --timeout 2s
	[ "$(serve_membership servers)" -eq 3 ]
	head -c 32M /dev/urandom >"$FM_DIR/data"
	nbdcopy "$FM_DIR/data" "$NBD_URI"
	wait_until 30 ms_used_above m2 0
	kill -KILL "$(ms_pid m2)"
	wait_until 30 membership_is members_lost 1
	grep -q "server $(ms_addr m2) left the cluster" "$FM_DIR/serve/log"
	wait_until 120 serve_stat_is degraded_segments -eq 0
	nbdcopy "$NBD_URI" "$FM_DIR/back"
	cmp -n $(( 32 << 20 )) "$FM_DIR/data" "$FM_DIR/back"
}

@test "etcd killed mid-run changes nothing for the running device" {
	require_cmd fio
	three_members
	mport=$(free_port)
	start_serve --size 128M --replicas 2 --metrics "127.0.0.1:$mport"
	curl -sf --max-time 5 "http://127.0.0.1:$mport/metrics" | grep -qx 'farmem_blk_etcd_up 1'
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --do_verify=1 &
	fio_pid=$!
	track_pid "$fio_pid"
	wait_until 60 ms_used_above m1 $(( 4 << 20 ))
	kill -KILL "$ETCD_PID"
	wait_until 30 membership_is etcd unreachable
	fio_rc=0
	wait_exit "$fio_pid" || fio_rc=$?
	cat "$FM_DIR/fio.out"
	[ "$fio_rc" -eq 0 ]
	grep -q 'err= 0' "$FM_DIR/fio.out"
	# Still the same view: no server lost, all three in use, and a
	# verify-only pass on a new connection reads everything back.
	fio_nbd --rw=randwrite --size=96M --iodepth=16 --verify=crc32c --verify_only
	grep -q 'err= 0' "$FM_DIR/fio.out"
	[ "$(serve_membership servers)" -eq 3 ]
	[ "$(serve_membership members_lost)" -eq 0 ]
	[ "$(serve_membership etcd)" = unreachable ]
	[ "$(serve_stat degraded_segments)" -eq 0 ]
	grep -q 'etcd .*: unreachable' "$FM_DIR/serve/log"
	curl -sf --max-time 5 "http://127.0.0.1:$mport/metrics" | grep -qx 'farmem_blk_etcd_up 0'
	curl -sf --max-time 5 "http://127.0.0.1:$mport/metrics" |
		grep -qx 'farmem_blk_members_lost_total 0' 
}
