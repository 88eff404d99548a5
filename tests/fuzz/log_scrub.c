/* log_scrub: the secret scrubber (host/log.c) on arbitrary text: the first
 * line of the input is split on '|' into secrets to register, the rest is
 * the text. Invariants: the scrubber stays inside its buffers, returns the
 * same length whatever the capacity it is given, cuts within the capacity,
 * and no registered secret of 4+ bytes survives in the output (unless it
 * holds URL syntax or a space, which can meet again around a redacted URL). */
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) { return 0; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *nl = memchr(data, '\n', size);
    size_t head = nl ? (size_t)(nl - (const char *)data) : 0;
    char *secrets = malloc(head + 1);
    memcpy(secrets, data, head);
    secrets[head] = 0;
    log_free();
    const char *reg[64];
    int nreg = 0;
    for (char *p = secrets, *q; p && *p && nreg < 64; p = q) {
        q = strchr(p, '|');
        if (q) *q++ = 0;
        if (strchr(p, '*')) continue; /* a secret made of stars would match our own output */
        thorp_log_secret_add(p);
        reg[nreg++] = p;
    }
    const char *text = nl ? (const char *)data + head + 1 : (const char *)data;
    size_t len = size - (size_t)(text - (const char *)data);
    char *exact = malloc(len + 1);
    memcpy(exact, text, len); /* an exact-size copy: a read past the end is an ASan finding */
    size_t need = thorp_log_scrub_n(exact, len, NULL, 0);
    char *out = malloc(need + 1);
    size_t got = thorp_log_scrub_n(exact, len, out, need + 1);
    if (got != need) fuzz_fail("scrub said %zu bytes, then %zu", need, got);
    if (out[need] != 0) fuzz_fail("output not NUL-terminated");
    char small[16];
    size_t cut = thorp_log_scrub_n(exact, len, small, sizeof small);
    if (cut != need) fuzz_fail("a small buffer changed the length (%zu, %zu)", cut, need);
    if (strlen(small) > sizeof small - 1) fuzz_fail("cut output overran its buffer");
    for (int k = 0; k < nreg; k++) {
        const char *p = reg[k];
        if (strlen(p) >= 4 && memmem(out, need, p, strlen(p))
            && !strpbrk(p, ":/?#&=@\\ ")) /* pieces of URL syntax can be rebuilt around a redacted URL */
            fuzz_fail("secret %s survived the scrubber", p);
    }
    free(out);
    free(exact);
    free(secrets);
    return 0;
}
