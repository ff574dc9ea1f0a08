# Guest: request latency of the ublk path, one request at a time
# (O_DIRECT, 4 KiB and 128 KiB), reads of stored and of never-written
# pages, for comparing with the swap workload's speed.  Functional
# evidence only under emulation.
. /test/lib.sh
require_servers
farmem_add --size 256M --replicas 2 ${FARMEM_LAT_ARGS:-}
t() { local a b; a=$(cut -d' ' -f1 /proc/uptime); "$@" 2>/dev/null; b=$(cut -d' ' -f1 /proc/uptime); awk -v a=$a -v b=$b 'BEGIN { printf "%.2f", b - a }'; }
head -c 16777216 /dev/urandom > /tmp/r
say "write 4k x 1024 random: $(t dd if=/tmp/r of=$DEV bs=4k count=1024 oflag=direct)s"
say "read 4k x 1024 stored: $(t dd if=$DEV of=/dev/null bs=4k count=1024 iflag=direct)s"
say "read 4k x 1024 unwritten: $(t dd if=$DEV of=/dev/null bs=4k count=1024 skip=16384 iflag=direct)s"
say "write 128k x 128 random: $(t dd if=/tmp/r of=$DEV bs=128k count=128 oflag=direct)s"
say "read 128k x 128 stored: $(t dd if=$DEV of=/dev/null bs=128k count=128 iflag=direct)s"
farmem-blk del "$DEV" || fail "del"
say "ok"
