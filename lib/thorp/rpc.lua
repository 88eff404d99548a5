-- thorp.rpc: the JSON-RPC pool over several Solana endpoints.
--
--   local r = thorp.rpc.call("getBalance", { pubkey }, { priority = "normal" })
--   if r.ok then use(r.result) else log(r.error.code, r.error.message) end
--   local pool = thorp.rpc.new_pool{ endpoints = { {name=, url=, weight=, timeout_ms=} },
--                                    breaker = {...}, backpressure = bp|opts, timeout_ms = n }
--   pool:call(method, params, opts)  pool:batch({ {method, params}, ... }, opts)  pool:endpoints()
--
-- A call yields its coroutine until the answer (host/pool.c moves the bytes
-- with libcurl multi on the loop). Per call: admission (priority), then the
-- endpoints in order (weight, highest first), skipping any whose breaker is
-- open, that is backed off after a 429, or that the health checker took out
-- of rotation (slot lag). Outcomes are classified: transport errors,
-- timeouts, 5xx, malformed answers and -32005 count against the endpoint;
-- a 429 backs it off (Retry-After or exponential) without counting; an RPC
-- error that is the caller's (invalid params, preflight -32002, ...) goes
-- back to the caller untouched; -32601 (method not found) is the provider's
-- limit: the next endpoint is asked and the gap remembered per (endpoint,
-- method). A failed call moves on to the next endpoint within its deadline
-- while the retry budget lasts; a critical call is never refused by the
-- budget, and before it fails, endpoints out of rotation (open breaker,
-- backed off, unhealthy) are probed. Submission methods (sendTransaction,
-- sendBundle, any named in methods.submit) are never hedged, batched or
-- re-sent on the pool's own initiative (opts.retry_send = true allows it)
-- unless the request provably never left; reads may be hedged: when the
-- first endpoint is slower than its own recent p90, a second one is asked
-- and the first answer wins. Each endpoint has at most max_inflight
-- transfers in curl; further attempts wait in the endpoint's queue, and the
-- endpoint is judged only on the time it was really asked. Every pool
-- checks its endpoints in the background unless health = false.
local ffi = require "ffi"
local json = require "thorp.json" -- RPC bodies: lossless u64, thorp.json.null
local sched = require "thorp.sched"
local breaker = require "thorp.breaker"
local config = require "thorp.config"
local logm = require "thorp.log"
local metrics = require "thorp.metrics"
local log = logm.for_module("rpc")

local C = require "thorp.cdef"
local now = sched.now
local cached_now = sched.cached_now -- the clock at the start of this loop turn: for comparisons, not for judging
local floor, min, max = math.floor, math.min, math.max

local M = {}
local PRIORITIES = { critical = true, normal = true, low = true }
local method_priorities = {} -- policy: method -> priority
M.stats_total = { calls = 0, ok = 0, failed = 0, retries = 0, hedges = 0, hedge_wins = 0, rejected = 0,
                  shed_shutdown = 0 }
local T = M.stats_total

-- Transport ------------------------------------------------------------------

local waiting = {} -- request id -> the attempt waiting for it, or a callback(res)
local errbuf = ffi.new("char[256]")
local RESULT_PTR = ffi.typeof("thorp_http_result *")
local deliver -- (att, res), below

sched.on_event(sched.EV.RPC, function(ev)
  local r = ffi.cast(RESULT_PTR, ev.ptr)
  local id = tonumber(ev.id)
  local w = waiting[id]
  local res
  if w then
    waiting[id] = nil
    local code = r.curl_code
    res = { curl_code = code, http_status = r.http_status, retry_after_ms = r.retry_after_ms,
            total_ms = r.total_ms, sent = r.sent ~= 0,
            body = r.body_len > 0 and ffi.string(r.body, r.body_len) or "", error = code ~= 0 and ffi.string(r.error) or "" }
  end
  C.thorp_pool_result_free(r)
  if w then
    if type(w) == "function" then w(res)
    else w.id = nil; deliver(w, res) end
  end
end)

