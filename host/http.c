/* http: a small HTTP/1.1 server whose requests are answered from Lua. See http.h. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include "http.h"
#include "loop.h"

#define MAX_HEAD (64 * 1024)          /* request line + headers */
#define MAX_DISCARD (256u << 20)      /* a refused body bigger than this: close instead of draining */
#define IDLE_SECONDS 120

typedef struct conn conn;

typedef struct hreq {
    thorp_http_req info;
    conn *c;          /* NULL once the connection is gone */
    char *head;       /* request line and headers, NUL-terminated lines */
    size_t head_len;
    char *body;
    size_t reserved;  /* budget bytes held */
    int route, operator_slot, keep_alive, sending, slot;
    char *upgrade;    /* value of an Upgrade header, or NULL */
    const char *hdrs; /* first header line in head */
} hreq;

struct conn {
    struct bufferevent *bev;
    hreq *cur;        /* request with Lua or being sent (one at a time, in order) */
    hreq *wait_body;  /* head admitted, body still arriving */
    size_t discard;   /* body bytes of a refused request still to drop */
    int closing;      /* close once the output is written */
    int lingering;    /* output shut down; input read and dropped until the client closes */
    char peer[64];
    conn *prev, *next;
};

static struct {
    struct evconnlistener *listener;
    int port;
    hreq *slots[HTTP_SLOTS];
    int64_t seq;
    int npending, nfront, noperator, max_pending;
    size_t max_body, budget, inflight, since_trim;
    conn *conns;
    int registered;
    double refused[HTTP_NROUTES][4];
    http_upgrade_fn upgrade;
    void *upgrade_arg;
} H = { .max_pending = HTTP_MAX_PENDING, .max_body = HTTP_DEFAULT_MAX_BODY, .budget = HTTP_DEFAULT_BUDGET };

static const int REFUSED_CODES[4] = { 400, 413, 501, 503 };

void http_set_upgrade_hook(http_upgrade_fn fn, void *arg) { H.upgrade = fn; H.upgrade_arg = arg; }

static void conn_process(conn *c);
static void conn_free(conn *c);

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

static int route_of(const char *uri)
{
    size_t n = strcspn(uri, "?#");
    if (n == 1 && uri[0] == '/') return HTTP_R_ROOT;
    if (n == 8 && !strncmp(uri, "/metrics", 8)) return HTTP_R_METRICS;
    if (n == 7 && !strncmp(uri, "/health", 7)) return HTTP_R_HEALTH;
    if (n == 6 && !strncmp(uri, "/ready", 6)) return HTTP_R_READY;
    return HTTP_R_OTHER;
}

/* Return what bodies held by requests took, and give memory back to the
 * system once a burst is over (glibc keeps freed heap otherwise). */
static void budget_release(size_t n)
{
    H.inflight -= n < H.inflight ? n : H.inflight;
    H.since_trim += n;
    if (H.inflight == 0 && H.since_trim >= (8u << 20)) {
        malloc_trim(0);
        H.since_trim = 0;
    }
}

static void req_free(hreq *r)
{
    if (r->slot >= 0 && H.slots[r->slot] == r) {
        H.slots[r->slot] = NULL;
        H.npending--;
        if (r->operator_slot) H.noperator--; else H.nfront--;
    }
    budget_release(r->reserved);
    free(r->head);
    free(r->body);
    free(r);
}

static void release(hreq *r, int notify)
{
    if (notify) loop_post(TEV_HTTP, r->info.id, HTTP_EV_SENT, 0, NULL);
    req_free(r);
}

static hreq *find(int64_t id)
{
    if (id < 0) return NULL;
    hreq *r = H.slots[id & (HTTP_SLOTS - 1)];
    return r && r->info.id == id ? r : NULL;
}

/* A reply C writes itself (before Lua saw the request). */
static void send_simple(conn *c, int status, int route, int head_only, int keep_alive, const char *msg)
{
    for (int i = 0; i < 4; i++)
        if (REFUSED_CODES[i] == status) H.refused[route][i]++;
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\"}\n", msg);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s%s\r\n",
                        status, reason(status), n, status == 503 ? "Retry-After: 1\r\n" : "",
                        keep_alive ? "" : "Connection: close\r\n");
    if (!head_only) evbuffer_add(out, body, (size_t)n);
    if (!keep_alive) {
        c->closing = 1;
        evbuffer_drain(bufferevent_get_input(c->bev), evbuffer_get_length(bufferevent_get_input(c->bev)));
    }
}

static const char *head_header(const char *p, const char *end, const char *name)
{
    size_t nl = strlen(name);
    while (p < end && *p) {
        if (!strncasecmp(p, name, nl) && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            return v;
        }
        p += strlen(p) + 1;
    }
    return NULL;
}

