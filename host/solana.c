/* solana: base58, keys, signatures, program addresses and the wire codec.
 * See solana.h. Plain C and libsodium only: the simulator links this file. */
#include "solana.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sol_keypair {
    uint8_t sk[64]; /* libsodium layout = Solana's: seed then public key */
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int thorp_sol_init(void)
{
    return sodium_init() < 0 ? -1 : 0;
}

/* base58 ------------------------------------------------------------------ */

static const char B58[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
static const int8_t B58MAP[128] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, 0, 1, 2, 3, 4, 5, 6, 7, 8, -1, -1, -1, -1, -1, -1,
    -1, 9, 10, 11, 12, 13, 14, 15, 16, -1, 17, 18, 19, 20, 21, -1,
    22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, -1, -1, -1, -1, -1,
    -1, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, -1, 44, 45, 46,
    47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, -1, -1, -1, -1, -1,
};
#define B58_5 656356768u /* 58^5: five digits per 32-bit limb */

int thorp_sol_b58_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    if (len > 4096) return -1;
    size_t zeros = 0;
    while (zeros < len && in[zeros] == 0) zeros++;
    uint32_t limbs[(len - zeros) * 138 / 500 + 2];
    size_t n = 0;
    for (size_t i = zeros; i < len; i++) {
        uint64_t carry = in[i];
        for (size_t j = 0; j < n; j++) {
            carry += (uint64_t)limbs[j] << 8;
            limbs[j] = (uint32_t)(carry % B58_5);
            carry /= B58_5;
        }
        while (carry) {
            limbs[n++] = (uint32_t)(carry % B58_5);
            carry /= B58_5;
        }
    }
    char digits[5 * n + 1];
    size_t nd = 0;
    for (size_t j = n; j-- > 0;) {
        uint32_t v = limbs[j];
        char five[5];
        for (int k = 4; k >= 0; k--) { five[k] = B58[v % 58]; v /= 58; }
        int k = 0;
        if (j == n - 1) while (k < 4 && five[k] == '1') k++; /* no leading zero digits */
        for (; k < 5; k++) digits[nd++] = five[k];
    }
    if (zeros + nd + 1 > cap) return -1;
    memset(out, '1', zeros);
    memcpy(out + zeros, digits, nd);
    out[zeros + nd] = 0;
    return (int)(zeros + nd);
}

int thorp_sol_b58_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *bad)
{
    if (len > 8192) return -2;
    size_t zeros = 0;
    while (zeros < len && in[zeros] == '1') zeros++;
    uint32_t limbs[(len - zeros) * 733 / 4000 + 2];
    size_t n = 0;
    for (size_t i = zeros; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        int d = c < 128 ? B58MAP[c] : -1;
        if (d < 0) {
            if (bad) *bad = i;
            return -1;
        }
        uint64_t carry = (uint64_t)d;
        for (size_t j = 0; j < n; j++) {
            carry += (uint64_t)limbs[j] * 58;
            limbs[j] = (uint32_t)carry;
            carry >>= 32;
        }
        if (carry) limbs[n++] = (uint32_t)carry;
    }
    /* significant bytes of the number, big-endian */
    size_t nb = n * 4;
    if (n > 0) {
        uint32_t top = limbs[n - 1];
        while (nb > (n - 1) * 4 && (top >> (8 * ((nb - 1) % 4))) == 0) nb--;
    }
    if (zeros + nb > cap) return -2;
    memset(out, 0, zeros);
    for (size_t k = 0; k < nb; k++) {
        size_t bit = nb - 1 - k; /* byte index from the least significant */
        out[zeros + k] = (uint8_t)(limbs[bit / 4] >> (8 * (bit % 4)));
    }
    return (int)(zeros + nb);
}

/* base64 ------------------------------------------------------------------ */

size_t thorp_sol_b64_len(size_t len)
{
    return sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
}

int thorp_sol_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    if (cap < thorp_sol_b64_len(len)) return -1;
    sodium_bin2base64(out, cap, in, len, sodium_base64_VARIANT_ORIGINAL);
    return (int)(thorp_sol_b64_len(len) - 1);
}

int thorp_sol_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, cap, in, len, NULL, &n, &end, sodium_base64_VARIANT_ORIGINAL) != 0) return -1;
    if (end != in + len) return -1;
    return (int)n;
}

/* compact-u16 ------------------------------------------------------------- */

int thorp_sol_cu16_encode(unsigned v, uint8_t *out)
{
    int n = 0;
    for (;;) {
        uint8_t b = v & 0x7f;
        v >>= 7;
        if (v == 0) {
            out[n++] = b;
            return n;
        }
        out[n++] = b | 0x80;
    }
}

