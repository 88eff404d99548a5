/* log: the host's one way to say something.
 *
 * Lines go to stderr: JSON objects (one per line) when stderr is not a
 * terminal, readable text when it is. Every line passes through the secret
 * scrubber first, so an API key that was registered with log_secret_add()
 * can never reach a log line even if some caller formats it by mistake.
 *
 *   log_emit(LOG_WARN, "pool", reqid, "endpoint %s failed: %s", name, why);
 *
 * Lua reaches the same sink through thorp_log_write() (see lib/thorp/log.lua).
 */
#ifndef THORP_LOG_H
#define THORP_LOG_H

/* ffi:begin */
enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };
/* ffi:end */

void log_init(void);
void log_free(void);
int log_level(void);
void log_emit(int level, const char *module, const char *reqid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Exported to Lua through the FFI. */
/* ffi:begin */
void thorp_log_set_level(int level);
int thorp_log_get_level(void);
int thorp_log_is_json(void);
void thorp_log_set_json(int on);
void thorp_log_secret_add(const char *secret);
void thorp_log_write(int level, const char *line);
/* Replace every registered secret in s with "***"; result in a static-free
 * caller buffer. Returns the length written (truncated to cap-1). */
int thorp_log_scrub(const char *s, char *out, int cap);
/* ffi:end */

#endif
