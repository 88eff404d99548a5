/* log: scrubbed, levelled output to stderr. See log.h. */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

static const char *level_names[] = { "error", "warn", "info", "debug" };

/* The watchdog thread logs too (host/watchdog.c): level and format are
 * atomics, and the secret lists are read and grown under `mu`. */
static struct {
    atomic_int level;
    atomic_int json;
    pthread_mutex_t mu;
    char **secrets;
    size_t *lens;
    int nsecrets;
    unsigned char first[256]; /* first bytes of the secrets, for a quick miss */
    char **publics;
    int npublics;
} log_state = { LOG_INFO, 0, PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, { 0 }, NULL, 0 };

#define LEVEL() atomic_load_explicit(&log_state.level, memory_order_relaxed)

void log_init(void) { atomic_store(&log_state.json, !isatty(STDERR_FILENO)); }

static void free_list(char ***list, int *n)
{
    for (int i = 0; i < *n; i++) free((*list)[i]);
    free(*list);
    *list = NULL;
    *n = 0;
}

void log_free(void)
{
    pthread_mutex_lock(&log_state.mu);
    free_list(&log_state.secrets, &log_state.nsecrets);
    free(log_state.lens);
    log_state.lens = NULL;
    memset(log_state.first, 0, sizeof log_state.first);
    free_list(&log_state.publics, &log_state.npublics);
    pthread_mutex_unlock(&log_state.mu);
}

int log_level(void) { return LEVEL(); }
void thorp_log_set_level(int level) { atomic_store(&log_state.level, level < 0 ? 0 : level > 3 ? 3 : level); }
int thorp_log_get_level(void) { return LEVEL(); }
int thorp_log_is_json(void) { return atomic_load(&log_state.json); }
void thorp_log_set_json(int on) { atomic_store(&log_state.json, on); }

/* Add s to list unless present; 1 when added. */
static int list_add(char ***list, int *n, const char *s)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp((*list)[i], s)) return 0;
    char *copy = strdup(s);
    char **grown = copy ? realloc(*list, sizeof(char *) * (size_t)(*n + 1)) : NULL;
    if (!grown) { free(copy); return 0; }
    *list = grown;
    (*list)[(*n)++] = copy;
    return 1;
}

void thorp_log_secret_add(const char *secret)
{
    /* shorter pieces would scrub ordinary words; inside a URL they are hidden anyway */
    if (!secret || strlen(secret) < 4) return;
    pthread_mutex_lock(&log_state.mu);
    int before = log_state.nsecrets;
    if (list_add(&log_state.secrets, &log_state.nsecrets, secret)) {
        size_t *lens = realloc(log_state.lens, sizeof(size_t) * (size_t)log_state.nsecrets);
        if (!lens) {
            free(log_state.secrets[--log_state.nsecrets]);
        } else {
            log_state.lens = lens;
            lens[before] = strlen(secret);
            log_state.first[(unsigned char)secret[0]] = 1;
        }
    }
    pthread_mutex_unlock(&log_state.mu);
}

void thorp_log_public_add(const char *prefix)
{
    if (!prefix || !*prefix) return;
    pthread_mutex_lock(&log_state.mu);
    list_add(&log_state.publics, &log_state.npublics, prefix);
    pthread_mutex_unlock(&log_state.mu);
}

/* Output that counts what it would write past its capacity. */
typedef struct { char *p; size_t cap, n; } sink;

static void put(sink *o, const char *s, size_t n)
{
    if (o->n < o->cap) {
        size_t room = o->cap - o->n;
        memcpy(o->p + o->n, s, n < room ? n : room);
    }
    o->n += n;
}
#define PUTS(o, lit) put(o, lit, sizeof lit - 1)

static int is_scheme_char(unsigned char c) { return isalnum(c) || c == '+' || c == '.' || c == '-'; }

/* Bytes that end a URL inside free text. */
static int url_stop(const char *s, size_t i, size_t len)
{
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == 0x7f) return 1;
    if (c == '\\') return !(i + 1 < len && s[i + 1] == '/'); /* "\/" is a JSON-escaped slash */
    return strchr("\"'<>`,(){}[]|^", c) != NULL;
}

/* A separator "/" or "\/" at s[i]: its length, else 0. */
static size_t slash_at(const char *s, size_t i, size_t end)
{
    if (s[i] == '/') return 1;
    if (s[i] == '\\' && i + 1 < end && s[i + 1] == '/') return 2;
    return 0;
}

/* Length of "scheme://" (or "scheme:\/\/") at s[i], else 0. */
static size_t url_scheme(const char *s, size_t i, size_t len)
{
    if (!isalpha((unsigned char)s[i]) || (i > 0 && is_scheme_char((unsigned char)s[i - 1]))) return 0;
    size_t j = i;
    while (j < len && j - i < 32 && is_scheme_char((unsigned char)s[j])) j++;
    if (j >= len || s[j] != ':') return 0;
    j++;
    for (int k = 0; k < 2; k++) {
        size_t sl = j < len ? slash_at(s, j, len) : 0;
        if (!sl) return 0;
        j += sl;
    }
    return j - i;
}

