# nbd_helpers.bash — `farmem-blk serve` for the bats tests, on top of
# helpers.bash (memservers, ports, bounded waits, stop_all).
#
#   load helpers
#   load nbd_helpers
#   setup()    { fm_setup; start_memservers 3 --size 256M; start_serve --size 256M; }
#   teardown() { stop_all; }
#
# start_serve records $FM_DIR/serve/{pid,log,sock} and exports NBD_URI.

# start_memservers N [farmem-memserver flags]: memservers m1..mN; sets
# FM_SERVERS to their comma-separated addresses.
start_memservers() {
	local n=$1 i list=""
	shift
	for (( i = 1; i <= n; i++ )); do
		start_memserver "m$i" "$@" || return 1
		list="${list:+$list,}$(ms_addr "m$i")"
	done
	FM_SERVERS=$list
	export FM_SERVERS
}

# nbd_ready: the export answers a full handshake.
nbd_ready() {
	nbdinfo --size "$NBD_URI" >/dev/null 2>&1
}

# launch_serve [farmem-blk serve flags]: start serve with exactly these
# flags, wait (bounded) until NBD clients can connect to $NBD_SOCK.
launch_serve() {
	local dir="$FM_DIR/serve" pid i
	mkdir -p "$dir"
	"$FM_BLK" serve "$@" >>"$dir/log" 2>&1 &
	pid=$!
	track_pid "$pid"
	echo "$pid" >"$dir/pid"
	for (( i = 0; i < FM_START_TIMEOUT * 10; i++ )); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "launch_serve: farmem-blk serve exited:" >&2
			cat "$dir/log" >&2
			return 1
		fi
		nbd_ready && return 0
		sleep 0.1
	done
	echo "launch_serve: no NBD handshake after ${FM_START_TIMEOUT}s" >&2
	cat "$dir/log" >&2
	return 1
}

# serve_sock: where serve listens ($FM_DIR/serve/sock); sets NBD_URI.
serve_sock() {
	mkdir -p "$FM_DIR/serve"
	NBD_SOCK="$FM_DIR/serve/sock"
	NBD_URI="nbd+unix:///?socket=$NBD_SOCK"
	export NBD_SOCK NBD_URI
}

# start_serve [farmem-blk serve flags]: serve the test's memservers with
# its secret on $NBD_SOCK (flags may add to or override these).
start_serve() {
	serve_sock
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--nbd "unix:$NBD_SOCK" "$@"
}

# stop_serve [SIGNAL]: signal serve (TERM) and return its exit status.
stop_serve() {
	kill -"${1:-TERM}" "$(serve_pid)" 2>/dev/null || true
	wait_exit "$(serve_pid)"
}

# nbd_hold: open an NBD connection (handshake + GO) and keep it until
# killed, at most 120 s; prints nothing, exits 3 if GO was refused.
# Started in the background; waits until $FM_DIR/hold.N says "go".
nbd_hold() {
	local n=$1
	perl -MIO::Socket::UNIX -e '
		my ($path, $flag) = @ARGV;
		my $s = IO::Socket::UNIX->new(Peer => $path) or exit 2;
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			my $r = sysread($s, $b, $n - length($b), length($b)); exit 2 unless $r; } $b }
		rd(18);
		syswrite($s, pack("N", 3));
		syswrite($s, pack("NN N N", 0x49484156, 0x454f5054, 7, 6) . pack("N n", 0, 0));
		for (;;) {
			my ($m1, $m2, $opt, $type, $len) = unpack("NNNNN", rd(20));
			rd($len) if $len;
			if ($type == 1) { last; }
			if ($type & 0x80000000) { open(F, ">", $flag); print F "refused\n"; close F; exit 3; }
		}
		open(F, ">", $flag); print F "go\n"; close F;
		sleep 120;' "$NBD_SOCK" "$FM_DIR/hold.$n" &
	track_pid $!
	wait_until 20 test -s "$FM_DIR/hold.$n"
}

serve_pid() { cat "$FM_DIR/serve/pid"; }
serve_log() { cat "$FM_DIR/serve/log"; }

# serve_uuid: the device identity serve logged at start.
serve_uuid() {
	sed -n 's/.*serve: device \([0-9a-f-]*\),.*/\1/p' "$FM_DIR/serve/log" | head -n 1
}

# serve_stat KEY: one counter of the store, fresh (SIGUSR1 makes serve
# print a stats line; wait, bounded, for a new one).
serve_stat() {
	local key=$1 before i line
	before=$(grep -c '^farmem-blk: stats ' "$FM_DIR/serve/log")
	kill -USR1 "$(serve_pid)" || return 1
	for (( i = 0; i < 100; i++ )); do
		if [ "$(grep -c '^farmem-blk: stats ' "$FM_DIR/serve/log")" -gt "$before" ]; then
			line=$(grep '^farmem-blk: stats ' "$FM_DIR/serve/log" | tail -n 1)
			echo "$line" | tr ' ' '\n' | sed -n "s/^$key=//p"
			return 0
		fi
		sleep 0.05
	done
	echo "serve_stat: no stats line" >&2
	return 1
}

# wait_serve_stat SECONDS KEY OP VALUE: poll until "stat OP value" holds
# (OP: -eq -gt -ge -lt -le).
serve_stat_is() {
	local v
	v=$(serve_stat "$1") || return 1
	[ -n "$v" ] && [ "$v" "$2" "$3" ]
}

# used_bytes_total: memory the memservers hand out, summed.
used_bytes_total() {
	local d sum=0 v
	for d in "$FM_DIR"/ms-*; do
		v=$(stat_field "${d##*/ms-}" used_bytes) || return 1
		sum=$(( sum + v ))
	done
	echo "$sum"
}

# make_mixed FILE MIB: MIB MiB of interleaved all-zero, text-like and
# random 1 MiB blocks (what swap holds: some of each).
make_mixed() {
	local file=$1 mib=$2 i
	: >"$file"
	for (( i = 0; i < mib; i++ )); do
		case $(( i % 4 )) in
		0) head -c 1048576 /dev/zero ;;
		1) head -c 1048576 /dev/urandom ;;
		2) seq "$(( i * 100000 ))" "$(( i * 100000 + 200000 ))" | head -c 1048576 ;;
		3) yes "page $i of a swapped-out heap: key=value; status=ok" | head -c 1048576 ;;
		esac
	done >"$file"
}
