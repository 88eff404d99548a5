/* C unit tests of the watchdog thread (watchdog.c) and of what it shares
 * with the loop thread: thorp_wd and the logger. Built and run under
 * ThreadSanitizer by `make tsan`, so a data race between the two threads
 * fails it. The scheduler's side (lib/thorp/sched.lua) is played here with
 * relaxed atomic stores, the instruction LuaJIT's plain FFI stores compile to. */
#include <stdio.h>
#include <string.h>
#include "log.h"
#include "loop.h"
#include "watchdog.h"

static int passed, failed;
#define CHECK(cond, name) do { if (cond) { passed++; printf("ok   - %s\n", name); } \
    else { failed++; printf("FAIL - %s (%s:%d)\n", name, __FILE__, __LINE__); } } while (0)

#define STORE(field, v) __atomic_store_n(&thorp_wd.field, (v), __ATOMIC_RELAXED)
#define LOAD(field) __atomic_load_n(&thorp_wd.field, __ATOMIC_RELAXED)

static void resume_begin(const char *name)
{
    STORE(task, name);
    STORE(seq, LOAD(seq) + 1);
    STORE(running, 1);
}
static void resume_end(void) { STORE(running, 0); }

static double longest(void) { double v; __atomic_load(&thorp_wd.longest_ms, &v, __ATOMIC_RELAXED); return v; }

static void spin(double ms) { double until = thorp_now() + ms; while (thorp_now() < until) {} }

int main(void)
{
    log_init();
    loop_init();
    CHECK(thorp_watchdog_start(100) == 0, "the watchdog starts");

    /* one resume that never yields, while the loop thread keeps registering
     * secrets (the logger's list is shared with the reporting thread) */
    char name[] = "stuck_handler";
    resume_begin(name);
    /* run until the thread has seen it stall and measured 3x the limit (or 10 s) */
    double deadline = thorp_now() + 10000;
    int added = 0;
    while (thorp_now() < deadline && !(LOAD(stalls) >= 1 && longest() >= 300)) {
        char secret[32];
        snprintf(secret, sizeof secret, "secret-%06d", added++ % 500);
        thorp_log_secret_add(secret);
    }
    resume_end();
    CHECK(LOAD(stalls) == 1, "a task running past the limit counts one stall, however long it runs");
    CHECK(longest() >= 300, "the longest run is measured while the task runs");

    /* many short resumes: each under the limit, so no new stall */
    double until = thorp_now() + 300;
    while (thorp_now() < until) {
        resume_begin("quick");
        spin(1);
        resume_end();
    }
    CHECK(LOAD(stalls) == 1, "short resumes, however many, are no stall");

    loop_free(); /* stops and joins the watchdog thread (loop_on_free) */
    log_free();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
