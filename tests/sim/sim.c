/* thorp-sim: a local Solana JSON-RPC simulator for tests, the demo and bench.
 *
 *   build/thorp-sim [--count N] [--base-port P] [--host ADDR]
 *
 * Starts N endpoints (ports P, P+1, ...; P = 0 picks free ports) and prints
 * one line "SIM_READY url1,url2,..." on stdout once all listen. Each endpoint
 * answers JSON-RPC 2.0 (single and batch) for the methods a trading bot uses,
 * with a slot that advances every 400 ms like mainnet.
 *
 * Faults are set per endpoint on its own port, so tests can make one
 * provider misbehave while the others stay healthy:
 *   POST /admin/fault  {"latency_ms":200,"status":429,"retry_after":1,
 *                       "error_rate":0.5,"malformed":true,"hang":true,
 *                       "down":true,"truncate":true,"slot_lag":100,"rpc_error":-32005,
 *                       "retry_after_date":30,"retry_after_raw":"inf","body":"{...$id...}",
 *                       "nest":100000,"missing_method":"getVersion"}
 *     (keys not given keep their value; "reset":true clears all faults)
 *     retry_after_date: seconds from now, sent as an HTTP-date; retry_after_raw:
 *     the header verbatim; body: every RPC answer is this text, "$id" replaced
 *     by the request's id; nest: the result is an array nested that deep;
 *     missing_method: that method answers -32601 (method not found) here.
 *   POST /admin/cascade {"period_ms":500,"retry_after":1,"slot_lag":300}
 *     (on any port) every period, clear all faults and switch the next fault
 *     of hang, reset, 5xx, 429 + Retry-After, malformed JSON, slot lag onto the
 *     next endpoint in turn; "period_ms":0 stops and clears. Answers
 *     {"switches":n,"endpoint":i,"fault":"name"} (the current one).
 *   POST /admin/reset  clear faults and counters
 *   GET  /admin/stats  {"requests":n,"send_transaction":n,"batches":n,...}
 * "down" resets every RPC connection without an answer (a transport error);
 * "truncate" sends half an answer and resets; "hang" never answers; "status"
 * answers that HTTP status with an error body.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include "sim.h"
#include "sim_ws.h"

typedef struct fault {
    double latency_ms, error_rate;
    int status, retry_after, malformed, hang, down, rpc_error, truncate;
    long slot_lag, nest;
    int retry_after_date, has_retry_after_date;
    char retry_after_raw[64], missing_method[64];
    char *body; /* owned; freed by fault_clear */
} fault;

typedef struct endpoint {
    int index, port;
    struct evhttp *http;
    fault f;
    long requests, send_tx, batches, errors, by_method_get_slot;
} endpoint;

/* A reply held back by latency_ms or hang; dropped if its connection closes. */
typedef struct pending {
    struct endpoint *ep;
    struct evhttp_request *req;
    struct evhttp_connection *conn;
    struct event *timer;
    struct evbuffer *body;
    int status;
    LIST_ENTRY(pending) link;
} pending;

static struct event_base *base;
static LIST_HEAD(, pending) pendings = LIST_HEAD_INITIALIZER(pendings);
static double t_start;
static unsigned long sig_counter;
static endpoint *eps;
static int n_eps;

/* the cascade: faults switched onto one endpoint in turn */
static struct {
    struct event *timer;
    double period_ms;
    int retry_after, switches, current;
    long slot_lag;
} cascade;
static const char *const cascade_names[] = { "hang", "reset", "5xx", "429", "malformed", "slot_lag" };

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* the simulator's own stalls: the longest gap between 10 ms ticks since /admin/stats last read it */
static double tick_last, tick_gap_max;
static void tick(evutil_socket_t fd, short what, void *arg) {
    double t = now_ms();
    if (tick_last > 0 && t - tick_last > tick_gap_max) tick_gap_max = t - tick_last;
    tick_last = t;
}
static long current_slot(const endpoint *ep) { return simtx_slot() - ep->f.slot_lag; }

/* ---- tiny JSON scanning: enough for requests thorp sends ---------------- */

const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

