/* script: the host's LuaJIT state.
 *
 * Creates the one lua_State, opens the standard libraries, and installs the
 * module searcher: lib/thorp/X.lua next to the executable (the development
 * tree) wins over the bytecode linked into the binary (luaJIT_BC_thorp_X,
 * found by LuaJIT's own preload searcher), so ./thorp runs from any
 * directory and a developer's edits take effect without a rebuild.
 *
 * Then it hands argv to require("thorp.cli").main, which owns the command
 * line, and drives the loop with the scheduler's step function.
 */
#ifndef THORP_SCRIPT_H
#define THORP_SCRIPT_H

#include <lua.h>

lua_State *script_new(const char *exe_path);
int script_main(lua_State *L, int argc, char **argv);
void script_free(lua_State *L);

/* ffi:begin */
/* The directory that holds lib/thorp when running from a source tree, or ""
 * when only the embedded bytecode is available. */
const char *thorp_dev_root(void);
const char *thorp_version(void);
/* The directory of the running executable (installed layout: PREFIX/bin). */
const char *thorp_exe_dir(void);
/* Register the scheduler's step function (top of stack) and run the loop. */
int thorp_script_run_loop(void);
/* The i-th "NAME=value" of the process environment (0-based), NULL past the end:
 * config checks every THORP_* name against the known settings. */
const char *thorp_script_env_at(int i);
/* ffi:end */

#endif
