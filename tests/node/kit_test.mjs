// @solana/kit against thorp's front door (THORP_URL), with the simulator's
// first endpoint (SIM_URL_1) failing midway: the client must see no error.
// Prints ok/FAIL lines and "N passed, N failed". Run by tests/node/run.sh.
import { address, createSolanaRpc } from "@solana/kit";

const rpc = createSolanaRpc(process.env.THORP_URL);
let passed = 0, failed = 0;
async function check(what, fn) {
  try {
    const detail = await fn();
    passed++;
    console.log(`ok   - ${what}${detail ? ` (${detail})` : ""}`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${what}: ${e?.message ?? e}${e?.cause ? ` (cause: ${e.cause?.message ?? e.cause})` : ""}`);
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
const wallet = address("11111111111111111111111111111111");
const fault = (body) => fetch(`${process.env.SIM_URL_1}/admin/fault`, { method: "POST", body: JSON.stringify(body) });

async function round(tag) {
  await check(`${tag}: getSlot`, async () => {
    const slot = await rpc.getSlot().send();
    assert(typeof slot === "bigint" && slot > 0n, `slot ${slot}`);
    return `slot ${slot}`;
  });
  await check(`${tag}: getBalance`, async () => {
    const { value } = await rpc.getBalance(wallet).send();
    assert(value === 1500000000n, `balance ${value}`);
    return `${value} lamports`;
  });
  await check(`${tag}: getLatestBlockhash`, async () => {
    const { value } = await rpc.getLatestBlockhash().send();
    assert(typeof value.blockhash === "string" && typeof value.lastValidBlockHeight === "bigint", JSON.stringify(value, (_, v) => typeof v === "bigint" ? String(v) : v));
    return value.blockhash;
  });
  // kit sends one request per call; a batch goes as raw JSON-RPC
  await check(`${tag}: a JSON-RPC batch keeps order and ids`, async () => {
    const res = await fetch(process.env.THORP_URL, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify([
        { jsonrpc: "2.0", id: "s", method: "getSlot" },
        { jsonrpc: "2.0", id: 2, method: "getBalance", params: [wallet] },
        { jsonrpc: "2.0", id: 3, method: "getLatestBlockhash" },
      ]),
    });
    assert(res.status === 200, `HTTP ${res.status}`);
    const doc = await res.json();
    assert(doc.map((d) => d.id).join() === "s,2,3", JSON.stringify(doc));
    assert(doc.every((d) => d.result !== undefined), JSON.stringify(doc));
    return "3 answers";
  });
}

const mixed = (n) => {
  const calls = [];
  for (let i = 0; i < n; i++) {
    calls.push(i % 3 === 0 ? rpc.getSlot().send() : i % 3 === 1 ? rpc.getBalance(wallet).send() : rpc.getLatestBlockhash().send());
  }
  return Promise.all(calls);
};

await round("healthy");
await check("30 calls in flight while the simulator's first endpoint goes down all succeed", async () => {
  const inflight = mixed(30);
  const r = await fault({ down: true });
  assert(r.ok, `fault: HTTP ${r.status}`);
  await inflight;
  await mixed(30);
  return "60 ok";
});
await round("one endpoint down");
await fault({ reset: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
