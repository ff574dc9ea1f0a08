#!/usr/bin/env bats
# farmem-blk serve's defences, tried as an attacker would against a real
# serve on real memservers (loopback): TLS with pre-shared keys (nbdinfo,
# nbdcopy, qemu-img as clients), refusal of clients without TLS or with a
# wrong key, the unix socket's mode, the open TCP listener, the deadline
# on the whole handshake and the idle timeout.

load helpers
load nbd_helpers

setup() {
	require_file "$FM_BLK"
	require_file "$FM_MEMSERVER"
	require_cmd nbdinfo nbdcopy perl
	fm_setup
}

teardown() {
	stop_all
	if [ "${BATS_TEST_COMPLETED:-}" != 1 ] && [ -f "$FM_DIR/serve/log" ]; then
		echo "--- serve log:" >&2
		tail -n 40 "$FM_DIR/serve/log" >&2
	fi
}

# make_psk FILE USER: a psktool-style key file, 32 random bytes in hex.
make_psk() {
	(umask 077 && printf '%s:%s\n' "$2" \
		"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$1")
}

# tls_uri PSKFILE USER: the libnbd URI of the test's socket over TLS.
tls_uri() {
	echo "nbds+unix://$2@/?socket=$NBD_SOCK&tls-psk-file=$1"
}

# start_tls_serve [flags]: serve on $NBD_SOCK requiring TLS with the key
# of user alice in $FM_DIR/keys.psk; NBD_URI speaks TLS.
start_tls_serve() {
	serve_sock
	make_psk "$FM_DIR/keys.psk" alice
	NBD_URI=$(tls_uri "$FM_DIR/keys.psk" alice)
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--nbd "unix:$NBD_SOCK" --tls-psk "$FM_DIR/keys.psk" "$@"
}

# raw_option OPT: greet the server on $NBD_SOCK in the clear, send option
# OPT (GO and INFO with an empty name) and print the reply type in hex,
# or "closed" when the server hangs up instead.
raw_option() {
	timeout 30 perl -MIO::Socket::UNIX -e '
		my ($path, $opt) = @ARGV;
		my $s = IO::Socket::UNIX->new(Peer => $path) or die "connect: $!";
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			my $r = sysread($s, $b, $n - length($b), length($b));
			return undef unless $r; } $b }
		defined rd(18) or die "no greeting";
		syswrite($s, pack("N", 3));
		my $d = ($opt == 6 || $opt == 7) ? pack("N n", 0, 0) : "";
		syswrite($s, pack("NNNN", 0x49484156, 0x454f5054, $opt, length($d)) . $d);
		my $h = rd(20);
		if (!defined $h) { print "closed\n"; exit 0; }
		printf("0x%08x\n", (unpack("NNNNN", $h))[3]);' "$NBD_SOCK" "$1"
}

# trickle N: a client that connects, reads the greeting and then sends a
# valid handshake one byte every half second (at most 2 minutes);
# $FM_DIR/trickle.N says "started", then "closed" once serve hangs up.
trickle() {
	perl -MIO::Socket::UNIX -MIO::Select -e '
		my ($path, $flag) = @ARGV;
		$SIG{PIPE} = "IGNORE";    # a write after serve hung up: an error
		sub mark { open(F, ">", $flag); print F "$_[0]\n"; close F; }
		my $s = IO::Socket::UNIX->new(Peer => $path) or exit 2;
		my $b = ""; while (length($b) < 18) {
			sysread($s, $b, 18 - length($b), length($b)) or exit 2; }
		mark("started");
		my $msg = pack("N", 3) . pack("NNNN", 0x49484156, 0x454f5054, 7, 4096)
			. ("x" x 4096);
		my $sel = IO::Select->new($s);
		for my $i (0 .. 239) {
			if ($sel->can_read(0.5)) {
				my $r = sysread($s, my $junk, 4096);
				if (!$r) { mark("closed"); exit 0; }
			}
			if (!defined syswrite($s, substr($msg, $i, 1))) {
				mark("closed"); exit 0; }
		}' "$NBD_SOCK" "$FM_DIR/trickle.$1" &
	track_pid $!
}

