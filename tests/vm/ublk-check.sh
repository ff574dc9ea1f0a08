#!/bin/bash
# Host side: run one of the ublk engineer's guest scripts (tests/vm/ublk-*.sh
# other than this one) with fresh memservers, like tests/vm/check does for
# the scenarios.
#   tests/vm/ublk-check.sh [-v] GUEST-SCRIPT [memservers [pool-size [mem]]]
set -uo pipefail
VM_DIR=$(cd "$(dirname "$0")" && pwd)
OUT=${FARMEM_VM_OUT:-$VM_DIR/out}
. "$VM_DIR/host-lib.sh"
verbose=()
if [ "${1:-}" = -v ]; then verbose=(-v); shift; fi
script=${1:?usage: ublk-check.sh [-v] GUEST-SCRIPT [N [SIZE [MEM]]]}
nms=${2:-2} size=${3:-256M} mem=${4:-256M}
mkdir -p "$OUT"
HL_DIR=$(mktemp -d "$OUT/host.XXXXXX")
trap 'hl_cleanup; rm -rf "$HL_DIR"' EXIT
hl_start_memservers "$nms" "$size" || exit 125
hl_start_control || exit 125
"$VM_DIR/run" "${verbose[@]}" --mem "$mem" --timeout 600 --with "$HL_DIR/secret" \
	--env FARMEM_SECRET=/test/secret --env "FARMEM_SERVERS=$HL_SERVERS_GUEST" \
	--env "FARMEM_CTL_PORT=$HL_CTL_PORT" "$script"
rc=$?
[ $rc -ne 0 ] && for i in "${!HL_MS_PIDS[@]}"; do
	echo "---- memserver $i log ----"; tail -n 20 "$HL_DIR/ms$i.log"; done
exit $rc
