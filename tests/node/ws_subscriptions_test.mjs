// @solana/kit's createSolanaRpcSubscriptions and web3.js Connection subscriptions
// through thorp's front door (THORP_WS_URL), upstream the simulator's WebSocket
// side (SIM_WS_1..3: their admin ports). Prints ok/FAIL lines and
// "N passed, N failed". Run by tests/node/run.sh.
import { address, createSolanaRpcSubscriptions, signature } from "@solana/kit";
import { Connection, PublicKey } from "@solana/web3.js";
import WebSocket from "ws";

const WS = process.env.THORP_WS_URL, HTTP = process.env.THORP_URL;
const sims = [process.env.SIM_WS_1, process.env.SIM_WS_2, process.env.SIM_WS_3].filter(Boolean)
  .map((u) => u.replace(/^ws:/, "http:") + "/admin/ws");
let passed = 0, failed = 0;
async function check(what, fn) {
  try {
    const detail = await withTimeout(fn(), 15000);
    passed++;
    console.log(`ok   - ${what}${detail ? ` (${detail})` : ""}`);
  } catch (e) {
    failed++;
    console.log(`FAIL - ${what}: ${e?.message ?? e}`);
  }
}
function withTimeout(p, ms) {
  return Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`no result within ${ms} ms`)), ms))]);
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
const admin = async (i, body) => (await fetch(sims[i], { method: "POST", body: JSON.stringify(body ?? {}) })).json();
const upstreamSubs = async () => { let n = 0; for (let i = 0; i < sims.length; i++) n += (await admin(i)).subscriptions; return n; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await cond()) return; await sleep(20); }
  throw new Error(`timed out waiting for ${what}`);
}
// take n items of an async iterable
async function take(iter, n) {
  const out = [];
  for await (const x of iter) { out.push(x); if (out.length >= n) break; }
  return out;
}

const acct = address("Acc1111111111111111111111111111111111111111");

await check("kit: slotNotifications through the front door", async () => {
  const subs = createSolanaRpcSubscriptions(WS);
  const ac = new AbortController();
  const it = await subs.slotNotifications().subscribe({ abortSignal: ac.signal });
  const got = await take(it, 2);
  ac.abort();
  assert(typeof got[0].slot === "bigint" && got[1].slot > got[0].slot, JSON.stringify(got, (_, v) => String(v)));
  return `slots ${got[0].slot}, ${got[1].slot}`;
});

await check("kit: accountNotifications with base64 data", async () => {
  const subs = createSolanaRpcSubscriptions(WS);
  const ac = new AbortController();
  const it = await subs.accountNotifications(acct, { commitment: "confirmed", encoding: "base64" })
    .subscribe({ abortSignal: ac.signal });
  const [n] = await take(it, 1);
  ac.abort();
  assert(typeof n.value.lamports === "bigint" && typeof n.context.slot === "bigint", "lamports/slot");
  return `slot ${n.context.slot}`;
});

await check("kit: identical subscriptions of two clients share one upstream subscription", async () => {
  const a = createSolanaRpcSubscriptions(WS), b = createSolanaRpcSubscriptions(WS);
  const ac = new AbortController();
  const ia = await a.accountNotifications(acct, { encoding: "base64" }).subscribe({ abortSignal: ac.signal });
  const ib = await b.accountNotifications(acct, { encoding: "base64" }).subscribe({ abortSignal: ac.signal });
  await Promise.all([take(ia, 1), take(ib, 1)]);
  const n = await upstreamSubs();
  ac.abort();
  assert(n === 1, `${n} upstream subscriptions`);
  await until(async () => (await upstreamSubs()) === 0, 5000, "the upstream unsubscribe after both left");
  return "1 upstream, 0 after both aborted";
});

await check("kit: signatureNotifications ends after its notification", async () => {
  const subs = createSolanaRpcSubscriptions(WS);
  const ac = new AbortController();
  const sig = signature("5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW");
  const it = await subs.signatureNotifications(sig, { commitment: "confirmed" }).subscribe({ abortSignal: ac.signal });
  const [n] = await take(it, 1);
  ac.abort();
  assert(n.value.err === null, JSON.stringify(n.value));
  return `slot ${n.context.slot}`;
});

await check("web3.js: onSlotChange and onAccountChange", async () => {
  const conn = new Connection(HTTP, { wsEndpoint: WS, commitment: "confirmed" });
  const slots = [];
  let acc = null;
  const s1 = conn.onSlotChange((info) => slots.push(info.slot));
  const s2 = conn.onAccountChange(new PublicKey("Acc1111111111111111111111111111111111111111"), (a, ctx) => { acc = { a, ctx }; });
  await until(() => slots.length >= 2 && acc, 10000, "slot and account notifications");
  await conn.removeSlotChangeListener(s1);
  await conn.removeAccountChangeListener(s2);
  assert(slots[1] > slots[0], `slots ${slots}`);
  assert(acc.a.data.length === 75 && acc.ctx.slot > 0, `account data ${acc.a.data.length} bytes (100 base64 characters expected: 75)`);
  return `slots ${slots[0]}, ${slots[1]}; ${acc.a.lamports} lamports`;
});

await check("kit: a subscription keeps flowing when its upstream endpoint dies", async () => {
  const subs = createSolanaRpcSubscriptions(WS);
  const ac = new AbortController();
  const it = (await subs.slotNotifications().subscribe({ abortSignal: ac.signal }))[Symbol.asyncIterator]();
  await it.next();
  await admin(0, { upgrade_status: 503 });
  await admin(0, { reset: 1 });
  const after = [];
  for (let i = 0; i < 3; i++) after.push((await it.next()).value.slot);
  ac.abort();
  await admin(0, { clear: 1 });
  assert(after[2] > after[0], `slots ${after}`);
  return `slots ${after.join(", ")} after the kill`;
});

await check("simulator: a reader that stops reading is dropped (slow_reader_bytes)", async () => {
  await admin(2, { slow_reader_bytes: 1 << 20, rate: 20000, payload_bytes: 1024 });
  const before = (await admin(2)).dropped_slow;
  const ws = new WebSocket(process.env.SIM_WS_3);
  await new Promise((res, rej) => { ws.on("open", res); ws.on("error", rej); });
  ws.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "accountSubscribe", params: ["Slow"] }));
  await sleep(100);
  ws._socket.pause(); // stop reading: the simulator's send buffer fills
  await until(async () => (await admin(2)).dropped_slow > before, 10000, "the drop");
  ws.terminate();
  await admin(2, { clear: 1 });
  return "dropped";
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
