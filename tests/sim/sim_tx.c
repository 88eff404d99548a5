/* sim_tx.c: the simulator's ledger, so code that signs can be tested.
 *
 * One chain behind all endpoints of a simulator process:
 * - a clock: slot = 250,000,000 + elapsed / slot_ms (400 ms, or
 *   THORP_SIM_SLOT_MS), block height = slot - 20,000,000;
 * - base58 blockhashes, one per block height, valid for 150 blocks
 *   (getLatestBlockhash gives lastValidBlockHeight = height + 150);
 * - signed transactions (legacy and v0 wire format, base64 or base58), decoded
 *   and ed25519-verified by host/solana.c (the host's own codec, linked in),
 *   the blockhash must be recent (and one of this chain's), the
 *   fee payer pays 5,000 lamports a signature plus the priority fee;
 *   programs: system transfer, memo (v1 and v2), compute budget (unit limit,
 *   unit price). An instruction error lands the transaction with its error
 *   (and the fee charged), as on mainnet;
 * - preflight (sendTransaction without skipPreflight) refuses bad signatures,
 *   stale blockhashes, already processed and failing transactions with the
 *   RPC errors Agave gives; with skipPreflight they are accepted and then
 *   silently dropped, as a leader drops them;
 * - statuses: processed in the slot after the send, confirmed 2 slots later,
 *   finalized 32 slots later;
 * - balances: every account starts with 1.5 SOL (so junk keys in older tests
 *   keep their answer); transfers, fees and requestAirdrop move lamports;
 * - Jito: sendBundle (up to 5 transactions, all or nothing) and getBundleStatuses.
 *
 * POST /admin/chain (any endpoint; keys optional):
 *   {"slot_ms":50}        clock speed from now on
 *   {"advance":151}       jump the clock forward by N slots (expire blockhashes)
 *   {"drop":N}            silently drop the next N accepted transactions
 *   {"drop_all":true}     drop every transaction until false
 *   {"fees":[0,10,20]}    recent prioritization fees, cycled over the last 150 slots
 *   {"reset":true}        forget transactions, balances, drops and fees
 * and answers {"slot":..,"block_height":..,"transactions":..,"sends":..,"dropped":..,...}.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "sim.h"
#include "solana.h"

#define DEFAULT_LAMPORTS 1500000000LL
#define MAX_AGE 150
#define FEE_PER_SIG 5000
#define MAX_IX 64

/* ---- clock ---------------------------------------------------------------- */

static double slot_ms = 400, ref_ms;
static long ref_slot = 250000000L;
static int inited;
static uint8_t seed[32];

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void simtx_free(void);

static void init(void) {
    if (inited) return;
    inited = 1;
    if (thorp_sol_init() != 0) { fprintf(stderr, "thorp-sim: libsodium failed to start\n"); exit(1); }
    randombytes_buf(seed, sizeof seed);
    ref_ms = mono_ms();
    const char *s = getenv("THORP_SIM_SLOT_MS");
    if (s && atof(s) >= 1) slot_ms = atof(s);
    atexit(simtx_free);
}

long simtx_slot(void) {
    init();
    return ref_slot + (long)((mono_ms() - ref_ms) / slot_ms);
}

static long height_of(long slot) { return slot - 20000000L; }

/* ---- base58 and the wire format: host/solana.c ------------------------------ */

static void b58_encode(const uint8_t *in, size_t n, char *out) { thorp_sol_b58_encode(in, n, out, 100); }

/* decode exactly `want` bytes; 0 on anything else */
static int b58_decode(const char *s, size_t sl, uint8_t *out, size_t want) {
    size_t bad;
    return sl > 0 && thorp_sol_b58_decode(s, sl, out, want, &bad) == (int)want;
}

/* ---- tables: fixed-size keys, open addressing ------------------------------ */

typedef struct tx_rec {
    uint8_t sig[64];
    long slot;          /* lands (is visible) from this slot */
    char err[96];       /* JSON of the transaction error, "" when it succeeded */
} tx_rec;

typedef struct acct { uint8_t key[32]; int64_t lamports; } acct;

/* a row is its record and a used flag */
typedef struct tx_row { tx_rec r; uint8_t used; } tx_row;
typedef struct acct_row { acct a; uint8_t used; } acct_row;

