#!/usr/bin/env bats
# farmem-blk add/del/list/status/recover on the host, whose kernel has no
# ublk and no nbd: every path that must fail cleanly, with real
# memservers on loopback where the servers matter.  The device paths
# themselves run in the guest (tests/vm/ublk-*.sh, tests/vm/scenarios).

load helpers

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	fm_setup
	# Every test gets its own run directory: no real device is touched.
	export FARMEM_RUN_DIR="$FM_DIR/run"
	mkdir -p "$FARMEM_RUN_DIR"
}

teardown() {
	stop_all
}

# A device record as add leaves it, for a daemon that is gone.
fake_record() {
	local name=$1
	cat >"$FARMEM_RUN_DIR/$name.conf" <<-EOC
	[device]
	servers = "tcp://127.0.0.1:9"
	secret-file = "$FM_SECRET"
	size = 67108864
	replicas = 1
	uuid = "44444444-4444-4444-8444-444444444444"
	state-dir = "$FM_DIR/state"
	EOC
	# A pid that cannot be a live process.
	echo 999999999 >"$FARMEM_RUN_DIR/$name.pid"
}

@test "add as a normal user says root is needed" {
	require_cmd setpriv
	run setpriv --reuid=65534 --regid=65534 --clear-groups "$FM_BLK" add \
		--servers tcp://127.0.0.1:9 --secret-file "$FM_SECRET" --size 64M
	[ "$status" -eq 1 ]
	[[ "$output" == *"must run as root"* ]]
}

@test "add --help works without root and lists the add flags" {
	require_cmd setpriv
	run setpriv --reuid=65534 --regid=65534 --clear-groups "$FM_BLK" add --help
	[ "$status" -eq 0 ]
	[[ "$output" == *"--servers"* ]]
	[[ "$output" == *"--foreground"* ]]
}

@test "add without ublk_drv names the module and kernel to use" {
	[ ! -e /dev/ublk-control ] || skip "this kernel has ublk"
	start_memserver a --size 64M
	run "$FM_BLK" add --servers "$(ms_addr a)" --secret-file "$FM_SECRET" --size 16M
	[ "$status" -eq 1 ]
	[[ "$output" == *"ublk_drv not loaded: run 'modprobe ublk_drv' (needs Linux 6.0+ with CONFIG_BLK_DEV_UBLK)"* ]]
	[[ "$output" == *"--frontend nbd"* ]]
	# Nothing was left behind.
	[ -z "$(ls -A "$FARMEM_RUN_DIR")" ]
}

@test "add --frontend nbd without the nbd module says so" {
	[ ! -e /dev/nbd0 ] || skip "this kernel has nbd"
	start_memserver a --size 64M
	run "$FM_BLK" add --frontend nbd --servers "$(ms_addr a)" \
		--secret-file "$FM_SECRET" --size 16M
	[ "$status" -eq 1 ]
	[[ "$output" == *"nbd not loaded: run 'modprobe nbd'"* ]]
}

@test "add with an unreachable server says which and why" {
	local port
	port=$(free_port)
	run "$FM_BLK" add --servers "tcp://127.0.0.1:$port" --secret-file "$FM_SECRET" --size 16M
	[ "$status" -eq 1 ]
	[[ "$output" == *"server tcp://127.0.0.1:$port unreachable"* ]]
}

@test "add with the wrong secret says the server refused it" {
	start_memserver a --size 64M
	make_secret "$FM_DIR/other"
	run "$FM_BLK" add --servers "$(ms_addr a)" --secret-file "$FM_DIR/other" --size 16M
	[ "$status" -eq 1 ]
	[[ "$output" == *"refused our secret"* ]]
}

@test "add larger than the servers' free memory is refused with the numbers" {
	start_memserver a --size 32M
	start_memserver b --size 32M
	run "$FM_BLK" add --servers "$(ms_addr a),$(ms_addr b)" \
		--secret-file "$FM_SECRET" --size 1G --replicas 2
	[ "$status" -eq 1 ]
	[[ "$output" == *"size too large"* ]]
	[[ "$output" == *"2 replicas"* ]]
	[[ "$output" == *"64.0 MiB free"* ]]
}

