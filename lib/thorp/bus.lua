-- bus: the in-process signal bus (thorp.bus; docs/bus.md).
--
--   local bus = thorp.bus.new{ max_queue_size = 10000, reorder_window_ms = 50 }
--   local sub = bus:subscribe("trade_signal", function(ev, topic) ... end, { name = "executor" })
--   bus:publish("trade_signal", { token = "BONK", sequence = 7 }, "critical")  --> true | false, { code, message }
--   bus:stats(); bus:unsubscribe(sub)
--
-- Everything lives in Lua (DESIGN.md, hot-path notes). publish() validates,
-- pushes the event onto one of three ring-buffer lanes (critical, normal,
-- low) and wakes the bus's dispatcher task, which runs on a later loop turn.
-- The dispatcher drains the lanes highest first in batches, puts events that
-- carry a `sequence` through the topic's reorder buffer, and copies each
-- event into the mailbox (three lanes again) of every subscriber of its
-- topic. Each subscriber has its own worker task (named "bus:<name>", so the
-- host's watchdog can name a runaway handler) that handles its mailbox one
-- event at a time and is resumed once per batch, so a handler that yields
-- only delays its own next event. Handler errors are caught and logged with
-- a request id; a subscriber whose failures over its last `failure_window`
-- deliveries exceed max_failure_rate * failure_window is quarantined for
-- quarantine_ms, then let back on probation with a fresh window.
--
-- Hot path: no closure or table per event; one ring store per lane hop;
-- handler durations are timed for 1 event in SAMPLE (every event once a
-- handler is seen to be slow), so thorp.now() is not on every delivery.
--
-- Liveness: every event published and not yet handled holds the scheduler
-- (sched.hold), so `thorp exec` does not exit with events pending; the
-- dispatcher and workers themselves are daemon tasks.
local sched = require "thorp.sched"
local logm = require "thorp.log"
local log = logm.for_module("bus")
local band = require("bit").band
local tnew = require "table.new"

local type, tostring, pairs, xpcall, now = type, tostring, pairs, xpcall, sched.now
local hold, unhold, wake = sched.hold, sched.unhold, sched.wake
local co_yield = coroutine.yield

local M = {}

local PRIO = { critical = 1, normal = 2, low = 3 }
local PRIO_NAME = { "critical", "normal", "low" }
M.PRIORITIES = PRIO_NAME
local BATCH = 1024      -- events the dispatcher routes before giving the loop a turn
local WORKER_BATCH = 4 * BATCH -- and a worker handles (more, so that a worker that fell behind catches up)
local BUDGET_MS = 1     -- a worker waits for the loop's next turn after this much handler time
local NEXT_TURN_MS = 0.001 -- (by sleeping this long: any timer > 0 fires on the next turn only)
local SAMPLE = 16       -- time 1 handler call in SAMPLE ...
local SLOW_MS = 0.005   -- ... or every call while the last timed one took longer than this
local RING = 512        -- recent handler durations kept per subscriber (for percentiles)
local LOG_PER_S = 10    -- handler error lines per subscriber per second (the rest are counted)

------------------------------------------------------------------------------
-- Argument checks: errors name the function, the argument and what is allowed
------------------------------------------------------------------------------
local SRC = debug.getinfo(1, "S").source
-- Raise msg at the first caller outside this file (the user's line).
local function fail(msg)
  local l = 2
  while true do
    local i = debug.getinfo(l, "S")
    if not i or i.source ~= SRC then break end
    l = l + 1
  end
  error(msg, l)
end
local function show(v) return type(v) == "string" and ("%q"):format(v) or tostring(v) end
local function bad(fn, what, allowed, v)
  fail(("%s: %s must be %s (got %s)"):format(fn, what, allowed, show(v)))
end
local function check_handler(fn, h)
  local mt = type(h) == "table" and getmetatable(h)
  if type(h) ~= "function" and not (mt and mt.__call) then bad(fn, "handler", "a function", h) end
end
local function check_int(fn, what, v, min, max)
  if type(v) ~= "number" or v % 1 ~= 0 or v < min or (max and v > max) then
    bad(fn, what, max and ("an integer from %d to %d"):format(min, max) or ("an integer >= " .. min), v)
  end
  return v
end
local function check_num(fn, what, v, min, max)
  if type(v) ~= "number" or v ~= v or v < min or (max and v > max) then
    bad(fn, what, max and ("a number from %g to %g"):format(min, max) or ("a number >= " .. min), v)
  end
  return v
end
local function check_topic(fn, topic)
  if type(topic) ~= "string" or topic == "" then bad(fn, "topic", "a non-empty string", topic) end
end
local function check_prio(fn, p)
  local n = PRIO[p]
  if not n then bad(fn, "priority", '"critical", "normal" or "low"', p) end
  return n
end
local function check_keys(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then bad(fn, "options", "a table or nil", opts) end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for a in pairs(allowed) do names[#names + 1] = a end
      table.sort(names)
      fail(("%s: unknown option %s (allowed: %s)"):format(fn, show(k), table.concat(names, ", ")))
    end
  end
  return opts
end

------------------------------------------------------------------------------
-- Lanes: three power-of-two rings. The bus queue keeps (event, topic) in
-- two parallel arrays (e, x); a mailbox keeps events only.
------------------------------------------------------------------------------
local function new_lanes(with_x)
  local l = { count = 0 }
  for p = 1, 3 do l[p] = { head = 0, n = 0, cap = 16, e = tnew(16, 0), x = with_x and tnew(16, 0) or false } end
  return l
end

-- Double a full ring, unrolled so that head is 0.
local function grow(r)
  local cap, e, x = r.cap, r.e, r.x
  local ne, nx = tnew(cap * 2, 0), x and tnew(cap * 2, 0)
  for k = 0, cap - 1 do
    local j = band(r.head + k, cap - 1)
    ne[k] = e[j]
    if x then nx[k] = x[j] end
  end
  r.e, r.x, r.head, r.cap = ne, nx or false, 0, cap * 2
end

local function push(l, p, ev, tp)
  local r = l[p]
  local n = r.n
  if n == r.cap then grow(r) end
  local i = band(r.head + n, r.cap - 1)
  r.e[i] = ev
  if tp then r.x[i] = tp end
  r.n = n + 1
  l.count = l.count + 1
end

-- Pop the oldest event of lane p (the caller checks it is not empty).
local function pop_lane(l, p)
  local r = l[p]
  local i = r.head
  local ev, x = r.e[i], r.x
  r.e[i] = nil
  local tp = x and x[i]
  if x then x[i] = nil end
  r.head = band(i + 1, r.cap - 1)
  r.n = r.n - 1
  l.count = l.count - 1
  return ev, tp
end

------------------------------------------------------------------------------
-- The bus
------------------------------------------------------------------------------
local Bus = {}
Bus.__index = Bus
local Sub = {}
Sub.__index = Sub
function Sub:__tostring() return ("bus subscriber %s (%s)"):format(self.name, self.topic) end

local function new_topic(self, name)
  local tp = { name = name, subs = {}, nsubs = 0, prio = PRIO[self.topic_prio[name]] or 2, expect = 1,
               ql = { 0, 0, 0 }, drops = {}, held_n = 0,
               published = 0, delivered = 0, failures = 0, dropped = 0, undelivered = 0,
               duplicates = 0, reorder_gaps = 0 }
  self.topics[name] = tp
  return tp
end

-- Count n copies of tp's events lost for reason (dropped_by_reason).
local function drop(self, tp, reason, n)
  n = n or 1
  tp.drops[reason] = (tp.drops[reason] or 0) + n
  self.drops[reason] = (self.drops[reason] or 0) + n
end

-- An event the bus took no further (refused by publish, or evicted).
local function lost(self, tp, reason)
  self.dropped_events = self.dropped_events + 1
  tp.dropped = tp.dropped + 1
  drop(self, tp, reason)
end

-- The event leaves the bus queue (routed, undelivered, duplicate or discarded).
local function leave(self, p)
  self.pending = self.pending - 1
  unhold(1)
  local bp = self.backpressure
  if bp then bp:release(PRIO_NAME[p]) end
end

local function wake_sub(s)
  if s.idle then s.idle = false; wake(s.task, nil, s.wtok) end
end

local function release_quarantine(s, t)
  if t < s.quarantine_until then return false end
  s.quarantined, s.probation, s.wfails, s.wn, s.wi = false, true, 0, 0, 1
  for i = 1, s.window do s.win[i] = false end
  log.info("subscriber back on probation", { subscriber = s.name, topic = s.topic })
  return true
end

-- Make room in a full mailbox for a critical event: drop its oldest low one.
local function evict_mail(self, s, tp)
  pop_lane(s.mb, 3)
  s.dropped = s.dropped + 1
  self.mailbox_dropped = self.mailbox_dropped + 1
  drop(self, tp, "EVICTED")
  unhold(1)
  return true
end

-- Copy ev into the mailbox of every subscriber of tp (no accounting of the
-- bus queue: the caller does that).
local function route(self, tp, p, ev)
  local n = tp.nsubs
  if n == 0 then
    self.undelivered = self.undelivered + 1
    tp.undelivered = tp.undelivered + 1
    return
  end
  local subs, k = tp.subs, 0
  for i = 1, n do
    local s = subs[i]
    local mb = s.mb
    if s.quarantined and not release_quarantine(s, now()) then
      s.skipped = s.skipped + 1
      self.skipped = self.skipped + 1
    elseif mb.count >= s.max_queue_size
           and not (p == 1 and self.evict_low_for_critical and mb[3].n > 0 and evict_mail(self, s, tp)) then
      s.dropped = s.dropped + 1
      self.mailbox_dropped = self.mailbox_dropped + 1
      drop(self, tp, "MAILBOX_FULL")
    else
      push(mb, p, ev)
      k = k + 1
      if s.idle then
        s.idle = false
        wake(s.task, nil, s.wtok)
      elseif s.napping and (p == 1 or mb.count >= s.nap_wake) then
        s.napping = false -- a critical event, or the mailbox filling fast: do not wait for the next turn
        wake(s.task)
      end
    end
  end
  if k > 0 then hold(k) end
end

-- Release held events of tp that are now in sequence.
local function flush(self, tp)
  local held = tp.held
  while tp.held_n > 0 do
    local h = held[tp.expect]
    if not h then return end
    held[tp.expect] = nil
    tp.held_n = tp.held_n - 1
    self.held = self.held - 1
    tp.expect = tp.expect + 1
    route(self, tp, h[2], h[1])
    leave(self, h[2])
  end
  self.holding[tp] = nil
end

local function sequenced(self, tp, p, ev, s)
  local expect = tp.expect
  if s == expect then
    tp.expect = s + 1
    route(self, tp, p, ev)
    leave(self, p)
    if tp.held_n > 0 then flush(self, tp) end
  elseif s < expect or (tp.held and tp.held[s]) then
    self.duplicates = self.duplicates + 1
    tp.duplicates = tp.duplicates + 1
    drop(self, tp, "DUPLICATE")
    leave(self, p)
  else
    if not tp.held then tp.held = {} end
    tp.held[s] = { ev, p, now() }
    tp.held_n = tp.held_n + 1
    self.held = self.held + 1
    self.holding[tp] = true
  end
end

-- Skip gaps whose reorder window has passed; returns the next deadline or nil.
local function expire(self)
  local t, window, next_at = now(), self.reorder_window_ms, nil
  for tp in pairs(self.holding) do
    while tp.held_n > 0 do
      local low, oldest = nil, math.huge
      for seq, h in pairs(tp.held) do
        if not low or seq < low then low = seq end
        if h[3] < oldest then oldest = h[3] end
      end
      if oldest + window > t then
        if not next_at or oldest + window < next_at then next_at = oldest + window end
        break
      end
      self.reorder_gaps = self.reorder_gaps + 1
      tp.reorder_gaps = tp.reorder_gaps + 1
      self.missing_sequences = self.missing_sequences + (low - tp.expect)
      tp.expect = low
      flush(self, tp)
    end
  end
  return next_at
end

-- One batch: every queued critical event, then up to BATCH normal and low
-- ones (critical events count against the BATCH too). Nothing here runs
-- user code (so nothing can publish meanwhile) except a user-supplied
-- backpressure object's release, which is called after the lane is updated.
local function dispatch(self)
  local q, budget = self.q, BATCH
  for p = 1, 3 do
    local r = q[p]
    local n = r.n
    if p > 1 and n > budget then n = budget end
    if n > 0 then
      local e, x, mask, h, plain = r.e, r.x, r.cap - 1, r.head, 0
      for _ = 1, n do
        local ev, tp = e[h], x[h]
        e[h], x[h] = nil, nil
        h = band(h + 1, mask)
        local ql = tp.ql
        ql[p] = ql[p] - 1
        local s = type(ev) == "table" and ev.sequence
        if s then
          sequenced(self, tp, p, ev, s)
        else
          route(self, tp, p, ev)
          plain = plain + 1
        end
      end
      r.head, r.n = h, r.n - n
      q.count = q.count - n
      budget = budget - n
      self.pending = self.pending - plain
      unhold(plain)
      local bp = self.backpressure
      if bp then
        local name = PRIO_NAME[p]
        for _ = 1, plain do bp:release(name) end
      end
    end
  end
end

local function dispatcher(self)
  local q = self.q
  while not self.closed do
    dispatch(self)
    local next_at = next(self.holding) and expire(self)
    if q.count > 0 then
      co_yield() -- a full batch: let the loop (and the workers) have a turn
    elseif not self.closed then
      self.wtok = sched.token()
      if next_at and not (self.timer_at and self.timer_at <= next_at and self.timer_at > now()) then
        self.timer_at = next_at
        sched.daemon_after(next_at - now(), function()
          if self.idle then self.idle = false; wake(self.task, nil, self.wtok) end
        end, "bus-reorder")
      end
      self.idle = true
      sched.suspend()
    end
  end
end

-- The handler's traceback, without the bus's and scheduler's own frames.
local function traceback(e)
  return (debug.traceback(tostring(e), 2):gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end

-- Record a delivery's outcome in the failure window; quarantine past the rate.
local function record(s, failed)
  local i = s.wi
  if s.win[i] then s.wfails = s.wfails - 1 end
  s.win[i] = failed
  s.wi = i % s.window + 1
  if s.wn < s.window then s.wn = s.wn + 1 end
  if s.probation and s.wn >= s.window then s.probation = false end
  if failed then
    s.wfails = s.wfails + 1
    if s.wfails > s.max_failure_rate * s.window then
      s.quarantined = true
      s.quarantines = s.quarantines + 1
      s.quarantine_until = now() + s.quarantine_ms
      log.warn("subscriber quarantined", { subscriber = s.name, topic = s.topic, failures = s.wfails,
                                           window = s.window, quarantine_ms = s.quarantine_ms })
    end
  end
end

local function failed(self, s, tp, err)
  s.failures = s.failures + 1
  tp.failures = tp.failures + 1
  self.failures = self.failures + 1
  local t = now()
  if t - s.log_at >= 1000 then s.log_at, s.log_n = t, 0 end
  if s.log_n < LOG_PER_S then
    s.log_n = s.log_n + 1
    log.error("bus handler failed", { request_id = M.request_id(s), subscriber = s.name, topic = s.topic,
                                      error = err, not_logged = s.log_skipped > 0 and s.log_skipped or nil })
    s.log_skipped = 0
  else
    s.log_skipped = s.log_skipped + 1
  end
  record(s, true)
end

local by_task = setmetatable({}, { __mode = "k" })

local function worker(self, s)
  by_task[sched.current()] = s
  local tp, topic, times = s.tp, s.topic, s.times
  local left = 0 -- calls until the next timed one
  while not s.closed do
    if s.mb.count == 0 then
      s.wtok = sched.token()
      s.idle = true
      sched.suspend()
    else
      -- critical events still in the bus queue: let the dispatcher route them first
      if self.q[1].n > 0 then co_yield() end
      local t_batch = now()
      s.busy_since = t_batch
      local n, over = 0, false
      while n < WORKER_BATCH do
        local mb = s.mb -- unsubscribe replaces it
        if mb.count == 0 then break end
        n = n + 1
        local ev = pop_lane(mb, mb[1].n > 0 and 1 or (mb[2].n > 0 and 2 or 3))
        if s.quarantined then
          s.skipped = s.skipped + 1
          self.skipped = self.skipped + 1
        else
          s.rid, s.busy = false, true
          local t0 = false
          if left == 0 then t0 = now(); s.busy_since = t0 end
          local ok, err = xpcall(s.handler, traceback, ev, topic)
          s.busy = false
          if t0 then
            local t1 = now()
            local d = t1 - t0
            local i = s.ti
            times[i] = d
            s.ti = i < RING and i + 1 or 1
            s.timed = s.timed + 1
            if d > s.max_ms then s.max_ms = d end
            left = d > SLOW_MS and 0 or SAMPLE - 1
            if t1 - t_batch > BUDGET_MS then over = true end
          else
            left = left - 1
          end
          if ok then
            s.delivered = s.delivered + 1
            tp.delivered = tp.delivered + 1
            self.delivered = self.delivered + 1
            if s.wfails > 0 or s.probation then record(s, false) end
          else
            failed(self, s, tp, err)
          end
        end
        unhold(1)
        if over then break end
      end
      if over then
        -- past the time budget: nap until the loop's next turn so timers, I/O
        -- and the inbox get their turn (a plain yield runs again in this one);
        -- route() cuts the nap short for a critical event, or before the mailbox
        -- could overflow (other tasks still publishing in this turn)
        local c, max = s.mb.count, s.max_queue_size
        s.napping, s.nap_wake = true, math.min(c + math.floor(max / 2), max - BATCH)
        sched.sleep(NEXT_TURN_MS)
        s.napping = false
      elseif s.mb.count > 0 then
        co_yield()
      end
    end
  end
end

------------------------------------------------------------------------------
-- Public API
------------------------------------------------------------------------------
local NEW_OPTS = { max_queue_size = true, max_subscribers = true, reorder_window_ms = true, backpressure = true,
                   quarantine_ms = true, evict_low_for_critical = true }

--- bus:configure{ max_queue_size=, max_subscribers=, reorder_window_ms=, quarantine_ms=,
---                evict_low_for_critical=, backpressure= } (in place)
function Bus:configure(opts, fn)
  fn = fn or "bus:configure"
  check_keys(fn, opts, NEW_OPTS)
  if opts.max_queue_size ~= nil then self.max_queue_size = check_int(fn, "max_queue_size", opts.max_queue_size, 1) end
  if opts.max_subscribers ~= nil then
    self.max_subscribers = check_int(fn, "max_subscribers", opts.max_subscribers, 1)
  end
  if opts.reorder_window_ms ~= nil then
    self.reorder_window_ms = check_num(fn, "reorder_window_ms", opts.reorder_window_ms, 0)
  end
  if opts.quarantine_ms ~= nil then self.quarantine_ms = check_num(fn, "quarantine_ms", opts.quarantine_ms, 0) end
  local ev = opts.evict_low_for_critical
  if ev ~= nil then
    if type(ev) ~= "boolean" then bad(fn, "evict_low_for_critical", "a boolean", ev) end
    self.evict_low_for_critical = ev
  end
  if opts.backpressure ~= nil then
    local bp = opts.backpressure
    if type(bp) ~= "table" or type(bp.try_acquire) ~= "function" or type(bp.release) ~= "function" then
      bad(fn, "backpressure", "an object with try_acquire(priority) and release(priority) methods", bp)
    end
    self.backpressure = bp
  end
  return self
end

--- thorp.bus.new{ max_queue_size = 10000, max_subscribers = 100, reorder_window_ms = 50,
---                quarantine_ms = 30000, evict_low_for_critical = false, backpressure = nil } -> bus
function M.new(opts)
  local self = setmetatable({
    max_queue_size = 10000, max_subscribers = 100, reorder_window_ms = 50, quarantine_ms = 30000,
    evict_low_for_critical = false, critical_only = false,
    q = new_lanes(true), topics = {}, topic_prio = {}, subs = {}, by_name = {}, nsubs = 0, sub_seq = 0,
    holding = {}, pending = 0, held = 0, idle = false, closed = false, drops = {},
    published = 0, delivered = 0, failures = 0, dropped_events = 0, undelivered = 0, skipped = 0,
    mailbox_dropped = 0, duplicates = 0, reorder_gaps = 0, missing_sequences = 0,
  }, Bus)
  if opts ~= nil then
    if type(opts) ~= "table" then bad("bus.new", "options", "a table or nil", opts) end
    Bus.configure(self, opts, "bus.new")
  end
  return self
end

-- Make room for a critical event: drop the oldest queued low one.
local function evict_low(self)
  local q = self.q
  if q[3].n == 0 then return false end
  local _, tp = pop_lane(q, 3)
  tp.ql[3] = tp.ql[3] - 1
  leave(self, 3)
  lost(self, tp, "EVICTED")
  return true
end

-- Why a publish was refused: error values (thorp.errors), shared and never changed.
local errors = require "thorp.errors"
local REFUSED = {
  CLOSED = errors.new("CLOSED", "the bus is closed"),
  SHUTTING_DOWN = errors.new("SHUTTING_DOWN", "shutdown in progress: the bus takes only critical events"),
  QUEUE_FULL = errors.new("QUEUE_FULL", "the bus queue is full (max_queue_size events published, not yet dispatched)"),
  BACKPRESSURE_REJECTED = errors.new("BACKPRESSURE_REJECTED", "admission control refused the event (host overloaded)"),
}

--- bus:publish(topic, event, priority) -> true | false, { code = "QUEUE_FULL" | "BACKPRESSURE_REJECTED" |
--- "SHUTTING_DOWN" | "CLOSED", message }
---                                        | "SHUTTING_DOWN" | "CLOSED"
function Bus:publish(topic, ev, priority)
  local tp = self.topics[topic]
  if not tp then
    check_topic("bus:publish", topic)
    tp = new_topic(self, topic)
  end
  local p = tp.prio
  if priority ~= nil then p = PRIO[priority] or check_prio("bus:publish", priority) end
  if type(ev) == "table" then
    local s = ev.sequence
    if s ~= nil and (type(s) ~= "number" or s < 1 or s % 1 ~= 0) then
      bad("bus:publish", "event.sequence", "an integer >= 1 or nil", s)
    end
  end
  if self.closed then lost(self, tp, "CLOSED"); return false, REFUSED.CLOSED end
  if self.critical_only and p ~= 1 then lost(self, tp, "SHUTTING_DOWN"); return false, REFUSED.SHUTTING_DOWN end
  if self.pending >= self.max_queue_size
     and not (p == 1 and self.evict_low_for_critical and evict_low(self)) then
    lost(self, tp, "QUEUE_FULL")
    return false, REFUSED.QUEUE_FULL
  end
  local bp = self.backpressure
  if bp then
    local ok
    if bp.admit then ok = bp:admit(PRIO_NAME[p]) else ok = bp:try_acquire(PRIO_NAME[p]).accepted end
    if not ok then lost(self, tp, "BACKPRESSURE_REJECTED"); return false, REFUSED.BACKPRESSURE_REJECTED end
  end
  push(self.q, p, ev, tp)
  local ql = tp.ql
  ql[p] = ql[p] + 1
  self.pending = self.pending + 1
  self.published = self.published + 1
  tp.published = tp.published + 1
  hold(1)
  if self.idle then
    self.idle = false
    wake(self.task, nil, self.wtok)
  elseif not self.task then
    self.task = sched.spawn_opts({ daemon = true, name = "bus-dispatch" }, dispatcher, self)
  end
  return true
end

local SUB_OPTS = { name = true, max_failure_rate = true, failure_window = true, quarantine_ms = true,
                   max_queue_size = true }

--- bus:subscribe(topic, handler, opts) -> sub; opts: name, max_failure_rate = 0.5,
--- failure_window = 10, quarantine_ms (bus's), max_queue_size (mailbox bound, bus's)
function Bus:subscribe(topic, handler, opts)
  local fn = "bus:subscribe"
  check_topic(fn, topic)
  check_handler(fn, handler)
  opts = check_keys(fn, opts, SUB_OPTS)
  local name = opts.name
  if name ~= nil and (type(name) ~= "string" or name == "") then bad(fn, "opts.name", "a non-empty string", name) end
  if name and self.by_name[name] then
    fail(("%s: a subscriber named %q already exists (use bus:replace_handler to change its handler)")
      :format(fn, name))
  end
  if self.closed then fail(fn .. ": the bus is closed") end
  if self.nsubs >= self.max_subscribers then
    fail(("%s: max_subscribers (%d) reached; unsubscribe one or raise max_subscribers"):format(
      fn, self.max_subscribers))
  end
  local window = opts.failure_window and check_int(fn, "opts.failure_window", opts.failure_window, 1, 10000) or 10
  local s = setmetatable({
    bus = self, topic = topic, handler = handler, mb = new_lanes(false),
    max_failure_rate = opts.max_failure_rate and check_num(fn, "opts.max_failure_rate", opts.max_failure_rate, 0, 1)
      or 0.5,
    quarantine_ms = opts.quarantine_ms and check_num(fn, "opts.quarantine_ms", opts.quarantine_ms, 0)
      or self.quarantine_ms,
    max_queue_size = opts.max_queue_size and check_int(fn, "opts.max_queue_size", opts.max_queue_size, 1)
      or self.max_queue_size,
    window = window, win = {}, wi = 1, wn = 0, wfails = 0,
    delivered = 0, failures = 0, skipped = 0, dropped = 0, quarantines = 0,
    quarantined = false, probation = false, quarantine_until = 0, idle = false, napping = false, nap_wake = 0, busy = false,
    closed = false,
    busy_since = 0, times = tnew(RING, 0), ti = 1, timed = 0, max_ms = 0, log_at = -1e9, log_n = 0, log_skipped = 0,
  }, Sub)
  for i = 1, window do s.win[i] = false end
  self.sub_seq = self.sub_seq + 1
  s.name = name or (topic .. "#" .. self.sub_seq)
  local tp = self.topics[topic] or new_topic(self, topic)
  s.tp = tp
  tp.nsubs = tp.nsubs + 1
  tp.subs[tp.nsubs] = s
  self.subs[#self.subs + 1] = s
  self.by_name[s.name] = s
  self.nsubs = self.nsubs + 1
  -- the task name is what the host's watchdog reports for a handler that runs too long
  s.task = sched.spawn_opts({ daemon = true, name = "bus:" .. s.name }, worker, self, s)
  return s
end

local function remove(list, x)
  for i = #list, 1, -1 do if list[i] == x then table.remove(list, i) end end
end

--- bus:unsubscribe(sub_or_name) -> true | false (not subscribed). Its queued events are discarded.
function Bus:unsubscribe(s)
  if type(s) == "string" then s = self.by_name[s] end
  if type(s) ~= "table" or s.bus ~= self or s.closed then return false end
  s.closed = true
  local tp = s.tp
  remove(tp.subs, s)
  tp.nsubs = #tp.subs
  remove(self.subs, s)
  self.by_name[s.name] = nil
  self.nsubs = self.nsubs - 1
  local n = s.mb.count
  s.mb = new_lanes(false)
  if n > 0 then
    s.dropped = s.dropped + n
    drop(self, tp, "UNSUBSCRIBED", n)
    unhold(n)
  end
  wake_sub(s) -- the worker sees closed and ends
  return true
end
Sub.unsubscribe = function(s) return s.bus:unsubscribe(s) end

--- bus:find_subscriber(name) -> sub | nil
function Bus:find_subscriber(name) return self.by_name[name] end

--- bus:replace_handler(name, fn) -> sub | nil, err. Keeps the mailbox and the
--- topic's sequence state; lifts a quarantine (the new code gets a fresh window).
function Bus:replace_handler(name, handler)
  check_handler("bus:replace_handler", handler)
  local s = self.by_name[name]
  if not s then return nil, ("no subscriber named %s"):format(show(name)) end
  s.handler = handler
  if s.quarantined or s.wfails > 0 then
    s.quarantine_until = 0
    release_quarantine(s, 0)
    s.probation = false
  end
  return s
end

--- bus:set_topic_priorities{ topic = "critical"|"normal"|"low", ... }: the
--- priority of an event published without one (replaces the previous map).
function Bus:set_topic_priorities(map)
  local fn = "bus:set_topic_priorities"
  if type(map) ~= "table" then bad(fn, "map", "a table of topic = priority", map) end
  local copy = {}
  for k, v in pairs(map) do
    check_topic(fn, k)
    if not PRIO[v] then bad(fn, ("priority of topic %q"):format(k), '"critical", "normal" or "low"', v) end
    copy[k] = v
  end
  self.topic_prio = copy
  for name, tp in pairs(self.topics) do tp.prio = PRIO[copy[name]] or 2 end
  return true
end

local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
local function by_lane(a, b, c) return { critical = a, normal = b, low = c } end

-- { p50, p90, p99, max, samples } in ms over the subscriber's recent timed calls.
local function handler_ms(s)
  local n = math.min(s.timed, RING)
  if n == 0 then return { p50 = 0, p90 = 0, p99 = 0, max = 0, samples = 0 } end
  local xs = {}
  for i = 1, n do xs[i] = s.times[i] end
  table.sort(xs)
  local function pct(p) return xs[math.max(1, math.ceil(n * p))] end
  return { p50 = pct(0.5), p90 = pct(0.9), p99 = pct(0.99), max = s.max_ms, samples = s.timed }
end

--- bus:stats() -> a snapshot table (see docs/bus.md)
function Bus:stats()
  local topics, subs, in_mailboxes, t = {}, {}, 0, now()
  for name, tp in pairs(self.topics) do
    local ql = tp.ql
    topics[name] = { published = tp.published, delivered = tp.delivered, failures = tp.failures,
                     dropped = tp.dropped, queued = ql[1] + ql[2] + ql[3] + tp.held_n,
                     queued_by_lane = by_lane(ql[1], ql[2], ql[3]), dropped_by_reason = copy(tp.drops),
                     undelivered = tp.undelivered, duplicates = tp.duplicates, reorder_gaps = tp.reorder_gaps,
                     held = tp.held_n, subscribers = tp.nsubs, priority = PRIO_NAME[tp.prio],
                     next_sequence = tp.expect }
  end
  for i, s in ipairs(self.subs) do
    local mb = s.mb
    in_mailboxes = in_mailboxes + mb.count
    subs[i] = { name = s.name, topic = s.topic, delivered = s.delivered, failures = s.failures,
                skipped = s.skipped, dropped = s.dropped, queued = mb.count, max_queue_size = s.max_queue_size,
                queued_by_lane = by_lane(mb[1].n, mb[2].n, mb[3].n), busy = s.busy,
                busy_ms = s.busy and t - s.busy_since or 0, handler_ms = handler_ms(s),
                quarantined = s.quarantined, probation = s.probation, quarantines = s.quarantines,
                quarantined_for_ms = s.quarantined and math.max(0, s.quarantine_until - t) or 0 }
  end
  local q = self.q
  return { published = self.published, delivered = self.delivered, failures = self.failures,
           dropped_events = self.dropped_events, dropped_by_reason = copy(self.drops),
           undelivered = self.undelivered, skipped = self.skipped,
           mailbox_dropped = self.mailbox_dropped, queued = self.pending, held = self.held,
           queued_by_lane = by_lane(q[1].n, q[2].n, q[3].n),
           in_mailboxes = in_mailboxes, duplicates = self.duplicates, reorder_gaps = self.reorder_gaps,
           missing_sequences = self.missing_sequences, max_queue_size = self.max_queue_size,
           max_subscribers = self.max_subscribers, subscriber_count = self.nsubs,
           evict_low_for_critical = self.evict_low_for_critical, critical_only = self.critical_only or false,
           topics = topics, subscribers = subs }
end

--- bus:close(): unsubscribe everyone, discard queued events, end the dispatcher.
function Bus:close()
  if self.closed then return end
  self.closed = true
  for i = #self.subs, 1, -1 do self:unsubscribe(self.subs[i]) end
  local q = self.q
  for p = 1, 3 do
    while q[p].n > 0 do
      local _, tp = pop_lane(q, p)
      tp.ql[p] = tp.ql[p] - 1
      drop(self, tp, "CLOSED")
      leave(self, p)
    end
  end
  for tp in pairs(self.holding) do
    for seq, h in pairs(tp.held) do
      tp.held[seq] = nil
      drop(self, tp, "CLOSED")
      leave(self, h[2])
    end
    tp.held_n = 0
  end
  self.holding, self.held = {}, 0
  if self.idle then self.idle = false; wake(self.task, nil, self.wtok) end
end

--- The request id of the delivery running in the current task (made on first
--- use; the error line of a failed handler carries it), or nil outside a handler.
function M.request_id(s)
  if not s then
    local t = sched.current()
    s = t and by_task[t]
    if not s then return nil end
  end
  if not s.rid then s.rid = logm.request_id() end
  return s.rid
end

------------------------------------------------------------------------------
-- The host's bus
------------------------------------------------------------------------------
local function cfg_opts(cfg)
  local c = type(cfg) == "table" and type(cfg.bus) == "table" and cfg.bus or {}
  return { max_queue_size = c.max_queue_size or 10000, max_subscribers = c.max_subscribers or 100,
           reorder_window_ms = c.reorder_window_ms or 50,
           evict_low_for_critical = c.evict_low_for_critical == true }
end

--- system(topic, event, priority): what the host publishes about itself
--- (thorp.breaker, thorp.health, thorp.shutdown, thorp.policy) goes to the
--- host's bus when there is one; never an error for the publisher.
function M.system(topic, ev, priority)
  local b = rawget(M, "default")
  if b then pcall(b.publish, b, topic, ev, priority) end
end

--- start(cfg, mode): create or reconfigure thorp.bus.default from cfg.bus.
function M.start(cfg)
  local b = rawget(M, "default")
  if b and not b.closed then b:configure(cfg_opts(cfg)) else b = M.new(cfg_opts(cfg)); rawset(M, "default", b) end
  -- the host's bus shares admission control with the RPC pool: in a burst,
  -- low-priority events are shed first, critical ones keep their headroom
  b.backpressure = require("thorp.backpressure").default
  -- once shutdown begins, only critical events are taken
  require("thorp.shutdown").on_begin(function() b.critical_only = true end)
  return true
end

function M.stop()
  local b = rawget(M, "default")
  if b then b:close(); rawset(M, "default", nil) end
end

return setmetatable(M, { __index = function(t, k)
  if k == "default" then
    local b = M.new(cfg_opts(require("thorp.config").current))
    rawset(t, "default", b)
    return b
  end
end })
