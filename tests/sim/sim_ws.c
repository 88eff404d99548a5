/* sim_ws: the simulator's Solana PubSub (WebSocket) side, with faults.
 *
 * Each simulated endpoint also listens for WebSocket on its own port
 * (--ws-base-port P, or a free port) and thorp-sim prints a second line
 * "SIM_WS ws://host:port,..." after SIM_READY. The server side uses wslay
 * (server mode) over a libevent bufferevent; faults that must break the
 * framing write raw bytes between whole frames.
 *
 * Subscriptions: slotSubscribe (a notification whenever the slot advances,
 * the same slot clock as getSlot), accountSubscribe, programSubscribe and
 * logsSubscribe (one notification every notify_ms; accountSubscribe also at
 * `rate` per second when set), signatureSubscribe (one notification after
 * 100 ms, then the subscription ends, like Agave), and the *Unsubscribe
 * methods. Unknown methods get JSON-RPC error -32601.
 *
 * Faults, per endpoint, by HTTP on the same WebSocket port:
 *   POST /admin/ws {"close":1}            close frame (1001) on every connection
 *                  {"reset":1}            RST every connection
 *                  {"silence":1}          open connections go quiet (no frames, no pongs)
 *                  {"garbage":1}          one text frame that is not JSON, on each connection
 *                  {"garbage_frame":1}    raw bytes that are not a valid frame
 *                  {"oversize":N}         one N-byte notification on each connection
 *                  {"bogus_sub":1}        one notification for a subscription id nobody has
 *                  {"fragment":1|0}       notifications go out in 3 fragments
 *                  {"sub_first":1|0}      params.subscription before params.result
 *                  {"slow_reader_bytes":N} drop a connection with more than N bytes unsent
 *                  {"upgrade_status":405} answer new upgrades with that status (0 = 101)
 *                  {"require_header":"X-Api-Key: k"} answer upgrades without that header with 401
 *                  {"notify_ms":N,"rate":N,"payload_bytes":N}
 *                  {"clear":1}            all of the above back to normal
 *   GET  /admin/ws   {"connections":n,"subscriptions":n,"subscribes":n,"notifications":n,"dropped_slow":n,
 *                     "skipped":n}   (skipped: not queued while a reader was 8 MB behind)
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <wslay/wslay.h>

#include "sim.h"
#include "sim_ws.h"

enum { K_SLOT = 1, K_ACCOUNT, K_PROGRAM, K_LOGS, K_SIGNATURE };
static const char *const NOTIF[] = { "", "slotNotification", "accountNotification", "programNotification",
                                     "logsNotification", "signatureNotification" };

typedef struct wsub {
    long id;
    int kind;
    double due; /* signature: when to notify */
    struct wsub *next;
} wsub;

struct wep;
typedef struct wconn {
    struct wep *ep;
    struct bufferevent *bev;
    wslay_event_context_ptr ws;
    int silent, closing;
    wsub *subs;
    struct wconn *next;
} wconn;

typedef struct wep {
    int index, port;
    struct evconnlistener *lis;
    struct event *tick;
    wconn *conns;
    long next_sub, last_slot;
    double notify_ms, last_notify, rate, rate_start, rate_sent;
    int fragment, upgrade_status, payload_bytes, sub_first;
    char require_header[128]; /* "Name: value" an upgrade must carry (else 401); "" = none */
    long slow_reader_bytes;
    long subscribes, notifications, dropped_slow, skipped;
    struct wep *next;
} wep;

static struct event_base *wbase;
static double wt_start;
static wep *weps;

