/* console: unix-socket console server, blocking client, stdin reader.
 * See console.h. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <editline/readline.h>
#include "console.h"
#include "log.h"
#include "loop.h"

#define NO_FRAME ((size_t)-1)

typedef struct conn {
    int64_t id;
    struct bufferevent *bev;
    char *req;          /* the request being evaluated, or NULL */
    size_t req_len;
    size_t need;        /* payload length of the frame being read, or NO_FRAME */
    int closing;        /* close once the output has been written */
    struct conn *next;
} conn;

static struct {
    struct evconnlistener *listener;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    dev_t dev;
    ino_t ino;
    conn *conns;
    int nconns;
    int64_t next_id;
    int registered;
} srv;

static void console_free_all(void *arg);

static void register_free(void)
{
    if (!srv.registered) {
        loop_on_free(console_free_all, NULL);
        srv.registered = 1;
    }
}

static void set_err(char *err, int cap, const char *fmt, const char *a, const char *b)
{
    if (err && cap > 0) snprintf(err, (size_t)cap, fmt, a, b);
}

/* ------------------------------------------------------------------ */
/* Server connections                                                   */
/* ------------------------------------------------------------------ */

static conn *conn_find(int64_t id)
{
    for (conn *c = srv.conns; c; c = c->next)
        if (c->id == id) return c;
    return NULL;
}

static void conn_close(conn *c, int notify)
{
    for (conn **p = &srv.conns; *p; p = &(*p)->next) {
        if (*p == c) { *p = c->next; break; }
    }
    srv.nconns--;
    if (notify) loop_post(TEV_CONSOLE, c->id, CONSOLE_EV_CLOSED, 0, NULL);
    bufferevent_free(c->bev);
    free(c->req);
    free(c);
}

static void frame_add(struct evbuffer *out, const char *text, size_t len)
{
    evbuffer_add_printf(out, "%zu\n", len);
    evbuffer_add(out, text, len);
}

/* Answer with an error frame, then close once it is written. */
static void conn_fail(conn *c, const char *msg)
{
    frame_add(bufferevent_get_output(c->bev), msg, strlen(msg));
    bufferevent_disable(c->bev, EV_READ);
    c->closing = 1;
}

/* Take complete frames from the input while no request is pending. */
static void conn_process(conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->req && !c->closing) {
        if (c->need == NO_FRAME) {
            struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
            if (p.pos < 0) {
                if (evbuffer_get_length(in) > 20) conn_fail(c, "-bad frame header\n");
                return;
            }
            char hdr[24];
            if (p.pos > 20) { conn_fail(c, "-bad frame header\n"); return; }
            evbuffer_remove(in, hdr, (size_t)p.pos + 1);
            hdr[p.pos] = 0;
            char *end;
            errno = 0;
            unsigned long long n = strtoull(hdr, &end, 10);
            /* the number must fill the header up to its newline (a NUL inside is no end) */
            if (end == hdr || end != hdr + p.pos || errno) { conn_fail(c, "-bad frame header\n"); return; }
            if (n > CONSOLE_MAX_REQUEST) {
                char msg[96];
                snprintf(msg, sizeof msg, "-request too large (%llu bytes, the limit is %u)\n", n, CONSOLE_MAX_REQUEST);
                conn_fail(c, msg);
                return;
            }
            c->need = (size_t)n;
        }
        if (evbuffer_get_length(in) < c->need) return;
        c->req = malloc(c->need + 1);
        if (!c->req) { conn_fail(c, "-out of memory\n"); return; }
        evbuffer_remove(in, c->req, c->need);
        c->req[c->need] = 0;
        c->req_len = c->need;
        c->need = NO_FRAME;
        bufferevent_disable(c->bev, EV_READ);
        loop_post(TEV_CONSOLE, c->id, CONSOLE_EV_REQUEST, (double)c->req_len, NULL);
    }
}

static void conn_on_read(struct bufferevent *bev, void *arg) { (void)bev; conn_process(arg); }

