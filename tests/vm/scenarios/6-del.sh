# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 600
# Issue scenario 6: after swapping, swapoff and `farmem-blk del`: the
# device is gone and every memserver has its memory back (used 0, asked
# from inside the guest), while before del they held the data.
. /test/lib.sh
require_add
# The other scenarios run the ublk daemon in user copy mode (6.5+); this
# one keeps the buffer per tag that kernels without it get.
export FARMEM_UBLK_TAG_BUFFERS=1
farmem_add --size 1G --replicas 2
want_data_path "a buffer per tag"
swap_on "$DEV"
run_workload "$DEV" 0 "" --ram-factor 1.5 --passes 1 || fail "workload failed"
[ "$PEAK_SWAP_KB" -gt 0 ] || fail "no swap use seen"
used=$(memservers_used)
say "memservers used before del: $used"
total=0
for u in $used; do total=$((total + u)); done
[ $total -gt 0 ] || fail "memservers hold nothing before del"
swapoff "$DEV" || fail "swapoff"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
wait_for 30 "$DEV to go" sh -c "! test -e $DEV"
farmem-blk list 2>&1 | grep -q "$(basename "$DEV")" && fail "$DEV still listed"
used=$(memservers_used)
say "memservers used after del: $used"
n=0
for u in $used; do
	[ "$u" -eq 0 ] || fail "a memserver still holds $u bytes after del"
	n=$((n + 1))
done
[ $n -eq 3 ] || fail "want 3 memserver answers, got $n"
say "ok"