static double wnow(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static long wslot(void) { return simtx_slot(); } /* the ledger's clock: getSlot and notifications agree */

/* The logs ledger: every signature a periodic tick produced (on any endpoint, connected
 * or not), so getSignaturesForAddress / getTransaction can backfill what a client missed. */
enum { LOGS_RING = 4096 };
static struct { long seq, slot; } logs_ring[LOGS_RING];
static long logs_n; /* entries ever recorded */

static void logs_record(long seq, long slot) {
    if (logs_n && logs_ring[(logs_n - 1) % LOGS_RING].seq >= seq) return;
    logs_ring[logs_n % LOGS_RING].seq = seq;
    logs_ring[logs_n % LOGS_RING].slot = slot;
    logs_n++;
}

int sim_ws_logs(long i, long *seq, long *slot) {
    if (i < 0 || i >= logs_n || i < logs_n - LOGS_RING) return 0;
    *seq = logs_ring[i % LOGS_RING].seq;
    *slot = logs_ring[i % LOGS_RING].slot;
    return 1;
}
long sim_ws_logs_count(void) { return logs_n; }

/* ---- connections ------------------------------------------------------------ */

static void wconn_free(wconn *c) {
    wconn **pp = &c->ep->conns;
    while (*pp && *pp != c) pp = &(*pp)->next;
    if (*pp) *pp = c->next;
    while (c->subs) { wsub *s = c->subs; c->subs = s->next; free(s); }
    if (c->ws) wslay_event_context_free(c->ws);
    bufferevent_free(c->bev);
    free(c);
}

static void wconn_close_when_flushed(struct bufferevent *bev, void *arg) {
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) wconn_free(arg);
}

static void wconn_close_after_flush(wconn *c) {
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, wconn_close_when_flushed, NULL, c);
    wconn_close_when_flushed(c->bev, c);
}

static void wconn_reset(wconn *c) {
    struct linger l = { 1, 0 };
    setsockopt(bufferevent_getfd(c->bev), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    wconn_free(c);
}

static ssize_t w_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user) {
    wconn *c = user;
    int n = evbuffer_remove(bufferevent_get_input(c->bev), buf, len);
    if (n <= 0) { wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK); return -1; }
    return n;
}

static ssize_t w_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *user) {
    wconn *c = user;
    bufferevent_write(c->bev, data, len);
    return (ssize_t)len;
}

/* A fragmented message: the source hands out thirds of a buffer. */
typedef struct frag { char *data; size_t len, off, step; } frag;
static ssize_t w_frag_read(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, const union wslay_event_msg_source *src,
                           int *eof, void *user) {
    frag *f = src->data;
    size_t n = f->len - f->off;
    if (n > f->step) n = f->step;
    if (n > len) n = len;
    memcpy(buf, f->data + f->off, n);
    f->off += n;
    if (f->off >= f->len) {
        *eof = 1;
        free(f->data);
        free(f);
    }
    return (ssize_t)n;
}

/* 1 when the connection was dropped (a slow reader). */
static int wconn_flush(wconn *c) {
    if (wslay_event_want_write(c->ws)) wslay_event_send(c->ws);
    size_t pending = evbuffer_get_length(bufferevent_get_output(c->bev));
    if (c->ep->slow_reader_bytes > 0 && pending > (size_t)c->ep->slow_reader_bytes) {
        c->ep->dropped_slow++;
        wconn_reset(c);
        return 1;
    }
    return 0;
}

static void wconn_text(wconn *c, const char *s, size_t len, int fragment) {
    if (fragment && len >= 3) {
        frag *f = malloc(sizeof *f);
        f->data = malloc(len);
        memcpy(f->data, s, len);
        f->len = len;
        f->off = 0;
        f->step = (len + 2) / 3;
        struct wslay_event_fragmented_msg m = { WSLAY_TEXT_FRAME, { .data = f }, w_frag_read };
        wslay_event_queue_fragmented_msg(c->ws, &m);
    } else {
        struct wslay_event_msg m = { WSLAY_TEXT_FRAME, (const uint8_t *)s, len };
        wslay_event_queue_msg(c->ws, &m);
    }
}

/* ---- notifications ----------------------------------------------------------- */

static struct evbuffer *scratch;

