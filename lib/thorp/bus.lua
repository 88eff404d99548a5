-- bus: the in-process signal bus (thorp.bus; docs/bus.md).
--
--   local bus = thorp.bus.new{ max_queue_size = 10000, reorder_window_ms = 50 }
--   local sub = bus:subscribe("trade_signal", function(ev, topic) ... end, { name = "executor" })
--   bus:publish("trade_signal", { token = "BONK", sequence = 7 }, "critical")  --> true | false, { code, message }
--   bus:stats(); bus:unsubscribe(sub)
--
-- Everything lives in Lua (DESIGN.md, hot-path notes). This file is the
-- public API: it checks arguments, and publish() puts the event on one of
-- three ring-buffer lanes (critical, normal, low) of the bus queue (through
-- the reorder buffer when it has a `sequence`) and wakes the dispatcher.
-- The rest, one job per file under lib/thorp/bus/:
--   lanes.lua       the bus queue's priority rings
--   deliver.lua     the hot path: dispatcher, the topics' delivery rings, subscriber workers
--   reorder.lua     the per-topic reorder buffer for events with a `sequence`
--   quarantine.lua  handler failures: logging, the failure window, quarantine
--   stats.lua       counters and bus:stats()
-- The host's own bus (thorp.bus.default) is configured by start(cfg) and
-- wired to shutdown in thorp.host.
local sched = require "thorp.sched"
local check = require "thorp.check"
local priority = require "thorp.priority"
local lanes = require "thorp.bus.lanes"
local deliver = require "thorp.bus.deliver"
local reorder = require "thorp.bus.reorder"
local quarantine = require "thorp.bus.quarantine"
local stats = require "thorp.bus.stats"
local tnew = require "table.new"

local type, pairs, wake, hold, unhold = type, pairs, sched.wake, sched.hold, sched.unhold
local RANK, NAMES = priority.RANK, priority.NAMES
local push, lost, drop, leave, sequenced = lanes.push, stats.lost, stats.drop, deliver.leave, reorder.sequenced

local M = {}
M.PRIORITIES = NAMES

local Bus = {}
Bus.__index = Bus
local Sub = {}
Sub.__index = Sub
function Sub:__tostring() return ("bus subscriber %s (%s)"):format(self.name, self.topic) end

local function check_topic(fn, topic) return check.name(fn .. ": topic", topic) end

local function new_topic(self, name)
  local tp = { name = name, subs = {}, nsubs = 0, prio = RANK[self.topic_prio[name]] or 2, expect = 1,
               drops = {}, held_n = 0, delivered_gone = 0,
               published = 0, failures = 0, dropped = 0, undelivered = 0, duplicates = 0, reorder_gaps = 0 }
  deliver.rings(tp)
  self.topics[name] = tp
  return tp
end

local NEW_OPTS = { max_queue_size = true, max_subscribers = true, reorder_window_ms = true, backpressure = true,
                   quarantine_ms = true, evict_low_for_critical = true }

--- bus:configure{ max_queue_size=, max_subscribers=, reorder_window_ms=, quarantine_ms=,
---                evict_low_for_critical=, backpressure= } (in place)
function Bus:configure(opts, fn)
  fn = fn or "bus:configure"
  check.options(fn, opts, NEW_OPTS)
  if opts.max_queue_size ~= nil then self.max_queue_size = check.int(fn .. ": max_queue_size", opts.max_queue_size, 1) end
  if opts.max_subscribers ~= nil then
    self.max_subscribers = check.int(fn .. ": max_subscribers", opts.max_subscribers, 1)
  end
  if opts.reorder_window_ms ~= nil then
    self.reorder_window_ms = check.num(fn .. ": reorder_window_ms", opts.reorder_window_ms, 0)
  end
  if opts.quarantine_ms ~= nil then self.quarantine_ms = check.num(fn .. ": quarantine_ms", opts.quarantine_ms, 0) end
  if opts.evict_low_for_critical ~= nil then
    self.evict_low_for_critical = check.bool(fn .. ": evict_low_for_critical", opts.evict_low_for_critical)
  end
  if opts.backpressure ~= nil then
    local bp = opts.backpressure
    if type(bp) ~= "table" or type(bp.try_acquire) ~= "function" or type(bp.release) ~= "function" then
      check.bad(fn .. ": backpressure", bp, "an object with try_acquire(priority) and release(priority) methods")
    end
    self.backpressure = bp
  end
  self.guarded = self.closed or self.critical_only or self.backpressure ~= nil
  return self
end

--- bus:set_critical_only(on): refuse non-critical events with SHUTTING_DOWN (the
--- host sets it on its bus when shutdown begins).
function Bus:set_critical_only(on)
  self.critical_only = on and true or false
  self.guarded = self.closed or self.critical_only or self.backpressure ~= nil
end

