#!/bin/sh
# layers.sh — keep DESIGN.md's arrows pointing down: fail, naming file
# and include, when a source file includes one from a layer above it.
#
#   tests/layers.sh [-C DIR] [INCLUDE_DIR...]      (make layers)
#
# Every #include "..." in common/, memserver/ and ublk-farmem/ is resolved
# as the compiler does: beside the including file first, then in each
# INCLUDE_DIR (relative to DIR, the tree; default this tree) in order.
# Without INCLUDE_DIRs, DIR/Makefile's `INCLUDE_DIRS :=` line gives them.
# An include that resolves to no file in the tree (a system header in
# quotes) is not the tree's business and is skipped.
#
# The rules (a file may include its own layer and those below):
#   ublk-farmem/  cli -> daemon -> frontend -> store
#                 frontend/<x>/ never includes frontend/<y>/ (a frontend
#                 is one folder plus one line in frontend.c's table)
#                 every file sits in one of those folders
#   common/       includes only common/
#   memserver/    and ublk-farmem/ include common/, never each other
#   none of them  includes tests/
# tests/ may include anything and is not checked.
set -eu

usage() {
	sed -n '2,23s/^# \{0,1\}//p' "$0"
}

root=$(cd "$(dirname "$0")/.." && pwd)
while [ $# -gt 0 ]; do
	case $1 in
	-C)
		[ $# -ge 2 ] || { echo "layers: -C needs a directory" >&2; exit 2; }
		root=$(cd "$2" && pwd) || exit 2
		shift 2
		;;
	-h|--help) usage; exit 0 ;;
	-*) echo "layers: unknown option '$1'" >&2; usage >&2; exit 2 ;;
	*) break ;;
	esac
done
cd "$root"
if [ $# -gt 0 ]; then
	dirs="$*"
else
	dirs=$(sed -n 's/^INCLUDE_DIRS[[:space:]]*:=[[:space:]]*//p' Makefile 2>/dev/null | head -n 1)
	[ -n "$dirs" ] || { echo "layers: no INCLUDE_DIRS in $root/Makefile; name them" >&2; exit 2; }
fi

# Path without "./", "a/../" or "//" (the files exist, so no symlink games).
normalize() {
	case $1 in
	*./*|*//*) realpath -m --relative-to=. "$1" ;;
	*) printf '%s\n' "$1" ;;
	esac
}

# The include as the compiler finds it: beside the file, then -I dirs.
resolve() { # FILE INCLUDE
	if [ -f "$(dirname "$1")/$2" ]; then
		normalize "$(dirname "$1")/$2"
		return 0
	fi
	for d in $dirs; do
		if [ -f "$d/$2" ]; then
			normalize "$d/$2"
			return 0
		fi
	done
	return 1
}

# Layer of a path: store, frontend, daemon, cli (ublk-farmem/), common,
# memserver, tests, stray (ublk-farmem/ outside a layer folder), other.
layer() {
	case $1 in
	ublk-farmem/store/*) echo store ;;
	ublk-farmem/frontend/*) echo frontend ;;
	ublk-farmem/daemon/*) echo daemon ;;
	ublk-farmem/cli/*) echo cli ;;
	ublk-farmem/*) echo stray ;;
	common/*) echo common ;;
	memserver/*) echo memserver ;;
	tests/*) echo tests ;;
	*) echo other ;;
	esac
}

rank() {
	case $1 in
	store) echo 1 ;;
	frontend) echo 2 ;;
	daemon) echo 3 ;;
	cli) echo 4 ;;
	*) echo 0 ;;
	esac
}

# frontend/<x>/ of a path, or "" for frontend/'s own files.
frontend_of() {
	case $1 in
	ublk-farmem/frontend/*/*) f=${1#ublk-farmem/frontend/}; echo "${f%%/*}" ;;
	*) echo "" ;;
	esac
}

# Why FILE (layer $3) must not include TARGET (layer $4); "" when it may.
why_not() { # FILE TARGET FROM TO
	from=$3
	to=$4
	case $from/$to in
	*/tests) echo "program code must not include tests/"; return ;;
	common/common|common/other) return ;;
	common/*) echo "common/ knows neither program"; return ;;
	memserver/memserver|memserver/common|memserver/other) return ;;
	memserver/*) echo "memserver/ shares only common/ with ublk-farmem/"; return ;;
	*/memserver) echo "ublk-farmem/ shares only common/ with memserver/"; return ;;
	*/common|*/other) return ;;
	esac
	if [ "$(rank "$to")" -gt "$(rank "$from")" ]; then
		echo "$from must not include $to (a higher layer)"
		return
	fi
	if [ "$from" = frontend ] && [ "$to" = frontend ]; then
		a=$(frontend_of "$1")
		b=$(frontend_of "$2")
		if [ -n "$a" ] && [ -n "$b" ] && [ "$a" != "$b" ]; then
			echo "frontend $a must not include frontend $b"
		fi
	fi
}

bad=0
files=0
checked=0
list=$(find common memserver ublk-farmem -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | LC_ALL=C sort)
for f in $list; do
	files=$((files + 1))
	from=$(layer "$f")
	if [ "$from" = stray ]; then
		echo "layers: $f: not in a layer folder (store/, frontend/, daemon/, cli/)"
		bad=$((bad + 1))
		continue
	fi
	incs=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
	for inc in $incs; do
		target=$(resolve "$f" "$inc") || continue
		checked=$((checked + 1))
		msg=$(why_not "$f" "$target" "$from" "$(layer "$target")")
		if [ -n "$msg" ]; then
			echo "layers: $f: #include \"$inc\" ($target): $msg"
			bad=$((bad + 1))
		fi
	done
done
if [ "$bad" -gt 0 ]; then
	echo "layers: $bad violation(s); see DESIGN.md, \"Which way the code depends\""
	exit 1
fi
echo "layers: ok, $checked includes in $files files point down"
