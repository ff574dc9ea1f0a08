# Host-side helpers for tests/vm/check and tests/demo.sh (bash): memservers
# on the host's loopback, which the guest reaches at 10.0.2.2, and the
# control listener through which a scenario can kill one of them.
#
# Set HL_DIR (a private directory) before use; hl_cleanup stops all.

hl_log() { echo "vm-host: $*" >&2; }

# hl_free_port [udp]: a free TCP (or UDP) port on the loopback (the
# kernel picks; a race with another process is handled by the callers
# retrying).
hl_free_port() {
	perl -MIO::Socket::INET -e '
		my %a = (Proto => $ARGV[0], LocalAddr => "127.0.0.1", LocalPort => 0);
		@a{"Listen", "ReuseAddr"} = (1, 1) if $ARGV[0] eq "tcp";
		my $s = IO::Socket::INET->new(%a) or die "no port: $!\n";
		print $s->sockport, "\n";' "${1:-tcp}"
}

# hl_wait_log FILE PATTERN PID SECONDS: wait for PATTERN in FILE while PID
# lives.  Returns non-zero when PID died or the time ran out.
hl_wait_log() {
	local file=$1 pat=$2 pid=$3 limit=$(( $4 * 10 )) i=0
	while ! grep -q "$pat" "$file" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || return 1
		i=$((i + 1))
		[ $i -ge $limit ] && return 1
		sleep 0.1
	done
}

HL_MS_PIDS=() HL_MS_PORTS=()

# hl_start_memservers N SIZE: N memservers with SIZE pools on free
# loopback ports, sharing the secret $HL_DIR/secret.  Sets HL_MS_PORTS,
# HL_MS_PIDS, HL_SERVERS (their addresses on this host) and
# HL_SERVERS_GUEST (as a QEMU guest with user networking sees them).
hl_start_memservers() {
	local n=$1 size=$2 i try port pid
	local bin=${FARMEM_BUILD:-$HL_ROOT/build}/farmem-memserver
	[ -x "$bin" ] || { hl_log "no $bin (run make)"; return 1; }
	[ -f "$HL_DIR/secret" ] || {
		head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$HL_DIR/secret"
		chmod 600 "$HL_DIR/secret"
	}
	HL_SERVERS_GUEST= HL_SERVERS=
	for ((i = 0; i < n; i++)); do
		for try in 1 2 3 4 5; do
			port=$(hl_free_port) || return 1
			"$bin" --listen "tcp://127.0.0.1:$port" --size "$size" \
				--secret-file "$HL_DIR/secret" --lease 30s \
				> "$HL_DIR/ms$i.log" 2>&1 &
			pid=$!
			# Not a job of ours any more: a kill -9 by the control
			# listener should not make bash print "Killed".
			disown "$pid"
			echo "$pid" > "$HL_DIR/ms$i.pid"
			if hl_wait_log "$HL_DIR/ms$i.log" "listening on" "$pid" 20; then
				break
			fi
			hl_stop_pid "$pid"
			pid=
			hl_log "memserver $i on port $port did not start (try $try):"
			cat "$HL_DIR/ms$i.log" >&2
		done
		[ -n "$pid" ] || return 1
		HL_MS_PIDS[i]=$pid
		HL_MS_PORTS[i]=$port
		HL_SERVERS_GUEST="${HL_SERVERS_GUEST:+$HL_SERVERS_GUEST,}tcp://10.0.2.2:$port"
		HL_SERVERS="${HL_SERVERS:+$HL_SERVERS,}tcp://127.0.0.1:$port"
	done
}

# hl_start_control: the listener a scenario uses to kill -9 a memserver
# (tests/vm/host-control.pl).  Sets HL_CTL_PORT.
hl_start_control() {
	local try
	for try in 1 2 3 4 5; do
		HL_CTL_PORT=$(hl_free_port) || return 1
		perl "$HL_VM_DIR/host-control.pl" "$HL_CTL_PORT" "$HL_DIR" \
			> "$HL_DIR/control.log" 2>&1 &
		HL_CTL_PID=$!
		hl_wait_log "$HL_DIR/control.log" "^ready" "$HL_CTL_PID" 10 && return 0
		kill "$HL_CTL_PID" 2>/dev/null; wait "$HL_CTL_PID" 2>/dev/null
	done
	hl_log "control listener did not start"
	return 1
}

# hl_stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
hl_stop_pid() {
	local i=0
	kill "$1" 2>/dev/null || return 0
	while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -KILL "$1" 2>/dev/null
	wait "$1" 2>/dev/null
	return 0
}

# Stop everything this file started; safe to call twice.
hl_cleanup() {
	local pid
	for pid in "${HL_MS_PIDS[@]}" ${HL_CTL_PID:-}; do
		hl_stop_pid "$pid"
	done
	HL_MS_PIDS=() HL_MS_PORTS=() HL_CTL_PID=
}

# hl_emulator_crash CONSOLE: true when a guest's console shows a death
# that says nothing about farmem:
# - it died before its kernel finished booting;
# - the kernel trapped on an int3 it had placed itself while patching its
#   own text (a static key flipped by "crng init done"), which QEMU's
#   multi-threaded emulation lets the other vCPU run into (seen in 0-zram,
#   where farmem is not even running);
# - the kernel took a debug exception (#DB) nobody asked for (seen in
#   rdma_rxe's receive work in the memserver guest, with impossible
#   EFLAGS): no debugger runs in these guests.
hl_emulator_crash() {
	[ -f "$1" ] || return 1
	grep -q "farmem-vm: booted in" "$1" || return 0
	grep -qE "Oops: int3|WARNING: .* at arch/x86/kernel/traps.c:[0-9]+ exc_debug_kernel" "$1"
}

