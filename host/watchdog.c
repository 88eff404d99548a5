/* watchdog: a thread that reports stuck Lua tasks. See watchdog.h. */
#include "watchdog.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include "log.h"
#include "loop.h"

thorp_watchdog thorp_wd;

static pthread_t wd_thread;
static int wd_on;   /* loop thread only */
static int wd_quit; /* under wd_mu */
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv = PTHREAD_COND_INITIALIZER;
/* the load guard (watchdog_guard), under wd_mu */
static char guard_file[512];
static double guard_at, guard_since;
static int guard_code;

/* The loop thread writes thorp_wd with plain stores (LuaJIT FFI stores, on
 * the scheduler's hot path); this thread reads it with relaxed atomic loads
 * and writes its own two fields with relaxed atomic stores. On the targets
 * thorp runs on (x86-64, arm64) an aligned store of up to 8 bytes is a
 * single-copy atomic access, which is what a relaxed atomic store compiles
 * to, so neither side can see a torn value; the compiler cannot cache or
 * split the loads here. No ordering is needed: a report may be one tick
 * late, never wrong about which resume it is about (seq is checked again
 * after the name is read). */
#define LOAD(field) __atomic_load_n(&thorp_wd.field, __ATOMIC_RELAXED)
static double load_double(volatile double *p) { double v; __atomic_load(p, &v, __ATOMIC_RELAXED); return v; }
static void store_double(volatile double *p, double v) { __atomic_store(p, &v, __ATOMIC_RELAXED); }

static void wd_free(void *arg) { (void)arg; watchdog_stop(); }

/* Copy the running task's name, or return 0 if that resume ended meanwhile
 * (the name is a Lua string owned by the task: only while the same resume
 * still runs is it known to be alive). */
static int running_name(uint64_t seq, char *out, size_t cap)
{
    const char *p = LOAD(task);
    size_t i = 0;
    if (p)
        for (; i + 1 < cap && p[i]; i++) out[i] = p[i];
    out[i] = 0;
    if (!p) snprintf(out, cap, "(unnamed)");
    return LOAD(seq) == seq && LOAD(running);
}

static void *wd_main(void *arg) {
    uint64_t seen = 0;
    double since = 0, next_report = 0;
    pthread_mutex_lock(&wd_mu);
    while (!wd_quit) {
        /* sleep 50 ms, or until watchdog_stop() wakes us: exit never waits a tick */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&wd_cv, &wd_mu, &until);
        if (wd_quit) break;
        if (guard_at > 0 && thorp_now() >= guard_at) {
            log_emit(LOG_ERROR, "watchdog", NULL,
                     "%s: still running %.0f ms after it began loading, past its deadline (THORP_LOAD_TIMEOUT_MS) "
                     "and grace; stuck where the deadline cannot stop it: %s",
                     guard_file, thorp_now() - guard_since,
                     guard_code == 1 ? "exiting 1 so the supervisor restarts the host; open trades stay in the journal"
                                     : "exiting 2");
            fflush(stderr);
            _exit(guard_code);
        }
        pthread_mutex_unlock(&wd_mu);
        double now = thorp_now(), limit = load_double(&thorp_wd.limit_ms);
        uint64_t seq = LOAD(seq);
        if (!LOAD(running) || seq != seen) {
            seen = seq;
            since = now;
            next_report = limit;
        } else {
            double ran = now - since;
            if (ran > load_double(&thorp_wd.longest_ms)) store_double(&thorp_wd.longest_ms, ran);
            char name[128];
            double exit_after = load_double(&thorp_wd.exit_after_ms);
            if (exit_after > 0 && ran >= exit_after && running_name(seq, name, sizeof name)) {
                log_emit(LOG_ERROR, "watchdog", NULL,
                         "task %s has run %.0f ms without yielding (THORP_WATCHDOG_EXIT_MULTIPLE x THORP_WATCHDOG_MS "
                         "= %.0f ms): exiting 1 so the supervisor restarts the host; open trades stay in the journal",
                         name, ran, exit_after);
                fflush(stderr);
                _exit(1);
            }
            if (limit > 0 && ran >= next_report && running_name(seq, name, sizeof name)) {
                if (next_report == limit) __atomic_store_n(&thorp_wd.stalls, LOAD(stalls) + 1, __ATOMIC_RELAXED);
                log_emit(LOG_ERROR, "watchdog", NULL,
                         "task %s has run %.0f ms without yielding: the host's loop is stalled "
                         "(LuaJIT cannot pre-empt it; look for a loop without thorp.sleep or an RPC call)",
                         name, ran);
                next_report *= 2;
            }
        }
        pthread_mutex_lock(&wd_mu);
    }
    pthread_mutex_unlock(&wd_mu);
    return NULL;
}

static int start_thread(void) {
    wd_quit = 0; /* the thread is not running: no lock needed */
    if (pthread_create(&wd_thread, NULL, wd_main, NULL) != 0) return -1;
    wd_on = 1;
    loop_on_free(wd_free, NULL);
    return 0;
}

int thorp_watchdog_start(double limit_ms) {
    store_double(&thorp_wd.limit_ms, limit_ms);
    if (wd_on || limit_ms <= 0) return 0;
    return start_thread();
}

int thorp_watchdog_guard(const char *file, double at_ms, int code) {
    if (file && !wd_on && start_thread() != 0) return -1;
    if (!wd_on) return 0;
    pthread_mutex_lock(&wd_mu);
    if (file) {
        snprintf(guard_file, sizeof guard_file, "%s", file);
        guard_at = at_ms;
        guard_since = thorp_now();
        guard_code = code;
    } else {
        guard_at = 0;
    }
    pthread_mutex_unlock(&wd_mu);
    return 0;
}

void watchdog_stop(void) {
    if (!wd_on) return;
    pthread_mutex_lock(&wd_mu);
    wd_quit = 1;
    pthread_cond_signal(&wd_cv);
    pthread_mutex_unlock(&wd_mu);
    pthread_join(wd_thread, NULL);
    wd_on = 0;
}
