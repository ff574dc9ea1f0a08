# vm-mem: 256M
# Guest: scenario 4 (kill -9 of the daemon mid-swap, then recover) with
# diagnostics: hung-task stacks after 20 s, memory state around the kill.
. /test/lib.sh
echo 7 > /proc/sys/kernel/printk
echo 20 > /proc/sys/kernel/hung_task_timeout_secs 2>/dev/null
echo 1 > /proc/sys/kernel/sysrq
kill_daemon() {
	local pid
	pid=$(daemon_pid "$DEV")
	grep -E "MemFree|SwapFree|Mlocked" /proc/meminfo | tr -s ' ' | tr '\n' ' '; echo
	kill -9 "$pid" || fail "kill -9 $pid"
	say "killed $pid"
	( sleep 60; grep -E "MemFree|SwapFree" /proc/meminfo; echo w > /proc/sysrq-trigger ) &
	wait_for 10 "daemon $pid to die" pid_gone "$pid"
	say "daemon $pid dead; recovering"
	farmem-blk recover "$DEV" || fail "farmem-blk recover $DEV"
	say "recovered: daemon $(daemon_pid "$DEV")"
}
swap_scenario 65536 kill_daemon
