/* http: the operator HTTP listener (metrics, health, the JSON-RPC front
 * door). Lua half: lib/thorp/http.lua, which routes and answers.
 *
 * A small HTTP/1.1 server on libevent bufferevents (keep-alive, pipelined
 * requests answered in order, Expect: 100-continue, HEAD). It owns the
 * limits, so that no load can take the host's memory or its operator
 * endpoints:
 *   - a body is never read before it is admitted: a Content-Length over
 *     max_body gets 413 and one that would take the bytes held by requests in
 *     flight past the budget gets 503 (Retry-After: 1), both without buffering
 *     the body (it is read and discarded, so the client sees the answer);
 *   - past max_pending front-door requests, new ones get 503; /health, /ready
 *     and /metrics have their own reserved slots and always reach Lua;
 *   - methods other than GET, POST and HEAD get 501; malformed requests 400;
 *     chunked request bodies 501 (send Content-Length).
 * Every reply C sends on its own is counted (thorp_http_refused) so that
 * /metrics shows them with the ones Lua sends.
 *
 * Each admitted request gets an id and is posted to Lua,
 *   loop_post(TEV_HTTP, id, method, body_len, NULL)
 * Lua reads it with thorp_http_request(id) and thorp_http_header(id, name)
 * (valid until the reply) and answers once with thorp_http_reply(id, status,
 * content_type, body, len, extra_headers) (extra_headers: NULL or
 * "Name: value\r\n" lines). A HEAD reply gets the headers (Content-Length of
 * the body it would have had) and no body. Once the reply is written out
 * (or its connection is gone) C posts loop_post(TEV_HTTP, id, HTTP_EV_SENT,
 * 0, NULL), so a draining host exits only after its last answer left. A
 * client that hangs up before the answer is harmless: thorp_http_reply then
 * returns 1 and posts nothing.
 *
 * Hooks for other modules (C): http_set_upgrade_hook(fn) is asked about every
 * GET request carrying an Upgrade header before Lua sees it; when fn returns
 * 1 it has taken the connection's bufferevent (WebSocket), and http.c forgets
 * the connection without freeing it.
 *
 * The JSON spans the front door passes through byte for byte: host/jsonspan.h.
 */
#ifndef THORP_HTTP_H
#define THORP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_PENDING 8192 /* front-door requests being answered */
#define HTTP_OPERATOR_SLOTS 64 /* reserved for /health, /ready, /metrics */
#define HTTP_SLOTS 16384       /* power of two >= the two above */
#define HTTP_DEFAULT_MAX_BODY (4u << 20)
#define HTTP_DEFAULT_BUDGET (64u << 20)

/* ffi:begin */
/* event.a of a TEV_HTTP event: a new request's method, or HTTP_EV_SENT */
enum { HTTP_M_OTHER = 0, HTTP_M_GET = 1, HTTP_M_POST = 2, HTTP_M_HEAD = 3, HTTP_EV_SENT = 16 };
/* routes for the counters of replies C sends itself */
enum { HTTP_R_ROOT = 0, HTTP_R_METRICS = 1, HTTP_R_HEALTH = 2, HTTP_R_READY = 3, HTTP_R_OTHER = 4, HTTP_NROUTES = 5 };

typedef struct thorp_http_req {
    int64_t id;
    int method;
    const char *uri;
    const char *body;
    size_t body_len;
    const char *peer;     /* the client's address */
} thorp_http_req;

/* Listen on host:port (port 0: any free port). Returns the bound port or -1
 * with a message in err. One listener per process. */
int thorp_http_listen(const char *host, int port, size_t max_body, char *err, int errcap);
/* max_body: bytes per request; budget: bytes of bodies held at once; 0 keeps the current value. */
void thorp_http_set_limits(size_t max_body, size_t budget, int max_pending);
/* Close the listener and every connection; pending requests are dropped. */
void thorp_http_stop(void);
const thorp_http_req *thorp_http_request(int64_t id);
/* Value of request header name (case-insensitive), or NULL. */
const char *thorp_http_header(int64_t id, const char *name);
/* 0 being sent (HTTP_EV_SENT follows), 1 the client had gone (dropped), -1 unknown id. */
int thorp_http_reply(int64_t id, int status, const char *content_type, const char *body, size_t len,
                     const char *extra_headers);
int thorp_http_pending(void);
int thorp_http_port(void);
/* Body bytes held by requests now (admitted, not yet answered). */
double thorp_http_inflight_bytes(void);
/* Replies C sent itself (before Lua), by route and status (400, 413, 501, 503). */
double thorp_http_refused(int route, int status);
/* ffi:end */

struct bufferevent;
/* Return 1 to take bev (then it is yours to free), 0 to let Lua answer. */
typedef int (*http_upgrade_fn)(struct bufferevent *bev, const thorp_http_req *req, void *arg);
void http_set_upgrade_hook(http_upgrade_fn fn, void *arg);

#endif