/* Parse the head in buf[0..len) (ends with an empty line) into r. 0 ok, else an HTTP status. */
static int parse_head(hreq *r, char *buf, size_t len, long long *clen, int *chunked, int *expect)
{
    /* split into NUL-terminated lines, trimming CR; trailing whitespace of values too */
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\r') continue;
        if (buf[i] == '\n') {
            while (o > 0 && (buf[o - 1] == ' ' || buf[o - 1] == '\t')) o--;
            buf[o++] = 0;
        } else if (buf[i] == 0) return 400;
        else buf[o++] = buf[i];
    }
    r->head = buf;
    r->head_len = o;
    char *line = buf, *sp1 = strchr(line, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || strncmp(sp2 + 1, "HTTP/1.", 7) || (sp2[8] != '0' && sp2[8] != '1') || sp2[9]) return 400;
    *sp1 = 0;
    *sp2 = 0;
    r->info.uri = sp1 + 1;
    if (r->info.uri[0] != '/') return 400;
    r->keep_alive = sp2[8] == '1';
    if (!strcmp(line, "GET")) r->info.method = HTTP_M_GET;
    else if (!strcmp(line, "POST")) r->info.method = HTTP_M_POST;
    else if (!strcmp(line, "HEAD")) r->info.method = HTTP_M_HEAD;
    else r->info.method = HTTP_M_OTHER;
    *clen = 0;
    int have_len = 0;
    r->hdrs = sp2 + 10;
    for (char *p = sp2 + 10; p < buf + o && *p; p += strlen(p) + 1) {
        char *colon = strchr(p, ':');
        if (!colon || colon == p) return 400;
        for (char *k = p; k < colon; k++) if (*k == ' ' || *k == '\t') return 400;
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t') v++;
        size_t kl = (size_t)(colon - p);
        if (kl == 14 && !strncasecmp(p, "content-length", 14)) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            if (end == v || *end || n < 0 || errno || (have_len && n != *clen)) return 400;
            *clen = n;
            have_len = 1;
        } else if (kl == 17 && !strncasecmp(p, "transfer-encoding", 17)) {
            *chunked = 1;
        } else if (kl == 10 && !strncasecmp(p, "connection", 10)) {
            if (strcasestr(v, "close")) r->keep_alive = 0;
            else if (strcasestr(v, "keep-alive")) r->keep_alive = 1;
        } else if (kl == 6 && !strncasecmp(p, "expect", 6)) {
            *expect = !strcasecmp(v, "100-continue");
        } else if (kl == 7 && !strncasecmp(p, "upgrade", 7)) {
            r->upgrade = v;
        }
    }
    return 0;
}

static int slot_take(hreq *r)
{
    for (int tries = 0; tries < HTTP_SLOTS; tries++) {
        int64_t id = ++H.seq;
        int slot = (int)(id & (HTTP_SLOTS - 1));
        if (!H.slots[slot]) {
            r->info.id = id;
            r->slot = slot;
            H.slots[slot] = r;
            H.npending++;
            if (r->operator_slot) H.noperator++; else H.nfront++;
            return 0;
        }
    }
    return -1;
}

static void set_idle_timeout(conn *c, int on)
{
    struct timeval tv = { IDLE_SECONDS, 0 };
    bufferevent_set_timeouts(c->bev, on ? &tv : NULL, &tv);
}

/* The head and body of r are in: hand it to an upgrade hook or to Lua.
 * Returns 1 when c is gone (an upgrade hook took the connection). */
static int dispatch(conn *c, hreq *r)
{
    r->info.body_len = r->reserved;
    if (!r->info.body) r->info.body = "";
    if (slot_take(r) != 0) {
        send_simple(c, 503, r->route, r->info.method == HTTP_M_HEAD, 0, "too many pending requests");
        req_free(r);
        return 0;
    }
    if (r->upgrade && H.upgrade && r->info.method == HTTP_M_GET) {
        struct bufferevent *bev = c->bev;
        if (H.upgrade(bev, &r->info, H.upgrade_arg)) { /* the hook owns bev now */
            c->bev = NULL;
            req_free(r);
            conn_free(c);
            return 1;
        }
    }
    r->c = c;
    c->cur = r;
    set_idle_timeout(c, 0);
    loop_post(TEV_HTTP, r->info.id, r->info.method, (double)r->info.body_len, NULL);
    return 0;
}

