/* http_ws: WebSocket on the front door's port (Solana PubSub for clients).
 *
 * @solana/kit's createSolanaRpcSubscriptions and web3.js connect their
 * subscriptions to the same URL as their HTTP calls (ws:// instead of
 * http://). host/http.c hands every request carrying "Upgrade: websocket" to
 * http_ws_upgrade(), which answers 101 through evhttp and then takes the
 * connection's bufferevent over: wslay (server mode) does the framing from
 * there. Client messages go into host/ws.c's queue (connection ids < 0) and
 * reach Lua in the same batches as upstream messages; lib/thorp/http_ws.lua
 * maps them onto thorp.rpc.subscribe (identical subscriptions of all clients
 * share one upstream subscription) and answers with thorp_http_ws_send().
 * A closed client posts TEV_WS (id = its id < 0, a = THORP_WS_CLOSED).
 */
#ifndef THORP_HTTP_WS_H
#define THORP_HTTP_WS_H

#include <stddef.h>
#include <stdint.h>

struct evhttp_request;
/* 1 = the request was a WebSocket upgrade and is taken (answered), 0 = not one. */
int http_ws_upgrade(struct evhttp_request *req);
/* Close every client connection (before evhttp_free). */
void http_ws_stop(void);

/* ffi:begin */
/* Send one text message to a client; 0, or -1 when it is gone. */
int thorp_http_ws_send(int64_t id, const char *data, size_t len);
void thorp_http_ws_close(int64_t id);
int thorp_http_ws_clients(void);
/* ffi:end */

#endif