--- thorp.bus.new{ max_queue_size = 10000, max_subscribers = 100, reorder_window_ms = 50,
---                quarantine_ms = 30000, evict_low_for_critical = false, backpressure = nil } -> bus
function M.new(opts)
  local self = setmetatable({
    max_queue_size = 10000, max_subscribers = 100, reorder_window_ms = 50, quarantine_ms = 30000,
    evict_low_for_critical = false, critical_only = false, guarded = false,
    q = lanes.new(), topics = {}, topic_prio = {}, subs = {}, by_name = {}, nsubs = 0, sub_seq = 0,
    holding = {}, held = 0, idle = false, touched = {}, ntouched = 0, stamp = 1, closed = false, drops = {}, delivered_gone = 0,
    failures = 0, dropped_events = 0, undelivered = 0, skipped = 0,
    mailbox_dropped = 0, duplicates = 0, reorder_gaps = 0, missing_sequences = 0,
  }, Bus)
  if opts ~= nil then
    if type(opts) ~= "table" then check.bad("bus.new: options", opts, "a table or nil") end
    Bus.configure(self, opts, "bus.new")
  end
  return self
end

-- Make room for a critical event: drop the oldest queued low one.
local function evict_low(self)
  local q = self.q
  if q[3].n == 0 then return false end
  local _, tp = lanes.pop(q, 3)
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

-- The checks publish() makes only when something is unusual.
local function refuse(self, tp, p)
  if self.closed then lost(self, tp, "CLOSED"); return "CLOSED" end
  if self.critical_only and p ~= 1 then lost(self, tp, "SHUTTING_DOWN"); return "SHUTTING_DOWN" end
  if self.q.count + self.held >= self.max_queue_size
     and not (p == 1 and self.evict_low_for_critical and evict_low(self)) then
    lost(self, tp, "QUEUE_FULL")
    return "QUEUE_FULL"
  end
  local bp = self.backpressure
  if bp then
    local ok
    if bp.admit then ok = bp:admit(NAMES[p]) else ok = bp:try_acquire(NAMES[p]).accepted end
    if not ok then lost(self, tp, "BACKPRESSURE_REJECTED"); return "BACKPRESSURE_REJECTED" end
  end
end