/* Take requests from the input while none is being answered. */
static void conn_process(conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->cur && !c->closing) {
        if (c->discard) {
            size_t n = evbuffer_get_length(in);
            if (n > c->discard) n = c->discard;
            evbuffer_drain(in, n);
            c->discard -= n;
            if (c->discard) return;
        }
        if (c->wait_body) {
            hreq *r = c->wait_body;
            if (evbuffer_get_length(in) < r->reserved) return;
            r->body = malloc(r->reserved + 1);
            if (!r->body) { c->wait_body = NULL; send_simple(c, 503, r->route, 0, 0, "out of memory"); req_free(r); return; }
            evbuffer_remove(in, r->body, r->reserved);
            r->body[r->reserved] = 0;
            r->info.body = r->body;
            c->wait_body = NULL;
            if (dispatch(c, r)) return; /* c is freed */
            continue;
        }
        size_t avail = evbuffer_get_length(in);
        if (avail == 0) return;
        /* skip blank lines between requests (RFC 9112 2.2) */
        unsigned char first;
        while (avail > 0 && evbuffer_copyout(in, &first, 1) == 1 && (first == '\r' || first == '\n')) {
            evbuffer_drain(in, 1);
            avail--;
        }
        struct evbuffer_ptr e = evbuffer_search(in, "\n\r\n", 3, NULL);
        struct evbuffer_ptr e2 = evbuffer_search(in, "\n\n", 2, NULL);
        ssize_t end = -1;
        if (e.pos >= 0) end = (ssize_t)e.pos + 3;
        if (e2.pos >= 0 && (end < 0 || (ssize_t)e2.pos + 2 < end)) end = (ssize_t)e2.pos + 2;
        if (end < 0 || end > MAX_HEAD) {
            if (end > MAX_HEAD || avail > MAX_HEAD) send_simple(c, 400, HTTP_R_OTHER, 0, 0, "request head too large");
            return;
        }
        hreq *r = calloc(1, sizeof *r);
        char *buf = r ? malloc((size_t)end + 1) : NULL;
        if (!buf) { free(r); send_simple(c, 503, HTTP_R_OTHER, 0, 0, "out of memory"); return; }
        r->slot = -1;
        r->info.peer = c->peer;
        evbuffer_remove(in, buf, (size_t)end);
        buf[end] = 0;
        long long clen = 0;
        int chunked = 0, expect = 0;
        int bad = parse_head(r, buf, (size_t)end, &clen, &chunked, &expect);
        if (!r->head) free(buf);
        int head_only = !bad && r->info.method == HTTP_M_HEAD;
        r->route = bad ? HTTP_R_OTHER : route_of(r->info.uri);
        if (bad) { send_simple(c, bad, HTTP_R_OTHER, 0, 0, "malformed request"); req_free(r); return; }
        if (r->info.method == HTTP_M_OTHER) {
            send_simple(c, 501, r->route, 0, 0, "method not implemented: use GET, HEAD or POST");
            req_free(r);
            return;
        }
        if (chunked) {
            send_simple(c, 501, r->route, head_only, 0, "chunked request bodies are not supported: send Content-Length");
            req_free(r);
            return;
        }
        r->operator_slot = r->route != HTTP_R_ROOT && r->route != HTTP_R_OTHER && r->info.method != HTTP_M_POST;
        const char *refusal = NULL;
        int status = 0;
        if ((size_t)clen > H.max_body) { status = 413; refusal = "request body too large"; }
        else if (r->operator_slot ? H.noperator >= HTTP_OPERATOR_SLOTS : H.nfront >= H.max_pending) {
            status = 503; refusal = "too many pending requests";
        } else if (!r->operator_slot && H.inflight + (size_t)clen > H.budget) {
            status = 503; refusal = "request bodies in flight over the budget";
        }
        if (refusal) { /* answer now, drop the body as it arrives (the client sees the answer) */
            int keep = r->keep_alive && (size_t)clen <= MAX_DISCARD;
            send_simple(c, status, r->route, head_only, keep, refusal);
            if (keep) c->discard = (size_t)clen;
            req_free(r);
            if (!keep) return;
            continue;
        }
        r->reserved = (size_t)clen;
        H.inflight += r->reserved;
        if (clen == 0) {
            if (dispatch(c, r)) return; /* c is freed */
            continue;
        }
        if (expect) evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
        c->wait_body = r;
    }
}

