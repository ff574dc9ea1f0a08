# vm-mem: 256M
# Guest: scenario 1's swap workload with kernel diagnostics on (hung task
# stacks on the console after 30 s, sysrq task dump on failure), to see
# where a stuck swap path waits.  FARMEM_SWAP_ARGS adds add flags
# (e.g. "--frontend nbd").
. /test/lib.sh
echo 7 > /proc/sys/kernel/printk
echo 30 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
echo 1 > /proc/sys/kernel/sysrq
require_add
# If the swap path stalls, dump blocked tasks and CPU backtraces once.
( sleep ${FARMEM_DIAG_AFTER:-120}; echo w > /proc/sysrq-trigger; echo l > /proc/sysrq-trigger ) &
farmem_add --size 1G --replicas 2 ${FARMEM_SWAP_ARGS:-}
swap_on "$DEV"
run_workload "$DEV" 0 "" --ram-factor 2 --progress
rc=$?
farmem-blk status "$DEV"
[ $rc -eq 0 ] || { echo w > /proc/sysrq-trigger; fail "workload failed ($rc)"; }
swapoff "$DEV" || fail "swapoff"
farmem-blk del "$DEV" || fail "del"
say "ok: ${WORKLOAD_SECONDS}s, peak swap ${PEAK_SWAP_KB} kB"
