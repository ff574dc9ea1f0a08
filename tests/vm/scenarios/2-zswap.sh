# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 900
# Issue scenario 2: scenario 1 with zswap in front of the farmem device.
# zswap's pool (20% of RAM) cannot hold twice the RAM even compressed, so
# pages still reach farmem: the device must see writes.
. /test/lib.sh
# One pass (write, verify) keeps it within minutes under emulation.
WORKLOAD_PASSES=1
echo Y > /sys/module/zswap/parameters/enabled || fail "cannot enable zswap"
echo 20 > /sys/module/zswap/parameters/max_pool_percent
say "zswap: $(cat /sys/module/zswap/parameters/compressor), max_pool_percent 20"
swap_scenario 0 ""
if [ -r /sys/kernel/debug/zswap/written_back_pages ]; then
	say "zswap written back $(cat /sys/kernel/debug/zswap/written_back_pages) pages," \
		"rejected $(cat /sys/kernel/debug/zswap/reject_compress_poor 2>/dev/null) poor"
fi