typedef struct table { void *rows; size_t cap, n, size, keylen, used_off; } table;

static table txs = { NULL, 0, 0, sizeof(tx_row), 64, offsetof(tx_row, used) },
             accts = { NULL, 0, 0, sizeof(acct_row), 32, offsetof(acct_row, used) };

static uint64_t key_hash(const uint8_t *k) { uint64_t h; memcpy(&h, k + 8, 8); return h; }

static void *tab_find(table *t, const uint8_t *key, int create) {
    if (create && (t->n + 1) * 2 > t->cap) {
        table old = *t;
        t->cap = old.cap ? old.cap * 2 : 1024;
        t->rows = calloc(t->cap, t->size);
        t->n = 0;
        for (size_t i = 0; i < old.cap; i++) {
            uint8_t *r = (uint8_t *)old.rows + i * old.size;
            if (r[old.used_off]) {
                uint8_t *nr = tab_find(t, r, 1);
                memcpy(nr, r, old.size);
            }
        }
        free(old.rows);
    }
    if (!t->cap) return NULL;
    for (size_t i = key_hash(key) & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        uint8_t *r = (uint8_t *)t->rows + i * t->size;
        if (!r[t->used_off]) {
            if (!create) return NULL;
            memset(r, 0, t->size);
            memcpy(r, key, t->keylen);
            r[t->used_off] = 1;
            t->n++;
            return r;
        }
        if (!memcmp(r, key, t->keylen)) return r;
    }
}

static void simtx_free(void) {
    free(txs.rows); free(accts.rows);
    memset(&txs, 0, offsetof(table, size));
    memset(&accts, 0, offsetof(table, size));
}

static int64_t balance(const uint8_t *key) {
    acct_row *a = tab_find(&accts, key, 0);
    return a ? a->a.lamports : DEFAULT_LAMPORTS;
}

static void set_balance(const uint8_t *key, int64_t v) {
    acct_row *a = tab_find(&accts, key, 1);
    a->a.lamports = v;
}

/* ---- ledger state ------------------------------------------------------------ */

static long n_sends, n_landed, n_dropped, n_failed, n_refused, drop_next;
static int drop_all;
static long fees[256];
static int n_fees;

typedef struct bundle { char id[65]; long slot; int ntx; char sigs[5][100]; } bundle;
static bundle bundles[256];
static int n_bundles;

/* ---- transactions ------------------------------------------------------------ */

typedef struct ix { int prog, nacc; const uint8_t *acc; size_t dlen; const uint8_t *data; } ix;

typedef struct stx {
    int nsig, nreq, ro_signed, ro_unsigned, nkeys, nix, version, nlookups;
    const uint8_t *sigs, *keys, *blockhash;
    ix ixs[MAX_IX];
    sol_tx tx; /* decoded and checked by host/solana.c */
} stx;

static int parse_tx(const uint8_t *buf, size_t len, stx *t) {
    char err[128];
    if (thorp_sol_tx_decode(buf, len, &t->tx, err, sizeof err) != 0) return 0;
    const sol_msg *m = &t->tx.msg;
    if (m->nix > MAX_IX) return 0;
    t->nsig = t->tx.nsigs;
    t->sigs = t->tx.sigs;
    t->version = m->version;
    t->nreq = m->num_required_signatures;
    t->ro_signed = m->num_readonly_signed;
    t->ro_unsigned = m->num_readonly_unsigned;
    t->nkeys = m->nkeys;
    t->keys = m->keys;
    t->blockhash = m->blockhash;
    t->nix = m->nix;
    t->nlookups = m->nlookups;
    for (int i = 0; i < t->nix; i++)
        t->ixs[i] = (ix){ m->ix[i].program, m->ix[i].naccounts, m->ix[i].accounts, m->ix[i].data_len, m->ix[i].data };
    return 1;
}

static const uint8_t *key_at(const stx *t, int i) { return t->keys + 32 * i; }
static int is_signer(const stx *t, int i) { return i < t->nreq; }
static int is_writable(const stx *t, int i) {
    return i < t->nreq ? i < t->nreq - t->ro_signed : i < t->nkeys - t->ro_unsigned;
}