/* end of the JSON value starting at p (string, number, literal, object, array) */
const char *value_end(const char *p, const char *e) {
    int depth = 0, in_str = 0;
    for (const char *q = p; q < e; q++) {
        char c = *q;
        if (in_str) {
            if (c == '\\') q++;
            else if (c == '"') { in_str = 0; if (depth == 0) return q + 1; }
        } else if (c == '"') in_str = 1;
        else if (c == '{' || c == '[') depth++;
        else if (c == '}' || c == ']') { if (depth == 0) return q; if (--depth == 0) return q + 1; }
        else if (depth == 0 && (c == ',' || c == ' ' || c == '\n')) return q;
    }
    return e;
}

/* Find "key": at the top level of object [p, e); return the value span. */
int obj_get(const char *p, const char *e, const char *key, const char **vs, const char **ve) {
    size_t kl = strlen(key);
    p = skip_ws(p, e);
    if (p >= e || *p != '{') return 0;
    p++;
    while (p < e) {
        p = skip_ws(p, e);
        if (p >= e || *p == '}') return 0;
        if (*p != '"') return 0;
        const char *ks = p + 1, *kend = value_end(p, e) - 1;
        p = skip_ws(kend + 1, e);
        if (p >= e || *p != ':') return 0;
        p = skip_ws(p + 1, e);
        const char *v_end = value_end(p, e);
        if ((size_t)(kend - ks) == kl && memcmp(ks, key, kl) == 0) { *vs = p; *ve = v_end; return 1; }
        p = skip_ws(v_end, e);
        if (p < e && *p == ',') p++;
    }
    return 0;
}

static int get_num(const char *body, size_t len, const char *key, double *out) {
    const char *vs, *ve;
    if (!obj_get(body, body + len, key, &vs, &ve)) return 0;
    if (ve - vs >= 4 && memcmp(vs, "true", 4) == 0) *out = 1;
    else if (ve - vs >= 5 && memcmp(vs, "false", 5) == 0) *out = 0;
    else *out = strtod(vs, NULL);
    return 1;
}

/* ---- JSON-RPC ------------------------------------------------------------ */

void rpc_error(struct evbuffer *out, const char *id, int idlen, int code, const char *msg) {
    evbuffer_add_printf(out, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"error\":{\"code\":%d,\"message\":\"%s\"}}",
                        idlen, id, code, msg);
}

/* getSignaturesForAddress: the logs ledger newest first, down to (not including) opts.until,
 * at most opts.limit (1000); every address sees the same ledger. */
static void sim_signatures(const char *ps, const char *pe, const char *is, int idlen, struct evbuffer *out) {
    long until = -1, limit = 1000;
    const char *u = ps ? memmem(ps, pe - ps, "\"until\"", 7) : NULL;
    if (u && (u = memmem(u, pe - u, "simsig", 6))) until = strtol(u + 6, NULL, 10);
    const char *l = ps ? memmem(ps, pe - ps, "\"limit\"", 7) : NULL;
    if (l) limit = strtol(l + 8, NULL, 10);
    if (limit <= 0 || limit > 1000) limit = 1000;
    evbuffer_add_printf(out, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":[", idlen, is);
    long n = 0, seq, sslot;
    for (long i = sim_ws_logs_count() - 1; i >= 0 && n < limit && sim_ws_logs(i, &seq, &sslot) && seq > until; i--, n++)
        evbuffer_add_printf(out, "%s{\"signature\":\"simsig%ld\",\"slot\":%ld,\"err\":null,\"memo\":null,"
                            "\"blockTime\":1700000000,\"confirmationStatus\":\"confirmed\"}", n ? "," : "", seq, sslot);
    evbuffer_add_printf(out, "]}");
}

