#!/bin/sh
# build-rpm.sh — `make rpm`: farmem-memserver and farmem-blk .rpms from
# packaging/farmem.spec, with rpmbuild (on Debian: the `rpm` package).
#
# Makes farmem-VERSION.tar.gz from the working tree, builds in a temporary
# _topdir and collects the .rpms into build/pkg/ (or $FARMEM_PKG_OUT).
# On a Debian builder: build dependencies are Debian packages that rpm
# cannot see (--nodeps; make deps installs them), there is no debugedit
# (no debuginfo package), and the compiler flags come from
# dpkg-buildflags with hardening=+all, as for the .debs, because Debian's
# rpm macros carry no hardening flags.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/packaging/pkg-common.sh"

out=${FARMEM_PKG_OUT:-$top/build/pkg}
pkg_need rpmbuild rpm

version=$(cat "$top/VERSION")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/farmem-rpm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
mkdir -p "$out"
out=$(cd "$out" && pwd)
mkdir -p "$tmp/SOURCES" "$tmp/src"
pkg_copy_source "$top" "$tmp/src/farmem-$version"
tar -C "$tmp/src" -czf "$tmp/SOURCES/farmem-$version.tar.gz" "farmem-$version"

set -- --define "_topdir $tmp" --define "farmem_version $version"
if command -v dpkg-buildflags >/dev/null 2>&1; then
	flags() { DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get "$1"; }
	set -- "$@" --nodeps --define 'debug_package %{nil}' \
		--define "optflags $(flags CPPFLAGS) $(flags CFLAGS)" \
		--define "build_ldflags $(flags LDFLAGS) -Wl,--as-needed"
fi

echo "  RPM     farmem $version (log: $out/rpm-build.log)"
mkdir -p "$out"
pkg_run_logged "$out/rpm-build.log" rpmbuild -bb "$@" "$top/packaging/farmem.spec"

rm -f "$out"/farmem-*.rpm
for p in farmem-memserver farmem-blk; do
	f=$(ls "$tmp"/RPMS/*/"$p-$version"-*.rpm 2>/dev/null | head -n 1)
	[ -n "$f" ] || pkg_die "rpmbuild made no $p package"
	cp "$f" "$out/"
	echo "  PKG     $out/$(basename "$f")"
done