static const uint8_t ZERO[32];
static uint8_t MEMO_V1[32], MEMO_V2[32], COMPUTE_BUDGET[32];

static void programs_init(void) {
    static int done;
    if (done) return;
    done = 1;
    b58_decode("Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo", 43, MEMO_V1, 32);
    b58_decode("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", 43, MEMO_V2, 32);
    b58_decode("ComputeBudget111111111111111111111111111111", 43, COMPUTE_BUDGET, 32);
}

static int verify_sigs(const stx *t) { return thorp_sol_tx_verify(&t->tx) == -1; }

/* the height a blockhash was made at, or -1 when it is not one of ours */
static long blockhash_height(const uint8_t *bh) {
    uint8_t tag[32];
    int64_t h;
    memcpy(&h, bh, 8);
    crypto_generichash(tag, 32, bh, 8, seed, sizeof seed);
    return memcmp(tag, bh + 8, 24) ? -1 : (long)h;
}

static void blockhash_at(long height, char *out) {
    uint8_t bh[32], tag[32];
    int64_t h = height;
    memcpy(bh, &h, 8);
    crypto_generichash(tag, 32, bh, 8, seed, sizeof seed);
    memcpy(bh + 8, tag, 24);
    b58_encode(bh, 32, out);
}

static int blockhash_valid(const uint8_t *bh, long height) {
    long h = blockhash_height(bh);
    return h >= 0 && h <= height && height <= h + MAX_AGE;
}

/* Execute t against the balances. Returns 0 when it cannot land at all
 * (fee payer cannot pay: *why set), else 1 with err "" or the JSON error;
 * commit = 0 only simulates. */
typedef struct outcome { char err[96]; long units; int64_t fee; } outcome;

static int execute(const stx *t, int commit, outcome *o, const char **why) {
    programs_init();
    memset(o, 0, sizeof *o);
    if (t->nlookups) { *why = "Transaction loads an address table account that doesn't exist"; return 0; }
    int64_t bal[256];
    int nk = t->nkeys < 256 ? t->nkeys : 256;
    for (int i = 0; i < nk; i++) bal[i] = balance(key_at(t, i));
    long cu_limit = -1, cu_price = 0, n_other = 0;
    for (int i = 0; i < t->nix; i++) {
        const ix *x = &t->ixs[i];
        if (!memcmp(key_at(t, x->prog), COMPUTE_BUDGET, 32)) {
            if (x->dlen == 5 && x->data[0] == 2) { uint32_t v; memcpy(&v, x->data + 1, 4); cu_limit = v; }
            else if (x->dlen == 9 && x->data[0] == 3) { uint64_t v; memcpy(&v, x->data + 1, 8); cu_price = (long)v; }
            else { snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,\"InvalidInstructionData\"]}", i); }
        } else n_other++;
    }
    if (cu_limit < 0) cu_limit = n_other * 200000 > 1400000 ? 1400000 : n_other * 200000;
    o->fee = (int64_t)FEE_PER_SIG * t->nsig + (int64_t)((cu_price * (double)cu_limit + 999999) / 1000000);
    if (bal[0] < o->fee) { *why = "Attempt to debit an account but found no record of a prior credit."; return 0; }
    bal[0] -= o->fee;
    int64_t after_fee = bal[0];
    for (int i = 0; i < t->nix && !o->err[0]; i++) {
        const ix *x = &t->ixs[i];
        const uint8_t *prog = key_at(t, x->prog);
        if (!memcmp(prog, COMPUTE_BUDGET, 32)) { o->units += 150; continue; }
        if (!memcmp(prog, ZERO, 32)) {
            o->units += 150;
            uint32_t kind = 0;
            if (x->dlen >= 4) memcpy(&kind, x->data, 4);
            if (kind != 2 || x->dlen != 12 || x->nacc < 2) {
                snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,\"InvalidInstructionData\"]}", i);
                break;
            }
            uint64_t lamports;
            memcpy(&lamports, x->data + 4, 8);
            int from = x->acc[0], to = x->acc[1];
            if (!is_signer(t, from)) {
                snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,\"MissingRequiredSignature\"]}", i);
            } else if (!is_writable(t, from) || !is_writable(t, to)) {
                snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,\"ReadonlyLamportChange\"]}", i);
            } else if ((uint64_t)bal[from] < lamports) {
                snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,{\"Custom\":1}]}", i);
            } else {
                bal[from] -= (int64_t)lamports;
                bal[to] += (int64_t)lamports;
            }
        } else if (!memcmp(prog, MEMO_V1, 32) || !memcmp(prog, MEMO_V2, 32)) {
            o->units += 2000 + 60 * (long)x->dlen;
            for (int a = 0; a < x->nacc; a++)
                if (!is_signer(t, x->acc[a])) {
                    snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,\"MissingRequiredSignature\"]}", i);
                    break;
                }
        } else {
            snprintf(o->err, sizeof o->err, "\"ProgramAccountNotFound\"");
        }
        if (!o->err[0] && o->units > cu_limit)
            snprintf(o->err, sizeof o->err, "{\"InstructionError\":[%d,\"ComputationalBudgetExceeded\"]}", i);
    }
    if (!commit) return 1;
    if (o->err[0]) set_balance(key_at(t, 0), after_fee); /* a failed transaction still pays its fee */
    else for (int i = 0; i < nk; i++) if (bal[i] != balance(key_at(t, i))) set_balance(key_at(t, i), bal[i]);
    return 1;
}

