# vm-mem: 768M
# vm-memservers: 2
# vm-memserver-size: 512M
# vm-timeout: 1500
# Issue 12: a donor that gives memory back.  A third memserver runs in
# the guest itself (pool 128M, --reserve set from what the guest has
# free), next to the host's two; a 512 MiB device over all three (R=2)
# takes a verified swap workload (swapstress in a 64M cgroup).  Once
# swap is in use, another process (a file on tmpfs) eats the guest's
# memory so MemAvailable falls below reserve: the guest's pool must
# shrink (free slots first, then NOTICE), the client must move its
# segments to the host's servers, the workload must see 0 mismatches;
# with the file gone the pool grows back to its size.  Prints how far
# below reserve MemAvailable fell before the pool shrank.
. /test/lib.sh

POOL_MIB=128
MIN_MIB=4
LIMIT=64M
CGROOT=/sys/fs/cgroup
MS_ADDR=tcp://127.0.0.1:7171
MS_LOG=/tmp/ms-guest.log

require_servers
require_add

avail_kb() { awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo; }
ms_json() { farmem-memserver --stat "$MS_ADDR" --secret-file "$FARMEM_SECRET" --json 2>/dev/null; }
ms_field() { ms_json | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
pool_is() { [ "$(ms_field pool_bytes)" = "$1" ]; }
pool_below() { local p; p=$(ms_field pool_bytes); [ -n "$p" ] && [ "$p" -lt "$1" ]; }

grep -q " $CGROOT cgroup2 " /proc/mounts || mount -t cgroup2 cgroup2 $CGROOT ||
	fail "cannot mount cgroup2"
grep -qw memory $CGROOT/cgroup.subtree_control ||
	echo +memory > $CGROOT/cgroup.subtree_control || fail "cannot enable the memory controller"
if [ -w /sys/module/zswap/parameters/enabled ]; then
	echo N > /sys/module/zswap/parameters/enabled
fi
grep -q " /dev/shm tmpfs " /proc/mounts ||
	{ mkdir -p /dev/shm && mount -t tmpfs -o size=90% tmpfs /dev/shm; } ||
	fail "no tmpfs for the memory hog"

# The guest's memserver: reserve is what is free now less the pool and
# 256 MiB, so it has room at first (the daemon and the workload's cgroup
# take some of that) and loses it once the hog comes.
A0=$(avail_kb)
RESERVE_KB=$((A0 - (POOL_MIB + 256) * 1024))
[ "$RESERVE_KB" -gt 65536 ] || skip "guest has too little memory (MemAvailable ${A0} kB)"
farmem-memserver --listen "$MS_ADDR" --size ${POOL_MIB}M --min-size ${MIN_MIB}M \
	--reserve "${RESERVE_KB}K" --secret-file "$FARMEM_SECRET" >"$MS_LOG" 2>&1 &
MS_PID=$!
wait_for 60 "the guest's memserver" ms_json
FULL=$((POOL_MIB << 20))
pool_is "$FULL" || fail "guest pool is not $POOL_MIB MiB at start: $(ms_json)"
say "guest memserver: pool ${POOL_MIB} MiB, reserve ${RESERVE_KB} kB, MemAvailable $(avail_kb) kB"

FARMEM_SERVERS="$FARMEM_SERVERS,$MS_ADDR"
farmem_add --size 512M --replicas 2
swap_on "$DEV"

# The hook: a tmpfs file eating (what is available - reserve) + 96 MiB,
# written in the background so the workload keeps going.  Meanwhile
# MemAvailable is sampled until the pool shrank.
HOG=/dev/shm/hog
hog() {
	local want_mib=$(( ($(avail_kb) - RESERVE_KB) / 1024 + 96 ))
	say "hog: taking ${want_mib} MiB (MemAvailable $(avail_kb) kB, reserve ${RESERVE_KB} kB)"
	dd if=/dev/zero of=$HOG bs=1M count=$want_mib 2>/dev/null &
	HOG_PID=$!
	( p0=$(ms_field pool_bytes); min=$(avail_kb); i=0
	  while [ $i -lt 600 ]; do
		a=$(avail_kb); [ "$a" -lt "$min" ] && min=$a
		pool_below "$p0" && break
		i=$((i + 1)); usleep 100000
	  done
	  echo "$min" > /tmp/min-avail-before-shrink ) &
}

cg=$CGROOT/reserve-workload
mkdir -p "$cg" && echo "$LIMIT" > "$cg/memory.max" || fail "cgroup $cg"
WORKLOAD_CGROUP=$cg
run_workload "$DEV" 65536 hog --mib 256 --passes 1 --progress
rc=$?
WORKLOAD_CGROUP=
[ $rc -eq 0 ] || { cat "$MS_LOG"; fail "workload failed (status $rc): mismatches or errors"; }
say "workload verified every page: 0 mismatches"

wait "$HOG_PID" 2>/dev/null
wait_for 60 "the guest's pool to shrink" pool_below "$FULL"
grep "pool: " "$MS_LOG"
# Free slots alone may have covered the first drop (how full the guest's
# pool was depends on placement): then take 64 MiB more, which only
# segments held by the client can cover, so a client must move.
# The kernel may meet a step by swapping the hog's own tmpfs pages out
# (seen once: 64 MiB more left MemAvailable above reserve), so take up
# to three steps of 48 MiB, each given 15 s.
asked() { grep -q "asked clients to move [1-9]" "$MS_LOG"; }
step=0
while ! asked && [ $step -lt 3 ]; do
	step=$((step + 1))
	say "no client asked to move yet (pool shrank from free slots alone): 48 MiB more, step $step"
	dd if=/dev/zero of=$HOG.$step bs=1M count=48 2>/dev/null
	i=0
	while ! asked && [ $i -lt 150 ]; do i=$((i + 1)); usleep 100000; done
done
asked || { grep "pool: " "$MS_LOG"; fail "no client was asked to move segments after 3 more steps (MemAvailable $(avail_kb) kB, reserve ${RESERVE_KB} kB)"; }
wait_for 60 "the segments asked for to be moved" grep -q "segment(s) asked for are back" "$MS_LOG"
grep "segment(s) asked for are back" "$MS_LOG"
! grep "did not move segment" "$MS_LOG" || fail "the client missed a deadline"

MIN_AVAIL=$(cat /tmp/min-avail-before-shrink 2>/dev/null)
# What the memserver saw each time it acted: the deepest is how far below
# reserve the host got before the pool gave memory back.
grep "MiB left on the host, reserve" "$MS_LOG" |
	sed -n 's/.*: \([0-9]*\) MiB left on the host, reserve \([0-9]*\) MiB.*/\1 \2/p' |
	awk '{ d = $2 - $1; if (d > max) max = d; n++ }
	     END { printf "scenario: the pool shrank %d time(s); MemAvailable was at most %d MiB below reserve when it did\n", n, max }'
[ -n "$MIN_AVAIL" ] && say "lowest MemAvailable sampled after the hog started, before the pool" \
	"shrank: ${MIN_AVAIL} kB ($(( (RESERVE_KB - MIN_AVAIL) / 1024 )) MiB below reserve)"
say "guest memserver now: $(ms_json)"
held=$(ms_field segments)
status=$(farmem-blk status "$DEV") || say "farmem-blk status failed"
echo "$status"

# Everything still reads back (swapoff brings every page in).
swapoff "$DEV" || fail "swapoff $DEV"
[ -z "$(io_errors "$DEV")" ] || fail "I/O errors on $DEV"

# Room again: the pool grows back to its size.
rm -f $HOG $HOG.*
grow_back() { pool_is "$FULL" || { say "pool $(ms_field pool_bytes), MemAvailable $(avail_kb) kB"; false; }; }
wait_for 90 "the guest's pool to grow back" grow_back
say "pool back to $POOL_MIB MiB (MemAvailable $(avail_kb) kB); held ${held} segment(s) while shrunk"
grep "took .* segment(s) back" "$MS_LOG" | head -n 3
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
kill "$MS_PID"
