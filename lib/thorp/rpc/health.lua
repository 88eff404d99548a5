-- thorp.rpc.health: every pool checks its endpoints in the background
-- (getSlot, processed) unless new_pool{ health = false }.
--
-- A failing endpoint (two checks in a row) or one lagging the reference slot
-- by more than max_slot_lag leaves rotation, and comes back after two good
-- checks (within half the allowed lag); a good check sent after a breaker
-- opened closes it, and one sent after a 429 ends the backoff, so recovery
-- needs no user traffic.
--
--   require("thorp.rpc.health").install(Pool, http_send)
--   -- adds pool:check_health(), pool:start_health(interval_ms, max_slot_lag), pool:stop_health()
local json = require "thorp.json"
local sched = require "thorp.sched"
local endpoint = require "thorp.rpc.endpoint"
local log = require("thorp.log").for_module("rpc")
local now = sched.now
local floor, min = math.floor, math.min

local H = {}

-- The reference slot: the upper median of the endpoints' fresh slots, so one
-- endpoint claiming a slot far ahead (or behind) cannot move it past an
-- honest neighbour's. It needs a quorum of 3 fresh slots (all of them in a
-- pool of 1 or 2, where the higher counts): with fewer, a liar and a laggard
-- look alike, and nil says no endpoint is judged on lag for now.
local function reference_slot(pool, t)
  local s = {}
  for _, e in ipairs(pool.eps) do
    if e.slot and t - e.slot_at < pool.health_interval_ms * 5 + 1000 then s[#s + 1] = e.slot end
  end
  if #s < min(3, #pool.eps) then return nil end
  table.sort(s, function(a, b) return a > b end)
  return s[floor((#s - 1) / 2) + 1]
end

local function health_result(pool, ep, res, sent_at)
  ep.health_pending = false
  if res.curl_code == 0 and res.http_status == 429 then return end -- rate-limited: alive, no verdict
  local doc = res.curl_code == 0 and res.http_status == 200 and json.decode(res.body)
  local slot = type(doc) == "table" and doc.id == 0 and doc.result
  if type(slot) ~= "number" or not (slot >= 0 and slot < 2 ^ 53) then
    ep.health_fails = ep.health_fails + 1
    ep.good_checks = 0
    if ep.health_fails >= 2 and ep.healthy then
      ep.healthy, ep.unhealthy_reason = false, "health_check_failed"
      ep.last_error = res.curl_code ~= 0 and res.error or ("health check: HTTP " .. res.http_status)
      log.warn("endpoint out of rotation: health checks failing", { endpoint = ep.name, error = ep.last_error })
      endpoint.publish_system("thorp.health", { endpoint = ep.name, healthy = false, reason = "health_check_failed" })
    end
    return
  end
  local t = now()
  ep.health_fails = 0
  ep.slot, ep.slot_at = slot, t
  -- a good check sent after the breaker opened closes it at once, and one sent
  -- after a 429 ends the backoff: recovery needs no user traffic and no cooldown
  if ep.breaker:state() ~= "CLOSED" and sent_at >= ep.breaker.s.opened_at then
    ep.breaker:reset()
    log.info("endpoint breaker closed by a good health check", { endpoint = ep.name })
  end
  if ep.backoff_until > t and sent_at >= ep.backoff_at then ep.backoff_until, ep.backoff_n = 0, 0 end
  local ref = reference_slot(pool, t)
  if not ref then return end
  for _, e in ipairs(pool.eps) do if e.slot then e.lag = ref - e.slot end end
  if ep.lag > pool.max_slot_lag then
    ep.good_checks = 0
    if ep.healthy or ep.unhealthy_reason ~= "slot_lag" then
      ep.healthy, ep.unhealthy_reason = false, "slot_lag"
      log.warn("endpoint out of rotation: behind the reference slot", { endpoint = ep.name, lag = ep.lag,
                                                                        max_slot_lag = pool.max_slot_lag })
      endpoint.publish_system("thorp.health", { endpoint = ep.name, healthy = false, lag = ep.lag, reason = "slot_lag" })
    end
  elseif not ep.healthy then
    -- hysteresis: back in only after two checks within half the allowed lag
    if ep.unhealthy_reason == "health_check_failed" or ep.lag <= pool.max_slot_lag / 2 then
      ep.good_checks = ep.good_checks + 1
      if ep.good_checks >= 2 then
        ep.healthy, ep.unhealthy_reason = true, nil
        log.info("endpoint back in rotation", { endpoint = ep.name, lag = ep.lag })
        endpoint.publish_system("thorp.health", { endpoint = ep.name, healthy = true, lag = ep.lag })
      end
    else
      ep.good_checks = 0
    end
  end
end

local SLOT_BODY = '{"jsonrpc":"2.0","id":0,"method":"getSlot","params":[{"commitment":"processed"}]}'

--- install(Pool, http_send): the health methods on the pool class; http_send is the transport
--- of lib/thorp/rpc.lua (url, body, timeout_ms, callback(res), headers) -> id | nil, err
function H.install(Pool, http_send)
  function Pool:check_health()
    for _, ep in ipairs(self.eps) do
      if not ep.health_pending then
        ep.health_pending = true
        local sent_at = now()
        local id = http_send(ep.url, SLOT_BODY, min(self.health_interval_ms * 2, ep.timeout_ms or 2000),
          function(res) health_result(self, ep, res, sent_at) end, ep.header_lines)
        if not id then ep.health_pending = false end
      end
    end
  end

  --- pool:start_health(interval_ms, max_slot_lag): poll getSlot in the background
  --- (new_pool does it unless health = false). The timer holds the pool weakly:
  --- a pool nobody references any more stops its checks when collected.
  function Pool:start_health(interval_ms, max_lag)
    self.health_interval_ms = interval_ms or 400
    self.max_slot_lag = max_lag or self.max_slot_lag
    self:stop_health()
    if self.health_interval_ms <= 0 then return end
    self:check_health()
    local ref = setmetatable({ self }, { __mode = "v" })
    local timer
    timer = sched.daemon_every(self.health_interval_ms, function()
      local p = ref[1]
      if p then p:check_health() else timer:cancel() end
    end, "rpc.health")
    self.health_timer = timer
  end

  function Pool:stop_health()
    if self.health_timer then self.health_timer:cancel(); self.health_timer = nil end
  end
end

return H
