-- thorp.solana on the hot path: base58, sign, verify, and compile + sign +
-- serialize of a 3-instruction v0 transaction, then the same work in
-- @solana/kit (tests/node/kit_bench.mjs, same keys and instructions) in this
-- run, and the ratio. BENCH_SCALE (default 1) scales the iteration counts.
local thorp = require "thorp"
local sol = thorp.solana
local scale = tonumber(os.getenv("BENCH_SCALE")) or 1

local function bench(name, n, fn)
  n = math.max(1, math.floor(n * scale))
  fn(math.min(n, 1000)) -- warm up the JIT
  thorp.sleep(0) -- a loop turn between runs (the watchdog watches the loop)
  local t0 = thorp.now()
  fn(n)
  local us = (thorp.now() - t0) * 1e3 / n
  print(("%-52s %9.2f us/op  (%d ops)"):format(name, us, n))
  return us
end

local payer = assert(sol.keypair.from_seed(("\1"):rep(32)))
local dest = sol.pubkey(("\2"):rep(32))
local blockhash = sol.base58.encode(("\3"):rep(32))
local key = payer.pubkey:bytes()
local key58 = tostring(payer.pubkey)
local msg = ("m"):rep(200)
local sig = payer:sign(msg)

local sink
bench("base58 encode (32-byte key)", 2e5, function(n) for _ = 1, n do sink = sol.base58.encode(key) end end)
bench("base58 decode (32-byte key)", 2e5, function(n) for _ = 1, n do sink = sol.base58.decode(key58) end end)
bench("sign (ed25519, 200-byte message)", 2e4, function(n) for _ = 1, n do sink = payer:sign(msg) end end)
bench("verify (ed25519, 200-byte message)", 1e4, function(n) for _ = 1, n do sink = sol.verify(payer.pubkey, msg, sig) end end)

local function build()
  return sol.transaction{ fee_payer = payer.pubkey, recent_blockhash = blockhash, version = 0, instructions = {
    sol.compute_budget.set_compute_unit_limit(200000),
    sol.compute_budget.set_compute_unit_price(10000),
    sol.system.transfer(payer.pubkey, dest, 1000000) } }
end
bench("compile only (3-instruction v0 message)", 5e4, function(n) for _ = 1, n do sink = build():message() end end)
local ours = bench("compile + sign + serialize (3-instruction v0)", 2e4, function(n)
  for _ = 1, n do sink = build():sign(payer):serialize() end
end)
assert(sol.verify_transaction(build():sign(payer):serialize()) and sink ~= nil)

-- @solana/kit, same keys, blockhash and instructions, same machine, same run
local root = require("thorp.host").dev_root()
local p = io.popen(("cd %q/tests/node && node kit_bench.mjs %d 2>&1"):format(root, math.max(200, math.floor(2000 * scale))))
local out = p and p:read("*a") or ""
if p then p:close() end
local kit_us = tonumber(out:match("kit_us=([%d%.]+)"))
local kit_wire = out:match("kit_wire=(%S+)")
if not kit_us then
  print("@solana/kit: not measured (" .. (out:gsub("\n", " "):sub(1, 200)) .. ")")
  return
end
print(("%-52s %9.2f us/op"):format("@solana/kit compile + sign + serialize (same tx)", kit_us))
print(("thorp is %.0fx @solana/kit for the same transaction (bytes %s)"):format(kit_us / ours,
  kit_wire == sol.base64.encode(build():sign(payer):serialize()) and "identical" or "DIFFER"))
