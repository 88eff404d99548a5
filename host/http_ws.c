/* http_ws: the front door's WebSocket side. See http_ws.h. */
#include "http_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>
#include "loop.h"
#include "ws.h"

#define CLIENT_MAX_BEHIND (16u << 20) /* a client this far behind is dropped (as Agave does) */
#define CLIENT_MAX_MESSAGE (1u << 20)

typedef struct client {
    int64_t id; /* < 0 */
    struct evhttp_connection *evcon;
    struct bufferevent *bev;
    wslay_event_context_ptr ws;
    int closed;
    struct client *next;
} client;

static struct {
    client *clients;
    int64_t seq;
    int n;
} W;

static client *find(int64_t id) {
    for (client *c = W.clients; c; c = c->next)
        if (c->id == id) return c;
    return NULL;
}

static void client_free(client *c, int notify) {
    client **pp = &W.clients;
    while (*pp && *pp != c) pp = &(*pp)->next;
    if (*pp) *pp = c->next;
    W.n--;
    if (c->ws) wslay_event_context_free(c->ws);
    /* off the loop while the socket is still open (evhttp closes it first, then frees the bufferevent) */
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    evhttp_connection_free(c->evcon); /* frees the bufferevent (and the upgraded request) */
    if (notify) loop_post(TEV_WS, c->id, THORP_WS_CLOSED, 0, NULL);
    free(c);
}

static ssize_t c_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    client *c = user;
    int n = evbuffer_remove(bufferevent_get_input(c->bev), buf, len);
    if (n <= 0) { wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK); return -1; }
    return n;
}

static ssize_t c_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    client *c = user;
    if (bufferevent_write(c->bev, data, len) != 0) { wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE); return -1; }
    return (ssize_t)len;
}

static void c_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user) {
    client *c = user;
    if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME)
        ws_queue_push(c->id, arg->msg, arg->msg_length, thorp_now());
}

static const struct wslay_event_callbacks c_callbacks = { c_recv, c_send, NULL, NULL, NULL, NULL, c_msg };

/* 0 fine, -1 the client went or is to be dropped */
static int pump(client *c) {
    if (wslay_event_want_write(c->ws) && wslay_event_send(c->ws) != 0) return -1;
    if (!wslay_event_want_read(c->ws) && !wslay_event_want_write(c->ws)) return -1;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > CLIENT_MAX_BEHIND) return -1;
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg) {
    client *c = arg;
    if (wslay_event_recv(c->ws) != 0 || pump(c) != 0) client_free(c, 1);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) client_free(arg, 1);
}

int http_ws_upgrade(struct evhttp_request *req) {
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *up = evhttp_find_header(in, "Upgrade");
    if (!up || strcasecmp(up, "websocket") != 0) return 0;
    const char *key = evhttp_find_header(in, "Sec-WebSocket-Key");
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (!key || strlen(key) > 64 || evhttp_request_get_command(req) != EVHTTP_REQ_GET || !evcon) {
        evhttp_send_error(req, 400, "bad WebSocket upgrade (GET with Sec-WebSocket-Key expected)");
        return 1;
    }
    client *c = calloc(1, sizeof *c);
    if (!c || wslay_event_context_server_init(&c->ws, &c_callbacks, c) != 0) {
        free(c);
        evhttp_send_error(req, 503, "out of memory");
        return 1;
    }
    wslay_event_config_set_max_recv_msg_length(c->ws, CLIENT_MAX_MESSAGE);
    char cat[128], acc[64];
    unsigned char d[SHA_DIGEST_LENGTH];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    SHA1((const unsigned char *)cat, strlen(cat), d);
    EVP_EncodeBlock((unsigned char *)acc, d, sizeof d);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Upgrade", "websocket");
    evhttp_add_header(out, "Connection", "Upgrade");
    evhttp_add_header(out, "Sec-WebSocket-Accept", acc);
    evhttp_send_reply_start(req, 101, "Switching Protocols");
    /* from here the bytes are ours: evhttp keeps the connection (freed with it) but no longer reads it */
    c->evcon = evcon;
    c->bev = evhttp_connection_get_bufferevent(evcon);
    c->id = -(++W.seq);
    c->next = W.clients;
    W.clients = c;
    W.n++;
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) on_read(c->bev, c);
    return 1;
}

void http_ws_stop(void) {
    while (W.clients) client_free(W.clients, 0);
}

int thorp_http_ws_send(int64_t id, const char *data, size_t len) {
    client *c = find(id);
    if (!c) return -1;
    struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)data, len };
    if (wslay_event_queue_msg(c->ws, &m) != 0 || pump(c) != 0) {
        client_free(c, 1);
        return -1;
    }
    return 0;
}

void thorp_http_ws_close(int64_t id) {
    client *c = find(id);
    if (!c) return;
    wslay_event_queue_close(c->ws, WSLAY_CODE_GOING_AWAY, NULL, 0);
    wslay_event_send(c->ws);
    client_free(c, 1);
}

int thorp_http_ws_clients(void) { return W.n; }
