#!/bin/sh
# build-deb.sh — `make deb`: the farmem-memserver and farmem-blk .debs.
#
# Copies the source into a temporary directory, puts packaging/debian at
# its top as debian/, runs dpkg-buildpackage -us -uc -b there (dh with
# hardening=+all, see packaging/debian/rules) and collects the .debs (and
# the -dbgsym .ddebs) into build/pkg/ (or $FARMEM_PKG_OUT).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/packaging/pkg-common.sh"

out=${FARMEM_PKG_OUT:-$top/build/pkg}
pkg_need dpkg-buildpackage dpkg-dev
pkg_need dh debhelper
pkg_need fakeroot fakeroot

version=$(cat "$top/VERSION")
chver=$(dpkg-parsechangelog -l "$top/packaging/debian/changelog" -S Version)
[ "$version" = "$chver" ] ||
	pkg_die "VERSION is $version but packaging/debian/changelog is at $chver; add a changelog entry"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/farmem-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
mkdir -p "$out"
out=$(cd "$out" && pwd)
src=$tmp/farmem-$version
pkg_copy_source "$top" "$src"
cp -a "$top/packaging/debian" "$src/debian"

echo "  DEB     farmem $version (log: $out/deb-build.log)"
jobs=$(nproc 2>/dev/null || echo 1)
cd "$src"
pkg_run_logged "$out/deb-build.log" dpkg-buildpackage -us -uc -b -j"$jobs"

rm -f "$out"/farmem-*.deb "$out"/farmem-*.ddeb
for p in farmem-memserver farmem-blk; do
	ls "$tmp/${p}_$version"_*.deb >/dev/null 2>&1 ||
		pkg_die "dpkg-buildpackage made no $p package"
done
for f in "$tmp"/*.deb "$tmp"/*.ddeb; do
	[ -e "$f" ] || continue
	cp "$f" "$out/"
	echo "  PKG     $out/$(basename "$f")"
done
