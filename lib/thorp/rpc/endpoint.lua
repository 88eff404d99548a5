-- thorp.rpc.endpoint: one endpoint of an RPC pool, as the pool keeps it.
--
-- An endpoint record holds what the pool judges it by: its breaker, the last
-- 128 latencies (percentiles, the hedge delay) and a histogram for /metrics,
-- error counts by kind, 429 backoff, health (slot, lag, in or out of
-- rotation), the transfer slots in flight and the queue of attempts waiting
-- for one, and the methods the provider said it lacks (-32601).
--
--   local endpoint = require "thorp.rpc.endpoint"
--   endpoint.validate(list)              -- new_pool's endpoints, or an error
--   local ep = endpoint.new(pool, e, i)  -- e = { name, url, weight, timeout_ms, headers, max_inflight, ws_url }
--   endpoint.lat_add(ep, ms)  endpoint.percentiles(ep)  endpoint.hedge_delay(ep, pool)
--   endpoint.supports(ep, method, now_ms)
local breaker = require "thorp.breaker"
local config = require "thorp.config"
local log = require("thorp.log").for_module("rpc")
local C = require "thorp.cdef"
local floor, min, max = math.floor, math.min, math.max

local E = {}

local LAT_N = 128
-- histogram bounds (ms) for /metrics; the last bucket is +Inf
local LAT_BOUNDS = { 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000 }
E.LATENCY_BOUNDS = LAT_BOUNDS
function E.lat_add(ep, ms)
  ep.lat_i = ep.lat_i % LAT_N + 1
  ep.lat[ep.lat_i] = ms
  if ep.lat_n < LAT_N then ep.lat_n = ep.lat_n + 1 end
  local h = ep.hist
  local b = #LAT_BOUNDS + 1
  for i = 1, #LAT_BOUNDS do if ms <= LAT_BOUNDS[i] then b = i break end end
  h[b] = h[b] + 1
  ep.hist_sum, ep.hist_n = ep.hist_sum + ms, ep.hist_n + 1
  ep.hedge_age = ep.hedge_age + 1
end

