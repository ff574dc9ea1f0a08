# helpers.bash — shared helpers for farmem's bats integration tests.
#
#   load helpers
#   setup()    { fm_setup; start_memserver a --size 64M; }
#   teardown() { stop_all; }
#
# Every process a helper starts is recorded and stop_all ends it (TERM,
# then KILL after a bounded wait), so a failing test leaves nothing
# behind.  Ports are picked free at start, so parallel runs do not clash.
# Waits poll for a state with a bound; none assumes a speed.
#
# Variables (after fm_setup):
#   FARMEM_BUILD   build directory (default: the tree's build/)
#   FM_MEMSERVER, FM_CLIENT, FM_BLK   the binaries under test
#   FM_DIR         this test's scratch directory
#   FM_SECRET      a fresh secret file every memserver and client shares

: "${FARMEM_BUILD:=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)/build}"
# shellcheck disable=SC2034  # used by the .bats files that load this
FM_MEMSERVER="$FARMEM_BUILD/farmem-memserver"
FM_CLIENT="$FARMEM_BUILD/tests/tools/fm-client"
# shellcheck disable=SC2034
FM_BLK="$FARMEM_BUILD/farmem-blk"

# Bounds (seconds) for waits; generous because the machine may be busy.
: "${FM_START_TIMEOUT:=20}"
: "${FM_STOP_TIMEOUT:=20}"

# Skip the test when a command is missing.
require_cmd() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || skip "$c is not installed"
	done
}

# Skip when a file we test is not built.
require_file() {
	[ -e "$1" ] || skip "$1 is not built"
}

# Per-test scratch directory and shared secret.
fm_setup() {
	FM_DIR="${BATS_TEST_TMPDIR:-$(mktemp -d "${BATS_TMPDIR:-/tmp}/farmem.XXXXXX")}"
	mkdir -p "$FM_DIR"
	: >"$FM_DIR/pids"
	FM_SECRET="$FM_DIR/secret"
	make_secret "$FM_SECRET"
	export FM_DIR FM_SECRET
}

# make_secret FILE: 32 random bytes (as base64 text), mode 0600.
make_secret() {
	(umask 077 && head -c 32 /dev/urandom | base64 >"$1")
}

# Poll every 0.1 s until CMD succeeds or SECONDS pass.
# wait_until SECONDS CMD [ARGS...]; returns 1 on timeout.
wait_until() {
	local limit=$(( $1 * 10 )) i
	shift
	for (( i = 0; i < limit; i++ )); do
		"$@" && return 0
		sleep 0.1
	done
	"$@"
}

# port_busy PORT: something on loopback already listens there.
port_busy() {
	if command -v ss >/dev/null 2>&1; then
		ss -Htln "sport = :$1" 2>/dev/null | grep -q .
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

# free_port: print a TCP port nobody listens on (random between 20000
# and the ephemeral range, so concurrent runs rarely even try the same one).
free_port() {
	local i p lo=32768
	# Below the kernel's ephemeral range: a port in it can be taken by
	# any outgoing connection's source port between this pick and the
	# bind ("Address already in use" seen in security.bats).
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
	[ "$lo" -gt 21024 ] || lo=32768
	for (( i = 0; i < 200; i++ )); do
		p=$(( 20000 + (RANDOM * 32768 + RANDOM) % (lo - 20000) ))
		port_busy "$p" || { echo "$p"; return 0; }
	done
	echo "free_port: no free port found" >&2
	return 1
}

# accepts HOST PORT: a TCP connection to it succeeds.
accepts() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Remember a pid for stop_all.
track_pid() {
	echo "$1" >>"$FM_DIR/pids"
}

# ms_launch DIR PORT FLAGS...: run farmem-memserver on PORT in the
# background and wait (bounded) until it accepts.  Returns 0 when ready,
# 1 when it exited (log in DIR/log), 2 when it never became ready.
ms_launch() {
	local dir=$1 port=$2 pid i
	shift 2
	rm -f "$dir/pid"
	"$FM_MEMSERVER" --listen "tcp://127.0.0.1:$port" --pid-file "$dir/pid" \
		"$@" >>"$dir/log" 2>&1 &
	pid=$!
	track_pid "$pid"
	echo "$pid" >"$dir/pid.bats"
	for (( i = 0; i < FM_START_TIMEOUT * 10; i++ )); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 1; }
		if [ -s "$dir/pid" ] && accepts 127.0.0.1 "$port"; then
			echo "tcp://127.0.0.1:$port" >"$dir/addr"
			return 0
		fi
		sleep 0.1
	done
	echo "memserver in $dir: not accepting after ${FM_START_TIMEOUT}s" >&2
	return 2
}