int thorp_sol_cu16_decode(const uint8_t *in, size_t len, unsigned *v)
{
    unsigned val = 0;
    for (size_t i = 0; i < 3; i++) {
        if (i >= len) return -1;
        uint8_t b = in[i];
        if (i > 0 && b == 0) return -1; /* a zero continuation: non-minimal alias */
        if (i == 2 && b > 3) return -1; /* beyond 0xffff (and never a 4th byte) */
        val |= (unsigned)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = val;
            return (int)i + 1;
        }
        if (i == 2) return -1;
    }
    return -1;
}

/* keypairs ---------------------------------------------------------------- */

static sol_keypair *kp_alloc(char *err, size_t errlen)
{
    sol_keypair *kp = sodium_malloc(sizeof *kp);
    if (!kp) seterr(err, errlen, "keypair: cannot allocate locked memory (sodium_malloc)");
    return kp;
}

sol_keypair *thorp_sol_keypair_generate(char *err, size_t errlen)
{
    sol_keypair *kp = kp_alloc(err, errlen);
    if (!kp) return NULL;
    uint8_t pk[32];
    crypto_sign_keypair(pk, kp->sk);
    return kp;
}

sol_keypair *thorp_sol_keypair_from_seed(const uint8_t *seed32, char *err, size_t errlen)
{
    sol_keypair *kp = kp_alloc(err, errlen);
    if (!kp) return NULL;
    uint8_t pk[32];
    crypto_sign_seed_keypair(pk, kp->sk, seed32);
    return kp;
}

sol_keypair *thorp_sol_keypair_from_bytes(const uint8_t *b, size_t len, char *err, size_t errlen)
{
    if (len != 64) {
        seterr(err, errlen, "keypair: %zu bytes; a keypair is 64 bytes (32-byte secret seed, then the 32-byte public key)", len);
        return NULL;
    }
    sol_keypair *kp = thorp_sol_keypair_from_seed(b, err, errlen);
    if (kp && sodium_memcmp(kp->sk + 32, b + 32, 32) != 0) {
        thorp_sol_keypair_free(kp);
        seterr(err, errlen, "keypair: the public key (bytes 33-64) does not belong to the secret seed (bytes 1-32)");
        return NULL;
    }
    return kp;
}

sol_keypair *thorp_sol_keypair_from_base58(const char *s, size_t len, char *err, size_t errlen)
{
    uint8_t *buf = sodium_malloc(128);
    if (!buf) {
        seterr(err, errlen, "keypair: cannot allocate locked memory (sodium_malloc)");
        return NULL;
    }
    size_t bad = 0;
    int n = len > 120 ? -2 : thorp_sol_b58_decode(s, len, buf, 128, &bad);
    sol_keypair *kp = NULL;
    if (n == -1)
        seterr(err, errlen, "keypair: not base58 (character %zu is outside the base58 alphabet)", bad + 1);
    else if (n < 0)
        seterr(err, errlen, "keypair: base58 text of %zu characters is too long; a keypair is 64 bytes (about 88 characters)", len);
    else if (n != 64)
        seterr(err, errlen, "keypair: base58 decodes to %d bytes; a keypair is 64 bytes (secret seed then public key)", n);
    else
        kp = thorp_sol_keypair_from_bytes(buf, 64, err, errlen);
    sodium_free(buf);
    return kp;
}

/* A Solana CLI keypair file: a JSON array of 64 integers 0-255. */
sol_keypair *thorp_sol_keypair_from_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        seterr(err, errlen, "keypair file %s: cannot open (%s)", path, strerror(errno));
        return NULL;
    }
    enum { CAP = 8192 };
    char *text = sodium_malloc(CAP);
    uint8_t *bytes = sodium_malloc(64);
    sol_keypair *kp = NULL;
    if (!text || !bytes) {
        seterr(err, errlen, "keypair: cannot allocate locked memory (sodium_malloc)");
        goto out;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, text + len, CAP - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            seterr(err, errlen, "keypair file %s: cannot read (%s)", path, strerror(errno));
            goto out;
        }
        if (r == 0) break;
        len += (size_t)r;
        if (len == CAP) {
            seterr(err, errlen, "keypair file %s: over %d bytes; expected a JSON array of 64 numbers (0-255)", path, CAP);
            goto out;
        }
    }
    const char *what = "expected a JSON array of 64 numbers (0-255), as solana-keygen writes";
    size_t i = 0, n = 0;