function E.percentiles(ep)
  if ep.lat_n == 0 then return nil end
  local s = {}
  for i = 1, ep.lat_n do s[i] = ep.lat[i] end
  table.sort(s)
  local function p(q) return floor(s[max(1, math.ceil(q * #s))] * 10 + 0.5) / 10 end
  return { p50 = p(0.5), p90 = p(0.9), p99 = p(0.99), samples = #s }
end

-- 1.2x the endpoint's recent p90, recomputed every 32 answers (not per call)
function E.hedge_delay(ep, pool)
  if ep.lat_n < 10 then return pool.hedge_ms end
  if not ep.hedge_cached or ep.hedge_age >= 32 then
    local s = {}
    for i = 1, ep.lat_n do s[i] = ep.lat[i] end
    table.sort(s)
    ep.hedge_cached = min(max(s[math.ceil(0.9 * #s)] * 1.2, pool.hedge_min_ms), pool.hedge_ms * 5)
    ep.hedge_age = 0
  end
  return ep.hedge_cached
end

function E.publish_system(topic, event) require("thorp.bus").system(topic, event, "low") end

-- An endpoint's `headers` (providers that authenticate by header) as the
-- "Name: value" lines the transport sends; the values are secrets.
local function header_lines(h)
  if not h or next(h) == nil then return nil end
  local lines = {}
  for k, v in pairs(h) do lines[#lines + 1] = k .. ": " .. v end
  table.sort(lines)
  return table.concat(lines, "\n")
end

--- new(pool, e, i) -> ep: endpoint i of pool from its config entry e (validated)
function E.new(pool, e, i)
  local display = config.redact_url(e.url, e)
  local bopts = {}
  for k, v in pairs(pool.breaker_opts) do bopts[k] = v end
  bopts.name = e.name
  local ep = { name = e.name, url = e.url, display_url = display, weight = e.weight or 1, index = i,
               timeout_ms = e.timeout_ms, breaker = breaker.new(bopts), lat = {}, lat_i = 0, lat_n = 0,
               header_lines = header_lines(e.headers),
               hist = {}, hist_sum = 0, hist_n = 0, hedge_age = 0,
               inflight = 0, calls = 0, successes = 0, backoff_until = 0, backoff_at = 0, backoff_n = 0,
               healthy = true, health_fails = 0, good_checks = 0, queue = {}, qhead = 1, qtail = 0, nqueued = 0,
               max_inflight = e.max_inflight or pool.max_inflight, unsupported = {},
               errors = { TIMEOUT = 0, TRANSPORT_ERROR = 0, HTTP_ERROR = 0, RPC_ERROR = 0, BAD_RESPONSE = 0,
                          RATE_LIMITED = 0 } }
  for b = 1, #LAT_BOUNDS + 1 do ep.hist[b] = 0 end
  ep.ws_url = e.ws_url -- WebSocket subscriptions (lib/thorp/ws.lua)
  ep.breaker:on_change(function(_, from, to)
    local f = { endpoint = ep.name, from = from, to = to, last_error = ep.last_error }
    if to == "OPEN" then log.warn("endpoint breaker opened", f) else log.info("endpoint breaker " .. to, f) end
    E.publish_system("thorp.breaker", f)
  end)
  return ep
end

function E.check_inflight(v, where, level)
  local lim = C.thorp_pool_host_limit()
  if type(v) ~= "number" or v < 1 or v % 1 ~= 0 or v > lim then
    error(("%s: expected an integer in [1, %d] (curl's connections per host), got %s"):format(where, lim, tostring(v)),
      level + 1)
  end
end

--- validate(list): raises, naming the entry and what is allowed, unless list is a valid endpoints list
function E.validate(list)
  if type(list) ~= "table" or #list == 0 then
    error("rpc.new_pool: endpoints must be a non-empty list of { name =, url =, weight = }", 3)
  end
  local seen = {}
  for i, e in ipairs(list) do
    local w = ("rpc.new_pool: endpoints[%d]"):format(i)
    if type(e) ~= "table" then error(w .. ": expected a table { name =, url = }", 3) end
    if type(e.name) ~= "string" or e.name == "" then error(w .. ".name: expected a non-empty string", 3) end
    if seen[e.name] then error(w .. ".name: duplicate endpoint name " .. e.name, 3) end
    seen[e.name] = true
    if type(e.url) ~= "string" or not e.url:match("^https?://[^/]") then
      error(("%s.url (%s): expected an http:// or https:// URL"):format(w, config.redact_url(tostring(e.url))), 3)
    end
    if e.weight ~= nil and (type(e.weight) ~= "number" or e.weight <= 0) then
      error(w .. ".weight: expected a number > 0, got " .. tostring(e.weight), 3)
    end
    if e.timeout_ms ~= nil and (type(e.timeout_ms) ~= "number" or e.timeout_ms <= 0) then
      error(w .. ".timeout_ms: expected a number > 0, got " .. tostring(e.timeout_ms), 3)
    end
    if e.max_inflight ~= nil then E.check_inflight(e.max_inflight, w .. ".max_inflight", 3) end
    if e.ws_url ~= nil and (type(e.ws_url) ~= "string" or not e.ws_url:match("^wss?://[^/]")) then
      error(("%s.ws_url (%s): expected a ws:// or wss:// URL"):format(w, config.redact_url(tostring(e.ws_url))), 3)
    end
  end
end

E.UNSUPPORTED_MS = 600000 -- a provider's -32601 for a method is remembered this long

function E.supports(ep, method, t)
  local u = ep.unsupported[method]
  if not u then return true end
  if t - u < E.UNSUPPORTED_MS then return false end
  ep.unsupported[method] = nil
  return true
end

--- unsupported_methods(ep, now_ms) -> sorted names the provider said it lacks, still remembered
function E.unsupported_methods(ep, t)
  local m = {}
  for k, at in pairs(ep.unsupported) do if t - at < E.UNSUPPORTED_MS then m[#m + 1] = k end end
  table.sort(m)
  return m
end

return E
