# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 900
# Issue scenario 3: kill -9 of one memserver (on the host) in the middle of
# scenario 1, once 64 MiB are swapped out: with R=2 no page may be lost,
# the workload finishes with no mismatch.
. /test/lib.sh
# One pass (write, verify) keeps it within minutes under emulation.
WORKLOAD_PASSES=1
kill_one() {
	[ "$(host_ctl 'kill9 1')" = ok ] || fail "could not kill memserver 1"
	wait_for 10 "memserver 1 to die" memserver_dead 1
	say "memserver 1 killed with SIGKILL"
}
swap_scenario 65536 kill_one
