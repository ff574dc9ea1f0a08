# vm-mem: 256M
# vm-memservers: 3
# vm-memserver-size: 768M
# vm-timeout: 1500
# Issue scenario 1: a 256 MiB guest, a 1 GiB farmem device (ublk) over 3
# memservers with R=2: mkswap, swapon, a workload writing about twice the
# guest's RAM in checksummed pages and verifying every page (two passes);
# swap use seen in /proc/swaps; no mismatch.
. /test/lib.sh
swap_scenario 0 ""