#define SKIPWS() while (i < len && (text[i] == ' ' || text[i] == '\n' || text[i] == '\r' || text[i] == '\t')) i++
    SKIPWS();
    if (i >= len || text[i] != '[') {
        seterr(err, errlen, "keypair file %s: does not start with '['; %s", path, what);
        goto out;
    }
    i++;
    SKIPWS();
    if (i < len && text[i] == ']') {
        seterr(err, errlen, "keypair file %s: empty array; %s", path, what);
        goto out;
    }
    for (;;) {
        SKIPWS();
        unsigned v = 0;
        size_t start = i;
        while (i < len && text[i] >= '0' && text[i] <= '9' && i - start < 4) v = v * 10 + (unsigned)(text[i++] - '0');
        if (i == start || v > 255 || (i < len && text[i] >= '0' && text[i] <= '9')) {
            seterr(err, errlen, "keypair file %s: element %zu is not an integer 0-255; %s", path, n + 1, what);
            goto out;
        }
        if (n == 64) {
            seterr(err, errlen, "keypair file %s: more than 64 numbers; %s", path, what);
            goto out;
        }
        bytes[n++] = (uint8_t)v;
        SKIPWS();
        if (i < len && text[i] == ',') {
            i++;
            continue;
        }
        if (i < len && text[i] == ']') {
            i++;
            break;
        }
        seterr(err, errlen, "keypair file %s: expected ',' or ']' after element %zu; %s", path, n, what);
        goto out;
    }
    SKIPWS();
#undef SKIPWS
    if (i != len) {
        seterr(err, errlen, "keypair file %s: text after the closing ']'; %s", path, what);
        goto out;
    }
    if (n != 64) {
        seterr(err, errlen, "keypair file %s: %zu numbers; %s", path, n, what);
        goto out;
    }
    kp = thorp_sol_keypair_from_bytes(bytes, 64, err, errlen);
    if (!kp) {
        char inner[160];
        snprintf(inner, sizeof inner, "%s", err ? err : "");
        seterr(err, errlen, "keypair file %s: %s", path, inner);
    }
out:
    close(fd);
    if (text) sodium_free(text);
    if (bytes) sodium_free(bytes);
    return kp;
}

void thorp_sol_keypair_free(sol_keypair *kp)
{
    if (kp) sodium_free(kp); /* zeroes the memory before unmapping it */
}

void thorp_sol_keypair_pubkey(const sol_keypair *kp, uint8_t *out32)
{
    memcpy(out32, kp->sk + 32, 32);
}

void thorp_sol_sign(const sol_keypair *kp, const uint8_t *msg, size_t len, uint8_t *sig64)
{
    crypto_sign_detached(sig64, NULL, msg, len, kp->sk);
}

int thorp_sol_verify(const uint8_t *pk32, const uint8_t *msg, size_t len, const uint8_t *sig64)
{
    return crypto_sign_verify_detached(sig64, msg, len, pk32) == 0;
}

/* On-curve test: field arithmetic mod p = 2^255 - 19, radix 2^51 --------- */

typedef uint64_t fe[5];
typedef unsigned __int128 u128;
#define M51 ((uint64_t)0x7ffffffffffff)

static void fe_frombytes(fe h, const uint8_t s[32])
{
    uint64_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = 0;
        for (int k = 7; k >= 0; k--) w[i] = (w[i] << 8) | s[8 * i + k];
    }
    h[0] = w[0] & M51;
    h[1] = ((w[0] >> 51) | (w[1] << 13)) & M51;
    h[2] = ((w[1] >> 38) | (w[2] << 26)) & M51;
    h[3] = ((w[2] >> 25) | (w[3] << 39)) & M51;
    h[4] = (w[3] >> 12) & M51; /* the top bit (x's sign) dropped */
}

static void fe_carry(fe h)
{
    for (int r = 0; r < 2; r++) {
        uint64_t c;
        c = h[0] >> 51; h[0] &= M51; h[1] += c;
        c = h[1] >> 51; h[1] &= M51; h[2] += c;
        c = h[2] >> 51; h[2] &= M51; h[3] += c;
        c = h[3] >> 51; h[3] &= M51; h[4] += c;
        c = h[4] >> 51; h[4] &= M51; h[0] += 19 * c;
    }
}

static void fe_mul(fe h, const fe f, const fe g)
{
    u128 t[5];
    uint64_t g19[5];
    for (int i = 1; i < 5; i++) g19[i] = 19 * g[i];
    t[0] = (u128)f[0] * g[0] + (u128)f[1] * g19[4] + (u128)f[2] * g19[3] + (u128)f[3] * g19[2] + (u128)f[4] * g19[1];
    t[1] = (u128)f[0] * g[1] + (u128)f[1] * g[0] + (u128)f[2] * g19[4] + (u128)f[3] * g19[3] + (u128)f[4] * g19[2];
    t[2] = (u128)f[0] * g[2] + (u128)f[1] * g[1] + (u128)f[2] * g[0] + (u128)f[3] * g19[4] + (u128)f[4] * g19[3];
    t[3] = (u128)f[0] * g[3] + (u128)f[1] * g[2] + (u128)f[2] * g[1] + (u128)f[3] * g[0] + (u128)f[4] * g19[4];
    t[4] = (u128)f[0] * g[4] + (u128)f[1] * g[3] + (u128)f[2] * g[2] + (u128)f[3] * g[1] + (u128)f[4] * g[0];
    for (int i = 0; i < 4; i++) {
        t[i + 1] += t[i] >> 51;
        h[i] = (uint64_t)t[i] & M51;
    }
    h[4] = (uint64_t)t[4] & M51;
    h[0] += 19 * (uint64_t)(t[4] >> 51);
    fe_carry(h);
}

