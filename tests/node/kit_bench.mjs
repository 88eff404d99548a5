// @solana/kit doing what scripts/bench.d/solana.lua times in thorp: build,
// compile, sign and serialize a 3-instruction v0 transaction (same keys,
// blockhash, instructions). Prints kit_us=<per op> kit_wire=<base64>.
// Usage: node kit_bench.mjs [ITERATIONS]
import { keyPair, kitWire, toAddress } from "./solana_common.mjs";

const n = Number(process.argv[2] || 2000);
const payer = await keyPair("01".repeat(32));
const c = { version: 0, fee_payer: payer.address, blockhash: toAddress(new Array(32).fill(3)), instructions: [
  { b: "limit", units: 200000 }, { b: "price", micro_lamports: 10000 },
  { b: "transfer", from: payer.address, to: toAddress(new Array(32).fill(2)), lamports: 1000000 }] };
let wire;
for (let i = 0; i < Math.min(200, n); i++) wire = await kitWire(c, [payer.kp]); // warm up
const t0 = process.hrtime.bigint();
for (let i = 0; i < n; i++) wire = await kitWire(c, [payer.kp]);
const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
console.log(`kit_us=${us.toFixed(2)} kit_wire=${wire}`);
