# Guest script (tests/vm/run): the rdma transport against the memserver's
# rdma listener over Soft-RoCE, in one guest.  Needs
# --with build/tests/unit/test_transport_rdma.
. /test/lib.sh

. /test/rdma-mods.sh

out=/tmp/rdma-loop.tap
FARMEM_RDMA_ADDR=10.0.2.15 /test/test_transport_rdma > "$out" 2>&1
rc=$?
cat "$out"
[ $rc -eq 0 ] || fail "test_transport_rdma failed (exit $rc)"
# Every device case must really have run here: a skip would hide a
# missing device behind a pass.
if grep '# SKIP' "$out" | grep -v 'has an RDMA device' | grep -q .; then
	fail "device cases were skipped in the guest"
fi
grep -q '^ok .*rdma loop: alloc' "$out" || fail "the loop cases did not run"
grep -q '^ok .*rdma event loop: fibers' "$out" || fail "the event-loop cases did not run"
say "rdma loop: all device cases passed"
