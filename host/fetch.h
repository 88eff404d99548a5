/* fetch: any HTTP request (any method, headers, body, timeout, redirects
 * off by default) on the host's curl multi, for thorp.fetch (quotes,
 * webhooks, alerts, admin APIs). Lua half: lib/thorp/fetch.lua.
 *
 * It shares host/pool.c's curl multi handle and connection cache (pool.c
 * drives the sockets and hands back the easy handles that are ours through
 * pool_set_foreign_done), so a fetch costs no thread and no extra loop.
 * thorp_fetch_start() returns an id; exactly one TEV_FETCH inbox event
 * follows (id, ptr = the thorp_fetch_result), also after thorp_fetch_cancel;
 * Lua reads the result and frees it with thorp_fetch_result_free().
 */
#ifndef THORP_FETCH_H
#define THORP_FETCH_H

#include <stddef.h>
#include <stdint.h>

/* ffi:begin */
enum { TEV_FETCH = 17 };

typedef struct thorp_fetch_result {
    int64_t id;
    int curl_code;      /* 0: an answer came (any HTTP status) */
    int http_status;
    int cancelled;
    int redirects;
    double total_ms;
    char *body;
    size_t body_len;
    char *headers;      /* header lines of the last answer, "\r\n"-separated */
    size_t headers_len;
    char error[256];    /* curl's message when curl_code != 0 */
} thorp_fetch_result;

/* headers: NULL or "Name: value\n" lines. body: NULL for none. follow: 0 or
 * the most redirects to follow. Returns the id (> 0) or -1 (message in err). */
int64_t thorp_fetch_start(const char *url, const char *method, const char *headers, const char *body, size_t len,
                          double timeout_ms, int follow, double max_body, char *err, int errlen);
void thorp_fetch_cancel(int64_t id);
void thorp_fetch_result_free(thorp_fetch_result *r);
int thorp_fetch_inflight(void);
/* ffi:end */

#endif
