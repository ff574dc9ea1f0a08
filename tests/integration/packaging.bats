#!/usr/bin/env bats
# Packages and services: `make deb` and `make rpm` build both packages;
# lintian finds no errors; the .debs install with dpkg --root into an
# empty root (no Debian system in it: a dpkg database, dash and the
# libraries the binaries link, copied from this machine), where the
# installed farmem-memserver accepts the installed config in a chroot;
# conffiles survive reinstall and removal; systemd-analyze verify accepts
# the installed units; `rpm -qlp` lists the files; the farmem-swap helper
# runs the right commands in the right order (with fake commands).
#
# Building both packages takes about a minute on two cores.

bats_require_minimum_version 1.5.0

load helpers

TOP=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)

teardown() {
	stop_all
}

setup_file() {
	export PKG_OUT="$BATS_FILE_TMPDIR/pkg"
	mkdir -p "$PKG_OUT"
	# Build once for the whole file, both at once (each is mostly one
	# compiler run); each test looks at the outcome.
	local pids=()
	# The sanitizer run (make asan) tests the same sources: packages are
	# built and checked once, in the plain run.
	[ -z "${FARMEM_SANITIZED:-}" ] || return 0
	if command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null; then
		(FARMEM_PKG_OUT="$PKG_OUT" "$TOP/packaging/build-deb.sh" \
			>"$PKG_OUT/make-deb.out" 2>&1 && touch "$PKG_OUT/deb.ok") &
		pids+=($!)
	fi
	if command -v rpmbuild >/dev/null; then
		(FARMEM_PKG_OUT="$PKG_OUT" "$TOP/packaging/build-rpm.sh" \
			>"$PKG_OUT/make-rpm.out" 2>&1 && touch "$PKG_OUT/rpm.ok") &
		pids+=($!)
	fi
	# Each build ends on its own (no daemon); wait for both.
	wait "${pids[@]}" || true
}

need_debs() {
	[ -z "${FARMEM_SANITIZED:-}" ] || skip "packages are checked in the plain (non-sanitizer) run"
	command -v dpkg-buildpackage >/dev/null || skip "dpkg-dev not installed (make deps)"
	command -v dh >/dev/null || skip "debhelper not installed (make deps)"
	if [ ! -e "$PKG_OUT/deb.ok" ]; then
		cat "$PKG_OUT/make-deb.out" >&2
		false
	fi
	VERSION=$(cat "$TOP/VERSION")
	DEB_MS=$(ls "$PKG_OUT"/farmem-memserver_"$VERSION"_*.deb)
	DEB_BLK=$(ls "$PKG_OUT"/farmem-blk_"$VERSION"_*.deb)
}

need_rpms() {
	[ -z "${FARMEM_SANITIZED:-}" ] || skip "packages are checked in the plain (non-sanitizer) run"
	command -v rpmbuild >/dev/null || skip "rpm not installed (make deps)"
	if [ ! -e "$PKG_OUT/rpm.ok" ]; then
		cat "$PKG_OUT/make-rpm.out" >&2
		false
	fi
	VERSION=$(cat "$TOP/VERSION")
	RPM_MS=$(ls "$PKG_OUT"/farmem-memserver-"$VERSION"-*.rpm)
	RPM_BLK=$(ls "$PKG_OUT"/farmem-blk-"$VERSION"-*.rpm)
}

need_root() {
	[ "$(id -u)" -eq 0 ] || skip "needs root (chroot, mknod)"
}

# Copies FILE's shared libraries (and the loader) from this machine into
# root $1 at the same paths.
copy_libs() {
	local root=$1 file=$2 lib
	ldd "$file" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
		while read -r lib; do
			[ -e "$root$lib" ] && continue
			mkdir -p "$root$(dirname "$lib")"
			cp -L "$lib" "$root$lib"
		done
}

# An empty merged-/usr root with an empty dpkg database, /bin/sh (for the
# maintainer scripts, which dpkg runs chrooted) and /dev/null.
make_root() {
	local r=$1 d
	mkdir -p "$r"/usr/bin "$r"/usr/sbin "$r"/usr/lib "$r"/usr/lib64 "$r"/etc \
		"$r"/tmp "$r"/dev "$r"/var/lib/dpkg/info "$r"/var/lib/dpkg/updates \
		"$r"/var/lib/dpkg/triggers
	for d in bin sbin lib lib64; do
		ln -s usr/$d "$r/$d"
	done
	touch "$r"/var/lib/dpkg/status "$r"/var/lib/dpkg/available
	cp -L "$(readlink -f /bin/sh)" "$r/usr/bin/sh"
	copy_libs "$r" /bin/sh
	mknod -m 666 "$r/dev/null" c 1 3
}

