# vm-mem: 768M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 1800
# Issue 13: proactive offload.  A hot/cold workload with no memory limit
# (400 MiB filled and verified, a 10 % hot set read continuously) runs in
# its own cgroup; `farmem-blk offload` over a farmem swap device (1 GiB,
# R=2) must bring the cgroup's memory.current down toward the hot set
# (below half of where it started) while the hot set stays resident and
# every page verifies at the end.  The hot loop's rate before and after
# is printed (emulated CPU: information, not judged), as are the offload
# report (SIGUSR1), its Prometheus metrics and the device's status.
. /test/lib.sh
require_add
CG=/sys/fs/cgroup/hotcold
MIB=400
HOT_PCT=10
M=127.0.0.1:9481

grep -q " /sys/fs/cgroup cgroup2 " /proc/mounts || skip "no cgroup v2 at /sys/fs/cgroup"
grep -qw memory /sys/fs/cgroup/cgroup.controllers || skip "no memory controller in cgroup v2"
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control ||
	echo +memory > /sys/fs/cgroup/cgroup.subtree_control || fail "cannot enable the memory controller"
mkdir -p "$CG" || fail "mkdir $CG"
[ -e "$CG/memory.reclaim" ] || skip "kernel has no memory.reclaim"

# Without swap, offload must refuse with a clear error.
out=$(farmem-blk offload --cgroup "$CG" 2>&1) && fail "offload ran without swap"
echo "$out"
echo "$out" | grep -q "no swap" || fail "offload without swap: unclear error: $out"

farmem_add --size 1G --replicas 2
swap_on "$DEV"

rm -f /tmp/hc.ready /tmp/hc.stop
sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec hotcold "$@"' sh "$CG" \
	--mib $MIB --hot-pct $HOT_PCT --ready /tmp/hc.ready --stop /tmp/hc.stop \
	--max-seconds 1500 > /tmp/hc.log 2>&1 &
HC=$!
wait_for 300 "hotcold to fill $MIB MiB" test -e /tmp/hc.ready
start=$(cat "$CG/memory.current")
avail0=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
say "filled: memory.current $start, MemAvailable ${avail0} kB, swap used $(swap_used_kb "$DEV") kB"

farmem-blk offload --cgroup "$CG" --interval 1s --max-step 5% --pressure 0.1% \
	--json --metrics "$M" > /tmp/offload.json 2> /tmp/offload.err &
OFF=$!
target=$((start / 2))
i=0
cur=$start
# Bounded: at most 600 s for memory.current to fall below half its start.
while [ "$cur" -ge "$target" ] && [ $i -lt 600 ]; do
	kill -0 "$OFF" 2>/dev/null || { cat /tmp/offload.err; fail "offload exited"; }
	kill -0 "$HC" 2>/dev/null || { cat /tmp/hc.log; fail "hotcold exited"; }
	sleep 1
	i=$((i + 1))
	cur=$(cat "$CG/memory.current")
	[ $((i % 20)) -eq 0 ] && say "after ${i}s: memory.current $cur, swap used $(swap_used_kb "$DEV") kB"
done
say "memory.current $start -> $cur after ${i}s (target below $target)"
# Keep offload going a little longer so the steady state shows.
sleep 20
cur=$(cat "$CG/memory.current")
avail1=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
swapcur=$(cat "$CG/memory.swap.current" 2>/dev/null || echo 0)
say "steady: memory.current $cur, memory.swap.current $swapcur, MemAvailable ${avail0} -> ${avail1} kB"
wget -q -O - "http://$M/metrics" > /tmp/offload.prom 2>/dev/null || say "metrics scrape failed"
grep '^farmem_offload_' /tmp/offload.prom | head -n 12
kill -USR1 "$OFF"
sleep 2
kill -TERM "$OFF"
wait_for 30 "offload to exit on SIGTERM" pid_gone "$OFF"
wait "$OFF"
offrc=$?
tail -n 3 /tmp/offload.json
grep -v '^farmem-blk: info: ' /tmp/offload.err | tail -n 20

touch /tmp/hc.stop
wait_for 900 "hotcold to verify every page" pid_gone "$HC"
wait "$HC"
hcrc=$?
cat /tmp/hc.log
status=$(farmem-blk status "$DEV") || say "farmem-blk status $DEV failed"
echo "$status"
err=$(io_errors "$DEV")
[ -z "$err" ] || { echo "$err"; fail "I/O errors on $DEV"; }

[ $offrc -eq 0 ] || fail "offload exited $offrc after SIGTERM"
[ $hcrc -eq 0 ] || fail "hotcold failed (status $hcrc): a page did not verify"
grep -q "verified .* 0 mismatches" /tmp/hc.log || fail "hotcold did not report a clean verification"
[ "$cur" -lt "$target" ] || fail "memory.current $cur did not fall below $target (start $start)"
grep -q '"reclaimed_bytes": [1-9]' /tmp/offload.json || fail "offload reported nothing reclaimed"
grep -q '^farmem_offload_reclaimed_bytes_total{cgroup="/sys/fs/cgroup/hotcold"} [1-9]' /tmp/offload.prom ||
	fail "metrics lack the reclaimed bytes"
grep -q '^reclaimed ' /tmp/offload.err || fail "no SIGUSR1 report"
hot=$(sed -n 's/^hotcold: resident hot \([0-9]*\).*/\1/p' /tmp/hc.log)
[ -n "$hot" ] && [ "$hot" -ge 90 ] || fail "hot set not resident after offload: ${hot}%"
[ "$(swap_used_kb "$DEV")" -gt 0 ] || [ "$(dev_write_sectors "$DEV")" -gt 0 ] ||
	fail "nothing went to $DEV"
swapoff "$DEV" || fail "swapoff $DEV"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
say "ok: memory.current $start -> $cur, MemAvailable +$((avail1 - avail0)) kB, hot set ${hot}% resident"
