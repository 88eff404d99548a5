/* http_request: the front door (host/http.c and thorp.http) on arbitrary
 * bytes from a client: the input is written to a real TCP connection to the
 * listener, then the loop runs (libevent and the Lua scheduler, as in the
 * host) until the connection is over. The pool behind the front door is a
 * stand-in that answers at once (http_request.lua).
 * Invariants: the connection ends (no hang); no request is left pending in
 * host/http.c afterwards; no answer is a 500 (a Lua error in the handler,
 * counted by thorp.http: a client's id may well read "HTTP/1.1 500");
 * whatever is answered starts as an HTTP response. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/event.h>
#include "fuzz.h"
#include "http.h"
#include "loop.h"

static lua_State *L;
static int port;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    L = fuzz_lua_init((*argv)[0]);
    fuzz_lua_call(L, "listen", (const uint8_t *)"", 0);
    port = (int)lua_tointeger(L, -1);
    if (port <= 0) fuzz_fail("no listening port");
    return 0;
}

static void step(void)
{
    fuzz_lua_call(L, "step", (const uint8_t *)"", 0);
    event_base_loop(loop_base(), EVLOOP_NONBLOCK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = fuzz_connect(port);
    static char reply[1 << 16];
    size_t sent = 0, reply_len = 0, total = 0;
    int wr_done = 0, eof = 0, quiet = 0;
    double deadline = thorp_now() + 5000;
    fuzz_lua_call(L, "errors", (const uint8_t *)"", 0);
    lua_Integer errors0 = lua_tointeger(L, -1);
    while (!eof || thorp_http_pending() > 0) {
        if (thorp_now() > deadline)
            fuzz_fail("the front-door connection did not end (%d requests pending, %zu bytes answered)",
                      thorp_http_pending(), total);
        if (!wr_done) {
            ssize_t w = sent < size ? write(fd, data + sent, size - sent) : 0;
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN) sent = size; /* the listener hung up */
            /* all sent and all answered (pipelined requests too): then hang up */
            if (sent == size && thorp_http_pending() == 0 && ++quiet > 20) { shutdown(fd, SHUT_WR); wr_done = 1; }
        }
        step();
        ssize_t r;
        while (!eof && (r = read(fd, reply + reply_len, sizeof reply - 1 - reply_len)) != 0) {
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) break;
                eof = 1; /* reset by the listener */
                break;
            }
            if (total == 0 && r >= 5 && memcmp(reply, "HTTP/", 5) != 0)
                fuzz_fail("the answer does not start as an HTTP response: %.40s", reply);
            if (getenv("FUZZ_SHOW")) fwrite(reply + reply_len, 1, (size_t)r, stderr);
            total += (size_t)r;
            quiet = 0;
            reply_len += (size_t)r;
            reply[reply_len] = 0;
            if (reply_len > sizeof reply / 2) { /* keep the tail, where a status line may be split */
                memmove(reply, reply + reply_len - 64, 64);
                reply_len = 64;
            }
        }
        if (!eof && r == 0) eof = 1;
    }
    close(fd);
    fuzz_lua_call(L, "errors", (const uint8_t *)"", 0);
    if (lua_tointeger(L, -1) != errors0)
        fuzz_fail("the front door answered 500 (a Lua error in its handler; see the log above)");
    return 0;
}
