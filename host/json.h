/* json: the JSON parser behind thorp.json (and so behind every RPC answer).
 *
 * Why a parser of our own: lua-cjson rounds integers beyond 2^53 (a u64
 * token amount, rentEpoch 18446744073709551615) and its null is a truthy
 * lightuserdata. This one parses a buffer (ptr, len: a Lua string or any C
 * buffer, no copy) into a flat array of nodes in document order, keeping
 * integers beyond 2^53 as int64/uint64; lib/thorp/json.lua walks the nodes
 * and builds Lua tables through the FFI (the JIT compiles that walk).
 *
 *   thorp_json_doc *d = thorp_json_new();
 *   if (thorp_json_parse(d, text, len) != 0) puts(d->err);   message + byte offset
 *   d->nodes[0] is the root; an array/object node is followed by its
 *   children (an object's as key, value, key, value ...); a string node's
 *   bytes are text + off (JSON_STR) or d->strbuf + off (JSON_STR_ESC, unescaped).
 *   thorp_json_free(d);
 * A doc is reused across parses (its buffers only grow).
 */
#ifndef THORP_JSON_H
#define THORP_JSON_H

#include <stddef.h>
#include <stdint.h>

/* ffi:begin */
enum {
    JSON_NULL = 0, JSON_FALSE = 1, JSON_TRUE = 2,
    JSON_NUM = 3,     /* v.d */
    JSON_INT = 4,     /* v.i: a negative integer below -2^53 */
    JSON_UINT = 5,    /* v.u: an integer above 2^53 */
    JSON_STR = 6,     /* len bytes at text + v.off */
    JSON_STR_ESC = 7, /* len bytes at strbuf + v.off (escapes resolved) */
    JSON_ARR = 8,     /* len elements follow */
    JSON_OBJ = 9,     /* len key/value pairs follow */
    JSON_MAX_DEPTH = 1000,
};

typedef struct thorp_json_node {
    uint32_t type;
    uint32_t len;
    union { double d; int64_t i; uint64_t u; uint64_t off; } v;
} thorp_json_node;

typedef struct thorp_json_doc {
    thorp_json_node *nodes;
    size_t n, cap;
    char *strbuf;
    size_t slen, scap;
    size_t err_pos;
    char err[160];
} thorp_json_doc;

thorp_json_doc *thorp_json_new(void);
void thorp_json_free(thorp_json_doc *d);
int thorp_json_parse(thorp_json_doc *d, const char *text, size_t len); /* 0, or -1 with d->err */
/* 1 when s can go between quotes as is (no control byte, '"', '\\' or DEL) */
int thorp_json_plain(const char *s, size_t len);
/* ffi:end */

#endif
