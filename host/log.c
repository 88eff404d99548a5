/* log: scrubbed, levelled output to stderr. See log.h. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

static const char *level_names[] = { "error", "warn", "info", "debug" };

/* The watchdog thread logs too (host/watchdog.c): level and format are
 * atomics, and the secret list is read and grown under `mu`. */
static struct {
    atomic_int level;
    atomic_int json;
    pthread_mutex_t mu;
    char **secrets;
    int nsecrets;
} log_state = { LOG_INFO, 0, PTHREAD_MUTEX_INITIALIZER, NULL, 0 };

#define LEVEL() atomic_load_explicit(&log_state.level, memory_order_relaxed)

void log_init(void) { atomic_store(&log_state.json, !isatty(STDERR_FILENO)); }

void log_free(void)
{
    pthread_mutex_lock(&log_state.mu);
    for (int i = 0; i < log_state.nsecrets; i++) free(log_state.secrets[i]);
    free(log_state.secrets);
    log_state.secrets = NULL;
    log_state.nsecrets = 0;
    pthread_mutex_unlock(&log_state.mu);
}

int log_level(void) { return LEVEL(); }
void thorp_log_set_level(int level) { atomic_store(&log_state.level, level < 0 ? 0 : level > 3 ? 3 : level); }
int thorp_log_get_level(void) { return LEVEL(); }
int thorp_log_is_json(void) { return atomic_load(&log_state.json); }
void thorp_log_set_json(int on) { atomic_store(&log_state.json, on); }

void thorp_log_secret_add(const char *secret)
{
    if (!secret || strlen(secret) < 4) return; /* too short to be a secret, too risky to scrub */
    pthread_mutex_lock(&log_state.mu);
    int known = 0;
    for (int i = 0; i < log_state.nsecrets && !known; i++) known = !strcmp(log_state.secrets[i], secret);
    char *copy = known ? NULL : strdup(secret);
    char **n = copy ? realloc(log_state.secrets, sizeof(char *) * (log_state.nsecrets + 1)) : NULL;
    if (n) {
        log_state.secrets = n;
        log_state.secrets[log_state.nsecrets++] = copy;
    } else {
        free(copy);
    }
    pthread_mutex_unlock(&log_state.mu);
}

int thorp_log_scrub(const char *s, char *out, int cap)
{
    int o = 0;
    pthread_mutex_lock(&log_state.mu);
    while (*s && o < cap - 1) {
        int hit = 0;
        for (int i = 0; i < log_state.nsecrets; i++) {
            size_t n = strlen(log_state.secrets[i]);
            if (!strncmp(s, log_state.secrets[i], n)) {
                for (const char *r = "***"; *r && o < cap - 1; r++) out[o++] = *r;
                s += n;
                hit = 1;
                break;
            }
        }
        if (!hit) out[o++] = *s++;
    }
    pthread_mutex_unlock(&log_state.mu);
    out[o] = 0;
    return o;
}

void thorp_log_write(int level, const char *line)
{
    if (level > LEVEL()) return;
    /* scrubbing never lengthens a line (secrets are >= 4 bytes, "***" is 3),
     * so the whole line fits: nothing is cut, not even in the middle of a secret */
    size_t len = strlen(line);
    char small[8192], *buf = len + 2 <= sizeof small ? small : malloc(len + 2);
    if (!buf) return;
    int n = thorp_log_scrub(line, buf, (int)len + 1);
    buf[n++] = '\n';
    fwrite(buf, 1, n, stderr);
    fflush(stderr);
    if (buf != small) free(buf);
}

/* JSON-escape src into dst; returns bytes written. */
static int log_escape(char *dst, int cap, const char *src)
{
    int o = 0;
    for (; *src && o < cap - 7; src++) {
        unsigned char c = (unsigned char)*src;
        if (c == '"' || c == '\\') { dst[o++] = '\\'; dst[o++] = c; }
        else if (c == '\n') { dst[o++] = '\\'; dst[o++] = 'n'; }
        else if (c == '\t') { dst[o++] = '\\'; dst[o++] = 't'; }
        else if (c < 0x20) o += snprintf(dst + o, cap - o, "\\u%04x", c);
        else dst[o++] = c;
    }
    dst[o] = 0;
    return o;
}

void log_emit(int level, const char *module, const char *reqid, const char *fmt, ...)
{
    if (level > LEVEL()) return;
    char msg[4096], esc[6144], line[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    int w = (int)strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);
    if (atomic_load_explicit(&log_state.json, memory_order_relaxed)) {
        log_escape(esc, sizeof esc, msg);
        int n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"module\":\"%s\"", when,
                         level_names[level], module ? module : "host");
        if (reqid && *reqid) n += snprintf(line + n, sizeof line - n, ",\"request_id\":\"%s\"", reqid);
        snprintf(line + n, sizeof line - n, ",\"msg\":\"%s\"}", esc);
    } else if (reqid && *reqid) {
        snprintf(line, sizeof line, "%s %-5s [%s] (%s) %s", when, level_names[level], module ? module : "host",
                 reqid, msg);
    } else {
        snprintf(line, sizeof line, "%s %-5s [%s] %s", when, level_names[level], module ? module : "host", msg);
    }
    thorp_log_write(level, line);
}
