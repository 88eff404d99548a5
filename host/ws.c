/* ws: WebSocket client on libevent + wslay + OpenSSL. See ws.h. */
#include "ws.h"

#include <ctype.h>
#include <stdarg.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <wslay/wslay.h>
#include "log.h"
#include "loop.h"

#define MAX_HEADER 16384

typedef struct conn {
    int64_t id;
    struct bufferevent *bev;
    wslay_frame_context_ptr ws;
    SSL_CTX *own_ctx; /* a connection with its own CA file */
    struct event *tick;
    char host[256], hostport[300], path[2048];
    char *headers; /* the endpoint's own header lines for the upgrade, "\r\n"-ended; NULL if none */
    int port, tls;
    char key[32], accept[32];
    double connect_timeout_ms, ping_interval_ms, idle_timeout_ms, last_ping;
    uint64_t max_message;
    double t_read; /* time of the read callback running now */
    char *mbuf;    /* the data message being received (its frames appended) */
    size_t mlen, mcap;
    int in_msg, in_frame, f_fin;
    uint8_t f_opcode, ctrl[128];
    size_t ctrl_len;
    uint64_t f_left; /* payload bytes of the current frame still to come */
    thorp_ws_info info;
    struct conn *next;
} conn;

typedef struct qmsg {
    int64_t conn, sub;
    size_t off, len;
    double t_rx;
    size_t res_off, res_len;
} qmsg;

static struct {
    struct evdns_base *dns;
    SSL_CTX *ssl;
    conn *conns;
    int64_t next_id;
    qmsg *q;
    int qn, qcap, qrd, posted;
    char *arena;
    size_t alen, acap;
    int inited;
} ws;

static void ws_on_free(void *arg) {
    (void)arg;
    while (ws.conns) thorp_ws_free(ws.conns->id);
    if (ws.dns) evdns_base_free(ws.dns, 0);
    if (ws.ssl) SSL_CTX_free(ws.ssl);
    free(ws.q);
    free(ws.arena);
    memset(&ws, 0, sizeof ws);
}

static int ws_init(void) {
    if (ws.inited) return 0;
    ws.dns = evdns_base_new(loop_base(), EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (!ws.dns) ws.dns = evdns_base_new(loop_base(), 0);
    if (!ws.dns) return -1;
    ws.next_id = 1;
    ws.inited = 1;
    loop_on_free(ws_on_free, NULL);
    return 0;
}

static SSL_CTX *ws_ssl_ctx(const char *ca_file, char *err, int errlen) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) { snprintf(err, errlen, "cannot create a TLS context"); return NULL; }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file && *ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                 : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(err, errlen, "cannot load the TLS trust store%s%s", ca_file && *ca_file ? " " : "",
                 ca_file && *ca_file ? ca_file : "");
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static conn *ws_find(int64_t id) {
    for (conn *c = ws.conns; c; c = c->next)
        if (c->id == id) return c;
    return NULL;
}

/* ---- the message queue ---------------------------------------------------- */

/* params.subscription: searched from the end, where providers put it (any
 * key order works, a different one only costs the scan). */
static int64_t ws_sub_id(const char *d, size_t len, size_t *at) {
    static const char needle[] = "\"subscription\":";
    size_t nl = sizeof needle - 1;
    for (size_t i = len >= nl ? len - nl : 0; i + nl <= len; i--) {
        if (d[i] == '"' && !memcmp(d + i, needle, nl) && !(i > 0 && d[i - 1] == '\\')) {
            const char *p = d + i + nl, *e = d + len;
            while (p < e && *p == ' ') p++;
            if (p >= e || !isdigit((unsigned char)*p)) return -1;
            *at = i;
            int64_t v = 0;
            while (p < e && isdigit((unsigned char)*p)) {
                if (v > (INT64_MAX - 9) / 10) return -1; /* no id we handed out is that large */
                v = v * 10 + (*p++ - '0');
            }
            return v;
        }
        if (i == 0) break;
    }
    return -1;
}

