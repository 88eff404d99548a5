-- send_and_confirm against the simulator's ledger (3 endpoints, 400 ms
-- slots like mainnet, confirmed 2 slots after landing): time from the call
-- to "confirmed" and sends per trade, for trades one at a time and 32 in
-- flight, and with 1 in 4 first sends dropped (the rebroadcast lands them).
-- BENCH_SEND_TRADES (default 40) sets the number of trades per run (at most
-- 8 for the one-at-a-time run).
package.path = "tests/?.lua;" .. package.path
local thorp = require "thorp"
local S = thorp.solana
local sim = require("helpers.sim").start(3)
local pool = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b", "c" }), health = false }
thorp.rpc.set_default_pool(pool)
local trades = tonumber(os.getenv("BENCH_SEND_TRADES")) or 40

local function pct(t, q) table.sort(t); return t[math.max(1, math.ceil(q * #t))] end
local function chain(body) assert(thorp.rpc.http_post(sim.urls[1] .. "/admin/chain", body, 2000)) end

local payer = S.keypair.generate()
local function tx(i)
  local bh = assert(S.blockhash())
  local t = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash,
                           instructions = { S.system.transfer(payer.pubkey, S.keypair.generate().pubkey, 1000 + i) } }
  t:sign(payer)
  return t
end

local function run(label, conc, opts, n)
  n = n or trades
  local lat, sends, ok, left, i = {}, {}, 0, n, 0
  local running = conc
  for _ = 1, conc do
    thorp.spawn(function()
      while left > 0 do
        left, i = left - 1, i + 1
        local r = S.send_and_confirm(tx(i), opts)
        if r.ok then ok = ok + 1; lat[#lat + 1] = r.latency_ms end
        sends[#sends + 1] = r.sends
      end
      running = running - 1
    end)
  end
  while running > 0 do thorp.sleep(20) end
  local total = 0
  for _, s in ipairs(sends) do total = total + s end
  print(("%s: %d/%d confirmed, to confirmed p50 %.0f ms p99 %.0f ms, %.2f sends per trade (max %d)")
    :format(label, ok, n, pct(lat, 0.5) or 0, pct(lat, 0.99) or 0, total / #sends, pct(sends, 1)))
end

S.blockhash() -- warm the cache
run("one at a time, rebroadcast every 1 s", 1, {}, math.min(trades, 8))
run("32 in flight, rebroadcast every 1 s", 32, {})
run("32 in flight, rebroadcast every 400 ms", 32, { rebroadcast_ms = 400 })
chain('{"drop":' .. math.floor(trades / 4) .. '}')
run("32 in flight, 1 in 4 first sends dropped", 32, {})
local st = thorp.json.decode(assert(thorp.rpc.http_post(sim.urls[1] .. "/admin/chain", "{}", 2000)).body)
print(("ledger: %d transactions landed, %d sends seen, %d dropped"):format(st.landed, st.sends, st.dropped))
require("thorp.sender").stop()
sim:stop()
