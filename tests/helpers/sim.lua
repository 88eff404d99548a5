-- Start the bundled simulator (build/thorp-sim) from a spec and drive its faults.
--   local sim = require("helpers.sim").start(3)   -- sim.urls[1..3]
--   sim:fault(1, { down = true })  sim:stats(1)  sim:reset()  sim:stop()
--   sim:cascade(500)  -- switch a fault onto one endpoint in turn every 500 ms (0 stops)
--   simm.cascade_round(pool, calls, per_second) -> failed, errors, lagged
local thorp = require "thorp"
local cjson = require "cjson"

local M = {}
local Sim = {}
Sim.__index = Sim

local function binary()
  local b = os.getenv("THORP_SIM")
  if b and b ~= "" then return b end
  return require("thorp.host").dev_root() .. "/build/thorp-sim"
end

function M.start(count)
  local p = assert(io.popen(("sh -c 'echo $$; exec %q --count %d --base-port 0'"):format(binary(), count or 3), "r"))
  local pid = tonumber(p:read("*l"))
  local ready = p:read("*l")
  assert(ready and ready:match("^SIM_READY "), "simulator did not start: " .. tostring(ready))
  local urls = {}
  for u in ready:sub(11):gmatch("[^,]+") do urls[#urls + 1] = u end
  local ws_urls, wsline = {}, p:read("*l") -- "SIM_WS ws://...": the PubSub side (tests/sim/sim_ws.c)
  for u in (wsline or ""):sub(8):gmatch("[^,]+") do ws_urls[#ws_urls + 1] = u end
  return setmetatable({ pid = pid, pipe = p, urls = urls, ws_urls = ws_urls }, Sim)
end

local function post(url, body)
  local r = assert(thorp.rpc.http_post(url, body, 2000))
  return cjson.decode(r.body)
end

function Sim:fault(i, f) return post(self.urls[i] .. "/admin/fault", cjson.encode(f)) end
function Sim:stats(i) return post(self.urls[i] .. "/admin/fault", "{}") end
--- WebSocket faults (tests/sim/sim_ws.c): { close=1, reset=1, silence=1, garbage=1, oversize=N, ... }
function Sim:ws_fault(i, f) return post(self.ws_urls[i]:gsub("^ws:", "http:") .. "/admin/ws", cjson.encode(f or {})) end
function Sim:reset()
  for i = 1, #self.urls do post(self.urls[i] .. "/admin/reset", "") end
end
function Sim:stop()
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  self.pipe:close()
end

--- Switch faults mid-run (see tests/sim/sim.c): every period_ms the next of hang,
--- reset, 5xx, 429 + Retry-After, malformed JSON and slot lag goes onto the next endpoint.
function Sim:cascade(period_ms, o)
  o = o or {}
  return post(self.urls[1] .. "/admin/cascade", cjson.encode{ period_ms = period_ms,
    retry_after = o.retry_after or 1, slot_lag = o.slot_lag or 300 })
end

--- One round of the cascade: `calls` critical getBalance calls at about
--- per_second, each in its own task. Returns the failed count, their errors
--- (code: message, at most 20), whether an endpoint was seen out of
--- rotation for slot lag meanwhile, and the longest gap between two 10 ms
--- pacing ticks (ms): when the host itself was stalled (a loaded machine),
--- calls in flight then time out whatever the pool does.
function M.cascade_round(pool, calls, per_second)
  local done, failed, errs, lagged, gap, last = 0, 0, {}, false, 0, nil
  local per_tick = math.max(1, math.floor(per_second / 100 + 0.5))
  local started = 0
  local function one(i)
    local r = pool:call("getBalance", { "Wallet" .. i }, { priority = "critical" })
    if not r.ok then
      failed = failed + 1
      if #errs < 20 then errs[#errs + 1] = r.error.code .. ": " .. tostring(r.error.message) end
    end
    done = done + 1
  end
  while started < calls do
    for _ = 1, math.min(per_tick, calls - started) do
      started = started + 1
      thorp.spawn(one, started)
    end
    for _, e in ipairs(pool.eps) do if e.unhealthy_reason == "slot_lag" then lagged = true end end
    local t = thorp.now()
    if last then gap = math.max(gap, t - last) end
    last = t
    thorp.sleep(10) -- pacing: the rate, not a wait for a condition
  end
  local deadline = thorp.now() + 10000
  while done < calls and thorp.now() < deadline do thorp.sleep(10) end
  assert(done == calls, ("cascade round: %d of %d calls came back"):format(done, calls))
  return failed, errs, lagged, gap
end

--- The cascade pool of issue 10: 3 endpoints, failure_threshold 3, cooldown 30 s, 400 ms.
function Sim:cascade_pool()
  return thorp.rpc.new_pool{ endpoints = self:endpoints(), timeout_ms = 400,
                             breaker = { failure_threshold = 3, cooldown_ms = 30000 } }
end

--- endpoints list for rpc.new_pool
function Sim:endpoints(names)
  local eps = {}
  for i, u in ipairs(self.urls) do
    eps[i] = { name = names and names[i] or ("ep" .. i), url = u, ws_url = self.ws_urls[i] }
  end
  return eps
end

return M
