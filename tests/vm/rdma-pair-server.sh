# Guest script, the memserver side of the two-guest rdma test
# (tests/vm/rdma-pair): Soft-RoCE on the private link eth1 (10.9.0.1),
# PAIR_MEMSERVERS farmem-memservers (tests/vm/rdma-pair says how many) on
# rdma://10.9.0.1:7101..., and the control listener on 10.9.0.1:7200
# that the farmem-blk guest uses the way scenarios use the host's
# (tests/vm/host-control.pl): ping, kill9 I, alive I, and "done" to end.
# Passes when "done" came and every memserver not killed on purpose is
# still alive.
. /test/lib.sh

IP=10.9.0.1
# MTU 9000: rxe then runs the 4096-byte RDMA MTU, one page per packet.
ip link set eth1 mtu 9000 up || fail "no eth1 (tests/vm/run --link)"
ip addr add $IP/24 dev eth1 || fail "cannot address eth1"
RXE_NETDEV=eth1
. /test/rdma-mods.sh

n=${PAIR_MEMSERVERS:?tests/vm/rdma-pair sets PAIR_MEMSERVERS}
pool=${PAIR_POOL:-512M}
[ -f /test/secret ] || fail "no /test/secret"
i=0
while [ $i -lt "$n" ]; do
	farmem-memserver --listen rdma://$IP:$((7101 + i)) --size "$pool" \
		--secret-file /test/secret --lease 30s --pid-file /tmp/ms$i.pid \
		> /tmp/ms$i.log 2>&1 &
	i=$((i + 1))
done
i=0
while [ $i -lt "$n" ]; do
	wait_for 120 "memserver $i to listen" grep -q "listening on" /tmp/ms$i.log
	i=$((i + 1))
done
say "$n memservers with $pool pools on rdma://$IP:7101..$((7100 + n)), $(rdma link show | head -n 1)"

# One command per connection; nc is down for a moment between two, and
# host_ctl on the other side retries.  Bounded by the guest's deadline
# (tests/vm/run --timeout) and ended by "done".
: > /tmp/killed
while [ ! -e /tmp/pair-done ]; do
	nc -l -p 7200 -e /test/rdma-pair-ctl.sh || usleep 200000
done
say "the farmem-blk guest is done"

bad=0
i=0
while [ $i -lt "$n" ]; do
	if grep -qx "$i" /tmp/killed; then
		say "memserver $i: killed on purpose"
	elif /test/rdma-pair-ctl.sh alive-check "$i"; then
		say "memserver $i: alive, $(farmem-memserver --stat rdma://$IP:$((7101 + i)) \
			--secret-file /test/secret --json 2>&1 | head -c 300)"
	else
		say "memserver $i died on its own:"
		tail -n 30 /tmp/ms$i.log
		bad=1
	fi
	i=$((i + 1))
done
[ $bad -eq 0 ] || fail "a memserver died that nobody killed"
say "ok"