void ws_queue_push(int64_t conn_id, const uint8_t *data, size_t len, double t_rx) {
    if (ws.qn == ws.qcap) {
        int cap = ws.qcap ? ws.qcap * 2 : 1024;
        qmsg *q = realloc(ws.q, cap * sizeof *q);
        if (!q) return;
        ws.q = q;
        ws.qcap = cap;
    }
    size_t need = ws.alen + len + 1;
    if (need > ws.acap) {
        size_t cap = ws.acap ? ws.acap * 2 : 1 << 20;
        while (cap < need) cap *= 2;
        char *a = realloc(ws.arena, cap);
        if (!a) return;
        ws.arena = a;
        ws.acap = cap;
    }
    if (len) memcpy(ws.arena + ws.alen, data, len); /* an empty message may come with data NULL */
    ws.arena[ws.alen + len] = 0;
    qmsg *m = &ws.q[ws.qn++];
    size_t sub_at = 0;
    *m = (qmsg){ conn_id, ws_sub_id((const char *)data, len, &sub_at), ws.alen, len, t_rx, 0, 0 };
    if (m->sub >= 0) {
        /* {"jsonrpc":"2.0","method":"xNotification","params":{"result":R,"subscription":N}} */
        static const char pre[] = "\"params\":{\"result\":";
        size_t scan = len < 128 ? len : 128;
        const uint8_t *r = memmem(data, scan, pre, sizeof pre - 1);
        if (r && sub_at > 0 && data[sub_at - 1] == ',') {
            m->res_off = (size_t)(r - data) + sizeof pre - 1;
            if (sub_at - 1 > m->res_off) m->res_len = sub_at - 1 - m->res_off;
        }
    }
    ws.alen = need;
    if (!ws.posted) {
        ws.posted = 1;
        loop_post(TEV_WS, 0, THORP_WS_MESSAGES, 0, NULL);
    }
}

int thorp_ws_drain(thorp_ws_msg *out, int max) {
    int n = 0;
    while (n < max && ws.qrd < ws.qn) {
        qmsg *m = &ws.q[ws.qrd++];
        out[n++] = (thorp_ws_msg){ m->conn, m->sub, ws.arena + m->off, m->len, m->t_rx, m->res_off, m->res_len };
    }
    if (n == 0) { /* everything handed out earlier has been read: start over */
        ws.qn = ws.qrd = 0;
        ws.alen = 0;
        ws.posted = 0;
        if (ws.acap > (64u << 20)) { /* give back the room of a burst of huge messages */
            free(ws.arena);
            ws.arena = NULL;
            ws.acap = 0;
        }
    }
    return n;
}

double thorp_ws_hash(const char *d, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    static const char needle[] = "\"subscription\":";
    size_t nl = sizeof needle - 1;
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '"' && i + nl <= len && d[i + 1] == 's' && !memcmp(d + i, needle, nl)) {
            i += nl;
            while (i < len && (d[i] == ' ' || isdigit((unsigned char)d[i]))) i++;
            if (i >= len) break;
        }
        h = (h ^ (unsigned char)d[i]) * 1099511628211ULL;
    }
    return (double)(h >> 12);
}

double thorp_ws_hash_bytes(const char *d, size_t len) {
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, d + i, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, d + i, len - i);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    return (double)(h >> 12);
}

/* ---- connection teardown --------------------------------------------------- */

static void ws_release(conn *c) {
    if (c->tick) { event_free(c->tick); c->tick = NULL; }
    if (c->bev) { bufferevent_free(c->bev); c->bev = NULL; }
    if (c->ws) { wslay_frame_context_free(c->ws); c->ws = NULL; }
    if (c->own_ctx) { SSL_CTX_free(c->own_ctx); c->own_ctx = NULL; }
    free(c->mbuf);
    c->mbuf = NULL;
    c->mlen = c->mcap = 0;
}

static void ws_fail(conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ws_fail(conn *c, const char *fmt, ...) {
    if (c->info.state == THORP_WS_DOWN) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->info.error, sizeof c->info.error, fmt, ap);
    va_end(ap);
    c->info.state = THORP_WS_DOWN;
    ws_release(c);
    loop_post(TEV_WS, c->id, THORP_WS_CLOSED, 0, NULL);
}

