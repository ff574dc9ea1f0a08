# Guest script (tests/vm/rdma-check devbench): a farmem-blk device over
# rdma:// against the same device over tcp://, in one run, on the same
# three memservers (each listens on both); and over rdma:// with each
# queue's own connections (FARMEM_RDMA_QUEUE_CONNS=1).  For each: the
# region filled with half-compressible data (verified by fio), then fio's
# 4k random writes at QD32 and random reads at QD1 and QD32; reported per
# I/O: the daemon's context switches (voluntary + nonvoluntary, summed
# over its threads) and CPU time (user + system), and the IOPS, with the
# ratio to tcp://; and the daemon's resident (locked) memory.  Emulated
# (TCG): the switch counts carry over to real hardware, the times only
# roughly.  Not part of make check.
. /test/lib.sh
. /test/rdma-mods.sh

IP=10.0.2.15
secret=/tmp/secret
printf 'rdma-devbench-secret-0123456789\n' > $secret
chmod 600 $secret
MIB=${DEVBENCH_MIB:-48}
RUNTIME=${DEVBENCH_SECONDS:-20}

pids=""
cleanup() {
	rc=$?
	if [ $rc -ne 0 ]; then
		for f in /run/farmem/*.log /tmp/ms*.log; do
			[ -f "$f" ] && { echo "---- $f"; tail -n 30 "$f"; }
		done
	fi
	for p in $pids; do kill -9 "$p" 2>/dev/null; done
}
trap cleanup EXIT

for i in 1 2 3; do
	farmem-memserver --listen tcp://$IP:$((7200 + i)) --listen rdma://$IP:$((7100 + i)) \
		--size 128M --secret-file $secret --allow-unlocked --pid-file /tmp/ms$i.pid \
		> /tmp/ms$i.log 2>&1 &
	pids="$pids $!"
done
for i in 1 2 3; do
	wait_for 20 "memserver $i to listen" test -s /tmp/ms$i.pid
done
command -v fio >/dev/null || fail "no fio in the guest (tests/vm/run --fio)"

# The daemon's switches and CPU ticks so far: "ctx ticks".
cost() {
	local pid=$1 ctx=0 t n
	for t in /proc/$pid/task/*; do
		n=$(awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }' \
			"$t/status" 2>/dev/null)
		ctx=$((ctx + ${n:-0}))
	done
	echo "$ctx $(awk '{ print $14 + $15 }' /proc/$pid/stat)"
}

# fio_point NAME RW QD: one timed fio run on $DEV; prints "ios iops"
# (terse v3: read KiB and IOPS are fields 6 and 8, write's 47 and 49).
fio_point() {
	local name=$1 rw=$2 qd=$3 out
	out=$(fio --name="$name" --filename="$DEV" --direct=1 --ioengine=libaio \
		--rw="$rw" --bs=4k --iodepth="$qd" --size=${MIB}M --time_based \
		--runtime="$RUNTIME" --randrepeat=0 --buffer_compress_percentage=50 \
		--refill_buffers --output-format=terse --terse-version=3 2>&1) ||
		{ echo "$out" >&2; return 1; }
	echo "$out" | awk -F';' -v rw="$rw" '{
		if (rw ~ /read/) print int($6 / 4), $8; else print int($47 / 4), $49 }'
}

# USER_HZ is 100 on Linux (the guest has no getconf).
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
# rdma-q: rdma:// with each queue's own connections (the transport's
# loop mode, opt-in: FARMEM_RDMA_QUEUE_CONNS=1).
for t in tcp rdma rdma-q; do
	proto=${t%-q}
	base=$([ $proto = tcp ] && echo 7200 || echo 7100)
	servers="$proto://$IP:$((base + 1)),$proto://$IP:$((base + 2)),$proto://$IP:$((base + 3))"
	FARMEM_RDMA_QUEUE_CONNS=0
	[ $t = rdma-q ] && FARMEM_RDMA_QUEUE_CONNS=1
	export FARMEM_RDMA_QUEUE_CONNS   # the daemon add starts inherits it
	FARMEM_SERVERS=$servers FARMEM_SECRET=$secret farmem_add --size 128M --replicas 2 \
		--overcommit
	pid=$(daemon_pid "$DEV")
	# Fill the region once, verified, so the reads find real records.
	fio --name=fill --filename="$DEV" --direct=1 --ioengine=libaio --rw=write \
		--bs=64k --iodepth=8 --size=${MIB}M --buffer_compress_percentage=50 \
		--refill_buffers --verify=crc32c --do_verify=1 > /tmp/fill.out 2>&1 ||
		{ cat /tmp/fill.out; fail "$t: fill of $DEV failed"; }
	for point in randwrite:32 randread:1 randread:32; do
		rw=${point%:*} qd=${point#*:}
		c0=$(cost "$pid")
		r=$(fio_point "$t-$point" "$rw" "$qd") || fail "$t: fio $point"
		c1=$(cost "$pid")
		echo "$r $c0 $c1" | awk -v t=$t -v p=$point -v hz="$hz" '{
			ios = $1 ? $1 : 1
			printf "devbench %s %s: %d IOPS, %.2f switches and %.1f us CPU per I/O (daemon)\n",
				t, p, $2, ($5 - $3) / ios, ($6 - $4) * 1e6 / hz / ios }' |
			tee -a /tmp/devbench.out
	done
	# Resident is locked (mlockall): what the device costs the host.
	# (VmLck also counts reserved address space that never fills.)
	echo "devbench $t memory: daemon $(awk '/^VmRSS/ { print $2, $3 }' /proc/$pid/status) resident" |
		tee -a /tmp/devbench.mem
	farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
done
awk '{ key = $3; sub(":$", "", key)
       if ($2 == "tcp") { tcp[key] = $4; tsw[key] = $6 }
       else if (tcp[key] > 0)
	       printf "devbench ratio %s: %s/tcp IOPS %.2f, switches per I/O %.2f vs %.2f\n",
		       key, $2, $4 / tcp[key], $6, tsw[key] }' /tmp/devbench.out
[ "$(grep -c '^devbench rdma' /tmp/devbench.out)" -eq 6 ] || fail "some points gave no result"
say "devbench done"