static void fe_sub(fe h, const fe f, const fe g) /* f - g + 4p, limbs stay positive */
{
    static const uint64_t p4[5] = { 0x1fffffffffffb4, 0x1ffffffffffffc, 0x1ffffffffffffc, 0x1ffffffffffffc, 0x1ffffffffffffc };
    for (int i = 0; i < 5; i++) h[i] = f[i] + p4[i] - g[i];
    fe_carry(h);
}

static void fe_add(fe h, const fe f, const fe g)
{
    for (int i = 0; i < 5; i++) h[i] = f[i] + g[i];
    fe_carry(h);
}

/* canonical little-endian value, for comparisons */
static void fe_tobytes(uint8_t s[32], const fe f)
{
    fe h;
    memcpy(h, f, sizeof h);
    fe_carry(h);
    /* subtract p when h >= p */
    uint64_t q = (h[0] + 19) >> 51;
    q = (h[1] + q) >> 51;
    q = (h[2] + q) >> 51;
    q = (h[3] + q) >> 51;
    q = (h[4] + q) >> 51;
    h[0] += 19 * q;
    uint64_t c;
    c = h[0] >> 51; h[0] &= M51; h[1] += c;
    c = h[1] >> 51; h[1] &= M51; h[2] += c;
    c = h[2] >> 51; h[2] &= M51; h[3] += c;
    c = h[3] >> 51; h[3] &= M51; h[4] += c;
    h[4] &= M51;
    uint64_t w[4] = { h[0] | (h[1] << 51), (h[1] >> 13) | (h[2] << 38), (h[2] >> 26) | (h[3] << 25),
                      (h[3] >> 39) | (h[4] << 12) };
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++) s[8 * i + k] = (uint8_t)(w[i] >> (8 * k));
}

/* x^e, e little-endian bytes (square and multiply from the top bit) */
static void fe_pow(fe out, const fe x, const uint8_t e[32])
{
    fe r = { 1, 0, 0, 0, 0 };
    for (int bit = 255; bit >= 0; bit--) {
        fe_mul(r, r, r);
        if ((e[bit / 8] >> (bit % 8)) & 1) fe_mul(r, r, x);
    }
    memcpy(out, r, sizeof r);
}

static fe ED_D;
static int ed_d_ready;

static void ed_d_init(void)
{
    /* d = -121665 / 121666 */
    uint8_t pm2[32];
    memset(pm2, 0xff, 32);
    pm2[0] = 0xeb;
    pm2[31] = 0x7f;
    fe a = { 121665, 0, 0, 0, 0 }, b = { 121666, 0, 0, 0, 0 }, zero = { 0 }, inv, na;
    fe_pow(inv, b, pm2);
    fe_sub(na, zero, a);
    fe_mul(ED_D, na, inv);
    ed_d_ready = 1;
}

int thorp_sol_on_curve(const uint8_t *p32)
{
    if (!ed_d_ready) ed_d_init();
    /* x^2 = (y^2 - 1) / (d y^2 + 1) must have a root: u*v a square or zero */
    fe y, y2, u, v, uv, r, one = { 1, 0, 0, 0, 0 };
    fe_frombytes(y, p32);
    fe_mul(y2, y, y);
    fe_sub(u, y2, one);
    fe_mul(v, ED_D, y2);
    fe_add(v, v, one);
    fe_mul(uv, u, v);
    uint8_t half[32]; /* (p - 1) / 2 = 2^254 - 10 */
    memset(half, 0xff, 32);
    half[0] = 0xf6;
    half[31] = 0x3f;
    fe_pow(r, uv, half);
    uint8_t s[32];
    fe_tobytes(s, r);
    int zero = 1, isone = s[0] == 1;
    for (int i = 0; i < 32; i++) zero &= s[i] == 0;
    for (int i = 1; i < 32; i++) isone &= s[i] == 0;
    return zero || isone;
}

void thorp_sol_sha256(const uint8_t *in, size_t len, uint8_t *out32)
{
    crypto_hash_sha256(out32, in, len);
}

static int pda_check(int nseeds, const size_t *lens, char *err, size_t errlen)
{
    if (nseeds > 16) {
        seterr(err, errlen, "program address: %d seeds; at most 16 allowed (15 with the bump)", nseeds);
        return -1;
    }
    for (int i = 0; i < nseeds; i++)
        if (lens[i] > 32) {
            seterr(err, errlen, "program address: seed %d is %zu bytes; at most 32 allowed", i + 1, lens[i]);
            return -1;
        }
    return 0;
}

