-- WebSocket subscription figures (issue 12). Run: LOG_LEVEL=warn ./thorp exec scripts/bench.d/ws.lua
--  1. notifications/s from the socket to a Lua handler: the simulator offers
--     1 KB accountNotification messages faster than they can be taken (it
--     skips what a reader 8 MB behind cannot take), and the same stream is read
--     by Node's `ws` + JSON.parse (tests/node/ws_bench.mjs) for comparison;
--     1b. the host's CPU time per notification (redundancy 1 and 2) at a rate it keeps up with;
--  2. added latency from the read of a frame's bytes (C) to the handler's
--     start, at 5,000 notifications/s: p50/p99/p999;
--  3. failover: a killed connection to notifications flowing on the second
--     endpoint (redundancy 1), and with redundancy 2 whether any slot was lost.
-- WS_BENCH_SECONDS (default 3) sets how long each throughput run lasts.
io.stdout:setvbuf("line")
package.path = "tests/?.lua;" .. package.path
local ws = require "thorp.ws"
local sim = require("helpers.sim").start(2)
local SECS = tonumber(os.getenv("WS_BENCH_SECONDS")) or 3
local pool = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b" }) }

local function wait(cond, ms)
  local deadline = thorp.now() + ms
  while thorp.now() < deadline do
    if cond() then return true end
    thorp.sleep(5)
  end
  return false
end

