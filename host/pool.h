/* pool: HTTP transport of the RPC pool (libcurl multi driven by libevent).
 *
 * One curl multi handle for the whole host, driven by the loop the way
 * libcurl's hiperfifo example does it: CURLMOPT_SOCKETFUNCTION maps curl's
 * sockets onto libevent events and CURLMOPT_TIMERFUNCTION onto one libevent
 * timer, so there is no polling and no thread per call. The multi handle
 * keeps the connection cache: connections to an endpoint stay open between
 * calls (keep-alive), and HTTP/2 is negotiated where the endpoint offers it
 * (multiplexed streams on one connection).
 *
 * This module only moves bytes. Which endpoint to ask, breakers, retries and
 * JSON live in lib/thorp/rpc.lua. Every request started with
 * thorp_pool_request() produces exactly one TEV_RPC inbox event (id = the
 * request id, ptr = the thorp_http_result), also when it is cancelled; Lua
 * reads the result and frees it with thorp_pool_result_free().
 *
 * What the pool needs to judge an endpoint fairly comes back with the
 * result: `sent` says whether any request byte reached the socket (a submission that was
 * never sent may go elsewhere), and retry_after_ms is Retry-After parsed as
 * delta-seconds or an HTTP-date (RFC 9110), -1 when absent or garbage.
 * Lua bounds the transfers in flight per endpoint to at most
 * thorp_pool_host_limit(), curl's connections per host, so a request is
 * never queued inside curl where its wait would look like the endpoint's
 * slowness (rpc.lua queues the rest itself and starts their clocks when
 * they really leave).
 */
#ifndef THORP_POOL_H
#define THORP_POOL_H

#include <stddef.h>
#include <stdint.h>

/* ffi:begin */
typedef struct thorp_http_result {
    int64_t id;
    int curl_code;        /* 0 = the transfer completed (any HTTP status) */
    int http_status;
    int cancelled;
    int sent;             /* 1 when request bytes were written (the upstream may have it) */
    double retry_after_ms; /* from Retry-After (ms, >= 0), -1 when absent or unparseable */
    double total_ms;       /* curl's total time of the transfer */
    double connect_ms;
    char *body;
    size_t body_len;
    char error[256];      /* curl's message when curl_code != 0 */
} thorp_http_result;

/* Start a POST of body to url; returns its id (> 0) or -1 (error in *err). */
int64_t thorp_pool_request(const char *url, const char *body, size_t len, double timeout_ms,
                           double connect_timeout_ms, char *err, int errlen);
/* The same with the endpoint's own headers: "Name: value" lines separated by '\n' (or NULL). */
int64_t thorp_pool_request_headers(const char *url, const char *body, size_t len, double timeout_ms,
                                   double connect_timeout_ms, const char *headers, char *err, int errlen);
/* Stop a request still in flight; its event still arrives, with cancelled = 1. */
void thorp_pool_cancel(int64_t id);
void thorp_pool_result_free(thorp_http_result *r);
int thorp_pool_inflight(void);
/* Connections curl opens at most per host (bounds an endpoint's max_inflight). */
int thorp_pool_host_limit(void);
/* Retry-After value (text of len bytes) -> ms from now_wall_ms (wall clock, ms
 * since the epoch); -1 when it is neither delta-seconds nor an HTTP-date.
 * Huge values saturate at 1e12 ms; dates in the past give 0. */
double thorp_pool_parse_retry_after(const char *s, size_t len, double now_wall_ms);
/* ffi:end */

/* For host/fetch.c (other HTTP APIs on the same multi and connection cache):
 * the host's CURLM (created on first use; NULL if curl cannot start), and a
 * hook asked about each finished easy handle before the pool's own (it
 * returns 1 when the handle was its own). */
void *pool_multi(void);
void pool_set_foreign_done(int (*fn)(void *easy, int curl_code));
/* Each non-empty line of `lines` ("Name: value\n"...; NULL for none) appended
 * to a curl header list; a line over 8 KiB, or one curl cannot copy, is left
 * out and the list so far kept. */
struct curl_slist *pool_headers_append(struct curl_slist *list, const char *lines);

#endif
