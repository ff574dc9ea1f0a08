# Guest side of tests/vm/swapbench (make swapbench): one verified swap
# workload, confined by a cgroup v2 memory.max so that it swaps, run
# against three swap devices in turn, each fresh and the only swap:
#   zram    the kernel's compressed RAM swap (SWAPBENCH_ZRAM_COMP, lz4)
#   nbd     /dev/nbd0, the kernel's NBD client (Debian's nbd-client)
#           attached to `nbdkit memory` on this guest's loopback
#   farmem  farmem-blk add (ublk, zstd) over three farmem-memservers on
#           this guest's loopback, 2 replicas
# Every page is verified (swapstress): a mismatch, an I/O error or an OOM
# kill fails the run; the times are numbers only.  Prints one
# "swapbench-result: NAME SECONDS LABEL" line per device for the host's
# table.  Settings (tests/vm/swapbench passes them): SWAPBENCH_MIB (288),
# SWAPBENCH_PASSES (2), SWAPBENCH_LIMIT (96M), SWAPBENCH_SIZE (1G, each
# swap device), SWAPBENCH_POOL (160M, each memserver),
# SWAPBENCH_DEVICES ("zram nbd farmem").
. /test/lib.sh

MIB=${SWAPBENCH_MIB:-288}
PASSES=${SWAPBENCH_PASSES:-2}
LIMIT=${SWAPBENCH_LIMIT:-96M}
SIZE=${SWAPBENCH_SIZE:-1G}
POOL=${SWAPBENCH_POOL:-160M}
ZCOMP=${SWAPBENCH_ZRAM_COMP:-lz4}
DEVICES=${SWAPBENCH_DEVICES:-zram nbd farmem}
CGROOT=/sys/fs/cgroup

say "guest: kernel $(uname -r), MemTotal $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB," \
	"vm.min_free_kbytes $(cat /proc/sys/vm/min_free_kbytes), $(nproc) CPUs"
say "workload: swapstress --mib $MIB --passes $PASSES in a cgroup with memory.max $LIMIT;" \
	"swap devices of $SIZE"

# cgroup v2 with the memory controller for the workload's cgroups.
grep -q " $CGROOT cgroup2 " /proc/mounts || mount -t cgroup2 cgroup2 $CGROOT ||
	fail "cannot mount cgroup2"
grep -qw memory $CGROOT/cgroup.controllers || fail "no memory controller in cgroup v2"
grep -qw memory $CGROOT/cgroup.subtree_control ||
	echo +memory > $CGROOT/cgroup.subtree_control || fail "cannot enable the memory controller"
# Every page goes to the device under test, not to zswap in front of it.
if [ -w /sys/module/zswap/parameters/enabled ]; then
	echo N > /sys/module/zswap/parameters/enabled
fi
[ -n "$(sed 1d /proc/swaps)" ] && fail "swap already on: $(cat /proc/swaps)"

# gone PID: PID has exited (a zombie not yet reaped counts as gone).
gone() {
	[ ! -e "/proc/$1" ] || grep -q '^[0-9]* (.*) Z ' "/proc/$1/stat" 2>/dev/null
}

