# vm-mem: 512M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 600
# vm-fio: yes
# Issue scenario 5: fio writes and verifies (crc32c, fatal on the first
# bad block) directly on /dev/ublkbN: 4 KiB random, 64 KiB sequential,
# and mixed sizes over the 4 KiB region (overwrites), O_DIRECT, depth 16.
# (512 MiB guest: fio and its libraries are about 80 MiB.)
. /test/lib.sh
require_add
farmem_add --size 1G --replicas 2
# Sizes keep it within minutes under emulation (a few hundred IOPS).
common="--filename=$DEV --direct=1 --ioengine=libaio --iodepth=16 \
 --verify=crc32c --verify_fatal=1 --do_verify=1 --eta=never --group_reporting"
fio --name=rand4k --rw=randwrite --bs=4k --size=32M $common || fail "fio rand4k"
fio --name=seq64k --rw=write --bs=64k --offset=256M --size=64M $common || fail "fio seq64k"
fio --name=mixed --rw=randwrite --bsrange=4k-128k --offset=0 --size=64M \
	--verify_backlog=256 $common || fail "fio mixed"
farmem-blk status "$DEV" || say "farmem-blk status $DEV failed"
farmem-blk del "$DEV" || fail "farmem-blk del $DEV"
say "ok"
