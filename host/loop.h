/* loop: the one libevent base, and the inbox that connects C to Lua.
 *
 * thorp runs a single thread. C modules own sockets and libevent events;
 * Lua owns the coroutines. When something happens in C (a signal, an RPC
 * answer, a console line) the C callback never calls into Lua: it posts a
 * small record to the inbox with loop_post(), and the Lua scheduler drains
 * the inbox in one batch per loop turn (thorp_inbox_drain() through the FFI).
 * That keeps the slow C->Lua direction off the hot path and makes every
 * callback safe to run at any time.
 *
 *   struct event_base *base = loop_base();
 *   loop_post(TEV_RPC, request_id, status, ptr);   from any C callback
 *
 * The driver, loop_run(), alternates: one Lua step (run ready coroutines,
 * due timers, drain the inbox) then one pass of event_base_loop() bounded by
 * the timeout the step returned.
 */
#ifndef THORP_LOOP_H
#define THORP_LOOP_H

#include <stdint.h>
#include <event2/event.h>
#include <lua.h>

/* ffi:begin */
/* Inbox event kinds. Add new kinds here; Lua registers a handler per kind
 * with sched.on_event(kind, fn) and reads the numbers as ffi.C.TEV_*. */
enum {
    TEV_SIGNAL = 1,  /* a = signal number */
    TEV_RPC = 2,     /* id = call id */
    TEV_CONSOLE = 3, /* id = connection id */
    TEV_HTTP = 4,    /* id = request id */
    TEV_WS = 9,      /* WebSocket (host/ws.h): a = THORP_WS_*, id = connection */
    TEV_USER = 16,   /* first kind free for modules */
};

/* The signals Lua handles (thorp_loop_catch_signal, event.a of TEV_SIGNAL).
 * loop.c checks at compile time that they equal <signal.h>'s. */
enum { TSIG_HUP = 1, TSIG_INT = 2, TSIG_USR1 = 10, TSIG_TERM = 15 };

typedef struct thorp_event {
    int32_t kind;
    int32_t a;
    int64_t id;
    double num;
    void *ptr;
} thorp_event;
/* ffi:end */

int loop_init(void);
void loop_free(void);
/* Run fn(arg) in loop_free(), before the base goes: for modules that own
 * events, sockets or handles. Called in reverse order of registration. */
void loop_on_free(void (*fn)(void *), void *arg);
struct event_base *loop_base(void);
/* Post an event for Lua. Never fails: the inbox grows as needed. */
void loop_post(int kind, int64_t id, int a, double num, void *ptr);
/* Run the loop: calls the Lua step function (a registry ref) each turn. */
int loop_run(lua_State *L, int step_ref);

/* Exported to Lua through the FFI. */
/* ffi:begin */
double thorp_now(void);        /* monotonic ms */
double thorp_wall(void);       /* wall-clock ms since the epoch */
int thorp_inbox_drain(thorp_event *out, int max);
int thorp_inbox_size(void);
void thorp_loop_stop(void);
int thorp_loop_stopping(void);
void thorp_loop_catch_signal(int signum);
/* ffi:end */

#endif
