# Helpers for scenario scripts running inside the test guest (busybox sh).
# Installed as /test/lib.sh; a scenario starts with `. /test/lib.sh`.
# /test/env (tests/vm/run --env, tests/vm/check) is sourced here:
#   FARMEM_SERVERS   memservers as the guest sees them (tcp://10.0.2.2:P,...)
#   FARMEM_SECRET    their shared secret file (/test/secret)
#   FARMEM_CTL_PORT  the host's control listener (tests/vm/host-control.pl)
#   FARMEM_CTL_HOST  where that listener is (default 10.0.2.2, the host)
[ -f /test/env ] && . /test/env

say() { echo "scenario: $*"; }
# On failure, also what the daemons logged to their files (a recover run
# by the keeper writes there, not to the console); /run is in RAM here.
fail() {
	echo "scenario: FAIL: $*"
	for f in /run/farmem/*.log; do
		[ -s "$f" ] || continue
		echo "scenario: the last lines of $f:"
		tail -n 15 "$f" | sed 's/^/scenario:   /'
	done
	exit 1
}
skip() { echo "scenario: SKIP: $*"; exit 77; }

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

# host_ctl COMMAND: ask whoever runs the memservers (the host's
# tests/vm/host-control.pl; in the two-guest rdma test the memserver
# guest, FARMEM_CTL_HOST) and print its one-line reply: "ping", "kill9 I",
# "alive I".  A refused connection is retried for up to 5 s (the guest's
# listener is down for a moment between two commands).
host_ctl() {
	local reply i=0
	[ -n "${FARMEM_CTL_PORT:-}" ] || fail "no host control port (run through tests/vm/check)"
	while [ $i -lt 10 ]; do
		reply=$(echo "$1" | nc -w 10 "${FARMEM_CTL_HOST:-10.0.2.2}" "$FARMEM_CTL_PORT" 2>/dev/null)
		[ -n "$reply" ] && { echo "$reply"; return 0; }
		i=$((i + 1))
		usleep 500000
	done
	return 1
}

# memserver_dead I: the host says memserver I is gone.
memserver_dead() {
	[ "$(host_ctl "alive $1")" = no ]
}

# swap_used_kb DEVICE: the Used column of /proc/swaps for DEVICE (0 if absent).
swap_used_kb() {
	awk -v d="$1" '$1 == d { u = $4 } END { print u + 0 }' /proc/swaps
}

# require_servers: the scenario needs the host's memservers.
require_servers() {
	[ -n "${FARMEM_SERVERS:-}" ] || skip "no memservers given (run through tests/vm/check)"
	[ -f "${FARMEM_SECRET:-/test/secret}" ] || fail "no secret file"
}

# require_add: `farmem-blk add` exists in this build (skip until it lands).
require_add() {
	if farmem-blk add --help 2>&1 | grep -q "not built yet"; then
		skip "farmem-blk add is not implemented yet"
	fi
}

# farmem_add ARGS...: create a farmem device on the host's memservers and
# set DEV to its block device (the /dev/ublkbN or /dev/nbdN that add
# prints; else the newest /dev/ublkb*).  Output of add goes to the log.
farmem_add() {
	local out
	require_servers
	out=$(farmem-blk add --servers "$FARMEM_SERVERS" \
		--secret-file "${FARMEM_SECRET:-/test/secret}" "$@" 2>&1) ||
		{ echo "$out"; fail "farmem-blk add $* failed"; }
	echo "$out"
	ADD_OUT=$out
	DEV=$(echo "$out" | grep -o '/dev/\(ublkb\|nbd\)[0-9]*' | head -n 1)
	if [ -z "$DEV" ]; then
		DEV=$(ls -t /dev/ublkb* 2>/dev/null | head -n 1)
	fi
	[ -n "$DEV" ] || fail "farmem-blk add printed no device"
	wait_for 30 "$DEV to appear" test -b "$DEV"
	DEV_ID=$(echo "$DEV" | grep -o '[0-9]*$')
	say "device $DEV (id $DEV_ID)"
}

# want_data_path WHAT: the last farmem_add's daemon moved its data the
# way WHAT says ("user copy" or "a buffer per tag", its start line).
want_data_path() {
	echo "$ADD_OUT" | grep -q "ublk [0-9]*: live, .*, $1\$" ||
		fail "the daemon does not say it uses $1"
	say "ublk data path: $1"
}

# io_errors DEVICE: the kernel's I/O error lines for DEVICE (swap write
# errors keep the page in RAM, so the workload alone would not notice).
io_errors() {
	dmesg | grep -E "I/O error, dev $(basename "$1"),|(Read|Write)-error on swap-device" | head -n 5
}

# run_workload DEVICE HOOK_KB HOOK SWAPSTRESS-ARGS...: run swapstress in
# the background, watch DEVICE's swap use every 0.5 s, and once it reaches
# HOOK_KB run HOOK (a shell command; HOOK_KB 0 = no hook).  With
# WORKLOAD_CGROUP set (a cgroup v2 directory), swapstress alone runs in
# that cgroup.  Sets PEAK_SWAP_KB and WORKLOAD_SECONDS; returns
# swapstress's status.
run_workload() {
	local dev=$1 hook_kb=$2 hook=$3 pid used rc t0 t1 hooked=0 n=0 err
	shift 3
	PEAK_SWAP_KB=0
	t0=$(cut -d' ' -f1 /proc/uptime)
	if [ -n "${WORKLOAD_CGROUP:-}" ]; then
		# The same pid once the shell has moved itself and exec'd.
		sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec swapstress "$@"' \
			sh "$WORKLOAD_CGROUP" "$@" &
	else
		swapstress "$@" &
	fi
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		used=$(swap_used_kb "$dev")
		[ "$used" -gt "$PEAK_SWAP_KB" ] && PEAK_SWAP_KB=$used
		if [ "$hook_kb" -gt 0 ] && [ $hooked -eq 0 ] && [ "$used" -ge "$hook_kb" ]; then
			hooked=1
			say "swap use ${used} kB >= ${hook_kb} kB: $hook"
			eval "$hook" || fail "hook failed: $hook"
		fi
		n=$((n + 1))
		if [ $((n % 10)) -eq 0 ]; then
			err=$(io_errors "$dev")
			if [ -n "$err" ]; then
				kill "$pid" 2>/dev/null
				echo "$err"
				fail "I/O errors on $dev during the workload"
			fi
		fi
		usleep 500000
	done
	wait "$pid"
	rc=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	WORKLOAD_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	say "workload exit $rc in ${WORKLOAD_SECONDS}s, peak swap use ${PEAK_SWAP_KB} kB on $dev"
	err=$(io_errors "$dev")
	[ -z "$err" ] || { echo "$err"; fail "I/O errors on $dev during the workload"; }
	if [ "$hook_kb" -gt 0 ] && [ $hooked -eq 0 ]; then
		say "hook never ran (swap use stayed below ${hook_kb} kB)"
		return 3
	fi
	return $rc
}

# swap_on DEVICE: mkswap and swapon it (the only swap in the guest).
swap_on() {
	mkswap "$1" >/dev/null || fail "mkswap $1"
	swapon "$1" || fail "swapon $1"
	grep -q "^$1 " /proc/swaps || fail "$1 not in /proc/swaps"
	say "swap on $1: $(grep "^$1 " /proc/swaps)"
}

# daemon_pid DEVICE: pid of the farmem-blk daemon serving DEVICE (its pid
# file in the run directory).
daemon_pid() {
	local name pid
	name=$(basename "$1")
	pid=$(cat "${FARMEM_RUN_DIR:-/run/farmem}/$name.pid" 2>/dev/null)
	[ -n "$pid" ] || pid=$(pidof farmem-blk | tr ' ' '\n' | head -n 1)
	echo "$pid"
}

# pid_gone PID: true once PID has exited, zombie or not.  A killed daemon
# stays a zombie until init reaps it, and init (a shell here) may itself
# wait on a swap-in from the device the dead daemon served; `kill -0`
# alone would wait on it for good.
pid_gone() {
	local state
	state=$(sed -n 's/.*) \([A-Z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)
	[ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]
}

# dev_write_sectors DEVICE: sectors the block layer wrote to DEVICE.
dev_write_sectors() {
	awk '{ print $7 }' "/sys/block/$(basename "$1")/stat"
}

# memservers_used: "used_bytes" of each memserver, space-separated
# (authenticated --stat from inside the guest).
memservers_used() {
	local s out
	for s in $(echo "$FARMEM_SERVERS" | tr , ' '); do
		out=$(farmem-memserver --stat "$s" --secret-file "$FARMEM_SECRET" --json 2>/dev/null)
		echo "$out" | sed -n 's/.*"used_bytes":\([0-9]*\).*/\1/p'
	done | tr '\n' ' '
}

