# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 420
# Issue scenario 4: kill -9 of the farmem-blk daemon in the middle of
# scenario 1 (64 MiB swapped out), then `farmem-blk recover`: the kernel
# holds the I/O meanwhile (UBLK_F_USER_RECOVERY), the new daemon maps the
# same state, the workload finishes with no mismatch.
. /test/lib.sh
# One pass (write, verify) keeps it within minutes under emulation.
WORKLOAD_PASSES=1
kill_daemon() {
	local pid
	pid=$(daemon_pid "$DEV")
	[ -n "$pid" ] || fail "no daemon pid for $DEV"
	kill -9 "$pid" || fail "kill -9 $pid"
	wait_for 10 "daemon $pid to die" pid_gone "$pid"
	say "daemon $pid killed with SIGKILL; recovering"
	farmem-blk recover "$DEV" || fail "farmem-blk recover $DEV"
	say "recovered: daemon $(daemon_pid "$DEV")"
}
swap_scenario 65536 kill_daemon