static void conn_on_write(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) conn_close(c, 1);
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) conn_close(arg, 1);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)l; (void)sa; (void)salen; (void)arg;
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 || (cr.uid != geteuid() && cr.uid != 0)) {
        log_emit(LOG_WARN, "console", NULL, "refused a console connection from uid %d", len ? (int)cr.uid : -1);
        evutil_closesocket(fd);
        return;
    }
    if (srv.nconns >= CONSOLE_MAX_CONNS) {
        static const char text[] = "-too many console connections\n";
        char msg[64];
        int n = snprintf(msg, sizeof msg, "%zu\n%s", sizeof text - 1, text);
        ssize_t w = write(fd, msg, (size_t)n);
        (void)w;
        evutil_closesocket(fd);
        return;
    }
    evutil_make_socket_nonblocking(fd);
    conn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = c ? bufferevent_socket_new(loop_base(), fd, BEV_OPT_CLOSE_ON_FREE) : NULL;
    if (!bev) {
        free(c);
        evutil_closesocket(fd);
        return;
    }
    c->bev = bev;
    c->id = ++srv.next_id;
    c->need = NO_FRAME;
    c->next = srv.conns;
    srv.conns = c;
    srv.nconns++;
    bufferevent_setcb(bev, conn_on_read, conn_on_write, conn_on_event, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* ------------------------------------------------------------------ */
/* Server                                                               */
/* ------------------------------------------------------------------ */

int thorp_console_listen(const char *path, char *err, int errcap)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    if (srv.listener) { set_err(err, errcap, "the console is already listening on %s%s", srv.path, ""); return -1; }
    if (strlen(path) >= sizeof sa.sun_path) {
        set_err(err, errcap, "console socket path too long (%s)%s", path, "");
        return -1;
    }
    strcpy(sa.sun_path, path);

    char dirbuf[PATH_MAX];
    snprintf(dirbuf, sizeof dirbuf, "%s", path);
    const char *dir = dirname(dirbuf);
    if (stat(dir, &st) != 0) { set_err(err, errcap, "console socket directory %s: %s", dir, strerror(errno)); return -1; }
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX)) {
        set_err(err, errcap, "console socket directory %s is world-writable%s; use a private directory", dir, "");
        return -1;
    }

    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            set_err(err, errcap, "%s exists and is not a socket%s", path, "");
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe < 0) { set_err(err, errcap, "socket: %s%s", strerror(errno), ""); return -1; }
        int live = connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        int e = errno;
        close(probe);
        if (live) {
            set_err(err, errcap, "another thorp host is already running with console socket %s%s", path, "");
            return -1;
        }
        if (e != ECONNREFUSED && e != ENOENT) {
            set_err(err, errcap, "cannot probe console socket %s: %s", path, strerror(e));
            return -1;
        }
        unlink(path); /* stale: its host is gone */
    }

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) { set_err(err, errcap, "socket: %s%s", strerror(errno), ""); return -1; }
    mode_t old = umask(0177);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    int e = errno;
    umask(old);
    if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, 16) != 0 || stat(path, &st) != 0) {
        if (rc == 0) { e = errno; unlink(path); }
        close(fd);
        set_err(err, errcap, "cannot listen on console socket %s: %s", path, strerror(e));
        return -1;
    }
    srv.listener = evconnlistener_new(loop_base(), on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!srv.listener) {
        close(fd);
        unlink(path);
        set_err(err, errcap, "cannot listen on console socket %s%s", path, "");
        return -1;
    }
    snprintf(srv.path, sizeof srv.path, "%s", path);
    srv.dev = st.st_dev;
    srv.ino = st.st_ino;
    register_free();
    return 0;
}

void thorp_console_stop(void)
{
    while (srv.conns) conn_close(srv.conns, 0);
    if (srv.listener) {
        evconnlistener_free(srv.listener);
        srv.listener = NULL;
        struct stat st;
        /* Remove the socket only if it is still ours (not a newer host's). */
        if (stat(srv.path, &st) == 0 && st.st_dev == srv.dev && st.st_ino == srv.ino) unlink(srv.path);
        srv.path[0] = 0;
    }
}

const char *thorp_console_request(int64_t conn_id, size_t *len)
{
    conn *c = conn_find(conn_id);
    if (!c || !c->req) { *len = 0; return NULL; }
    *len = c->req_len;
    return c->req;
}

int thorp_console_reply(int64_t conn_id, const char *text, size_t len)
{
    conn *c = conn_find(conn_id);
    if (!c || !c->req) return -1;
    if (len > CONSOLE_MAX_REPLY) len = CONSOLE_MAX_REPLY;
    frame_add(bufferevent_get_output(c->bev), text, len);
    free(c->req);
    c->req = NULL;
    bufferevent_enable(c->bev, EV_READ);
    conn_process(c);
    return 0;
}

int thorp_console_conns(void) { return srv.nconns; }

/* ------------------------------------------------------------------ */
/* Client (blocking)                                                    */
/* ------------------------------------------------------------------ */

int thorp_console_dial(const char *path, char *err, int errcap)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) { set_err(err, errcap, "path too long%s%s", "", ""); return -1; }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { set_err(err, errcap, "%s%s", strerror(errno), ""); return -1; }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        set_err(err, errcap, "%s%s", strerror(errno), "");
        close(fd);
        return -1;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int thorp_console_send(int fd, const char *text, size_t len)
{
    char hdr[32];
    int n = snprintf(hdr, sizeof hdr, "%zu\n", len);
    return write_all(fd, hdr, (size_t)n) == 0 && write_all(fd, text, len) == 0 ? 0 : -1;
}

