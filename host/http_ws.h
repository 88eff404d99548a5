/* http_ws: WebSocket on the front door's port (Solana PubSub for clients).
 *
 * @solana/kit's createSolanaRpcSubscriptions and web3.js connect their
 * subscriptions to the same URL as their HTTP calls (ws:// instead of
 * http://). thorp_http_ws_enable() installs host/http.c's upgrade hook: a GET
 * with "Upgrade: websocket" (and the listener's token, if it has one) is
 * answered 101 here and its bufferevent is ours from then on; wslay (server
 * mode) does the framing. Client messages go into host/ws.c's queue
 * (connection ids < 0) and
 * reach Lua in the same batches as upstream messages; lib/thorp/http_ws.lua
 * maps them onto thorp.rpc.subscribe (identical subscriptions of all clients
 * share one upstream subscription) and answers with thorp_http_ws_send().
 * A closed client posts TEV_WS (id = its id < 0, a = THORP_WS_CLOSED).
 */
#ifndef THORP_HTTP_WS_H
#define THORP_HTTP_WS_H

#include <stddef.h>
#include <stdint.h>

/* Close every client connection. */
void http_ws_stop(void);

/* ffi:begin */
/* Take WebSocket upgrades on the HTTP listener; token "" or NULL = none needed,
 * else the upgrade carries "Authorization: Bearer <token>" or "?token=<token>". */
void thorp_http_ws_enable(const char *token);
/* Send one text message to a client; 0, or -1 when it is gone. */
int thorp_http_ws_send(int64_t id, const char *data, size_t len);
void thorp_http_ws_close(int64_t id);
int thorp_http_ws_clients(void);
/* ffi:end */

#endif
