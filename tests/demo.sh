#!/bin/bash
# make demo — the main job in one command: three local memservers, a
# 1 GiB farmem swap device on them, and `farmem-blk status` while a short
# workload swaps to it; then swapoff, del, and the memservers stop.
#
# On a host whose kernel has ublk this runs here (as root; the workload
# runs in a cgroup limited to 128 MiB so that it swaps without pressing
# on the rest of the machine).  On a host without ublk it says so and runs
# the same inside a QEMU guest with Debian's 6.12 kernel
# (tests/vm/demo-guest.sh), the memservers still on this host.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${FARMEM_BUILD:-$ROOT/build}
OUT=$ROOT/tests/vm/out
# shellcheck source=vm/host-lib.sh
. "$ROOT/tests/vm/host-lib.sh"

say() { echo "demo: $*"; }

has_ublk() {
	[ -e /dev/ublk-control ] && return 0
	modprobe ublk_drv 2>/dev/null && [ -e /dev/ublk-control ]
}

DEV= CG= HL_DIR=
cleanup() {
	if [ -n "$DEV" ]; then
		swapoff "$DEV" 2>/dev/null
		"$BUILD/farmem-blk" del "$DEV" 2>/dev/null
	fi
	[ -n "$CG" ] && rmdir "$CG" 2>/dev/null
	hl_cleanup
	[ -n "$HL_DIR" ] && rm -rf "$HL_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$OUT"
HL_DIR=$(mktemp -d "$OUT/demo.XXXXXX")
hl_start_memservers 3 768M || { say "memservers did not start"; exit 1; }
say "3 memservers on this host: $HL_SERVERS"

guest_demo() {
	say "this kernel ($(uname -r)) has no ublk: running the demo inside a QEMU"
	say "guest (Debian's 6.12 kernel, software emulation: slow, minutes)."
	say "The memservers stay on this host; the guest reaches them at 10.0.2.2."
	"$ROOT/tests/vm/run" --live --timeout 900 --with "$HL_DIR/secret" \
		--env FARMEM_SECRET=/test/secret \
		--env "FARMEM_SERVERS=$HL_SERVERS_GUEST" \
		"$ROOT/tests/vm/demo-guest.sh"
}

# The workload in a memory-limited cgroup (v2), so it swaps here.
run_limited() {
	local cgroot=/sys/fs/cgroup
	grep -qw memory "$cgroot/cgroup.subtree_control" 2>/dev/null ||
		echo +memory > "$cgroot/cgroup.subtree_control" 2>/dev/null
	CG=$cgroot/farmem-demo-$$
	mkdir "$CG" && echo 128M > "$CG/memory.max" || {
		say "no cgroup v2 memory controller: cannot bound the workload"; return 1; }
	echo max > "$CG/memory.swap.max" 2>/dev/null
	( echo "$BASHPID" > "$CG/cgroup.procs" &&
	  exec "$BUILD/tests/tools/swapstress" --mib 384 --passes 1 )
}

host_demo() {
	local out pid t=0 rc
	[ "$(id -u)" -eq 0 ] || { say "needs root (ublk, swapon)"; return 1; }
	say "this kernel ($(uname -r)) has ublk: running here"
	out=$("$BUILD/farmem-blk" add --servers "$HL_SERVERS" \
		--secret-file "$HL_DIR/secret" --size 1G --replicas 2) ||
		{ echo "$out"; say "farmem-blk add failed"; return 1; }
	DEV=$(echo "$out" | grep -o '/dev/ublkb[0-9]*' | head -n 1)
	[ -b "$DEV" ] || { say "add printed no device: $out"; return 1; }
	mkswap "$DEV" >/dev/null && swapon -p 100 "$DEV" || return 1
	say "swap on $DEV"
	run_limited > "$HL_DIR/workload.log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		t=$((t + 1))
		[ $((t % 5)) -eq 0 ] && "$BUILD/farmem-blk" status "$DEV"
	done
	wait "$pid"
	rc=$?
	cat "$HL_DIR/workload.log"
	"$BUILD/farmem-blk" status "$DEV"
	swapoff "$DEV" && "$BUILD/farmem-blk" del "$DEV" && DEV=
	return $rc
}

if has_ublk; then
	host_demo
else
	guest_demo
fi
rc=$?
[ $rc -eq 0 ] && say "done" || say "FAILED ($rc)"
exit $rc
