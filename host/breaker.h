/* breaker: the circuit breaker state machine (one per endpoint, or alone).
 *
 * CLOSED lets calls through and counts consecutive failures; at
 * failure_threshold (or when the optional failure-rate window goes over its
 * limit) it trips to OPEN. OPEN refuses calls until its cooldown, with
 * jitter so that many breakers do not retry in the same instant, has
 * passed; it then reads HALF_OPEN even if nobody called in between.
 * HALF_OPEN lets half_open_max_calls trial calls through: a success closes
 * it, a failure re-opens it with a longer cooldown (doubling, capped at
 * max_cooldown_ms) so an endpoint that keeps failing is probed less and
 * less often. A trial whose outcome never comes back counts as a failure
 * after half_open_timeout_ms, so a hung probe cannot wedge the breaker.
 *
 * The struct is plain data shared with Lua through the FFI: the hot
 * operations (allow, record) are exported C functions that LuaJIT compiles
 * into its traces. Times are monotonic milliseconds passed by the caller.
 *
 *   thorp_breaker b; thorp_breaker_init(&b);  b.failure_threshold = 3;
 *   if (thorp_breaker_allow(&b, now)) { ... thorp_breaker_record(&b, now, BR_SUCCESS); }
 */
#ifndef THORP_BREAKER_H
#define THORP_BREAKER_H

#include <stdint.h>

/* ffi:begin */
enum { BR_CLOSED = 0, BR_OPEN = 1, BR_HALF_OPEN = 2 };
enum { BR_SUCCESS = 0, BR_FAILURE = 1, BR_NEUTRAL = 2 };
enum { BR_BUCKETS = 10 };

typedef struct thorp_breaker {
    /* settings */
    int failure_threshold, half_open_max_calls, rate_min_calls;
    double cooldown_ms, max_cooldown_ms, jitter, half_open_timeout_ms;
    double failure_rate, rate_window_ms; /* failure_rate 0 = window off */
    /* state */
    int state, consecutive, half_open_inflight, reopen_count;
    double opened_at, open_until, current_cooldown_ms, trial_at;
    uint64_t rng;
    /* failure-rate window: BR_BUCKETS buckets of rate_window_ms/BR_BUCKETS */
    double bucket_start[BR_BUCKETS];
    int bucket_calls[BR_BUCKETS], bucket_fail[BR_BUCKETS];
    /* counters */
    double calls, successes, failures, neutral, rejected, trips, state_changes;
} thorp_breaker;

void thorp_breaker_init(thorp_breaker *b);
/* 1 when a call may proceed (takes a trial slot when HALF_OPEN), 0 if not. */
int thorp_breaker_allow(thorp_breaker *b, double now);
/* Record the outcome of an allowed call; returns the state after it. */
int thorp_breaker_record(thorp_breaker *b, double now, int outcome);
/* Current state, applying time-based transitions (OPEN -> HALF_OPEN). */
int thorp_breaker_state(thorp_breaker *b, double now);
void thorp_breaker_trip(thorp_breaker *b, double now);
void thorp_breaker_reset(thorp_breaker *b);
/* Milliseconds until an OPEN breaker admits a probe (0 when not OPEN). */
double thorp_breaker_retry_in(thorp_breaker *b, double now);
/* ffi:end */

#endif