# hl_irq_fault CONSOLE: true when the guest's kernel died of a fault in
# interrupt context ("Fatal exception in interrupt"): a timer, softirq or
# driver callback, where no farmem code runs and no farmem call is on the
# stack.  Seen once in CI in the farmem-blk guest of 1-swap over rdma://,
# a NULL dereference (address 0x70) on an idle vCPU, not reproduced in
# six runs here.
hl_irq_fault() {
	[ -f "$1" ] && grep -q "Kernel panic - not syncing: Fatal exception in interrupt" "$1"
}

# hl_outside_farmem CONSOLE...: true when any of the guests' consoles
# shows a death that says nothing about farmem (hl_emulator_crash,
# hl_irq_fault).  The caller runs the guest once more, after printing
# hl_oops_summary of each console, so the cause stays in the log.
hl_outside_farmem() {
	local c
	for c in "$@"; do
		hl_emulator_crash "$c" && return 0
		hl_irq_fault "$c" && return 0
	done
	return 1
}

# hl_oops_summary CONSOLE: a kernel oops in three lines: what faulted, where
# (RIP), and the functions of its call trace on one line.  A CI log that is
# cut in the middle may keep only these of a 60-line trace.
hl_oops_summary() {
	local c=$1
	grep -qE 'BUG:|Oops:|general protection' "$c" || return 0
	echo "-- the first oops:"
	grep -m 2 -E 'BUG:|Oops:|general protection' "$c"
	grep -m 1 -E 'RIP: 0010:' "$c"
	sed -n '/Call Trace:/,/end trace\|Kernel panic/p' "$c" |
		sed -n 's/.* \([A-Za-z_][A-Za-z0-9_.]*\)+0x.*/\1/p' | head -n 30 | tr '\n' ' '
	echo
}

# hl_why_failed LABEL CONSOLE: what a failed guest said last and what its
# kernel reported (stuck tasks, OOM, panics), for the end of a CI log,
# which may be all that is kept of it.
hl_why_failed() {
	local label=$1 c=$2
	[ -s "$c" ] || return 0
	echo "==== why $label failed: its last scenario lines, then the kernel's complaints"
	hl_oops_summary "$c"
	sed -n '/=== script output begins ===/,/=== script output ends ===/p' "$c" |
		grep -v '^===' | tail -n 25
	grep -E 'blocked for more than|INFO: task|WARNING:|BUG:|Oops|Out of memory|Killed process|oom-kill|Kernel panic|I/O error' "$c" |
		head -n 12
	# A guest whose script never ended (a panic, a hang): the console's end.
	grep -q '=== script output ends ===' "$c" || { echo "-- the console's end:"; tail -n 15 "$c"; }
	# sysrq-w: the tasks in uninterruptible sleep and where they wait.
	grep -E -A10 'task:[^ ]+ +state:D' "$c" | grep -E 'task:|\+0x' | head -n 30
	return 0
}

# hl_header FILE KEY DEFAULT: the value of "# vm-KEY: VALUE" in a guest
# scenario FILE, or DEFAULT.
hl_header() {
	local v
	v=$(sed -n "s/^# vm-$2: *\\([^ ]*\\).*/\\1/p" "$1" | head -n 1)
	echo "${v:-$3}"
}

# hl_rdma_modules: librdmacm needs the rdma_cm user interface
# (/dev/infiniband/rdma_cm), which the guest's standard module set leaves
# out.  Decompress rdma_ucm and what it depends on (busybox insmod reads
# plain .ko) for tests/vm/rdma-mods.sh to load in this order, and set
# HL_RDMA_WITH to the tests/vm/run arguments that ship them and it.
hl_rdma_modules() {
	local out=${FARMEM_VM_OUT:-$HL_VM_DIR/out}
	local kdir=${FARMEM_VM_CACHE:-$HL_VM_DIR/cache}/kernel
	local kver m ko src
	kver=$(cat "$kdir/version") || return 1
	mkdir -p "$out/rdma-mods"
	HL_RDMA_WITH=()
	for m in fs/configfs/configfs drivers/infiniband/core/iw_cm \
		 drivers/infiniband/core/ib_cm drivers/infiniband/core/rdma_cm \
		 drivers/infiniband/core/rdma_ucm; do
		ko=$out/rdma-mods/$(basename "$m").ko
		if [ ! -f "$ko" ]; then
			src=$kdir/lib/modules/$kver/kernel/$m.ko.xz
			[ -f "$src" ] || { hl_log "$src missing"; return 1; }
			xz -dc "$src" > "$ko.tmp.$$" && mv "$ko.tmp.$$" "$ko" || return 1
		fi
		HL_RDMA_WITH+=(--with "$ko")
	done
	HL_RDMA_WITH+=(--with "$HL_VM_DIR/rdma-mods.sh")
}

HL_VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HL_ROOT=$(cd "$HL_VM_DIR/../.." && pwd)
