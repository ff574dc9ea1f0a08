# pkg-common.sh — shared by build-deb.sh and build-rpm.sh (sourced).

# The source a package is built from: what the Makefile needs for the two
# programs and `make install`, taken from the working tree (so a package
# can be built before a commit), never build outputs or VCS data.
PKG_SOURCE_PATHS="Makefile VERSION README.md common memserver ublk-farmem conf packaging"

pkg_die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# pkg_need CMD PACKAGE...: fail with the Debian package to install.
pkg_need() {
	cmd=$1
	shift
	command -v "$cmd" >/dev/null 2>&1 ||
		pkg_die "needs $cmd (apt-get install $*, or make deps)"
}

# pkg_copy_source TOP DEST
pkg_copy_source() {
	mkdir -p "$2"
	paths=""
	for p in $PKG_SOURCE_PATHS; do
		[ -e "$1/$p" ] && paths="$paths $p"
	done
	# shellcheck disable=SC2086
	tar -C "$1" --exclude='*.o' --exclude='*.d' -cf - $paths | tar -C "$2" -xf -
}

# pkg_run_logged LOG CMD...: run CMD with its output in LOG (its tail is
# shown when it fails).  CMD runs in its own process group, which a
# signal to this script ends too: a build killed by a test's timeout must
# not go on compiling in the background.
pkg_run_logged() {
	log=$1
	shift
	setsid "$@" >"$log" 2>&1 &
	pkg_child=$!
	trap 'kill -TERM -- "-$pkg_child" 2>/dev/null; exit 130' INT TERM HUP
	if ! wait "$pkg_child"; then
		tail -n 60 "$log" >&2
		pkg_die "failed: $* (full log: $log)"
	fi
	trap - INT TERM HUP
}