char *thorp_console_recv(int fd, size_t *len)
{
    char hdr[24];
    size_t i = 0;
    for (;;) {
        if (i == sizeof hdr - 1 || read_all(fd, &hdr[i], 1) != 0) return NULL;
        if (hdr[i] == '\n') break;
        i++;
    }
    hdr[i] = 0;
    char *end;
    unsigned long long n = strtoull(hdr, &end, 10);
    if (end == hdr || *end || n > CONSOLE_MAX_REPLY) return NULL;
    char *buf = malloc((size_t)n + 1);
    if (!buf) return NULL;
    if (read_all(fd, buf, (size_t)n) != 0) { free(buf); return NULL; }
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

void thorp_console_close(int fd) { if (fd >= 0) close(fd); }
void thorp_console_free(void *p) { free(p); }
int thorp_console_isatty(int fd) { return isatty(fd); }

char *thorp_console_readline(const char *prompt) { return readline(prompt); }
void thorp_console_history_add(const char *line) { add_history(line); }
int thorp_console_history_load(const char *path)
{
    using_history();
    stifle_history(1000);
    return read_history(path);
}
int thorp_console_history_save(const char *path)
{
    int rc = write_history(path);
    if (rc == 0) chmod(path, 0600);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Local stdin reader (thorp repl --local)                              */
/* ------------------------------------------------------------------ */

typedef struct line { char *s; struct line *next; } line;

static struct {
    struct event *ev;
    struct evbuffer *buf; /* plain mode: bytes read, not yet split */
    line *head, *tail;    /* edit mode: complete lines */
    int edit, sync, eof, active, armed;
} in;

static void stdin_push(char *s)
{
    line *l = malloc(sizeof *l);
    if (!l) { free(s); return; }
    l->s = s;
    l->next = NULL;
    if (in.tail) in.tail->next = l; else in.head = l;
    in.tail = l;
}

static void stdin_on_line(char *s)
{
    /* Stop editing until Lua asks for the next line (so results print
     * before the next prompt). */
    rl_callback_handler_remove();
    if (in.ev) event_del(in.ev);
    in.armed = 0;
    if (s) stdin_push(s); else in.eof = 1;
    loop_post(TEV_CONSOLE, 0, CONSOLE_EV_STDIN, 0, NULL);
}

static void stdin_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what; (void)arg;
    if (in.edit) {
        if (in.armed) rl_callback_read_char();
        return;
    }
    int n = evbuffer_read(in.buf, fd, 65536);
    if (n <= 0) {
        in.eof = 1;
        event_del(in.ev);
    }
    loop_post(TEV_CONSOLE, 0, CONSOLE_EV_STDIN, 0, NULL);
}

int thorp_console_stdin_start(int edit)
{
    if (in.active) return 0;
    memset(&in, 0, sizeof in);
    in.active = 1;
    in.edit = edit && isatty(0);
    in.buf = evbuffer_new();
    in.ev = event_new(loop_base(), 0, EV_READ | EV_PERSIST, stdin_on_read, NULL);
    register_free();
    if (!in.buf || !in.ev) return -1;
    if (!in.edit) {
        /* Regular files and /dev/null cannot be polled: they never block,
         * so read them synchronously in thorp_console_stdin_next. */
        struct stat st;
        if (fstat(0, &st) == 0 && (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode))) in.sync = 1;
        else if (event_add(in.ev, NULL) != 0) in.sync = 1;
    }
    return 0;
}

void thorp_console_stdin_prompt(const char *prompt)
{
    if (!in.active || !in.edit || in.armed || in.eof || in.head) return;
    in.armed = 1;
    rl_callback_handler_install(prompt, stdin_on_line);
    event_add(in.ev, NULL);
}

char *thorp_console_stdin_next(size_t *len, int *eof)
{
    *eof = 0;
    *len = 0;
    if (!in.active) { *eof = 1; return NULL; }
    if (in.edit) {
        line *l = in.head;
        if (!l) { *eof = in.eof; return NULL; }
        in.head = l->next;
        if (!in.head) in.tail = NULL;
        char *s = l->s;
        free(l);
        *len = strlen(s);
        return s;
    }
    for (;;) {
        size_t n;
        char *s = evbuffer_readln(in.buf, &n, EVBUFFER_EOL_CRLF);
        if (s) { *len = n; return s; }
        if (in.eof) {
            n = evbuffer_get_length(in.buf);
            if (n == 0) { *eof = 1; return NULL; }
            s = malloc(n + 1);
            if (!s) return NULL;
            evbuffer_remove(in.buf, s, n);
            s[n] = 0;
            *len = n;
            return s;
        }
        if (!in.sync) return NULL;
        if (evbuffer_read(in.buf, 0, 65536) <= 0) in.eof = 1;
    }
}

void thorp_console_stdin_stop(void)
{
    if (!in.active) return;
    if (in.edit && in.armed) rl_callback_handler_remove();
    if (in.ev) event_free(in.ev);
    if (in.buf) evbuffer_free(in.buf);
    while (in.head) {
        line *l = in.head;
        in.head = l->next;
        free(l->s);
        free(l);
    }
    memset(&in, 0, sizeof in);
}

static void console_free_all(void *arg)
{
    (void)arg;
    thorp_console_stop();
    thorp_console_stdin_stop();
}
