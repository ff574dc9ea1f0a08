# vm-mem: 256M
# vm-memservers: 0
# vm-timeout: 120
# The guest kernel side of the harness: the modules farmem needs are
# loaded and their devices exist, zswap can be enabled, Soft-RoCE links
# up, and swapstress catches a corrupted page.  Needs nothing of farmem-blk.
. /test/lib.sh
set -e
for d in /dev/ublk-control /dev/nbd0 /dev/zram0; do
	test -e "$d" || fail "$d missing"
done
say "ublk, nbd and zram devices present"
test -w /sys/module/zswap/parameters/enabled || fail "no zswap"
echo Y > /sys/module/zswap/parameters/enabled
[ "$(cat /sys/module/zswap/parameters/enabled)" = Y ] || fail "zswap did not enable"
echo N > /sys/module/zswap/parameters/enabled
say "zswap can be enabled"
rdma link add rxe0 type rxe netdev eth0 || fail "rdma link add rxe0"
rdma link show | grep -q rxe0 || fail "rxe0 missing"
say "Soft-RoCE: $(rdma link show | grep rxe0)"
set +e
swapstress --mib 8 --passes 1 --corrupt-one > /tmp/corrupt.log 2>&1
rc=$?
set -e
cat /tmp/corrupt.log
[ $rc -eq 1 ] || fail "swapstress --corrupt-one exited $rc, want 1"
grep -q "checksum bad" /tmp/corrupt.log || fail "swapstress did not describe the corruption"
say "swapstress catches a flipped bit"
say "ok"
