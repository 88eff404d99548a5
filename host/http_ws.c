/* http_ws: the front door's WebSocket side. See http_ws.h. */
#include "http_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>
#include "http.h"
#include "loop.h"
#include "ws.h"

#define CLIENT_MAX_BEHIND (16u << 20) /* a client this far behind is dropped (as Agave does) */
#define CLIENT_MAX_MESSAGE (1u << 20)

typedef struct client {
    int64_t id; /* < 0 */
    struct bufferevent *bev;
    wslay_event_context_ptr ws;
    int closed;
    struct client *next;
} client;

static struct {
    client *clients;
    int64_t seq;
    int n, registered;
    char token[256]; /* the listener's token: the upgrade must carry it too */
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
    bufferevent_free(c->bev); /* frees the bufferevent (and the upgraded request) */
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

static void refuse_flushed(struct bufferevent *bev, void *arg) {
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) bufferevent_free(bev);
}

/* Answer status and close (the bufferevent is ours). */
static int refuse(struct bufferevent *bev, int status, const char *why) {
    evbuffer_add_printf(bufferevent_get_output(bev), "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                        "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
                        status == 401 ? "Unauthorized" : "Bad Request", strlen(why), why);
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, NULL, refuse_flushed, NULL, NULL);
    return 1;
}

static int authorized(const thorp_http_req *req) {
    if (!W.token[0]) return 1;
    size_t tl = strlen(W.token);
    const char *auth = thorp_http_header(req->id, "Authorization");
    if (auth && !strncasecmp(auth, "Bearer ", 7) && strlen(auth + 7) == tl && !CRYPTO_memcmp(auth + 7, W.token, tl))
        return 1;
    const char *q = strstr(req->uri, "token="); /* browsers cannot set headers on a WebSocket */
    if (q && (q[-1] == '?' || q[-1] == '&') && strlen(q + 6) >= tl && !CRYPTO_memcmp(q + 6, W.token, tl) &&
        (q[6 + tl] == 0 || q[6 + tl] == '&'))
        return 1;
    return 0;
}

/* host/http.c's upgrade hook: a GET with an Upgrade header. */
static int take(struct bufferevent *bev, const thorp_http_req *req, void *arg) {
    const char *up = thorp_http_header(req->id, "Upgrade");
    if (!up || strcasecmp(up, "websocket") != 0) return 0;
    const char *key = thorp_http_header(req->id, "Sec-WebSocket-Key");
    if (!key || strlen(key) > 64) return refuse(bev, 400, "bad WebSocket upgrade: no Sec-WebSocket-Key\n");
    if (!authorized(req)) return refuse(bev, 401, "a token is required (Authorization: Bearer, or ?token=)\n");
    client *c = calloc(1, sizeof *c);
    if (!c || wslay_event_context_server_init(&c->ws, &c_callbacks, c) != 0) {
        free(c);
        return refuse(bev, 400, "out of memory\n");
    }
    wslay_event_config_set_max_recv_msg_length(c->ws, CLIENT_MAX_MESSAGE);
    char cat[128], acc[64];
    unsigned char d[SHA_DIGEST_LENGTH];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    SHA1((const unsigned char *)cat, strlen(cat), d);
    EVP_EncodeBlock((unsigned char *)acc, d, sizeof d);
    evbuffer_add_printf(bufferevent_get_output(bev), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
    c->bev = bev;
    c->id = -(++W.seq);
    c->next = W.clients;
    W.clients = c;
    W.n++;
    bufferevent_set_timeouts(bev, NULL, NULL);
    bufferevent_setcb(bev, on_read, NULL, on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) on_read(bev, c);
    return 1;
}

static void free_all(void *arg) { http_ws_stop(); }

void thorp_http_ws_enable(const char *token) {
    snprintf(W.token, sizeof W.token, "%s", token ? token : "");
    http_set_upgrade_hook(take, NULL);
    if (!W.registered) {
        W.registered = 1;
        loop_on_free(free_all, NULL);
    }
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
