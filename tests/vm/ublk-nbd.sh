# Guest: `add --frontend nbd` end to end on a small device: a kernel
# /dev/nbdN served by the store through a socketpair, data round trip,
# status, list, del.
. /test/lib.sh
require_servers
is_zero() { [ "$(tr -d '\000' < "$1" | wc -c)" -eq 0 ]; }
farmem_add --frontend nbd --size 64M --replicas 2
name=$(basename "$DEV")
case $name in nbd*) ;; *) fail "want an nbd device, got $DEV" ;; esac
say "size $(cat /sys/block/$name/size) sectors, lbs $(cat /sys/block/$name/queue/logical_block_size)"
[ "$(cat /sys/block/$name/size)" = 131072 ] || fail "size"
dd if=/dev/urandom of=/tmp/a bs=1M count=8 2>/dev/null
dd if=/tmp/a of="$DEV" bs=1M oflag=direct 2>/dev/null || fail "write (1 MiB requests, larger than max_io)"
[ "$(cat /sys/block/$name/queue/max_sectors_kb)" -le 128 ] || fail "requests not capped at max_io"
dd if="$DEV" of=/tmp/b bs=64k count=128 iflag=direct 2>/dev/null || fail "read"
cmp /tmp/a /tmp/b || fail "data differs"
dd if="$DEV" of=/tmp/z bs=4k skip=4096 count=16 iflag=direct 2>/dev/null || fail "read zeros"
is_zero /tmp/z || fail "unwritten pages are not zero"
farmem-blk status "$DEV" || fail "status"
farmem-blk status "$DEV" --json | grep -q '"pages_stored": 2048' || fail "status --json"
farmem-blk list | grep -q "^$name .*running" || { farmem-blk list; fail "list"; }
farmem-blk del "$DEV" || fail "del"
wait_for 10 "$name to disconnect" sh -c "! test -e /sys/block/$name/pid"
farmem-blk list | grep -q "^$name " && fail "still listed"
say "ok"
