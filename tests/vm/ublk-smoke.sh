# Guest: the ublk frontend end to end on a small device, quicker than
# the swap scenarios: queue limits, data round trip with O_DIRECT,
# discard, status/list (table and JSON), kill -9 + recover with the data
# intact, del.  Run with tests/vm/ublk-check.sh tests/vm/ublk-smoke.sh.
. /test/lib.sh
require_servers
# is_zero FILE: every byte of FILE is 0.
is_zero() { [ "$(tr -d '\000' < "$1" | wc -c)" -eq 0 ]; }
FARMEM_DEBUG=1 farmem_add --size 64M --replicas 2 --queues 2 --depth 16
name=$(basename "$DEV")
q=/sys/block/$name/queue
say "limits: lbs $(cat $q/logical_block_size) pbs $(cat $q/physical_block_size) max_sectors_kb $(cat $q/max_sectors_kb) discard_granularity $(cat $q/discard_granularity) discard_max $(cat $q/discard_max_bytes)"
[ "$(cat $q/logical_block_size)" = 4096 ] || fail "logical block size"
[ "$(cat $q/discard_granularity)" = 4096 ] || fail "discard granularity"
[ "$(cat $q/discard_max_bytes)" -gt 0 ] || fail "no discard"

dd if=/dev/urandom of=/tmp/a bs=1M count=8 2>/dev/null
dd if=/tmp/a of="$DEV" bs=64k oflag=direct 2>/dev/null || fail "write"
dd if="$DEV" of=/tmp/b bs=64k count=128 iflag=direct 2>/dev/null || fail "read"
cmp /tmp/a /tmp/b || fail "data differs after the round trip"
say "8 MiB round trip ok"
# Zeros past the data read back as zeros.
dd if="$DEV" of=/tmp/z bs=4k skip=4096 count=16 iflag=direct 2>/dev/null || fail "read zeros"
is_zero /tmp/z || fail "unwritten pages are not zero"

farmem-blk status "$DEV" || fail "status"
farmem-blk status "$DEV" --json | grep -q '"pages_stored": 2048' || {
	farmem-blk status "$DEV" --json; fail "status --json does not show 2048 pages"; }
# Random bytes: every page skipped zstd and was stored raw.
farmem-blk status "$DEV" --json | grep -q '"incompressible_pages": 2048' || {
	farmem-blk status "$DEV" --json; fail "status --json does not show 2048 raw pages"; }
farmem-blk list | grep -q "^$name .*running" || { farmem-blk list; fail "list"; }
farmem-blk list --json | grep -q "\"name\": \"$name\"" || fail "list --json"

if command -v blkdiscard >/dev/null 2>&1; then
	blkdiscard -o 0 -l 4194304 "$DEV" || fail "blkdiscard"
	farmem-blk status "$DEV" --json | grep -q '"pages_stored": 1024' || {
		farmem-blk status "$DEV" --json; fail "discard did not drop 1024 pages"; }
	dd if="$DEV" of=/tmp/z bs=4k count=16 iflag=direct 2>/dev/null
	is_zero /tmp/z || fail "discarded pages are not zero"
	dd if=/tmp/a of="$DEV" bs=64k count=64 oflag=direct conv=notrunc 2>/dev/null
	say "discard ok"
fi

pid=$(daemon_pid "$DEV")
kill -9 "$pid"
wait_for 10 "daemon to die" pid_gone "$pid"
t0=$(cut -d' ' -f1 /proc/uptime)
farmem-blk recover "$DEV" || fail "recover"
t1=$(cut -d' ' -f1 /proc/uptime)
say "recovered in $(awk -v a=$t0 -v b=$t1 'BEGIN{print b-a}')s, daemon $(daemon_pid "$DEV")"
dd if="$DEV" of=/tmp/b bs=64k count=128 iflag=direct 2>/dev/null || fail "read after recover"
cmp /tmp/a /tmp/b || fail "data differs after recover"
say "data intact after kill -9 and recover"

farmem-blk del "$DEV" || fail "del"
wait_for 10 "$DEV to go" sh -c "! test -e $DEV"
farmem-blk list | grep -q "^$name " && fail "still listed after del"
say "ok"