/* ---- framing: wslay's frame layer ------------------------------------------ */
/* wslay's event layer checks the UTF-8 of every text message byte by byte
 * (a third of a 1 KB notification's cost); this client uses wslay's frame
 * layer and does the message layer itself: data frames are appended to mbuf
 * until FIN, pings answered, a close answered and reported. */

static ssize_t ws_recv_cb(uint8_t *buf, size_t len, int flags, void *user) {
    conn *c = user;
    int n = evbuffer_remove(bufferevent_get_input(c->bev), buf, len);
    if (n <= 0) return WSLAY_ERR_WOULDBLOCK;
    c->info.bytes_in += n;
    return n;
}

static ssize_t ws_send_cb(const uint8_t *data, size_t len, int flags, void *user) {
    conn *c = user;
    if (bufferevent_write(c->bev, data, len) != 0) return WSLAY_ERR_INVALID_CALLBACK;
    c->info.bytes_out += len;
    return (ssize_t)len;
}

static int ws_genmask_cb(uint8_t *buf, size_t len, void *user) {
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static const struct wslay_frame_callbacks ws_callbacks = { ws_send_cb, ws_recv_cb, ws_genmask_cb };

/* One whole, masked frame (our send callback takes everything). */
static int ws_send_frame(conn *c, uint8_t opcode, const uint8_t *data, size_t len) {
    struct wslay_frame_iocb io = { 1, 0, opcode, len, 1, data, len };
    ssize_t r = wslay_frame_send(c->ws, &io);
    return r >= 0 && (size_t)r == len ? 0 : -1;
}

static int ws_append(conn *c, const uint8_t *d, size_t n) {
    size_t need = c->mlen + n;
    if (need > c->mcap) {
        size_t cap = c->mcap ? c->mcap * 2 : 16384;
        while (cap < need) cap *= 2;
        char *b = realloc(c->mbuf, cap);
        if (!b) return -1;
        c->mbuf = b;
        c->mcap = cap;
    }
    memcpy(c->mbuf + c->mlen, d, n);
    c->mlen = need;
    return 0;
}

/* A whole frame is in (control frames are collected in ctrl[]). 0, or -1 when the connection went. */
static int ws_frame_done(conn *c) {
    uint8_t op = c->f_opcode;
    if (op == WSLAY_PING) {
        c->info.pings++;
        if (ws_send_frame(c, WSLAY_PONG, c->ctrl, c->ctrl_len) != 0) { ws_fail(c, "%s: write failed", c->hostport); return -1; }
    } else if (op == WSLAY_PONG) {
        c->info.pongs++;
    } else if (op == WSLAY_CONNECTION_CLOSE) {
        int code = c->ctrl_len >= 2 ? (c->ctrl[0] << 8 | c->ctrl[1]) : WSLAY_CODE_NO_STATUS_RCVD;
        c->info.close_code = code;
        ws_send_frame(c, WSLAY_CONNECTION_CLOSE, c->ctrl, c->ctrl_len >= 2 ? 2 : 0);
        ws_fail(c, "%s: the server closed the WebSocket (close %d)", c->hostport, code);
        return -1;
    } else if (c->f_fin) { /* the last frame of a data message */
        ws_queue_push(c->id, (const uint8_t *)c->mbuf, c->mlen, c->t_read);
        c->info.messages++;
        c->in_msg = 0;
        c->mlen = 0;
        if (c->mcap > (1u << 20)) { free(c->mbuf); c->mbuf = NULL; c->mcap = 0; } /* after a huge one */
    }
    return 0;
}

static int ws_protocol_error(conn *c, const char *what) {
    c->info.close_code = WSLAY_CODE_PROTOCOL_ERROR;
    uint8_t code[2] = { WSLAY_CODE_PROTOCOL_ERROR >> 8, WSLAY_CODE_PROTOCOL_ERROR & 0xff };
    ws_send_frame(c, WSLAY_CONNECTION_CLOSE, code, 2);
    ws_fail(c, "%s: WebSocket protocol error from the server (%s)", c->hostport, what);
    return -1;
}

/* Read every frame the input holds. 0, or -1 when the connection went. */
static int ws_read_frames(conn *c) {
    for (;;) {
        struct wslay_frame_iocb io;
        memset(&io, 0, sizeof io);
        ssize_t r = wslay_frame_recv(c->ws, &io);
        if (r == WSLAY_ERR_WANT_READ) return 0;
        if (r < 0) return ws_protocol_error(c, "a malformed frame");
        if (!c->in_frame) { /* a new frame: its header */
            if (io.rsv || io.mask) return ws_protocol_error(c, io.mask ? "a masked frame" : "reserved bits set");
            int ctrl = (io.opcode & 0x8) != 0;
            if (ctrl) {
                if (io.opcode > WSLAY_PONG || !io.fin || io.payload_length > 125)
                    return ws_protocol_error(c, "a bad control frame");
            } else if (io.opcode == WSLAY_CONTINUATION_FRAME) {
                if (!c->in_msg) return ws_protocol_error(c, "a continuation without a message");
            } else if (io.opcode == WSLAY_TEXT_FRAME || io.opcode == WSLAY_BINARY_FRAME) {
                if (c->in_msg) return ws_protocol_error(c, "a new message inside a fragmented one");
                c->in_msg = 1;
                c->mlen = 0;
            } else {
                return ws_protocol_error(c, "an unknown opcode");
            }
            if (!ctrl && c->mlen + io.payload_length > c->max_message) {
                c->info.close_code = WSLAY_CODE_MESSAGE_TOO_BIG;
                uint8_t code[2] = { WSLAY_CODE_MESSAGE_TOO_BIG >> 8, WSLAY_CODE_MESSAGE_TOO_BIG & 0xff };
                ws_send_frame(c, WSLAY_CONNECTION_CLOSE, code, 2);
                ws_fail(c, "%s: a message exceeded max_message_bytes (%llu)", c->hostport,
                        (unsigned long long)c->max_message);
                return -1;
            }
            c->in_frame = 1;
            c->f_opcode = io.opcode;
            c->f_fin = io.fin;
            c->f_left = io.payload_length;
            c->ctrl_len = 0;
        }
        if (io.data_length) {
            if (c->f_opcode & 0x8) {
                memcpy(c->ctrl + c->ctrl_len, io.data, io.data_length);
                c->ctrl_len += io.data_length;
            } else if (ws_append(c, io.data, io.data_length) != 0) {
                ws_fail(c, "%s: out of memory for a %llu-byte message", c->hostport, (unsigned long long)c->f_left);
                return -1;
            }
            c->f_left -= io.data_length;
        }
        if (c->f_left == 0) {
            c->in_frame = 0;
            c->info.last_rx = c->t_read;
            if (ws_frame_done(c) != 0) return -1;
        }
    }
}

/* ---- the upgrade ----------------------------------------------------------- */

static void ws_b64(const unsigned char *in, int n, char *out) { EVP_EncodeBlock((unsigned char *)out, in, n); }

static const char *ws_header(const char *hdrs, const char *name, size_t *vlen) {
    size_t nl = strlen(name);
    for (const char *p = strstr(hdrs, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (!strncasecmp(h, name, nl) && h[nl] == ':') {
            const char *v = h + nl + 1;
            while (*v == ' ' || *v == '\t') v++;
            const char *e = strstr(v, "\r\n");
            *vlen = e ? (size_t)(e - v) : strlen(v);
            while (*vlen && (v[*vlen - 1] == ' ' || v[*vlen - 1] == '\t')) (*vlen)--;
            return v;
        }
    }
    return NULL;
}

static void ws_send_upgrade(conn *c) {
    unsigned char raw[16], digest[SHA_DIGEST_LENGTH];
    RAND_bytes(raw, sizeof raw);
    ws_b64(raw, sizeof raw, c->key);
    char cat[96];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", c->key);
    SHA1((const unsigned char *)cat, strlen(cat), digest);
    ws_b64(digest, sizeof digest, c->accept);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUser-Agent: thorp\r\n%s\r\n",
                        c->path, c->hostport, c->key, c->headers ? c->headers : "");
}

/* 1 = upgraded (frames may follow in the buffer), 0 = need more, -1 = failed */
static int ws_read_upgrade(conn *c) {
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > MAX_HEADER) {
            ws_fail(c, "%s: the upgrade answer has no end of headers within %d bytes", c->hostport, MAX_HEADER);
            return -1;
        }
        return 0;
    }
    size_t hl = (size_t)end.pos + 4;
    char *h = malloc(hl + 1);
    evbuffer_remove(in, h, hl);
    h[hl] = 0;
    c->info.bytes_in += hl;
    int status = 0;
    sscanf(h, "HTTP/%*d.%*d %d", &status);
    c->info.http_status = status;
    size_t al = 0;
    const char *acc = ws_header(h, "Sec-WebSocket-Accept", &al);
    int ok = 0;
    if (status != 101) {
        ws_fail(c, "%s: not a WebSocket endpoint: the upgrade was answered with HTTP %d (expected 101)",
                c->hostport, status);
    } else if (!acc || al != strlen(c->accept) || memcmp(acc, c->accept, al)) {
        ws_fail(c, "%s: the upgrade answer has a wrong or missing Sec-WebSocket-Accept", c->hostport);
    } else {
        ok = 1;
    }
    free(h);
    if (!ok) return -1;
    if (wslay_frame_context_init(&c->ws, &ws_callbacks, c) != 0) {
        ws_fail(c, "%s: out of memory", c->hostport);
        return -1;
    }
    c->info.state = THORP_WS_UP;
    c->info.opened_at = c->info.last_rx = thorp_now();
    loop_post(TEV_WS, c->id, THORP_WS_OPEN, 0, NULL);
    return 1;
}

