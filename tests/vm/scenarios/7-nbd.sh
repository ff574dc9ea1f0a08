# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 1500
# Issue scenario 7: scenario 1 through the kernel NBD path
# (`farmem-blk add --frontend nbd`, /dev/nbdN) for kernels without ublk.
. /test/lib.sh
swap_scenario 0 "" --frontend nbd
