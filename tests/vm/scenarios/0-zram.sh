# vm-mem: 256M
# vm-memservers: 0
# vm-timeout: 300
# Baseline for the farmem scenarios: the same workload (about twice the
# guest's RAM, every page verified, two passes) swapping to an in-guest
# zram device of 1 GiB.  Proves the workload really swaps in this guest and
# gives the time to compare farmem's with.
. /test/lib.sh
echo 1G > /sys/block/zram0/disksize || fail "zram disksize"
swap_on /dev/zram0
run_workload /dev/zram0 0 "" --ram-factor 2 --progress || fail "workload failed"
[ "$PEAK_SWAP_KB" -gt 0 ] || fail "no swap use seen in /proc/swaps"
swapoff /dev/zram0 || fail "swapoff"
say "ok: zram baseline ${WORKLOAD_SECONDS}s, peak swap ${PEAK_SWAP_KB} kB"
