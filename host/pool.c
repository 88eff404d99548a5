/* pool: libcurl multi on libevent. See pool.h. */
#include "pool.h"

#include <curl/curl.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <event2/event.h>
#include "log.h"
#include "loop.h"

/* A result with what only C needs: its body buffer's capacity, and the link
 * of the free list (results Lua has freed are reused, body buffer included). */
typedef struct resbox {
    thorp_http_result res; /* first: a thorp_http_result * is a resbox * */
    size_t cap;
    struct resbox *next;
} resbox;
#define RES_KEEP 256            /* results kept for reuse */
#define RES_KEEP_BODY (64 << 10) /* larger body buffers are freed, not kept */

typedef struct req {
    CURL *easy;
    thorp_http_result *res;
    struct curl_slist *hdrs; /* this request's own headers (an endpoint's `headers`), or NULL */
    struct req *next;
} req;

typedef struct sock {
    struct event *ev;
    short kind; /* the events it waits for now: curl often repeats the same interest */
} sock;

#define EASY_KEEP 64
#define HOST_LIMIT 256 /* curl connections per host; rpc.lua keeps each endpoint's in-flight below it */

static struct {
    CURLM *multi;
    CURL *spare[EASY_KEEP]; /* finished easy handles, reset and reused */
    int nspare;
    struct event *timer;
    req *reqs; /* in flight */
    int64_t next_id;
    int inflight;
    int closing; /* at exit: results are freed here, nobody is left to read them */
    struct curl_slist *headers;
    resbox *res_free; /* freed results, for the next requests */
    int nres_free;
} pool;

static void pool_check_done(void);

static void pool_on_free(void *arg) {
    (void)arg;
    pool.closing = 1;
    while (pool.reqs) thorp_pool_cancel(pool.reqs->res->id);
    while (pool.nspare > 0) curl_easy_cleanup(pool.spare[--pool.nspare]);
    curl_slist_free_all(pool.headers);
    while (pool.res_free) {
        resbox *b = pool.res_free;
        pool.res_free = b->next;
        free(b->res.body);
        free(b);
    }
    if (pool.timer) event_free(pool.timer);
    if (pool.multi) curl_multi_cleanup(pool.multi);
    curl_global_cleanup();
    memset(&pool, 0, sizeof pool);
}

static void pool_on_timeout(evutil_socket_t fd, short what, void *arg) {
    int running;
    curl_multi_socket_action(pool.multi, CURL_SOCKET_TIMEOUT, 0, &running);
    pool_check_done();
}

static void pool_on_socket_event(evutil_socket_t fd, short what, void *arg) {
    int running, action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
    curl_multi_socket_action(pool.multi, fd, action, &running);
    pool_check_done();
    if (running <= 0 && pool.timer) evtimer_del(pool.timer);
}

static int pool_socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
    sock *sk = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            event_free(sk->ev);
            free(sk);
            curl_multi_assign(pool.multi, s, NULL);
        }
        return 0;
    }
    short kind = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST;
    if (!sk) {
        sk = calloc(1, sizeof *sk);
        if (!sk) return -1; /* curl fails this transfer */
        sk->ev = event_new(loop_base(), s, kind, pool_on_socket_event, NULL);
        if (!sk->ev) { free(sk); return -1; }
        curl_multi_assign(pool.multi, s, sk);
    } else if (sk->kind == kind) { /* the same interest again: nothing to change (no epoll_ctl) */
        return 0;
    } else { /* same socket, new interest: reuse the event rather than reallocate it */
        event_del(sk->ev);
        event_assign(sk->ev, loop_base(), s, kind, pool_on_socket_event, NULL);
    }
    sk->kind = kind;
    event_add(sk->ev, NULL);
    return 0;
}

static int pool_timer_cb(CURLM *multi, long timeout_ms, void *userp) {
    if (timeout_ms < 0) {
        evtimer_del(pool.timer);
    } else {
        struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
        evtimer_add(pool.timer, &tv);
    }
    return 0;
}

static int pool_init(void) {
    if (pool.multi) return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
    pool.multi = curl_multi_init();
    pool.timer = evtimer_new(loop_base(), pool_on_timeout, NULL);
    if (!pool.multi || !pool.timer) {
        if (pool.timer) event_free(pool.timer);
        if (pool.multi) curl_multi_cleanup(pool.multi);
        pool.multi = NULL;
        pool.timer = NULL;
        curl_global_cleanup();
        return -1;
    }
    curl_multi_setopt(pool.multi, CURLMOPT_SOCKETFUNCTION, pool_socket_cb);
    curl_multi_setopt(pool.multi, CURLMOPT_TIMERFUNCTION, pool_timer_cb);
    curl_multi_setopt(pool.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    curl_multi_setopt(pool.multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)HOST_LIMIT);
    curl_multi_setopt(pool.multi, CURLMOPT_MAXCONNECTS, 256L);
    pool.next_id = 1;
    loop_on_free(pool_on_free, NULL);
    return 0;
}