static int pda_hash(const uint8_t *seeds, const size_t *lens, int nseeds, const uint8_t *bump,
                    const uint8_t *program32, uint8_t *out32)
{
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    size_t off = 0;
    for (int i = 0; i < nseeds; i++) {
        crypto_hash_sha256_update(&st, seeds + off, lens[i]);
        off += lens[i];
    }
    if (bump) crypto_hash_sha256_update(&st, bump, 1);
    crypto_hash_sha256_update(&st, program32, 32);
    crypto_hash_sha256_update(&st, (const uint8_t *)"ProgramDerivedAddress", 21);
    crypto_hash_sha256_final(&st, out32);
    return thorp_sol_on_curve(out32);
}

int thorp_sol_create_pda(const uint8_t *seeds, const size_t *lens, int nseeds, const uint8_t *program32,
                         uint8_t *out32, char *err, size_t errlen)
{
    if (pda_check(nseeds, lens, err, errlen) != 0) return -1;
    if (pda_hash(seeds, lens, nseeds, NULL, program32, out32)) {
        seterr(err, errlen, "program address: the seeds give a point on the curve (not a valid program address)");
        return 1;
    }
    return 0;
}

int thorp_sol_find_pda(const uint8_t *seeds, const size_t *lens, int nseeds, const uint8_t *program32,
                       uint8_t *out32, char *err, size_t errlen)
{
    if (pda_check(nseeds + 1, lens, err, errlen) != 0) return -1;
    for (int b = 255; b >= 0; b--) {
        uint8_t bump = (uint8_t)b;
        if (!pda_hash(seeds, lens, nseeds, &bump, program32, out32)) return b;
    }
    seterr(err, errlen, "program address: no bump 0-255 gives an address off the curve");
    return -1;
}