/* Does the URL s[i..end) (up to its query) start with a public prefix? */
static int url_public(const char *s, size_t i, size_t end)
{
    if (log_state.npublics == 0) return 0;
    char norm[2048];
    size_t n = 0;
    for (size_t k = i; k < end && n < sizeof norm - 1; k++) {
        if (s[k] == '\\' && k + 1 < end && s[k + 1] == '/') continue;
        norm[n++] = s[k];
    }
    for (int p = 0; p < log_state.npublics; p++) {
        size_t pl = strlen(log_state.publics[p]);
        while (pl > 0 && log_state.publics[p][pl - 1] == '/') pl--;
        if (n >= pl && strncasecmp(norm, log_state.publics[p], pl) == 0 && (n == pl || norm[pl] == '/'))
            return 1;
    }
    return 0;
}

/* Literal secrets at s[i]: the length matched (written as ***), else 0. Caller holds mu. */
static size_t secret_at(const char *s, size_t i, size_t len, sink *o)
{
    if (!log_state.first[(unsigned char)s[i]]) return 0;
    for (int k = 0; k < log_state.nsecrets; k++) {
        size_t n = log_state.lens[k];
        if (n <= len - i && !memcmp(s + i, log_state.secrets[k], n)) {
            PUTS(o, "***");
            return n;
        }
    }
    return 0;
}

/* Write the URL at s[i] (scheme length sl) redacted; returns its length. */
static size_t url_redact(const char *s, size_t i, size_t len, size_t sl, sink *o)
{
    size_t end = i + sl;
    while (end < len && !url_stop(s, end, len)) end += s[end] == '\\' ? 2 : 1;
    put(o, s + i, sl);
    size_t j = i + sl, auth_end = j;
    while (auth_end < end && !slash_at(s, auth_end, end) && s[auth_end] != '?' && s[auth_end] != '#') auth_end++;
    size_t at = 0;
    for (size_t k = j; k < auth_end; k++) if (s[k] == '@') at = k + 1;
    if (at) { PUTS(o, "***@"); j = at; }
    put(o, s + j, auth_end - j);
    j = auth_end;
    size_t path_end = j;
    while (path_end < end && s[path_end] != '?' && s[path_end] != '#') path_end++;
    if (url_public(s, i, path_end)) {
        put(o, s + j, path_end - j);
        j = path_end;
    }
    while (j < path_end) { /* each segment -> *** */
        size_t sep = slash_at(s, j, path_end);
        if (sep) { put(o, s + j, sep); j += sep; continue; }
        while (j < path_end && !slash_at(s, j, path_end)) j++;
        PUTS(o, "***");
    }
    if (j < end && s[j] == '?') {
        PUTS(o, "?");
        j++;
        while (j < end && s[j] != '#') {
            size_t k = j;
            while (k < end && s[k] != '&' && s[k] != '=' && s[k] != '#') k++;
            if (k < end && s[k] == '=') { /* name=value: the name is shown */
                put(o, s + j, k - j + 1);
                j = k + 1;
                while (j < end && s[j] != '&' && s[j] != '#') j++;
                if (j > k + 1) PUTS(o, "***");
            } else if (k > j) { /* a bare token may be the key itself */
                PUTS(o, "***");
                j = k;
            }
            if (j < end && s[j] == '&') { PUTS(o, "&"); j++; }
        }
    }
    if (j < end && s[j] == '#') PUTS(o, "#***");
    return end - i;
}

/* Two passes: the literal secrets first, wherever they are (also across the
 * edge of a URL), then the URLs in what is left. Replacing a secret (4+ bytes)
 * by *** never lengthens the text, so the first pass fits in len bytes. */
size_t thorp_log_scrub_n(const char *s, size_t len, char *out, size_t cap)
{
    sink o = { out, cap ? cap - 1 : 0, 0 };
    char small[8192], *lit = len <= sizeof small ? small : malloc(len);
    if (!lit) { /* cannot scrub: say so rather than let the text through */
        static const char oom[] = "[text withheld: the secret scrubber is out of memory]";
        PUTS(&o, oom);
        if (cap) out[o.n < cap ? o.n : cap - 1] = 0;
        return o.n;
    }
    pthread_mutex_lock(&log_state.mu);
    sink l = { lit, len, 0 };
    for (size_t i = 0; i < len;) {
        size_t n = secret_at(s, i, len, &l);
        if (n) { i += n; continue; }
        put(&l, s + i, 1);
        i++;
    }
    for (size_t i = 0; i < l.n;) {
        size_t sl = url_scheme(lit, i, l.n);
        if (sl) { i += url_redact(lit, i, l.n, sl, &o); continue; }
        put(&o, lit + i, 1);
        i++;
    }
    pthread_mutex_unlock(&log_state.mu);
    if (lit != small) free(lit);
    if (cap) out[o.n < cap ? o.n : cap - 1] = 0;
    return o.n;
}

int thorp_log_scrub(const char *s, char *out, int cap)
{
    if (cap <= 0) return 0;
    size_t n = thorp_log_scrub_n(s, strlen(s), out, (size_t)cap);
    return (int)(n < (size_t)cap ? n : (size_t)cap - 1);
}

void thorp_log_write(int level, const char *line)
{
    if (level > LEVEL()) return;
    size_t len = strlen(line);
    char small[8192], *buf = small;
    size_t n = thorp_log_scrub_n(line, len, small, sizeof small - 1);
    if (n >= sizeof small - 1) { /* nothing is cut, not even in the middle of a secret */
        buf = malloc(n + 2);
        if (!buf) return;
        thorp_log_scrub_n(line, len, buf, n + 1);
    }
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
    if (log_state.json) {
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
