/* json: an iterative JSON parser into a flat node array. See json.h. */
#include "json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

thorp_json_doc *thorp_json_new(void)
{
    return calloc(1, sizeof(thorp_json_doc));
}

void thorp_json_free(thorp_json_doc *d)
{
    if (!d) return;
    free(d->nodes);
    free(d->strbuf);
    free(d);
}

static int fail(thorp_json_doc *d, const char *text, const char *p, const char *what)
{
    d->err_pos = (size_t)(p - text);
    snprintf(d->err, sizeof d->err, "json: %s at byte %zu", what, d->err_pos + 1);
    return -1;
}

static thorp_json_node *push(thorp_json_doc *d, uint32_t type)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        thorp_json_node *nn = realloc(d->nodes, cap * sizeof *nn);
        if (!nn) return NULL;
        d->nodes = nn;
        d->cap = cap;
    }
    thorp_json_node *nd = &d->nodes[d->n++];
    nd->type = type;
    nd->len = 0;
    nd->v.u = 0;
    return nd;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) *o++ = (char)cp;
    else if (cp < 0x800) {
        *o++ = (char)(0xc0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xe0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *o++ = (char)(0xf0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
        *o++ = (char)(0x80 | (cp & 0x3f));
    }
    return o;
}

/* p at the opening quote; returns the byte after the closing one, or NULL */
static const char *parse_string(thorp_json_doc *d, const char *text, const char *p, const char *end)
{
    const char *s = ++p;
    int esc = 0;
    while (p < end) {
        /* 8 plain bytes at a time (no '"', no '\\', none below 0x20): long strings such as
         * base64 account data are most of a WebSocket notification */
        while (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            uint64_t q = w ^ 0x2222222222222222ULL, b = w ^ 0x5c5c5c5c5c5c5c5cULL;
            const uint64_t lo = 0x0101010101010101ULL, hi = 0x8080808080808080ULL;
            if (((q - lo) & ~q & hi) | ((b - lo) & ~b & hi) | ((w - 0x20 * lo) & ~w & hi)) break;
            p += 8;
        }
        if (p >= end) break;
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c == '\\') {
            esc = 1;
            p += 2;
            continue;
        }
        if (c < 0x20) {
            fail(d, text, p, "control character in a string");
            return NULL;
        }
        p++;
    }
    if (p >= end) {
        fail(d, text, s - 1, "unterminated string");
        return NULL;
    }
    thorp_json_node *nd = push(d, esc ? JSON_STR_ESC : JSON_STR);
    if (!nd) {
        fail(d, text, s, "out of memory");
        return NULL;
    }
    if (!esc) {
        nd->v.off = (uint64_t)(s - text);
        nd->len = (uint32_t)(p - s);
        return p + 1;
    }
    size_t need = d->slen + (size_t)(p - s);
    if (need > d->scap) {
        size_t cap = d->scap ? d->scap : 1024;
        while (cap < need) cap *= 2;
        char *nb = realloc(d->strbuf, cap);
        if (!nb) {
            fail(d, text, s, "out of memory");
            return NULL;
        }
        d->strbuf = nb;
        d->scap = cap;
    }
    char *o = d->strbuf + d->slen, *o0 = o;
    for (const char *q = s; q < p; q++) {
        if (*q != '\\') {
            *o++ = *q;
            continue;
        }
        q++;
        switch (*q) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            int cp = p - q >= 5 ? hex4(q + 1) : -1;
            if (cp < 0) {
                fail(d, text, q - 1, "bad \\u escape");
                return NULL;
            }
            q += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && p - q >= 7 && q[1] == '\\' && q[2] == 'u') {
                int lo = hex4(q + 3);
                if (lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    q += 6;
                }
            }
            o = put_utf8(o, (unsigned)cp); /* 6 escaped bytes give at most 4 */
            break;
        }
        default:
            fail(d, text, q - 1, "bad escape in a string");
            return NULL;
        }
    }
    nd = &d->nodes[d->n - 1];
    nd->v.off = d->slen;
    nd->len = (uint32_t)(o - o0);
    d->slen += (size_t)(o - o0);
    return p + 1;
}

static const double POW10[23] = { 1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                                  1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22 };
#define TWO53 9007199254740992ull