/* ---- libevent callbacks ---------------------------------------------------- */

static void ws_on_read(struct bufferevent *bev, void *arg) {
    conn *c = arg;
    c->t_read = thorp_now();
    if (!c->ws && ws_read_upgrade(c) != 1) return;
    if (evbuffer_get_length(bufferevent_get_input(bev)) == 0) return;
    ws_read_frames(c);
}

static void ws_on_event(struct bufferevent *bev, short what, void *arg) {
    conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->tls) {
            SSL *ssl = bufferevent_openssl_get_ssl(bev);
            long v = SSL_get_verify_result(ssl);
            if (v != X509_V_OK) {
                ws_fail(c, "%s: TLS certificate not accepted: %s", c->hostport, X509_verify_cert_error_string(v));
                return;
            }
        }
        ws_send_upgrade(c);
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        int dns = bufferevent_socket_get_dns_error(bev);
        unsigned long se = c->tls ? bufferevent_get_openssl_error(bev) : 0;
        if (dns) ws_fail(c, "%s: cannot resolve host: %s", c->hostport, evutil_gai_strerror(dns));
        else if (se) {
            char b[200];
            ERR_error_string_n(se, b, sizeof b);
            ws_fail(c, "%s: TLS error: %s", c->hostport, b);
        } else if (c->info.state == THORP_WS_CONNECTING && !c->info.http_status) {
            ws_fail(c, "%s: connection failed: %s", c->hostport,
                    what & BEV_EVENT_EOF ? "closed by the server" : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        } else {
            ws_fail(c, "%s: connection %s", c->hostport,
                    what & BEV_EVENT_EOF ? "closed by the server" : "reset");
        }
    }
}

