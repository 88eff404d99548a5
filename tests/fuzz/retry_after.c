/* retry_after: the Retry-After parser (host/pool.c,
 * thorp_pool_parse_retry_after) on arbitrary header values. An upstream
 * chooses these bytes, and the answer decides how long an endpoint is
 * left alone, so whatever they are the result must be "not understood"
 * (-1) or a delay in [0, 1e12] ms; delay-seconds must read as what the
 * digits say, and an HTTP-date must be a fixed point in time (asking a
 * second later gives a second less). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "pool.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

static int is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size ? size : 1); /* exact size: a read past the end is an ASan finding */
    memcpy(s, data, size);
    const double now = 1.8e12; /* 2027-01-15, a wall clock in ms */
    double ms = thorp_pool_parse_retry_after(s, size, now);
    if (!(ms == -1 || (ms >= 0 && ms <= 1e12))) fuzz_fail("result %g is neither -1 nor in [0, 1e12] ms", ms);
    if (ms >= 0 && memchr(s, 0, size)) fuzz_fail("a value with a NUL byte was understood (%g ms)", ms);

    size_t a = 0, b = size;
    while (a < b && (s[a] == ' ' || s[a] == '\t')) a++;
    while (b > a && is_ws(s[b - 1])) b--;
    int digits = a < b;
    for (size_t i = a; i < b; i++) digits = digits && s[i] >= '0' && s[i] <= '9';
    if (digits && b - a < 64) {
        char num[64];
        memcpy(num, s + a, b - a);
        num[b - a] = 0;
        double want = fmin(strtod(num, NULL) * 1000, 1e12);
        if (fabs(ms - want) > want * 1e-9) fuzz_fail("delay-seconds \"%s\" read as %g ms, not %g", num, ms, want);
    } else if (ms > 1000 && ms < 1e12) {
        /* an HTTP-date: a second later it is a second nearer */
        double later = thorp_pool_parse_retry_after(s, size, now + 1000);
        if (fabs(later - (ms - 1000)) > 1e-3) fuzz_fail("a date %g ms away is %g ms away a second later", ms, later);
    }
    free(s);
    return 0;
}
