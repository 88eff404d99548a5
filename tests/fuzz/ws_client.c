/* ws_client: the WebSocket client (host/ws.c) on arbitrary bytes from a
 * server: its upgrade-answer parser and its frame reader, over a real
 * loopback connection driven by the host's loop, so ws.c runs unchanged.
 *
 * The harness is the server: it accepts the client's connection, reads its
 * upgrade request and answers with the input. The first byte picks how:
 *   even: the rest is the whole answer, upgrade response first; every "@A@"
 *         in it becomes the right Sec-WebSocket-Accept for this connection's
 *         key, so the fuzzer can get past the upgrade and on to frames;
 *   odd:  a correct 101 answer, then the rest as frames.
 * Then the harness hangs up.
 * Invariants: the connection ends DOWN with a reason and exactly one CLOSED
 * event (no hang); OPEN only after a 101; every message drained belongs to
 * it, is within max_message, NUL-terminated, and all of them together are
 * no longer than the input. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include "fuzz.h"
#include "log.h"
#include "loop.h"
#include "ws.h"

#define MAX_MESSAGE 4096

static int lfd, port;
static char url[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    log_init();
    thorp_log_set_level(LOG_ERROR);
    if (loop_init() != 0) fuzz_fail("cannot create the loop");
    struct sockaddr_in sa = { .sin_family = AF_INET };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0)
        fuzz_fail("listen: %s", strerror(errno));
    port = ntohs(sa.sin_port);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/fuzz", port);
    return 0;
}

typedef struct { int opened, closed; size_t msg_bytes; } seen;

static void drain(int64_t id, seen *s, size_t size)
{
    thorp_event ev[16];
    int k;
    while ((k = thorp_inbox_drain(ev, 16)) > 0)
        for (int i = 0; i < k; i++) {
            if (ev[i].kind == TEV_WS && ev[i].a == THORP_WS_MESSAGES) continue;
            if (ev[i].kind != TEV_WS || ev[i].id != id) fuzz_fail("an event of kind %d for %lld", ev[i].kind, (long long)ev[i].id);
            if (ev[i].a == THORP_WS_OPEN) s->opened++;
            else if (ev[i].a == THORP_WS_CLOSED) s->closed++;
        }
    thorp_ws_msg m[32];
    while ((k = thorp_ws_drain(m, 32)) > 0)
        for (int i = 0; i < k; i++) {
            if (m[i].conn != id) fuzz_fail("a message for connection %lld", (long long)m[i].conn);
            if (m[i].len > MAX_MESSAGE) fuzz_fail("a %zu-byte message passed max_message %d", m[i].len, MAX_MESSAGE);
            if (m[i].data[m[i].len] != 0) fuzz_fail("a message not NUL-terminated");
            if (m[i].res_len && m[i].res_off + m[i].res_len > m[i].len) fuzz_fail("result span out of the message");
            s->msg_bytes += m[i].len;
            if (s->msg_bytes > size) fuzz_fail("%zu message bytes out of a %zu-byte input", s->msg_bytes, size);
        }
}

/* The accept value for the key in the client's request (NUL-terminated). */
static void accept_for(const char *req, char *acc)
{
    const char *k = strcasestr(req, "\r\nSec-WebSocket-Key: ");
    if (!k) fuzz_fail("the upgrade request has no key: %.200s", req);
    k += 21;
    const char *e = strstr(k, "\r\n");
    char cat[128];
    int n = snprintf(cat, sizeof cat, "%.*s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", (int)(e - k), k);
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, (size_t)n, d);
    EVP_EncodeBlock((unsigned char *)acc, d, sizeof d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536) return 0;
    char err[256];
    int64_t id = thorp_ws_open(url, 5000, 1e9, 1e9, MAX_MESSAGE, NULL, NULL, err, sizeof err);
    if (id <= 0) fuzz_fail("open: %s", err);
    seen s = { 0 };
    double deadline = thorp_now() + 5000;
    int fd = -1;
    char req[4096];
    size_t rl = 0;
    while (fd < 0 || !memmem(req, rl, "\r\n\r\n", 4)) { /* the client's upgrade request */
        if (thorp_now() > deadline) fuzz_fail("no upgrade request from the client");
        event_base_loop(loop_base(), EVLOOP_NONBLOCK);
        if (fd < 0) { fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); continue; }
        ssize_t r = read(fd, req + rl, sizeof req - 1 - rl);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) fuzz_fail("the client hung up before its request");
        if (r > 0) rl += (size_t)r;
        if (rl == sizeof req - 1) fuzz_fail("the upgrade request is too long");
    }
    req[rl] = 0;
    char acc[64];
    accept_for(req, acc);

    /* the answer */
    static uint8_t out[65536 * 10 + 256];
    size_t ol = 0;
    if (data[0] & 1) {
        ol = (size_t)sprintf((char *)out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", acc);
        memcpy(out + ol, data + 1, size - 1);
        ol += size - 1;
    } else {
        for (size_t i = 1; i < size; i++) {
            if (i + 3 <= size && !memcmp(data + i, "@A@", 3)) {
                ol += (size_t)sprintf((char *)out + ol, "%s", acc);
                i += 2;
            } else {
                out[ol++] = data[i];
            }
        }
    }

    size_t sent = 0;
    int wr_done = 0;
    thorp_ws_info info;
    for (;;) {
        if (thorp_now() > deadline) fuzz_fail("the connection did not end (%zu of %zu bytes sent)", sent, ol);
        if (!wr_done) {
            ssize_t w = sent < ol ? write(fd, out + sent, ol - sent) : 0;
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) sent = ol; /* the client hung up */
            if (sent == ol) { shutdown(fd, SHUT_WR); wr_done = 1; }
        }
        event_base_loop(loop_base(), EVLOOP_NONBLOCK);
        drain(id, &s, size);
        char sink[4096]; /* pongs and close frames from the client */
        while (read(fd, sink, sizeof sink) > 0) {}
        if (thorp_ws_info_get(id, &info) != 0) fuzz_fail("the connection is unknown");
        if (info.state == THORP_WS_DOWN && s.closed) break;
    }
    drain(id, &s, size);
    if (s.closed != 1) fuzz_fail("%d CLOSED events", s.closed);
    if (s.opened > 1 || (s.opened && info.http_status != 101)) fuzz_fail("OPEN %d times, HTTP %d", s.opened, info.http_status);
    if (!info.error[0]) fuzz_fail("down without a reason");
    if (getenv("FUZZ_SHOW")) fprintf(stderr, "status %d, %zu message bytes: %s\n", info.http_status, s.msg_bytes, info.error);
    thorp_ws_free(id);
    close(fd);
    return 0;
}
