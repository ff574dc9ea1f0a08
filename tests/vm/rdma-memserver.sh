# Guest script (tests/vm/rdma-check): farmem over rdma:// end to end in one
# guest with Soft-RoCE: three farmem-memservers listening on
# rdma://10.0.2.15; fm-client's pipelined write/read verify over rdma://;
# --stat over rdma://; a farmem-blk device (R=2) on them: 64 MiB of
# random data written, kill -9 of one memserver, everything read back and
# compared, more written and verified with two servers left.
# Swap over rdma:// is tests/vm/rdma-pair's: memservers in another guest,
# as in production, not in the guest that swaps.
. /test/lib.sh
. /test/rdma-mods.sh

IP=10.0.2.15
secret=/tmp/secret
printf 'rdma-scenario-secret-0123456789\n' > $secret
chmod 600 $secret


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

servers=""
for i in 1 2 3; do
	port=$((7100 + i))
	farmem-memserver --listen rdma://$IP:$port --size ${RDMA_POOL:-256M} \
		--secret-file $secret --pid-file /tmp/ms$i.pid > /tmp/ms$i.log 2>&1 &
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
farmem-memserver --stat rdma://$IP:7101 --secret-file $secret --json |
	grep -q '"server":"rdma://' || fail "farmem-memserver --stat over rdma://"

export FARMEM_SERVERS=$servers FARMEM_SECRET=$secret
require_add

# Block device over rdma://, a memserver killed in the middle.
farmem_add --size 512M --replicas 2 --overcommit
dd if=/dev/urandom of=/tmp/pat bs=1M count=64 2>/dev/null || fail "no pattern"
# Every transfer is bounded: a stuck one fails with the logs (a task
# stuck in D state ignores `timeout`, so watch it from here).
bounded() {
	local what=$1 pid i=0
	shift
	"$@" 2>/dev/null &
	pid=$!
	while kill -0 $pid 2>/dev/null; do
		i=$((i + 1))
		if [ $i -ge 900 ]; then
			farmem-blk status "$DEV"
			fail "$what: still running after 180 s"
		fi
		usleep 200000
	done
	wait $pid || fail "$what failed"
}
bounded "write to $DEV" dd if=/tmp/pat of="$DEV" bs=1M seek=16 conv=fsync
kill -9 "$(cat /tmp/ms2.pid)" || fail "kill memserver 2"
say "memserver 2 (rdma://$IP:7102) killed with SIGKILL after 64 MiB written"
sync
echo 3 > /proc/sys/vm/drop_caches
bounded "read back from $DEV" dd if="$DEV" of=/tmp/back bs=1M skip=16 count=64
cmp /tmp/pat /tmp/back || fail "data read back over rdma:// differs after a memserver died"
say "64 MiB read back intact with one of three memservers gone (R=2)"
dd if=/dev/urandom of=/tmp/pat2 bs=1M count=32 2>/dev/null
bounded "write after the kill" dd if=/tmp/pat2 of="$DEV" bs=1M seek=200 conv=fsync
echo 3 > /proc/sys/vm/drop_caches
bounded "read after the kill" dd if="$DEV" of=/tmp/back bs=1M skip=200 count=32
cmp /tmp/pat2 /tmp/back || fail "data written after the kill differs"
bounded "second read back" dd if="$DEV" of=/tmp/back bs=1M skip=16 count=64
cmp /tmp/pat /tmp/back || fail "the first 64 MiB changed"
rm -f /tmp/pat /tmp/pat2 /tmp/back
say "writes after the kill verified"
farmem-blk status "$DEV" || say "farmem-blk status $DEV failed"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"

for i in 1 3; do
	kill -0 "$(cat /tmp/ms$i.pid)" 2>/dev/null || fail "memserver $i died"
done
say "rdma memserver scenario passed"
