/* ws: WebSocket client connections for subscriptions (wslay over libevent).
 *
 * Solana's PubSub is JSON-RPC over WebSocket. libcurl 7.88 has no WebSocket
 * and Debian's libwebsockets cannot join an external loop, so this module
 * does it with the host's own pieces: a libevent bufferevent (plain, or
 * bufferevent_openssl for wss with SNI and host-name verification), evdns
 * for asynchronous name resolution, the HTTP/1.1 upgrade done here (the
 * Sec-WebSocket-Accept answer is checked), and wslay's frame layer for the
 * framing (masking); the message layer is here (fragments reassembled,
 * pings answered, a maximum message size), because wslay's event layer
 * checks the UTF-8 of every text message byte by byte.
 *
 * One connection per endpoint carries all its subscriptions; which
 * subscriptions live where is lib/thorp/ws.lua's business. C never calls Lua
 * per frame: every complete text message goes into one C-side queue (the
 * bytes in an arena, NUL-terminated) and the first message of a batch posts
 * one TEV_WS inbox event (a = THORP_WS_MESSAGES). Lua drains the queue with
 * thorp_ws_drain() and reads each payload through the FFI; the pointers stay
 * valid until a drain finds the queue empty. Connection changes post TEV_WS
 * with a = THORP_WS_OPEN or THORP_WS_CLOSED (id = the connection); the reason
 * of a close is in thorp_ws_info().error until Lua calls thorp_ws_free().
 *
 * Liveness: a ping goes out when nothing arrived for ping_interval_ms, and a
 * connection on which nothing at all (not even a pong) arrived for
 * idle_timeout_ms is closed as dead, whatever TCP says.
 */
#ifndef THORP_WS_H
#define THORP_WS_H

#include <stddef.h>
#include <stdint.h>

/* ffi:begin */
enum { THORP_WS_OPEN = 1, THORP_WS_CLOSED = 2, THORP_WS_MESSAGES = 3 };
enum { THORP_WS_CONNECTING = 1, THORP_WS_UP = 2, THORP_WS_DOWN = 3 };

typedef struct thorp_ws_msg {
    int64_t conn;      /* connection id */
    int64_t sub;       /* params.subscription of a notification, -1 for anything else */
    const char *data;  /* the message, NUL-terminated */
    size_t len;
    double t_rx;       /* thorp_now() when its bytes were read */
    /* A notification's params.result value is data[res_off, +res_len) when it
     * has the usual layout (result first, subscription last), so Lua decodes
     * only that; res_len 0 if not. */
    size_t res_off, res_len;
} thorp_ws_msg;

typedef struct thorp_ws_info {
    int state;         /* THORP_WS_CONNECTING, _UP or _DOWN */
    int http_status;   /* the upgrade's answer (101), 0 before it */
    int close_code;    /* WebSocket close code sent or received, 0 if none */
    double bytes_in, bytes_out, messages, pings, pongs;
    double started_at, opened_at, last_rx;   /* thorp_now() ms; 0 = not yet */
    char error[256];   /* why it is down (no URL secrets: host and port only) */
} thorp_ws_info;

/* Open a connection to a ws:// or wss:// URL; returns its id (> 0), or -1
 * with the reason in err. ca_file NULL or "" = the system's trust store.
 * max_message: larger messages close the connection with an error.
 * headers: "Name: value" lines separated by \n sent on the upgrade (an
 * endpoint's config `headers`), or NULL. */
int64_t thorp_ws_open(const char *url, double connect_timeout_ms, double ping_interval_ms,
                      double idle_timeout_ms, double max_message, const char *ca_file,
                      const char *headers, char *err, int errlen);
/* Send one text message; 0, or -1 when the connection is not up. */
int thorp_ws_send(int64_t id, const char *data, size_t len);
/* Close now (reason kept in info.error); a THORP_WS_CLOSED event follows. */
void thorp_ws_close(int64_t id, const char *reason);
/* Forget a connection (closes it first if needed; no event follows). */
void thorp_ws_free(int64_t id);
int thorp_ws_info_get(int64_t id, thorp_ws_info *out);
int thorp_ws_drain(thorp_ws_msg *out, int max);
/* 52-bit hash of a message with its "subscription" number left out: the same
 * notification from two endpoints hashes the same (redundant delivery). */
double thorp_ws_hash(const char *data, size_t len);
/* 52-bit hash of len bytes, 8 at a time (a notification's params.result span). */
double thorp_ws_hash_bytes(const char *data, size_t len);
/* Test hook: drop a connection's socket without a close frame (like a reset). */
void thorp_ws_test_reset(int64_t id);
/* ffi:end */

/* For host/http_ws.c (the front door's WebSocket side): queue a message from
 * one of its client connections (conn_id < 0) for the same batched drain. */
void ws_queue_push(int64_t conn_id, const uint8_t *data, size_t len, double t_rx);

#endif
