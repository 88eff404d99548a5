/* console: the unix-socket console of a running host, its client, and the
 * stdin reader of `thorp repl --local`. Lua half: lib/thorp/console.lua.
 *
 * Wire format (both directions): a frame is the payload length in decimal,
 * a newline, then the payload bytes. The client sends one Lua chunk per
 * frame and waits for the answer frame before sending the next; the server
 * stops reading a connection while its request is being evaluated.
 *
 * Server: thorp_console_listen(path) binds a 0600 socket (stale files are
 * removed, a live host on the path is an error), accepts only peers with our
 * uid (or root), and for each complete request posts
 *   loop_post(TEV_CONSOLE, conn_id, CONSOLE_EV_REQUEST, len, NULL)
 * Lua fetches the text with thorp_console_request(conn_id, &len) (valid
 * until the reply) and answers with thorp_console_reply(conn_id, text, len).
 * A closed connection posts CONSOLE_EV_CLOSED. Limits: CONSOLE_MAX_REQUEST
 * bytes per request, CONSOLE_MAX_CONNS connections.
 *
 * Client (blocking; used by `thorp repl` / `thorp reload`, which run no
 * loop): thorp_console_dial, _send, _recv, _close, and libedit wrappers.
 *
 * Local stdin (non-blocking, on the loop): thorp_console_stdin_start(edit)
 * reads stdin with a libevent event (libedit's callback interface when edit
 * is set and stdin is a terminal) and posts CONSOLE_EV_STDIN (conn id 0);
 * Lua pulls lines with thorp_console_stdin_next().
 */
#ifndef THORP_CONSOLE_H
#define THORP_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#define CONSOLE_MAX_REQUEST (1u << 20)
#define CONSOLE_MAX_REPLY (64u << 20)
#define CONSOLE_MAX_CONNS 16

/* ffi:begin */
/* event.a of a TEV_CONSOLE event */
enum { CONSOLE_EV_REQUEST = 1, CONSOLE_EV_CLOSED = 2, CONSOLE_EV_STDIN = 3 };

/* ffi:begin */
/* Server (exported to Lua). */
int thorp_console_listen(const char *path, char *err, int errcap);
void thorp_console_stop(void);
const char *thorp_console_request(int64_t conn_id, size_t *len);
int thorp_console_reply(int64_t conn_id, const char *text, size_t len);
int thorp_console_conns(void);

/* Client (blocking). */
int thorp_console_dial(const char *path, char *err, int errcap);
int thorp_console_send(int fd, const char *text, size_t len);
char *thorp_console_recv(int fd, size_t *len);
void thorp_console_close(int fd);
void thorp_console_free(void *p);
int thorp_console_isatty(int fd);
char *thorp_console_readline(const char *prompt);
void thorp_console_history_add(const char *line);
int thorp_console_history_load(const char *path);
int thorp_console_history_save(const char *path);

/* Local stdin reader. */
int thorp_console_stdin_start(int edit);
void thorp_console_stdin_prompt(const char *prompt);
char *thorp_console_stdin_next(size_t *len, int *eof);
void thorp_console_stdin_stop(void);
/* ffi:end */

#endif
