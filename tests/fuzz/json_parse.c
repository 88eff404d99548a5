/* json_parse: thorp.json's parser (host/json.c), which reads every RPC answer
 * before classification, on arbitrary bytes. Whatever the bytes, it returns
 * 0 or -1 with a message; an accepted document is a well-formed node tree
 * (each container's children are there, strings lie inside the text or the
 * unescape buffer), and a document parses the same when the doc is reused. */
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "json.h"

static thorp_json_doc *doc;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    doc = thorp_json_new();
    if (!doc) fuzz_fail("thorp_json_new");
    return 0;
}

/* index one past the subtree at i, checking it on the way */
static size_t walk(const thorp_json_doc *d, size_t i, size_t text_len, int depth)
{
    if (i >= d->n) fuzz_fail("node %zu is past the %zu nodes", i, d->n);
    if (depth > JSON_MAX_DEPTH + 1) fuzz_fail("nesting deeper than JSON_MAX_DEPTH");
    const thorp_json_node *nd = &d->nodes[i];
    switch (nd->type) {
    case JSON_NULL: case JSON_FALSE: case JSON_TRUE: case JSON_NUM: case JSON_INT: case JSON_UINT:
        return i + 1;
    case JSON_STR:
        if (nd->v.off + nd->len > text_len) fuzz_fail("string node outside the text");
        return i + 1;
    case JSON_STR_ESC:
        if (nd->v.off + nd->len > d->slen) fuzz_fail("unescaped string outside the buffer");
        return i + 1;
    case JSON_ARR: case JSON_OBJ: {
        size_t n = nd->type == JSON_OBJ ? 2 * (size_t)nd->len : nd->len, j = i + 1;
        for (size_t k = 0; k < n; k++) {
            if (nd->type == JSON_OBJ && k % 2 == 0 && d->nodes[j].type != JSON_STR && d->nodes[j].type != JSON_STR_ESC)
                fuzz_fail("an object key that is not a string");
            j = walk(d, j, text_len, depth + 1);
        }
        return j;
    }
    default:
        fuzz_fail("node type %u", nd->type);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1); /* exact size: a read past the end is an ASan finding */
    memcpy(s, data, size);
    int rc = thorp_json_parse(doc, s, size);
    if (rc != 0) {
        if (rc != -1 || !doc->err[0]) fuzz_fail("a refusal without a message (rc %d)", rc);
    } else {
        if (walk(doc, 0, size, 0) != doc->n) fuzz_fail("the tree does not span the %zu nodes", doc->n);
        size_t n = doc->n;
        if (thorp_json_parse(doc, s, size) != 0 || doc->n != n) fuzz_fail("a second parse differs");
    }
    free(s);
    return 0;
}
