/* json_span: the JSON span scanner (host/jsonspan.c,
 * thorp_json_member / thorp_json_elements) on arbitrary bytes. The pool's
 * raw answers and the front door's requests reach it; whatever the bytes,
 * it must stay inside them and return spans that are ordered and in range. */
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "jsonspan.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

static void check_span(size_t a, size_t b, size_t size, const char *what)
{
    if (!(a < b && b <= size)) fuzz_fail("%s span [%zu, %zu) outside the %zu input bytes", what, a, b, size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: a read one past the end is an ASan finding */
    char *s = malloc(size ? size : 1);
    memcpy(s, data, size);
    static const char *keys[] = { "id", "result", "error", "method", "jsonrpc", "" };
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        size_t a = 0, b = 0;
        int rc = thorp_json_member(s, size, keys[k], strlen(keys[k]), &a, &b);
        if (rc < -1 || rc > 2) fuzz_fail("thorp_json_member returned %d", rc);
        if (rc >= 1) check_span(a, b, size, "member"); /* 2: the key is there more than once */
    }
    enum { MAX = 8 };
    size_t starts[MAX], ends[MAX];
    int n = thorp_json_elements(s, size, starts, ends, MAX);
    if (n < -1) fuzz_fail("thorp_json_elements returned %d", n);
    size_t prev = 0;
    for (int i = 0; i < n && i < MAX; i++) {
        check_span(starts[i], ends[i], size, "element");
        if (starts[i] < prev) fuzz_fail("element %d starts before the previous one ends", i);
        prev = ends[i];
    }
    free(s);
    return 0;
}
