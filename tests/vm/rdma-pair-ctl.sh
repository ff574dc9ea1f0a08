#!/bin/sh
# The memserver guest's control handler (tests/vm/rdma-pair-server.sh runs
# it under `nc -l -e`, so stdin and stdout are the connection): one
# command line in, one reply line out, as tests/vm/host-control.pl.
#   ping -> pong;  kill9 I -> ok;  alive I -> yes|no;  done -> ok
# `rdma-pair-ctl.sh alive-check I` answers by exit status instead.

# alive I: memserver I's process exists and is not a zombie.
alive() {
	local pid state
	pid=$(cat "/tmp/ms$1.pid" 2>/dev/null) || return 1
	state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
	[ -n "$state" ] && [ "$state" != Z ]
}

if [ "${1:-}" = alive-check ]; then
	alive "$2"
	exit
fi

read -r cmd arg
case $arg in *[!0-9]*) arg= ;; esac
case $cmd in
ping) echo pong ;;
kill9)
	if [ -z "$arg" ] || [ ! -f "/tmp/ms$arg.pid" ]; then
		echo "error no such memserver"
	elif kill -9 "$(cat "/tmp/ms$arg.pid")"; then
		echo "$arg" >> /tmp/killed
		echo "pair-ctl: kill -9 memserver $arg" > /dev/console
		echo ok
	else
		echo "error kill failed"
	fi ;;
alive)
	if [ -z "$arg" ] || [ ! -f "/tmp/ms$arg.pid" ]; then
		echo "error no such memserver"
	elif alive "$arg"; then
		echo yes
	else
		echo no
	fi ;;
done) touch /tmp/pair-done; echo ok ;;
*) echo "error unknown command" ;;
esac