/* ---- JSON helpers ------------------------------------------------------------- */

typedef struct span { const char *s, *e; } span;

/* items of the array starting at p (after whitespace) */
static int arr_items(const char *p, const char *e, span *items, int max) {
    p = skip_ws(p, e);
    if (p >= e || *p != '[') return -1;
    p++;
    int n = 0;
    while ((p = skip_ws(p, e)) < e && *p != ']') {
        const char *ve = value_end(p, e);
        if (ve == p) return -1;
        if (n < max) { items[n].s = p; items[n].e = ve; }
        n++;
        p = skip_ws(ve, e);
        if (p < e && *p == ',') p++;
    }
    return n < max ? n : max;
}

/* the contents of a JSON string value (no escapes in what we read) */
static int str_of(span v, const char **s, size_t *len) {
    if (v.e - v.s < 2 || *v.s != '"' || v.e[-1] != '"') return 0;
    *s = v.s + 1;
    *len = (size_t)(v.e - v.s - 2);
    return 1;
}

static int opt_flag(span opts, const char *key) {
    const char *vs, *ve;
    if (!opts.s || !obj_get(opts.s, opts.e, key, &vs, &ve)) return 0;
    return ve - vs >= 4 && !memcmp(vs, "true", 4);
}

static int opt_is(span opts, const char *key, const char *want) {
    const char *vs, *ve;
    size_t wl = strlen(want);
    return opts.s && obj_get(opts.s, opts.e, key, &vs, &ve) && (size_t)(ve - vs) == wl + 2 && !memcmp(vs + 1, want, wl);
}

/* decode a wire transaction given as base64 (or base58 with encoding "base58"/none) */
static int decode_wire(span v, span opts, uint8_t *buf, size_t *len) {
    const char *raw;
    size_t rl, sl = 0;
    char s[4096];
    if (!str_of(v, &raw, &rl) || rl == 0 || rl > sizeof s) return 0;
    for (size_t i = 0; i < rl; i++) { /* JSON encoders may write "/" as "\/" */
        if (raw[i] == '\\' && i + 1 < rl) i++;
        s[sl++] = raw[i];
    }
    int n = opt_is(opts, "encoding", "base64") ? thorp_sol_b64_decode(s, sl, buf, 2048)
                                                : thorp_sol_b58_decode(s, sl, buf, 2048, &rl); /* base58: the default */
    if (n < 0) return 0;
    *len = (size_t)n;
    return 1;
}

/* ---- methods ------------------------------------------------------------------ */

#define PRE "{\"jsonrpc\":\"2.0\",\"id\":%.*s,\"result\":"

static void status_json(struct evbuffer *out, const tx_rec *r, long slot) {
    long age = slot - r->slot;
    const char *cs = age >= 32 ? "finalized" : age >= 2 ? "confirmed" : "processed";
    const char *err = r->err[0] ? r->err : "null";
    evbuffer_add_printf(out, "{\"slot\":%ld,\"confirmations\":", r->slot);
    if (age >= 32) evbuffer_add_printf(out, "null");
    else evbuffer_add_printf(out, "%ld", age);
    evbuffer_add_printf(out, ",\"err\":%s,\"status\":{\"%s\":%s},\"confirmationStatus\":\"%s\"}", err,
                        r->err[0] ? "Err" : "Ok", err, cs);
}

