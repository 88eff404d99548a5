/* breaker: circuit breaker state machine. See breaker.h. */
#include "breaker.h"

#include <string.h>

void thorp_breaker_init(thorp_breaker *b) {
    memset(b, 0, sizeof *b);
    b->failure_threshold = 5;
    b->half_open_max_calls = 1;
    b->cooldown_ms = 60000;
    b->max_cooldown_ms = 300000;
    b->jitter = 0.1;
    b->half_open_timeout_ms = 30000;
    b->rate_window_ms = 10000;
    b->rate_min_calls = 20;
    b->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)b;
}

static double rnd(thorp_breaker *b) { /* xorshift64*: uniform in [0, 1) */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return (double)((b->rng * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}

static void open_at(thorp_breaker *b, double now, int reopen) {
    if (b->state != BR_OPEN) b->state_changes++;
    b->trips++;
    b->reopen_count = reopen ? b->reopen_count + 1 : 0;
    double cd = b->cooldown_ms;
    for (int i = 0; i < b->reopen_count && cd < b->max_cooldown_ms; i++) cd *= 2;
    if (cd > b->max_cooldown_ms && b->max_cooldown_ms >= b->cooldown_ms) cd = b->max_cooldown_ms;
    b->current_cooldown_ms = cd;
    /* jitter spreads the retry over [cd, cd * (1 + jitter)]: never early */
    b->open_until = now + cd * (1.0 + (b->jitter > 0 ? b->jitter * rnd(b) : 0));
    b->opened_at = now;
    b->state = BR_OPEN;
    b->half_open_inflight = 0;
    b->consecutive = 0;
}

static void close_now(thorp_breaker *b) {
    if (b->state != BR_CLOSED) b->state_changes++;
    b->state = BR_CLOSED;
    b->consecutive = 0;
    b->half_open_inflight = 0;
    b->reopen_count = 0;
    memset(b->bucket_calls, 0, sizeof b->bucket_calls);
    memset(b->bucket_fail, 0, sizeof b->bucket_fail);
}

int thorp_breaker_state(thorp_breaker *b, double now) {
    if (b->state == BR_OPEN && now >= b->open_until) {
        b->state = BR_HALF_OPEN;
        b->state_changes++;
        b->half_open_inflight = 0;
    } else if (b->state == BR_HALF_OPEN && b->half_open_inflight > 0 &&
               now - b->trial_at >= b->half_open_timeout_ms) {
        open_at(b, now, 1); /* the probe never answered: treat it as failed */
    }
    return b->state;
}

int thorp_breaker_allow(thorp_breaker *b, double now) {
    switch (thorp_breaker_state(b, now)) {
    case BR_CLOSED:
        return 1;
    case BR_HALF_OPEN:
        if (b->half_open_inflight < b->half_open_max_calls) {
            if (b->half_open_inflight++ == 0) b->trial_at = now;
            return 1;
        }
        /* fall through */
    default:
        b->rejected++;
        return 0;
    }
}

static int window_trips(thorp_breaker *b, double now, int failed) {
    if (b->failure_rate <= 0) return 0;
    double width = b->rate_window_ms / BR_BUCKETS;
    int i = (int)((long long)(now / width) % BR_BUCKETS);
    double start = (double)(long long)(now / width) * width;
    if (b->bucket_start[i] != start) { b->bucket_start[i] = start; b->bucket_calls[i] = b->bucket_fail[i] = 0; }
    b->bucket_calls[i]++;
    b->bucket_fail[i] += failed;
    int calls = 0, fails = 0;
    for (int k = 0; k < BR_BUCKETS; k++) {
        if (now - b->bucket_start[k] < b->rate_window_ms) { calls += b->bucket_calls[k]; fails += b->bucket_fail[k]; }
    }
    return calls >= b->rate_min_calls && (double)fails / calls >= b->failure_rate;
}

int thorp_breaker_record(thorp_breaker *b, double now, int outcome) {
    int st = thorp_breaker_state(b, now);
    b->calls++;
    if (outcome == BR_NEUTRAL) {
        b->neutral++;
        if (st == BR_HALF_OPEN && b->half_open_inflight > 0) b->half_open_inflight--;
        return b->state;
    }
    if (outcome == BR_SUCCESS) {
        b->successes++;
        if (st == BR_HALF_OPEN) close_now(b);
        else { b->consecutive = 0; window_trips(b, now, 0); }
        return b->state;
    }
    b->failures++;
    if (st == BR_HALF_OPEN) open_at(b, now, 1);
    else if (st == BR_CLOSED) {
        b->consecutive++;
        int by_rate = window_trips(b, now, 1);
        if (b->consecutive >= b->failure_threshold || by_rate) open_at(b, now, 0);
    }
    return b->state;
}

void thorp_breaker_trip(thorp_breaker *b, double now) { open_at(b, now, 0); }

void thorp_breaker_reset(thorp_breaker *b) { close_now(b); }

double thorp_breaker_retry_in(thorp_breaker *b, double now) {
    return thorp_breaker_state(b, now) == BR_OPEN ? b->open_until - now : 0;
}
