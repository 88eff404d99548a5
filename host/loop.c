/* loop: libevent base, inbox and signals. See loop.h. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <lauxlib.h>
#include "log.h"
#include "loop.h"

#define MAX_SIGNALS 8

_Static_assert(TSIG_HUP == SIGHUP && TSIG_INT == SIGINT && TSIG_USR1 == SIGUSR1 && TSIG_TERM == SIGTERM,
               "loop.h's TSIG_* must equal <signal.h>");

static struct {
    struct event_base *base;
    struct event *tick;
    struct event *sig[MAX_SIGNALS];
    int nsig;
    thorp_event *ring;
    int cap, head, count;
    int stop;
    struct { void (*fn)(void *); void *arg; } frees[32];
    int nfrees;
} loop;

struct event_base *loop_base(void) { return loop.base; }

static void loop_on_tick(evutil_socket_t fd, short what, void *arg) { (void)fd; (void)what; (void)arg; }

int loop_init(void)
{
    loop.base = event_base_new();
    if (!loop.base) return -1;
    loop.tick = evtimer_new(loop.base, loop_on_tick, NULL);
    loop.cap = 1024;
    loop.ring = calloc(loop.cap, sizeof *loop.ring);
    signal(SIGPIPE, SIG_IGN);
    return loop.ring && loop.tick ? 0 : -1;
}

void loop_on_free(void (*fn)(void *), void *arg)
{
    if (loop.nfrees < 32) {
        loop.frees[loop.nfrees].fn = fn;
        loop.frees[loop.nfrees++].arg = arg;
    }
}

void loop_free(void)
{
    while (loop.nfrees > 0) {
        loop.nfrees--;
        loop.frees[loop.nfrees].fn(loop.frees[loop.nfrees].arg);
    }
    for (int i = 0; i < loop.nsig; i++) event_free(loop.sig[i]);
    if (loop.tick) event_free(loop.tick);
    if (loop.base) event_base_free(loop.base);
    free(loop.ring);
    memset(&loop, 0, sizeof loop);
}

double thorp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

double thorp_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void loop_post(int kind, int64_t id, int a, double num, void *ptr)
{
    if (loop.count == loop.cap) {
        thorp_event *n = malloc(sizeof *n * loop.cap * 2);
        if (!n) abort(); /* out of memory: nothing sensible left to do */
        for (int i = 0; i < loop.count; i++) n[i] = loop.ring[(loop.head + i) % loop.cap];
        free(loop.ring);
        loop.ring = n;
        loop.head = 0;
        loop.cap *= 2;
    }
    thorp_event *e = &loop.ring[(loop.head + loop.count++) % loop.cap];
    e->kind = kind;
    e->id = id;
    e->a = a;
    e->num = num;
    e->ptr = ptr;
}

int thorp_inbox_drain(thorp_event *out, int max)
{
    int n = 0;
    while (n < max && loop.count > 0) {
        out[n++] = loop.ring[loop.head];
        loop.head = (loop.head + 1) % loop.cap;
        loop.count--;
    }
    return n;
}

int thorp_inbox_size(void) { return loop.count; }
void thorp_loop_stop(void) { loop.stop = 1; event_base_loopbreak(loop.base); }
int thorp_loop_stopping(void) { return loop.stop; }

static void loop_on_signal(evutil_socket_t signum, short what, void *arg)
{
    (void)what; (void)arg;
    loop_post(TEV_SIGNAL, 0, (int)signum, 0, NULL);
}

void thorp_loop_catch_signal(int signum)
{
    for (int i = 0; i < loop.nsig; i++)
        if (event_get_fd(loop.sig[i]) == signum) return;
    if (loop.nsig == MAX_SIGNALS) return;
    struct event *ev = evsignal_new(loop.base, signum, loop_on_signal, NULL);
    if (!ev || event_add(ev, NULL) < 0) {
        log_emit(LOG_ERROR, "loop", NULL, "cannot catch signal %d", signum);
        if (ev) event_free(ev);
        return;
    }
    loop.sig[loop.nsig++] = ev;
}

int loop_run(lua_State *L, int step_ref)
{
    while (!loop.stop) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, step_ref);
        if (lua_pcall(L, 0, 1, 0) != 0) {
            log_emit(LOG_ERROR, "loop", NULL, "scheduler step failed: %s", lua_tostring(L, -1));
            lua_pop(L, 1);
            return -1;
        }
        double timeout = lua_tonumber(L, -1); /* ms; < 0: wait for I/O only */
        lua_pop(L, 1);
        if (loop.stop) break;
        if (loop.count > 0) timeout = 0;
        if (timeout == 0) {
            event_base_loop(loop.base, EVLOOP_NONBLOCK);
        } else {
            if (timeout > 0) {
                struct timeval tv = { (time_t)(timeout / 1000), (suseconds_t)((long)(timeout * 1000) % 1000000) };
                evtimer_add(loop.tick, &tv);
            }
            event_base_loop(loop.base, EVLOOP_ONCE);
            evtimer_del(loop.tick);
        }
    }
    return 0;
}