/* codec ------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len, off;
    char *err;
    size_t errlen;
} rd;

static int rd_cu16(rd *r, unsigned *v, const char *what)
{
    int n = thorp_sol_cu16_decode(r->p + r->off, r->len - r->off, v);
    if (n < 0) {
        seterr(r->err, r->errlen, "%s: bad compact-u16 length at byte %zu (truncated, non-minimal or over 3 bytes)",
               what, r->off);
        return -1;
    }
    r->off += (size_t)n;
    return 0;
}

static const uint8_t *rd_take(rd *r, size_t n, const char *what)
{
    if (r->len - r->off < n) {
        seterr(r->err, r->errlen, "%s: truncated at byte %zu (needs %zu more bytes, %zu left)", what, r->off, n,
               r->len - r->off);
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

int thorp_sol_msg_decode(const uint8_t *b, size_t len, sol_msg *m, size_t *used, char *err, size_t errlen)
{
    rd r = { b, len, 0, err, errlen };
    const uint8_t *p;
    unsigned n;
    m->bytes = b;
    m->version = SOL_VERSION_LEGACY;
    if (len > 0 && (b[0] & 0x80)) {
        if ((b[0] & 0x7f) != 0) {
            seterr(err, errlen, "message: version %d; only legacy and version 0 are known", b[0] & 0x7f);
            return -1;
        }
        m->version = 0;
        r.off = 1;
    }
    if (!(p = rd_take(&r, 3, "message header"))) return -1;
    m->num_required_signatures = p[0];
    m->num_readonly_signed = p[1];
    m->num_readonly_unsigned = p[2];
    if (rd_cu16(&r, &n, "account keys")) return -1;
    if (n > SOL_MAX_KEYS) {
        seterr(err, errlen, "message: %u account keys; at most %d allowed", n, SOL_MAX_KEYS);
        return -1;
    }
    m->nkeys = (uint16_t)n;
    if (!(m->keys = rd_take(&r, 32 * (size_t)n, "account keys"))) return -1;
    if (!(m->blockhash = rd_take(&r, 32, "recent blockhash"))) return -1;
    if (rd_cu16(&r, &n, "instructions")) return -1;
    if (n > SOL_MAX_IX) {
        seterr(err, errlen, "message: %u instructions; at most %d allowed", n, SOL_MAX_IX);
        return -1;
    }
    m->nix = (uint16_t)n;
    for (unsigned i = 0; i < m->nix; i++) {
        sol_ix *ix = &m->ix[i];
        if (!(p = rd_take(&r, 1, "instruction program index"))) return -1;
        ix->program = p[0];
        if (rd_cu16(&r, &n, "instruction accounts")) return -1;
        ix->naccounts = (uint16_t)n;
        if (!(ix->accounts = rd_take(&r, n, "instruction accounts"))) return -1;
        if (rd_cu16(&r, &n, "instruction data")) return -1;
        ix->data_len = (uint16_t)n;
        if (!(ix->data = rd_take(&r, n, "instruction data"))) return -1;
    }
    m->nlookups = 0;
    if (m->version == 0) {
        if (rd_cu16(&r, &n, "address table lookups")) return -1;
        if (n > SOL_MAX_LOOKUPS) {
            seterr(err, errlen, "message: %u address table lookups; at most %d allowed", n, SOL_MAX_LOOKUPS);
            return -1;
        }
        m->nlookups = (uint16_t)n;
        for (unsigned i = 0; i < m->nlookups; i++) {
            sol_lookup *lk = &m->lookups[i];
            if (!(lk->key = rd_take(&r, 32, "lookup table address"))) return -1;
            if (rd_cu16(&r, &n, "lookup writable indexes")) return -1;
            lk->nwritable = (uint16_t)n;
            if (!(lk->writable = rd_take(&r, n, "lookup writable indexes"))) return -1;
            if (rd_cu16(&r, &n, "lookup readonly indexes")) return -1;
            lk->nreadonly = (uint16_t)n;
            if (!(lk->readonly = rd_take(&r, n, "lookup readonly indexes"))) return -1;
        }
    }
    m->len = r.off;
    if (used) *used = r.off;
    return 0;
}

int thorp_sol_tx_decode(const uint8_t *b, size_t len, sol_tx *tx, char *err, size_t errlen)
{
    if (len > SOL_PACKET_MAX) {
        seterr(err, errlen, "transaction: %zu bytes; at most %d allowed", len, SOL_PACKET_MAX);
        return -1;
    }
    rd r = { b, len, 0, err, errlen };
    unsigned n;
    if (rd_cu16(&r, &n, "signatures")) return -1;
    tx->nsigs = (uint16_t)n;
    if (!(tx->sigs = rd_take(&r, 64 * (size_t)n, "signatures"))) return -1;
    size_t used = 0;
    sol_msg *m = &tx->msg;
    if (thorp_sol_msg_decode(b + r.off, len - r.off, m, &used, err, errlen) != 0) return -1;
    if (r.off + used != len) {
        seterr(err, errlen, "transaction: %zu bytes after the message", len - r.off - used);
        return -1;
    }
    if (m->num_required_signatures != tx->nsigs) {
        seterr(err, errlen, "transaction: %u signatures for a message that requires %u", tx->nsigs,
               m->num_required_signatures);
        return -1;
    }
    if (m->num_required_signatures == 0) {
        seterr(err, errlen, "transaction: no signer (a message needs at least its fee payer)");
        return -1;
    }
    if ((unsigned)m->num_required_signatures + m->num_readonly_unsigned > m->nkeys ||
        m->num_readonly_signed >= m->num_required_signatures) {
        seterr(err, errlen, "transaction: header (%u signers, %u read-only signers, %u read-only others) does not fit %u keys",
               m->num_required_signatures, m->num_readonly_signed, m->num_readonly_unsigned, m->nkeys);
        return -1;
    }
    unsigned total = m->nkeys;
    for (unsigned i = 0; i < m->nlookups; i++) {
        if (m->lookups[i].nwritable + m->lookups[i].nreadonly == 0) {
            seterr(err, errlen, "transaction: address table lookup %u loads no account", i + 1);
            return -1;
        }
        total += m->lookups[i].nwritable + m->lookups[i].nreadonly;
    }
    if (total > SOL_MAX_KEYS) {
        seterr(err, errlen, "transaction: %u accounts; at most %d allowed", total, SOL_MAX_KEYS);
        return -1;
    }
    for (unsigned i = 0; i < m->nix; i++) {
        const sol_ix *ix = &m->ix[i];
        if (ix->program == 0 || ix->program >= m->nkeys) {
            seterr(err, errlen, "transaction: instruction %u's program index %u is not a static non-payer key (1-%u)",
                   i + 1, ix->program, m->nkeys - 1);
            return -1;
        }
        for (unsigned k = 0; k < ix->naccounts; k++)
            if (ix->accounts[k] >= total) {
                seterr(err, errlen, "transaction: instruction %u's account %u has index %u; %u accounts exist", i + 1,
                       k + 1, ix->accounts[k], total);
                return -1;
            }
    }
    return 0;
}

int thorp_sol_tx_verify(const sol_tx *tx)
{
    for (unsigned i = 0; i < tx->nsigs; i++)
        if (crypto_sign_verify_detached(tx->sigs + 64 * i, tx->msg.bytes, tx->msg.len, tx->msg.keys + 32 * i) != 0)
            return (int)i;
    return -1;
}

/* compiler ------------------------------------------------------------------ */

enum { K_INVOKED = 4, K_GONE = 8, MAX_UNIQUE = 257, MAX_METAS = 8192 };

typedef struct ckey {
    const uint8_t *key;
    unsigned flags;
    int index; /* final account index */
} ckey;

