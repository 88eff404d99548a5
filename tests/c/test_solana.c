/* C unit test of host/solana.c as the simulator uses it, without Lua:
 * compile a message, sign it, put the wire transaction together, decode it,
 * verify its signatures, and refuse a tampered or malformed one. */
#include <stdio.h>
#include <string.h>
#include "solana.h"

static int passed, failed;
#define CHECK(cond, name) do { if (cond) { passed++; printf("ok   - %s\n", name); } \
    else { failed++; printf("FAIL - %s (%s:%d)\n", name, __FILE__, __LINE__); } } while (0)

int main(void)
{
    char err[160];
    CHECK(thorp_sol_init() == 0, "sodium_init");
    uint8_t seed[32], payer[32], to[32], bh[32], sysprog[32] = { 0 };
    memset(seed, 1, 32);
    memset(to, 2, 32);
    memset(bh, 3, 32);
    sol_keypair *kp = thorp_sol_keypair_from_seed(seed, err, sizeof err);
    CHECK(kp != NULL, "a keypair from a seed");
    thorp_sol_keypair_pubkey(kp, payer);

    /* system transfer payer -> to, 1000 lamports */
    uint8_t data[12] = { 2, 0, 0, 0, 0xe8, 0x03, 0, 0, 0, 0, 0, 0 };
    sol_cacct accts[2] = { { (const char *)payer, SOL_ACC_SIGNER | SOL_ACC_WRITABLE },
                           { (const char *)to, SOL_ACC_WRITABLE } };
    sol_cix ix = { (const char *)sysprog, (const char *)data, sizeof data, 0, 2 };
    uint8_t wire[SOL_PACKET_MAX];
    int mlen = thorp_sol_compile(0, (const char *)payer, (const char *)bh, &ix, 1, accts, NULL, 0, wire + 65,
                                 sizeof wire - 65, err, sizeof err);
    CHECK(mlen > 0, "thorp_sol_compile writes a v0 message");
    CHECK(wire[65] == 0x80 && wire[66] == 1 && wire[67] == 0 && wire[68] == 1, "v0 prefix and header 1/0/1");
    CHECK(memcmp(wire + 70, payer, 32) == 0 && memcmp(wire + 102, to, 32) == 0 && memcmp(wire + 134, sysprog, 32) == 0,
          "keys: payer, writable, then the read-only program");
    CHECK(thorp_sol_msg_signer_index(wire + 65, (size_t)mlen, payer) == 0 &&
          thorp_sol_msg_signer_index(wire + 65, (size_t)mlen, to) == -1, "signer index of the payer only");
    wire[0] = 1;
    thorp_sol_sign(kp, wire + 65, (size_t)mlen, wire + 1);
    size_t len = 65 + (size_t)mlen;

    static sol_tx tx;
    CHECK(thorp_sol_tx_decode(wire, len, &tx, err, sizeof err) == 0, "the wire transaction decodes");
    CHECK(tx.nsigs == 1 && tx.msg.version == 0 && tx.msg.nkeys == 3 && tx.msg.nix == 1, "its counts");
    CHECK(tx.msg.ix[0].program == 2 && tx.msg.ix[0].naccounts == 2 && tx.msg.ix[0].data_len == 12 &&
          memcmp(tx.msg.ix[0].data, data, 12) == 0, "its instruction");
    CHECK(memcmp(tx.msg.blockhash, bh, 32) == 0 && memcmp(tx.msg.keys, payer, 32) == 0, "fee payer and blockhash");
    CHECK(thorp_sol_tx_verify(&tx) == -1, "its signature verifies");
    wire[len - 2] ^= 1; /* the last data byte (the lookup count follows) */
    CHECK(thorp_sol_tx_decode(wire, len, &tx, err, sizeof err) == 0 && thorp_sol_tx_verify(&tx) == 0,
          "a changed data byte fails signature 0");
    wire[len - 2] ^= 1;
    CHECK(thorp_sol_tx_decode(wire, len - 1, &tx, err, sizeof err) == -1 && strstr(err, "truncated"),
          "a truncated transaction is refused with the reason");
    wire[65] = 0x81;
    CHECK(thorp_sol_tx_decode(wire, len, &tx, err, sizeof err) == -1 && strstr(err, "version 1"),
          "an unknown version is refused");
    uint8_t aliased[2] = { 0x80, 0x00 };
    unsigned v;
    CHECK(thorp_sol_cu16_decode(aliased, 2, &v) == -1, "a non-minimal compact-u16 is refused");

    char s[SOL_B58_MAX];
    uint8_t back[64];
    size_t bad;
    int n = thorp_sol_b58_encode(payer, 32, s, sizeof s);
    CHECK(n > 0 && thorp_sol_b58_decode(s, (size_t)n, back, sizeof back, &bad) == 32 && memcmp(back, payer, 32) == 0,
          "base58 round trip of a key");
    CHECK(thorp_sol_b58_decode("0OIl", 4, back, sizeof back, &bad) == -1 && bad == 0, "base58 refuses 0 O I l");
    thorp_sol_keypair_free(kp);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
