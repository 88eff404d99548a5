-- thorp.breaker: circuit breakers (the state machine is host/breaker.c,
-- reached through the FFI so a check costs a few nanoseconds).
--
--   local b = thorp.breaker.new{ name = "helius", failure_threshold = 5,
--                                cooldown_ms = 60000, jitter = 0.1 }
--   local ok, res = b:call(fn, ...)      -- pcall-like; err.code = "CIRCUIT_OPEN"
--   b:state()  b:stats()  b:reset()  b:trip()
--
-- Options beyond the contract: max_cooldown_ms (cap of the cooldown that
-- doubles each time a half-open probe fails), half_open_timeout_ms (a probe
-- that never answers counts as failed), failure_rate + rate_window_ms +
-- rate_min_calls (trip on a failure ratio too), max_concurrent + max_wait_ms
-- + max_waiting (bulkhead: extra calls wait for a slot, bounded).
-- For callers that classify outcomes themselves (the RPC pool):
-- b:allow() -> true | false; then b:success() / b:failure() / b:neutral().
local ffi = require "ffi"
local sched = require "thorp.sched"
local check = require "thorp.check"

local C = require "thorp.cdef"
local now = sched.now

local M = {}
local STATES = { [C.BR_CLOSED] = "CLOSED", [C.BR_OPEN] = "OPEN", [C.BR_HALF_OPEN] = "HALF_OPEN" }
M.STATES = STATES
local SUCCESS, FAILURE, NEUTRAL = C.BR_SUCCESS, C.BR_FAILURE, C.BR_NEUTRAL

local Breaker = {}
Breaker.__index = Breaker

-- name -> rule(v): what is allowed when v is not, nil when v is fine (thorp.check)
local function int(min) return function(v) return check.int_rule(v, min) end end
local function num(min, max, open_min) return function(v) return check.num_rule(v, min, max, open_min) end end
local OPTIONS = {
  name = function(v) if type(v) ~= "string" then return "a string" end end,
  failure_threshold = int(1),
  cooldown_ms = num(0),
  max_cooldown_ms = num(0),
  jitter = num(0, 1),
  half_open_max_calls = int(1),
  half_open_timeout_ms = num(0, nil, true),
  failure_rate = num(0, 1, true), -- 0 is the C side's "window off": leave failure_rate out for that
  rate_window_ms = num(0, nil, true),
  rate_min_calls = int(1),
  max_concurrent = int(1),
  max_wait_ms = num(0),
  max_waiting = int(0),
}
M.OPTIONS = OPTIONS