# start_memserver NAME [farmem-memserver flags...]
#
# Starts farmem-memserver listening on a free loopback port with the
# test's secret (unless the flags name another --secret-file), waits
# until it accepts connections, and records:
#   $FM_DIR/ms-NAME/{addr,pid.bats,log}: see ms_addr, ms_pid, ms_log.
# Retries with another port if the chosen one was taken meanwhile.
start_memserver() {
	local name=$1 dir attempt port rc extra=() flag=
	shift
	dir="$FM_DIR/ms-$name"
	mkdir -p "$dir"
	for flag in "$@"; do
		[ "$flag" = "--secret-file" ] && break
	done
	[ "$flag" = "--secret-file" ] || extra+=(--secret-file "$FM_SECRET")
	[ -n "${FM_MS_LOCKED:-}" ] || extra+=(--allow-unlocked)
	# restart_memserver starts it again with the same flags.
	printf '%s\0' "${extra[@]}" "$@" >"$dir/args"
	for (( attempt = 0; attempt < 5; attempt++ )); do
		port=$(free_port) || return 1
		: >"$dir/log"
		rc=0
		ms_launch "$dir" "$port" "${extra[@]}" "$@" || rc=$?
		[ "$rc" -eq 0 ] && return 0
		[ "$rc" -eq 2 ] && { cat "$dir/log" >&2; return 1; }
		# Lost a race for the port: try another.  Anything else is real.
		grep -qi "address already in use" "$dir/log" || break
	done
	echo "start_memserver $name: farmem-memserver exited:" >&2
	cat "$dir/log" >&2
	return 1
}

# restart_memserver NAME: start it again on the same port with the same
# flags (after it was stopped), e.g. to test clients that reconnect.
restart_memserver() {
	local name=$1 dir="$FM_DIR/ms-$1" port args=()
	port=$(ms_port "$name")
	mapfile -d '' args <"$dir/args"
	echo "--- restart" >>"$dir/log"
	ms_launch "$dir" "$port" "${args[@]}" && return 0
	echo "restart_memserver $name: failed:" >&2
	cat "$dir/log" >&2
	return 1
}

ms_addr() { cat "$FM_DIR/ms-$1/addr"; }
ms_pid()  { cat "$FM_DIR/ms-$1/pid.bats"; }
ms_log()  { cat "$FM_DIR/ms-$1/log"; }
# The port alone, for tools that want host and port apart.
ms_port() { local a; a=$(ms_addr "$1"); echo "${a##*:}"; }

# wait_exit PID: wait (bounded) for a process we started to exit and
# return its exit status; 124 if it is still running after the bound.
wait_exit() {
	local pid=$1 i
	for (( i = 0; i < FM_STOP_TIMEOUT * 10; i++ )); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$pid" 2>/dev/null && return 124
	wait "$pid"
}

# stop_memserver NAME [SIGNAL]: signal it (TERM by default) and return
# its exit status.
stop_memserver() {
	local pid
	pid=$(ms_pid "$1")
	kill -"${2:-TERM}" "$pid" 2>/dev/null || true
	wait_exit "$pid"
}

# stop_all: end every process this test started (teardown).  On a failed
# test, show the memserver logs to help the reader.
stop_all() {
	local pid d
	[ -n "${FM_DIR:-}" ] && [ -f "$FM_DIR/pids" ] || return 0
	while read -r pid; do
		kill -TERM "$pid" 2>/dev/null || true
		# A test may have left it stopped (SIGSTOP): let it see TERM.
		kill -CONT "$pid" 2>/dev/null || true
	done <"$FM_DIR/pids"
	while read -r pid; do
		wait_exit "$pid" >/dev/null 2>&1
		if kill -0 "$pid" 2>/dev/null; then
			echo "stop_all: $pid ignored TERM; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
		fi
	done <"$FM_DIR/pids"
	: >"$FM_DIR/pids"
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ]; then
		for d in "$FM_DIR"/ms-*; do
			[ -f "$d/log" ] || continue
			echo "--- ${d##*/} log:" >&2
			tail -n 50 "$d/log" >&2
		done
	fi
	return 0
}

# fm_client NAME [fm-client options] CMD [ARGS]: the test client against
# memserver NAME with the test's secret.
fm_client() {
	local name=$1
	shift
	"$FM_CLIENT" --server "$(ms_addr "$name")" --secret-file "$FM_SECRET" "$@"
}

# stat_field NAME KEY [fm-client options]: one number from fm-client stat.
stat_field() {
	local name=$1 key=$2 out
	shift 2
	out=$(fm_client "$name" "$@" stat) || return 1
	echo "$out" | sed -n "s/^$key=//p"
}