/* Accept one decoded transaction into the ledger. Returns NULL (accepted,
 * sig_b58 set) or the preflight error message with *code. Preflight runs on
 * the node's own view, `lag` slots behind: a node that lags has not seen the
 * newest blockhashes yet ("Blockhash not found"), while what it forwards
 * without preflight meets the leader's view. */
static const char *ledger_accept(const stx *t, int preflight, long lag, char *sig_b58, int *code, int in_bundle) {
    long slot = simtx_slot(), height = height_of(slot);
    b58_encode(t->sigs, 64, sig_b58);
    n_sends++;
    if (!verify_sigs(t)) {
        n_refused++;
        if (preflight) { *code = -32003; return "Transaction signature verification failure"; }
        return NULL; /* the leader drops it */
    }
    if (!blockhash_valid(t->blockhash, preflight ? height_of(slot - lag) : height)) {
        n_refused++;
        if (preflight) { *code = -32002; return "Transaction simulation failed: Blockhash not found"; }
        return NULL;
    }
    if (tab_find(&txs, t->sigs, 0)) {
        if (preflight) { *code = -32002; return "Transaction simulation failed: This transaction has already been processed"; }
        return NULL;
    }
    outcome o;
    const char *why = NULL;
    if (!execute(t, 0, &o, &why)) {
        n_refused++;
        if (preflight) { *code = -32002; return why; }
        return NULL;
    }
    if (preflight && o.err[0]) {
        static char msg[160];
        snprintf(msg, sizeof msg, "Transaction simulation failed: Error processing Instruction: %s", o.err);
        for (char *c = msg; *c; c++) if (*c == '"') *c = '\'';
        *code = -32002;
        return msg;
    }
    if (in_bundle) return NULL; /* the bundle commits once every member passed */
    if (drop_all || drop_next > 0) {
        if (drop_next > 0) drop_next--;
        n_dropped++;
        return NULL;
    }
    execute(t, 1, &o, &why);
    tx_row *r = tab_find(&txs, t->sigs, 1);
    r->r.slot = slot + 1;
    snprintf(r->r.err, sizeof r->r.err, "%s", o.err);
    n_landed++;
    if (o.err[0]) n_failed++;
    return NULL;
}

static int do_send(const char *id, int idlen, span *par, int np, long lag, struct evbuffer *out) {
    static uint8_t buf[2048];
    size_t len;
    stx t;
    span opts = np > 1 ? par[1] : (span){ NULL, NULL };
    if (np < 1 || !decode_wire(par[0], opts, buf, &len) || !parse_tx(buf, len, &t)) return 0;
    char sig[100];
    int code = 0;
    const char *err = ledger_accept(&t, !opt_flag(opts, "skipPreflight"), lag, sig, &code, 0);
    if (err) rpc_error(out, id, idlen, code, err);
    else evbuffer_add_printf(out, PRE "\"%s\"}", idlen, id, sig);
    return 2; /* a sendTransaction: sim.c counts it */
}

static int do_simulate(const char *id, int idlen, span *par, int np, long slot, struct evbuffer *out) {
    static uint8_t buf[2048];
    size_t len;
    stx t;
    span opts = np > 1 ? par[1] : (span){ NULL, NULL };
    if (np < 1 || !decode_wire(par[0], opts, buf, &len) || !parse_tx(buf, len, &t)) return 0;
    const char *err = NULL;
    char errbuf[128];
    outcome o = { "", 0, 0 };
    if (opt_flag(opts, "sigVerify") && !verify_sigs(&t)) err = "\"SignatureFailure\"";
    else if (!opt_flag(opts, "replaceRecentBlockhash") && !blockhash_valid(t.blockhash, height_of(slot)))
        err = "\"BlockhashNotFound\"";
    else {
        const char *why = NULL;
        if (!execute(&t, 0, &o, &why)) err = "\"AccountNotFound\"";
        else if (o.err[0]) { snprintf(errbuf, sizeof errbuf, "%s", o.err); err = errbuf; }
    }
    evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":{\"err\":%s,\"logs\":[],"
                        "\"accounts\":null,\"returnData\":null,\"unitsConsumed\":%ld}}}",
                        idlen, id, slot, err ? err : "null", o.units);
    return 1;
}