static size_t pool_on_body(char *data, size_t size, size_t n, void *userp) {
    req *r = userp;
    resbox *box = (resbox *)r->res;
    size_t len = size * n, need = r->res->body_len + len + 1;
    if (need > 64u << 20) return 0; /* a 64 MiB answer is not an RPC answer */
    if (need > box->cap) {
        size_t cap = box->cap ? box->cap * 2 : 4096;
        while (cap < need) cap *= 2;
        char *b = realloc(r->res->body, cap);
        if (!b) return 0;
        r->res->body = b;
        box->cap = cap;
    }
    memcpy(r->res->body + r->res->body_len, data, len);
    r->res->body_len += len;
    r->res->body[r->res->body_len] = 0;
    return len;
}

static size_t pool_on_header(char *data, size_t size, size_t n, void *userp) {
    req *r = userp;
    size_t len = size * n;
    if (len > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r->res->retry_after_ms = thorp_pool_parse_retry_after(data + 12, len - 12, ts.tv_sec * 1e3 + ts.tv_nsec / 1e6);
    }
    return len;
}

/* Retry-After = HTTP-date / delay-seconds (RFC 9110 10.2.3); delay-seconds is
 * 1*DIGIT, so "inf", "1e400", "-5" and "1.5" are garbage. HTTP-date takes the
 * three forms of RFC 9110 5.6.7 (IMF-fixdate, RFC 850, asctime), always GMT. */
double thorp_pool_parse_retry_after(const char *s, size_t len, double now_wall_ms) {
    char buf[64];
    while (len > 0 && (*s == ' ' || *s == '\t')) s++, len--;
    while (len > 0 && isspace((unsigned char)s[len - 1])) len--;
    if (len == 0 || len >= sizeof buf || memchr(s, 0, len)) return -1; /* strptime would stop at a NUL */
    memcpy(buf, s, len);
    buf[len] = 0;
    if (isdigit((unsigned char)buf[0])) {
        double secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)buf[i])) return -1;
            if (secs < 1e9) secs = secs * 10 + (buf[i] - '0'); /* saturate: 1e9 s is "forever" already */
        }
        return secs * 1000 > 1e12 ? 1e12 : secs * 1000;
    }
    static const char *const forms[] = { "%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                         "%a %b %e %H:%M:%S %Y" };
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(buf, forms[f], &tm);
        if (!end || *end) continue;
        double ms = (double)timegm(&tm) * 1e3 - now_wall_ms;
        if (ms < 0) return 0;
        return ms > 1e12 ? 1e12 : ms;
    }
    return -1;
}

static void pool_finish(req *r, int cancelled) {
    req **pp = &pool.reqs;
    while (*pp && *pp != r) pp = &(*pp)->next;
    if (*pp) *pp = r->next;
    pool.inflight--;
    thorp_http_result *res = r->res;
    if (!cancelled) {
        long status = 0;
        double t = 0, c = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &t);
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME, &c);
        long reqsize = 0;
        curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &reqsize);
        res->sent = reqsize > 0 || status > 0;
        res->http_status = (int)status;
        res->total_ms = t * 1000;
        res->connect_ms = c * 1000;
    }
    res->cancelled = cancelled;
    curl_multi_remove_handle(pool.multi, r->easy);
    if (pool.nspare < EASY_KEEP && !pool.closing) {
        /* no curl_easy_reset: the shared options stay (pool_easy_new), the next request sets
         * its own again, and a reset would free and rebuild the handle's settings every call */
        pool.spare[pool.nspare++] = r->easy;
    } else {
        curl_easy_cleanup(r->easy);
    }
    curl_slist_free_all(r->hdrs);
    free(r);
    if (pool.closing) thorp_pool_result_free(res);
    else loop_post(TEV_RPC, res->id, res->curl_code, res->total_ms, res);
}

struct curl_slist *pool_headers_append(struct curl_slist *list, const char *lines) {
    for (const char *p = lines; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[8192];
        if (n > 0 && n < sizeof line) {
            if (nl) { /* curl copies a C string: only a line with more after it needs its own */
                memcpy(line, p, n);
                line[n] = 0;
            }
            struct curl_slist *l = curl_slist_append(list, nl ? line : p);
            if (l) list = l;
        }
        p += n + (nl ? 1 : 0);
    }
    return list;
}

static int (*foreign_done)(void *easy, int curl_code);
void pool_set_foreign_done(int (*fn)(void *easy, int curl_code)) { foreign_done = fn; }
void *pool_multi(void) { return pool_init() == 0 ? pool.multi : NULL; }