static void ws_on_tick(evutil_socket_t fd, short what, void *arg) {
    conn *c = arg;
    double t = thorp_now();
    if (c->info.state == THORP_WS_CONNECTING) {
        if (t - c->info.started_at > c->connect_timeout_ms)
            ws_fail(c, "%s: no WebSocket within %.0f ms (connect timeout)", c->hostport, c->connect_timeout_ms);
        return;
    }
    if (c->info.state != THORP_WS_UP) return;
    if (t - c->info.last_rx > c->idle_timeout_ms) {
        ws_fail(c, "%s: nothing received for %.0f ms (ping timeout)", c->hostport, t - c->info.last_rx);
        return;
    }
    if (t - c->info.last_rx >= c->ping_interval_ms && t - c->last_ping >= c->ping_interval_ms) {
        c->last_ping = t;
        if (ws_send_frame(c, WSLAY_PING, (const uint8_t *)"thorp", 5) != 0) ws_fail(c, "%s: write failed", c->hostport);
    }
}

/* ---- the API ---------------------------------------------------------------- */

static int ws_parse_url(conn *c, const char *url, char *err, int errlen) {
    const char *p;
    if (!strncasecmp(url, "wss://", 6)) { c->tls = 1; p = url + 6; c->port = 443; }
    else if (!strncasecmp(url, "ws://", 5)) { c->tls = 0; p = url + 5; c->port = 80; }
    else { snprintf(err, errlen, "ws_url must start with ws:// or wss://"); return -1; }
    const char *hs = p, *he;
    if (*p == '[') { hs = p + 1; he = strchr(hs, ']'); if (!he) goto bad; p = he + 1; }
    else { he = p + strcspn(p, ":/?#"); p = he; }
    if (he == hs || (size_t)(he - hs) >= sizeof c->host) goto bad;
    memcpy(c->host, hs, he - hs);
    c->host[he - hs] = 0;
    int explicit_port = 0;
    if (*p == ':') {
        char *e;
        long port = strtol(p + 1, &e, 10);
        if (e == p + 1 || port < 1 || port > 65535) goto bad;
        c->port = (int)port;
        explicit_port = 1;
        p = e;
    }
    if (*p && *p != '/' && *p != '?') goto bad;
    snprintf(c->path, sizeof c->path, "%s%s", *p == '/' ? "" : "/", p);
    char *hash = strchr(c->path, '#');
    if (hash) *hash = 0;
    int v6 = strchr(c->host, ':') != NULL;
    if (explicit_port) snprintf(c->hostport, sizeof c->hostport, v6 ? "[%s]:%d" : "%s:%d", c->host, c->port);
    else snprintf(c->hostport, sizeof c->hostport, v6 ? "[%s]" : "%s", c->host);
    return 0;
bad:
    snprintf(err, errlen, "ws_url is not a valid ws:// or wss:// URL (host and optional port expected)");
    return -1;
}