static int do_statuses(const char *id, int idlen, span *par, int np, long slot, struct evbuffer *out) {
    static span sigs[256];
    static uint8_t raw[256][64];
    int n = np >= 1 ? arr_items(par[0].s, par[0].e, sigs, 256) : -1;
    if (n < 0) return 0;
    /* junk that is not a signature keeps the old simulator's answer (older tests) */
    for (int i = 0; i < n; i++) {
        const char *s;
        size_t sl;
        if (!str_of(sigs[i], &s, &sl) || !b58_decode(s, sl, raw[i], 64)) return 0;
    }
    evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":[", idlen, id, slot);
    for (int i = 0; i < n; i++) {
        tx_row *r = tab_find(&txs, raw[i], 0);
        if (i) evbuffer_add(out, ",", 1);
        if (r && r->r.slot <= slot) status_json(out, &r->r, slot);
        else evbuffer_add_printf(out, "null");
    }
    evbuffer_add_printf(out, "]}}");
    return 1;
}

static void account_json(struct evbuffer *out, int64_t lamports) {
    evbuffer_add_printf(out, "{\"lamports\":%lld,\"owner\":\"11111111111111111111111111111111\",\"executable\":false,"
                        "\"rentEpoch\":18446744073709551615,\"space\":0,\"data\":[\"\",\"base64\"]}",
                        (long long)lamports);
}

/* the latest bundle with this id */
static const bundle *find_bundle(const char *id, size_t len) {
    const bundle *b = NULL;
    for (int k = 0; k < 256 && k < n_bundles; k++) {
        const bundle *c = &bundles[(n_bundles - 1 - k) % 256];
        if (strlen(c->id) == len && !memcmp(c->id, id, len)) { b = c; break; }
    }
    return b;
}

static int do_bundle(const char *id, int idlen, span *par, int np, long lag, struct evbuffer *out) {
    static span items[8];
    static uint8_t bufs[5][2048];
    static stx ts[5];
    int n = np >= 1 ? arr_items(par[0].s, par[0].e, items, 8) : -1;
    span opts = np > 1 ? par[1] : (span){ NULL, NULL };
    if (n < 1 || n > 5) { rpc_error(out, id, idlen, -32602, "bundle must contain 1 to 5 transactions"); return 1; }
    for (int i = 0; i < n; i++) {
        size_t len;
        if (!decode_wire(items[i], opts, bufs[i], &len) || !parse_tx(bufs[i], len, &ts[i])) {
            rpc_error(out, id, idlen, -32602, "bundle: a transaction could not be decoded");
            return 1;
        }
    }
    uint8_t h[32];
    char bid[65];
    crypto_hash_sha256_state st;
    crypto_hash_sha256_init(&st);
    for (int i = 0; i < n; i++) crypto_hash_sha256_update(&st, ts[i].sigs, 64);
    crypto_hash_sha256_final(&st, h);
    for (int i = 0; i < 32; i++) snprintf(bid + 2 * i, 3, "%02x", h[i]);
    const bundle *seen = find_bundle(bid, 64);
    if (seen && seen->slot >= 0) { /* sent again after it landed: a duplicate, dropped */
        evbuffer_add_printf(out, PRE "\"%s\"}", idlen, id, bid);
        return 1;
    }
    bundle *b = &bundles[n_bundles++ % 256];
    memset(b, 0, sizeof *b);
    b->ntx = n;
    memcpy(b->id, bid, sizeof bid);
    /* all or nothing: every member must pass (a simulated failure drops the whole bundle) */
    int ok = !(drop_all || drop_next > 0);
    for (int i = 0; i < n && ok; i++) {
        int code;
        char sig[100];
        if (ledger_accept(&ts[i], 1, lag, sig, &code, 1)) ok = 0;
        else snprintf(b->sigs[i], sizeof b->sigs[i], "%s", sig);
    }
    if (!ok) { if (drop_next > 0) drop_next--; n_dropped++; b->slot = -1; }
    else {
        long slot = simtx_slot();
        for (int i = 0; i < n; i++) {
            outcome o;
            const char *why;
            execute(&ts[i], 1, &o, &why);
            tx_row *r = tab_find(&txs, ts[i].sigs, 1);
            r->r.slot = slot + 1;
            n_landed++;
        }
        b->slot = slot + 1;
    }
    evbuffer_add_printf(out, PRE "\"%s\"}", idlen, id, b->id);
    return 1;
}

