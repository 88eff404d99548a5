/* fuzz: shared harness support. See fuzz.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <lauxlib.h>
#include "fuzz.h"
#include "log.h"
#include "loop.h"
#include "script.h"

static int harness_ref = LUA_NOREF;

#ifdef FUZZ_LIBFUZZER
/* Lua coverage for libFuzzer: clang instruments only the C side, so without
 * this every Lua path looks the same to the fuzzer. A line hook (the JIT is
 * off, so it fires everywhere) counts each (previous line, line) pair in
 * libFuzzer's extra counters, like the edge counters of compiled code. */
#include <lua.h>
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[1 << 16];
static uint32_t lua_prev;

/* Only thorp's own modules count: the lines of a config or policy file the
 * fuzzer wrote are new "coverage" for every new input, which would flood the
 * corpus with inputs that reach nothing new in the loader. */
static int counted(const char *source)
{
    static const char *last;
    static int last_counted;
    if (source != last) {
        last = source;
        last_counted = strstr(source, "thorp/") != NULL;
    }
    return last_counted;
}

static void lua_cov_hook(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar) || !counted(ar->source)) return;
    uint32_t h = (uint32_t)((uintptr_t)ar->source * 2654435761u) ^ (uint32_t)ar->currentline * 40503u;
    uint32_t i = (h ^ (lua_prev >> 1)) & (sizeof lua_edges - 1);
    if (lua_edges[i] != 255) lua_edges[i]++;
    lua_prev = h;
}

static void lua_cov_start(lua_State *L)
{
    luaL_dostring(L, "require('jit').off()");
    lua_sethook(L, lua_cov_hook, LUA_MASKLINE, 0);
}
/* The config loader sets its own (deadline) hook while a file loads, which
 * replaces this one: put it back before every input. */
static void lua_cov_hook_again(lua_State *L)
{
    if (lua_gethook(L) != lua_cov_hook) lua_sethook(L, lua_cov_hook, LUA_MASKLINE, 0);
}
#else
static void lua_cov_start(lua_State *L) { (void)L; }
static void lua_cov_hook_again(lua_State *L) { (void)L; }
#endif

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz %s: ", FUZZ_NAME);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

int fuzz_connect(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd, rc;
    do { /* a signal (libFuzzer's timers) may interrupt connect: start again */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        rc = fd < 0 ? -1 : connect(fd, (struct sockaddr *)&sa, sizeof sa);
        if (rc != 0 && fd >= 0 && errno == EINTR) close(fd);
    } while (rc != 0 && fd >= 0 && errno == EINTR);
    if (fd < 0 || rc != 0) fuzz_fail("connect: %s", strerror(errno));
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

lua_State *fuzz_lua_init(const char *argv0)
{
    log_init();
    thorp_log_set_level(LOG_ERROR);
    if (loop_init() != 0) fuzz_fail("cannot create the loop");
    lua_State *L = script_new(argv0);
    if (!L) fuzz_fail("cannot create the Lua state");
    /* build/fuzz{,-replay}/NAME -> tests/fuzz/NAME.lua */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/../../tests/fuzz/%s.lua", thorp_exe_dir(), FUZZ_NAME);
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, path) != 0 || lua_pcall(L, 0, 1, -2) != 0)
        fuzz_fail("cannot load %s: %s", path, lua_tostring(L, -1));
    if (!lua_istable(L, -1)) fuzz_fail("%s must return a table of functions", path);
    harness_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_cov_start(L);
    return L;
}

int fuzz_lua_call(lua_State *L, const char *fn, const uint8_t *data, size_t size)
{
    lua_settop(L, 0);
    lua_cov_hook_again(L);
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, harness_ref);
    lua_getfield(L, -1, fn);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) fuzz_fail("the harness has no function %s", fn);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 1, 1) != 0) fuzz_fail("%s: %s", fn, lua_tostring(L, -1));
    lua_remove(L, 1);
    return 1;
}