/* "Name: value" lines separated by \n (config `headers`) as \r\n-ended header lines;
 * CRs dropped and empty lines skipped, so a value cannot end the header block. */
static char *ws_header_lines(const char *h) {
    if (!h || !*h) return NULL;
    size_t n = strlen(h);
    char *out = malloc(2 * n + 3), *o = out;
    if (!out) return NULL;
    int bol = 1;
    for (const char *p = h; *p; p++) {
        if (*p == '\r') continue;
        if (*p == '\n') {
            if (!bol) { *o++ = '\r'; *o++ = '\n'; bol = 1; }
            continue;
        }
        *o++ = *p;
        bol = 0;
    }
    if (!bol) { *o++ = '\r'; *o++ = '\n'; }
    *o = 0;
    return out;
}

int64_t thorp_ws_open(const char *url, double connect_timeout_ms, double ping_interval_ms, double idle_timeout_ms,
                      double max_message, const char *ca_file, const char *headers, char *err, int errlen) {
    if (ws_init() != 0) { snprintf(err, errlen, "cannot start the DNS resolver"); return -1; }
    conn *c = calloc(1, sizeof *c);
    if (!c) { snprintf(err, errlen, "out of memory"); return -1; }
    if (ws_parse_url(c, url, err, errlen) != 0) { free(c); return -1; }
    c->headers = ws_header_lines(headers);
    c->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 5000;
    c->ping_interval_ms = ping_interval_ms > 0 ? ping_interval_ms : 5000;
    c->idle_timeout_ms = idle_timeout_ms > 0 ? idle_timeout_ms : 3 * c->ping_interval_ms;
    c->max_message = max_message >= 1024 ? (uint64_t)max_message : 1024;
    int opts = BEV_OPT_CLOSE_ON_FREE;
    if (c->tls) {
        SSL_CTX *ctx;
        if (ca_file && *ca_file) ctx = c->own_ctx = ws_ssl_ctx(ca_file, err, errlen);
        else ctx = ws.ssl ? ws.ssl : (ws.ssl = ws_ssl_ctx(NULL, err, errlen));
        if (!ctx) { free(c->headers); free(c); return -1; }
        SSL *ssl = SSL_new(ctx);
        SSL_set_tlsext_host_name(ssl, c->host);
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, c->host) != 1) { /* a name, not an address */
            X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            SSL_set1_host(ssl, c->host);
        }
        c->bev = bufferevent_openssl_socket_new(loop_base(), -1, ssl, BUFFEREVENT_SSL_CONNECTING, opts);
        if (c->bev) bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    } else {
        c->bev = bufferevent_socket_new(loop_base(), -1, opts);
    }
    if (!c->bev) {
        snprintf(err, errlen, "cannot create a socket");
        if (c->own_ctx) SSL_CTX_free(c->own_ctx);
        free(c->headers);
        free(c);
        return -1;
    }
    c->id = ws.next_id++;
    c->info.state = THORP_WS_CONNECTING;
    c->info.started_at = thorp_now();
    c->next = ws.conns;
    ws.conns = c;
    bufferevent_setcb(c->bev, ws_on_read, NULL, ws_on_event, c);
    /* 256 KB a turn (libevent reads 4 KB): a burst comes in a few turns, each small
     * enough that the handlers (bus workers, 1 ms budget a turn) keep up with it */
    bufferevent_set_max_single_read(c->bev, 256 << 10);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    double tick = c->ping_interval_ms < c->idle_timeout_ms ? c->ping_interval_ms : c->idle_timeout_ms;
    if (c->connect_timeout_ms < tick) tick = c->connect_timeout_ms;
    tick /= 4;
    if (tick < 5) tick = 5;
    c->tick = event_new(loop_base(), -1, EV_PERSIST, ws_on_tick, c);
    struct timeval tv = { (long)(tick / 1000), (long)((long)tick % 1000) * 1000 };
    event_add(c->tick, &tv);
    if (bufferevent_socket_connect_hostname(c->bev, ws.dns, AF_UNSPEC, c->host, c->port) != 0)
        ws_fail(c, "%s: cannot start connecting", c->hostport);
    return c->id;
}

