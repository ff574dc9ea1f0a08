# Guest script (tests/vm/rdma-check): farmem over rdma:// end to end in one
# guest with Soft-RoCE: three farmem-memservers listening on
# rdma://10.0.2.15; fm-client's pipelined write/read verify over rdma://;
# a farmem-blk device (R=2) on them: 64 MiB of random data written,
# kill -9 of one memserver, everything read back and compared, more
# written and verified with two servers left; then swap on a second
# device over rdma:// with a verified workload.
# The pools live in this guest (pinned), so the guest has 1.5 GiB and the
# swap workload is sized to swap out a little, not twice the RAM.
. /test/lib.sh
. /test/rdma-mods.sh

IP=10.0.2.15
secret=/tmp/secret
printf 'rdma-scenario-secret-0123456789\n' > $secret
chmod 600 $secret

if farmem-memserver --check-config --listen rdma://$IP:7101 --size 16M \
	--secret-file $secret 2>&1 | grep -q 'tcp://HOST:PORT)\|only tcp'; then
	skip "farmem-memserver does not serve rdma:// yet (memserver/rdma_listener.h: wiring)"
fi

pids=""
cleanup() {
	rc=$?
	if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
		for f in /run/farmem/*.log /tmp/ms*.log; do
			[ -f "$f" ] && { echo "---- $f"; tail -n 40 "$f"; }
		done
	fi
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT

# The memservers share this guest with the swapping workload: their own
# heap and stack must never go to the swap device they serve (a fault
# there would wait for themselves).  On real hosts they run elsewhere.
msgroup=/sys/fs/cgroup/farmem-ms
echo +memory > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
mkdir -p $msgroup && echo 0 > $msgroup/memory.swap.max ||
	fail "cannot keep the memservers out of swap (cgroup2 memory.swap.max)"

servers=""
for i in 1 2 3; do
	port=$((7100 + i))
	sh -c "echo \$\$ > $msgroup/cgroup.procs && exec farmem-memserver \
		--listen rdma://$IP:$port --size ${RDMA_POOL:-256M} \
		--secret-file $secret --allow-unlocked \
		--pid-file /tmp/ms$i.pid" > /tmp/ms$i.log 2>&1 &
	pids="$pids $!"
	servers="${servers:+$servers,}rdma://$IP:$port"
done
for i in 1 2 3; do
	wait_for 20 "memserver $i to listen" test -s /tmp/ms$i.pid
done
say "memservers: $servers"
head -n 3 /tmp/ms1.log

# The transport alone: pipelined one-sided writes and reads, verified.
fm-client --server rdma://$IP:7101 --secret-file $secret pipeline 512 ||
	fail "fm-client pipeline over rdma://"
fm-client --server rdma://$IP:7101 --secret-file $secret stat ||
	fail "fm-client stat over rdma://"

type run_workload >/dev/null 2>&1 || fail "/test/lib.sh has no run_workload"
export FARMEM_SERVERS=$servers FARMEM_SECRET=$secret
require_add

# Block device over rdma://, a memserver killed in the middle.
farmem_add --size 512M --replicas 2 --overcommit
dd if=/dev/urandom of=/tmp/pat bs=1M count=64 2>/dev/null || fail "no pattern"
dd if=/tmp/pat of="$DEV" bs=1M seek=16 conv=fsync 2>/dev/null || fail "write to $DEV"
kill -9 "$(cat /tmp/ms2.pid)" || fail "kill memserver 2"
say "memserver 2 (rdma://$IP:7102) killed with SIGKILL after 64 MiB written"
sync
echo 3 > /proc/sys/vm/drop_caches
dd if="$DEV" of=/tmp/back bs=1M skip=16 count=64 2>/dev/null || fail "read back from $DEV"
cmp /tmp/pat /tmp/back || fail "data read back over rdma:// differs after a memserver died"
say "64 MiB read back intact with one of three memservers gone (R=2)"
dd if=/dev/urandom of=/tmp/pat2 bs=1M count=32 2>/dev/null
dd if=/tmp/pat2 of="$DEV" bs=1M seek=200 conv=fsync 2>/dev/null || fail "write after the kill"
echo 3 > /proc/sys/vm/drop_caches
dd if="$DEV" of=/tmp/back bs=1M skip=200 count=32 2>/dev/null || fail "read after the kill"
cmp /tmp/pat2 /tmp/back || fail "data written after the kill differs"
dd if="$DEV" of=/tmp/back bs=1M skip=16 count=64 2>/dev/null || fail "second read back"
cmp /tmp/pat /tmp/back || fail "the first 64 MiB changed"
rm -f /tmp/pat /tmp/pat2 /tmp/back
say "writes after the kill verified"
farmem-blk status "$DEV" || say "farmem-blk status $DEV failed"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"

# Swap over rdma:// on the two memservers left.
FARMEM_SERVERS=rdma://$IP:7101,rdma://$IP:7103
farmem_add --size 512M --replicas 2 --overcommit
swap_on "$DEV"
run_workload "$DEV" 0 : --mib ${RDMA_WORKLOAD_MIB:-1000} --passes 1 --progress
rc=$?
say "device writes: $(dev_write_sectors "$DEV") sectors"
[ $rc -eq 0 ] || fail "swap workload over rdma:// failed (status $rc)"
[ "$PEAK_SWAP_KB" -gt 0 ] || fail "no swap use of $DEV seen"
swapoff "$DEV" || fail "swapoff $DEV"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
for i in 1 3; do
	kill -0 "$(cat /tmp/ms$i.pid)" 2>/dev/null || fail "memserver $i died"
done
say "rdma memserver scenario passed (swap: ${WORKLOAD_SECONDS}s, peak ${PEAK_SWAP_KB} kB)"
