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
--
-- The pool's jobs, one file each (lib/thorp/rpc/): endpoint.lua (an
-- endpoint's record, statistics and validation), routing.lua (the methods
-- section, submissions), classify.lua (what an answer means), batch.lua
-- (auto-batching), health.lua (background checks). This file is the API and
-- the call path: transport glue, pick, attempts, retries and hedging.
local ffi = require "ffi"
local json = require "thorp.json" -- RPC bodies: lossless u64, thorp.json.null
local sched = require "thorp.sched"
local breaker = require "thorp.breaker"
local logm = require "thorp.log"
local metrics = require "thorp.metrics"
local priority = require "thorp.priority"
local shutdown = require "thorp.shutdown"
local endpoint = require "thorp.rpc.endpoint"
local routing = require "thorp.rpc.routing"
local classify_m = require "thorp.rpc.classify"
local batch = require "thorp.rpc.batch"
local health = require "thorp.rpc.health"
local log = logm.for_module("rpc")

local C = require "thorp.cdef"
local now = sched.now
local cached_now = sched.cached_now -- the clock at the start of this loop turn: for comparisons, not for judging
local floor, min, max = math.floor, math.min, math.max

local M = {}
local PRIORITIES = priority.RANK
local classify, fail, fair_ms, rid_of = classify_m.classify, classify_m.fail, classify_m.fair_ms, classify_m.rid_of
local hedge_delay, supports = endpoint.hedge_delay, endpoint.supports
local route_of, is_submit = routing.route_of, routing.is_submit
M.LATENCY_BOUNDS = endpoint.LATENCY_BOUNDS
M.validate_methods, M.set_methods = routing.validate_methods, routing.set_methods
M.is_submit = function(method, pool) return is_submit(pool or { submit = {} }, method) end
M._classify = classify -- for the fuzz harness (tests/fuzz/rpc_answer.lua)
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

-- Pool -------------------------------------------------------------------------

local Pool = {}
Pool.__index = Pool

function M.new_pool(opts)
  if type(opts) ~= "table" then error("rpc.new_pool: expected a table of options", 2) end
  endpoint.validate(opts.endpoints)
  local errs = breaker.validate(opts.breaker or {}, "rpc.new_pool: breaker")
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  local ab = opts.auto_batch
  if ab ~= nil and ab ~= true and ab ~= false and not (type(ab) == "number" and ab >= 2 and ab % 1 == 0) then
    error("rpc.new_pool: auto_batch must be true, false or a maximum batch size >= 2, got " .. tostring(ab), 2)
  end
  if opts.max_inflight ~= nil then endpoint.check_inflight(opts.max_inflight, "rpc.new_pool: max_inflight", 2) end
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
  local proutes, psubmit = routing.compile_methods(opts.methods)
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
    local ep = endpoint.new(pool, e, i)
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

-- Call records are reused: when a call returns, its mail, tried and inflight
-- tables are empty again (its last answer or cancel_all emptied them, and no
-- attempt can reach it any more), so the next call takes them instead of
-- allocating. failures starts as a shared empty list and becomes the call's
-- own on the first failure (errors hand it to the caller).
local NO_FAILURES = setmetatable({}, { __newindex = function() error("rpc: NO_FAILURES is read-only", 2) end })
local free_calls, n_free_calls, FREE_CALLS_MAX = {}, 0, 256

local function new_call(task, tmo, req, opts)
  local call
  if n_free_calls > 0 then
    call = free_calls[n_free_calls]
    free_calls[n_free_calls] = nil
    n_free_calls = n_free_calls - 1
  else
    call = { mail = {}, tried = {}, inflight = {} }
  end
  call.task, call.failures, call.attempts, call.n_inflight = task, NO_FAILURES, 0, 0
  call.deadline, call.fair_ms, call.method = now() + tmo, tmo * 0.5, req.method
  call.critical, call.allowed = req.priority == "critical", opts._allowed
  return call
end

local function free_call(call)
  local mail, tried = call.mail, call.tried
  for i = #mail, 1, -1 do mail[i] = nil end
  for ep in pairs(tried) do tried[ep] = nil end
  if next(call.inflight) ~= nil or n_free_calls >= FREE_CALLS_MAX then return end -- not reusable: let it go
  call.task, call.failures, call.allowed, call.pin, call.first, call.probe = nil, nil, nil, nil, nil, nil
  call.hedged, call.saturated, call.waiting, call.token = nil, nil, nil, nil
  n_free_calls = n_free_calls + 1
  free_calls[n_free_calls] = call
end

local function add_failure(call, f)
  local fs = call.failures
  if fs == NO_FAILURES then fs = {}; call.failures = fs end
  fs[#fs + 1] = f
end
local function own_failures(call) return call.failures ~= NO_FAILURES and call.failures or {} end

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
    add_failure(call, { endpoint = ep.name, code = "CIRCUIT_OPEN", message = ep.name .. ": circuit open" })
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

local execute -- (pool, call, req, opts, tmo) -> result, below

-- task: the running task when the caller has it at hand (sched.current() is not free)
function Pool:_execute(req, opts, task)
  local tmo = opts.timeout_ms or self.timeout_ms
  local call = new_call(task or sched.current(), tmo, req, opts)
  local res = execute(self, call, req, opts, tmo)
  free_call(call)
  return res
end

function execute(self, call, req, opts, tmo)
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
        return fail("TIMEOUT", msg, { failures = own_failures(call), attempts = call.attempts })
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
      add_failure(call, err)
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
local function shutting_down() return shutdown.is_shutting_down() end

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

-- Auto-batching (reads of one loop turn as one upstream batch): lib/thorp/rpc/batch.lua
batch.install(Pool, T)

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

local NO_OPTS = {} -- opts are only read: one empty table for every call that passes none
local function check_opts(opts, where)
  if opts == nil then return NO_OPTS end
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
  if route then opts = routing.routed(self, route, opts) end
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
      prio = prio and priority.max(prio, p) or p
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
               latency_ms = endpoint.percentiles(ep), inflight = ep.inflight, queued = ep.nqueued,
               max_inflight = ep.max_inflight, calls = ep.calls, successes = ep.successes,
               unsupported_methods = endpoint.unsupported_methods(ep, t),
               errors = errors, failures = b.failures, consecutive_failures = b.consecutive_failures,
               rate_limited_ms = ep.backoff_until > t and floor(ep.backoff_until - t) or 0,
               retry_in_ms = b.retry_in_ms, last_error = ep.last_error, trips = b.trips,
               state_changes = b.state_changes,
               latency_histogram = { bounds = endpoint.LATENCY_BOUNDS, counts = { unpack(ep.hist) }, sum_ms = ep.hist_sum,
                                     count = ep.hist_n } }
    out[i].ws = require("thorp.ws").endpoint_status(self, ep.name)
  end
  return out
end

-- WebSocket subscriptions: lib/thorp/ws.lua
function Pool:subscribe(method, params, handler, opts)
  return require("thorp.ws").subscribe(self, method, params, handler, opts)
end

-- Health: slot lag and liveness, polled in the background: lib/thorp/rpc/health.lua
health.install(Pool, http_send)

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
