#!/usr/bin/env bats
# `farmem-blk offload`: flags and their errors, the [offload] config
# section, and the loop on a directory of fake cgroup files (this host's
# cgroup v2 has no memory controller; the guest scenario 9-offload runs
# it against the real kernel).  FARMEM_PROC_SWAPS stands in for
# /proc/swaps and FARMEM_RUN_DIR for the device run directory.

bats_require_minimum_version 1.5.0

load helpers

setup() {
	fm_setup
	require_file "$FM_BLK"
	CG="$FM_DIR/cg"
	mkdir -p "$CG"
	printf 'some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n' \
		>"$CG/memory.pressure"
	echo 419430400 >"$CG/memory.current"
	echo 0 >"$CG/memory.swap.current"
	printf 'anon 419430400\nkernel 1048576\nunevictable 0\nworkingset_refault_anon 0\n' \
		>"$CG/memory.stat"
	: >"$CG/memory.reclaim"
	SWAPS="$FM_DIR/swaps"
	printf 'Filename\tType\tSize\tUsed\tPriority\n/dev/zram0\tpartition\t1048572\t0\t100\n' >"$SWAPS"
	export FARMEM_PROC_SWAPS="$SWAPS"
	export FARMEM_RUN_DIR="$FM_DIR/run"
	mkdir -p "$FARMEM_RUN_DIR"
	# No /etc/farmem/farmem.conf of this machine leaks into a test.
	CONF="$FM_DIR/farmem.conf"
	: >"$CONF"
}

teardown() {
	stop_all
}

# start_offload ARGS...: run offload in the background (json on
# $FM_DIR/out, log on $FM_DIR/err), tracked for stop_all.
start_offload() {
	"$FM_BLK" offload --config "$CONF" "$@" >"$FM_DIR/out" 2>"$FM_DIR/err" &
	OFF=$!
	track_pid "$OFF"
}

lines() { grep -c "$1" "$2" 2>/dev/null; }
has_lines() { [ "$(lines "$1" "$2")" -ge "$3" ]; }

@test "offload --help lists the issue's flags" {
	run -0 "$FM_BLK" offload --help
	for f in --cgroup --interval --pressure --max-step --min --dry-run --json --metrics; do
		[[ "$output" == *"$f"* ]]
	done
	run -0 "$FM_BLK" --help
	[[ "$output" == *offload* ]]
}

@test "offload without --cgroup says so" {
	run -2 "$FM_BLK" offload --config "$CONF"
	[[ "$output" == *"--cgroup: no cgroup given"* ]]
}

@test "offload: bad flag values name the flag and the value" {
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --interval soon
	[[ "$output" == *"--interval: 'soon' is not a duration"* ]]
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --interval 10ms
	[[ "$output" == *"--interval: '10ms'"* ]]
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --pressure 0.1
	[[ "$output" == *"--pressure: '0.1' is not a percentage"* ]]
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --max-step 200%
	[[ "$output" == *"--max-step: '200%' is not a percentage"* ]]
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --min lots
	[[ "$output" == *"--min: 'lots' is not a size"* ]]
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --metrics nowhere
	[[ "$output" == *"--metrics: 'nowhere' is not HOST:PORT"* ]]
	run -2 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --bogus
	[[ "$output" == *"'--bogus'"* ]]
}

@test "offload accepts the issue's forms" {
	run -0 "$FM_BLK" offload --config "$CONF" --cgroup "$CG" --interval 1s \
		--max-step 5% --pressure 0.1% --min 64M --check-config
	[[ "$output" == *"interval 1000ms, pressure 0.100%, max-step 5.000%"* ]]
}

@test "offload: a cgroup without memory.reclaim is a clear error" {
	rm "$CG/memory.reclaim"
	run -1 "$FM_BLK" offload --config "$CONF" --cgroup "$CG"
	[[ "$output" == *"--cgroup $CG: no memory.reclaim"*"5.19"* ]]
}

@test "offload: a directory that is no cgroup v2 memory cgroup is a clear error" {
	mkdir "$FM_DIR/plain"
	run -1 "$FM_BLK" offload --config "$CONF" --cgroup "$FM_DIR/plain"
	[[ "$output" == *"not a cgroup v2 directory"* ]]
	run -1 "$FM_BLK" offload --config "$CONF" --cgroup "$FM_DIR/missing"
	[[ "$output" == *"--cgroup $FM_DIR/missing: No such file"* ]]
}

@test "offload: no swap is a clear error" {
	printf 'Filename\tType\tSize\tUsed\tPriority\n' >"$SWAPS"
	run -1 "$FM_BLK" offload --config "$CONF" --cgroup "$CG"
	[[ "$output" == *"no swap is active"* ]]
}

@test "offload --dry-run logs steps, writes nothing, reports on SIGUSR1, stops on SIGTERM" {
	start_offload --cgroup "$CG" --interval 100ms --max-step 5% --dry-run
	wait_until 20 has_lines "would reclaim 20971520 bytes" "$FM_DIR/err" 2
	[ ! -s "$CG/memory.reclaim" ]
	kill -USR1 "$OFF"
	wait_until 20 has_lines "^state  *reclaiming" "$FM_DIR/err" 1
	grep -q "^cgroup  *$CG\$" "$FM_DIR/err"
	kill -TERM "$OFF"
	wait_exit "$OFF"
	[ ! -s "$CG/memory.reclaim" ]
}