static void notify(wconn *c, wsub *s, long slot, long seq, int bytes) {
    if (!c->ep->slow_reader_bytes && evbuffer_get_length(bufferevent_get_output(c->bev)) > (8u << 20)) {
        c->ep->skipped++; /* the reader is 8 MB behind: what it cannot take is not queued (bench) */
        return;
    }
    struct evbuffer *b = scratch;
    evbuffer_drain(b, evbuffer_get_length(b));
    if (c->ep->sub_first) /* another key order: subscription before result */
        evbuffer_add_printf(b, "{\"params\":{\"subscription\":%ld,\"result\":", s->id);
    else
        evbuffer_add_printf(b, "{\"jsonrpc\":\"2.0\",\"method\":\"%s\",\"params\":{\"result\":", NOTIF[s->kind]);
    switch (s->kind) {
    case K_SLOT:
        evbuffer_add_printf(b, "{\"parent\":%ld,\"root\":%ld,\"slot\":%ld}", slot - 1, slot - 32, slot);
        break;
    case K_ACCOUNT:
    case K_PROGRAM: {
        evbuffer_add_printf(b, "{\"context\":{\"slot\":%ld},\"value\":{%s\"data\":[\"", slot,
                            s->kind == K_PROGRAM ? "\"pubkey\":\"SimProgramAccount1111111111111111111111111\",\"account\":{" : "");
        for (int i = 0; i < bytes; i += 64) evbuffer_add(b, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                                                         bytes - i < 64 ? (size_t)(bytes - i) : 64);
        evbuffer_add_printf(b, "\",\"base64\"],\"executable\":false,\"lamports\":%ld,\"owner\":"
                            "\"11111111111111111111111111111111\",\"rentEpoch\":0,\"space\":%d}%s}", seq, bytes,
                            s->kind == K_PROGRAM ? "}" : "");
        break;
    }
    case K_LOGS:
        evbuffer_add_printf(b, "{\"context\":{\"slot\":%ld},\"value\":{\"signature\":\"simsig%ld\",\"err\":null,"
                            "\"logs\":[\"Program 11111111111111111111111111111111 invoke [1]\"]}}", slot, seq);
        break;
    case K_SIGNATURE:
        evbuffer_add_printf(b, "{\"context\":{\"slot\":%ld},\"value\":{\"err\":null}}", slot);
        break;
    }
    if (c->ep->sub_first) evbuffer_add_printf(b, "},\"method\":\"%s\",\"jsonrpc\":\"2.0\"}", NOTIF[s->kind]);
    else evbuffer_add_printf(b, ",\"subscription\":%ld}}", s->id);
    size_t len = evbuffer_get_length(b);
    wconn_text(c, (const char *)evbuffer_pullup(b, len), len, c->ep->fragment);
    c->ep->notifications++;
}

static void wep_tick(evutil_socket_t fd, short what, void *arg) {
    wep *ep = arg;
    double t = wnow();
    long slot = wslot();
    int slot_moved = slot != ep->last_slot;
    ep->last_slot = slot;
    int periodic = ep->notify_ms > 0 && t - ep->last_notify >= ep->notify_ms;
    if (periodic) ep->last_notify = t;
    long seq = (long)((t - wt_start) / (ep->notify_ms > 0 ? ep->notify_ms : 1));
    if (periodic) logs_record(seq, slot);
    long rate_n = 0;
    if (ep->rate > 0) {
        double want = (t - ep->rate_start) * ep->rate / 1000.0;
        rate_n = (long)(want - ep->rate_sent);
        if (rate_n > 0) ep->rate_sent += rate_n;
    }
    for (wconn *c = ep->conns, *next; c; c = next) {
        next = c->next;
        if (c->silent || c->closing || !c->ws) continue;
        for (wsub **pp = &c->subs, *s; (s = *pp);) {
            if (s->kind == K_SLOT && slot_moved) notify(c, s, slot, 0, 0);
            if (periodic && (s->kind == K_ACCOUNT || s->kind == K_PROGRAM || s->kind == K_LOGS))
                notify(c, s, slot, seq, ep->payload_bytes);
            if (s->kind == K_ACCOUNT)
                for (long i = 0; i < rate_n; i++) notify(c, s, slot, (long)ep->rate_sent - rate_n + i, ep->payload_bytes);
            if (s->kind == K_SIGNATURE && t >= s->due) {
                notify(c, s, slot, 0, 0);
                *pp = s->next;
                free(s);
                continue;
            }
            pp = &s->next;
        }
        wconn_flush(c);
    }
}

/* ---- JSON-RPC over the socket ------------------------------------------------- */

static int json_str(const char *m, const char *key, char *out, size_t n) {
    char k[32];
    snprintf(k, sizeof k, "\"%s\"", key);
    const char *p = strstr(m, k);
    if (!p) return 0;
    p += strlen(k);
    while (*p == ' ' || *p == ':') p++;
    if (*p != '"') return 0;
    p++;
    size_t i = 0;
    while (*p && *p != '"' && i + 1 < n) out[i++] = *p++;
    out[i] = 0;
    return 1;
}