--- bus:publish(topic, event, priority) -> true | false, { code = "QUEUE_FULL" | "BACKPRESSURE_REJECTED" |
--- "SHUTTING_DOWN" | "CLOSED", message }
---                                        | "SHUTTING_DOWN" | "CLOSED"
function Bus:publish(topic, ev, prio)
  local tp = self.topics[topic]
  if not tp then
    check_topic("bus:publish", topic)
    tp = new_topic(self, topic)
  end
  local p = tp.prio
  if prio ~= nil then p = RANK[prio] or priority.check("bus:publish: priority", prio) end
  local s = type(ev) == "table" and ev.sequence
  if s and (type(s) ~= "number" or s < 1 or s % 1 ~= 0) then
    check.bad("bus:publish: event.sequence", s, "integer >= 1 or nil")
  end
  local q = self.q
  if self.guarded or q.count + self.held >= self.max_queue_size then
    local why = refuse(self, tp, p)
    if why then return false, REFUSED[why] end
  end
  tp.published = tp.published + 1
  hold(1)
  if s then
    sequenced(self, tp, p, ev, s) -- queued, held back or dropped
  else
    push(q, p, ev, tp) -- (the JIT inlines it)
  end
  if self.idle then
    self.idle = false
    wake(self.task, nil, self.wtok)
  elseif not self.task then
    self.task = sched.spawn_opts({ daemon = true, name = "bus-dispatch" }, deliver.dispatcher, self)
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
  check.callable(fn .. ": handler", handler)
  opts = check.options(fn, opts, SUB_OPTS)
  local name = opts.name
  if name ~= nil then check.name(fn .. ": opts.name", name) end
  if name and self.by_name[name] then
    check.raise(("%s: a subscriber named %q already exists (use bus:replace_handler to change its handler)")
      :format(fn, name))
  end
  if self.closed then check.raise(fn .. ": the bus is closed") end
  if self.nsubs >= self.max_subscribers then
    check.raise(("%s: max_subscribers (%d) reached; unsubscribe one or raise max_subscribers"):format(
      fn, self.max_subscribers))
  end
  local window = opts.failure_window and check.int(fn .. ": opts.failure_window", opts.failure_window, 1, 10000) or 10
  local s = setmetatable({
    bus = self, topic = topic, handler = handler,
    max_failure_rate = opts.max_failure_rate and check.rate(fn .. ": opts.max_failure_rate", opts.max_failure_rate)
      or 0.5,
    quarantine_ms = opts.quarantine_ms and check.num(fn .. ": opts.quarantine_ms", opts.quarantine_ms, 0)
      or self.quarantine_ms,
    max_queue_size = opts.max_queue_size and check.int(fn .. ": opts.max_queue_size", opts.max_queue_size, 1)
      or self.max_queue_size,
    window = window, win = {}, wi = 1, wn = 0, wfails = 0,
    delivered = 0, failures = 0, skipped = 0, dropped = 0, quarantines = 0,
    quarantined = false, probation = false, quarantine_until = 0, idle = false, napping = false, nap_wake = 0,
    busy = false, closed = false, rid = false, rid_k = -1, watch = false, left = 0,
    busy_since = 0, times = tnew(stats.RING, 0), ti = 1, timed = 0, max_ms = 0, log_at = -1e9, log_n = 0,
    log_skipped = 0,
  }, Sub)
  for i = 1, window do s.win[i] = false end
  self.sub_seq = self.sub_seq + 1
  s.name = name or (topic .. "#" .. self.sub_seq)
  local tp = self.topics[topic] or new_topic(self, topic)
  s.tp = tp
  s.cur = { tp[1].head, tp[2].head, tp[3].head } -- its mailbox starts empty
  tp.nsubs = tp.nsubs + 1
  tp.subs[tp.nsubs] = s
  self.subs[#self.subs + 1] = s
  self.by_name[s.name] = s
  self.nsubs = self.nsubs + 1
  -- the task name is what the host's watchdog reports for a handler that runs too long
  s.task = sched.spawn_opts({ daemon = true, name = "bus:" .. s.name }, deliver.worker, self, s)
  return s
end

local function remove(list, x)
  for i = #list, 1, -1 do if list[i] == x then table.remove(list, i) end end
end

--- bus:unsubscribe(sub_or_name) -> true | false (not subscribed). Its queued events are discarded.
function Bus:unsubscribe(s)
  if type(s) == "string" then s = self.by_name[s] end
  if type(s) ~= "table" or s.bus ~= self or s.closed then return false end
  local tp = s.tp
  remove(tp.subs, s)
  tp.nsubs = #tp.subs
  remove(self.subs, s)
  self.by_name[s.name] = nil
  self.nsubs = self.nsubs - 1
  stats.retire(self, s)
  local n = deliver.pending(s)
  s.closed = true
  local c, huge = s.cur, math.huge
  c[1], c[2], c[3] = huge, huge, huge -- past any ring's head: its worker finds nothing more
  deliver.trim(tp)
  if n > 0 then
    s.dropped = s.dropped + n
    drop(self, tp, "UNSUBSCRIBED", n)
    unhold(n)
  end
  if s.idle then s.idle = false; wake(s.task, nil, s.wtok) end -- the worker sees closed and ends
  return true
end
Sub.unsubscribe = function(s) return s.bus:unsubscribe(s) end
--- sub:queued() -> events waiting in its mailbox
Sub.queued = deliver.pending

--- bus:find_subscriber(name) -> sub | nil
function Bus:find_subscriber(name) return self.by_name[name] end

--- bus:replace_handler(name, fn) -> sub | nil, err. Keeps the mailbox and the
--- topic's sequence state; lifts a quarantine (the new code gets a fresh window).
function Bus:replace_handler(name, handler)
  check.callable("bus:replace_handler: handler", handler)
  local s = self.by_name[name]
  if not s then return nil, ("no subscriber named %s"):format(check.show(name)) end
  s.handler = handler
  quarantine.lift(s)
  return s
end

--- bus:set_topic_priorities{ topic = "critical"|"normal"|"low", ... }: the
--- priority of an event published without one (replaces the previous map).
function Bus:set_topic_priorities(map)
  local fn = "bus:set_topic_priorities"
  if type(map) ~= "table" then check.bad(fn .. ": map", map, "a table of topic = priority") end
  local copy = {}
  for k, v in pairs(map) do
    check_topic(fn, k)
    priority.check(("%s: priority of topic %q"):format(fn, k), v)
    copy[k] = v
  end
  self.topic_prio = copy
  for name, tp in pairs(self.topics) do tp.prio = RANK[copy[name]] or 2 end
  return true
end

--- bus:stats() -> a snapshot table (see docs/bus.md)
Bus.stats = stats.stats

--- bus:close(): unsubscribe everyone, discard queued events, end the dispatcher.
function Bus:close()
  if self.closed then return end
  self.closed, self.guarded = true, true
  for i = #self.subs, 1, -1 do self:unsubscribe(self.subs[i]) end
  local q = self.q
  for p = 1, 3 do
    while q[p].n > 0 do
      local _, tp = lanes.pop(q, p)
      drop(self, tp, "CLOSED")
      leave(self, p)
    end
  end
  reorder.discard(self, function(tp, p) drop(self, tp, "CLOSED"); leave(self, p) end)
  if self.idle then self.idle = false; wake(self.task, nil, self.wtok) end
end

--- The request id of the delivery running in the current task (made on first
--- use; the error line of a failed handler carries it), or nil outside a handler.
M.request_id = quarantine.request_id

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
function M.system(topic, ev, prio)
  local b = rawget(M, "default")
  if b then pcall(b.publish, b, topic, ev, prio) end
end

--- start(cfg, mode): create or reconfigure thorp.bus.default from cfg.bus. Its
--- admission control and shutdown behaviour are wired in thorp.host.
function M.start(cfg)
  local b = rawget(M, "default")
  if b and not b.closed then b:configure(cfg_opts(cfg)) else b = M.new(cfg_opts(cfg)); rawset(M, "default", b) end
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