@test "add with too few servers answering for the replicas" {
	local port
	start_memserver a --size 64M
	port=$(free_port)
	run "$FM_BLK" add --servers "$(ms_addr a),tcp://127.0.0.1:$port" \
		--secret-file "$FM_SECRET" --size 16M --replicas 2
	[ "$status" -eq 1 ]
	[[ "$output" == *"1 of 2 servers answered; 2 replicas need at least 2"* ]]
}

@test "add rejects bad flags and values with usage status 2" {
	run "$FM_BLK" add --bogus
	[ "$status" -eq 2 ]
	[[ "$output" == *"unknown option '--bogus'"* ]]
	run "$FM_BLK" add --servers tcp://127.0.0.1:9 --secret-file "$FM_SECRET" --size 1000
	[ "$status" -eq 2 ]
	[[ "$output" == *"--size"* ]]
	run "$FM_BLK" add --servers nonsense --secret-file "$FM_SECRET" --size 16M
	[ "$status" -eq 2 ]
	[[ "$output" == *"nonsense"* ]]
	run "$FM_BLK" add --servers tcp://127.0.0.1:9 --secret-file "$FM_SECRET" --size 16M extra
	[ "$status" -eq 2 ]
	[[ "$output" == *"unexpected argument 'extra'"* ]]
}

@test "list with no devices prints the header only; --json an empty array" {
	run "$FM_BLK" list
	[ "$status" -eq 0 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "${lines[0]}" == DEVICE* ]]
	run "$FM_BLK" list --json
	[ "$status" -eq 0 ]
	[ "$output" = "[]" ]
	run "$FM_BLK" list --bogus
	[ "$status" -eq 2 ]
}

@test "status with no devices, and of a device that does not exist" {
	run "$FM_BLK" status
	[ "$status" -eq 0 ]
	[ "$output" = "no farmem devices" ]
	run "$FM_BLK" status --json
	[ "$status" -eq 0 ]
	[ "$output" = "[]" ]
	run "$FM_BLK" status 3
	[ "$status" -eq 1 ]
	[[ "$output" == *"no device ublkb3"* ]]
	run "$FM_BLK" status not-a-device
	[ "$status" -eq 2 ]
}

@test "a device whose daemon died shows as such in list and status" {
	fake_record ublkb7
	run "$FM_BLK" list
	[ "$status" -eq 0 ]
	[[ "${lines[1]}" == "ublkb7"*"daemon-dead"*"64.0MiB"*"tcp://127.0.0.1:9" ]]
	run "$FM_BLK" list --json
	[ "$status" -eq 0 ]
	[[ "$output" == *'"name": "ublkb7"'* ]]
	[[ "$output" == *'"state": "daemon-dead"'* ]]
	[[ "$output" == *'"uuid": "44444444-4444-4444-8444-444444444444"'* ]]
	run "$FM_BLK" status 7
	[ "$status" -eq 1 ]
	[[ "$output" == *"/dev/ublkb7"* ]]
	[[ "$output" == *"farmem-blk recover"* ]]
}

@test "recover: no record, no page map, a device that is not ublk" {
	run "$FM_BLK" recover 5
	[ "$status" -eq 1 ]
	[[ "$output" == *"no record of ublkb5"* ]]
	fake_record ublkb6
	run "$FM_BLK" recover 6
	[ "$status" -eq 1 ]
	[[ "$output" == *"page map"*"is gone"* ]]
	run "$FM_BLK" recover nbd0
	[ "$status" -eq 1 ]
	[[ "$output" == *"only ublk devices can be recovered"* ]]
	run "$FM_BLK" recover
	[ "$status" -eq 2 ]
}

@test "del: usage, a missing device" {
	run "$FM_BLK" del
	[ "$status" -eq 2 ]
	run "$FM_BLK" del x y
	[ "$status" -eq 2 ]
	run "$FM_BLK" del 4
	[ "$status" -eq 1 ]
	[[ "$output" == *"no device ublkb4"* ]]
}

@test "del of a record whose daemon died removes the record" {
	[ ! -e /dev/ublk-control ] || skip "this kernel has ublk"
	fake_record nbd3
	run "$FM_BLK" del nbd3
	[ "$status" -eq 0 ]
	[ ! -e "$FARMEM_RUN_DIR/nbd3.conf" ]
	[ ! -e "$FARMEM_RUN_DIR/nbd3.pid" ]
}
