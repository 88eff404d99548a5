/* solana: the Solana wire format and keys, in plain C on libsodium.
 *
 * Why it is C: base58, ed25519 and the transaction codec sit on the path of
 * every trade, and the simulator (tests/sim) links this file to check the
 * transactions it is sent, so it depends on nothing but libc and libsodium
 * (no Lua, no libevent). The Lua face is lib/thorp/solana.lua, which
 * compiles messages (account ordering) and calls these through the FFI.
 *
 *   thorp_sol_init();                                   once (sodium_init)
 *   char s[SOL_B58_MAX]; thorp_sol_b58_encode(key, 32, s, sizeof s);
 *   sol_tx tx; char err[128];
 *   if (thorp_sol_tx_decode(buf, len, &tx, err, sizeof err) != 0) refuse(err);
 *   int bad = thorp_sol_tx_verify(&tx);                 -1: every signature good
 *   first fee payer: tx.msg.keys (32 bytes each), blockhash: tx.msg.blockhash
 *
 * Decoded structs point into the caller's buffer: keep it alive while you
 * read them. Secrets live in sodium_malloc'd memory (guarded, mlocked when
 * the limit allows) and are wiped by thorp_sol_keypair_free; no function
 * copies a secret out or prints it, and errors never quote key material.
 */
#ifndef THORP_SOLANA_H
#define THORP_SOLANA_H

#include <stddef.h>
#include <stdint.h>

/* ffi:begin */
enum {
    SOL_PUBKEY_LEN = 32, SOL_SIG_LEN = 64, SOL_PACKET_MAX = 1232,
    SOL_MAX_KEYS = 256,     /* accounts a message may reference (u8 indexes) */
    SOL_MAX_IX = 512,       /* instructions a decoded message may hold */
    SOL_MAX_LOOKUPS = 64,   /* address table lookups a decoded message may hold */
    SOL_B58_MAX = 96,       /* room for the base58 of up to 64 bytes, with NUL */
    SOL_VERSION_LEGACY = -1,
};

typedef struct sol_keypair sol_keypair; /* opaque; in locked memory */

typedef struct sol_ix {
    uint8_t program;            /* index of the program id */
    uint16_t naccounts;
    uint16_t data_len;
    const uint8_t *accounts;    /* naccounts u8 indexes */
    const uint8_t *data;
} sol_ix;

typedef struct sol_lookup {
    const uint8_t *key;         /* the lookup table's address */
    uint16_t nwritable, nreadonly;
    const uint8_t *writable, *readonly; /* u8 indexes into the table */
} sol_lookup;

typedef struct sol_msg {
    int version;                /* SOL_VERSION_LEGACY or 0 */
    uint8_t num_required_signatures, num_readonly_signed, num_readonly_unsigned;
    uint16_t nkeys;
    uint16_t nix;
    uint16_t nlookups;
    const uint8_t *keys;        /* nkeys * 32 bytes */
    const uint8_t *blockhash;   /* 32 bytes */
    const uint8_t *bytes;       /* the message as signed */
    size_t len;
    sol_ix ix[SOL_MAX_IX];
    sol_lookup lookups[SOL_MAX_LOOKUPS];
} sol_msg;

typedef struct sol_tx {
    uint16_t nsigs;
    const uint8_t *sigs;        /* nsigs * 64 bytes */
    sol_msg msg;
} sol_tx;

int thorp_sol_init(void);

/* base58 (Bitcoin alphabet). encode: length written (NUL-terminated), or -1
 * when out is too small or len > 4096. decode: bytes written, -1 bad
 * character (its position in *bad), -2 out too small or input too long. */
int thorp_sol_b58_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int thorp_sol_b58_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *bad);
/* base64 (standard alphabet, padded). decode: bytes, or -1 when malformed. */
size_t thorp_sol_b64_len(size_t len);
int thorp_sol_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int thorp_sol_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* compact-u16 (short_vec length): encode returns bytes written (1-3);
 * decode returns bytes read or -1 (truncated, non-minimal, over 3 bytes or
 * over 65535) with the value in *v. */
int thorp_sol_cu16_encode(unsigned v, uint8_t *out);
int thorp_sol_cu16_decode(const uint8_t *in, size_t len, unsigned *v);

