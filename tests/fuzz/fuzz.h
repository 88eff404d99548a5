/* fuzz: what the libFuzzer harnesses in tests/fuzz/ share.
 *
 * Each target is one file, tests/fuzz/NAME.c (or lua_target.c for targets
 * whose harness is all Lua, tests/fuzz/NAME.lua), built twice by the
 * Makefile:
 *   build/fuzz/NAME         clang -fsanitize=fuzzer,address,undefined (make fuzz)
 *   build/fuzz-replay/NAME  the normal compiler plus replay.c's main(), which
 *                           feeds every file of tests/fuzz/corpus/NAME/ to the
 *                           same LLVMFuzzerTestOneInput (make test), so every
 *                           crash ever found stays a regression test.
 * FUZZ_NAME is the target's name (-DFUZZ_NAME="NAME").
 *
 * fuzz_lua_init() builds the host's Lua state the way ./thorp does (the
 * bytecode linked into the binary; no lib/ next to build/fuzz/) and loads
 * tests/fuzz/NAME.lua, which returns a table of functions; fuzz_lua_call()
 * calls one of them with the input as a Lua string. A Lua error raised by
 * the harness or by the code under test is a finding: it is printed and the
 * process aborts, so libFuzzer records the input.
 */
#ifndef THORP_FUZZ_H
#define THORP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <lua.h>

#ifndef FUZZ_NAME
#error "build with -DFUZZ_NAME=\"target\""
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Loop, log (errors only) and Lua state; the harness table on the registry. */
lua_State *fuzz_lua_init(const char *argv0);
/* harness[fn](input); returns the number of results left on the stack
 * (at most one); aborts on a Lua error. */
int fuzz_lua_call(lua_State *L, const char *fn, const uint8_t *data, size_t size);
/* A non-blocking TCP connection to 127.0.0.1:port (aborts if there is none). */
int fuzz_connect(int port);
/* Print the message and abort (a finding). */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
