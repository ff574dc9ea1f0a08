# Guest script (tests/vm/rdma-check numbers): tcp:// against rdma:// for
# the same client work, on one memserver that listens on both.  For each
# transport, fm-client's pipeline of N page writes then N page reads
# (verified) is run for two N; the difference between the runs gives the
# cost per page without set-up: packets on the wire (rxe's counters; lo
# for tcp), bytes (lo for tcp; rdma bytes are computed from the packet
# count in the report), requests the server's CPU handled (its STAT), the
# server's CPU ticks, and the client's user-space instructions
# (callgrind, when the host shipped it).  Emulated: counts, not speed.
. /test/lib.sh
# MTU 9000 (RDMA_NUMBERS_MTU) before rxe starts: rxe then runs the
# 4096-byte RDMA MTU, as on the two-guest link (tests/vm/rdma-pair), so a
# page is one packet, not five of 1024 bytes; lo (tcp) has 65536.
ip link set eth0 mtu "${RDMA_NUMBERS_MTU:-9000}" || fail "cannot set eth0's MTU"
. /test/rdma-mods.sh
say "rxe0 active MTU: $(cat /sys/class/infiniband/rxe0/ports/1/active_mtu 2>/dev/null)"

IP=10.0.2.15
secret=/tmp/secret
printf 'rdma-numbers-secret-0123456789\n' > $secret
chmod 600 $secret
farmem-memserver --listen tcp://$IP:7201 --listen rdma://$IP:7101 --size 128M \
	--secret-file $secret --allow-unlocked --pid-file /tmp/ms.pid > /tmp/ms.log 2>&1 &
mspid=$!
trap 'kill -9 $mspid 2>/dev/null' EXIT
wait_for 20 "the memserver to listen" test -s /tmp/ms.pid

C=/sys/class/infiniband/rxe0/ports/1/hw_counters
L=/sys/class/net/lo/statistics
cnt() { cat "$1" 2>/dev/null || echo 0; }
ms_ticks() { awk '{ print $14 + $15 }' /proc/$mspid/stat; }
ms_stat() {  # reads+writes the server's CPU served (tcp only)
	farmem-memserver --stat tcp://$IP:7201 --secret-file $secret --json |
		sed 's/.*"reads":\([0-9]*\).*"writes":\([0-9]*\).*/\1 \2/' |
		awk '{ print $1 + $2 }'
}
have_vg=0
vg=/test/valgrind.bin     # Debian's /usr/bin/valgrind is a wrapper of it
[ -x $vg ] || vg=/test/valgrind
if [ -x $vg ] && [ -f /test/callgrind-amd64-linux ]; then
	have_vg=1
	export VALGRIND_LIB=/test
fi

# run ADDR N: one pipeline; prints "pkts bytes srv_ops srv_ticks instr".
run() {
	local addr=$1 n=$2 p0 p1 b0 b1 s0 s1 t0 t1 ir=0
	p0=$(( $(cnt $C/sent_pkts) + $(cnt $L/tx_packets) ))
	b0=$(cnt $L/tx_bytes)
	s0=$(ms_stat); t0=$(ms_ticks)
	if [ $have_vg -eq 1 ]; then
		$vg --tool=callgrind --callgrind-out-file=/tmp/cg.out \
			fm-client --server "$addr" --secret-file $secret --timeout 60000 \
			pipeline "$n" > /tmp/run.out 2> /tmp/vg.err || { cat /tmp/run.out /tmp/vg.err >&2; return 1; }
		ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' /tmp/cg.out)
	else
		fm-client --server "$addr" --secret-file $secret pipeline "$n" \
			> /tmp/run.out 2>&1 || { cat /tmp/run.out >&2; return 1; }
	fi
	grep -q "mismatches=0" /tmp/run.out || { cat /tmp/run.out >&2; return 1; }
	p1=$(( $(cnt $C/sent_pkts) + $(cnt $L/tx_packets) ))
	b1=$(cnt $L/tx_bytes)
	s1=$(ms_stat); t1=$(ms_ticks)
	# ms_stat's own tcp round trip is in the tcp counters: 2 requests.
	echo "$((p1 - p0)) $((b1 - b0)) $((s1 - s0)) $((t1 - t0)) ${ir:-0}"
}

N1=${RDMA_NUMBERS_N1:-256}
N2=${RDMA_NUMBERS_N2:-2304}
for t in tcp rdma; do
	[ $t = tcp ] && addr=tcp://$IP:7201 || addr=rdma://$IP:7101
	a=$(run $addr $N1) || fail "$t pipeline $N1"
	b=$(run $addr $N2) || fail "$t pipeline $N2"
	# Per page = (run N2 - run N1) / (2 (N2 - N1)): a write and a read
	# of each page.
	echo "$a $b" | awk -v t=$t -v d=$((2 * (N2 - N1))) '{
		printf "numbers %s: per 4 KiB page op: %.2f packets, %.0f lo bytes, %.2f server-CPU requests, %.3f server CPU ticks, %.0f client instructions\n",
			t, ($6 - $1) / d, ($7 - $2) / d, ($8 - $3) / d, ($9 - $4) / d, ($10 - $5) / d }'
done
say "numbers done"
