-- Trade journal cost: register (durable write) + complete, per durability mode.
local thorp = require "thorp"
local journal = require "thorp.journal"
for _, sync in ipairs{ "NORMAL", "FULL" } do
  local dir = os.tmpname(); os.remove(dir)
  local j = assert(journal.open(dir, { synchronous = sync }))
  local n = sync == "FULL" and 2000 or 20000
  local t0 = thorp.now()
  for i = 1, n do j:begin("t" .. i, "TRADE", { token = "BONK", amount = i }); j:done("t" .. i) end
  local ms = thorp.now() - t0
  print(("journal %-6s register+complete: %7.1f us each (%d trades/s)"):format(sync, ms * 1000 / n, n / ms * 1000))
  t0 = thorp.now()
  for i = 1, n do j:claim("k" .. i, 60000) end
  ms = thorp.now() - t0
  print(("journal %-6s idempotency claim:  %7.1f us each"):format(sync, ms * 1000 / n))
  j:close()
  os.execute("rm -rf " .. dir)
end