# net_counters: "PACKETS BYTES", received plus sent, over every eth* NIC.
net_counters() {
	cat /sys/class/net/eth*/statistics/rx_packets /sys/class/net/eth*/statistics/tx_packets \
		| awk '{ n += $1 } END { printf "%d ", n }'
	cat /sys/class/net/eth*/statistics/rx_bytes /sys/class/net/eth*/statistics/tx_bytes \
		| awk '{ n += $1 } END { printf "%d\n", n }'
}

# swapped_pages: pages swapped in plus out since boot (/proc/vmstat).
swapped_pages() {
	awk '$1 == "pswpin" || $1 == "pswpout" { n += $2 } END { print n + 0 }' /proc/vmstat
}

# wire_per_page "PACKETS BYTES" PAGES: say what the network carried per
# page swapped since those counts were taken (a count, not a timing).
wire_per_page() {
	local pages n
	pages=$(( $(swapped_pages) - $2 ))
	n=$(net_counters)
	[ "$pages" -gt 0 ] || return 0
	echo "${1% *} ${1#* } ${n% *} ${n#* } $pages" | awk '{
		p = $3 - $1; b = $4 - $2
		printf "scenario: network: %d packets, %d bytes for %d pages swapped in+out: %.2f packets, %.0f bytes per page\n", p, b, $5, p / $5, b / $5 }'
}

