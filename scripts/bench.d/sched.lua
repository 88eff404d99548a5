-- Scheduler figures: spawn + run, sleep/wake round trips, timers.
local N = 200000
local function rate(n, ms) return ("%.0f/s"):format(n / ms * 1000) end

local t0 = thorp.now()
local done = 0
for _ = 1, N do thorp.spawn(function() done = done + 1 end) end
while done < N do thorp.sleep(0) end
local ms = thorp.now() - t0
print(("spawn+run+finish: %d tasks in %.1f ms (%s, %.2f us each)"):format(N, ms, rate(N, ms), ms * 1000 / N))

t0 = thorp.now()
local n = 0
for _ = 1, N do coroutine.yield(); n = n + 1 end
ms = thorp.now() - t0
print(("yield/resume through the loop: %d in %.1f ms (%s)"):format(N, ms, rate(N, ms)))

t0 = thorp.now()
local fired = 0
for i = 1, N do thorp.timer.after(i % 50, function() fired = fired + 1 end) end
while fired < N do thorp.sleep(5) end
ms = thorp.now() - t0
print(("timer.after: %d timers set and fired in %.1f ms (%s)"):format(N, ms, rate(N, ms)))

local gc0 = collectgarbage("count")
t0 = thorp.now()
local sleepers = 10000
local left = sleepers
for _ = 1, sleepers do thorp.spawn(function() thorp.sleep(math.random() * 100); left = left - 1 end) end
while left > 0 do thorp.sleep(1) end
ms = thorp.now() - t0
print(("10,000 coroutines sleeping 0-100 ms: all done after %.1f ms; Lua heap %.0f KiB -> %.0f KiB"):format(
  ms, gc0, collectgarbage("count")))

-- cancelled timers are compacted out of the heap: create+cancel costs no memory
collectgarbage()
gc0 = collectgarbage("count")
t0 = thorp.now()
for _ = 1, N do thorp.timer.after(60000, function() end):cancel() end
ms = thorp.now() - t0
collectgarbage()
print(("timer.after+cancel: %d in %.1f ms (%.2f us each); heap entries left %d; Lua heap %.0f KiB -> %.0f KiB"):format(
  N, ms, ms * 1000 / N, require("thorp.sched").pending().timers, gc0, collectgarbage("count")))
