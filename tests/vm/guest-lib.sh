# Helpers for scenario scripts running inside the test guest (busybox sh).
# Sourced as /test/lib.sh.  Scenario scripts: `. /test/lib.sh`, then use
# these; /test/env (from tests/vm/run --env) is already sourced.
[ -f /test/env ] && . /test/env

say() { echo "scenario: $*"; }
fail() { echo "scenario: FAIL: $*"; exit 1; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until
# it succeeds, at most SECONDS; fail with DESCRIPTION otherwise.
wait_for() {
	local limit=$1 what=$2 i=0
	shift 2
	while ! "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -ge $((limit * 5)) ] && fail "timed out after ${limit}s waiting for $what"
		usleep 200000
	done
}

# swap_used_kb DEVICE: the Used column of /proc/swaps for DEVICE.
swap_used_kb() {
	awk -v d="$1" '$1 == d { print $4 }' /proc/swaps
}