static int do_bundle_statuses(const char *id, int idlen, span *par, int np, long slot, struct evbuffer *out) {
    static span ids[8];
    int n = np >= 1 ? arr_items(par[0].s, par[0].e, ids, 8) : -1;
    if (n < 0) return 0;
    evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":[", idlen, id, slot);
    for (int i = 0; i < n; i++) {
        const char *s;
        size_t sl;
        const bundle *b = str_of(ids[i], &s, &sl) ? find_bundle(s, sl) : NULL;
        if (i) evbuffer_add(out, ",", 1);
        if (!b || b->slot < 0 || b->slot > slot) { evbuffer_add_printf(out, "null"); continue; }
        long age = slot - b->slot;
        evbuffer_add_printf(out, "{\"bundle_id\":\"%s\",\"transactions\":[", b->id);
        for (int k = 0; k < b->ntx; k++) evbuffer_add_printf(out, "%s\"%s\"", k ? "," : "", b->sigs[k]);
        evbuffer_add_printf(out, "],\"slot\":%ld,\"confirmation_status\":\"%s\",\"err\":{\"Ok\":null}}", b->slot,
                            age >= 32 ? "finalized" : age >= 2 ? "confirmed" : "processed");
    }
    evbuffer_add_printf(out, "]}}");
    return 1;
}

int simtx_rpc(const char *method, const char *id, int idlen, const char *ps, const char *pe, long lag,
              struct evbuffer *out) {
    static span par[4];
    int np = ps ? arr_items(ps, pe, par, 4) : 0;
    if (np < 0) np = 0;
    long slot = simtx_slot() - lag, height = height_of(slot);
    if (!strcmp(method, "getLatestBlockhash")) {
        char bh[100];
        blockhash_at(height, bh);
        evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":{\"blockhash\":\"%s\","
                            "\"lastValidBlockHeight\":%ld}}}", idlen, id, slot, bh, height + MAX_AGE);
        return 1;
    }
    if (!strcmp(method, "getBlockHeight")) {
        evbuffer_add_printf(out, PRE "%ld}", idlen, id, height);
        return 1;
    }
    if (!strcmp(method, "isBlockhashValid")) {
        const char *s;
        size_t sl;
        uint8_t bh[32];
        if (np < 1 || !str_of(par[0], &s, &sl) || !b58_decode(s, sl, bh, 32)) {
            rpc_error(out, id, idlen, -32602, "Invalid params: expected a base58 blockhash");
            return 1;
        }
        evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":%s}}", idlen, id, slot,
                            blockhash_valid(bh, height) ? "true" : "false");
        return 1;
    }
    if (!strcmp(method, "sendTransaction")) return do_send(id, idlen, par, np, lag, out);
    if (!strcmp(method, "simulateTransaction")) return do_simulate(id, idlen, par, np, slot, out);
    if (!strcmp(method, "getSignatureStatuses")) return do_statuses(id, idlen, par, np, slot, out);
    if (!strcmp(method, "sendBundle")) return do_bundle(id, idlen, par, np, lag, out);
    if (!strcmp(method, "getBundleStatuses")) return do_bundle_statuses(id, idlen, par, np, slot, out);
    if (!strcmp(method, "getBalance")) {
        const char *s;
        size_t sl;
        uint8_t key[32];
        if (np < 1 || !str_of(par[0], &s, &sl) || !b58_decode(s, sl, key, 32)) return 0; /* junk keys: sim.c */
        evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":%lld}}", idlen, id, slot,
                            (long long)balance(key));
        return 1;
    }
    if (!strcmp(method, "getMultipleAccounts")) {
        static span keys[100];
        int n = np >= 1 ? arr_items(par[0].s, par[0].e, keys, 100) : -1;
        if (n < 0) { rpc_error(out, id, idlen, -32602, "Invalid params: expected a list of accounts"); return 1; }
        evbuffer_add_printf(out, PRE "{\"context\":{\"slot\":%ld},\"value\":[", idlen, id, slot);
        for (int i = 0; i < n; i++) {
            const char *s;
            size_t sl;
            uint8_t key[32];
            if (i) evbuffer_add(out, ",", 1);
            if (str_of(keys[i], &s, &sl) && b58_decode(s, sl, key, 32)) account_json(out, balance(key));
            else evbuffer_add_printf(out, "null");
        }
        evbuffer_add_printf(out, "]}}");
        return 1;
    }
    if (!strcmp(method, "requestAirdrop")) {
        const char *s;
        size_t sl;
        uint8_t key[32], sig[64];
        double lamports = np >= 2 ? strtod(par[1].s, NULL) : 0;
        if (np < 2 || !str_of(par[0], &s, &sl) || !b58_decode(s, sl, key, 32) || lamports <= 0) {
            rpc_error(out, id, idlen, -32602, "Invalid params: expected a base58 pubkey and lamports > 0");
            return 1;
        }
        set_balance(key, balance(key) + (int64_t)lamports);
        randombytes_buf(sig, 64);
        tx_row *r = tab_find(&txs, sig, 1);
        r->r.slot = simtx_slot() + 1;
        char b58[100];
        b58_encode(sig, 64, b58);
        evbuffer_add_printf(out, PRE "\"%s\"}", idlen, id, b58);
        return 1;
    }
    if (!strcmp(method, "getRecentPrioritizationFees")) {
        evbuffer_add_printf(out, PRE "[", idlen, id);
        for (int i = 0; i < MAX_AGE; i++) {
            long s = slot - MAX_AGE + 1 + i;
            long fee = n_fees ? fees[(unsigned long)s % n_fees] : (s % 3 == 0 ? 0 : 1000 * (1 + s % 10));
            evbuffer_add_printf(out, "%s{\"slot\":%ld,\"prioritizationFee\":%ld}", i ? "," : "", s, fee);
        }
        evbuffer_add_printf(out, "]}");
        return 1;
    }
    return 0;
}

