-- RPC pool against the local simulator: throughput and latency at
-- concurrency 64, the pool's own overhead, and failover when an endpoint dies
-- under load (time until its breaker opens, critical calls lost meanwhile).
package.path = "tests/?.lua;" .. package.path
local thorp = require "thorp"
local sim = require("helpers.sim").start(3)

local function pct(t, q) table.sort(t); return t[math.max(1, math.ceil(q * #t))] end

local function load(pool, conc, secs, method)
  local lat, n, fails, stop = {}, 0, 0, thorp.now() + secs * 1000
  local running = conc
  for _ = 1, conc do
    thorp.spawn(function()
      while thorp.now() < stop do
        local t0 = thorp.now()
        local r = pool:call(method or "getSlot", {}, { priority = "critical" })
        lat[#lat + 1] = thorp.now() - t0
        if r.ok then n = n + 1 else fails = fails + 1 end
      end
      running = running - 1
    end)
  end
  while running > 0 do thorp.sleep(20) end
  return n, fails, lat
end

local pool = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b", "c" }), hedge = false }
load(pool, 8, 0.5) -- warm up connections
local n, fails, lat = load(pool, 64, 3)
print(("rpc getSlot, concurrency 64, 3 s: %d calls/s, p50 %.2f ms, p99 %.2f ms, %d failed")
  :format(n / 3, pct(lat, 0.5), pct(lat, 0.99), fails))

-- failover: endpoint a (first in order) goes down while 32 callers are busy
local bpool = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b", "c" }),
                                  breaker = { failure_threshold = 5, cooldown_ms = 60000 } }
local opened_at
bpool.eps[1].breaker:on_change(function(_, _, to) if to == "OPEN" and not opened_at then opened_at = thorp.now() end end)
local down_at
thorp.timer.after(500, function() sim:fault(1, { down = true }); down_at = thorp.now() end)
local errs = {}
local orig = bpool.call
function bpool:call(...)
  local r = orig(self, ...)
  if not r.ok then errs[r.error.code] = (errs[r.error.code] or 0) + 1 end
  return r
end
n, fails = load(bpool, 32, 2)
for k, v in pairs(errs) do print("  failed with " .. k .. ": " .. v) end
print(("failover: endpoint down -> breaker OPEN in %.1f ms; %d calls ok, %d failed during the run")
  :format(opened_at and (opened_at - down_at) or -1, n, fails))
sim:stop()
