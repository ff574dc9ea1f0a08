#!/bin/sh
# build.sh — build the libFuzzer targets into build-fuzz/ and, with
# --run SECONDS, run each one for that long from its corpus.
#
#   tests/fuzz/build.sh               build only (make fuzz)
#   tests/fuzz/build.sh --run 30      build, then a bounded run of each target
#
# Targets: fuzz_frame (every wire decoder in common/protocol.c),
# fuzz_session (the memserver's request handling), fuzz_keyfile (the
# client key file parser, common/keyfile.c), fuzz_record (stored
# records as a donor returns them, plain and sealed) and fuzz_chan (the
# tag after each frame, memserver/session_chan.c) and fuzz_psk (serve's
# TLS pre-shared key file).  Exits 0 with a
# "skip" line when clang or its fuzzer runtime is missing; non-zero when
# a target crashes (the input is kept as build-fuzz/<target>-crash-*).
set -eu
cd "$(dirname "$0")/../.."

CC=${FUZZ_CC:-clang}
OUT=${FUZZ_OUT:-build-fuzz}
RUN=""

usage() {
	sed -n '2,11s/^# \{0,1\}//p' "$0"
}

while [ $# -gt 0 ]; do
	case $1 in
	--run)
		[ $# -ge 2 ] || { echo "fuzz: --run needs SECONDS" >&2; exit 2; }
		case $2 in ''|*[!0-9]*) echo "fuzz: --run '$2': not a number of seconds" >&2; exit 2;; esac
		RUN=$2
		shift 2
		;;
	-h|--help) usage; exit 0 ;;
	*) echo "fuzz: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
	esac
done

if ! command -v "$CC" >/dev/null 2>&1; then
	echo "fuzz: skip: $CC is not installed"
	exit 0
fi
mkdir -p "$OUT"
probe="$OUT/probe"
if ! printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' |
	"$CC" -x c -fsanitize=fuzzer,address - -o "$probe" 2>/dev/null; then
	echo "fuzz: skip: $CC has no libFuzzer runtime (-fsanitize=fuzzer)"
	exit 0
fi
rm -f "$probe"

FLAGS="-g -O1 -std=gnu11 -D_GNU_SOURCE -I. -Icommon -I/usr/include/iniparser
 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
 $(pkg-config --cflags libsodium)"
SODIUM=$(pkg-config --libs libsodium)

echo "  FUZZ    $OUT/fuzz_frame"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/fuzz_frame" tests/fuzz/fuzz_frame.c common/protocol.c
echo "  FUZZ    $OUT/fuzz_session"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/fuzz_session" tests/fuzz/fuzz_session.c \
	memserver/session.c memserver/segtab.c memserver/devtab.c \
	memserver/shrink.c memserver/pressure.c common/proc_text.c \
	memserver/quota.c common/parse.c \
	memserver/buf.c common/protocol.c common/auth.c common/chan.c common/log.c common/clock.c $SODIUM
echo "  FUZZ    $OUT/fuzz_keyfile"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/fuzz_keyfile" tests/fuzz/fuzz_keyfile.c \
	common/keyfile.c common/protocol.c common/auth.c common/parse.c common/log.c common/clock.c $SODIUM

echo "  FUZZ    $OUT/fuzz_record"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/fuzz_record" tests/fuzz/fuzz_record.c \
	ublk-farmem/store/record.c common/checksum.c $SODIUM $(pkg-config --libs libxxhash)
echo "  FUZZ    $OUT/fuzz_chan"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/fuzz_chan" tests/fuzz/fuzz_chan.c memserver/session_chan.c \
	memserver/session.c memserver/segtab.c memserver/devtab.c \
	memserver/shrink.c memserver/pressure.c common/proc_text.c \
	memserver/quota.c common/parse.c \
	memserver/buf.c common/protocol.c common/auth.c common/chan.c common/log.c common/clock.c $SODIUM
echo "  FUZZ    $OUT/fuzz_psk"
# shellcheck disable=SC2086
"$CC" $FLAGS -o "$OUT/fuzz_psk" tests/fuzz/fuzz_psk.c \
	ublk-farmem/frontend/nbd/nbd_psk.c common/parse.c common/log.c common/clock.c $SODIUM

# Seeds: valid frames, so short runs start past the magic number.
mkdir -p "$OUT/corpus/fuzz_frame" "$OUT/corpus/fuzz_session" "$OUT/corpus/fuzz_keyfile" \
	"$OUT/corpus/fuzz_record" "$OUT/corpus/fuzz_chan" "$OUT/corpus/fuzz_psk"
printf 'alice:000102030405060708090a0b0c0d0e0f\n# a comment\nbob:%064d\n' 0 \
	> "$OUT/corpus/fuzz_psk/two-users"
"$CC" -O1 -std=gnu11 -I. -Icommon -o "$OUT/make_seeds" \
	tests/fuzz/make_seeds.c common/protocol.c
"$OUT/make_seeds" "$OUT/corpus/fuzz_frame" "$OUT/corpus/fuzz_session" \
	"$OUT/corpus/fuzz_keyfile" "$OUT/corpus/fuzz_chan"

[ -n "$RUN" ] || exit 0
rc=0
for t in fuzz_frame fuzz_session fuzz_keyfile fuzz_record fuzz_chan fuzz_psk; do
	echo "fuzz: $t for ${RUN}s"
	if ! "$OUT/$t" -max_total_time="$RUN" -max_len=8192 -rss_limit_mb=2048 \
		-timeout=10 -print_final_stats=1 \
		-artifact_prefix="$OUT/$t-" "$OUT/corpus/$t" >"$OUT/$t.log" 2>&1; then
		echo "fuzz: $t FAILED; see $OUT/$t.log:"
		tail -n 40 "$OUT/$t.log"
		rc=1
	else
		grep -E '^stat::number_of_executed_units' "$OUT/$t.log" |
			sed "s/^/fuzz: $t /" || true
	fi
done
exit $rc
