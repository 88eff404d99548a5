/* Baseline for the RPC pool bench: a plain libcurl multi loop in C posting
 * getSlot to one URL with C transfers in flight for SECS seconds.
 *   curl_loop URL CONCURRENCY SECS   -> "calls/s p50_us p99_us cpu_us_per_call"
 * (CPU time of this process per call: steadier than calls/s on a shared machine)  */
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}
static size_t sink(char *d, size_t s, size_t n, void *u) { (void)d; (void)u; return s * n; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: curl_loop URL CONCURRENCY SECS\n"); return 2; }
    const char *url = argv[1];
    int conc = atoi(argv[2]);
    double secs = atof(argv[3]);
    const char *body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"getSlot\"}";
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *m = curl_multi_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    CURL **e = calloc(conc, sizeof *e);
    double *start = calloc(conc, sizeof *start);
    size_t cap = 1 << 22, nlat = 0;
    double *lat = malloc(cap * sizeof *lat);
    for (int i = 0; i < conc; i++) {
        e[i] = curl_easy_init();
        curl_easy_setopt(e[i], CURLOPT_URL, url);
        curl_easy_setopt(e[i], CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e[i], CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e[i], CURLOPT_WRITEFUNCTION, sink);
        curl_easy_setopt(e[i], CURLOPT_PRIVATE, (char *)(intptr_t)i);
        start[i] = now_us();
        curl_multi_add_handle(m, e[i]);
    }
    double t0 = now_us(), end = t0 + secs * 1e6;
    clock_t c0 = clock();
    long done = 0;
    int running = conc;
    while (running > 0) {
        curl_multi_perform(m, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(m, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            char *p;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &p);
            int i = (int)(intptr_t)p;
            double t = now_us();
            if (msg->data.result == CURLE_OK) { done++; if (nlat < cap) lat[nlat++] = t - start[i]; }
            curl_multi_remove_handle(m, e[i]);
            if (t < end) { start[i] = t; curl_multi_add_handle(m, e[i]); running++; }
        }
        if (running > 0) curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    double el = (now_us() - t0) / 1e6;
    qsort(lat, nlat, sizeof *lat, cmp);
    double cpu_us = (double)(clock() - c0) / CLOCKS_PER_SEC * 1e6;
    printf("%.0f %.0f %.0f %.1f\n", done / el, nlat ? lat[nlat / 2] : 0, nlat ? lat[(size_t)(nlat * 0.99)] : 0,
           done ? cpu_us / done : 0);
    for (int i = 0; i < conc; i++) curl_easy_cleanup(e[i]);
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    free(e); free(start); free(lat);
    return 0;
}
