# vm-mem: 256M
# The main job, inside the guest (tests/demo.sh runs this when the host's
# kernel has no ublk): a 1 GiB farmem swap device on the three memservers
# of the host, a short swap workload, `farmem-blk status` every 10 s
# while it runs, then swapoff, del, and the memservers' memory given back.
. /test/lib.sh
require_servers
say "guest kernel $(uname -r), $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB RAM"
farmem_add --size 1G --replicas 2
swap_on "$DEV"
swapstress --ram-factor 1.5 --passes 1 > /tmp/workload.log 2>&1 &
pid=$!
t=0
while kill -0 "$pid" 2>/dev/null; do
	sleep 1
	t=$((t + 1))
	[ $((t % 10)) -eq 0 ] || continue
	say "after ${t}s: $(swap_used_kb "$DEV") kB swapped out to $DEV"
	farmem-blk status "$DEV"
done
wait "$pid"
rc=$?
cat /tmp/workload.log
say "final status:"
farmem-blk status "$DEV"
[ $rc -eq 0 ] || fail "workload failed"
swapoff "$DEV" || fail "swapoff"
say "memservers used before del (bytes): $(memservers_used)"
farmem-blk del "$DEV" || fail "farmem-blk del"
say "memservers used after del (bytes): $(memservers_used)"
say "done"
