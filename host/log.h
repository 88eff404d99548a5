/* log: the host's one way to say something, and its one secret scrubber.
 *
 * Lines go to stderr: JSON objects (one per line) when stderr is not a
 * terminal, readable text when it is. Every line passes through the secret
 * scrubber first, so an API key can never reach a log line even if some
 * caller formats it by mistake.
 *
 *   log_emit(LOG_WARN, "pool", reqid, "endpoint %s failed: %s", name, why);
 *
 * The scrubber (thorp_log_scrub_n) is the filter for everything that leaves
 * the process: log lines, console replies, front-door error messages, error
 * values. It does two things in one pass:
 *   - literal secrets registered with thorp_log_secret_add() (URL pieces,
 *     header values, tokens) become "***" wherever they appear;
 *   - any URL in the text (scheme://..., also JSON-escaped scheme:\/\/...)
 *     loses its user:password, every path segment, every query value and its
 *     fragment (https://h/SEGMENT?api-key=KEY shows as https://h/ + 3 stars, api-key= + 3 stars), whatever their length, unless
 *     the URL starts with a prefix registered by thorp_log_public_add()
 *     (an endpoint with public_path = true): then its path stays readable.
 * The output can be longer than the input (a one-letter segment becomes
 * "***"): thorp_log_scrub_n returns the length it needs, like snprintf.
 *
 * Lua reaches the same sink through thorp_log_write() (lib/thorp/log.lua).
 */
#ifndef THORP_LOG_H
#define THORP_LOG_H

#include <stddef.h>

/* ffi:begin */
enum { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };
/* ffi:end */

void log_init(void);
void log_free(void);
int log_level(void);
void log_emit(int level, const char *module, const char *reqid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ffi:begin */
void thorp_log_set_level(int level);
int thorp_log_get_level(void);
int thorp_log_is_json(void);
void thorp_log_set_json(int on);
/* Register a literal secret (>= 4 bytes; shorter ones are only hidden inside URLs). */
void thorp_log_secret_add(const char *secret);
/* URLs starting with prefix (scheme://host[:port]/path, no query) keep their path. */
void thorp_log_public_add(const char *prefix);
void thorp_log_write(int level, const char *line);
/* Scrub s[0..len) into out (cap bytes, always NUL-terminated when cap > 0).
 * Returns the full scrubbed length; when it is >= cap the output was cut. */
size_t thorp_log_scrub_n(const char *s, size_t len, char *out, size_t cap);
/* The same for a C string, cut to cap-1 bytes. Returns the length written. */
int thorp_log_scrub(const char *s, char *out, int cap);
/* ffi:end */

#endif
