/* console_frame: the console's wire protocol (host/console.c) on arbitrary
 * bytes, both ways.
 *
 * Server: the input is what a console client sends, written to a real
 * connection on a real console socket; the loop runs until the host closes
 * the connection. Each request the host delivers must be exactly the next
 * frame an independent reading of the input finds, every answer must be a
 * well-formed frame, and the connection must end (no hang, no leak).
 * Client: the input is what a host answers; thorp_console_recv() must return
 * frames within the limits or NULL, never read past them. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <event2/event.h>
#include "console.h"
#include "fuzz.h"
#include "log.h"
#include "loop.h"

static char sock_path[108];

static void at_exit(void) { thorp_console_stop(); unlink(sock_path); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_init();
    thorp_log_set_level(LOG_ERROR);
    if (loop_init() != 0) fuzz_fail("cannot create the loop");
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(sock_path, sizeof sock_path, "%s/thorp-fuzz-console-%d.sock", tmp, (int)getpid());
    char err[256];
    if (thorp_console_listen(sock_path, err, sizeof err) != 0) fuzz_fail("console listen: %s", err);
    atexit(at_exit);
    return 0;
}

/* The frames a correct server takes from in[0..n): their offsets and lengths. */
typedef struct { size_t off, len; } span;
static size_t model(const uint8_t *in, size_t n, span *out, size_t max, int *bad_header)
{
    size_t i = 0, k = 0;
    *bad_header = 0;
    while (i < n) {
        const uint8_t *nl = memchr(in + i, '\n', n - i);
        if (!nl) { if (n - i > 20) *bad_header = 1; break; }
        size_t hl = (size_t)(nl - (in + i));
        if (hl > 20) { *bad_header = 1; break; }
        char hdr[24];
        memcpy(hdr, in + i, hl);
        hdr[hl] = 0;
        char *end;
        errno = 0;
        unsigned long long len = strtoull(hdr, &end, 10);
        if (end == hdr || *end || errno || memchr(hdr, 0, hl) || len > CONSOLE_MAX_REQUEST) { *bad_header = 1; break; }
        i += hl + 1;
        if (n - i < len) break; /* incomplete: never delivered */
        if (k < max) out[k] = (span){ i, (size_t)len };
        k++;
        i += (size_t)len;
    }
    return k;
}

static void server_side(const uint8_t *data, size_t size)
{
    enum { MAXF = 4096 };
    static span want[MAXF];
    int bad_header;
    size_t nwant = model(data, size, want, MAXF, &bad_header);
    if (nwant > MAXF) return;

    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, sock_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) fuzz_fail("connect: %s", strerror(errno));
    fcntl(fd, F_SETFL, O_NONBLOCK);

    size_t sent = 0, got = 0, reply_len = 0;
    int closed = 0, eof = 0, wr_done = 0;
    static char reply[1 << 16];
    double deadline = thorp_now() + 5000;
    while (!(closed && eof)) {
        if (thorp_now() > deadline)
            fuzz_fail("the console connection did not end (%zu of %zu frames answered)", got, nwant);
        if (!wr_done) {
            ssize_t w = sent < size ? write(fd, data + sent, size - sent) : 0;
            if (w > 0) sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN) sent = size; /* the host closed on a bad frame */
            if (sent == size) { shutdown(fd, SHUT_WR); wr_done = 1; }
        }
        event_base_loop(loop_base(), EVLOOP_NONBLOCK);
        thorp_event ev[16];
        int k;
        while ((k = thorp_inbox_drain(ev, 16)) > 0) {
            for (int i = 0; i < k; i++) {
                if (ev[i].kind != TEV_CONSOLE) continue;
                if (ev[i].a == CONSOLE_EV_CLOSED) { closed = 1; continue; }
                size_t len;
                const char *req = thorp_console_request(ev[i].id, &len);
                if (!req) fuzz_fail("request event without a request");
                if (got >= nwant) fuzz_fail("request %zu delivered; the input holds only %zu frames", got + 1, nwant);
                if (len != want[got].len || memcmp(req, data + want[got].off, len) != 0 || req[len] != 0)
                    fuzz_fail("request %zu: %zu bytes delivered, the frame holds %zu", got + 1, len, want[got].len);
                got++;
                char ans[32];
                int n = snprintf(ans, sizeof ans, "ok %zu", len);
                if (thorp_console_reply(ev[i].id, ans, (size_t)n) != 0) fuzz_fail("reply refused");
            }
        }
        ssize_t r;
        while ((r = read(fd, reply + reply_len, sizeof reply - reply_len)) > 0) {
            reply_len += (size_t)r;
            if (reply_len == sizeof reply) reply_len = 0; /* only the shape matters; keep reading */
        }
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) eof = 1;
    }
    close(fd);
    if (got != nwant) fuzz_fail("%zu of the %zu complete frames were delivered", got, nwant);
    if (thorp_console_conns() != 0) fuzz_fail("%d console connections left open", thorp_console_conns());
}

static void client_side(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fuzz_fail("socketpair");
    /* at most what the socket buffer holds, so the write never blocks */
    size_t n = size < 65536 ? size : 65536;
    if (n && write(sv[1], data, n) != (ssize_t)n) fuzz_fail("socketpair write");
    close(sv[1]);
    for (int i = 0; i < 10000; i++) {
        size_t len = 0;
        char *f = thorp_console_recv(sv[0], &len);
        if (!f) break;
        if (len > CONSOLE_MAX_REPLY || f[len] != 0) fuzz_fail("thorp_console_recv returned a bad frame");
        thorp_console_free(f);
    }
    close(sv[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    server_side(data, size);
    client_side(data, size);
    return 0;
}
