/* script: LuaJIT state, module search path, entry into thorp.cli. */
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>
#include "log.h"
#include "loop.h"
#include "script.h"

#ifndef THORP_VERSION
#define THORP_VERSION "dev"
#endif

static char dev_root[PATH_MAX], exe_dir[PATH_MAX];
static lua_State *script_L;

const char *thorp_dev_root(void) { return dev_root; }
const char *thorp_exe_dir(void) { return exe_dir; }
const char *thorp_version(void) { return THORP_VERSION; }

static void script_find_dev_root(const char *exe_path)
{
    char real[PATH_MAX], probe[PATH_MAX + 32];
    dev_root[0] = 0;
    ssize_t n = readlink("/proc/self/exe", real, sizeof real - 1);
    if (n <= 0) {
        if (!realpath(exe_path, real)) return;
    } else {
        real[n] = 0;
    }
    char *dir = dirname(real);
    snprintf(exe_dir, sizeof exe_dir, "%s", dir);
    if (getenv("THORP_NO_DEV_LIB")) return;
    snprintf(probe, sizeof probe, "%s/lib/thorp/init.lua", dir);
    if (access(probe, R_OK) == 0) snprintf(dev_root, sizeof dev_root, "%s", dir);
}

lua_State *script_new(const char *exe_path)
{
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    luaL_openlibs(L);
    script_find_dev_root(exe_path);
    /* package.path: the dev tree first (so it wins over the preload searcher,
     * which is where LuaJIT finds the embedded bytecode), then the defaults. */
    lua_getglobal(L, "package");
    if (dev_root[0]) {
        lua_getfield(L, -1, "path");
        lua_pushfstring(L, "%s/lib/?.lua;%s/lib/?/init.lua;%s", dev_root, dev_root, lua_tostring(L, -1));
        lua_setfield(L, -3, "path");
        lua_pop(L, 1);
        /* Move the file searcher (index 2) in front of preload (index 1). */
        lua_getfield(L, -1, "loaders");
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        lua_rawseti(L, -3, 1);
        lua_rawseti(L, -2, 2);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    script_L = L;
    return L;
}

static int script_traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

extern char **environ;
const char *thorp_script_env_at(int i)
{
    return environ ? environ[i] : NULL; /* the caller stops at the first NULL */
}

int thorp_script_run_loop(void)
{
    lua_State *L = script_L;
    lua_getglobal(L, "__thorp_step");
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int rc = loop_run(L, ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return rc;
}

int script_main(lua_State *L, int argc, char **argv)
{
    lua_pushcfunction(L, script_traceback);
    int tb = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "thorp.cli");
    if (lua_pcall(L, 1, 1, tb) != 0) {
        fprintf(stderr, "thorp: cannot load its Lua half: %s\n", lua_tostring(L, -1));
        return 1;
    }
    lua_getfield(L, -1, "main");
    lua_newtable(L);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    if (lua_pcall(L, 1, 1, tb) != 0) {
        fprintf(stderr, "thorp: %s\n", lua_tostring(L, -1));
        return 1;
    }
    int rc = (int)lua_tointeger(L, -1);
    lua_settop(L, 0);
    return rc;
}

void script_free(lua_State *L)
{
    if (L) lua_close(L);
    script_L = NULL;
}
