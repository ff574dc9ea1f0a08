#!/usr/bin/env bats
# tests/layers.sh (make layers): the tree passes, and a copy of it with a
# bad include injected fails, naming the file and the include.

TOP=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
LAYERS="$TOP/tests/layers.sh"

setup() {
	COPY="$BATS_TEST_TMPDIR/tree"
	mkdir -p "$COPY"
	cp -r "$TOP/Makefile" "$TOP/common" "$TOP/memserver" "$TOP/ublk-farmem" "$COPY/"
}

# inject FILE INCLUDE: put #include "INCLUDE" at the top of FILE in the copy.
inject() {
	sed -i "1i #include \"$2\"" "$COPY/$1"
}

@test "the tree's includes point down" {
	run "$LAYERS"
	[ "$status" -eq 0 ]
	[[ "$output" == "layers: ok, "* ]]
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 0 ]
}

@test "store including the daemon fails, naming file and include" {
	inject ublk-farmem/store/store.c daemon/daemon.h
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 1 ]
	[[ "$output" == *'ublk-farmem/store/store.c: #include "daemon/daemon.h" (ublk-farmem/daemon/daemon.h): store must not include daemon'* ]]
	[[ "$output" == *"1 violation(s)"* ]]
}

@test "every upward arrow fails: frontend, daemon, common, memserver, tests" {
	inject ublk-farmem/frontend/ublk/ublk_queue.c daemon/daemon.h
	inject ublk-farmem/daemon/daemon_run.c cli/blk_config.h
	inject ublk-farmem/frontend/nbd/nbd_kernel.c frontend/ublk/ublk.h
	inject common/log.c store/store.h
	inject memserver/pool.c ../ublk-farmem/store/store.h
	inject ublk-farmem/store/record.c memserver/memserver.h
	mkdir -p "$COPY/tests/unit" && cp "$TOP/tests/unit/tap.h" "$COPY/tests/unit/"
	inject ublk-farmem/cli/main.c tests/unit/tap.h
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 1 ]
	[[ "$output" == *'ublk_queue.c: #include "daemon/daemon.h"'*'frontend must not include daemon'* ]]
	[[ "$output" == *'daemon_run.c: #include "cli/blk_config.h"'*'daemon must not include cli'* ]]
	[[ "$output" == *'nbd_kernel.c: #include "frontend/ublk/ublk.h"'*'frontend nbd must not include frontend ublk'* ]]
	[[ "$output" == *'common/log.c: #include "store/store.h"'*'common/ knows neither program'* ]]
	[[ "$output" == *'memserver/pool.c: #include "../ublk-farmem/store/store.h" (ublk-farmem/store/store.h)'* ]]
	[[ "$output" == *'record.c: #include "memserver/memserver.h"'*'ublk-farmem/ shares only common/'* ]]
	[[ "$output" == *'main.c: #include "tests/unit/tap.h"'*'program code must not include tests/'* ]]
	[[ "$output" == *"7 violation(s)"* ]]
}

@test "includes resolve beside the file first, not by name" {
	# store/ gets its own cli.h: "cli.h" from store.c is that file, not
	# cli/cli.h, so there is nothing to report.
	cp "$COPY/ublk-farmem/cli/cli.h" "$COPY/ublk-farmem/store/cli.h"
	inject ublk-farmem/store/store.c cli.h
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 0 ]
	# From daemon/, "cli.h" resolves nowhere (no -I dir holds it): it
	# would not compile, and it is no arrow either.
	inject ublk-farmem/daemon/daemon.c cli.h
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 0 ]
	# Only the Makefile's -I dirs count: without ublk-farmem, "cli/cli.h"
	# resolves nowhere.
	inject ublk-farmem/store/store.c cli/cli.h
	run "$LAYERS" -C "$COPY" . common
	[ "$status" -eq 0 ]
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 1 ]
	[[ "$output" == *'store.c: #include "cli/cli.h" (ublk-farmem/cli/cli.h): store must not include cli'* ]]
}

@test "a file outside the layer folders fails" {
	touch "$COPY/ublk-farmem/stray.c"
	run "$LAYERS" -C "$COPY"
	[ "$status" -eq 1 ]
	[[ "$output" == *"ublk-farmem/stray.c: not in a layer folder"* ]]
}