# hold N MODE: a client that completes the handshake (GO) and then stays
# idle (MODE idle) or reads the first page every 0.2 s (MODE active), at
# most 2 minutes.  $FM_DIR/hold.N says "go", then "replies COUNT" (active)
# and finally "closed" once serve hangs up.
hold() {
	perl -MIO::Socket::UNIX -MIO::Select -e '
		my ($path, $flag, $mode) = @ARGV;
		$SIG{PIPE} = "IGNORE";
		sub mark { open(F, ">", "$flag.tmp"); print F "$_[0]\n"; close F;
			rename("$flag.tmp", $flag); }
		my $s = IO::Socket::UNIX->new(Peer => $path) or exit 2;
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			my $r = sysread($s, $b, $n - length($b), length($b));
			if (!$r) { mark("closed"); exit 0; } } $b }
		rd(18);
		syswrite($s, pack("N", 3));
		syswrite($s, pack("NNNN", 0x49484156, 0x454f5054, 7, 6) . pack("N n", 0, 0));
		for (;;) {
			my ($m1, $m2, $opt, $type, $len) = unpack("NNNNN", rd(20));
			rd($len) if $len;
			last if $type == 1;
			if ($type & 0x80000000) { mark("refused"); exit 3; }
		}
		mark("go");
		my $sel = IO::Select->new($s);
		for my $i (1 .. 600) {
			if ($mode eq "idle") {
				next unless $sel->can_read(0.2);
				sysread($s, my $junk, 1) or do { mark("closed"); exit 0; };
				next;
			}
			syswrite($s, pack("NnnNNNNN", 0x25609513, 0, 0, 0, $i, 0, 0, 4096))
				or do { mark("closed"); exit 0; };
			rd(16 + 4096);
			mark("replies $i");
			select(undef, undef, undef, 0.2);
		}' "$NBD_SOCK" "$FM_DIR/hold.$1" "$2" &
	track_pid $!
}

# file_says FILE WORD: FILE exists and its first word is WORD.
file_says() {
	[ -f "$1" ] && [ "$(awk '{print $1; exit}' "$1")" = "$2" ]
}

replies_of() { awk '/^replies/ {print $2}' "$FM_DIR/hold.$1"; }
replies_above() { local n; n=$(replies_of "$1"); [ -n "$n" ] && [ "$n" -gt "$2" ]; }

@test "TLS-PSK: nbdinfo, nbdcopy and qemu-img work over TLS and the data verifies" {
	start_memservers 3 --size 64M
	start_tls_serve --size 32M
	run nbdinfo "$NBD_URI"
	[ "$status" -eq 0 ]
	[[ "$output" == *"with TLS"* ]]
	[[ "$output" == *"export-size: 33554432"* ]]
	make_mixed "$FM_DIR/in" 16
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 16 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	grep -q "PSK user 'alice'" "$FM_DIR/serve/log"
	grep -q 'serving (slot .*, TLS)' "$FM_DIR/serve/log"
	if command -v qemu-img >/dev/null; then
		# qemu reads keys.psk from a directory, the user from the object.
		mkdir -p "$FM_DIR/qtls"
		cp "$FM_DIR/keys.psk" "$FM_DIR/qtls/keys.psk"
		tls=(--object "tls-creds-psk,id=tls0,endpoint=client,dir=$FM_DIR/qtls,username=alice")
		img="driver=nbd,path=$NBD_SOCK,tls-creds=tls0"
		head -c 8M /dev/urandom >"$FM_DIR/q.in"
		qemu-img convert -n "${tls[@]}" -f raw "$FM_DIR/q.in" --target-image-opts "$img"
		qemu-img convert "${tls[@]}" --image-opts "$img" -O raw "$FM_DIR/q.out"
		cmp -n $(( 8 << 20 )) "$FM_DIR/q.in" "$FM_DIR/q.out"
	fi
}