static void rpc_one(endpoint *ep, const char *p, const char *e, struct evbuffer *out) {
    const char *ms, *me, *is = "null", *ie = is + 4, *ps = NULL, *pe = NULL;
    obj_get(p, e, "id", &is, &ie);
    int idlen = (int)(ie - is);
    if (!obj_get(p, e, "method", &ms, &me) || *ms != '"') {
        rpc_error(out, is, idlen, -32600, "Invalid request");
        return;
    }
    obj_get(p, e, "params", &ps, &pe);
    char method[64];
    int ml = (int)(me - ms) - 2;
    if (ml <= 0 || ml >= (int)sizeof method) { rpc_error(out, is, idlen, -32601, "Method not found"); return; }
    memcpy(method, ms + 1, ml);
    method[ml] = 0;
    ep->requests++;
    if (ep->f.missing_method[0] && !strcmp(method, ep->f.missing_method)) {
        rpc_error(out, is, idlen, -32601, "Method not found");
        return;
    }
    if (ep->f.rpc_error) {
        rpc_error(out, is, idlen, ep->f.rpc_error,
                  ep->f.rpc_error == -32005 ? "Node is unhealthy" : "simulated error");
        return;
    }
    int led = simtx_rpc(method, is, idlen, ps, pe, ep->f.slot_lag, out); /* the ledger: sim_tx.c */
    if (led) { if (led == 2) ep->send_tx++; return; }
    long slot = current_slot(ep);
    const char *pre = "{\"jsonrpc\":\"2.0\",\"id\":";
    if (!strcmp(method, "getSlot")) {
        ep->by_method_get_slot++;
        evbuffer_add_printf(out, "%s%.*s,\"result\":%ld}", pre, idlen, is, slot);
    } else if (!strcmp(method, "getBlockHeight")) {
        evbuffer_add_printf(out, "%s%.*s,\"result\":%ld}", pre, idlen, is, slot - 20000000L);
    } else if (!strcmp(method, "getVersion")) {
        evbuffer_add_printf(out, "%s%.*s,\"result\":{\"solana-core\":\"1.18.26-sim\",\"feature-set\":3469865029}}",
                            pre, idlen, is);
    } else if (!strcmp(method, "getHealth")) {
        evbuffer_add_printf(out, "%s%.*s,\"result\":\"ok\"}", pre, idlen, is);
    } else if (!strcmp(method, "getLatestBlockhash")) {
        evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":{\"blockhash\":"
                            "\"SimBlockhash%ld\",\"lastValidBlockHeight\":%ld}}}",
                            pre, idlen, is, slot, slot, slot - 20000000L + 150);
    } else if (!strcmp(method, "getBalance") || !strcmp(method, "getTokenAccountBalance")) {
        if (!ps || pe - ps < 4) { rpc_error(out, is, idlen, -32602, "Invalid params: expected an account"); return; }
        if (!strcmp(method, "getBalance"))
            evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":1500000000}}",
                                pre, idlen, is, slot);
        else
            evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":{\"amount\":"
                                "\"1000000\",\"decimals\":6,\"uiAmount\":1.0,\"uiAmountString\":\"1\"}}}",
                                pre, idlen, is, slot);
    } else if (!strcmp(method, "getSignaturesForAddress")) {
        sim_signatures(ps, pe, is, idlen, out); /* the logs ledger of tests/sim/sim_ws.c */
    } else if (!strcmp(method, "getTransaction") && ps && memmem(ps, pe - ps, "\"simsig", 7)) {
        long seq = strtol((const char *)memmem(ps, pe - ps, "\"simsig", 7) + 7, NULL, 10), sslot = slot;
        for (long i = sim_ws_logs_count() - 1, q; i >= 0 && sim_ws_logs(i, &q, &sslot) && q > seq; i--) {}
        evbuffer_add_printf(out, "%s%.*s,\"result\":{\"slot\":%ld,\"blockTime\":1700000000,\"meta\":{\"err\":null,"
                            "\"fee\":5000,\"logMessages\":[\"Program 11111111111111111111111111111111 invoke [1]\"]},"
                            "\"transaction\":{\"signatures\":[\"simsig%ld\"],\"message\":{\"accountKeys\":[],"
                            "\"instructions\":[]}}}}", pre, idlen, is, sslot, seq);
    } else if (!strcmp(method, "getProgramAccounts")) {
        evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":[{\"pubkey\":"
                            "\"SimProgramAccount1111111111111111111111111\",\"account\":{\"lamports\":2039280,"
                            "\"owner\":\"11111111111111111111111111111111\",\"executable\":false,\"rentEpoch\":0,"
                            "\"data\":[\"\",\"base64\"],\"space\":0}}]}}", pre, idlen, is, slot);
    } else if (!strcmp(method, "getAccountInfo")) {
        const char *mc = ps ? memmem(ps, pe - ps, "\"minContextSlot\"", 16) : NULL;
        if (mc && strtol(mc + 17, NULL, 10) > slot) {
            rpc_error(out, is, idlen, -32016, "Minimum context slot has not been reached");
            return;
        }
        evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":{\"lamports\":2039280,"
                            "\"owner\":\"TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA\",\"executable\":false,"
                            "\"rentEpoch\":0,\"data\":[\"\",\"base64\"]}}}", pre, idlen, is, slot);
    } else if (!strcmp(method, "sendTransaction") || !strcmp(method, "simulateTransaction")) {
        int send = method[0] == 's' && method[1] == 'e';
        if (!ps || pe - ps < 4) { rpc_error(out, is, idlen, -32602, "Invalid params: expected a transaction"); return; }
        if (memmem(ps, pe - ps, "PREFLIGHT_FAIL", 14)) {
            rpc_error(out, is, idlen, -32002, "Transaction simulation failed: Blockhash not found");
            return;
        }
        if (send) {
            ep->send_tx++;
            evbuffer_add_printf(out, "%s%.*s,\"result\":\"SimSig%lu%ld\"}", pre, idlen, is, ++sig_counter, slot);
        } else {
            evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":{\"err\":null,"
                                "\"logs\":[],\"unitsConsumed\":1500}}}", pre, idlen, is, slot);
        }
    } else if (!strcmp(method, "getSignatureStatuses")) {
        evbuffer_add_printf(out, "%s%.*s,\"result\":{\"context\":{\"slot\":%ld},\"value\":[{\"slot\":%ld,"
                            "\"confirmations\":null,\"err\":null,\"confirmationStatus\":\"confirmed\"}]}}",
                            pre, idlen, is, slot, slot - 1);
    } else {
        rpc_error(out, is, idlen, -32601, "Method not found");
    }
}

