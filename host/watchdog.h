/* watchdog: reports a Lua task that runs too long without yielding.
 *
 * LuaJIT cannot be pre-empted: Debian's build ignores count hooks inside
 * compiled code, so a handler stuck in a loop stalls the whole host and
 * nothing inside the Lua state can stop it. The watchdog is a separate
 * thread that watches from outside. The scheduler marks every resume in a
 * shared struct (two plain stores: no clock read on the hot path):
 *
 *   thorp_wd.task = t.name; thorp_wd.seq++; thorp_wd.running = 1; resume...; thorp_wd.running = 0
 *
 * Every 50 ms the thread looks: if the same resume has been running for
 * longer than the limit it logs the task's name and how long it has run,
 * again at 2x, 4x, ... the limit, and counts a stall. With exit_after_ms
 * set (THORP_WATCHDOG_EXIT_MULTIPLE x the limit) a task still running at
 * that point ends the process with exit code 1: a host whose loop is frozen
 * for good can do nothing useful, its supervisor restarts it, and the
 * journal (every trade committed before register returned) carries the
 * open trades to the next run.
 *
 * Loads: a config or policy file runs with a deadline (thorp.config's
 * run_bounded, a count hook). Code stuck in C (a pattern match that never
 * ends, a blocking read) never reaches the hook, and a load at start runs
 * before the loop takes signals, so the load also arms a guard here:
 * watchdog_guard(file, at_ms, code) makes the thread log the file and end
 * the process with `code` once thorp_now() passes at_ms (2 at start or in
 * `thorp check`; 1 on a reload: the supervisor restarts the host and the
 * journal keeps the trades). watchdog_guard(NULL, 0, 0) disarms it. The
 * thread starts if it is not running yet.
 *
 * Threads: the scheduler's stores stay plain (FFI field stores, no call on
 * every resume); the thread reads with relaxed atomic loads and writes only
 * stalls and longest_ms, with relaxed atomic stores (watchdog.c says why
 * that is enough). C code that stands in for the scheduler (the unit tests)
 * stores with __atomic_store_n(..., __ATOMIC_RELAXED), the same instruction,
 * so ThreadSanitizer sees both sides (make tsan).
 */
#ifndef THORP_WATCHDOG_H
#define THORP_WATCHDOG_H

#include <stdint.h>

/* ffi:begin */
typedef struct thorp_watchdog {
    const char *volatile task; /* name of the running task (a Lua string, never moved) */
    volatile uint64_t seq;     /* incremented on every resume */
    volatile int running;      /* 1 while a task runs */
    volatile double limit_ms;  /* report after this long; 0 = off */
    volatile uint64_t stalls;  /* stalls reported so far */
    volatile double longest_ms;
    volatile double exit_after_ms; /* exit(1) once one resume runs this long; 0 = never */
} thorp_watchdog;

extern thorp_watchdog thorp_wd;

/* Start the thread (idempotent). */
int thorp_watchdog_start(double limit_ms);
/* Arm (file != NULL) or disarm the load guard; 0, or -1 if the thread cannot start. */
int thorp_watchdog_guard(const char *file, double at_ms, int code);
/* ffi:end */
void watchdog_stop(void);

#endif