@test "TLS required: no TLS, a wrong key or an unknown user is refused (control: open without --tls-psk)" {
	start_memservers 3 --size 64M
	# Control: without TLS configured a plain client is served, and
	# STARTTLS is answered "unsupported".
	start_serve --size 16M
	nbdinfo "$NBD_URI" >/dev/null
	[ "$(raw_option 5)" = 0x80000001 ]
	stop_serve TERM
	start_tls_serve --size 16M
	served=$(grep -c 'serving (slot' "$FM_DIR/serve/log")
	plain="nbd+unix:///?socket=$NBD_SOCK"
	run nbdinfo "$plain"
	[ "$status" -ne 0 ]
	# Every option before STARTTLS: NBD_REP_ERR_TLS_REQD; EXPORT_NAME,
	# which cannot be refused, makes serve hang up.
	[ "$(raw_option 7)" = 0x80000005 ]   # GO
	[ "$(raw_option 6)" = 0x80000005 ]   # INFO
	[ "$(raw_option 3)" = 0x80000005 ]   # LIST
	[ "$(raw_option 1)" = closed ]       # EXPORT_NAME
	[ "$(raw_option 5)" = 0x00000001 ]   # STARTTLS: ACK (then TLS)
	# The same user with another key.
	make_psk "$FM_DIR/wrong.psk" alice
	run nbdinfo "$(tls_uri "$FM_DIR/wrong.psk" alice)"
	[ "$status" -ne 0 ]
	# Another user, with alice's key.
	sed 's/^alice:/mallory:/' "$FM_DIR/keys.psk" >"$FM_DIR/mallory.psk"
	run nbdinfo "$(tls_uri "$FM_DIR/mallory.psk" mallory)"
	[ "$status" -ne 0 ]
	grep -q "unknown PSK user 'mallory'" "$FM_DIR/serve/log"
	# None of them got to the transmission phase; alice still does.
	[ "$(grep -c 'serving (slot' "$FM_DIR/serve/log")" -eq "$served" ]
	nbdinfo "$NBD_URI" >/dev/null
	[ "$(grep -c 'serving (slot' "$FM_DIR/serve/log")" -eq $(( served + 1 )) ]
}

@test "the unix socket is mode 0600 under umask 022; a stale socket is replaced, a file is not" {
	umask 022
	start_memservers 1 --size 64M
	serve_sock
	# Control: what a plain bind gives under this umask.
	(perl -MIO::Socket::UNIX -e \
		'IO::Socket::UNIX->new(Local => $ARGV[0], Listen => 1) or die' "$FM_DIR/plain.sock")
	[ "$(stat -c %a "$FM_DIR/plain.sock")" = 755 ]
	# A stale socket where serve listens is replaced.
	cp -a "$FM_DIR/plain.sock" "$NBD_SOCK"
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$NBD_SOCK"
	[ -S "$NBD_SOCK" ]
	[ "$(stat -c %a "$NBD_SOCK")" = 600 ]
	nbdinfo "$NBD_URI" >/dev/null
	# No temporary directory is left beside it.
	run ls -A "$FM_DIR/serve"
	[[ "$output" != *".nbd."* ]]
	stop_serve TERM
	[ ! -e "$NBD_SOCK" ]
	# A regular file at the path is not eaten.
	echo keep >"$FM_DIR/serve/file"
	run "$FM_BLK" serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" \
		--size 16M --nbd "unix:$FM_DIR/serve/file"
	[ "$status" -ne 0 ]
	[[ "$output" == *"exists and is not a socket"* ]]
	[ "$(cat "$FM_DIR/serve/file")" = keep ]
}

