# farmem — plain make with pkg-config.  `make` builds both programs,
# `make check` installs missing build/test dependencies, builds and runs
# every test through prove.  V=1 shows full command lines.

CC ?= cc
CFLAGS ?= -O2 -g
PKGS := liburing libibverbs librdmacm libzstd liblz4 libsodium libxxhash json-c
# GnuTLS: its header only; serve dlopen()s the library when TLS is asked
# for (ublk-farmem/frontend/nbd/nbd_tls_lib.h says why).
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) gnutls libcurl 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN := -Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes \
        -Wstrict-prototypes -Wvla -Wpointer-arith
# Quoted includes resolve in the file's own folder, then here: "log.h"
# (common/), "store/store.h" (ublk-farmem/), "memserver/memserver.h".
# tests/layers.sh resolves them the same way.
INCLUDE_DIRS := . common ublk-farmem
override CFLAGS += -std=gnu11 -D_GNU_SOURCE $(WARN) $(addprefix -I,$(INCLUDE_DIRS)) \
        -I/usr/include/iniparser $(PKG_CFLAGS) -MMD -MP
# Boost.Context (fibers' context switch, common/fiber.c says why) from
# its static library: only its assembly objects, no C++ runtime.
override LDLIBS += $(PKG_LIBS) -liniparser -l:libboost_context.a -lpthread -ldl -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

BUILD ?= build
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
override CFLAGS += -DFARMEM_VERSION=\"$(VERSION)\"

COMMON_SRC := $(wildcard common/*.c)
MEMSERVER_SRC := $(wildcard memserver/*.c)
# ublk-farmem/ by layer: store/, frontend/ (and one folder per frontend),
# daemon/, cli/.
BLK_SRC := $(wildcard ublk-farmem/*/*.c ublk-farmem/*/*/*.c)
TOOL_SRC := $(wildcard tests/tools/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
MEMSERVER_OBJ := $(call obj,$(MEMSERVER_SRC))
BLK_OBJ := $(call obj,$(BLK_SRC))
# Everything but main.c, so unit tests can link the real code.
MEMSERVER_LIB_OBJ := $(filter-out %/main.o,$(MEMSERVER_OBJ))
BLK_LIB_OBJ := $(filter-out %/main.o,$(BLK_OBJ))

PROGS := $(BUILD)/farmem-memserver $(BUILD)/farmem-blk
TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(TOOL_SRC))
UNITS := $(patsubst tests/unit/%.c,$(BUILD)/tests/unit/%,$(UNIT_SRC))

.PHONY: all check layers unit integration asan tsan fuzz valgrind clean deps vmcheck rdmacheck \
        swapbench bench demo deb rpm offloadbench
all: $(PROGS) $(TOOLS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) $(CPPFLAGS) -c -o $@ $<

$(BUILD)/libfarmem-common.a: $(COMMON_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/farmem-memserver: $(MEMSERVER_OBJ) $(BUILD)/libfarmem-common.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/farmem-blk: $(BLK_OBJ) $(BUILD)/libfarmem-common.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(BUILD)/libfarmem-common.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# seal-cost measures the store's record format: it links record.o too.
$(BUILD)/tests/tools/seal-cost: $(BUILD)/tests/tools/seal-cost.o \
		$(BUILD)/ublk-farmem/store/record.o $(BUILD)/libfarmem-common.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link the real objects of both programs (minus their main.c).
$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(MEMSERVER_LIB_OBJ) $(BLK_LIB_OBJ) $(BUILD)/libfarmem-common.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	$(Q)tests/deps.sh

unit: $(UNITS)
	prove -f -e '' $(UNITS)

integration: all
	FARMEM_BUILD=$(abspath $(BUILD)) prove -f -e 'bats --tap' tests/integration/*.bats

# No include reaches up a layer (DESIGN.md, "Which way the code depends").
layers:
	$(Q)tests/layers.sh $(INCLUDE_DIRS)

check: deps
	$(Q)tests/layers.sh $(INCLUDE_DIRS)
	$(Q)$(MAKE) --no-print-directory all $(UNITS)
	FARMEM_BUILD=$(abspath $(BUILD)) tests/run-all
	$(Q)tests/fuzz/build.sh --run 10

# ASan+UBSan build in its own directory, running the same tests.
asan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan \
	  CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" all \
	  $(patsubst $(BUILD)/%,build-asan/%,$(UNITS))
	FARMEM_BUILD=$(abspath build-asan) FARMEM_SANITIZED=1 tests/run-all

# ThreadSanitizer build of the C unit tests in its own directory: a race
# report makes its test exit 66, which prove counts as a failure.
# tests/tsan.supp lists the known races still waiting for their fix.
TSAN_UNITS := $(patsubst $(BUILD)/%,build-tsan/%,$(UNITS))
tsan:
	$(Q)$(MAKE) --no-print-directory BUILD=build-tsan \
	  CFLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer" \
	  LDFLAGS="-fsanitize=thread" $(TSAN_UNITS)
	TSAN_OPTIONS="suppressions=$(abspath tests/tsan.supp) second_deadlock_stack=1 \
	  history_size=4 $${TSAN_OPTIONS:-}" prove -f -e '' $(TSAN_UNITS)

valgrind: $(UNITS)
	$(Q)for t in $(UNITS); do \
	  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
	    $$t >$(BUILD)/valgrind.out || { grep -v '^ok ' $(BUILD)/valgrind.out; \
	    echo "valgrind: $$t failed"; exit 1; }; \
	  echo "valgrind clean: $$t"; done

fuzz:
	$(Q)tests/fuzz/build.sh

clean:
	rm -rf build build-asan build-tsan build-fuzz


# Scripts that own these jobs live beside their tests.
vmcheck: deps
	$(Q)$(MAKE) --no-print-directory all
	tests/vm/check

# RDMA over Soft-RoCE in guests: the transport and the memserver in one
# guest, then the swap, kill and fio scenarios between two guests.
rdmacheck: deps
	$(Q)$(MAKE) --no-print-directory all
	tests/vm/rdma-check loop memserver
	tests/vm/rdma-pair

# One guest, the same verified swap workload on zram, kernel nbd (nbdkit
# memory) and farmem: wall times and ratios, nothing judged on speed.
swapbench: deps
	$(Q)$(MAKE) --no-print-directory all
	tests/vm/swapbench

# One guest: redis under farmem-blk offload, none / zram / farmem (issue 13).
offloadbench: deps
	$(Q)$(MAKE) --no-print-directory all
	tests/vm/offloadbench

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	tests/demo.sh

bench: all
	tests/bench/run

deb:
	packaging/build-deb.sh

rpm:
	packaging/build-rpm.sh
include packaging/install.mk
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