@test "offload writes its step to memory.reclaim and backs off under pressure" {
	start_offload --cgroup "$CG" --interval 100ms --max-step 5% --json
	wait_until 20 grep -q '"reclaimed_bytes": [1-9]' "$FM_DIR/out"
	[ "$(cat "$CG/memory.reclaim")" = 20971520 ]
	# A stall of a whole second per interval: far past 0.1 %.
	local i t=1000
	for i in $(seq 30); do
		t=$((t + 1000000))
		printf 'some avg10=9 avg60=9 avg300=9 total=%d\nfull avg10=0 avg60=0 avg300=0 total=0\n' \
			"$t" >"$CG/memory.pressure.new"
		mv "$CG/memory.pressure.new" "$CG/memory.pressure"
		grep -q '"state": "backoff"' "$FM_DIR/out" && break
		sleep 0.2
	done
	grep -q '"state": "backoff"' "$FM_DIR/out"
	kill -TERM "$OFF"
	wait_exit "$OFF"
}

@test "offload pauses while the farmem device's daemon does not answer" {
	printf 'Filename\tType\tSize\tUsed\tPriority\n/dev/ublkb9\tpartition\t1048572\t0\t100\n' >"$SWAPS"
	printf '[device]\nservers = "tcp://127.0.0.1:1"\nsize = 1G\n' >"$FARMEM_RUN_DIR/ublkb9.conf"
	start_offload --cgroup "$CG" --interval 100ms --json
	wait_until 20 grep -q '"state": "paused"' "$FM_DIR/out"
	grep -q '"farmem_devices": 1' "$FM_DIR/out"
	grep -q 'ublkb9: its daemon does not answer' "$FM_DIR/out"
	[ ! -s "$CG/memory.reclaim" ]
	kill -TERM "$OFF"
	wait_exit "$OFF"
}

@test "offload pauses when swap is nearly full" {
	printf 'Filename\tType\tSize\tUsed\tPriority\n/dev/zram0\tpartition\t1000\t990\t100\n' >"$SWAPS"
	start_offload --cgroup "$CG" --interval 100ms --json
	wait_until 20 grep -q '"paused_because": "swap nearly full' "$FM_DIR/out"
	wait_until 20 grep -q '"state": "paused"' "$FM_DIR/out"
	[ ! -s "$CG/memory.reclaim" ]
}

@test "offload reads [offload] from farmem.conf; flags override it" {
	printf '[offload]\ncgroup = %s\ninterval = 100ms\nmax-step = 2%%\n' "$CG" >"$CONF"
	run -0 "$FM_BLK" offload --config "$CONF" --check-config
	[[ "$output" == *"1 cgroups, interval 100ms"*"max-step 2.000%"* ]]
	run -0 "$FM_BLK" offload --config "$CONF" --max-step 3% --check-config
	[[ "$output" == *"max-step 3.000%"* ]]
	printf '[offload]\ncgroup = %s\npressure = lots\n' "$CG" >"$CONF"
	run -2 "$FM_BLK" offload --config "$CONF" --check-config
	[[ "$output" == *"$CONF: key 'offload:pressure': 'lots' is not a percentage"* ]]
	printf '[offload]\nwhatever = 1\n' >"$CONF"
	run -2 "$FM_BLK" offload --config "$CONF" --check-config
	[[ "$output" == *"unknown key"* ]]
}

@test "offload --metrics serves Prometheus text" {
	command -v curl >/dev/null || skip "curl not installed"
	command -v perl >/dev/null || skip "perl not installed"
	local port
	port=$(free_port)
	start_offload --cgroup "$CG" --interval 100ms --dry-run --metrics "127.0.0.1:$port"
	wait_until 20 accepts 127.0.0.1 "$port"
	wait_until 20 has_lines "would reclaim" "$FM_DIR/err" 1
	curl -fsS --max-time 10 "http://127.0.0.1:$port/metrics" >"$FM_DIR/scrape"
	run -0 "$BATS_TEST_DIRNAME/prom_validate.pl" "$FM_DIR/scrape"
	grep -q "^farmem_offload_memory_current_bytes{cgroup=\"$CG\"} 419430400\$" "$FM_DIR/scrape"
	grep -qx 'farmem_offload_swap_ok 1' "$FM_DIR/scrape"
}

@test "offload: a relative --cgroup starts at --cgroup-root" {
	start_offload --cgroup cg --cgroup-root "$FM_DIR" --interval 100ms --dry-run
	wait_until 20 has_lines "would reclaim" "$FM_DIR/err" 1
	grep -q "dry-run: $CG: would reclaim" "$FM_DIR/err"
	run -1 "$FM_BLK" offload --config "$CONF" --cgroup cg --cgroup "$CG" \
		--cgroup-root "$FM_DIR"
	[[ "$output" == *"--cgroup $CG: given twice"* ]]
}
