/* jsonspan: byte spans of JSON members and array elements. See jsonspan.h. */
#include <stdlib.h>
#include <string.h>
#include "jsonspan.h"

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

/* End (one past) of the string starting at s[i] == '"', or 0. */
static size_t string_end(const char *s, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (s[i] == '\\') i++;
        else if (s[i] == '"') return i + 1;
    }
    return 0;
}

/* End (one past) of the value starting at s[i], or 0. Assumes JSON that a
 * parser has accepted (the request was decoded; the answer was classified). */
static size_t value_end(const char *s, size_t len, size_t i)
{
    if (i >= len) return 0;
    char c = s[i];
    if (c == '"') return string_end(s, len, i);
    if (c == '{' || c == '[') {
        int depth = 0;
        for (; i < len; i++) {
            c = s[i];
            if (c == '"') {
                size_t e = string_end(s, len, i);
                if (!e) return 0;
                i = e - 1;
            } else if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
        }
        return 0;
    }
    size_t st = i;
    while (i < len && !strchr(",}] \t\r\n", s[i])) i++;
    return i > st ? i : 0;
}

/* Does the JSON string s[a..b) (quotes excluded) decode to key? Handles the
 * escapes a decoder would turn into the same bytes (\u0069 is "i"). */
static int key_equal(const char *s, size_t a, size_t b, const char *key, size_t keylen)
{
    size_t k = 0;
    while (a < b) {
        unsigned c = (unsigned char)s[a];
        if (c == '\\' && a + 1 < b) {
            char e = s[a + 1];
            if (e == 'u' && a + 5 < b) {
                char hex[5] = { s[a + 2], s[a + 3], s[a + 4], s[a + 5], 0 };
                char *end;
                c = (unsigned)strtoul(hex, &end, 16);
                if (*end || c > 0x7f) return 0; /* non-ASCII: never one of our keys */
                a += 6;
            } else {
                c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == 'b' ? '\b' : e == 'f' ? '\f' : (unsigned char)e;
                a += 2;
            }
        } else {
            a++;
        }
        if (k >= keylen || (unsigned char)key[k] != c) return 0;
        k++;
    }
    return k == keylen;
}

int thorp_json_member(const char *s, size_t len, const char *key, size_t keylen, size_t *start, size_t *end)
{
    size_t i = skip_ws(s, len, 0);
    if (i >= len || s[i] != '{') return -1;
    i = skip_ws(s, len, i + 1);
    if (i < len && s[i] == '}') return 0;
    int found = 0;
    while (i < len) {
        if (s[i] != '"') return -1;
        size_t ke = string_end(s, len, i);
        if (!ke) return -1;
        int match = key_equal(s, i + 1, ke - 1, key, keylen);
        i = skip_ws(s, len, ke);
        if (i >= len || s[i] != ':') return -1;
        i = skip_ws(s, len, i + 1);
        size_t ve = value_end(s, len, i);
        if (!ve) return -1;
        if (match) { /* the last one, as decoders keep it; 2 says there were several */
            *start = i;
            *end = ve;
            found = found ? 2 : 1;
        }
        i = skip_ws(s, len, ve);
        if (i < len && s[i] == '}') return found;
        if (i >= len || s[i] != ',') return -1;
        i = skip_ws(s, len, i + 1);
    }
    return -1;
}

int thorp_json_elements(const char *s, size_t len, size_t *starts, size_t *ends, int max)
{
    size_t i = skip_ws(s, len, 0);
    if (i >= len || s[i] != '[') return -1;
    i = skip_ws(s, len, i + 1);
    if (i < len && s[i] == ']') return 0;
    int n = 0;
    while (i < len) {
        size_t ve = value_end(s, len, i);
        if (!ve) return -1;
        if (n < max) {
            starts[n] = i;
            ends[n] = ve;
        }
        n++;
        i = skip_ws(s, len, ve);
        if (i < len && s[i] == ']') return n;
        if (i >= len || s[i] != ',') return -1;
        i = skip_ws(s, len, i + 1);
    }
    return -1;
}