static void conn_free(conn *c)
{
    if (c->prev) c->prev->next = c->next; else H.conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->cur) {
        if (c->cur->sending) release(c->cur, 1);
        else c->cur->c = NULL; /* Lua still answers it; the answer is dropped */
    }
    if (c->wait_body) req_free(c->wait_body);
    if (c->bev) bufferevent_free(c->bev);
    free(c);
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->closing) { /* what the client still sends after a final answer is dropped */
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    conn_process(c);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) != 0) return;
    if (c->closing) {
        /* Lingering close: shut our side down and read until the client closes
         * (a few seconds at most), so a client still sending its body gets
         * the answer instead of a reset. */
        if (!c->lingering) {
            c->lingering = 1;
            shutdown(bufferevent_getfd(bev), SHUT_WR);
            struct timeval tv = { 5, 0 };
            bufferevent_set_timeouts(bev, &tv, &tv);
        }
        return;
    }
    hreq *r = c->cur;
    if (r && r->sending) {
        int keep = r->keep_alive;
        c->cur = NULL;
        release(r, 1);
        if (!keep) { conn_free(c); return; }
        set_idle_timeout(c, 1);
        conn_process(c);
    }
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) conn_free(arg);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)arg;
    conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? bufferevent_socket_new(loop_base(), fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) { free(c); evutil_closesocket(fd); return; }
    c->bev = bev;
    char host[48] = "?";
    if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
    else if (sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
    (void)salen;
    snprintf(c->peer, sizeof c->peer, "%s", host);
    c->next = H.conns;
    if (H.conns) H.conns->prev = c;
    H.conns = c;
    /* a pipelining client cannot make us buffer more than a head and a body at once */
    bufferevent_setwatermark(bev, EV_READ, 0, MAX_HEAD + H.max_body + 4096);
    bufferevent_setcb(bev, conn_on_read, conn_on_write, conn_on_event, c);
    set_idle_timeout(c, 1);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void http_free_all(void *arg) { (void)arg; thorp_http_stop(); }

int thorp_http_listen(const char *host, int port, size_t max_body, char *err, int errcap)
{
    if (H.listener) { snprintf(err, (size_t)errcap, "the HTTP listener is already running on port %d", H.port); return -1; }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) {
        snprintf(err, (size_t)errcap, "cannot listen on %s:%d (not an address of this machine)", host, port);
        return -1;
    }
    H.listener = evconnlistener_new_bind(loop_base(), on_accept, NULL,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
                                         ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (!H.listener) {
        snprintf(err, (size_t)errcap, "cannot listen on %s:%d (%s)", host, port, strerror(errno));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    H.port = port;
    if (getsockname(evconnlistener_get_fd(H.listener), (struct sockaddr *)&ss, &sl) == 0)
        H.port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    if (max_body) H.max_body = max_body;
    if (!H.registered) {
        loop_on_free(http_free_all, NULL);
        H.registered = 1;
    }
    return H.port;
}

void thorp_http_set_limits(size_t max_body, size_t budget, int max_pending)
{
    if (max_body) H.max_body = max_body;
    if (budget) H.budget = budget;
    if (max_pending > 0) H.max_pending = max_pending < HTTP_MAX_PENDING ? max_pending : HTTP_MAX_PENDING;
}

void thorp_http_stop(void)
{
    while (H.conns) conn_free(H.conns);
    for (int i = 0; i < HTTP_SLOTS; i++)
        if (H.slots[i]) req_free(H.slots[i]); /* answers Lua still owed: dropped */
    if (H.listener) evconnlistener_free(H.listener);
    H.listener = NULL;
    H.port = 0;
}

const thorp_http_req *thorp_http_request(int64_t id)
{
    hreq *r = find(id);
    return r && r->c && !r->sending ? &r->info : NULL;
}

const char *thorp_http_header(int64_t id, const char *name)
{
    hreq *r = find(id);
    return r && r->hdrs ? head_header(r->hdrs, r->head + r->head_len, name) : NULL;
}

int thorp_http_reply(int64_t id, int status, const char *content_type, const char *body, size_t len,
                     const char *extra_headers)
{
    hreq *r = find(id);
    if (!r || r->sending) return -1;
    if (!r->c) { release(r, 0); return 1; }
    struct evbuffer *out = bufferevent_get_output(r->c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason(status));
    if (content_type) evbuffer_add_printf(out, "Content-Type: %s\r\n", content_type);
    if (status != 204 && status >= 200) evbuffer_add_printf(out, "Content-Length: %zu\r\n", len);
    if (extra_headers) evbuffer_add(out, extra_headers, strlen(extra_headers));
    if (!r->keep_alive) evbuffer_add_printf(out, "Connection: close\r\n");
    evbuffer_add(out, "\r\n", 2);
    if (len && r->info.method != HTTP_M_HEAD && status != 204) evbuffer_add(out, body, len);
    r->sending = 1;
    /* the body is no longer needed: its budget is free for the next request */
    free(r->body);
    r->body = NULL;
    r->info.body = "";
    budget_release(r->reserved);
    r->reserved = 0;
    return 0;
}

int thorp_http_pending(void) { return H.npending; }
int thorp_http_port(void) { return H.listener ? H.port : 0; }
double thorp_http_inflight_bytes(void) { return (double)H.inflight; }
double thorp_http_refused(int route, int status)
{
    if (route < 0 || route >= HTTP_NROUTES) return 0;
    for (int i = 0; i < 4; i++)
        if (REFUSED_CODES[i] == status) return H.refused[route][i];
    return 0;
}