# ops_per_page STATUS PAGES: the remote reads and writes in the server
# table of `farmem-blk status` output STATUS (cleaning and repair
# included), per page swapped since the count PAGES was taken.
ops_per_page() {
	local pages
	pages=$(( $(swapped_pages) - $2 ))
	[ "$pages" -gt 0 ] || return 0
	echo "$1" | awk -v pages="$pages" '
		$1 ~ /^(tcp|rdma):\/\// && $5 ~ /^[0-9]+$/ { r += $5; w += $6 }
		END { printf "scenario: remote operations: %d reads, %d writes for %d pages swapped in+out: %.2f per page\n", r, w, pages, (r + w) / pages }'
}

# swap_scenario HOOK_KB HOOK ADD-ARGS...: the farmem swap scenario: a
# 1 GiB device on the memservers (R=2 unless ADD-ARGS say otherwise),
# mkswap, swapon, the verified workload of twice the guest's RAM
# (WORKLOAD_PASSES passes, default 2: write+verify, rewrite+verify; HOOK at
# HOOK_KB of swap use, see run_workload), swap use seen in /proc/swaps,
# writes seen on the device, status printed, swapoff, del.
swap_scenario() {
	local hook_kb=$1 hook=$2 rc net0 pages0 status
	shift 2
	require_add
	farmem_add --size 1G --replicas 2 "$@"
	case $DEV in /dev/ublkb*)
		if [ -n "${FARMEM_UBLK_TAG_BUFFERS:-}" ]; then want_data_path "a buffer per tag"
		else want_data_path "user copy"; fi ;;
	esac
	swap_on "$DEV"
	net0=$(net_counters)
	pages0=$(swapped_pages)
	run_workload "$DEV" "$hook_kb" "$hook" --ram-factor 2 --progress \
		--passes "${WORKLOAD_PASSES:-2}"
	rc=$?
	wire_per_page "$net0" "$pages0"
	say "device writes: $(dev_write_sectors "$DEV") sectors"
	status=$(farmem-blk status "$DEV") || say "farmem-blk status $DEV failed"
	echo "$status"
	ops_per_page "$status" "$pages0"
	[ $rc -eq 0 ] || fail "workload failed (status $rc)"
	[ "$PEAK_SWAP_KB" -gt 0 ] || fail "no swap use of $DEV seen in /proc/swaps"
	[ "$(dev_write_sectors "$DEV")" -gt 0 ] || fail "nothing was written to $DEV"
	swapoff "$DEV" || fail "swapoff $DEV"
	farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
	say "ok: ${WORKLOAD_SECONDS}s, peak swap ${PEAK_SWAP_KB} kB"
}