# stop_pid NAME PID: SIGTERM, up to 60 s to exit; else show where its
# threads are and fail.
stop_pid() {
	local i=0 t
	kill "$2" 2>/dev/null
	while ! gone "$2"; do
		i=$((i + 1))
		if [ $i -ge 300 ]; then
			say "$1 (pid $2) still there 60 s after SIGTERM: $(cut -d' ' -f1-3 /proc/$2/stat)"
			for t in /proc/$2/task/*; do
				echo "-- thread $(basename "$t") $(cat "$t/comm") $(cut -d' ' -f3 "$t/stat")"
				cat "$t/stack" 2>/dev/null
			done
			kill -KILL "$2"
			fail "$1 did not exit on SIGTERM"
		fi
		usleep 200000
	done
	wait "$2" 2>/dev/null
	return 0
}

vmstat_val() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }

# bench NAME DEVICE LABEL [REPORT]: mkswap and swapon DEVICE, the workload
# in a fresh memory cgroup, REPORT (a command) while the swap is still on,
# swapoff.  Prints the result line.
bench() {
	local name=$1 dev=$2 label=$3 report=${4:-} cg out0 in0 oom
	say "==== $name: $label"
	swap_on "$dev"
	cg=$CGROOT/swapbench-$name
	mkdir "$cg" || fail "mkdir $cg"
	echo "$LIMIT" > "$cg/memory.max" || fail "memory.max $LIMIT"
	echo max > "$cg/memory.swap.max" 2>/dev/null
	out0=$(vmstat_val pswpout) in0=$(vmstat_val pswpin)
	WORKLOAD_CGROUP=$cg
	run_workload "$dev" 0 "" --mib "$MIB" --passes "$PASSES" --progress ||
		fail "$name: workload failed (status $?)"
	WORKLOAD_CGROUP=
	oom=$(awk '$1 == "oom_kill" { print $2 }' "$cg/memory.events")
	[ "${oom:-0}" -eq 0 ] || fail "$name: $oom OOM kill(s) in the workload's cgroup"
	[ "$PEAK_SWAP_KB" -gt 0 ] || fail "$name: no swap use of $dev seen in /proc/swaps"
	say "$name: swapped out $(( $(vmstat_val pswpout) - out0 )) pages, in" \
		"$(( $(vmstat_val pswpin) - in0 )) pages; cgroup memory.peak" \
		"$(cat "$cg/memory.peak" 2>/dev/null), memory.swap.peak $(cat "$cg/memory.swap.peak" 2>/dev/null)"
	[ -n "$report" ] && eval "$report"
	swapoff "$dev" || fail "$name: swapoff $dev"
	rmdir "$cg" 2>/dev/null
	say "$name: workload ${WORKLOAD_SECONDS}s, peak swap ${PEAK_SWAP_KB} kB"
	echo "swapbench-result: $name $WORKLOAD_SECONDS $label"
}

bench_zram() {
	echo 1 > /sys/block/zram0/reset 2>/dev/null
	echo "$ZCOMP" > /sys/block/zram0/comp_algorithm || fail "zram: comp_algorithm $ZCOMP"
	echo "$SIZE" > /sys/block/zram0/disksize || fail "zram: disksize $SIZE"
	say "zram: comp_algorithm $(cat /sys/block/zram0/comp_algorithm)"
	bench zram /dev/zram0 "zram ($ZCOMP, in-guest)" \
		'say "zram: mm_stat (orig compr used limit max same compacted huge): $(cat /sys/block/zram0/mm_stat)"'
	echo 1 > /sys/block/zram0/reset || fail "zram: reset"
}

bench_nbd() {
	local pid
	command -v nbdkit >/dev/null && command -v nbd-client >/dev/null ||
		fail "nbdkit or nbd-client missing (tests/vm/run --nbd)"
	# nbdkit writes its pid file once listening, then its parent exits.
	nbdkit --version
	nbdkit -P /tmp/nbdkit.pid -i 127.0.0.1 -p 10809 memory "$SIZE" ||
		fail "nbd: nbdkit did not start"
	pid=$(cat /tmp/nbdkit.pid)
	# -N: newstyle negotiation (nbdkit serves any export name); port 10809.
	nbd-client -N swapbench 127.0.0.1 /dev/nbd0 -b 4096 -swap ||
		{ kill "$pid"; fail "nbd: nbd-client could not attach /dev/nbd0"; }
	wait_for 30 "/dev/nbd0 to get its size" sh -c '[ "$(cat /sys/block/nbd0/size)" -gt 0 ]'
	say "nbd: /dev/nbd0 $(cat /sys/block/nbd0/size) sectors," \
		"logical block $(cat /sys/block/nbd0/queue/logical_block_size)"
	bench nbd /dev/nbd0 "kernel nbd + nbdkit memory (in-guest, loopback)"
	nbd-client -d /dev/nbd0 || fail "nbd: nbd-client -d"
	stop_pid nbdkit "$pid"
}

MS_PIDS=
stop_memservers() {
	local p
	for p in $MS_PIDS; do
		stop_pid memserver "$p"
	done
	MS_PIDS=
}

bench_farmem() {
	local i port p
	require_add
	FARMEM_SECRET=/tmp/farmem-secret
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > $FARMEM_SECRET
	chmod 600 $FARMEM_SECRET
	FARMEM_SERVERS=
	for i in 1 2 3; do
		port=$((7100 + i))
		farmem-memserver --listen "tcp://127.0.0.1:$port" --size "$POOL" \
			--secret-file $FARMEM_SECRET --lease 30s > /tmp/ms$i.log 2>&1 &
		MS_PIDS="$MS_PIDS $!"
		FARMEM_SERVERS="${FARMEM_SERVERS:+$FARMEM_SERVERS,}tcp://127.0.0.1:$port"
	done
	export FARMEM_SECRET FARMEM_SERVERS
	for i in 1 2 3; do
		wait_for 60 "memserver $i to listen" grep -q "listening on" /tmp/ms$i.log
	done
	say "farmem: 3 memservers of $POOL on $FARMEM_SERVERS"
	# --overcommit: 3 x $POOL cannot hold $SIZE x 2 uncompressed, but
	# the workload has only $MIB MiB and its pages compress (about 3.6x).
	farmem_add --size "$SIZE" --replicas 2 --overcommit
	bench farmem "$DEV" "farmem (ublk, zstd, R=2, 3 memservers in-guest, loopback)" \
		'farmem-blk status "$DEV"'
	farmem-blk del "$DEV" || fail "farmem: farmem-blk del $DEV"
	i=0
	for p in $MS_PIDS; do
		i=$((i + 1))
		gone "$p" && { tail -n 20 /tmp/ms$i.log; fail "farmem: memserver $i died"; }
	done
	stop_memservers
}

for d in $DEVICES; do
	case $d in
	zram) bench_zram ;;
	nbd) bench_nbd ;;
	farmem) bench_farmem ;;
	*) fail "unknown device $d" ;;
	esac
	[ -z "$(sed 1d /proc/swaps)" ] || fail "swap still on after $d: $(cat /proc/swaps)"
done
say "ok"