-- waiter: the attempt (a table, given to deliver) or a callback(res);
-- headers: an endpoint's own "Name: value" lines (config `headers`), or nil
local function http_send(url, body, timeout_ms, waiter, headers)
  local id = C.thorp_pool_request_headers(url, body, #body, timeout_ms, min(timeout_ms, 3000), headers, errbuf, 256)
  if id < 0 then return nil, ffi.string(errbuf) end
  id = tonumber(id)
  waiting[id] = waiter
  return id
end

local function http_cancel(id)
  if waiting[id] then
    waiting[id] = nil
    C.thorp_pool_cancel(id)
  end
end

-- Endpoints ------------------------------------------------------------------

local LAT_N = 128
-- histogram bounds (ms) for /metrics; the last bucket is +Inf
local LAT_BOUNDS = { 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000 }
M.LATENCY_BOUNDS = LAT_BOUNDS
local function lat_add(ep, ms)
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

local function percentiles(ep)
  if ep.lat_n == 0 then return nil end
  local s = {}
  for i = 1, ep.lat_n do s[i] = ep.lat[i] end
  table.sort(s)
  local function p(q) return floor(s[max(1, math.ceil(q * #s))] * 10 + 0.5) / 10 end
  return { p50 = p(0.5), p90 = p(0.9), p99 = p(0.99), samples = #s }
end

-- 1.2x the endpoint's recent p90, recomputed every 32 answers (not per call)
local function hedge_delay(ep, pool)
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

local function publish_system(topic, event) require("thorp.bus").system(topic, event, "low") end

-- An endpoint's `headers` (providers that authenticate by header) as the
-- "Name: value" lines the transport sends; the values are secrets.
local function header_lines(h)
  if not h or next(h) == nil then return nil end
  local lines = {}
  for k, v in pairs(h) do lines[#lines + 1] = k .. ": " .. v end
  table.sort(lines)
  return table.concat(lines, "\n")
end

local function new_endpoint(pool, e, i)
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
    publish_system("thorp.breaker", f)
  end)
  return ep
end

local function check_inflight(v, where, level)
  local lim = C.thorp_pool_host_limit()
  if type(v) ~= "number" or v < 1 or v % 1 ~= 0 or v > lim then
    error(("%s: expected an integer in [1, %d] (curl's connections per host), got %s"):format(where, lim, tostring(v)),
      level + 1)
  end
end

local function validate_endpoints(list)
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
    if e.max_inflight ~= nil then check_inflight(e.max_inflight, w .. ".max_inflight", 3) end
    if e.ws_url ~= nil and (type(e.ws_url) ~= "string" or not e.ws_url:match("^wss?://[^/]")) then
      error(("%s.ws_url (%s): expected a ws:// or wss:// URL"):format(w, config.redact_url(tostring(e.ws_url))), 3)
    end
  end
end

-- Method routing (policy `methods` section, or new_pool{ methods = ... }) ------

-- Submission methods: never hedged, batched or re-sent by the pool.
local SUBMIT = { sendTransaction = true, sendBundle = true }
local routes, policy_submit = {}, {} -- from the policy: method -> { endpoints set, timeout_ms, priority }
local ROUTE_KEYS = { endpoints = true, timeout_ms = true, priority = true }

--- validate_methods(m, where, endpoint_names_set|nil) -> { errors }
function M.validate_methods(m, where, eps)
  local errs = {}
  local function err(fmt, ...) errs[#errs + 1] = (fmt):format(...) end
  if type(m) ~= "table" then
    return { where .. ": expected a table { METHOD = { endpoints =, timeout_ms =, priority = }, submit = { ... } }" }
  end
  for k, r in pairs(m) do
    local w = where .. "." .. tostring(k)
    if type(k) ~= "string" then err("%s: method names must be strings", where)
    elseif k == "submit" then
      if type(r) ~= "table" then err("%s: expected a list of method names", w)
      else
        for i, name in pairs(r) do
          if type(i) ~= "number" or type(name) ~= "string" or name == "" then
            err("%s: expected a list of method names, got %s = %s", w, tostring(i), tostring(name))
          end
        end
      end
    elseif type(r) ~= "table" then err("%s: expected { endpoints = { NAME, ... }, timeout_ms = n, priority = p }", w)
    else
      for key in pairs(r) do
        if not ROUTE_KEYS[key] then err("%s: unknown key %s (allowed: endpoints, priority, timeout_ms)", w, tostring(key)) end
      end
      if r.endpoints ~= nil then
        if type(r.endpoints) ~= "table" or #r.endpoints == 0 then
          err("%s.endpoints: expected a non-empty list of endpoint names", w)
        else
          for _, name in ipairs(r.endpoints) do
            if type(name) ~= "string" then err("%s.endpoints: expected endpoint names, got %s", w, tostring(name))
            elseif eps and not eps[name] then
              local have = {}
              for n in pairs(eps) do have[#have + 1] = n end
              table.sort(have)
              err("%s.endpoints: no endpoint named %s (configured: %s)", w, name, table.concat(have, ", "))
            end
          end
        end
      end
      if r.timeout_ms ~= nil and (type(r.timeout_ms) ~= "number" or not (r.timeout_ms > 0 and r.timeout_ms < 1e9)) then
        err("%s.timeout_ms = %s: allowed a number of ms > 0", w, tostring(r.timeout_ms))
      end
      if r.priority ~= nil and not PRIORITIES[r.priority] then
        err("%s.priority = %s: allowed \"critical\", \"normal\", \"low\"", w, tostring(r.priority))
      end
    end
  end
  return errs
end

-- { method = route }, { method = true } from a validated methods table
local function compile_methods(m)
  local r, sub = {}, {}
  for k, v in pairs(m or {}) do
    if k == "submit" then
      for _, name in ipairs(v) do sub[name] = true end
    else
      local set
      if v.endpoints then
        set = {}
        for _, name in ipairs(v.endpoints) do set[name] = true end
      end
      r[k] = { endpoints = set, timeout_ms = v.timeout_ms, priority = v.priority }
    end
  end
  return r, sub
end

--- set_methods(m): the policy's `methods` section (validated by policy.lua).
function M.set_methods(m)
  local errs = M.validate_methods(m or {}, "methods")
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  routes, policy_submit = compile_methods(m)
end

local function route_of(pool, method) return pool.routes[method] or routes[method] end
local function is_submit(pool, method) return SUBMIT[method] or policy_submit[method] or pool.submit[method] or false end
M.is_submit = function(method, pool) return is_submit(pool or { submit = {} }, method) end

-- Pool -------------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool

function M.new_pool(opts)
  if type(opts) ~= "table" then error("rpc.new_pool: expected a table of options", 2) end
  validate_endpoints(opts.endpoints)
  local errs = breaker.validate(opts.breaker or {}, "rpc.new_pool: breaker")
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  local ab = opts.auto_batch
  if ab ~= nil and ab ~= true and ab ~= false and not (type(ab) == "number" and ab >= 2 and ab % 1 == 0) then
    error("rpc.new_pool: auto_batch must be true, false or a maximum batch size >= 2, got " .. tostring(ab), 2)
  end
  if opts.max_inflight ~= nil then check_inflight(opts.max_inflight, "rpc.new_pool: max_inflight", 2) end
  for _, k in ipairs{ "health_interval_ms", "max_retry_after_ms", "max_slot_lag", "max_queued" } do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or not (v >= 0 and v < 1e12)) then
      error(("rpc.new_pool: %s: expected a number >= 0, got %s"):format(k, tostring(v)), 2)
    end
  end
  if opts.health ~= nil and type(opts.health) ~= "boolean" then
    error("rpc.new_pool: health: expected true or false, got " .. tostring(opts.health), 2)
  end
  local names = {}
  for _, e in ipairs(opts.endpoints) do names[e.name] = true end
  if opts.methods ~= nil then
    local errs2 = M.validate_methods(opts.methods, "rpc.new_pool: methods", names)
    if #errs2 > 0 then error(table.concat(errs2, "; "), 2) end
  end
  local bp = opts.backpressure
  if type(bp) == "table" and not bp.admit then bp = require("thorp.backpressure").new(bp) end
  local proutes, psubmit = compile_methods(opts.methods)
  local pool = setmetatable({
    name = opts.name or "pool", timeout_ms = opts.timeout_ms or 5000, breaker_opts = opts.breaker or {},
    bp = bp or nil, eps = {}, by_name = {}, hedge = opts.hedge ~= false,
    hedge_ms = opts.hedge_ms or 250, hedge_min_ms = opts.hedge_min_ms or 20,
    retry_tokens = 10, retry_max = opts.retry_budget or 10, retry_ratio = opts.retry_ratio or 0.2,
    max_slot_lag = opts.max_slot_lag or 20, priorities = opts.priorities or {},
    auto_batch = opts.auto_batch and (opts.auto_batch == true and 100 or opts.auto_batch) or nil,
    max_retry_after_ms = opts.max_retry_after_ms or 30000, max_inflight = opts.max_inflight or 64,
    max_queued = opts.max_queued, routes = proutes, submit = psubmit,
  }, Pool)
  for i, e in ipairs(opts.endpoints) do
    local ep = new_endpoint(pool, e, i)
    pool.eps[i] = ep
    pool.by_name[ep.name] = ep
  end
  pool.order = {}
  for i, ep in ipairs(pool.eps) do pool.order[i] = ep end
  table.sort(pool.order, function(a, b) return a.weight > b.weight or (a.weight == b.weight and a.index < b.index) end)
  if opts.health ~= false then pool:start_health(opts.health_interval_ms or 400, opts.max_slot_lag) end
  return pool
end

function Pool:configure_breakers(policy)
  for _, ep in ipairs(self.eps) do
    local o = {}
    for k, v in pairs(self.breaker_opts) do o[k] = v end
    for k, v in pairs(policy.default or {}) do o[k] = v end
    for k, v in pairs((policy.endpoints or {})[ep.name] or {}) do o[k] = v end
    o.name = nil
    ep.breaker:configure(o)
  end
end

local UNSUPPORTED_MS = 600000 -- a provider's -32601 for a method is remembered this long

local function supports(ep, method, t)
  local u = ep.unsupported[method]
  if not u then return true end
  if t - u < UNSUPPORTED_MS then return false end
  ep.unsupported[method] = nil
  return true
end

-- The next endpoint to ask, or nil: in order, skipping tried, open, backed
-- off, unhealthy, not routed for the method or lacking it; one with a free
-- transfer slot before one where the attempt would queue. A critical call
-- (or the first attempt of any) that finds none probes the least bad one.
local function pick(pool, call)
  local t = cached_now()
  if call.pin then
    local ep = call.pin
    if call.tried[ep] then return nil end
    if ep.breaker:allow() then return ep end
    call.failures[#call.failures + 1] = { endpoint = ep.name, code = "CIRCUIT_OPEN", message = ep.name .. ": circuit open" }
    return nil
  end
  local allowed, method = call.allowed, call.method
  local any_healthy = false
  for _, ep in ipairs(pool.order) do if ep.healthy then any_healthy = true break end end
  local queue_on
  for _, ep in ipairs(pool.order) do
    if not call.tried[ep] and (not allowed or allowed[ep.name]) and ep.backoff_until <= t
       and (ep.healthy or not any_healthy) and supports(ep, method, t) and ep.breaker:state() ~= "OPEN" then
      if ep.inflight < ep.max_inflight then
        if ep.breaker:allow() then return ep end
      elseif call.critical or ep.nqueued < (pool.max_queued or 4 * ep.max_inflight) then
        queue_on = queue_on or ep
      else
        call.saturated = true
      end
    end
  end
  if queue_on and queue_on.breaker:allow() then return queue_on end
  if call.saturated and not call.critical then return nil end
  if call.attempts > 0 and not call.critical then return nil end
  local best, score
  for _, ep in ipairs(pool.order) do
    if not call.tried[ep] and (not allowed or allowed[ep.name]) and supports(ep, method, t) then
      local s = ep.breaker:retry_in() + max(0, ep.backoff_until - t) + (ep.healthy and 0 or 1000)
      if not best or s < score then best, score = ep, s end
    end
  end
  call.probe = best
  return best
end

-- a call's request id (logs only): made the first time a log line needs it
local function rid_of(req)
  local r = req.rid
  if not r then r = logm.request_id(); req.rid = r end
  return r
end

local function fail(code, message, extra)
  local e = extra or {}
  e.code, e.message = code, message
  return { ok = false, error = e }
end

-- curl codes that prove the request never left: proxy or host not resolved, could not connect
local NOT_SENT = { [5] = true, [6] = true, [7] = true }
local ENDPOINT_RPC_FAULTS = { [-32005] = true, [-32603] = true }
local NULL = json.null

-- why d is not a sane JSON-RPC answer to request id (nil when it is), and its error object
local function insane(d, id)
  if type(d) ~= "table" then return "not a JSON object" end
  if d[1] ~= nil then return "an array where one answer was expected" end
  if d.id ~= id then return ("wrong id %s (asked %s)"):format(tostring(d.id), tostring(id)) end
  local e = d.error
  if e == NULL then e = nil end
  local has_result = d.result ~= nil
  if has_result == (e ~= nil) then return has_result and "both result and error" or "neither result nor error" end
  if e ~= nil and (type(e) ~= "table" or type(e.code) ~= "number") then
    return "error is not an object with a numeric code"
  end
  return nil, e
end

local function bad_response(ep, res, why)
  ep.errors.BAD_RESPONSE = ep.errors.BAD_RESPONSE + 1
  ep.breaker:failure()
  return nil, { code = "BAD_RESPONSE", endpoint = ep.name,
                message = ("%s: malformed JSON-RPC answer: %s (%d bytes)"):format(ep.name, why, #res.body) }, true, true
end

-- a 429: back off for Retry-After (clamped to max_retry_after_ms) or exponentially
local function back_off(pool, ep, retry_after, t)
  local cap = pool.max_retry_after_ms
  local ms = retry_after and retry_after >= 0 and min(retry_after, cap) or min(cap, 250 * 2 ^ min(ep.backoff_n, 16))
  ep.backoff_n = ep.backoff_n + 1
  ep.backoff_until, ep.backoff_at = t + ms, t
  ep.errors.RATE_LIMITED = ep.errors.RATE_LIMITED + 1
  ep.breaker:neutral()
  return floor(ms)
end

-- the time an attempt must have had before its silence counts against the endpoint
local function fair_ms(att) return min(att.call.fair_ms, att.ep.timeout_ms or math.huge) - 1 end

-- classify one answer: returns result table (ok) or nil, err, retry, maybe_sent
local function classify(pool, ep, res, req, att)
  local t = now()
  if res.curl_code ~= 0 then
    local code = res.curl_code == 28 and "TIMEOUT" or "TRANSPORT_ERROR"
    ep.errors[code] = ep.errors[code] + 1
    -- a local failure, or a deadline too short to judge the endpoint by, is no verdict on it
    if res.curl_code < 0 or (code == "TIMEOUT" and att and att.timeout < fair_ms(att)) then ep.breaker:neutral()
    else ep.breaker:failure() end
    return nil, { code = code, endpoint = ep.name, message = ("%s: %s"):format(ep.name, res.error) },
      true, res.sent and not NOT_SENT[res.curl_code]
  end
  local status = res.http_status
  if status == 429 then
    local ms = back_off(pool, ep, res.retry_after_ms, t)
    log.warn("endpoint rate-limited, backing off", { endpoint = ep.name, backoff_ms = ms, request_id = rid_of(req) })
    return nil, { code = "HTTP_ERROR", http_status = 429, retry_after_ms = ms, endpoint = ep.name,
                  message = ("%s: rate limited (429), backing off %d ms"):format(ep.name, ms) }, true, true
  end
  if status ~= 200 then
    ep.errors.HTTP_ERROR = ep.errors.HTTP_ERROR + 1
    ep.breaker:failure()
    -- any 5xx (a proxy's 502/503/504 too) may come after the upstream got the request
    return nil, { code = "HTTP_ERROR", http_status = status, endpoint = ep.name,
                  message = ("%s: HTTP %d"):format(ep.name, status) }, true, true
  end
  ep.backoff_n = 0
  local doc = json.decode(res.body)
  local e
  if req.batch then
    if type(doc) ~= "table" or doc[1] == nil then return bad_response(ep, res, "not an array of answers") end
    local asked = {}
    for _, id in ipairs(req.ids) do asked[id] = true end
    for _, d in ipairs(doc) do
      local why = insane(d, type(d) == "table" and asked[d.id] and d.id or {})
      if why then return bad_response(ep, res, "batch element: " .. why) end
    end
  else
    local why
    why, e = insane(doc, req.id)
    if why then return bad_response(ep, res, why) end
  end
  if e then
    local code = e.code
    if code == 429 or code == -32429 then -- rate limit reported inside a 200
      local ms = back_off(pool, ep, nil, t)
      return nil, { code = "HTTP_ERROR", http_status = 429, retry_after_ms = ms, endpoint = ep.name,
                    message = ep.name .. ": rate limited" }, true, false
    end
    ep.errors.RPC_ERROR = ep.errors.RPC_ERROR + 1
    local err = { code = "RPC_ERROR", rpc_code = code, data = e.data, endpoint = ep.name, raw = res.body,
                  message = ("%s: %s"):format(ep.name, tostring(e.message)) }
    if code == -32601 then -- this provider lacks the method: remember it, ask the next one
      ep.unsupported[req.method] = t
      ep.breaker:neutral()
      log.info("endpoint lacks a method: routing it elsewhere", { endpoint = ep.name, method = req.method })
      return nil, err, true, false
    end
    if ENDPOINT_RPC_FAULTS[code] then
      ep.breaker:failure()
      return nil, err, true, code ~= -32005 -- "node is unhealthy" refuses before sending
    end
    ep.breaker:neutral() -- the caller's problem, not the endpoint's
    return nil, err, false, true
  end
  local probe = att and att.probe
  if probe and ep.breaker:state() ~= "CLOSED" then
    ep.breaker:reset()
    log.info("endpoint answered a probe: breaker closed", { endpoint = ep.name })
  else
    ep.breaker:success()
  end
  if probe then ep.backoff_until = 0 end
  ep.successes = ep.successes + 1
  lat_add(ep, res.total_ms)
  if req.batch then
    local by_id, results = {}, {}
    for j, d in ipairs(doc) do by_id[d.id] = j end
    -- each element's own bytes, for callers that pass answers on unchanged
    local spans = req.raw_elements and require("thorp.http")._elements(res.body)
    for i, id in ipairs(req.ids) do
      local j = by_id[id]
      local d = j and doc[j]
      local de = d and d.error ~= NULL and d.error
      if not d then results[i] = fail("BAD_RESPONSE", "no answer for this request in the batch")
      elseif de then
        results[i] = fail("RPC_ERROR", tostring(de.message), { rpc_code = de.code, data = de.data })
      else results[i] = { ok = true, result = d.result } end
      if spans and j and spans[j] then
        local raw = res.body:sub(spans[j][1], spans[j][2])
        if results[i].ok then results[i].raw = raw else results[i].error.raw = raw end
      end
    end
    return { ok = true, results = results, endpoint = ep.name, latency_ms = res.total_ms, raw = res.body,
             ids = req.ids }
  end
  -- raw: the answer's bytes, for callers that pass it on unchanged (the front door)
  return { ok = true, result = doc.result, endpoint = ep.name, latency_ms = res.total_ms, raw = res.body }
end
M._classify = classify -- for the fuzz harness (tests/fuzz/rpc_answer.lua)

local function wake_call(call)
  if call.waiting then
    call.waiting = false
    sched.wake(call.task, nil, call.token)
  end
end

function deliver(att, res)
  att.res = res
  local call = att.call
  call.mail[#call.mail + 1] = att
  wake_call(call)
end

-- Send an attempt now; its clock (what the endpoint is judged on) starts here.
local function dispatch(att)
  local call, ep = att.call, att.ep
  local t = now()
  local budget = call.deadline - t
  att.timeout = ep.timeout_ms and min(ep.timeout_ms, budget) or budget
  local id, err = http_send(ep.url, att.req.body, att.timeout, att, ep.header_lines)
  if not id then
    deliver(att, { curl_code = -1, http_status = 0, error = err, sent = false, body = "", total_ms = 0 })
    return
  end
  att.id, att.started = id, t
  ep.inflight = ep.inflight + 1
end

-- A transfer slot of ep is free again: start the attempt queued longest, if it still has time.
local function pump(ep)
  local q = ep.queue
  while ep.inflight < ep.max_inflight and ep.qhead <= ep.qtail do
    local att = q[ep.qhead]
    q[ep.qhead] = nil
    ep.qhead = ep.qhead + 1
    if att.queued then
      att.queued = false
      ep.nqueued = ep.nqueued - 1
      if att.call.deadline - now() > 1 then dispatch(att) end
    end
  end
end

local function launch(_pool, call, ep, req)
  call.tried[ep] = true
  call.attempts = call.attempts + 1
  ep.calls = ep.calls + 1
  local att = { call = call, ep = ep, req = req, probe = call.probe == ep }
  call.probe = nil
  call.inflight[att] = true
  call.n_inflight = call.n_inflight + 1
  call.first = call.first or ep
  if ep.inflight < ep.max_inflight then
    dispatch(att)
  else -- every transfer slot of ep is taken: wait in its queue, unjudged
    att.queued = true
    ep.nqueued = ep.nqueued + 1
    ep.qtail = ep.qtail + 1
    ep.queue[ep.qtail] = att
  end
  if logm.enabled("debug") then
    log.debug("rpc request", { request_id = rid_of(req), endpoint = ep.name, method = req.method, attempt = call.attempts,
                               queued = att.queued })
  end
end

-- an attempt is over (answered or cancelled): free its slot for the queue
local function release(att)
  local ep = att.ep
  if att.started and not att.released then
    att.released = true
    ep.inflight = ep.inflight - 1
    pump(ep)
  end
end

-- Stop the attempts still in flight. verdict: "timeout" (the call's deadline
-- passed: each that had a fair time counts as a timeout), "lost" (another
-- endpoint answered: an attempt older than its hedge delay counts as a
-- timeout, so an endpoint that hangs opens its breaker instead of costing
-- every call a hedge delay), or nil (no verdict on the endpoint). Attempts
-- still queued were never asked: no verdict.
local function cancel_all(call, verdict, pool)
  local t = now()
  local cancelled = {}
  for att in pairs(call.inflight) do
    local ep = att.ep
    if att.queued then
      att.queued = false
      ep.nqueued = ep.nqueued - 1
      ep.breaker:neutral()
    elseif att.id then
      http_cancel(att.id)
      att.id = nil
      local ran = t - att.started
      if (verdict == "timeout" and ran >= fair_ms(att)) or (verdict == "lost" and ran >= hedge_delay(ep, pool)) then
        ep.errors.TIMEOUT = ep.errors.TIMEOUT + 1
        ep.last_error = ep.name .. ": no answer in time"
        ep.breaker:failure()
      else
        ep.breaker:neutral()
      end
    else -- answered, but the call is over before it read the answer
      ep.breaker:neutral()
    end
    cancelled[#cancelled + 1] = att -- release() frees a transfer slot only if it took one
    call.inflight[att] = nil
  end
  call.n_inflight = 0
  -- the freed slots go to other calls' queued attempts, now that none of this call's can restart
  for _, att in ipairs(cancelled) do release(att) end
end

-- the next answer, or nil once the clock reaches until_ms
local function wait(call, until_ms)
  local mail = call.mail
  while mail[1] == nil do
    if until_ms - now() <= 0 then return nil end
    local tok = sched.token(call.task)
    call.token = tok
    call.waiting = true
    sched.suspend_until(until_ms, tok)
    call.waiting = false
  end
  return table.remove(mail, 1)
end

local function summarize(failures)
  local parts = {}
  for _, f in ipairs(failures) do parts[#parts + 1] = f.message or (f.endpoint .. ": " .. f.code) end
  return table.concat(parts, "; ")
end

local function all_unsupported(pool, call)
  local t = now()
  for _, ep in ipairs(pool.order) do
    if (not call.allowed or call.allowed[ep.name]) and supports(ep, call.method, t) then return false end
  end
  return true
end

-- task: the running task when the caller has it at hand (sched.current() is not free)
function Pool:_execute(req, opts, task)
  local tmo = opts.timeout_ms or self.timeout_ms
  local call = { task = task or sched.current(), mail = {}, tried = {}, failures = {}, attempts = 0, inflight = {},
                 n_inflight = 0, deadline = now() + tmo, fair_ms = tmo * 0.5, method = req.method,
                 critical = req.priority == "critical", allowed = opts._allowed }
  if opts.endpoint then
    call.pin = self.by_name[opts.endpoint]
    if not call.pin then
      local names = {}
      for _, ep in ipairs(self.eps) do names[#names + 1] = ep.name end
      return fail("ALL_ENDPOINTS_FAILED", ("no endpoint named %s (have: %s)"):format(opts.endpoint,
        table.concat(names, ", ")))
    end
  end
  local resend_ok = req.idempotent or opts.retry_send
  local hedging = self.hedge and req.idempotent and opts.hedge ~= false and not call.pin and #self.eps > 1
  self.retry_tokens = min(self.retry_max, self.retry_tokens + self.retry_ratio)
  local last_err, free_retry
  while true do
    if call.n_inflight == 0 then
      if call.attempts > 0 and not call.critical and not free_retry and self.retry_tokens < 1 then
        -- the budget stops retry storms; it never refuses a critical call an endpoint it has not tried
        last_err.message = last_err.message .. " (retry budget exhausted)"
        break
      end
      local ep = pick(self, call)
      if not ep then break end
      if call.attempts > 0 then
        if not free_retry and not call.critical then self.retry_tokens = max(0, self.retry_tokens - 1) end
        T.retries = T.retries + 1
      end
      free_retry = false
      launch(self, call, ep, req)
    end
    -- hedge no later than a quarter into the deadline, so the second endpoint has most of it
    local hedge_at = hedging and not call.hedged and call.n_inflight == 1
      and (now() + min(hedge_delay(call.first, self), tmo * 0.25))
    local att = wait(call, hedge_at and min(hedge_at, call.deadline) or call.deadline)
    if not att then
      if now() >= call.deadline then
        cancel_all(call, "timeout", self)
        local msg = ("no answer within %d ms"):format(tmo)
        if #call.failures > 0 then msg = msg .. " (" .. summarize(call.failures) .. ")" end
        return fail("TIMEOUT", msg, { failures = call.failures, attempts = call.attempts })
      end
      call.hedged = true
      local ep = pick(self, call)
      if ep then
        T.hedges = T.hedges + 1
        log.debug("rpc hedged", { request_id = rid_of(req), endpoint = ep.name, method = req.method })
        launch(self, call, ep, req)
      end
    else
      call.inflight[att] = nil
      call.n_inflight = call.n_inflight - 1
      release(att)
      local ok_res, err, retry, maybe_sent = classify(self, att.ep, att.res, req, att)
      if ok_res then
        if call.hedged and att.ep ~= call.first then T.hedge_wins = T.hedge_wins + 1 end
        cancel_all(call, "lost", self)
        ok_res.attempts = call.attempts
        return ok_res
      end
      att.ep.last_error = err.message
      call.failures[#call.failures + 1] = err
      last_err = err
      free_retry = err.rpc_code == -32601
      log.warn("rpc attempt failed", { request_id = rid_of(req), endpoint = att.ep.name, method = req.method,
                                       code = err.code, error = err.message })
      if not retry or (maybe_sent and not resend_ok) or call.pin then
        if call.n_inflight == 0 then
          err.attempts = call.attempts
          return { ok = false, error = err }
        end
      end
    end
  end
  cancel_all(call)
  if call.attempts == 0 then
    if call.saturated then
      return fail("BACKPRESSURE_REJECTED", ("%s call refused: every endpoint's transfer queue is full"):format(
        req.priority), { reason = "TRANSPORT_SATURATED", priority = req.priority, utilization = 100 })
    end
    if not call.pin and all_unsupported(self, call) then
      return fail("RPC_ERROR", ("method %s not found on any endpoint%s"):format(req.method,
        call.allowed and " it is routed to" or ""), { rpc_code = -32601, attempts = 0 })
    end
  end
  if #call.failures == 0 then
    return fail("ALL_ENDPOINTS_FAILED", "no endpoint available (all circuits open, rate-limited or unhealthy)",
      { failures = {}, attempts = call.attempts })
  end
  local missing = true
  for _, f in ipairs(call.failures) do if f.rpc_code ~= -32601 then missing = false break end end
  if last_err and (missing or (#call.failures == 1 and call.attempts == 1)) then
    last_err.attempts = call.attempts
    return { ok = false, error = last_err }
  end
  return fail("ALL_ENDPOINTS_FAILED", "all endpoints failed: " .. summarize(call.failures),
    { failures = call.failures, attempts = call.attempts })
end
local next_id = 0
local function shutting_down()
  local s = package.loaded["thorp.shutdown"]
  return s and s.is_shutting_down()
end

function Pool:_admit_and_run(req, prio, opts)
  local task = sched.current()
  if not task then error("rpc: call it from a coroutine (thorp.spawn, a handler, or a script)", 3) end
  T.calls = T.calls + 1
  if prio ~= "critical" and shutting_down() then
    T.shed_shutdown = T.shed_shutdown + 1
    return fail("SHUTTING_DOWN", "shutdown in progress: only critical calls are sent")
  end
  local bp = self.bp
  if bp then
    local ok, reason, util = bp:admit(prio)
    if not ok then
      T.rejected = T.rejected + 1
      return fail("BACKPRESSURE_REJECTED", ("%s call refused: %s at %d%% utilization"):format(prio, reason, util),
        { reason = reason, utilization = util, priority = prio })
    end
  end
  req.priority = prio
  local ok, res
  if self.auto_batch and req.idempotent and not req.batch and not opts.endpoint and not opts._allowed
     and opts.batch ~= false then
    ok, res = pcall(self._batched, self, req, opts)
  else
    ok, res = pcall(self._execute, self, req, opts, task)
  end
  if bp then bp:release(prio) end
  if not ok then error(res, 0) end
  if res.ok then T.ok = T.ok + 1 else T.failed = T.failed + 1 end
  return res
end

-- Auto-batching: reads made in the same loop turn go upstream as one JSON-RPC
-- batch (fewer HTTP requests, less per-call overhead). Each call keeps its own
-- admission and gets its own answer; the batch fails over as a unit.
local function flush_batch(pool, q)
  if pool.bq == q then pool.bq = nil end
  if #q == 1 then
    local e = q[1]
    local ok, res = pcall(pool._execute, pool, e.req, e.opts)
    sched.wake(e.task, ok and res or fail("BAD_RESPONSE", tostring(res)), e.tok)
    return
  end
  local rank = { low = 1, normal = 2, critical = 3 }
  local bodies, ids, deadline, prio = {}, {}, math.huge, "low"
  for i, e in ipairs(q) do
    bodies[i], ids[i] = e.req.body, e.req.id
    deadline = min(deadline, e.opts.timeout_ms or pool.timeout_ms)
    if rank[e.req.priority] > rank[prio] then prio = e.req.priority end
  end
  T.auto_batches = (T.auto_batches or 0) + 1
  local breq = { body = "[" .. table.concat(bodies, ",") .. "]", batch = true, ids = ids, idempotent = true,
                 raw_elements = true, method = "auto-batch(" .. #q .. ")", rid = logm.request_id(), priority = prio }
  local ok, res = pcall(pool._execute, pool, breq, { timeout_ms = deadline })
  if not ok then res = fail("BAD_RESPONSE", tostring(res)) end
  for i, e in ipairs(q) do
    local r = res
    if res.ok then
      r = res.results[i]
      r.endpoint, r.latency_ms, r.attempts, r.batched = res.endpoint, res.latency_ms, res.attempts, #q
    end
    sched.wake(e.task, r, e.tok)
  end
end

function Pool:_batched(req, opts)
  local q = self.bq
  if not q or #q >= self.auto_batch then
    q = {}
    self.bq = q
    sched.spawn_opts({ daemon = true, name = "rpc.batch" }, flush_batch, self, q)
  end
  local task = sched.current()
  q[#q + 1] = { req = req, opts = opts, task = task, tok = sched.token(task) }
  return sched.suspend()
end

-- opts with a method route applied: its endpoints (those of this pool), timeout and priority
-- as defaults under what the caller passed
local function routed(pool, route, opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.timeout_ms = o.timeout_ms or route.timeout_ms
  o.priority = o.priority or route.priority
  if route.endpoints and not o.endpoint then
    for name in pairs(route.endpoints) do
      if pool.by_name[name] then o._allowed = route.endpoints break end
    end
  end
  return o
end

-- a method name as a JSON string, kept for the first few hundred names (the
-- front door passes on whatever names its clients send)
local method_json, n_method_json = {}, 0
local function quoted(method)
  local q = method_json[method]
  if not q then
    q = json.encode(method)
    if n_method_json < 512 then n_method_json, method_json[method] = n_method_json + 1, q end
  end
  return q
end

local function check_opts(opts, where)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error(where .. ": opts must be a table", 3) end
  if opts.priority ~= nil and not PRIORITIES[opts.priority] then
    error(("%s: priority must be \"critical\", \"normal\" or \"low\", got %s"):format(where, tostring(opts.priority)), 3)
  end
  if opts.timeout_ms ~= nil and (type(opts.timeout_ms) ~= "number" or opts.timeout_ms <= 0) then
    error(("%s: timeout_ms must be a number > 0, got %s"):format(where, tostring(opts.timeout_ms)), 3)
  end
  return opts
end

function Pool:call(method, params, opts)
  if type(method) ~= "string" or method == "" then error("rpc.call: method must be a non-empty string", 2) end
  if params ~= nil and type(params) ~= "table" then error("rpc.call: params must be a table (JSON array) or nil", 2) end
  opts = check_opts(opts, "rpc.call")
  local route = route_of(self, method)
  if route then opts = routed(self, route, opts) end
  local prio = opts.priority or self.priorities[method] or method_priorities[method] or "normal"
  next_id = next_id + 1
  local pj = ""
  if params and next(params) ~= nil then
    local err
    pj, err = json.safe_encode(params)
    if not pj then error("rpc.call: params cannot be encoded as JSON: " .. tostring(err), 2) end
    pj = ',"params":' .. pj
  end
  local body = '{"jsonrpc":"2.0","id":' .. next_id .. ',"method":' .. quoted(method) .. pj .. "}"
  local req = { body = body, method = method, id = next_id, idempotent = not is_submit(self, method) }
  local t0 = now()
  local res = self:_admit_and_run(req, prio, opts)
  metrics.observe_call(method, res, now() - t0)
  return res
end

--- pool:batch({ {method, params}, ... }, opts) -> { ok, results = { {ok, result|error}, ... }, endpoint, ... }
function Pool:batch(calls, opts)
  if type(calls) ~= "table" or #calls == 0 then error("rpc.batch: expected a non-empty list of { method, params }", 2) end
  opts = check_opts(opts, "rpc.batch")
  local msgs, ids, prio, idem = {}, {}, opts.priority, true
  local rank = { low = 1, normal = 2, critical = 3 }
  for i, c in ipairs(calls) do
    local method = c[1] or c.method
    if type(method) ~= "string" then error(("rpc.batch: calls[%d] needs a method name"):format(i), 2) end
    next_id = next_id + 1
    local m = { jsonrpc = "2.0", id = next_id, method = method }
    local params = c[2] or c.params
    if params and next(params) ~= nil then m.params = params end
    msgs[i], ids[i] = m, next_id
    if is_submit(self, method) then idem = false end
    if not opts.priority then
      local p = self.priorities[method] or method_priorities[method] or "normal"
      if not prio or rank[p] > rank[prio] then prio = p end
    end
  end
  local body = json.safe_encode(msgs)
  local req = { body = body, method = "batch(" .. #calls .. ")", rid = logm.request_id(), batch = true, ids = ids,
                idempotent = idem }
  local t0 = now()
  local res = self:_admit_and_run(req, prio, opts)
  for i, m in ipairs(msgs) do metrics.observe_call(m.method, res.ok and res.results[i] or res, now() - t0) end
  return res
end

function Pool:endpoints()
  local out = {}
  local t = now()
  for i, ep in ipairs(self.eps) do
    local b = ep.breaker:stats()
    local errors = {}
    for k, v in pairs(ep.errors) do errors[k] = v end
    out[i] = { name = ep.name, url = ep.display_url, weight = ep.weight, state = b.state, healthy = ep.healthy,
               unhealthy_reason = ep.unhealthy_reason, slot = ep.slot, lag = ep.lag,
               latency_ms = percentiles(ep), inflight = ep.inflight, queued = ep.nqueued,
               max_inflight = ep.max_inflight, calls = ep.calls, successes = ep.successes,
               unsupported_methods = (function()
                 local m = {}
                 for k, at in pairs(ep.unsupported) do if t - at < UNSUPPORTED_MS then m[#m + 1] = k end end
                 table.sort(m)
                 return m
               end)(),
               errors = errors, failures = b.failures, consecutive_failures = b.consecutive_failures,
               rate_limited_ms = ep.backoff_until > t and floor(ep.backoff_until - t) or 0,
               retry_in_ms = b.retry_in_ms, last_error = ep.last_error, trips = b.trips,
               state_changes = b.state_changes,
               latency_histogram = { bounds = LAT_BOUNDS, counts = { unpack(ep.hist) }, sum_ms = ep.hist_sum,
                                     count = ep.hist_n } }
    local ws = package.loaded["thorp.ws"]
    out[i].ws = ws and ws.endpoint_status(self, ep.name) or nil
  end
  return out
end

-- WebSocket subscriptions: lib/thorp/ws.lua
function Pool:subscribe(method, params, handler, opts)
  return require("thorp.ws").subscribe(self, method, params, handler, opts)
end

-- Health: slot lag and liveness, polled in the background --------------------

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
      publish_system("thorp.health", { endpoint = ep.name, healthy = false, reason = "health_check_failed" })
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
      publish_system("thorp.health", { endpoint = ep.name, healthy = false, lag = ep.lag, reason = "slot_lag" })
    end
  elseif not ep.healthy then
    -- hysteresis: back in only after two checks within half the allowed lag
    if ep.unhealthy_reason == "health_check_failed" or ep.lag <= pool.max_slot_lag / 2 then
      ep.good_checks = ep.good_checks + 1
      if ep.good_checks >= 2 then
        ep.healthy, ep.unhealthy_reason = true, nil
        log.info("endpoint back in rotation", { endpoint = ep.name, lag = ep.lag })
        publish_system("thorp.health", { endpoint = ep.name, healthy = true, lag = ep.lag })
      end
    else
      ep.good_checks = 0
    end
  end
end

local SLOT_BODY = '{"jsonrpc":"2.0","id":0,"method":"getSlot","params":[{"commitment":"processed"}]}'

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

-- The host's pool ------------------------------------------------------------

local default

function M.default_pool() return default end
--- Make pool the host's pool (tests, embedding); returns the previous one.
function M.set_default_pool(pool)
  local old = default
  default = pool
  return old
end

--- http_post(url, body, timeout_ms) -> { status, body } | nil, err: a plain POST on the
--- same loop; an alias of thorp.fetch (lib/thorp/fetch.lua), which takes any method.
function M.http_post(url, body, timeout_ms)
  local res = require("thorp.fetch").fetch(url, { method = "POST", body = body or "", timeout_ms = timeout_ms or 5000,
                                                  headers = { ["Content-Type"] = "application/json" } })
  if not res.ok then return nil, res.error.message end
  return { status = res.status, body = res.body }
end

local function no_pool()
  return fail("ALL_ENDPOINTS_FAILED", "no RPC endpoints configured: set HELIUS_RPC_URL, CHAINSTACK_RPC_URL, "
    .. "PUBLIC_RPC_URL or THORP_RPC_URLS (name=url,...), or rpc.endpoints in the config file")
end

function M.call(method, params, opts)
  if not default then
    local prio = type(opts) == "table" and opts.priority or method_priorities[method] or "normal"
    if prio ~= "critical" and shutting_down() then
      return fail("SHUTTING_DOWN", "shutdown in progress: only critical calls are sent")
    end
    return no_pool()
  end
  return default:call(method, params, opts)
end

function M.batch(calls, opts)
  if not default then return no_pool() end
  return default:batch(calls, opts)
end

function M.endpoints() return default and default:endpoints() or {} end
function M.subscribe(method, params, handler, opts)
  return require("thorp.ws").subscribe(default, method, params, handler, opts)
end
function M.subscriptions() return require("thorp.ws").list() end

function M.set_priorities(map)
  for k, v in pairs(map or {}) do
    if not PRIORITIES[v] then
      error(("rpc priorities: %s = %s: allowed critical, normal, low"):format(tostring(k), tostring(v)), 2)
    end
  end
  method_priorities = map or {}
end
function M.priorities() return method_priorities end

function M.configure_breakers(policy)
  if default then default:configure_breakers(policy or {}) end
end

function M.stats()
  local s = {}
  for k, v in pairs(T) do s[k] = v end
  s.inflight_http = C.thorp_pool_inflight()
  s.endpoints = M.endpoints()
  return s
end

function M.start(cfg, mode)
  local rc = cfg and cfg.rpc
  if not rc or not rc.endpoints or #rc.endpoints == 0 then return true end
  local eps = {}
  for i, e in ipairs(rc.endpoints) do
    eps[i] = { name = e.name, url = e.url, weight = e.weight, timeout_ms = e.timeout_ms, headers = e.headers,
               ws_url = e.ws_url, public_path = e.public_path }
  end
  local interval = rc.health_interval_ms or 400
  default = M.new_pool{ name = "default", endpoints = eps, timeout_ms = rc.timeout_ms,
                        backpressure = require("thorp.backpressure").default, max_slot_lag = rc.max_slot_lag,
                        auto_batch = (rc.auto_batch or 0) >= 2 and rc.auto_batch or nil,
                        health = (mode == "run" or mode == "exec") and interval > 0, health_interval_ms = interval }
  local names = {}
  for _, ep in ipairs(default.order) do names[#names + 1] = ep.name .. "=" .. ep.display_url end
  log.info("rpc pool ready", { endpoints = names })
  return true
end

function M.stop()
  if default then default:stop_health() end
end

return M