@test "tcp://0.0.0.0 is refused without TLS or --insecure, served with either" {
	start_memservers 1 --size 64M
	base=(--servers "$FM_SERVERS" --secret-file "$FM_SECRET" --size 16M)
	port=$(free_port)
	run "$FM_BLK" serve "${base[@]}" --nbd "tcp://0.0.0.0:$port"
	[ "$status" -eq 2 ]
	[[ "$output" == *"--nbd: 'tcp://0.0.0.0:$port' can be reached from other machines"* ]]
	[[ "$output" == *"--tls-psk"*"--insecure"* ]]
	! port_busy "$port"
	# The same from the config file names the file and key.
	printf '[serve]\nnbd = tcp://0.0.0.0:%s\n' "$port" >"$FM_DIR/farmem.conf"
	run "$FM_BLK" serve --config "$FM_DIR/farmem.conf" "${base[@]}"
	[ "$status" -eq 2 ]
	[[ "$output" == *"$FM_DIR/farmem.conf: key 'serve:nbd'"* ]]
	# Loopback needs neither.
	run "$FM_BLK" serve "${base[@]}" --nbd "tcp://127.0.0.2:$port" --check-config
	[ "$status" -eq 0 ]
	run "$FM_BLK" serve "${base[@]}" --nbd "tcp://[::1]:$port" --check-config
	[ "$status" -eq 0 ]
	# --insecure: served in the clear, with a warning.
	NBD_URI="nbd://127.0.0.1:$port/"
	launch_serve "${base[@]}" --nbd "tcp://0.0.0.0:$port" --insecure
	nbdinfo "$NBD_URI" >/dev/null
	grep -q 'insecure: NBD in the clear' "$FM_DIR/serve/log"
	stop_serve TERM
	# TLS: served, and only over TLS.
	make_psk "$FM_DIR/keys.psk" alice
	NBD_URI="nbds://alice@127.0.0.1:$port/?tls-psk-file=$FM_DIR/keys.psk"
	launch_serve "${base[@]}" --nbd "tcp://0.0.0.0:$port" --tls-psk "$FM_DIR/keys.psk"
	run nbdinfo "nbd://127.0.0.1:$port/"
	[ "$status" -ne 0 ]
	nbdinfo "$NBD_URI" >/dev/null
}

@test "two trickling clients do not keep a new client out past the handshake deadline (control: a long deadline)" {
	start_memservers 1 --size 64M
	# --queues 1: two connections may be in their handshake at once.
	# Control: with a deadline of an hour the tricklers hold both and
	# a new client is turned away.
	start_serve --size 16M --queues 1 --handshake-timeout 1h
	trickle 1
	trickle 2
	wait_until 20 file_says "$FM_DIR/trickle.1" started
	wait_until 20 file_says "$FM_DIR/trickle.2" started
	run nbdinfo "$NBD_URI"
	[ "$status" -ne 0 ]
	grep -q 'refused: too many connections' "$FM_DIR/serve/log"
	stop_serve TERM
	# With a 2 s deadline serve hangs up on both, however they trickle,
	# and the new client is served.
	rm -f "$FM_DIR"/trickle.*
	start_serve --size 16M --queues 1 --handshake-timeout 2s
	trickle 1
	trickle 2
	wait_until 20 file_says "$FM_DIR/trickle.1" started
	wait_until 20 file_says "$FM_DIR/trickle.2" started
	wait_until 60 file_says "$FM_DIR/trickle.1" closed
	wait_until 60 file_says "$FM_DIR/trickle.2" closed
	[ "$(grep -c 'handshake not done within 2000ms' "$FM_DIR/serve/log")" -ge 2 ]
	wait_until 30 nbd_ready
	nbdinfo "$NBD_URI" >/dev/null
}

@test "the idle timeout closes an idle connection and keeps a busy one" {
	start_memservers 1 --size 64M
	start_serve --size 16M --idle-timeout 2s
	hold 1 idle
	hold 2 active
	wait_until 20 file_says "$FM_DIR/hold.1" go
	wait_until 20 replies_above 2 0
	wait_until 60 file_says "$FM_DIR/hold.1" closed
	grep -q 'idle for 2000ms, closing' "$FM_DIR/serve/log"
	# Control: the client that kept asking is still served.
	n=$(replies_of 2)
	wait_until 30 replies_above 2 $(( n + 3 ))
	! file_says "$FM_DIR/hold.2" closed
}