void simtx_admin(const char *body, size_t len, struct evbuffer *out) {
    const char *vs, *ve, *e = body + len;
    init();
    if (obj_get(body, e, "reset", &vs, &ve) && !memcmp(vs, "true", 4)) {
        simtx_free();
        n_sends = n_landed = n_dropped = n_failed = n_refused = drop_next = 0;
        drop_all = n_fees = n_bundles = 0;
    }
    if (obj_get(body, e, "slot_ms", &vs, &ve) && strtod(vs, NULL) >= 1) {
        ref_slot = simtx_slot();
        ref_ms = mono_ms();
        slot_ms = strtod(vs, NULL);
    }
    if (obj_get(body, e, "advance", &vs, &ve)) ref_slot += strtol(vs, NULL, 10);
    if (obj_get(body, e, "drop", &vs, &ve)) drop_next = strtol(vs, NULL, 10);
    if (obj_get(body, e, "drop_all", &vs, &ve)) drop_all = !memcmp(vs, "true", 4);
    if (obj_get(body, e, "fees", &vs, &ve)) {
        span items[256];
        int n = arr_items(vs, ve, items, 256);
        n_fees = n < 0 ? 0 : n;
        for (int i = 0; i < n_fees; i++) fees[i] = strtol(items[i].s, NULL, 10);
    }
    long slot = simtx_slot();
    evbuffer_add_printf(out, "{\"slot\":%ld,\"block_height\":%ld,\"slot_ms\":%g,\"transactions\":%zu,\"sends\":%ld,"
                        "\"landed\":%ld,\"failed\":%ld,\"refused\":%ld,\"dropped\":%ld,\"drop_next\":%ld,"
                        "\"drop_all\":%s,\"accounts\":%zu,\"bundles\":%d}",
                        slot, height_of(slot), slot_ms, txs.n, n_sends, n_landed, n_failed, n_refused, n_dropped,
                        drop_next, drop_all ? "true" : "false", accts.n, n_bundles);
}
