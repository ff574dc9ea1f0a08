#!/bin/sh
# Install what farmem needs to build and test, on Debian 12, only what is
# missing.  Non-interactive; safe to run again.
set -eu
PKGS="build-essential pkg-config liburing-dev libibverbs-dev librdmacm-dev
 libzstd-dev liblz4-dev libiniparser-dev libsodium-dev libxxhash-dev
 libgnutls28-dev libboost-context-dev libjson-c-dev libcurl4-openssl-dev etcd-server
 etcd-client
 bats nbdkit libnbd-bin fio qemu-utils clang valgrind perl iproute2
 procps util-linux qemu-system-x86 cpio
 debhelper fakeroot lintian rpm systemd curl jq xz-utils libclang-rt-14-dev
 redis-server"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
