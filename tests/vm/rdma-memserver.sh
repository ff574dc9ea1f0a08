# Guest script (tests/vm/rdma-check): farmem over rdma:// end to end in one
# guest with Soft-RoCE: three farmem-memservers listening on
# rdma://10.0.2.15, fm-client's pipelined write/read verify over rdma://,
# then the swap scenario on a farmem-blk device whose servers are all
# rdma://, with R=2 and a kill -9 of one memserver once 64 MiB are
# swapped out: every page must come back intact.
# The pools live in this guest (pinned), so the guest has 1.5 GiB and the
# workload is sized to swap out a few hundred MiB, not twice the RAM.
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
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT

servers=""
for i in 1 2 3; do
	port=$((7100 + i))
	farmem-memserver --listen rdma://$IP:$port --size ${RDMA_POOL:-256M} \
		--secret-file $secret --allow-unlocked \
		--pid-file /tmp/ms$i.pid > /tmp/ms$i.log 2>&1 &
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
kill_one() {
	kill -9 "$(cat /tmp/ms2.pid)" || return 1
	say "memserver 2 (rdma://$IP:7102) killed with SIGKILL"
}
require_add
farmem_add --size 1G --replicas 2 --overcommit
swap_on "$DEV"
run_workload "$DEV" 65536 kill_one --mib ${RDMA_WORKLOAD_MIB:-1000} --progress
rc=$?
say "device writes: $(dev_write_sectors "$DEV") sectors"
farmem-blk status "$DEV" || say "farmem-blk status $DEV failed"
[ $rc -eq 0 ] || fail "workload failed (status $rc)"
[ "$PEAK_SWAP_KB" -gt 65536 ] || fail "swap use of $DEV stayed at ${PEAK_SWAP_KB} kB"
swapoff "$DEV" || fail "swapoff $DEV"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
say "swap over rdma:// with a memserver killed: every page verified" \
	"(${WORKLOAD_SECONDS}s, peak swap ${PEAK_SWAP_KB} kB)"
for i in 1 3; do
	kill -0 "$(cat /tmp/ms$i.pid)" 2>/dev/null || { cat /tmp/ms$i.log; fail "memserver $i died"; }
done
say "rdma memserver scenario passed"