static void pool_check_done(void) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(pool.multi, &left))) {
        if (msg->msg != CURLMSG_DONE) continue;
        if (foreign_done && foreign_done(msg->easy_handle, (int)msg->data.result)) continue;
        req *r = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        r->res->curl_code = (int)msg->data.result;
        if (msg->data.result != CURLE_OK && !r->res->error[0])
            snprintf(r->res->error, sizeof r->res->error, "%s", curl_easy_strerror(msg->data.result));
        pool_finish(r, 0);
    }
}

/* A zeroed result, its body buffer (if any, from a reused one) kept empty. */
static thorp_http_result *pool_result_new(void) {
    resbox *b = pool.res_free;
    if (!b) return calloc(1, sizeof(resbox));
    pool.res_free = b->next;
    pool.nres_free--;
    char *body = b->res.body;
    size_t cap = b->cap;
    memset(b, 0, offsetof(resbox, res.error) + 1); /* every field, and error[0]: the rest is unread until written */
    b->res.body = body;
    b->cap = cap;
    b->next = NULL;
    if (body) body[0] = 0;
    return &b->res;
}

/* A new easy handle with the options every request shares. Handles are reused
 * without curl_easy_reset, so these stay set; each request sets only its own
 * (URL, headers, body, timeouts, result pointers). */
static CURL *pool_easy_new(void) {
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, pool_on_body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, pool_on_header);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "thorp");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    return e;
}

int64_t thorp_pool_request(const char *url, const char *body, size_t len, double timeout_ms,
                           double connect_timeout_ms, char *err, int errlen) {
    return thorp_pool_request_headers(url, body, len, timeout_ms, connect_timeout_ms, NULL, err, errlen);
}

int64_t thorp_pool_request_headers(const char *url, const char *body, size_t len, double timeout_ms,
                                   double connect_timeout_ms, const char *headers, char *err, int errlen) {
    if (pool_init() != 0) {
        snprintf(err, errlen, "libcurl failed to initialise");
        return -1;
    }
    req *r = calloc(1, sizeof *r);
    if (r) r->res = pool_result_new();
    if (!r || !r->res) {
        snprintf(err, errlen, "out of memory for a request");
        free(r);
        return -1;
    }
    r->res->id = pool.next_id++;
    r->res->retry_after_ms = -1;
    r->easy = pool.nspare > 0 ? pool.spare[--pool.nspare] : pool_easy_new();
    if (!r->easy) {
        snprintf(err, errlen, "cannot create a curl handle");
        thorp_pool_result_free(r->res);
        free(r);
        return -1;
    }
    CURL *e = r->easy;
    if (!pool.headers) { /* the same two headers on every request: built once */
        pool.headers = curl_slist_append(NULL, "Content-Type: application/json");
        pool.headers = curl_slist_append(pool.headers, "Expect:");
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    if (headers && *headers) { /* the common two, then the endpoint's own headers (API keys) */
        for (struct curl_slist *h = pool.headers; h; h = h->next) r->hdrs = pool_headers_append(r->hdrs, h->data);
        r->hdrs = pool_headers_append(r->hdrs, headers);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs ? r->hdrs : pool.headers);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->res->error);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 1 ? timeout_ms : 1));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_timeout_ms > 1 ? connect_timeout_ms : 1));
    CURLMcode mc = curl_multi_add_handle(pool.multi, e);
    if (mc != CURLM_OK) { /* nothing was sent: the caller gets the error now, no event follows */
        snprintf(err, errlen, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
        curl_easy_cleanup(e);
        curl_slist_free_all(r->hdrs);
        thorp_pool_result_free(r->res);
        free(r);
        return -1;
    }
    r->next = pool.reqs;
    pool.reqs = r;
    pool.inflight++;
    return r->res->id;
}

void thorp_pool_cancel(int64_t id) {
    for (req *r = pool.reqs; r; r = r->next) {
        if (r->res->id == id) {
            pool_finish(r, 1);
            return;
        }
    }
}

void thorp_pool_result_free(thorp_http_result *r) {
    if (!r) return;
    resbox *b = (resbox *)r;
    if (!pool.closing && pool.multi && pool.nres_free < RES_KEEP) {
        if (b->cap > RES_KEEP_BODY) {
            free(r->body);
            r->body = NULL;
            b->cap = 0;
        }
        b->next = pool.res_free;
        pool.res_free = b;
        pool.nres_free++;
        return;
    }
    free(r->body);
    free(b);
}

int thorp_pool_inflight(void) { return pool.inflight; }

int thorp_pool_host_limit(void) { return HOST_LIMIT; }