@test "bad TLS and timeout settings give clear errors" {
	s=tcp://127.0.0.1:1
	base=(--servers "$s" --secret-file "$FM_SECRET" --size 16M --nbd "unix:$FM_DIR/x.sock")
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/missing.psk" --check-config
	[ "$status" -ne 0 ]
	[[ "$output" == *"--tls-psk: PSK file $FM_DIR/missing.psk: No such file"* ]]
	printf 'alice:00112233\n' >"$FM_DIR/short.psk"
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/short.psk" --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"short.psk line 1: key shorter than 16 bytes"* ]]
	make_psk "$FM_DIR/two.psk" alice
	printf 'bob %s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$FM_DIR/two.psk"
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/two.psk" --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"two.psk line 2: not username:hexkey"* ]]
	run "$FM_BLK" serve "${base[@]}" --tls-cert "$FM_DIR/cert.pem" --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"--tls-cert: an x509 certificate needs its key"* ]]
	run "$FM_BLK" serve "${base[@]}" --handshake-timeout 0 --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"--handshake-timeout"*"'0'"* ]]
	run "$FM_BLK" serve "${base[@]}" --idle-timeout soon --check-config
	[ "$status" -eq 2 ]
	[[ "$output" == *"--idle-timeout"*"'soon'"* ]]
	make_psk "$FM_DIR/good.psk" alice
	run "$FM_BLK" serve "${base[@]}" --tls-psk "$FM_DIR/good.psk" --check-config
	[ "$status" -eq 0 ]
	[[ "$output" == *"tls          psk $FM_DIR/good.psk"* ]]
	run "$FM_BLK" serve --help
	[[ "$output" == *"--tls-psk FILE"* ]]
	[[ "$output" == *"--idle-timeout"* ]]
}

@test "a client that stops reading replies is dropped after the idle timeout" {
	start_memservers 1 --size 64M
	# One connection at a time: the next client needs the stuck one's slot.
	start_serve --size 16M --idle-timeout 2s --queues 1
	# 64 reads of 1 MiB, never a reply read: serve's sends block.
	timeout 120 perl -MIO::Socket::UNIX -e '
		my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die;
		sub rd { my $n = shift; my $b = ""; while (length($b) < $n) {
			sysread($s, $b, $n - length($b), length($b)) or die "eof"; } $b }
		rd(18);
		syswrite($s, pack("N", 3));
		syswrite($s, pack("NNNN", 0x49484156, 0x454f5054, 7, 6) . pack("N n", 0, 0));
		for (;;) { my @h = unpack("NNNNN", rd(20)); rd($h[4]) if $h[4];
			last if $h[3] == 1; die "refused" if $h[3] & 0x80000000; }
		for my $i (1 .. 64) {
			syswrite($s, pack("NnnNNNNN", 0x25609513, 0, 0, 0, $i, 0, 0, 1 << 20));
		}
		open(F, ">", $ARGV[1]); print F "sent\n"; close F;
		sleep 110;' "$NBD_SOCK" "$FM_DIR/stuck" &
	track_pid $!
	wait_until 60 grep -q 'client took no reply for 2000ms, closing' "$FM_DIR/serve/log"
	# The slot is free again: a new client is served.
	wait_until 30 nbd_ready
}

@test "x509: a certificate serves TLS clients that trust it, refuses plain ones" {
	require_cmd openssl
	start_memservers 1 --size 64M
	d="$FM_DIR/x509"
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$d/server-key.pem" -out "$d/server-cert.pem" -days 2 \
		-subj /CN=localhost -addext "subjectAltName=DNS:localhost" 2>/dev/null
	cp "$d/server-cert.pem" "$d/ca-cert.pem"
	port=$(free_port)
	NBD_URI="nbds://localhost:$port/?tls-certificates=$d"
	launch_serve --servers "$FM_SERVERS" --secret-file "$FM_SECRET" --size 16M \
		--nbd "tcp://0.0.0.0:$port" --tls-cert "$d/server-cert.pem" \
		--tls-key "$d/server-key.pem"
	head -c 4M /dev/urandom >"$FM_DIR/in"
	nbdcopy "$FM_DIR/in" "$NBD_URI"
	nbdcopy "$NBD_URI" "$FM_DIR/out"
	cmp -n $(( 4 << 20 )) "$FM_DIR/in" "$FM_DIR/out"
	grep -q 'TLS TLS1.* (x509)' "$FM_DIR/serve/log"
	run nbdinfo "nbd://localhost:$port/"
	[ "$status" -ne 0 ]
	# A client that trusts another CA refuses this server.
	mkdir -p "$FM_DIR/other"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$FM_DIR/other/key.pem" -out "$FM_DIR/other/ca-cert.pem" \
		-days 2 -subj /CN=other 2>/dev/null
	run nbdinfo "nbds://localhost:$port/?tls-certificates=$FM_DIR/other"
	[ "$status" -ne 0 ]
}
