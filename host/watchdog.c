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
static volatile int wd_on, wd_quit;
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cv = PTHREAD_COND_INITIALIZER;

static void wd_free(void *arg) { (void)arg; watchdog_stop(); }

static void *wd_main(void *arg) {
    uint64_t seen = 0;
    double since = 0, next_report = 0;
    while (!wd_quit) {
        /* sleep 50 ms, or until watchdog_stop() wakes us: exit never waits a tick */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000000L;
        if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
        pthread_mutex_lock(&wd_mu);
        if (!wd_quit) pthread_cond_timedwait(&wd_cv, &wd_mu, &until);
        pthread_mutex_unlock(&wd_mu);
        if (wd_quit) break;
        double now = thorp_now();
        uint64_t seq = thorp_wd.seq;
        if (!thorp_wd.running || seq != seen) {
            seen = seq;
            since = now;
            next_report = thorp_wd.limit_ms;
            continue;
        }
        double ran = now - since;
        if (ran > thorp_wd.longest_ms) thorp_wd.longest_ms = ran;
        if (thorp_wd.exit_after_ms > 0 && ran >= thorp_wd.exit_after_ms) {
            const char *name = thorp_wd.task;
            log_emit(LOG_ERROR, "watchdog", NULL,
                     "task %s has run %.0f ms without yielding (THORP_WATCHDOG_EXIT_MULTIPLE x THORP_WATCHDOG_MS = "
                     "%.0f ms): exiting 1 so the supervisor restarts the host; open trades stay in the journal",
                     name ? name : "(unnamed)", ran, thorp_wd.exit_after_ms);
            fflush(stderr);
            _exit(1);
        }
        if (thorp_wd.limit_ms > 0 && ran >= next_report) {
            const char *name = thorp_wd.task;
            if (next_report == thorp_wd.limit_ms) thorp_wd.stalls++;
            log_emit(LOG_ERROR, "watchdog", NULL,
                     "task %s has run %.0f ms without yielding: the host's loop is stalled "
                     "(LuaJIT cannot pre-empt it; look for a loop without thorp.sleep or an RPC call)",
                     name ? name : "(unnamed)", ran);
            next_report *= 2;
        }
    }
    return NULL;
}

int thorp_watchdog_start(double limit_ms) {
    thorp_wd.limit_ms = limit_ms;
    if (wd_on || limit_ms <= 0) return 0;
    wd_quit = 0;
    if (pthread_create(&wd_thread, NULL, wd_main, NULL) != 0) return -1;
    wd_on = 1;
    loop_on_free(wd_free, NULL);
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