/* ---- replies, delays and connection tracking ---------------------------- */

static void pending_free(pending *pd) {
    LIST_REMOVE(pd, link);
    if (pd->timer) event_free(pd->timer);
    evbuffer_free(pd->body);
    free(pd);
}

static void pending_fire(evutil_socket_t fd, short what, void *arg) {
    pending *pd = arg;
    evhttp_send_reply(pd->req, pd->status, pd->status == 200 ? "OK" : "Error", pd->body);
    pending_free(pd);
}

static void conn_closed(struct evhttp_connection *conn, void *arg) {
    pending *pd = LIST_FIRST(&pendings), *next;
    for (; pd; pd = next) {
        next = LIST_NEXT(pd, link);
        if (pd->conn == conn) pending_free(pd);
    }
}

static void reply(endpoint *ep, struct evhttp_request *req, int status, struct evbuffer *body, double delay_ms,
                  int hang) {
    if (delay_ms <= 0 && !hang) {
        evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", body);
        evbuffer_free(body);
        return;
    }
    pending *pd = calloc(1, sizeof *pd);
    if (!pd) { evhttp_send_reply(req, 500, "Error", NULL); evbuffer_free(body); return; }
    pd->ep = ep;
    pd->req = req;
    pd->conn = evhttp_request_get_connection(req);
    pd->body = body;
    pd->status = status;
    evhttp_connection_set_closecb(pd->conn, conn_closed, NULL);
    LIST_INSERT_HEAD(&pendings, pd, link);
    if (!hang) {
        struct timeval tv = { (long)(delay_ms / 1000), (long)((long)(delay_ms * 1000) % 1000000) };
        pd->timer = evtimer_new(base, pending_fire, pd);
        evtimer_add(pd->timer, &tv);
    }
}

static void release_hung(endpoint *ep) {
    pending *pd = LIST_FIRST(&pendings), *next;
    for (; pd; pd = next) {
        next = LIST_NEXT(pd, link);
        if (!pd->timer && pd->ep == ep) {
            evbuffer_drain(pd->body, evbuffer_get_length(pd->body));
            evbuffer_add_printf(pd->body, "{\"error\":\"released\"}");
            pd->status = 503;
            pending_fire(-1, 0, pd);
        }
    }
}

/* a JSON string value (\" and \\ unescaped) -> malloc'd text, or NULL */
static char *get_str(const char *body, size_t len, const char *key) {
    const char *vs, *ve;
    if (!obj_get(body, body + len, key, &vs, &ve) || *vs != '"' || ve - vs < 2) return NULL;
    char *out = malloc(ve - vs), *o = out;
    if (!out) return NULL;
    for (const char *q = vs + 1; q < ve - 1; q++) {
        if (*q == '\\' && q + 1 < ve - 1) q++;
        *o++ = *q;
    }
    *o = 0;
    return out;
}

static void copy_str(char *dst, size_t cap, char *src) {
    if (!src) return;
    snprintf(dst, cap, "%s", src);
    free(src);
}

static void fault_clear(endpoint *ep) {
    free(ep->f.body);
    memset(&ep->f, 0, sizeof ep->f);
    release_hung(ep);
}