static int ckey_cmp(const void *a, const void *b)
{
    return memcmp(((const ckey *)a)->key, ((const ckey *)b)->key, 32);
}

static int key_find(ckey *k, int n, const uint8_t *key)
{
    for (int i = 0; i < n; i++)
        if (k[i].key[0] == key[0] && memcmp(k[i].key, key, 32) == 0) return i;
    return -1;
}

typedef struct wr {
    uint8_t *p;
    size_t cap, off;
    int over;
} wr;

static void w_bytes(wr *w, const void *b, size_t n)
{
    if (w->off + n > w->cap) {
        w->over = 1;
        return;
    }
    memcpy(w->p + w->off, b, n);
    w->off += n;
}

static void w_cu16(wr *w, unsigned v)
{
    uint8_t b[3];
    w_bytes(w, b, (size_t)thorp_sol_cu16_encode(v, b));
}

static void w_u8(wr *w, unsigned v)
{
    uint8_t b = (uint8_t)v;
    w_bytes(w, &b, 1);
}

int thorp_sol_compile(int version, const char *payer, const char *blockhash, const sol_cix *ix, int nix,
                      const sol_cacct *accts, const sol_ctable *tables, int ntables, uint8_t *out, size_t cap,
                      char *err, size_t errlen)
{
    ckey keys[MAX_UNIQUE];
    int n = 0, total = 0;
    size_t nmetas = 0;
    for (int i = 0; i < nix; i++) nmetas += ix[i].naccounts;
    if (nmetas > MAX_METAS) {
        seterr(err, errlen, "transaction: %zu account references; at most %d allowed", nmetas, MAX_METAS);
        return -1;
    }
    if (nix > SOL_MAX_IX) {
        seterr(err, errlen, "transaction: %d instructions; at most %d allowed", nix, SOL_MAX_IX);
        return -1;
    }
#define NOTE(k, f)                                                                                                  \
    do {                                                                                                            \
        const uint8_t *k_ = (const uint8_t *)(k);                                                                   \
        int at_ = key_find(keys, n, k_);                                                                            \
        if (at_ < 0) {                                                                                              \
            if (n == MAX_UNIQUE) goto too_many;                                                                     \
            keys[n].key = k_;                                                                                       \
            keys[n].flags = 0;                                                                                      \
            at_ = n++;                                                                                              \
        }                                                                                                           \
        keys[at_].flags |= (f);                                                                                     \
    } while (0)
    for (int i = 0; i < nix; i++) {
        NOTE(ix[i].program, K_INVOKED);
        for (uint32_t j = 0; j < ix[i].naccounts; j++) {
            const sol_cacct *a = &accts[ix[i].first + j];
            NOTE(a->key, a->flags & (SOL_ACC_SIGNER | SOL_ACC_WRITABLE));
        }
    }
    NOTE(payer, SOL_ACC_SIGNER | SOL_ACC_WRITABLE);
#undef NOTE
    /* BTreeMap order */
    if (n <= 16) {
        for (int i = 1; i < n; i++) {
            ckey k = keys[i];
            int j = i - 1;
            while (j >= 0 && memcmp(keys[j].key, k.key, 32) > 0) {
                keys[j + 1] = keys[j];
                j--;
            }
            keys[j + 1] = k;
        }
    } else
        qsort(keys, (size_t)n, sizeof keys[0], ckey_cmp);
    int payer_at = key_find(keys, n, (const uint8_t *)payer);

    /* v0: lookups */
    struct { uint8_t w[256], r[256]; int nw, nr, table; } lk[SOL_MAX_LOOKUPS];
    int nlk = 0;
    int loaded_w[256], loaded_r[256], nlw = 0, nlr = 0;
    if (version == 0 && ntables > SOL_MAX_LOOKUPS) {
        seterr(err, errlen, "transaction: %d lookup tables; at most %d allowed", ntables, SOL_MAX_LOOKUPS);
        return -1;
    }
    for (int t = 0; version == 0 && t < ntables; t++) {
        int nw = 0, nr = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int i = 0; i < n; i++) {
                unsigned f = keys[i].flags;
                if (i == payer_at || (f & (SOL_ACC_SIGNER | K_INVOKED | K_GONE))) continue;
                if (!!(f & SOL_ACC_WRITABLE) != (pass == 0)) continue;
                const uint8_t *addr = (const uint8_t *)tables[t].addresses;
                for (uint32_t a = 0; a < tables[t].naddresses; a++)
                    if (memcmp(addr + 32 * a, keys[i].key, 32) == 0) {
                        if (a > 255) {
                            seterr(err, errlen, "transaction: lookup_tables[%d] holds an account at index %u; at most 255 can be looked up",
                                   t + 1, a);
                            return -1;
                        }
                        if (nw + nr >= 256) break;
                        if (pass == 0) lk[nlk].w[nw++] = (uint8_t)a;
                        else lk[nlk].r[nr++] = (uint8_t)a;
                        keys[i].flags |= K_GONE;
                        if (pass == 0) loaded_w[nlw++] = i;
                        else loaded_r[nlr++] = i;
                        break;
                    }
            }
        }
        if (nw + nr > 0) {
            lk[nlk].nw = nw;
            lk[nlk].nr = nr;
            lk[nlk].table = t;
            nlk++;
        }
    }
    /* static order */
    int order[MAX_UNIQUE], ns = 0, nsig = 0, nro_signed = 0, nro_unsigned = 0;
    order[ns++] = payer_at;
    for (int g = 0; g < 4; g++)
        for (int i = 0; i < n; i++) {
            unsigned f = keys[i].flags;
            if (i == payer_at || (f & K_GONE)) continue;
            int s = !!(f & SOL_ACC_SIGNER), wr_ = !!(f & SOL_ACC_WRITABLE);
            int grp = s ? (wr_ ? 0 : 1) : (wr_ ? 2 : 3);
            if (grp != g) continue;
            order[ns++] = i;
            if (g == 1) nro_signed++;
            if (g == 3) nro_unsigned++;
        }
    for (int i = 0; i < ns; i++) {
        keys[order[i]].index = i;
        if (keys[order[i]].flags & SOL_ACC_SIGNER) nsig++;
    }
    total = ns + nlw + nlr;
    if (total > SOL_MAX_KEYS) {
    too_many:
        if (total)
            seterr(err, errlen, "transaction: %d accounts; at most %d allowed (use lookup tables or split the transaction)",
                   total, SOL_MAX_KEYS);
        else
            seterr(err, errlen, "transaction: more than %d accounts; at most %d allowed (split the transaction)",
                   SOL_MAX_KEYS, SOL_MAX_KEYS);
        return -1;
    }
    for (int i = 0; i < nlw; i++) keys[loaded_w[i]].index = ns + i;
    for (int i = 0; i < nlr; i++) keys[loaded_r[i]].index = ns + nlw + i;

    wr w = { out, cap, 0, 0 };
    if (version == 0) w_u8(&w, 0x80);
    w_u8(&w, (unsigned)nsig);
    w_u8(&w, (unsigned)nro_signed);
    w_u8(&w, (unsigned)nro_unsigned);
    w_cu16(&w, (unsigned)ns);
    for (int i = 0; i < ns; i++) w_bytes(&w, keys[order[i]].key, 32);
    w_bytes(&w, blockhash, 32);
    w_cu16(&w, (unsigned)nix);
    for (int i = 0; i < nix; i++) {
        w_u8(&w, (unsigned)keys[key_find(keys, n, (const uint8_t *)ix[i].program)].index);
        w_cu16(&w, ix[i].naccounts);
        for (uint32_t j = 0; j < ix[i].naccounts; j++)
            w_u8(&w, (unsigned)keys[key_find(keys, n, (const uint8_t *)accts[ix[i].first + j].key)].index);
        if (ix[i].data_len > 0xffff) {
            seterr(err, errlen, "transaction: instructions[%d].data is %u bytes; at most 65535", i + 1, ix[i].data_len);
            return -1;
        }
        w_cu16(&w, ix[i].data_len);
        w_bytes(&w, ix[i].data, ix[i].data_len);
    }
    if (version == 0) {
        w_cu16(&w, (unsigned)nlk);
        for (int i = 0; i < nlk; i++) {
            w_bytes(&w, tables[lk[i].table].key, 32);
            w_cu16(&w, (unsigned)lk[i].nw);
            w_bytes(&w, lk[i].w, (size_t)lk[i].nw);
            w_cu16(&w, (unsigned)lk[i].nr);
            w_bytes(&w, lk[i].r, (size_t)lk[i].nr);
        }
    }
    if (w.over) {
        seterr(err, errlen, "transaction: the message is over %zu bytes", cap);
        return -1;
    }
    return (int)w.off;
}

int thorp_sol_msg_signer_index(const uint8_t *msg, size_t len, const uint8_t *pk32)
{
    size_t off = len > 0 && (msg[0] & 0x80) ? 1 : 0;
    if (len < off + 4) return -1;
    unsigned nsig = msg[off], nkeys;
    int n = thorp_sol_cu16_decode(msg + off + 3, len - off - 3, &nkeys);
    if (n < 0) return -1;
    const uint8_t *keys = msg + off + 3 + n;
    for (unsigned i = 0; i < nsig && i < nkeys; i++) {
        if ((size_t)(keys + 32 * (i + 1) - msg) > len) return -1;
        if (memcmp(keys + 32 * i, pk32, 32) == 0) return (int)i;
    }
    return -1;
}
