/* http: evhttp listener whose requests are answered from Lua. See http.h. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include "http.h"
#include "http_ws.h"
#include "loop.h"

typedef struct hreq {
    thorp_http_req info;
    struct evhttp_request *req;      /* NULL once libevent has freed it */
    struct evhttp_connection *evcon; /* the connection it came on */
    int orphan;                      /* detached from a closed connection: ours to free */
    int sending;                     /* answered; the reply is being written */
} hreq;

static struct {
    struct evhttp *http;
    int port;
    hreq *slots[HTTP_MAX_PENDING];
    int free_slots[HTTP_MAX_PENDING], nfree;
    int npending;
    int64_t seq;
    int registered;
} H;

static void http_free_all(void *arg) { (void)arg; thorp_http_stop(); }

static hreq *find(int64_t id)
{
    if (id < 0) return NULL;
    hreq *r = H.slots[id & (HTTP_MAX_PENDING - 1)];
    return r && r->info.id == id ? r : NULL;
}

static void release(hreq *r, int notify)
{
    if (notify) loop_post(TEV_HTTP, r->info.id, HTTP_EV_SENT, 0, NULL);
    int slot = (int)(r->info.id & (HTTP_MAX_PENDING - 1));
    H.slots[slot] = NULL;
    H.free_slots[H.nfree++] = slot;
    H.npending--;
    free(r);
}

/* A connection is going away. Requests still queued on it are freed by
 * libevent right after this (a reply being written is then over); one it
 * already detached (the client hung up while Lua was working on it) is left
 * for us to free. */
static void on_close(struct evhttp_connection *evcon, void *arg)
{
    (void)arg;
    if (H.npending == 0) return;
    for (int i = 0; i < HTTP_MAX_PENDING; i++) {
        hreq *r = H.slots[i];
        if (!r || r->evcon != evcon || !r->req) continue;
        if (r->sending) { release(r, 1); continue; }
        if (evhttp_request_get_connection(r->req) == NULL) r->orphan = 1;
        else r->req = NULL;
        r->evcon = NULL;
    }
}

/* The reply has been written out. */
static void on_sent(struct evhttp_request *req, void *arg)
{
    (void)req;
    hreq *r = find((int64_t)(intptr_t)arg);
    if (r && r->sending) release(r, 1);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    if (http_ws_upgrade(req)) return; /* WebSocket: host/http_ws.c */
    if (H.nfree == 0) {
        evhttp_send_error(req, 503, "too many pending requests");
        return;
    }
    hreq *r = calloc(1, sizeof *r);
    if (!r) {
        evhttp_send_error(req, 503, "out of memory");
        return;
    }
    switch (evhttp_request_get_command(req)) {
    case EVHTTP_REQ_GET: r->info.method = HTTP_M_GET; break;
    case EVHTTP_REQ_POST: r->info.method = HTTP_M_POST; break;
    case EVHTTP_REQ_HEAD: r->info.method = HTTP_M_HEAD; break;
    default: r->info.method = HTTP_M_OTHER; break;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    r->info.body_len = evbuffer_get_length(in);
    r->info.body = r->info.body_len ? (const char *)evbuffer_pullup(in, -1) : "";
    r->info.uri = evhttp_request_get_uri(req);
    r->req = req;
    r->evcon = evhttp_request_get_connection(req);
    if (r->evcon) evhttp_connection_set_closecb(r->evcon, on_close, NULL);
    int slot = H.free_slots[--H.nfree];
    r->info.id = (++H.seq << 16) | slot;
    H.slots[slot] = r;
    H.npending++;
    loop_post(TEV_HTTP, r->info.id, r->info.method, (double)r->info.body_len, NULL);
}

int thorp_http_listen(const char *host, int port, size_t max_body, char *err, int errcap)
{
    if (H.http) { snprintf(err, (size_t)errcap, "the HTTP listener is already running on port %d", H.port); return -1; }
    H.http = evhttp_new(loop_base());
    if (!H.http) { snprintf(err, (size_t)errcap, "cannot create the HTTP server"); return -1; }
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(H.http, host, (ev_uint16_t)port);
    if (!s) {
        snprintf(err, (size_t)errcap, "cannot listen on %s:%d (address in use, or not a local address)", host, port);
        evhttp_free(H.http);
        H.http = NULL;
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    H.port = port;
    if (getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&ss, &sl) == 0)
        H.port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    evhttp_set_max_body_size(H.http, (ev_ssize_t)(max_body ? max_body : HTTP_DEFAULT_MAX_BODY));
    evhttp_set_max_headers_size(H.http, 64 * 1024);
    evhttp_set_allowed_methods(H.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    evhttp_set_timeout(H.http, 120);
    evhttp_set_gencb(H.http, on_request, NULL);
    H.nfree = 0;
    for (int i = HTTP_MAX_PENDING - 1; i >= 0; i--) H.free_slots[H.nfree++] = i;
    if (!H.registered) {
        loop_on_free(http_free_all, NULL);
        H.registered = 1;
    }
    return H.port;
}

void thorp_http_stop(void)
{
    for (int i = 0; i < HTTP_MAX_PENDING; i++) {
        hreq *r = H.slots[i];
        if (!r) continue;
        if (r->orphan && r->req) evhttp_request_free(r->req);
        release(r, 0);
    }
    http_ws_stop(); /* its connections are evhttp's too */
    if (H.http) evhttp_free(H.http); /* frees connections and the requests on them */
    H.http = NULL;
    H.port = 0;
    H.nfree = 0;
}

const thorp_http_req *thorp_http_request(int64_t id)
{
    hreq *r = find(id);
    return r && r->req && !r->sending ? &r->info : NULL;
}

int thorp_http_reply(int64_t id, int status, const char *content_type, const char *body, size_t len,
                     const char *hname, const char *hvalue)
{
    hreq *r = find(id);
    if (!r || r->sending) return -1;
    if (r->req && !r->orphan) {
        struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
        if (content_type) evhttp_add_header(h, "Content-Type", content_type);
        if (hname && hvalue) evhttp_add_header(h, hname, hvalue);
        if (len) evbuffer_add(evhttp_request_get_output_buffer(r->req), body, len);
        r->sending = 1;
        evhttp_request_set_on_complete_cb(r->req, on_sent, (void *)(intptr_t)id);
        evhttp_send_reply(r->req, status, NULL, NULL);
        return 0;
    }
    if (r->req) evhttp_request_free(r->req);
    release(r, 0);
    return 1;
}

int thorp_http_pending(void) { return H.npending; }
int thorp_http_port(void) { return H.http ? H.port : 0; }