static const char *parse_number(thorp_json_doc *d, const char *text, const char *p, const char *end)
{
    const char *s = p;
    int neg = 0, over = 0, frac = 0, exp = 0;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end || *p < '0' || *p > '9') {
        fail(d, text, s, "bad number");
        return NULL;
    }
    uint64_t m = 0;
    int ndig = 0, nfrac = 0;
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9') {
            fail(d, text, s, "number with a leading zero");
            return NULL;
        }
    } else {
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned dg = (unsigned)(*p - '0');
            if (m > (UINT64_MAX - dg) / 10) over = 1;
            else m = m * 10 + dg;
            ndig++;
            p++;
        }
    }
    if (p < end && *p == '.') {
        frac = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9') {
            fail(d, text, s, "bad number (no digit after '.')");
            return NULL;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            unsigned dg = (unsigned)(*p - '0');
            if (m > (UINT64_MAX - dg) / 10) over = 1;
            else {
                m = m * 10 + dg;
                nfrac++;
            }
            p++;
        }
    }
    int e = 0;
    if (p < end && (*p == 'e' || *p == 'E')) {
        exp = 1;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= end || *p < '0' || *p > '9') {
            fail(d, text, s, "bad number (no digit in the exponent)");
            return NULL;
        }
        while (p < end && *p >= '0' && *p <= '9') {
            if (e < 100000) e = e * 10 + (*p - '0');
            p++;
        }
        if (eneg) e = -e;
    }
    thorp_json_node *nd = push(d, JSON_NUM);
    if (!nd) {
        fail(d, text, s, "out of memory");
        return NULL;
    }
    if (!frac && !exp && !over) {
        if (m <= TWO53) nd->v.d = neg ? -(double)m : (double)m;
        else if (!neg) {
            nd->type = JSON_UINT;
            nd->v.u = m;
        } else if (m <= (uint64_t)INT64_MAX + 1) {
            nd->type = JSON_INT;
            nd->v.i = (int64_t)(0 - m);
        } else goto slow;
        return p;
    }
    {
        int e10 = e - nfrac;
        if (!over && m <= TWO53 && e10 >= -22 && e10 <= 22) {
            double v = e10 < 0 ? (double)m / POW10[-e10] : (double)m * POW10[e10];
            nd->v.d = neg ? -v : v;
            return p;
        }
    }
slow:;
    char tmp[512];
    size_t n = (size_t)(p - s);
    if (n >= sizeof tmp) {
        fail(d, text, s, "number too long");
        return NULL;
    }
    memcpy(tmp, s, n);
    tmp[n] = 0;
    nd->type = JSON_NUM;
    nd->v.d = strtod(tmp, NULL);
    (void)ndig;
    return p;
}

#define WS(c) ((c) == ' ' || (c) == '\n' || (c) == '\r' || (c) == '\t')

int thorp_json_parse(thorp_json_doc *d, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    size_t stack[JSON_MAX_DEPTH];
    int depth = 0;
    d->n = 0;
    d->slen = 0;
    d->err[0] = 0;
    thorp_json_node *nd;

value:
    while (p < end && WS(*p)) p++;
    if (p >= end) return fail(d, text, p, depth ? "unexpected end of input" : "empty input");
    switch (*p) {
    case '{':
    case '[':
        if (depth == JSON_MAX_DEPTH) return fail(d, text, p, "nesting deeper than 1000");
        if (!(nd = push(d, *p == '{' ? JSON_OBJ : JSON_ARR))) return fail(d, text, p, "out of memory");
        stack[depth++] = d->n - 1;
        p++;
        while (p < end && WS(*p)) p++;
        if (p < end && *p == (d->nodes[d->n - 1].type == JSON_OBJ ? '}' : ']')) {
            p++;
            depth--;
            goto after;
        }
        if (d->nodes[d->n - 1].type == JSON_OBJ) goto key;
        goto value;
    case '"':
        if (!(p = parse_string(d, text, p, end))) return -1;
        goto after;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0) return fail(d, text, p, "unexpected character");
        if (!push(d, JSON_TRUE)) return fail(d, text, p, "out of memory");
        p += 4;
        goto after;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0) return fail(d, text, p, "unexpected character");
        if (!push(d, JSON_FALSE)) return fail(d, text, p, "out of memory");
        p += 5;
        goto after;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0) return fail(d, text, p, "unexpected character");
        if (!push(d, JSON_NULL)) return fail(d, text, p, "out of memory");
        p += 4;
        goto after;
    default:
        if (*p == '-' || (*p >= '0' && *p <= '9')) {
            if (!(p = parse_number(d, text, p, end))) return -1;
            goto after;
        }
        return fail(d, text, p, "unexpected character");
    }

key:
    while (p < end && WS(*p)) p++;
    if (p >= end || *p != '"') return fail(d, text, p, "expected a string key");
    if (!(p = parse_string(d, text, p, end))) return -1;
    while (p < end && WS(*p)) p++;
    if (p >= end || *p != ':') return fail(d, text, p, "expected ':' after a key");
    p++;
    goto value;

after:
    if (depth == 0) {
        while (p < end && WS(*p)) p++;
        if (p != end) return fail(d, text, p, "text after the JSON value");
        return 0;
    }
    {
        thorp_json_node *parent = &d->nodes[stack[depth - 1]];
        parent->len++;
        while (p < end && WS(*p)) p++;
        if (p >= end) return fail(d, text, p, "unexpected end of input");
        if (*p == ',') {
            p++;
            if (parent->type == JSON_OBJ) goto key;
            goto value;
        }
        if (*p == (parent->type == JSON_OBJ ? '}' : ']')) {
            p++;
            depth--;
            goto after;
        }
        return fail(d, text, p, parent->type == JSON_OBJ ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

int thorp_json_plain(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned bad = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = p[i];
        bad |= (c < 0x20) | (c == '"') | (c == '\\') | (c == 0x7f);
    }
    return !bad;
}
