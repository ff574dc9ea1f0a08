# Sourced by the rdma guest scripts: the rdma_cm user interface (shipped
# by tests/vm/rdma-check as /test/*.ko) and Soft-RoCE on $RXE_NETDEV
# (default eth0; the two-guest test uses its private link, eth1).
for m in configfs iw_cm ib_cm rdma_cm rdma_ucm; do
	[ -d "/sys/module/$m" ] && continue
	insmod "/test/$m.ko" || fail "insmod $m failed"
done
wait_for 10 "/dev/infiniband/rdma_cm" test -e /dev/infiniband/rdma_cm

# rdma_rxe is loaded by /init (crc32_generic first, or `rdma link add`
# fails with ENOENT).
if [ ! -e /sys/class/infiniband/rxe0 ]; then
	rdma link add rxe0 type rxe netdev "${RXE_NETDEV:-eth0}" ||
		fail "rdma link add rxe0 (netdev ${RXE_NETDEV:-eth0}) failed"
fi
wait_for 10 "rxe0 to appear" test -e /sys/class/infiniband/rxe0
say "Soft-RoCE: $(rdma link show | head -n 1)"
# The pool and the registered buffers are pinned.
ulimit -l unlimited 2>/dev/null || true