local function pct(t, p) return t[math.max(1, math.ceil(#t * p))] end

-- 1. throughput --------------------------------------------------------------
sim:ws_fault(1, { payload_bytes = 1024, notify_ms = 0 })
local n = 0
local sub = pool:subscribe("accountSubscribe", { "BenchAccount1111111111111111111111111111111" },
                           function() n = n + 1 end) -- the default mailbox (10,000): drops are counted
wait(function() return sub:status().state == "active" end, 3000)
sim:ws_fault(1, { rate = 400000 })
thorp.sleep(500) -- warm up (JIT)
local n0, b0, t0, d0, a0 = n, ws.stats.bytes, thorp.now(), sub:status().dropped, ws.stats.notifications
local s0 = sim:ws_fault(1, {})
thorp.sleep(SECS * 1000)
local ms = thorp.now() - t0
local got, bytes = n - n0, ws.stats.bytes - b0
local s1 = sim:ws_fault(1, { rate = 0 })
local dropped, arrived = sub:status().dropped - d0, ws.stats.notifications - a0
print(("ws: socket -> Lua handler, 1 KB accountNotification: %8.0f notifications/s handled  (%.0f/s read, %.0f MB/s, "
  .. "%.0f/s dropped at a full mailbox; simulator sent %.0f/s, skipped %.0f/s for a reader 8 MB behind)"):format(
  got / ms * 1000, arrived / ms * 1000, bytes / ms / 1000, dropped / ms * 1000,
  (s1.notifications - s0.notifications) / ms * 1000, (s1.skipped - s0.skipped) / ms * 1000))
sub:unsubscribe()

-- the same stream through Node's ws + JSON.parse
local root = require("thorp.host").dev_root()
local outf = os.tmpname()
os.execute(("cd %q/tests/node && (node ws_bench.mjs %s %d > %q 2>&1; echo END >> %q) &"):format(root,
  sim.ws_urls[2], SECS, outf, outf))
thorp.sleep(300)
sim:ws_fault(2, { payload_bytes = 1024, notify_ms = 0, rate = 400000 })
local out = ""
wait(function()
  local f = io.open(outf)
  out = f and f:read("*a") or ""
  if f then f:close() end
  return out:match("END")
end, SECS * 1000 + 15000)
os.remove(outf)
out = out:gsub("END%s*$", "")
sim:ws_fault(2, { rate = 0 })
print("ws: " .. (out:gsub("%s+$", "")))

-- 1b. CPU per notification at a rate both paths keep up with (a shared machine makes
-- rates noisy; the host's own CPU time per message is the steadier figure) ---------------
for _, red in ipairs{ 1, 2 } do
  for i = 1, 2 do sim:ws_fault(i, { payload_bytes = 1024, notify_ms = 0, rate = 0 }) end
  local k = 0
  local s = pool:subscribe("accountSubscribe", { "CpuAccount" .. red }, function() k = k + 1 end, { redundancy = red })
  wait(function() return s:status().state == "active" end, 3000)
  for i = 1, red do sim:ws_fault(i, { rate = 20000 }) end
  thorp.sleep(300)
  local k0, c0, r0 = k, os.clock(), ws.stats.notifications
  thorp.sleep(SECS * 1000)
  local cpu, got, read = os.clock() - c0, k - k0, ws.stats.notifications - r0
  for i = 1, 2 do sim:ws_fault(i, { rate = 0 }) end
  s:unsubscribe()
  print(("ws: CPU per 1 KB accountNotification, redundancy %d at %d x 20,000/s: %.2f us per message read, "
    .. "%.2f us per one delivered (%d delivered)"):format(red, red, cpu / read * 1e6, cpu / got * 1e6, got))
end

-- 2. latency at 5,000/s ------------------------------------------------------------
local lat, ln = {}, 0
sub = pool:subscribe("accountSubscribe", { "BenchAccount2" }, function(_, ctx)
  ln = ln + 1
  lat[ln] = thorp.now() - ctx.received_at
end)
wait(function() return sub:status().state == "active" end, 3000)
sim:ws_fault(1, { rate = 5000 })
thorp.sleep(SECS * 1000)
sim:ws_fault(1, { rate = 0, notify_ms = 200 })
sub:unsubscribe()
table.sort(lat)
print(("ws: frame read -> handler start at 5,000/s (%d samples): p50 %.1f us, p99 %.1f us, p999 %.1f us"):format(
  #lat, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000, pct(lat, 0.999) * 1000))

-- 3. failover --------------------------------------------------------------------------
ws.options.backoff_min_ms = 200
local last_ep, first_b = nil, nil
sub = pool:subscribe("slotSubscribe", nil, function(_, ctx)
  last_ep = ctx.endpoint
  if ctx.endpoint == "b" and not first_b then first_b = thorp.now() end
end)
wait(function() return last_ep == "a" end, 3000)
for i = 1, 2 do sim:ws_fault(i, { rate = 0 }) end
-- account notifications every 10 ms on both, so the first one after the move is quick to see
local acct_first
local asub = pool:subscribe("accountSubscribe", { "FailoverAcc" }, function(_, ctx)
  if ctx.endpoint == "b" and not acct_first then acct_first = thorp.now() end
end)
for i = 1, 2 do sim:ws_fault(i, { notify_ms = 10, payload_bytes = 100 }) end
wait(function() return asub:status().state == "active" end, 3000)
sim:ws_fault(1, { upgrade_status = 503 })
local t_kill = thorp.now()
ws._reset(pool, "a")
wait(function() return acct_first ~= nil end, 5000)
print(("ws: failover, redundancy 1: killed connection -> notifications from the second endpoint in %.1f ms"):format(
  acct_first and (acct_first - t_kill) or -1))
sub:unsubscribe()
asub:unsubscribe()
sim:ws_fault(1, { clear = 1 })
sim:ws_fault(2, { clear = 1 })

local slots, dup = {}, 0
local seen = {}
sub = pool:subscribe("slotSubscribe", nil, function(v)
  if seen[v.slot] then dup = dup + 1 end
  seen[v.slot] = true
  slots[#slots + 1] = v.slot
end, { redundancy = 2 })
wait(function() return #slots >= 2 end, 3000)
ws._reset(pool, "a")
wait(function() return #slots >= 6 end, 5000)
local missing = 0
for i = 2, #slots do missing = missing + (slots[i] - slots[i - 1] - 1) end
print(("ws: failover, redundancy 2: one endpoint killed, %d slots delivered, %d missing, %d duplicates"):format(
  #slots, missing, dup))
sub:unsubscribe()
sim:stop()
