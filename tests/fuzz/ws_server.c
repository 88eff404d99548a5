/* ws_server: the front door's WebSocket side (host/http_ws.c behind
 * host/http.c) on arbitrary bytes from a client: the upgrade request and
 * the client frames, over a real loopback connection to the listener, with
 * the host's loop; Lua is left out (its JSON side has its own targets), so
 * the harness answers plain HTTP requests itself (404).
 *
 * The first byte of the input picks:
 *   bit 0 clear: the rest is all the client sends, upgrade request first;
 *   bit 0 set:   a correct upgrade request, then the rest as frames;
 *   bit 1 set:   the listener wants the token "fuzztoken" (the correct
 *                request of bit 0 does not carry it: a 401).
 * Then the harness hangs up.
 * Invariants: the connection ends (no hang) and leaves no client, pending
 * request or held bufferevent behind; a client's CLOSED event comes once,
 * after its messages; every message drained comes from a client (id < 0),
 * is NUL-terminated, at most 1 MB, and all of them together are no longer
 * than the input; whatever is answered starts as an HTTP response. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/event.h>
#include "fuzz.h"
#include "http.h"
#include "http_ws.h"
#include "log.h"
#include "loop.h"
#include "ws.h"

static int port;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    log_init();
    thorp_log_set_level(LOG_ERROR);
    if (loop_init() != 0) fuzz_fail("cannot create the loop");
    char err[256];
    port = thorp_http_listen("127.0.0.1", 0, 65536, err, sizeof err);
    if (port <= 0) fuzz_fail("listen: %s", err);
    return 0;
}

typedef struct { int closed; int64_t client; size_t msg_bytes; } seen;

static void drain(seen *s, size_t size)
{
    thorp_ws_msg m[32];
    int k;
    while ((k = thorp_ws_drain(m, 32)) > 0)
        for (int i = 0; i < k; i++) {
            if (m[i].conn >= 0) fuzz_fail("a client message with id %lld", (long long)m[i].conn);
            if (s->closed) fuzz_fail("a message after its client closed");
            if (m[i].len > (1u << 20)) fuzz_fail("a %zu-byte message", m[i].len);
            if (m[i].data[m[i].len] != 0) fuzz_fail("a message not NUL-terminated");
            s->msg_bytes += m[i].len;
            if (s->msg_bytes > size) fuzz_fail("%zu message bytes out of a %zu-byte input", s->msg_bytes, size);
        }
    thorp_event ev[16];
    while ((k = thorp_inbox_drain(ev, 16)) > 0)
        for (int i = 0; i < k; i++) {
            if (ev[i].kind == TEV_HTTP) {
                if (ev[i].a != HTTP_EV_SENT) thorp_http_reply(ev[i].id, 404, "text/plain", "no\n", 3, NULL);
            } else if (ev[i].kind == TEV_WS && ev[i].a == THORP_WS_CLOSED && ev[i].id < 0) {
                if (s->closed++) fuzz_fail("a second CLOSED event");
                s->client = ev[i].id;
            } else if (ev[i].kind != TEV_WS) {
                fuzz_fail("an event of kind %d", ev[i].kind);
            }
        }
}

static const char UPGRADE[] = "GET /?x=1 HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536) return 0;
    thorp_http_ws_enable(data[0] & 2 ? "fuzztoken" : "");
    static uint8_t in[sizeof UPGRADE + 65536];
    size_t n = 0;
    if (data[0] & 1) { memcpy(in, UPGRADE, sizeof UPGRADE - 1); n = sizeof UPGRADE - 1; }
    memcpy(in + n, data + 1, size - 1);
    n += size - 1;

    int fd = fuzz_connect(port);

    seen s = { 0 };
    size_t sent = 0, total = 0;
    int wr_done = 0, eof = 0, quiet = 0;
    char head[8];
    double deadline = thorp_now() + 5000;
    while (!eof || thorp_http_pending() > 0 || thorp_http_ws_clients() > 0) {
        if (thorp_now() > deadline)
            fuzz_fail("the connection did not end (%d clients, %d requests pending, %zu of %zu bytes sent)",
                      thorp_http_ws_clients(), thorp_http_pending(), sent, n);
        if (!wr_done) {
            ssize_t w = sent < n ? write(fd, in + sent, n - sent) : 0;
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR) sent = n; /* the listener hung up */
            if (sent == n && thorp_http_pending() == 0 && ++quiet > 20) { shutdown(fd, SHUT_WR); wr_done = 1; }
        }
        event_base_loop(loop_base(), EVLOOP_NONBLOCK);
        drain(&s, size);
        char buf[4096];
        ssize_t r;
        while (!eof && (r = read(fd, buf, sizeof buf)) != 0) {
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                eof = 1;
                break;
            }
            if (total < sizeof head) memcpy(head + total, buf, (size_t)r < sizeof head - total ? (size_t)r : sizeof head - total);
            total += (size_t)r;
            quiet = 0;
            if (total >= 5 && memcmp(head, "HTTP/", 5) != 0) fuzz_fail("the answer does not start as an HTTP response");
            if (getenv("FUZZ_SHOW")) fwrite(buf, 1, (size_t)r, stderr);
        }
        if (!eof && r == 0) eof = 1;
    }
    drain(&s, size);
    close(fd);
    if (s.msg_bytes && !s.closed) fuzz_fail("a client with messages never closed");
    return 0;
}
