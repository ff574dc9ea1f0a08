# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 64M
# vm-timeout: 120
# The host side of the harness: the guest reaches the three memservers on
# the host's loopback through 10.0.2.2 (authenticated --stat from inside
# the guest), and the control listener kills one of them on request.
. /test/lib.sh
require_servers
[ "$(host_ctl ping)" = pong ] || fail "host control does not answer"
n=0
for s in $(echo "$FARMEM_SERVERS" | tr , ' '); do
	farmem-memserver --stat "$s" --secret-file "$FARMEM_SECRET" --json > /tmp/stat.json ||
		fail "--stat $s failed"
	grep -q '"used_bytes":0' /tmp/stat.json || fail "$s: pool not empty: $(cat /tmp/stat.json)"
	n=$((n + 1))
done
[ $n -eq 3 ] || fail "want 3 memservers, got $n"
say "3 memservers reachable from the guest"
[ "$(host_ctl 'alive 1')" = yes ] || fail "memserver 1 not alive"
[ "$(host_ctl 'kill9 1')" = ok ] || fail "kill9 1 failed"
wait_for 10 "memserver 1 to die" memserver_dead 1
s1=$(echo "$FARMEM_SERVERS" | cut -d, -f2)
if farmem-memserver --stat "$s1" --secret-file "$FARMEM_SECRET" >/dev/null 2>&1; then
	fail "memserver 1 still answers after kill -9"
fi
say "kill -9 of memserver 1 through the control listener works"
say "ok"