static long json_num(const char *m, const char *key, int *found) {
    char k[32];
    snprintf(k, sizeof k, "\"%s\"", key);
    const char *p = strstr(m, k);
    *found = 0;
    if (!p) return 0;
    p += strlen(k);
    while (*p == ' ' || *p == ':') p++;
    if (!isdigit((unsigned char)*p) && *p != '-') return 0;
    *found = 1;
    return strtol(p, NULL, 10);
}

static void reply(wconn *c, const char *fmt, long id, long v) {
    char b[256];
    int n = snprintf(b, sizeof b, fmt, v, id);
    wconn_text(c, b, (size_t)n, 0);
}

static void on_request(wconn *c, const char *m) {
    char method[64] = "";
    int has_id;
    long id = json_num(m, "id", &has_id);
    json_str(m, "method", method, sizeof method);
    static const char *const subs[] = { "", "slotSubscribe", "accountSubscribe", "programSubscribe", "logsSubscribe",
                                        "signatureSubscribe" };
    for (int k = K_SLOT; k <= K_SIGNATURE; k++) {
        if (!strcmp(method, subs[k])) {
            wsub *s = calloc(1, sizeof *s);
            s->id = c->ep->index * 100000L + ++c->ep->next_sub;
            s->kind = k;
            s->due = wnow() + 100;
            s->next = c->subs;
            c->subs = s;
            c->ep->subscribes++;
            reply(c, "{\"jsonrpc\":\"2.0\",\"result\":%ld,\"id\":%ld}", id, s->id);
            return;
        }
    }
    size_t ml = strlen(method);
    if (ml > 11 && !strcmp(method + ml - 11, "Unsubscribe")) {
        const char *p = strstr(m, "\"params\"");
        p = p ? strchr(p, '[') : NULL;
        long sid = p ? strtol(p + 1, NULL, 10) : -1;
        int found = 0;
        for (wsub **pp = &c->subs; *pp; pp = &(*pp)->next) {
            if ((*pp)->id == sid) {
                wsub *s = *pp;
                *pp = s->next;
                free(s);
                found = 1;
                break;
            }
        }
        reply(c, found ? "{\"jsonrpc\":\"2.0\",\"result\":true%.0ld,\"id\":%ld}"
                       : "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32602,\"message\":\"Invalid subscription id.\"}%.0ld,\"id\":%ld}",
              id, 0);
        return;
    }
    char b[256];
    int n = snprintf(b, sizeof b, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":-32601,\"message\":\"Method not found\"},"
                     "\"id\":%ld}", id);
    wconn_text(c, b, (size_t)n, 0);
}

static void w_on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *user) {
    wconn *c = user;
    if (arg->opcode != WSLAY_TEXT_FRAME) return;
    char *m = malloc(arg->msg_length + 1);
    memcpy(m, arg->msg, arg->msg_length);
    m[arg->msg_length] = 0;
    on_request(c, m);
    free(m);
}

static const struct wslay_event_callbacks w_callbacks = { w_recv, w_send, NULL, NULL, NULL, NULL, w_on_msg };

/* ---- HTTP: the upgrade and the admin API -------------------------------------- */

