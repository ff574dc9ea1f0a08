# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 600
# `farmem-blk add --metrics`: the device daemon serves the store's
# counters at http://HOST:PORT/metrics; after 4 MiB written to the
# device, farmem_blk_pages_stored counts them.  Killed with SIGKILL and
# recovered (by its keeper, or `recover`), the new daemon serves metrics
# again on the same address
# (the device record keeps it).
. /test/lib.sh
require_add
M=127.0.0.1:9480
scrape() { wget -q -O - "http://$M/metrics" 2>/dev/null; }
pages() { scrape | sed -n 's/^farmem_blk_pages_stored \([0-9.e+]*\)$/\1/p'; }
farmem_add --size 256M --replicas 2 --metrics "$M"
wait_for 10 "metrics on $M" sh -c "wget -q -O - http://$M/metrics | grep -q '^farmem_blk_pages_stored '"
dd if=/dev/urandom of="$DEV" bs=1M count=4 oflag=direct 2>/dev/null || fail "dd to $DEV"
p=$(pages)
say "farmem_blk_pages_stored $p"
[ "${p%%.*}" -ge 1024 ] 2>/dev/null || fail "want >= 1024 pages stored, got '$p'"
scrape | grep -q '^farmem_blk_server_up{server="[^"]*"} 1$' || fail "no server up in metrics"
scrape | grep -q '^farmem_blk_writes_total [1-9]' || fail "no writes counted"
grep -q '^metrics = "127.0.0.1:9480"$' "${FARMEM_RUN_DIR:-/run/farmem}/$(basename "$DEV").conf" ||
	fail "device record lacks the metrics address"
pid=$(daemon_pid "$DEV")
[ -n "$pid" ] || fail "no daemon pid for $DEV"
kill -9 "$pid" || fail "kill -9 $pid"
wait_for 10 "daemon $pid to die" pid_gone "$pid"
farmem-blk recover "$DEV" || fail "farmem-blk recover $DEV"
say "recovered: daemon $(daemon_pid "$DEV")"
wait_for 10 "metrics on $M after recover" sh -c "wget -q -O - http://$M/metrics | grep -q '^farmem_blk_pages_stored '"
p=$(pages)
say "after recover: farmem_blk_pages_stored $p"
[ "${p%%.*}" -ge 1024 ] 2>/dev/null || fail "after recover: want >= 1024 pages stored, got '$p'"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
wait_for 10 "metrics to stop" sh -c "! wget -q -O - http://$M/metrics"
say "ok"
