# thorp: build, test, demo, bench.
#   make          build ./thorp (and the simulator build/thorp-sim)
#   make test     deps, build, C unit tests, busted specs in the host, process tests
#   make asan     ./thorp-asan with -fsanitize=address,undefined
#   make demo     run the example handler against the bundled simulator
#   make bench    benchmarks (figures printed, never asserted)
#   make deps     install missing Debian packages (no-op when all present)

CC      ?= cc
PKGS    := luajit libevent libcurl sqlite3 libedit
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Ihost
LDFLAGS += -Wl,-E
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -ldl -pthread
LUAJIT  ?= luajit
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)

SRC     := $(wildcard host/*.c)
OBJ     := $(SRC:host/%.c=build/%.o)
LUASRC  := $(wildcard lib/thorp/*.lua)
LUAOBJ  := $(LUASRC:lib/thorp/%.lua=build/lua/%.o) build/lua/cdef.o
HDRS    := $(wildcard host/*.h)
ASANOBJ := $(SRC:host/%.c=build/asan/%.o)
SIMSRC  := $(wildcard tests/sim/*.c)
CTESTS  := $(wildcard tests/c/test_*.c)
CTESTBIN:= $(CTESTS:tests/c/%.c=build/ctest/%)
# C unit tests link every host module except main.c
LIBOBJ  := $(filter-out build/main.o,$(OBJ))

.PHONY: all deps test test-c test-lua test-proc asan test-asan demo bench clean install lint

all: thorp build/thorp-sim

deps:
	@scripts/install-deps

build/%.o: host/%.c $(wildcard host/*.h) | build
	$(CC) $(CFLAGS) -DTHORP_VERSION='"$(VERSION)"' -c -o $@ $<

build/asan/%.o: host/%.c $(wildcard host/*.h) | build/asan
	$(CC) $(CFLAGS) -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -DTHORP_VERSION='"$(VERSION)"' -c -o $@ $<

# lib/thorp/X.lua is module thorp.X (init.lua is module thorp itself)
build/lua/%.o: lib/thorp/%.lua | build/lua
	$(LUAJIT) -b -g -n $(if $(filter init,$*),thorp,thorp.$*) $< $@

# thorp.cdef: the FFI declarations, generated from the ffi:begin/end blocks of the headers
build/gen/cdef.lua: scripts/gen-cdef $(HDRS) | build
	@mkdir -p build/gen
	scripts/gen-cdef host/loop.h $(HDRS) > $@.tmp && mv $@.tmp $@
build/lua/cdef.o: build/gen/cdef.lua | build/lua
	$(LUAJIT) -b -g -n thorp.cdef $< $@

thorp: $(OBJ) $(LUAOBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

thorp-asan: $(ASANOBJ) $(LUAOBJ)
	$(CC) $(LDFLAGS) -fsanitize=address,undefined -o $@ $^ $(LDLIBS)

build/thorp-sim: $(SIMSRC) tests/sim/sim.h | build
	$(CC) $(CFLAGS) -o $@ $(SIMSRC) -levent -lsodium -lm

build/ctest/%: tests/c/%.c $(LIBOBJ) $(LUAOBJ) | build/ctest
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

build:
	@mkdir -p build/lua build/asan build/ctest
build/lua build/asan build/ctest: | build
	@mkdir -p $@

asan: thorp-asan build/thorp-sim

test: deps all $(CTESTBIN)
	@scripts/run-tests ./thorp

test-asan: deps asan
	@ASAN_OPTIONS=detect_leaks=0 scripts/run-tests ./thorp-asan

demo: deps all
	@scripts/demo

bench: deps all
	@scripts/bench

lint:
	luacheck lib policies examples tests

PREFIX ?= /usr/local
install: thorp
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/thorp
	install -m 0755 thorp $(DESTDIR)$(PREFIX)/bin/thorp
	cp -r policies examples $(DESTDIR)$(PREFIX)/share/thorp/

clean:
	rm -rf build thorp thorp-asan
