/* http: the operator HTTP listener (metrics, health, the JSON-RPC front
 * door). Lua half: lib/thorp/http.lua, which routes and answers.
 *
 * An evhttp server on the loop's base. C only moves bytes: each complete
 * request gets an id and is posted to Lua,
 *   loop_post(TEV_HTTP, id, method, body_len, NULL)
 * Lua reads it with thorp_http_request(id) (valid until the reply) and
 * answers once with thorp_http_reply(id, status, content_type, body, len,
 * header_name, header_value) (the extra header may be NULL). Once the reply
 * is written out (or its connection is gone) C posts
 *   loop_post(TEV_HTTP, id, HTTP_EV_SENT, 0, NULL)
 * so that a draining host exits only after its last answer left. A client
 * that hangs up before the answer is harmless: nothing crashes or leaks (the
 * reply is dropped; thorp_http_reply returns 1 when that is known at once,
 * and then posts nothing). Bodies over max_body get
 * 413 from libevent; past HTTP_MAX_PENDING unanswered requests new ones get
 * 503 without reaching Lua.
 * The JSON span scanner the front door uses lives in jsonspan.h.
 */
#ifndef THORP_HTTP_H
#define THORP_HTTP_H

#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_PENDING 8192
#define HTTP_DEFAULT_MAX_BODY (4u << 20)

/* ffi:begin */
/* event.a of a TEV_HTTP event: a new request's method, or HTTP_EV_SENT */
enum { HTTP_M_OTHER = 0, HTTP_M_GET = 1, HTTP_M_POST = 2, HTTP_M_HEAD = 3, HTTP_EV_SENT = 16 };

typedef struct thorp_http_req {
    int64_t id;
    int method;
    const char *uri;
    const char *body;
    size_t body_len;
} thorp_http_req;

/* Listen on host:port (port 0: any free port). Returns the bound port or -1
 * with a message in err. One listener per process. */
int thorp_http_listen(const char *host, int port, size_t max_body, char *err, int errcap);
/* Close the listener and every connection; pending requests are dropped. */
void thorp_http_stop(void);
const thorp_http_req *thorp_http_request(int64_t id);
/* 0 being sent (HTTP_EV_SENT follows), 1 the client had gone (dropped), -1 unknown id. */
int thorp_http_reply(int64_t id, int status, const char *content_type, const char *body, size_t len,
                     const char *hname, const char *hvalue);
int thorp_http_pending(void);
int thorp_http_port(void);

/* ffi:end */

#endif