int thorp_ws_send(int64_t id, const char *data, size_t len) {
    conn *c = ws_find(id);
    if (!c || c->info.state != THORP_WS_UP) return -1;
    if (ws_send_frame(c, WSLAY_TEXT_FRAME, (const uint8_t *)data, len) != 0) {
        ws_fail(c, "%s: write failed", c->hostport);
        return -1;
    }
    return 0;
}

void thorp_ws_close(int64_t id, const char *reason) {
    conn *c = ws_find(id);
    if (!c || c->info.state == THORP_WS_DOWN) return;
    if (c->ws && c->bev) { /* a close frame, best effort: the socket goes right after */
        uint8_t code[2] = { WSLAY_CODE_NORMAL_CLOSURE >> 8, WSLAY_CODE_NORMAL_CLOSURE & 0xff };
        ws_send_frame(c, WSLAY_CONNECTION_CLOSE, code, 2);
        c->info.close_code = WSLAY_CODE_NORMAL_CLOSURE;
    }
    ws_fail(c, "%s: %s", c->hostport, reason && *reason ? reason : "closed");
}

void thorp_ws_free(int64_t id) {
    conn **pp = &ws.conns;
    while (*pp && (*pp)->id != id) pp = &(*pp)->next;
    if (!*pp) return;
    conn *c = *pp;
    *pp = c->next;
    ws_release(c);
    free(c->headers);
    free(c);
}

int thorp_ws_info_get(int64_t id, thorp_ws_info *out) {
    conn *c = ws_find(id);
    if (!c) return -1;
    *out = c->info;
    return 0;
}

void thorp_ws_test_reset(int64_t id) {
    conn *c = ws_find(id);
    if (c && c->info.state != THORP_WS_DOWN) ws_fail(c, "%s: connection reset (test)", c->hostport);
}
