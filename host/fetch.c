/* fetch: general HTTP requests on the pool's curl multi. See fetch.h. */
#include "fetch.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "loop.h"
#include "pool.h"

typedef struct freq {
    CURL *easy;
    struct curl_slist *hdrs;
    thorp_fetch_result *res;
    size_t cap, hcap, max_body;
    int too_big;
    struct freq *next;
} freq;

static struct {
    freq *reqs;
    int64_t next_id;
    int inflight, registered, closing;
} F = { NULL, 1, 0, 0, 0 };

static void fetch_finish(freq *r, int cancelled)
{
    freq **pp = &F.reqs;
    while (*pp && *pp != r) pp = &(*pp)->next;
    if (*pp) *pp = r->next;
    F.inflight--;
    thorp_fetch_result *res = r->res;
    if (!cancelled) {
        long status = 0, redirects = 0;
        double t = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(r->easy, CURLINFO_REDIRECT_COUNT, &redirects);
        curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &t);
        res->http_status = (int)status;
        res->redirects = (int)redirects;
        res->total_ms = t * 1000;
    }
    res->cancelled = cancelled;
    CURLM *multi = pool_multi();
    if (multi) curl_multi_remove_handle(multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    free(r);
    if (F.closing) thorp_fetch_result_free(res);
    else loop_post(TEV_FETCH, res->id, res->curl_code, res->total_ms, res);
}

/* pool.c asks about every finished easy handle: 1 when it was ours. */
static int fetch_done(void *easy, int code)
{
    for (freq *r = F.reqs; r; r = r->next) {
        if (r->easy != easy) continue;
        r->res->curl_code = code;
        if (r->too_big) snprintf(r->res->error, sizeof r->res->error, "answer larger than max_body (%zu bytes)", r->max_body);
        else if (code != CURLE_OK && !r->res->error[0])
            snprintf(r->res->error, sizeof r->res->error, "%s", curl_easy_strerror((CURLcode)code));
        fetch_finish(r, 0);
        return 1;
    }
    return 0;
}

static void fetch_free_all(void *arg)
{
    (void)arg;
    F.closing = 1;
    while (F.reqs) fetch_finish(F.reqs, 1);
    F.closing = 0;
}

static int grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap * 2 : 4096;
    while (c < need) c *= 2;
    char *b = realloc(*buf, c);
    if (!b) return -1;
    *buf = b;
    *cap = c;
    return 0;
}

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
    freq *r = userp;
    size_t len = size * n, need = r->res->body_len + len + 1;
    if (need > r->max_body + 1) { r->too_big = 1; return 0; }
    if (grow(&r->res->body, &r->cap, need) != 0) return 0;
    memcpy(r->res->body + r->res->body_len, data, len);
    r->res->body_len += len;
    r->res->body[r->res->body_len] = 0;
    return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp)
{
    freq *r = userp;
    size_t len = size * n;
    if (len >= 5 && !strncmp(data, "HTTP/", 5)) r->res->headers_len = 0; /* a new answer (redirect, 100): start over */
    if (r->res->headers_len + len + 1 > (1u << 20)) return len;          /* keep at most 1 MiB of headers */
    if (grow(&r->res->headers, &r->hcap, r->res->headers_len + len + 1) != 0) return 0;
    memcpy(r->res->headers + r->res->headers_len, data, len);
    r->res->headers_len += len;
    r->res->headers[r->res->headers_len] = 0;
    return len;
}

int64_t thorp_fetch_start(const char *url, const char *method, const char *headers, const char *body, size_t len,
                          double timeout_ms, int follow, double max_body, char *err, int errlen)
{
    CURLM *multi = pool_multi();
    if (!multi) { snprintf(err, (size_t)errlen, "libcurl failed to initialise"); return -1; }
    if (!F.registered) { /* after pool's: freed first (loop_on_free runs in reverse) */
        pool_set_foreign_done(fetch_done);
        loop_on_free(fetch_free_all, NULL);
        F.registered = 1;
    }
    freq *r = calloc(1, sizeof *r);
    if (r) r->res = calloc(1, sizeof *r->res);
    if (r && r->res) r->easy = curl_easy_init();
    if (!r || !r->res || !r->easy) {
        if (r) free(r->res);
        free(r);
        snprintf(err, (size_t)errlen, "out of memory");
        return -1;
    }
    r->max_body = max_body > 0 ? (size_t)max_body : (64u << 20);
    r->res->id = F.next_id++;
    r->hdrs = pool_headers_append(pool_headers_append(NULL, headers), "Expect:");
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD")) curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method); /* COPYPOSTFIELDS implies POST otherwise */
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->res->error);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 1 ? timeout_ms : 1));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "thorp");
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, follow > 0 ? 1L : 0L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)(follow > 0 ? follow : 0));
    r->next = F.reqs;
    F.reqs = r;
    F.inflight++;
    int64_t id = r->res->id;
    CURLMcode mc = curl_multi_add_handle(multi, e);
    if (mc != CURLM_OK) { /* still one event, as promised */
        snprintf(r->res->error, sizeof r->res->error, "%s", curl_multi_strerror(mc));
        r->res->curl_code = CURLE_FAILED_INIT;
        fetch_finish(r, 0);
    }
    return id;
}

void thorp_fetch_cancel(int64_t id)
{
    for (freq *r = F.reqs; r; r = r->next)
        if (r->res->id == id) { fetch_finish(r, 1); return; }
}

void thorp_fetch_result_free(thorp_fetch_result *r)
{
    if (!r) return;
    free(r->body);
    free(r->headers);
    free(r);
}

int thorp_fetch_inflight(void) { return F.inflight; }