# dpkg into root $1; the libraries are not packages there, hence
# --force-depends.  Maintainer scripts run (chrooted).
dpkg_root() {
	local r=$1
	shift
	dpkg --root="$r" --log=/dev/null --force-depends "$@"
}

install_root() {
	ROOT="$BATS_TEST_TMPDIR/root"
	make_root "$ROOT"
	run -0 dpkg_root "$ROOT" -i "$DEB_MS" "$DEB_BLK"
}

conf_value() { # KEY FILE
	sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$2" | tail -n 1
}

@test "make deb builds farmem-memserver and farmem-blk" {
	need_debs
	[ "$(dpkg-deb -f "$DEB_MS" Package)" = farmem-memserver ]
	[ "$(dpkg-deb -f "$DEB_BLK" Package)" = farmem-blk ]
	# A memory donor needs no client: the memserver does not pull it in.
	run -0 dpkg-deb -f "$DEB_MS" Depends
	[[ "$output" != *farmem-blk* ]]
	# Hardening reached the binaries: PIE and full RELRO.
	dpkg-deb -x "$DEB_MS" "$BATS_TEST_TMPDIR/x"
	run -0 readelf -h -d "$BATS_TEST_TMPDIR/x/usr/sbin/farmem-memserver"
	[[ "$output" == *"DYN (Position-Independent Executable file)"* ]]
	[[ "$output" == *BIND_NOW* ]]
}

@test "lintian reports no errors" {
	need_debs
	command -v lintian >/dev/null || skip "lintian not installed (make deps)"
	run lintian --no-tag-display-limit "$DEB_MS" "$DEB_BLK"
	echo "$output"
	! grep -q '^E:' <<<"$output"
	# Also fails when lintian itself fails rather than report tags.
	[ "$status" -eq 0 ]
}