--- validate(opts, where) -> list of error strings (empty when valid)
function M.validate(opts, where)
  where = where or "breaker"
  if type(opts) ~= "table" then return { check.problem(where, opts, "a table of breaker options") } end
  local errs = check.unknown(where, opts, OPTIONS)
  for k, v in pairs(opts) do
    local rule = OPTIONS[k]
    if rule then errs[#errs + 1] = check.problem(where .. "." .. k, v, rule(v)) end
  end
  return errs
end

local C_FIELDS = { "failure_threshold", "cooldown_ms", "max_cooldown_ms", "jitter", "half_open_max_calls",
                   "half_open_timeout_ms", "failure_rate", "rate_window_ms", "rate_min_calls" }

--- b:configure(opts): change settings in place, keeping state and counts.
function Breaker:configure(opts)
  local errs = M.validate(opts, "breaker " .. (self.name or ""))
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  local s = self.s
  for _, f in ipairs(C_FIELDS) do if opts[f] ~= nil then s[f] = opts[f] end end
  if opts.cooldown_ms and not opts.max_cooldown_ms and s.max_cooldown_ms < s.cooldown_ms then
    s.max_cooldown_ms = s.cooldown_ms
  end
  if opts.max_concurrent ~= nil then
    self.max_concurrent = opts.max_concurrent
    self.max_waiting = opts.max_waiting or self.max_waiting or opts.max_concurrent * 10
  end
  if opts.max_waiting ~= nil then self.max_waiting = opts.max_waiting end
  if opts.max_wait_ms ~= nil then self.max_wait_ms = opts.max_wait_ms end
  return self
end

function M.new(opts)
  opts = opts or {}
  local s = ffi.new("thorp_breaker")
  C.thorp_breaker_init(s)
  local b = setmetatable({ s = s, name = opts.name or "breaker", inflight = 0, waiters = {}, wait_head = 1,
                           wait_tail = 0, max_wait_ms = 30000, listeners = {}, last_state = 0,
                           bulkhead_rejected = 0 }, Breaker)
  if opts.max_cooldown_ms == nil and (opts.cooldown_ms or 0) > s.max_cooldown_ms then
    s.max_cooldown_ms = opts.cooldown_ms
  end
  b:configure(opts)
  return b
end

-- Notify listeners of a state change (b:on_change(fn(b, from, to))).
local function changed(self, st)
  local from = self.last_state
  self.last_state = st
  for _, fn in ipairs(self.listeners) do
    local ok, err = pcall(fn, self, STATES[from], STATES[st])
    if not ok then require("thorp.log").error("breaker listener failed", { breaker = self.name, error = tostring(err) }) end
  end
end

function Breaker:on_change(fn) self.listeners[#self.listeners + 1] = fn end

function Breaker:state()
  local st = C.thorp_breaker_state(self.s, now())
  if st ~= self.last_state then changed(self, st) end
  return STATES[st]
end

function Breaker:allow()
  local ok = C.thorp_breaker_allow(self.s, now()) == 1
  if self.s.state ~= self.last_state then changed(self, self.s.state) end
  return ok
end

local function record(self, outcome)
  local st = C.thorp_breaker_record(self.s, now(), outcome)
  if st ~= self.last_state then changed(self, st) end
end
function Breaker:success() record(self, SUCCESS) end
function Breaker:failure() record(self, FAILURE) end
function Breaker:neutral() record(self, NEUTRAL) end

function Breaker:trip()
  C.thorp_breaker_trip(self.s, now())
  changed(self, self.s.state)
end

function Breaker:reset()
  C.thorp_breaker_reset(self.s)
  if self.s.state ~= self.last_state then changed(self, self.s.state) end
end

function Breaker:retry_in() return C.thorp_breaker_retry_in(self.s, now()) end

-- Bulkhead: wait for a slot when max_concurrent calls are already running.
local function acquire_slot(self)
  if not self.max_concurrent or self.inflight < self.max_concurrent then
    self.inflight = self.inflight + 1
    return true
  end
  if self.wait_tail - self.wait_head + 1 >= self.max_waiting or self.max_wait_ms <= 0 then
    self.bulkhead_rejected = self.bulkhead_rejected + 1
    return false, { code = "BULKHEAD_FULL", message = ("breaker %s: %d calls running and %d waiting (max_waiting %d)")
      :format(self.name, self.inflight, self.wait_tail - self.wait_head + 1, self.max_waiting) }
  end
  local t = sched.current()
  if not t then error("breaker " .. self.name .. ": max_concurrent needs a coroutine (call it from thorp.spawn)", 3) end
  local w = { task = t, token = sched.token(t) }
  self.wait_tail = self.wait_tail + 1
  self.waiters[self.wait_tail] = w
  local timer = sched.daemon_after(self.max_wait_ms, function()
    if not w.done then w.done = true; sched.wake(w.task, false, w.token) end
  end)
  local got = sched.suspend()
  timer:cancel()
  if got then return true end
  w.done = true
  self.bulkhead_rejected = self.bulkhead_rejected + 1
  return false, { code = "BULKHEAD_FULL", message = ("breaker %s: no slot within %d ms"):format(self.name, self.max_wait_ms) }
end

local function release_slot(self)
  -- hand the slot straight to the oldest live waiter
  while self.wait_head <= self.wait_tail do
    local w = self.waiters[self.wait_head]
    self.waiters[self.wait_head] = nil
    self.wait_head = self.wait_head + 1
    if not w.done then
      w.done = true
      if sched.wake(w.task, true, w.token) then return end
    end
  end
  self.inflight = self.inflight - 1
end

local function finish(self, ok, ...)
  record(self, ok and SUCCESS or FAILURE)
  if self.max_concurrent then release_slot(self) else self.inflight = self.inflight - 1 end
  return ok, ...
end

--- b:call(fn, ...) -> true, ... | false, err
function Breaker:call(fn, ...)
  local ok, err = acquire_slot(self)
  if not ok then return false, err end
  if not self:allow() then
    if self.max_concurrent then release_slot(self) else self.inflight = self.inflight - 1 end
    return false, { code = "CIRCUIT_OPEN", breaker = self.name, retry_in_ms = math.floor(self:retry_in()),
                    message = ("circuit %s is %s"):format(self.name, STATES[self.s.state]) }
  end
  return finish(self, pcall(fn, ...))
end

function Breaker:stats()
  local s = self.s
  local st = self:state()
  return {
    name = self.name, state = st, consecutive_failures = s.consecutive, failure_threshold = s.failure_threshold,
    calls = s.calls, successes = s.successes, failures = s.failures, neutral = s.neutral,
    rejected = s.rejected, trips = s.trips, state_changes = s.state_changes,
    cooldown_ms = s.current_cooldown_ms > 0 and s.current_cooldown_ms or s.cooldown_ms,
    retry_in_ms = math.floor(C.thorp_breaker_retry_in(s, now())),
    half_open_inflight = s.half_open_inflight, inflight = self.inflight,
    waiting = self.wait_tail - self.wait_head + 1, bulkhead_rejected = self.bulkhead_rejected,
    max_concurrent = self.max_concurrent,
  }
end

function Breaker:__tostring() return ("breaker %s (%s)"):format(self.name, self:state()) end

return M
