# thorp: build, test, demo, bench.
#   make          build ./thorp (and the simulator build/thorp-sim)
#   make test     deps, build, C unit tests, busted specs in the host, process tests
#   make asan     ./thorp-asan with -fsanitize=address,undefined (findings abort)
#   make test-asan  the suite on ./thorp-asan, LeakSanitizer on
#   make tsan     the C unit tests under ThreadSanitizer
#   make fuzz     libFuzzer targets in tests/fuzz/, FUZZ_SECONDS each (default 60)
#   make soak     scripts/soak: SOAK_SECONDS (default 600) of the example under load
#   make demo     run the example handler against the bundled simulator
#   make bench    benchmarks (figures printed, never asserted)
#   make stress   the RPC fault cascade, 20 rounds (failed critical calls per round)
#   make deps     install missing Debian packages (no-op when all present)

CC      ?= cc
PKGS    := luajit libevent libevent_openssl openssl libcurl sqlite3 libedit libsodium
# wslay (libwslay-dev) ships no pkg-config file
WSLAY   := -lwslay
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Ihost
LDFLAGS += -Wl,-E
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(WSLAY) -lm -ldl -pthread
LUAJIT  ?= luajit
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

SRC     := $(wildcard host/*.c)
OBJ     := $(SRC:host/%.c=build/%.o)
LUASRC  := $(wildcard lib/thorp/*.lua lib/thorp/*/*.lua)
LUAOBJ  := $(LUASRC:lib/thorp/%.lua=build/lua/%.o) build/lua/cdef.o
HDRS    := $(wildcard host/*.h)
ASANOBJ := $(SRC:host/%.c=build/asan/%.o)
SIMSRC  := $(wildcard tests/sim/*.c)
CTESTS  := $(wildcard tests/c/test_*.c)
CTESTBIN:= $(CTESTS:tests/c/%.c=build/ctest/%)
# C unit tests link every host module except main.c
LIBOBJ  := $(filter-out build/main.o,$(OBJ))

.PHONY: all deps test test-c test-lua test-proc asan test-asan demo bench clean install lint fuzz fuzz-build tsan soak soak-valgrind stress

# Fuzzing (tests/fuzz/, see tests/fuzz/fuzz.h): each target NAME is
# tests/fuzz/NAME.c, or lua_target.c + tests/fuzz/NAME.lua, built with clang's
# libFuzzer (build/fuzz/NAME) and, for make test, plainly with a main() that
# replays tests/fuzz/corpus/NAME/ (build/fuzz-replay/NAME).
# UBSan findings abort (by default UBSan prints and goes on, so CI passed)
ASAN_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CC      ?= clang-14
# ThreadSanitizer build of the C unit tests (the watchdog thread shares state with the loop)
TSAN_CC      ?= clang-14
TSANOBJ      := $(filter-out build/tsan/obj/main.o,$(SRC:host/%.c=build/tsan/obj/%.o))
FUZZ_SAN     := $(ASAN_SAN) -fno-omit-frame-pointer
FUZZ_TARGETS ?= $(notdir $(wildcard tests/fuzz/corpus/*))
FUZZOBJ      := $(filter-out build/fuzz/obj/main.o,$(SRC:host/%.c=build/fuzz/obj/%.o))
FUZZ_SRC      = $(if $(wildcard tests/fuzz/$(1).c),tests/fuzz/$(1).c,tests/fuzz/lua_target.c)

all: thorp build/thorp-sim

deps:
	@scripts/install-deps

build/%.o: host/%.c $(wildcard host/*.h) | build
	$(CC) $(CFLAGS) -DTHORP_VERSION='"$(VERSION)"' -c -o $@ $<

build/asan/%.o: host/%.c $(wildcard host/*.h) | build/asan
	$(CC) $(CFLAGS) -O1 -fno-omit-frame-pointer $(ASAN_SAN) -DTHORP_VERSION='"$(VERSION)"' -c -o $@ $<

# lib/thorp/X.lua is module thorp.X (init.lua is module thorp itself), lib/thorp/D/X.lua thorp.D.X
build/lua/%.o: lib/thorp/%.lua | build/lua
	@mkdir -p $(dir $@)
	$(LUAJIT) -b -g -n $(if $(filter init,$*),thorp,thorp.$(subst /,.,$*)) $< $@

# thorp.cdef: the FFI declarations, generated from the ffi:begin/end blocks of the headers
build/gen/cdef.lua: scripts/gen-cdef $(HDRS) | build
	@mkdir -p build/gen
	scripts/gen-cdef host/loop.h $(HDRS) > $@.tmp && mv $@.tmp $@
build/lua/cdef.o: build/gen/cdef.lua | build/lua
	$(LUAJIT) -b -g -n thorp.cdef $< $@

thorp: $(OBJ) $(LUAOBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

thorp-asan: $(ASANOBJ) $(LUAOBJ)
	$(CC) $(LDFLAGS) $(ASAN_SAN) -o $@ $^ $(LDLIBS)

build/fuzz/obj/%.o: host/%.c $(wildcard host/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CFLAGS) -O1 -fsanitize=fuzzer-no-link $(FUZZ_SAN) -DTHORP_VERSION='"$(VERSION)"' -c -o $@ $<

build/tsan/obj/%.o: host/%.c $(wildcard host/*.h)
	@mkdir -p $(@D)
	$(TSAN_CC) $(CFLAGS) -O1 -fsanitize=thread -DTHORP_VERSION='"$(VERSION)"' -c -o $@ $<

build/tsan/test_%: tests/c/test_%.c $(TSANOBJ) $(LUAOBJ)
	$(TSAN_CC) $(CFLAGS) -O1 -fsanitize=thread $(LDFLAGS) -o $@ $^ $(LDLIBS)

.PRECIOUS: build/fuzz/obj/%.o build/tsan/obj/%.o
.SECONDEXPANSION:
build/fuzz/%: $$(call FUZZ_SRC,$$*) tests/fuzz/fuzz.c tests/fuzz/fuzz.h $(FUZZOBJ) $(LUAOBJ)
	$(FUZZ_CC) $(CFLAGS) -O1 -Itests/fuzz -DFUZZ_NAME='"$*"' -DFUZZ_LIBFUZZER -fsanitize=fuzzer $(FUZZ_SAN) $(LDFLAGS) -o $@ \
	  $(call FUZZ_SRC,$*) tests/fuzz/fuzz.c $(FUZZOBJ) $(LUAOBJ) $(LDLIBS)

build/fuzz-replay/%: $$(call FUZZ_SRC,$$*) tests/fuzz/fuzz.c tests/fuzz/replay.c tests/fuzz/fuzz.h $(LIBOBJ) $(LUAOBJ)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests/fuzz -DFUZZ_NAME='"$*"' $(LDFLAGS) -o $@ \
	  $(call FUZZ_SRC,$*) tests/fuzz/fuzz.c tests/fuzz/replay.c $(LIBOBJ) $(LUAOBJ) $(LDLIBS)

build/thorp-sim: $(SIMSRC) $(wildcard tests/sim/*.h) host/solana.c host/solana.h | build
	$(CC) $(CFLAGS) -o $@ $(SIMSRC) host/solana.c -levent -lcrypto $(WSLAY) -lsodium -lm

build/ctest/%: tests/c/%.c $(LIBOBJ) $(LUAOBJ) | build/ctest
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

build:
	@mkdir -p build/lua build/asan build/ctest
build/lua build/asan build/ctest: | build
	@mkdir -p $@

asan: thorp-asan build/thorp-sim

test: deps all $(CTESTBIN) $(FUZZ_TARGETS:%=build/fuzz-replay/%)
	@scripts/run-tests ./thorp

test-asan: deps asan
	@scripts/run-tests ./thorp-asan

tsan: $(CTESTS:tests/c/%.c=build/tsan/%)
	@rc=0; for t in $^; do echo "== $$t"; TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 $$TSAN_OPTIONS" $$t || rc=1; done; exit $$rc

# FUZZ_SECONDS per target (default 60), FUZZ_TARGETS="a b" to pick some
fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/%)
fuzz: deps fuzz-build
	@tests/fuzz/run $(FUZZ_TARGETS)

# SOAK_SECONDS (default 600); make soak-valgrind: 60 s under valgrind
soak: deps all
	@scripts/soak
soak-valgrind: deps all
	@scripts/soak --valgrind

demo: deps all
	@scripts/demo

bench: deps all
	@scripts/bench

stress: all
	@scripts/stress

lint:
	luacheck lib policies examples tests

PREFIX ?= /usr/local
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
THORP_BIN ?= thorp
SIM_BIN ?= build/thorp-sim
# make install: the binary (the Lua half is linked in), the simulator, the
# default policies and examples, the docs, and the systemd unit with its
# paths pointing at PREFIX. THORP_BIN / SIM_BIN install other builds.
install: $(THORP_BIN) $(SIM_BIN)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/thorp $(DESTDIR)$(PREFIX)/share/doc/thorp \
	  $(DESTDIR)$(SYSTEMD_UNIT_DIR)
	install -m 0755 $(THORP_BIN) $(DESTDIR)$(PREFIX)/bin/thorp
	install -m 0755 $(SIM_BIN) $(DESTDIR)$(PREFIX)/bin/thorp-sim
	cp -r policies examples $(DESTDIR)$(PREFIX)/share/thorp/
	install -m 0644 README.md docs/*.md $(DESTDIR)$(PREFIX)/share/doc/thorp/
	sed 's|/usr/local|$(PREFIX)|g' deploy/thorp.service > $(DESTDIR)$(SYSTEMD_UNIT_DIR)/thorp.service
	chmod 0644 $(DESTDIR)$(SYSTEMD_UNIT_DIR)/thorp.service

clean:
	rm -rf build thorp thorp-asan
