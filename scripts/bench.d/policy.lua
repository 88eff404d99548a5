-- Policy reload: time to load, validate and apply the default policies, and
-- the longest loop stall a reload causes (a 1 ms ticker measures the gaps).
local thorp = require "thorp"
local policy = require "thorp.policy"
local files = { "policies/default.lua", "examples/memecoin_policy.lua" }
local worst_gap, last, running = 0, thorp.now(), true
thorp.spawn(function()
  while running do
    thorp.sleep(1)
    local t = thorp.now()
    if t - last > worst_gap then worst_gap = t - last end
    last = t
  end
end)
thorp.sleep(20)
worst_gap = 0
local n, total, worst = 200, 0, 0
for _ = 1, n do
  local t0 = thorp.now()
  assert(policy.apply_files(files))
  local ms = thorp.now() - t0
  total, worst = total + ms, math.max(worst, ms)
  thorp.sleep(2)
end
running = false
print(("policy reload (default + memecoin): mean %.3f ms, max %.3f ms over %d reloads; longest loop gap %.2f ms (ticker 1 ms)")
  :format(total / n, worst, n, worst_gap))
