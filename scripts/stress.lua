-- Driver of scripts/stress (run by `thorp exec`): rounds, calls, rate from the arguments.
package.path = require("thorp.host").dev_root() .. "/tests/?.lua;" .. package.path
local thorp = require "thorp"
io.stdout:setvbuf("line") -- one line per round as it ends
local simm = require "helpers.sim"

local rounds, calls, rate = tonumber(arg[1]) or 20, tonumber(arg[2]) or 1000, tonumber(arg[3]) or 300
local sim = simm.start(3)
local pool = sim:cascade_pool()
local deadline = thorp.now() + 3000
while not (pool.eps[1].slot and pool.eps[2].slot and pool.eps[3].slot) and thorp.now() < deadline do
  thorp.sleep(10)
end
sim:cascade(500)
local total, lag_rounds = 0, 0
local ok, err = pcall(function()
  for r = 1, rounds do
    local t0 = thorp.now()
    local failed, errs, lagged, gap = simm.cascade_round(pool, calls, rate)
    total = total + failed
    if lagged then lag_rounds = lag_rounds + 1 end
    local sim_gap = sim:stats(1).loop_gap_ms
    print(("round %2d: %d of %d critical calls failed (%.1f s; loop ticks up to %d ms apart, simulator's %d ms)%s")
      :format(r, failed, calls, (thorp.now() - t0) / 1000, gap, sim_gap,
              lagged and ", a lagging endpoint left rotation" or ""))
    for _, e in ipairs(errs) do print("    " .. e) end
  end
end)
sim:cascade(0)
pool:stop_health()
sim:stop()
if not ok then error(err, 0) end
print(("total: %d failed of %d critical calls in %d rounds; lagging endpoint out of rotation in %d rounds")
  :format(total, rounds * calls, rounds, lag_rounds))
if total > 0 then os.exit(1) end
