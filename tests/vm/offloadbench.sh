# Guest side of tests/vm/offloadbench (see there): redis-server holding a
# dataset several times its hot set, a Zipf client (zipfredis), and three
# cases one after the other, each fresh: no offload, offload to zram, and
# offload to farmem (a ublk device on the host's memservers).  Prints one
# "offloadbench-result:" line per case.
. /test/lib.sh
KEYS=${OFFLOADBENCH_KEYS:-200000}
VSIZE=${OFFLOADBENCH_VALUE_SIZE:-1024}
CONVERGE=${OFFLOADBENCH_CONVERGE:-90}
MEASURE=${OFFLOADBENCH_MEASURE:-60}
CASES=${OFFLOADBENCH_CASES:-none zram farmem}
CG=/sys/fs/cgroup/redis
PORT=6379

grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts || fail "no cgroup v2"
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control ||
	echo +memory > /sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable the memory controller"
command -v redis-server >/dev/null || fail "no redis-server in the guest (run --redis)"

avail_kb() { awk '/^MemAvailable:/ { print $2 }' /proc/meminfo; }
redis_up() { echo PING | nc -w 2 127.0.0.1 $PORT 2>/dev/null | grep -q PONG; }

# swap_setup NAME: the case's swap device (DEV; empty for none).
swap_setup() {
	DEV=
	case $1 in
	none) ;;
	zram)
		echo 1 > /sys/block/zram0/reset 2>/dev/null
		echo zstd > /sys/block/zram0/comp_algorithm 2>/dev/null
		echo 1G > /sys/block/zram0/disksize || fail "zram disksize"
		DEV=/dev/zram0
		swap_on "$DEV" ;;
	farmem)
		farmem_add --size 1G --replicas 2
		swap_on "$DEV" ;;
	esac
}

swap_teardown() {
	[ -n "$DEV" ] || return 0
	swapoff "$DEV" || fail "swapoff $DEV"
	case $1 in
	zram) echo 1 > /sys/block/zram0/reset ;;
	farmem) farmem-blk del "$DEV" || fail "farmem-blk del $DEV" ;;
	esac
}

run_case() {
	local name=$1 rpid opid=0 avail0 avail1 cur0 cur1 swapcur res
	say "=== case $name"
	swap_setup "$name"
	mkdir -p $CG || fail "mkdir $CG"
	sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh $CG \
		redis-server --port $PORT --bind 127.0.0.1 --save "" --appendonly no \
		--protected-mode no > /tmp/redis-$name.log 2>&1 &
	rpid=$!
	wait_for 60 "redis-server to answer" redis_up
	zipfredis load --port $PORT --keys "$KEYS" --value-size "$VSIZE" || fail "load"
	sync
	echo 1 > /proc/sys/vm/drop_caches
	avail0=$(avail_kb)
	cur0=$(cat $CG/memory.current)
	say "$name: loaded: memory.current $cur0, MemAvailable $avail0 kB"
	if [ "$name" != none ]; then
		farmem-blk offload --cgroup $CG --interval 2s --max-step 5% --pressure 0.1% \
			--json > /tmp/offload-$name.json 2> /tmp/offload-$name.err &
		opid=$!
	fi
	zipfredis run --port $PORT --keys "$KEYS" --value-size "$VSIZE" \
		--seconds "$CONVERGE" > /tmp/warm-$name.txt || fail "warm-up run"
	say "$name: converge: $(cat /tmp/warm-$name.txt), memory.current $(cat $CG/memory.current)"
	zipfredis run --port $PORT --keys "$KEYS" --value-size "$VSIZE" \
		--seconds "$MEASURE" > /tmp/run-$name.txt || fail "measured run"
	res=$(cat /tmp/run-$name.txt)
	cur1=$(cat $CG/memory.current)
	swapcur=$(cat $CG/memory.swap.current 2>/dev/null || echo 0)
	avail1=$(avail_kb)
	say "$name: measured: $res"
	if [ $opid -ne 0 ]; then
		kill -USR1 $opid
		sleep 1
		kill -TERM $opid
		wait_for 30 "offload to stop" pid_gone $opid
		wait $opid || fail "offload exited $?"
		grep -v '^farmem-blk: info' /tmp/offload-$name.err | tail -n 9
	fi
	kill -TERM $rpid
	wait_for 60 "redis-server to stop" pid_gone $rpid
	wait $rpid
	echo "offloadbench-result: $name $(echo "$res" | awk '{ print $4, $8 }') $cur0 $cur1 $swapcur $((avail1 - avail0))"
	rmdir $CG
	swap_teardown "$name"
	err=$(dmesg | grep -E "Out of memory|oom-kill" | head -n 3)
	[ -z "$err" ] || { echo "$err"; fail "OOM kill in case $name"; }
}

for c in $CASES; do
	run_case "$c"
done
say "ok"