static void cascade_step(evutil_socket_t fd, short what, void *arg) {
    for (int i = 0; i < n_eps; i++) fault_clear(&eps[i]);
    int k = cascade.switches++;
    endpoint *ep = &eps[k % n_eps];
    cascade.current = k % n_eps;
    switch (k % 6) {
    case 0: ep->f.hang = 1; break;
    case 1: ep->f.down = 1; break;
    case 2: ep->f.status = 500; break;
    case 3: ep->f.status = 429; ep->f.retry_after = cascade.retry_after; break;
    case 4: ep->f.malformed = 1; break;
    default: ep->f.slot_lag = cascade.slot_lag; break;
    }
}

static void handle_cascade(struct evhttp_request *req, const char *body, size_t len) {
    double v;
    cascade.period_ms = get_num(body, len, "period_ms", &v) ? v : 500;
    cascade.retry_after = get_num(body, len, "retry_after", &v) ? (int)v : 1;
    cascade.slot_lag = get_num(body, len, "slot_lag", &v) ? (long)v : 300;
    if (!cascade.timer) cascade.timer = event_new(base, -1, EV_PERSIST, cascade_step, NULL);
    event_del(cascade.timer);
    for (int i = 0; i < n_eps; i++) fault_clear(&eps[i]);
    cascade.switches = 0;
    if (cascade.period_ms > 0) {
        struct timeval tv = { (long)(cascade.period_ms / 1000), (long)((long)(cascade.period_ms * 1000) % 1000000) };
        event_add(cascade.timer, &tv);
        cascade_step(-1, 0, NULL);
    }
    struct evbuffer *out = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evbuffer_add_printf(out, "{\"switches\":%d,\"endpoint\":%d,\"fault\":\"%s\"}", cascade.switches,
                        cascade.current + 1, cascade.period_ms > 0 ? cascade_names[(cascade.switches - 1) % 6] : "none");
    reply(NULL, req, 200, out, 0, 0);
}

static void handle_admin(endpoint *ep, struct evhttp_request *req, const char *path, const char *body, size_t len) {
    if (!strcmp(path, "/admin/cascade")) { handle_cascade(req, body, len); return; }
    struct evbuffer *out = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    double v;
    if (!strcmp(path, "/admin/chain")) { simtx_admin(body, len, out); reply(ep, req, 200, out, 0, 0); return; }
    if (!strcmp(path, "/admin/reset") || (get_num(body, len, "reset", &v) && v)) {
        fault_clear(ep);
        if (!strcmp(path, "/admin/reset"))
            ep->requests = ep->send_tx = ep->batches = ep->errors = ep->by_method_get_slot = 0;
    }
    if (!strcmp(path, "/admin/fault")) {
        if (get_num(body, len, "latency_ms", &v)) ep->f.latency_ms = v;
        if (get_num(body, len, "error_rate", &v)) ep->f.error_rate = v;
        if (get_num(body, len, "status", &v)) ep->f.status = (int)v;
        if (get_num(body, len, "retry_after", &v)) ep->f.retry_after = (int)v;
        if (get_num(body, len, "malformed", &v)) ep->f.malformed = v != 0;
        if (get_num(body, len, "hang", &v)) { ep->f.hang = v != 0; if (!ep->f.hang) release_hung(ep); }
        if (get_num(body, len, "down", &v)) ep->f.down = v != 0;
        if (get_num(body, len, "slot_lag", &v)) ep->f.slot_lag = (long)v;
        if (get_num(body, len, "rpc_error", &v)) ep->f.rpc_error = (int)v;
        if (get_num(body, len, "truncate", &v)) ep->f.truncate = v != 0;
        if (get_num(body, len, "nest", &v)) ep->f.nest = (long)v;
        if (get_num(body, len, "retry_after_date", &v)) { ep->f.retry_after_date = (int)v; ep->f.has_retry_after_date = 1; }
        copy_str(ep->f.retry_after_raw, sizeof ep->f.retry_after_raw, get_str(body, len, "retry_after_raw"));
        copy_str(ep->f.missing_method, sizeof ep->f.missing_method, get_str(body, len, "missing_method"));
        char *b = get_str(body, len, "body");
        if (b) { free(ep->f.body); ep->f.body = b[0] ? b : NULL; if (!b[0]) free(b); }
    }
    evbuffer_add_printf(out, "{\"endpoint\":%d,\"requests\":%ld,\"send_transaction\":%ld,\"batches\":%ld,"
                        "\"errors\":%ld,\"get_slot\":%ld,\"slot\":%ld,\"fault\":{\"latency_ms\":%g,\"status\":%d,"
                        "\"error_rate\":%g,\"malformed\":%s,\"hang\":%s,\"down\":%s,\"slot_lag\":%ld,\"rpc_error\":%d},"
                        "\"loop_gap_ms\":%.0f}",
                        ep->index, ep->requests, ep->send_tx, ep->batches, ep->errors, ep->by_method_get_slot,
                        current_slot(ep), ep->f.latency_ms, ep->f.status, ep->f.error_rate,
                        ep->f.malformed ? "true" : "false", ep->f.hang ? "true" : "false",
                        ep->f.down ? "true" : "false", ep->f.slot_lag, ep->f.rpc_error, tick_gap_max);
    tick_gap_max = 0;
    reply(ep, req, 200, out, 0, 0);
}

