/* C unit test of the C/Lua boundary (thorp.cdef, generated from the
 * ffi:begin/end blocks of the host headers). The declarations are the same text on
 * both sides, so what can still differ is what the two compilers make of it:
 * this test loads thorp.cdef into a LuaJIT state and compares every struct's
 * size and field offsets with the C compiler's, and includes libc's headers
 * before sys.h so a prototype there that disagrees with libc fails to build. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <lauxlib.h>
#include <lualib.h>
#include "admission.h"
#include "breaker.h"
#include "http.h"
#include "journal.h"
#include "json.h"
#include "loop.h"
#include "pool.h"
#include "solana.h"
#include "sys.h"
#include "watchdog.h"

_Static_assert(SYS_EEXIST == EEXIST, "sys.h's SYS_EEXIST must equal <errno.h>'s EEXIST");

static int passed, failed;
#define CHECK(cond, name) do { if (cond) { passed++; printf("ok   - %s\n", name); } \
    else { failed++; printf("FAIL - %s (%s:%d)\n", name, __FILE__, __LINE__); } } while (0)

static lua_State *L;

/* Evaluate a Lua expression that yields a number (with ffi in scope). */
static double lua_num(const char *expr)
{
    char chunk[512];
    snprintf(chunk, sizeof chunk, "local ffi = require 'ffi'; require 'thorp.cdef'; return %s", expr);
    if (luaL_dostring(L, chunk) != 0) {
        printf("# lua error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : -1;
    lua_pop(L, 1);
    return v;
}

#define SIZE(T) do { \
    CHECK(lua_num("ffi.sizeof('" #T "')") == (double)sizeof(T), "sizeof(" #T ") is the same in Lua"); } while (0)
#define OFF(T, f) do { \
    CHECK(lua_num("ffi.offsetof('" #T "', '" #f "')") == (double)offsetof(T, f), \
          "offsetof(" #T ", " #f ") is the same in Lua"); } while (0)

int main(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    CHECK(lua_num("1") == 1, "thorp.cdef loads (every ffi block parses)");

    SIZE(thorp_event); OFF(thorp_event, id); OFF(thorp_event, num); OFF(thorp_event, ptr);
    SIZE(thorp_watchdog); OFF(thorp_watchdog, seq); OFF(thorp_watchdog, longest_ms);
    SIZE(thorp_admit); OFF(thorp_admit, load); OFF(thorp_admit, crit_peak); OFF(thorp_admit, by_reason);
    SIZE(thorp_breaker); OFF(thorp_breaker, rng); OFF(thorp_breaker, bucket_fail); OFF(thorp_breaker, state_changes);
    SIZE(thorp_http_req); OFF(thorp_http_req, body_len);
    SIZE(thorp_http_result); OFF(thorp_http_result, body); OFF(thorp_http_result, error);
    SIZE(thorp_journal_row); OFF(thorp_journal_row, started_at); OFF(thorp_journal_row, ended_at);
    SIZE(sol_tx); OFF(sol_tx, msg); OFF(sol_msg, ix); OFF(sol_msg, lookups); SIZE(sol_cix); SIZE(sol_cacct);
    SIZE(thorp_json_node); OFF(thorp_json_node, v); SIZE(thorp_json_doc); OFF(thorp_json_doc, err);

    CHECK(lua_num("ffi.C.BR_BUCKETS") == BR_BUCKETS, "array sizes given by enums reach Lua");
    CHECK(lua_num("ffi.sizeof(ffi.new('thorp_admit').by_reason)")
          == sizeof(((thorp_admit *)0)->by_reason), "thorp_admit.by_reason has ADM_RESULTS slots in Lua");

    lua_close(L);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
