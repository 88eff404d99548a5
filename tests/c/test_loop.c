/* C unit tests of the foundation: the inbox (loop.c) and the log scrubber (log.c). */
#include <stdio.h>
#include <string.h>
#include "log.h"
#include "loop.h"

static int passed, failed;
#define CHECK(cond, name) do { if (cond) { passed++; printf("ok   - %s\n", name); } \
    else { failed++; printf("FAIL - %s (%s:%d)\n", name, __FILE__, __LINE__); } } while (0)

static void test_inbox(void)
{
    thorp_event ev[8];
    CHECK(thorp_inbox_drain(ev, 8) == 0, "an empty inbox drains nothing");
    for (int i = 0; i < 5000; i++) loop_post(TEV_RPC, i, i % 7, i * 0.5, NULL);
    CHECK(thorp_inbox_size() == 5000, "the inbox grows past its first capacity");
    int n = 0, in_order = 1;
    for (;;) {
        int k = thorp_inbox_drain(ev, 8);
        if (k == 0) break;
        for (int i = 0; i < k; i++, n++)
            if (ev[i].id != n || ev[i].a != n % 7 || ev[i].num != n * 0.5 || ev[i].kind != TEV_RPC) in_order = 0;
    }
    CHECK(n == 5000, "every posted event is drained once");
    CHECK(in_order, "events come out in posting order with their fields");
    /* wrap-around: interleave posts and drains */
    int ok = 1, next = 0, seq = 0;
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 3; i++) loop_post(TEV_HTTP, seq++, 0, 0, NULL);
        int k = thorp_inbox_drain(ev, 2);
        for (int i = 0; i < k; i++) if (ev[i].id != next++) ok = 0;
    }
    while (thorp_inbox_drain(ev, 1) == 1) if (ev[0].id != next++) ok = 0;
    CHECK(ok && next == seq, "order survives wrap-around of the ring");
}

static void test_scrub(void)
{
    char out[256];
    thorp_log_secret_add("SECRETKEY123");
    thorp_log_secret_add("abc"); /* too short to scrub safely: ignored */
    thorp_log_scrub("url=https://x/?api-key=SECRETKEY123&abc=1", out, sizeof out);
    CHECK(strcmp(out, "url=https://x/?api-key=***&abc=***") == 0, "a registered secret and every query value are hidden");
    thorp_log_scrub("SECRETKEY123SECRETKEY123", out, sizeof out);
    CHECK(strcmp(out, "******") == 0, "every occurrence is replaced");
    thorp_log_scrub("a long line that is cut", out, 8);
    CHECK(strlen(out) == 7, "scrubbing never overflows the buffer");
}

static void test_clock(void)
{
    double a = thorp_now(), b = thorp_now();
    CHECK(b >= a && a > 0, "the monotonic clock does not go back");
    CHECK(thorp_wall() > 1.6e12, "wall clock is in epoch milliseconds");
}

int main(void)
{
    log_init();
    loop_init();
    test_inbox();
    test_scrub();
    test_clock();
    loop_free();
    log_free();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