static const char *hdr(const char *h, const char *name, size_t *vl) {
    size_t nl = strlen(name);
    for (const char *p = strstr(h, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        if (!strncasecmp(p + 2, name, nl) && p[2 + nl] == ':') {
            const char *v = p + 3 + nl;
            while (*v == ' ') v++;
            *vl = strcspn(v, "\r\n");
            return v;
        }
    }
    return NULL;
}

static void admin(wconn *c, const char *body) {
    wep *ep = c->ep;
    int f;
    long v;
    if ((v = json_num(body, "clear", &f)), f && v) {
        ep->fragment = ep->upgrade_status = ep->sub_first = 0;
        ep->require_header[0] = 0;
        ep->slow_reader_bytes = 0;
        ep->rate = 0;
        ep->notify_ms = 200;
        ep->payload_bytes = 100;
        for (wconn *x = ep->conns; x; x = x->next) x->silent = 0;
    }
    if ((v = json_num(body, "fragment", &f)), f) ep->fragment = v != 0;
    if ((v = json_num(body, "sub_first", &f)), f) ep->sub_first = v != 0;
    if ((v = json_num(body, "upgrade_status", &f)), f) ep->upgrade_status = (int)v;
    json_str(body, "require_header", ep->require_header, sizeof ep->require_header);
    if ((v = json_num(body, "slow_reader_bytes", &f)), f) ep->slow_reader_bytes = v;
    if ((v = json_num(body, "notify_ms", &f)), f) ep->notify_ms = (double)v;
    if ((v = json_num(body, "payload_bytes", &f)), f) ep->payload_bytes = (int)v;
    if ((v = json_num(body, "rate", &f)), f) { ep->rate = (double)v; ep->rate_start = wnow(); ep->rate_sent = 0; }
    int do_close = (v = json_num(body, "close", &f), f && v), do_reset = (v = json_num(body, "reset", &f), f && v);
    int silence = (v = json_num(body, "silence", &f), f && v), garbage = (v = json_num(body, "garbage", &f), f && v);
    int gframe = (v = json_num(body, "garbage_frame", &f), f && v), bogus = (v = json_num(body, "bogus_sub", &f), f && v);
    long oversize = json_num(body, "oversize", &f);
    for (wconn *x = ep->conns, *next; x; x = next) {
        next = x->next;
        if (x == c || !x->ws || x->closing) continue;
        if (do_reset) { wconn_reset(x); continue; }
        if (do_close) {
            wslay_event_queue_close(x->ws, 1001, (const uint8_t *)"going away", 10);
            wslay_event_send(x->ws);
            wconn_close_after_flush(x);
            continue;
        }
        if (silence) x->silent = 1;
        if (garbage) wconn_text(x, "{\"jsonrpc\":\"2.0\",\"method\":<<not json", 34, 0);
        if (bogus) {
            wsub s = { 999999999L, K_SLOT, 0, NULL };
            notify(x, &s, wslot(), 0, 0);
        }
        if (f && oversize > 0 && x->subs) {
            wsub *s = x->subs;
            int k = s->kind;
            s->kind = K_ACCOUNT;
            notify(x, s, wslot(), 0, (int)oversize);
            s->kind = k;
        }
        if (wslay_event_want_write(x->ws)) wslay_event_send(x->ws);
        if (gframe) bufferevent_write(x->bev, "\xff\x7f\x01\x02\x03garbage", 12);
    }
    long nsub = 0, nconn = 0;
    for (wconn *x = ep->conns; x; x = x->next) {
        if (!x->ws) continue;
        nconn++;
        for (wsub *s = x->subs; s; s = s->next) nsub++;
    }
    char out[512];
    int n = snprintf(out, sizeof out, "{\"endpoint\":%d,\"connections\":%ld,\"subscriptions\":%ld,\"subscribes\":%ld,"
                     "\"notifications\":%ld,\"dropped_slow\":%ld,\"skipped\":%ld}", ep->index, nconn, nsub, ep->subscribes,
                     ep->notifications, ep->dropped_slow, ep->skipped);
    evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\nConnection: close\r\n\r\n%s", n, out);
    wconn_close_after_flush(c);
}

static void w_on_read(struct bufferevent *bev, void *arg) {
    wconn *c = arg;
    if (c->closing) return;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (!c->ws) {
        struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (e.pos < 0) {
            if (evbuffer_get_length(in) > 16384) wconn_free(c);
            return;
        }
        size_t hl = (size_t)e.pos + 4, vl = 0;
        char *h = (char *)evbuffer_pullup(in, -1);
        size_t total = evbuffer_get_length(in);
        char *req = malloc(total + 1);
        memcpy(req, h, total);
        req[total] = 0;
        const char *key = hdr(req, "Sec-WebSocket-Key", &vl);
        if (!strncmp(req, "POST /admin/ws", 14) || !strncmp(req, "GET /admin/ws", 13)) {
            size_t cl_len;
            const char *cl = hdr(req, "Content-Length", &cl_len);
            size_t blen = cl ? strtoul(cl, NULL, 10) : 0;
            if (total < hl + blen) { free(req); return; }
            evbuffer_drain(in, hl + blen);
            req[hl + blen] = 0;
            admin(c, req + hl);
            free(req);
            return;
        }
        evbuffer_drain(in, hl);
        struct evbuffer *out = bufferevent_get_output(bev);
        if (!key || vl > 64) {
            evbuffer_add_printf(out, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            free(req);
            wconn_close_after_flush(c);
            return;
        }
        int status = c->ep->upgrade_status;
        if (!status && c->ep->require_header[0]) { /* a provider that authenticates by header */
            char name[128];
            const char *colon = strchr(c->ep->require_header, ':'), *want = colon ? colon + 1 : "";
            snprintf(name, sizeof name, "%.*s", colon ? (int)(colon - c->ep->require_header) : 0, c->ep->require_header);
            while (*want == ' ') want++;
            size_t gl = 0;
            const char *got = name[0] ? hdr(req, name, &gl) : NULL;
            if (!got || gl != strlen(want) || strncmp(got, want, gl)) status = 401;
        }
        if (status) {
            evbuffer_add_printf(out, "HTTP/1.1 %d Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                status);
            free(req);
            wconn_close_after_flush(c);
            return;
        }
        char cat[128], acc[64];
        unsigned char d[SHA_DIGEST_LENGTH];
        snprintf(cat, sizeof cat, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)vl, key);
        SHA1((unsigned char *)cat, strlen(cat), d);
        EVP_EncodeBlock((unsigned char *)acc, d, sizeof d);
        free(req);
        evbuffer_add_printf(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            "Sec-WebSocket-Accept: %s\r\n\r\n", acc);
        wslay_event_context_server_init(&c->ws, &w_callbacks, c);
        wslay_event_config_set_max_recv_msg_length(c->ws, 1 << 20);
        if (evbuffer_get_length(in) == 0) return;
    }
    if (c->silent) { evbuffer_drain(in, evbuffer_get_length(in)); return; }
    if (wslay_event_recv(c->ws) != 0 || !wslay_event_want_read(c->ws)) {
        if (wslay_event_want_write(c->ws)) wslay_event_send(c->ws);
        wconn_close_after_flush(c);
        return;
    }
    wconn_flush(c);
}

static void w_on_event(struct bufferevent *bev, short what, void *arg) {
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) wconn_free(arg);
}

static void w_on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int sl, void *arg) {
    wep *ep = arg;
    wconn *c = calloc(1, sizeof *c);
    c->ep = ep;
    c->bev = bufferevent_socket_new(wbase, fd, BEV_OPT_CLOSE_ON_FREE);
    c->next = ep->conns;
    ep->conns = c;
    bufferevent_setcb(c->bev, w_on_read, NULL, w_on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int sim_ws_listen(struct event_base *base, const char *host, int port, int index, double t_start) {
    wbase = base;
    wt_start = t_start;
    if (!scratch) scratch = evbuffer_new();
    wep *ep = calloc(1, sizeof *ep);
    ep->index = index;
    ep->notify_ms = 200;
    ep->payload_bytes = 100;
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    inet_pton(AF_INET, host, &sin.sin_addr);
    ep->lis = evconnlistener_new_bind(base, w_on_accept, ep, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                      (struct sockaddr *)&sin, sizeof sin);
    if (!ep->lis) { free(ep); return -1; }
    struct sockaddr_in bound;
    socklen_t bl = sizeof bound;
    getsockname(evconnlistener_get_fd(ep->lis), (struct sockaddr *)&bound, &bl);
    ep->port = ntohs(bound.sin_port);
    ep->tick = event_new(base, -1, EV_PERSIST, wep_tick, ep);
    struct timeval tv = { 0, 1000 };
    event_add(ep->tick, &tv);
    ep->next = weps;
    weps = ep;
    return ep->port;
}

void sim_ws_free(void) {
    while (weps) {
        wep *ep = weps;
        weps = ep->next;
        while (ep->conns) wconn_free(ep->conns);
        evconnlistener_free(ep->lis);
        event_free(ep->tick);
        free(ep);
    }
    if (scratch) evbuffer_free(scratch);
    scratch = NULL;
}