@test "debs install into an empty root; installed memserver accepts installed config" {
	need_debs
	need_root
	install_root
	run -0 dpkg-query --root="$ROOT" -W -f='${Status}' farmem-memserver
	[ "$output" = "install ok installed" ]
	run -0 dpkg-query --root="$ROOT" -W -f='${Status}' farmem-blk
	[ "$output" = "install ok installed" ]
	local f
	for f in /usr/sbin/farmem-memserver /usr/sbin/farmem-blk \
		/usr/lib/farmem/farmem-swap /etc/farmem/memserver.conf /etc/farmem/farmem.conf \
		/lib/systemd/system/farmem-memserver.service \
		/lib/systemd/system/farmem-swap@.service \
		/lib/systemd/system/farmem-offload.service \
		/usr/share/man/man8/farmem-memserver.8.gz /usr/share/man/man8/farmem-blk.8.gz \
		/usr/share/man/man5/farmem.conf.5.gz /usr/share/man/man5/memserver.conf.5.gz; do
		[ -e "$ROOT$f" ] || { echo "missing $f" >&2; false; }
	done
	# The installed binary with the installed config, at its real path.
	copy_libs "$ROOT" "$ROOT/usr/sbin/farmem-memserver"
	local secret
	secret=$(conf_value secret-file "$ROOT/etc/farmem/memserver.conf")
	[[ "$secret" == /* ]]
	run ! chroot "$ROOT" /usr/sbin/farmem-memserver --check-config \
		--config /etc/farmem/memserver.conf
	[[ "$output" == *"$secret"* ]]          # no secret yet: refused, says which
	(umask 077; head -c 32 /dev/urandom | base64 >"$ROOT$secret")
	run -0 chroot "$ROOT" /usr/sbin/farmem-memserver --check-config \
		--config /etc/farmem/memserver.conf
}

@test "installed farmem-blk accepts the installed farmem.conf" {
	need_debs
	need_root
	install_root
	copy_libs "$ROOT" "$ROOT/usr/sbin/farmem-blk"
	local secret
	secret=$(conf_value secret-file "$ROOT/etc/farmem/farmem.conf")
	[[ "$secret" == /* ]]
	mkdir -p "$ROOT$(dirname "$secret")"
	(umask 077; head -c 32 /dev/urandom | base64 >"$ROOT$secret")
	run -0 chroot "$ROOT" /usr/sbin/farmem-blk add --check-config \
		--config /etc/farmem/farmem.conf
	[[ "$output" == *"config-file  /etc/farmem/farmem.conf"* ]]
}

@test "/etc/farmem/*.conf are conffiles: kept on reinstall and remove, gone on purge" {
	need_debs
	need_root
	install_root
	run -0 dpkg-query --root="$ROOT" -W -f='${Conffiles}\n' farmem-memserver
	[[ "$output" == *" /etc/farmem/memserver.conf "* ]]
	run -0 dpkg-query --root="$ROOT" -W -f='${Conffiles}\n' farmem-blk
	[[ "$output" == *" /etc/farmem/farmem.conf "* ]]
	echo "# local change" >>"$ROOT/etc/farmem/memserver.conf"
	run -0 dpkg_root "$ROOT" --force-confold -i "$DEB_MS"
	grep -qx "# local change" "$ROOT/etc/farmem/memserver.conf"
	run -0 dpkg_root "$ROOT" -r farmem-memserver
	[ ! -e "$ROOT/usr/sbin/farmem-memserver" ]
	grep -qx "# local change" "$ROOT/etc/farmem/memserver.conf"
	run -0 dpkg_root "$ROOT" -P farmem-memserver
	[ ! -e "$ROOT/etc/farmem/memserver.conf" ]
	[ -e "$ROOT/etc/farmem/farmem.conf" ]   # the other package's is untouched
}

@test "systemd-analyze verify accepts the installed units" {
	need_debs
	need_root
	command -v systemd-analyze >/dev/null || skip "systemd not installed"
	[ -d /lib/systemd/system ] || skip "no systemd units on this machine to verify against"
	install_root
	# verify --root resolves dependencies (network-online.target,
	# modprobe@.service) against the root's units: give it this machine's.
	cp -an /lib/systemd/system/. "$ROOT/lib/systemd/system/"
	# Executables and man pages are looked up in the root (MANPATH), so a
	# missing binary or man page fails here too.  Any warning fails.
	run -0 --separate-stderr env MANPATH="$ROOT/usr/share/man" \
		systemd-analyze verify --root="$ROOT" \
		"$ROOT/lib/systemd/system/farmem-memserver.service" \
		"$ROOT/lib/systemd/system/farmem-swap@.service" \
		"$ROOT/lib/systemd/system/farmem-offload.service"
	echo "$stderr"
	[ -z "$stderr" ]
	# And it can fail: a unit whose binary is missing is refused.
	rm "$ROOT/usr/sbin/farmem-memserver"
	run -1 env MANPATH="$ROOT/usr/share/man" systemd-analyze verify --root="$ROOT" \
		"$ROOT/lib/systemd/system/farmem-memserver.service"
}

@test "memserver unit: restart on failure, lockable pool, hardened" {
	local u="$TOP/packaging/systemd/farmem-memserver.service"
	grep -qx 'ExecStart=/usr/sbin/farmem-memserver --config /etc/farmem/memserver.conf --foreground' "$u"
	grep -qx 'Type=notify' "$u"
	grep -qx 'Restart=on-failure' "$u"
	grep -qx 'LimitMEMLOCK=infinity' "$u"
	grep -qx 'ProtectSystem=strict' "$u"
	grep -qx 'ProtectHome=yes' "$u"
	grep -qx 'NoNewPrivileges=yes' "$u"
	# Drained (bounded) before it stops.
	grep -qx 'ExecStop=-/usr/sbin/farmem-memserver --config /etc/farmem/memserver.conf --drain local --timeout 90s' "$u"
	grep -qx 'TimeoutStopSec=2min' "$u"
	local t="$TOP/packaging/systemd/farmem-swap@.service"
	grep -qx 'After=network-online.target modprobe@ublk_drv.service' "$t"
	grep -qx 'ExecStop=/usr/lib/farmem/farmem-swap stop %i' "$t"
}

@test "rpm -qlp lists binaries, configs, units and man pages" {
	need_rpms
	run -0 rpm -qlp "$RPM_MS"
	local f
	for f in /usr/sbin/farmem-memserver /etc/farmem/memserver.conf \
		/usr/lib/systemd/system/farmem-memserver.service \
		/usr/share/man/man8/farmem-memserver.8 /usr/share/man/man5/memserver.conf.5; do
		grep -q "^$f" <<<"$output" || { echo "memserver rpm lacks $f" >&2; false; }
	done
	[[ "$output" != *farmem-blk* ]]
	run -0 rpm -qlp "$RPM_BLK"
	for f in /usr/sbin/farmem-blk /usr/lib/farmem/farmem-swap /etc/farmem/farmem.conf \
		/usr/lib/systemd/system/farmem-swap@.service \
		/usr/share/man/man8/farmem-blk.8 /usr/share/man/man5/farmem.conf.5; do
		grep -q "^$f" <<<"$output" || { echo "blk rpm lacks $f" >&2; false; }
	done
	# Configs are %config(noreplace): upgrades keep local changes.
	run -0 rpm -qp --configfiles "$RPM_MS"
	[ "$output" = /etc/farmem/memserver.conf ]
	run -0 rpm -qp --configfiles "$RPM_BLK"
	[ "$output" = /etc/farmem/farmem.conf ]
	run -0 rpm -qp --scripts "$RPM_BLK"
	[[ "$output" == *"systemctl stop 'farmem-swap@*.service'"* ]]
}

@test "farmem-memserver sends READY=1 only once it accepts connections (Type=notify)" {
	fm_setup
	require_file "$FM_MEMSERVER"
	local recv="$FARMEM_BUILD/tests/tools/sd_notify_recv" port rpid rc=0
	require_file "$recv"
	"$recv" "$FM_DIR/notify" "$FM_START_TIMEOUT" >"$FM_DIR/notify.out" 2>&1 &
	rpid=$!
	track_pid "$rpid"
	wait_until 10 test -S "$FM_DIR/notify"
	port=$(free_port)
	NOTIFY_SOCKET="$FM_DIR/notify" "$FM_MEMSERVER" --listen "tcp://127.0.0.1:$port" \
		--size 16M --secret-file "$FM_SECRET" --allow-unlocked \
		>"$FM_DIR/ms.log" 2>&1 &
	track_pid "$!"
	# The receiver exits 0 on READY=1 (1 after its bound without it).
	wait_exit "$rpid" || rc=$?
	cat "$FM_DIR/notify.out" "$FM_DIR/ms.log"
	[ "$rc" -eq 0 ]
	grep -qx 'READY=1' "$FM_DIR/notify.out"
	# No polling here: READY=1 promises the server already listens.
	accepts 127.0.0.1 "$port"
}

# ---- the swap helper, against fake commands that log their arguments ----

setup_fakes() {
	FAKE="$BATS_TEST_TMPDIR/fake"
	LOG="$BATS_TEST_TMPDIR/calls"
	DEV="$BATS_TEST_TMPDIR/ublkb7"
	SWAPS="$BATS_TEST_TMPDIR/proc-swaps"
	echo "Filename Type Size Used Priority" >"$SWAPS"
	mkdir -p "$FAKE" "$BATS_TEST_TMPDIR/etc"
	: >"$LOG"
	local c
	for c in modprobe mkswap; do
		printf '#!/bin/sh\necho "%s $*" >>"%s"\n' "$c" "$LOG" >"$FAKE/$c"
	done
	# add prints the device path, as farmem-blk add does.
	cat >"$FAKE/farmem-blk" <<-EOF
	#!/bin/sh
	echo "farmem-blk \$*" >>"$LOG"
	[ "\$1" = add ] && echo "$DEV"
	exit 0
	EOF
	# swapon/swapoff keep a fake /proc/swaps (the helper reads it).
	cat >"$FAKE/swapon" <<-EOF
	#!/bin/sh
	echo "swapon \$*" >>"$LOG"
	[ -e "$BATS_TEST_TMPDIR/swapon-fails" ] && exit 1
	for last; do :; done
	echo "\$last partition 1024 0 5" >>"$SWAPS"
	EOF
	cat >"$FAKE/swapoff" <<-EOF
	#!/bin/sh
	echo "swapoff \$*" >>"$LOG"
	grep -v "^\$1 " "$SWAPS" >"$SWAPS.new"; mv "$SWAPS.new" "$SWAPS"
	EOF
	cat >"$FAKE/blkid" <<-EOF
	#!/bin/sh
	[ -e "$BATS_TEST_TMPDIR/has-swap" ] && echo "\$1: UUID=\"x\" TYPE=\"swap\""
	exit 0
	EOF
	chmod +x "$FAKE"/*
	mknod "$DEV" b 7 250   # a block node; nothing opens it
	printf '[device]\nservers = tcp://127.0.0.1:1\n' >"$BATS_TEST_TMPDIR/etc/swap1.conf"
	export PATH="$FAKE:$PATH" FARMEM_CONF_DIR="$BATS_TEST_TMPDIR/etc" \
		FARMEM_SWAP_RUN_DIR="$BATS_TEST_TMPDIR/run" FARMEM_PROC_SWAPS="$SWAPS"
	HELPER="$TOP/packaging/farmem-swap"
}

@test "farmem-swap start: module, add, mkswap, swapon; stop: swapoff before del" {
	need_root
	setup_fakes
	run -0 "$HELPER" start swap1
	run -0 cat "$LOG"
	[ "${lines[0]}" = "modprobe ublk_drv" ]
	[ "${lines[1]}" = "farmem-blk add --config $BATS_TEST_TMPDIR/etc/swap1.conf" ]
	[ "${lines[2]}" = "mkswap -L farmem-swap1 $DEV" ]
	[ "${lines[3]}" = "swapon -p 100 -dpages $DEV" ]
	[ "${#lines[@]}" -eq 4 ]
	run -0 "$HELPER" status swap1
	[ "$output" = "swap1: $DEV active swap" ]
	run -0 "$HELPER" start swap1          # already up: nothing more runs
	[ "$(wc -l <"$LOG")" -eq 4 ]
	: >"$LOG"
	run -0 "$HELPER" stop swap1
	run -0 cat "$LOG"
	[ "${lines[0]}" = "swapoff $DEV" ]
	[ "${lines[1]}" = "farmem-blk del $DEV" ]
	[ ! -e "$FARMEM_SWAP_RUN_DIR/swap1" ]
	! grep -q "^$DEV " "$SWAPS"
	run -3 "$HELPER" status swap1
}

@test "farmem-swap: priority and discard from [swap] or the environment; nbd module" {
	need_root
	setup_fakes
	touch "$BATS_TEST_TMPDIR/has-swap"      # signature present: no mkswap
	printf '[device]\nfrontend = nbd\n[swap]\npriority = 5\ndiscard = none\n' \
		>"$BATS_TEST_TMPDIR/etc/swap1.conf"
	run -0 "$HELPER" start swap1
	grep -qx "modprobe nbd" "$LOG"
	grep -qx "swapon -p 5 $DEV" "$LOG"
	! grep -q mkswap "$LOG"
	run -0 "$HELPER" stop swap1
	: >"$LOG"
	FARMEM_SWAP_PRIORITY=-1 run -0 "$HELPER" start swap1
	grep -qx "swapon $DEV" "$LOG"     # -1: the kernel's order, no -p
	run -0 "$HELPER" stop swap1
	FARMEM_SWAP_PRIORITY=40000 run -1 "$HELPER" start swap1
	[[ "$output" == *"swap priority '40000'"* ]]
	FARMEM_SWAP_PRIORITY=010 run -1 "$HELPER" start swap1
	run -1 "$HELPER" start ../passwd
	[[ "$output" == *"bad instance name"* ]]
	run -1 "$HELPER" start .hidden
	run -2 "$HELPER" restart swap1
}

@test "farmem-swap: a failed swapon removes the device again" {
	need_root
	setup_fakes
	touch "$BATS_TEST_TMPDIR/swapon-fails"
	run -1 "$HELPER" start swap1
	grep -qx "farmem-blk del $DEV" "$LOG"
	[ ! -e "$FARMEM_SWAP_RUN_DIR/swap1" ]
	run -0 "$HELPER" stop swap1               # nothing left to stop
	[ "$(grep -c 'farmem-blk del' "$LOG")" -eq 1 ]
}

@test "farmem-swap: swapoff failure keeps the device (no del)" {
	need_root
	setup_fakes
	run -0 "$HELPER" start swap1
	printf '#!/bin/sh\nexit 1\n' >"$FAKE/swapoff"
	run -1 "$HELPER" stop swap1
	[[ "$output" == *"keeping the device"* ]]
	! grep -q "farmem-blk del" "$LOG"
	[ -e "$FARMEM_SWAP_RUN_DIR/swap1" ]
}
