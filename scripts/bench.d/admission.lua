-- Cost of the checks that sit on every call: admission and breaker, from Lua.
local thorp = require "thorp"
local N = 5e6
local function bench(name, n, fn)
  fn(1000) -- warm up the JIT
  thorp.sleep(0) -- a loop turn between runs
  local t0 = thorp.now()
  fn(n)
  local ns = (thorp.now() - t0) * 1e6 / n
  print(("%-44s %8.1f ns/op  (%d ops)"):format(name, ns, n))
end
local bp = thorp.backpressure.new{ max_queue_size = 1e9 }
bench("backpressure try_acquire+release (table)", N, function(n)
  for _ = 1, n do local r = bp:try_acquire("normal"); if r.accepted then bp:release("normal") end end
end)
bench("backpressure admit+release (hot path)", N, function(n)
  for _ = 1, n do if bp:admit("critical") then bp:release("critical") end end
end)
local b = thorp.breaker.new{ name = "bench" }
bench("breaker allow+success", N, function(n)
  for _ = 1, n do if b:allow() then b:success() end end
end)
local function f(x) return x end
bench("breaker call(fn) (pcall)", N, function(n)
  for i = 1, n do b:call(f, i) end
end)
