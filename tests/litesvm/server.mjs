// A small Solana JSON-RPC node over LiteSVM (npm `litesvm`): real ed25519
// signature checks and real program execution (system, memo, SPL token...),
// so thorp's send path can be tested against the actual runtime.
//
//   node tests/litesvm/server.mjs        prints "LITESVM_READY http://127.0.0.1:PORT"
//
// Methods: getSlot, getBlockHeight, getHealth, getVersion, getLatestBlockhash,
// isBlockhashValid, sendTransaction (preflight = a LiteSVM simulation unless
// skipPreflight), simulateTransaction, getSignatureStatuses, getBalance,
// getMultipleAccounts, getAccountInfo, requestAirdrop,
// getRecentPrioritizationFees (none), plus JSON-RPC batches.
// LiteSVM has no blocks: a slot (= block height here) passes every SLOT_MS
// (50) ms; a status is processed in its slot, confirmed 2 slots and
// finalized 32 slots later. The blockhash is LiteSVM's and never expires.
import http from "node:http";
import { LiteSVM } from "litesvm";
import { address, getBase58Decoder, getBase58Encoder, getBase64Encoder, getTransactionDecoder, lamports } from "@solana/kit";

const SLOT_MS = Number(process.env.SLOT_MS || 50);
const svm = new LiteSVM();
const b58 = getBase58Decoder(), fromB58 = getBase58Encoder(), fromB64 = getBase64Encoder();
const txDecoder = getTransactionDecoder();
const statuses = new Map(); // signature -> { slot, err }
let slot = 1;
setInterval(() => { slot++; svm.warpToSlot(BigInt(slot)); }, SLOT_MS).unref();

class RpcError extends Error { constructor(code, message) { super(message); this.code = code; } }

function decodeTx(s, opts = {}) {
  if (typeof s !== "string") throw new RpcError(-32602, "Invalid params: expected an encoded transaction");
  const bytes = opts.encoding === "base64" ? fromB64.encode(s) : fromB58.encode(s);
  try { return txDecoder.decode(bytes); } catch (e) { throw new RpcError(-32602, `invalid transaction: ${e.message}`); }
}
const sigOf = (tx) => Object.values(tx.signatures)[0];
const failed = (r) => typeof r.err === "function";
const errJson = (r) => ({ LiteSVM: r.toString().slice(0, 300) });

function record(signature, result) {
  statuses.set(signature, { slot, err: failed(result) ? errJson(result) : null });
}

function status(sig) {
  const s = statuses.get(sig);
  if (!s) return null;
  const age = slot - s.slot;
  return { slot: s.slot, confirmations: age >= 32 ? null : age, err: s.err, status: s.err ? { Err: s.err } : { Ok: null },
           confirmationStatus: age >= 32 ? "finalized" : age >= 2 ? "confirmed" : "processed" };
}

const ctx = (value) => ({ context: { slot }, value });

const methods = {
  getSlot: () => slot,
  getBlockHeight: () => slot,
  getHealth: () => "ok",
  getVersion: () => ({ "solana-core": "litesvm", "feature-set": 0 }),
  getLatestBlockhash: () => ctx({ blockhash: svm.latestBlockhash(), lastValidBlockHeight: slot + 150 }),
  isBlockhashValid: ([bh]) => ctx(bh === svm.latestBlockhash()),
  getRecentPrioritizationFees: () => [],
  getBalance: ([a]) => ctx(Number(svm.getBalance(address(a)) ?? 0n)),
  getAccountInfo: ([a]) => ctx(account(a)),
  getMultipleAccounts: ([list]) => ctx(list.map(account)),
  requestAirdrop: ([a, n]) => {
    const r = svm.airdrop(address(a), lamports(BigInt(n)));
    if (!r || failed(r)) throw new RpcError(-32000, `airdrop failed: ${r}`);
    const sig = b58.decode(r.signature());
    record(sig, r);
    return sig;
  },
  simulateTransaction: ([s, opts = {}]) => {
    const r = svm.simulateTransaction(decodeTx(s, opts));
    if (failed(r)) return ctx({ err: errJson(r), logs: r.meta().logs(), unitsConsumed: Number(r.meta().computeUnitsConsumed()) });
    return ctx({ err: null, logs: r.meta().logs(), unitsConsumed: Number(r.meta().computeUnitsConsumed()), accounts: null });
  },
  sendTransaction: ([s, opts = {}]) => {
    const tx = decodeTx(s, opts);
    const sig = sigOf(tx) ? b58.decode(sigOf(tx)) : null;
    if (!sig) throw new RpcError(-32602, "transaction is not signed");
    if (statuses.has(sig)) {
      if (!opts.skipPreflight) throw new RpcError(-32002, "Transaction simulation failed: This transaction has already been processed");
      return sig;
    }
    if (!opts.skipPreflight) {
      const sim = svm.simulateTransaction(tx);
      if (failed(sim)) {
        const text = sim.toString();
        if (/signature/i.test(text)) throw new RpcError(-32003, `Transaction signature verification failure: ${text.slice(0, 200)}`);
        throw new RpcError(-32002, `Transaction simulation failed: ${text.slice(0, 200)}`);
      }
    }
    const r = svm.sendTransaction(tx);
    // a leader drops what fails signature or blockhash checks; what executes and fails lands with its error
    if (failed(r) && /Signature|Blockhash|AlreadyProcessed/i.test(r.toString()) && !/InstructionError/.test(r.toString())) return sig;
    record(sig, r);
    return sig;
  },
  getSignatureStatuses: ([sigs]) => ctx(sigs.map(status)),
};

function account(a) {
  const acc = svm.getAccount(address(a));
  if (!acc || !acc.exists) return null;
  return { lamports: Number(acc.lamports), owner: acc.programAddress, executable: acc.executable,
           rentEpoch: 0, space: acc.data.length, data: [Buffer.from(acc.data).toString("base64"), "base64"] };
}

function one(req) {
  const id = req && req.id !== undefined ? req.id : null;
  try {
    const fn = req && methods[req.method];
    if (!fn) throw new RpcError(-32601, `Method not found: ${req && req.method}`);
    return { jsonrpc: "2.0", id, result: fn(req.params || []) };
  } catch (e) {
    return { jsonrpc: "2.0", id, error: { code: e.code || -32603, message: String(e.message || e) } };
  }
}

const server = http.createServer((req, res) => {
  let body = "";
  req.on("data", (c) => { body += c; });
  req.on("end", () => {
    let doc, out;
    try { doc = JSON.parse(body); } catch { doc = undefined; }
    if (doc === undefined) out = { jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } };
    else out = Array.isArray(doc) ? doc.map(one) : one(doc);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(out, (_, v) => (typeof v === "bigint" ? Number(v) : v)));
  });
});
server.listen(0, "127.0.0.1", () => {
  console.log(`LITESVM_READY http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
