# Guest script, the farmem-blk side of the two-guest rdma test
# (tests/vm/rdma-pair): Soft-RoCE on the private link eth1 (10.9.0.2),
# wait for the memserver guest (10.9.0.1) to answer, a short fm-client
# check over rdma://, then the guest scenario /test/$PAIR_SCENARIO.sh
# unchanged, with FARMEM_SERVERS on rdma:// and its kill9/alive
# commands going to the memserver guest.  Tells that guest "done" at the
# end either way.
. /test/lib.sh

ip link set eth1 mtu 9000 up || fail "no eth1 (tests/vm/run --link)"
ip addr add 10.9.0.2/24 dev eth1 || fail "cannot address eth1"
RXE_NETDEV=eth1
. /test/rdma-mods.sh

peer_ready() { [ "$(host_ctl ping 2>/dev/null)" = pong ]; }
finish() {
	rc=$?
	host_ctl done >/dev/null 2>&1 || say "the memserver guest did not take done"
	exit $rc
}
trap finish EXIT
wait_for 300 "the memserver guest's control listener" peer_ready
say "memserver guest answers; servers $FARMEM_SERVERS"
first=${FARMEM_SERVERS%%,*}
fm-client --server "$first" --secret-file "$FARMEM_SECRET" pipeline 64 ||
	fail "fm-client pipeline over $first"
[ -f "/test/$PAIR_SCENARIO.sh" ] || fail "no scenario /test/$PAIR_SCENARIO.sh"
say "running $PAIR_SCENARIO over rdma:// (memservers in the other guest)"
sh "/test/$PAIR_SCENARIO.sh"