/* the answer a "body" or "nest" fault gives instead of the real one */
static int fake_answer(endpoint *ep, const char *body, size_t len, struct evbuffer *out) {
    const char *is = "null", *ie = is + 4;
    obj_get(body, body + len, "id", &is, &ie);
    if (ep->f.nest > 0) {
        evbuffer_add_printf(out, "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":", (int)(ie - is), is);
        for (long i = 0; i < ep->f.nest; i++) evbuffer_add(out, "[", 1);
        for (long i = 0; i < ep->f.nest; i++) evbuffer_add(out, "]", 1);
        evbuffer_add(out, "}", 1);
        return 1;
    }
    if (!ep->f.body) return 0;
    for (const char *p = ep->f.body, *q; *p; p = q + 3) {
        q = strstr(p, "$id");
        if (!q) { evbuffer_add(out, p, strlen(p)); break; }
        evbuffer_add(out, p, q - p);
        evbuffer_add(out, is, ie - is);
    }
    return 1;
}

static void handle(struct evhttp_request *req, void *arg) {
    endpoint *ep = arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    char *body = malloc(len + 1);
    evbuffer_remove(in, body, len);
    body[len] = 0;
    const char *uri = evhttp_request_get_uri(req);
    char path[64] = "";
    sscanf(uri, "%63[^?]", path);
    if (!strncmp(path, "/admin/", 7)) {
        handle_admin(ep, req, path, body, len);
        free(body);
        return;
    }
    if (ep->f.truncate) { /* half an answer, then the connection goes: a reset mid-response */
        static const char part[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                   "Content-Length: 200\r\n\r\n{\"jsonrpc\":\"2.0\",\"result\":";
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
        int fd = bufferevent_getfd(bev);
        if (send(fd, part, sizeof part - 1, MSG_NOSIGNAL) < 0) { /* the client is gone already */ }
        shutdown(fd, SHUT_RDWR);
        ep->requests++;
        free(body);
        evhttp_send_reply(req, 500, "Down", NULL); /* written to a dead socket; frees req */
        return;
    }
    if (ep->f.down) { /* reset the connection: the client sees a transport error */
        struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
        shutdown(bufferevent_getfd(bev), SHUT_RDWR);
        free(body);
        evhttp_send_reply(req, 500, "Down", NULL); /* written to a dead socket; frees req */
        return;
    }
    struct evbuffer *out = evbuffer_new();
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    int status = 200;
    if (ep->f.status) {
        status = ep->f.status;
        if (status == 429) {
            char ra[64] = "";
            if (ep->f.retry_after_raw[0]) snprintf(ra, sizeof ra, "%s", ep->f.retry_after_raw);
            else if (ep->f.has_retry_after_date) {
                time_t t = time(NULL) + ep->f.retry_after_date;
                strftime(ra, sizeof ra, "%a, %d %b %Y %H:%M:%S GMT", gmtime(&t));
            } else if (ep->f.retry_after > 0) snprintf(ra, sizeof ra, "%d", ep->f.retry_after);
            if (ra[0]) evhttp_add_header(h, "Retry-After", ra);
        }
        evbuffer_add_printf(out, "{\"jsonrpc\":\"2.0\",\"error\":{\"code\":%d,\"message\":\"HTTP %d\"},\"id\":null}",
                            -32000, status);
        ep->errors++;
    } else if (ep->f.error_rate > 0 && (double)rand() / RAND_MAX < ep->f.error_rate) {
        status = 500;
        evbuffer_add_printf(out, "internal error");
        ep->errors++;
    } else if (ep->f.malformed) {
        evbuffer_add_printf(out, "{\"jsonrpc\":\"2.0\",\"result\":<<not json");
        ep->requests++;
    } else if (fake_answer(ep, body, len, out)) {
        ep->requests++;
    } else {
        const char *p = skip_ws(body, body + len), *e = body + len;
        if (p < e && *p == '[') {
            ep->batches++;
            evbuffer_add(out, "[", 1);
            p++;
            int n = 0;
            while ((p = skip_ws(p, e)) < e && *p == '{') {
                const char *oe = value_end(p, e);
                if (n++) evbuffer_add(out, ",", 1);
                rpc_one(ep, p, oe, out);
                p = skip_ws(oe, e);
                if (p < e && *p == ',') p++;
            }
            evbuffer_add(out, "]", 1);
        } else if (p < e && *p == '{') {
            rpc_one(ep, p, e, out);
        } else {
            rpc_error(out, "null", 4, -32700, "Parse error");
        }
    }
    free(body);
    reply(ep, req, status, out, ep->f.latency_ms, ep->f.hang);
}

static void on_stop(evutil_socket_t fd, short what, void *arg) { event_base_loopexit(base, NULL); }

int main(int argc, char **argv) {
    int count = 3, base_port = 0, ws_base_port = 0;
    const char *host = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc) count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--base-port") && i + 1 < argc) base_port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--ws-base-port") && i + 1 < argc) ws_base_port = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: thorp-sim [--count N (1-64)] [--base-port PORT] [--ws-base-port PORT] [--host ADDR]\n");
            return 2;
        }
    }
    if (count < 1 || count > 64) { fprintf(stderr, "thorp-sim: --count must be 1-64, got %d\n", count); return 2; }
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    t_start = now_ms();
    srand((unsigned)time(NULL));
    eps = calloc(count, sizeof *eps);
    n_eps = count;
    if (!eps) { fprintf(stderr, "thorp-sim: out of memory\n"); return 1; }
    for (int i = 0; i < count; i++) {
        endpoint *ep = &eps[i];
        ep->index = i + 1;
        ep->http = evhttp_new(base);
        evhttp_set_gencb(ep->http, handle, ep);
        evhttp_set_max_body_size(ep->http, 4 << 20);
        struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(ep->http, host, base_port ? base_port + i : 0);
        if (!bs) { fprintf(stderr, "thorp-sim: cannot listen on %s:%d: %s\n", host, base_port + i, strerror(errno)); return 1; }
        /* libevent listens with a backlog of 128: a burst of new connections (every call moving to
         * this endpoint at once when a fault switches) would overflow it, and a dropped SYN costs
         * the client a 1 s retransmit, a fault no real provider adds. listen() again raises it. */
        if (listen(evhttp_bound_socket_get_fd(bs), 4096) != 0) perror("thorp-sim: listen backlog");
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl);
        ep->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    printf("SIM_READY ");
    for (int i = 0; i < count; i++) printf("%shttp://%s:%d", i ? "," : "", host, eps[i].port);
    printf("\nSIM_WS "); /* WebSocket side: tests/sim/sim_ws.c */
    for (int i = 0; i < count; i++) {
        int wp = sim_ws_listen(base, host, ws_base_port ? ws_base_port + i : 0, i + 1, t_start);
        if (wp < 0) { fprintf(stderr, "thorp-sim: cannot listen for WebSocket: %s\n", strerror(errno)); return 1; }
        printf("%sws://%s:%d", i ? "," : "", host, wp);
    }
    printf("\n");
    fflush(stdout);
    struct event *sigterm = evsignal_new(base, SIGTERM, on_stop, NULL);
    struct event *sigint = evsignal_new(base, SIGINT, on_stop, NULL);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    struct event *ticker = event_new(base, -1, EV_PERSIST, tick, NULL);
    struct timeval ten_ms = { 0, 10000 };
    event_add(ticker, &ten_ms);
    event_base_dispatch(base);
    event_free(ticker);
    while (!LIST_EMPTY(&pendings)) pending_free(LIST_FIRST(&pendings));
    if (cascade.timer) event_free(cascade.timer);
    for (int i = 0; i < count; i++) { evhttp_free(eps[i].http); free(eps[i].f.body); }
    sim_ws_free();
    event_free(sigterm);
    event_free(sigint);
    event_base_free(base);
    free(eps);
    return 0;
}