/* Keypairs: NULL on failure with a message in err (never key material). */
sol_keypair *thorp_sol_keypair_generate(char *err, size_t errlen);
sol_keypair *thorp_sol_keypair_from_seed(const uint8_t *seed32, char *err, size_t errlen);
sol_keypair *thorp_sol_keypair_from_bytes(const uint8_t *b, size_t len, char *err, size_t errlen);
sol_keypair *thorp_sol_keypair_from_base58(const char *s, size_t len, char *err, size_t errlen);
sol_keypair *thorp_sol_keypair_from_file(const char *path, char *err, size_t errlen);
void thorp_sol_keypair_free(sol_keypair *kp);
void thorp_sol_keypair_pubkey(const sol_keypair *kp, uint8_t *out32);
void thorp_sol_sign(const sol_keypair *kp, const uint8_t *msg, size_t len, uint8_t *sig64);
int thorp_sol_verify(const uint8_t *pk32, const uint8_t *msg, size_t len, const uint8_t *sig64); /* 1 good */

/* Program addresses. on_curve: 1 when the 32 bytes decompress to a point of
 * edwards25519 (any point, as curve25519-dalek decides; libsodium's
 * is_valid_point also demands the prime-order subgroup, which is not the
 * rule PDAs follow). find_pda: seeds concatenated in `seeds` with their
 * lengths; the bump (0-255) or -1 with err set. */
int thorp_sol_on_curve(const uint8_t *p32);
void thorp_sol_sha256(const uint8_t *in, size_t len, uint8_t *out32);
int thorp_sol_create_pda(const uint8_t *seeds, const size_t *lens, int nseeds, const uint8_t *program32,
                         uint8_t *out32, char *err, size_t errlen); /* 0 ok, 1 on curve, -1 bad seeds */
int thorp_sol_find_pda(const uint8_t *seeds, const size_t *lens, int nseeds, const uint8_t *program32,
                       uint8_t *out32, char *err, size_t errlen);

/* Codec. msg_decode reads one message (legacy or v0) structurally, as
 * @solana/kit's codec does: indexes are not checked against the keys.
 * tx_decode reads a whole wire transaction and also checks what makes one
 * well formed (signature count equals the header's, header counts fit the
 * keys, every index points at a static or looked-up account, nothing
 * trailing, at most SOL_PACKET_MAX bytes). Both return 0, or -1 with err. */
int thorp_sol_msg_decode(const uint8_t *b, size_t len, sol_msg *m, size_t *used, char *err, size_t errlen);
int thorp_sol_tx_decode(const uint8_t *b, size_t len, sol_tx *tx, char *err, size_t errlen);
/* -1 when every signature verifies, else the index of the first bad one. */
int thorp_sol_tx_verify(const sol_tx *tx);

/* The message compiler (solana-sdk's CompiledKeys and v0::Message::try_compile):
 * keys deduplicated, flags merged, the payer first, then writable signers,
 * read-only signers, writable and read-only others, each group in byte
 * order; for v0, non-signer non-program keys found in a table are loaded
 * from it (writable, then read-only, tables in the given order; a table
 * that provides nothing is left out). Each instruction's accounts are
 * accts[first .. first + naccounts). Keys are 32 bytes. Returns the message
 * length, or -1 with err. */
enum { SOL_ACC_SIGNER = 1, SOL_ACC_WRITABLE = 2 };
typedef struct sol_cacct { const char *key; uint32_t flags; } sol_cacct;
typedef struct sol_cix {
    const char *program;
    const char *data;
    uint32_t data_len, first, naccounts;
} sol_cix;
typedef struct sol_ctable { const char *key; const char *addresses; uint32_t naddresses; } sol_ctable;
int thorp_sol_compile(int version, const char *payer, const char *blockhash, const sol_cix *ix, int nix,
                      const sol_cacct *accts, const sol_ctable *tables, int ntables, uint8_t *out, size_t cap,
                      char *err, size_t errlen);
/* index (0-based) of pk among the message's required signers, or -1 */
int thorp_sol_msg_signer_index(const uint8_t *msg, size_t len, const uint8_t *pk32);
/* ffi:end */

#endif
