-- bus: the in-process signal bus (thorp.bus; docs/bus.md).
--
--   local bus = thorp.bus.new{ max_queue_size = 10000, reorder_window_ms = 50 }
--   local sub = bus:subscribe("trade_signal", function(ev, topic) ... end, { name = "executor" })
--   bus:publish("trade_signal", { token = "BONK", sequence = 7 }, "critical")  --> true | false, reason
--   bus:stats(); bus:unsubscribe(sub)
--
-- Everything lives in Lua (DESIGN.md, hot-path notes). publish() validates,
-- pushes the event onto one of three ring-buffer lanes (critical, normal,
-- low) and wakes the bus's dispatcher task, which runs on a later loop turn.
-- The dispatcher pops the highest lane first, puts events that carry a
-- `sequence` through the topic's reorder buffer, and copies each event into
-- the mailbox (three lanes again) of every subscriber of its topic. Each
-- subscriber has its own worker task that handles its mailbox one event at
-- a time and is resumed once per batch, so a handler that yields only delays
-- its own next event. Handler errors are caught and logged with a request id;
-- a subscriber whose failures over its last `failure_window` deliveries
-- exceed max_failure_rate * failure_window is quarantined for quarantine_ms,
-- then let back on probation with a fresh window.
--
-- Liveness: every event published and not yet handled holds the scheduler
-- (sched.hold), so `thorp exec` does not exit with events pending; the
-- dispatcher and workers themselves are daemon tasks.
local sched = require "thorp.sched"
local logm = require "thorp.log"
local log = logm.for_module("bus")
local band = require("bit").band

local type, tostring, pairs, xpcall, now = type, tostring, pairs, xpcall, sched.now
local hold, unhold, wake = sched.hold, sched.unhold, sched.wake
local co_yield = coroutine.yield

local M = {}

local PRIO = { critical = 1, normal = 2, low = 3 }
local PRIO_NAME = { "critical", "normal", "low" }
M.PRIORITIES = PRIO_NAME
local BATCH = 1024 -- events a dispatcher or worker handles before giving the loop a turn

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
-- Lanes: three power-of-two ring buffers of (event, extra) pairs
------------------------------------------------------------------------------
local function new_lanes()
  local l = { count = 0 }
  for p = 1, 3 do l[p] = { head = 0, n = 0, cap = 16, e = {}, x = {} } end
  return l
end

local function push(l, p, e, x)
  local r = l[p]
  local cap = r.cap
  if r.n == cap then -- grow: unroll into a ring twice the size
    local ne, nx = {}, {}
    for k = 0, r.n - 1 do
      local j = band(r.head + k, cap - 1)
      ne[k], nx[k] = r.e[j], r.x[j]
    end
    r.e, r.x, r.head, cap = ne, nx, 0, cap * 2
    r.cap = cap
  end
  local i = band(r.head + r.n, cap - 1)
  r.e[i], r.x[i] = e, x
  r.n = r.n + 1
  l.count = l.count + 1
end

-- Pop from the highest non-empty lane; the caller checks l.count > 0.
local function pop(l)
  local p = l[1].n > 0 and 1 or (l[2].n > 0 and 2 or 3)
  local r = l[p]
  local i = r.head
  local e, x = r.e[i], r.x[i]
  r.e[i], r.x[i] = nil, nil
  r.head = band(i + 1, r.cap - 1)
  r.n = r.n - 1
  l.count = l.count - 1
  return p, e, x
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
  local tp = { name = name, subs = {}, prio = PRIO[self.topic_prio[name]] or 2, expect = 1,
               published = 0, delivered = 0, failures = 0, dropped = 0, queued = 0, undelivered = 0,
               duplicates = 0, reorder_gaps = 0 }
  self.topics[name] = tp
  return tp
end

-- The event leaves the bus queue (routed, undelivered, duplicate or discarded).
local function done(self, tp, p)
  self.pending = self.pending - 1
  tp.queued = tp.queued - 1
  unhold(1)
  if self.backpressure then self.backpressure:release(PRIO_NAME[p]) end
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

local function route(self, tp, p, ev)
  local subs = tp.subs
  local n = #subs
  if n == 0 then
    self.undelivered = self.undelivered + 1
    tp.undelivered = tp.undelivered + 1
  else
    local k = 0
    for i = 1, n do
      local s = subs[i]
      if s.quarantined and not release_quarantine(s, now()) then
        s.skipped = s.skipped + 1
        self.skipped = self.skipped + 1
      elseif s.mb.count >= s.max_queue_size then
        s.dropped = s.dropped + 1
        self.mailbox_dropped = self.mailbox_dropped + 1
      else
        push(s.mb, p, ev)
        k = k + 1
        wake_sub(s)
      end
    end
    if k > 0 then hold(k) end
  end
  done(self, tp, p)
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
  end
  self.holding[tp] = nil
end

local function sequenced(self, tp, p, ev, s)
  local expect = tp.expect
  if s == expect then
    tp.expect = s + 1
    route(self, tp, p, ev)
    if tp.held_n and tp.held_n > 0 then flush(self, tp) end
  elseif s < expect or (tp.held and tp.held[s]) then
    self.duplicates = self.duplicates + 1
    tp.duplicates = tp.duplicates + 1
    done(self, tp, p)
  else
    if not tp.held then tp.held, tp.held_n = {}, 0 end
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

local function dispatcher(self)
  local q = self.q
  while not self.closed do
    local n = 0
    while q.count > 0 and n < BATCH do
      local p, ev, tp = pop(q)
      n = n + 1
      local s = type(ev) == "table" and ev.sequence
      if s then sequenced(self, tp, p, ev, s) else route(self, tp, p, ev) end
    end
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

local by_task = setmetatable({}, { __mode = "k" })

local function worker(self, s)
  by_task[sched.current()] = s
  local mb, tp = s.mb, s.tp
  local n = 0
  while not s.closed do
    if mb.count == 0 then
      n = 0
      s.wtok = sched.token()
      s.idle = true
      sched.suspend()
    elseif n >= BATCH then
      n = 0
      co_yield()
    else
      n = n + 1
      local _, ev = pop(mb)
      if s.quarantined then
        s.skipped = s.skipped + 1
        self.skipped = self.skipped + 1
      else
        s.rid, s.busy = false, true
        local ok, err = xpcall(s.handler, traceback, ev, s.topic)
        s.busy = false
        if ok then
          s.delivered = s.delivered + 1
          tp.delivered = tp.delivered + 1
          self.delivered = self.delivered + 1
        else
          s.failures = s.failures + 1
          tp.failures = tp.failures + 1
          self.failures = self.failures + 1
          log.error("bus handler failed", { request_id = M.request_id(s), subscriber = s.name,
                                             topic = s.topic, error = err })
        end
        record(s, not ok)
      end
      unhold(1)
    end
  end
end

------------------------------------------------------------------------------
-- Public API
------------------------------------------------------------------------------
local NEW_OPTS = { max_queue_size = true, max_subscribers = true, reorder_window_ms = true, backpressure = true,
                   quarantine_ms = true }

--- bus:configure{ max_queue_size=, max_subscribers=, reorder_window_ms=, quarantine_ms= } (in place)
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
---                quarantine_ms = 30000, backpressure = nil } -> bus
function M.new(opts)
  local self = setmetatable({
    max_queue_size = 10000, max_subscribers = 100, reorder_window_ms = 50, quarantine_ms = 30000,
    q = new_lanes(), topics = {}, topic_prio = {}, subs = {}, by_name = {}, nsubs = 0, sub_seq = 0,
    holding = {}, pending = 0, held = 0, idle = false, closed = false,
    published = 0, delivered = 0, failures = 0, dropped_events = 0, undelivered = 0, skipped = 0,
    mailbox_dropped = 0, duplicates = 0, reorder_gaps = 0, missing_sequences = 0,
  }, Bus)
  if opts ~= nil then
    if type(opts) ~= "table" then bad("bus.new", "options", "a table or nil", opts) end
    Bus.configure(self, opts, "bus.new")
  end
  return self
end

local function refuse(self, tp, reason)
  self.dropped_events = self.dropped_events + 1
  tp.dropped = tp.dropped + 1
  return false, reason
end

--- bus:publish(topic, event, priority) -> true | false, "QUEUE_FULL" | "BACKPRESSURE_REJECTED" | "CLOSED"
function Bus:publish(topic, ev, priority)
  if type(topic) ~= "string" or topic == "" then bad("bus:publish", "topic", "a non-empty string", topic) end
  local tp = self.topics[topic] or new_topic(self, topic)
  local p = tp.prio
  if priority ~= nil then p = check_prio("bus:publish", priority) end
  if type(ev) == "table" then
    local s = ev.sequence
    if s ~= nil and (type(s) ~= "number" or s < 1 or s % 1 ~= 0) then
      bad("bus:publish", "event.sequence", "an integer >= 1 or nil", s)
    end
  end
  if self.pending >= self.max_queue_size then return refuse(self, tp, "QUEUE_FULL") end
  if self.closed then return refuse(self, tp, "CLOSED") end
  if self.critical_only and p ~= 1 then return refuse(self, tp, "SHUTTING_DOWN") end
  local bp = self.backpressure
  if bp then
    local ok
    if bp.admit then ok = bp:admit(PRIO_NAME[p]) else ok = bp:try_acquire(PRIO_NAME[p]).accepted end
    if not ok then return refuse(self, tp, "BACKPRESSURE_REJECTED") end
  end
  push(self.q, p, ev, tp)
  self.pending = self.pending + 1
  self.published = self.published + 1
  tp.queued = tp.queued + 1
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
    bus = self, topic = topic, handler = handler, mb = new_lanes(),
    max_failure_rate = opts.max_failure_rate and check_num(fn, "opts.max_failure_rate", opts.max_failure_rate, 0, 1)
      or 0.5,
    quarantine_ms = opts.quarantine_ms and check_num(fn, "opts.quarantine_ms", opts.quarantine_ms, 0)
      or self.quarantine_ms,
    max_queue_size = opts.max_queue_size and check_int(fn, "opts.max_queue_size", opts.max_queue_size, 1)
      or self.max_queue_size,
    window = window, win = {}, wi = 1, wn = 0, wfails = 0,
    delivered = 0, failures = 0, skipped = 0, dropped = 0, quarantines = 0,
    quarantined = false, probation = false, quarantine_until = 0, idle = false, busy = false, closed = false,
  }, Sub)
  for i = 1, window do s.win[i] = false end
  self.sub_seq = self.sub_seq + 1
  s.name = name or (topic .. "#" .. self.sub_seq)
  s.tp = self.topics[topic] or new_topic(self, topic)
  local subs = s.tp.subs
  subs[#subs + 1] = s
  self.subs[#self.subs + 1] = s
  self.by_name[s.name] = s
  self.nsubs = self.nsubs + 1
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
  remove(s.tp.subs, s)
  remove(self.subs, s)
  self.by_name[s.name] = nil
  self.nsubs = self.nsubs - 1
  local n = s.mb.count
  s.mb = new_lanes()
  s.dropped = s.dropped + n
  if n > 0 then unhold(n) end
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

--- bus:stats() -> a snapshot table (see docs/bus.md)
function Bus:stats()
  local topics, subs, in_mailboxes = {}, {}, 0
  for name, tp in pairs(self.topics) do
    topics[name] = { published = tp.published, delivered = tp.delivered, failures = tp.failures,
                     dropped = tp.dropped, queued = tp.queued, undelivered = tp.undelivered,
                     duplicates = tp.duplicates, reorder_gaps = tp.reorder_gaps, held = tp.held_n or 0,
                     subscribers = #tp.subs, priority = PRIO_NAME[tp.prio], next_sequence = tp.expect }
  end
  for i, s in ipairs(self.subs) do
    in_mailboxes = in_mailboxes + s.mb.count
    subs[i] = { name = s.name, topic = s.topic, delivered = s.delivered, failures = s.failures,
                skipped = s.skipped, dropped = s.dropped, queued = s.mb.count, busy = s.busy,
                quarantined = s.quarantined, probation = s.probation, quarantines = s.quarantines,
                quarantined_for_ms = s.quarantined and math.max(0, s.quarantine_until - now()) or 0 }
  end
  return { published = self.published, delivered = self.delivered, failures = self.failures,
           dropped_events = self.dropped_events, undelivered = self.undelivered, skipped = self.skipped,
           mailbox_dropped = self.mailbox_dropped, queued = self.pending, held = self.held,
           in_mailboxes = in_mailboxes, duplicates = self.duplicates, reorder_gaps = self.reorder_gaps,
           missing_sequences = self.missing_sequences, max_queue_size = self.max_queue_size,
           max_subscribers = self.max_subscribers, subscriber_count = self.nsubs,
           topics = topics, subscribers = subs }
end

--- bus:close(): unsubscribe everyone, discard queued events, end the dispatcher.
function Bus:close()
  if self.closed then return end
  self.closed = true
  for i = #self.subs, 1, -1 do self:unsubscribe(self.subs[i]) end
  local q = self.q
  while q.count > 0 do
    local p, _, tp = pop(q)
    done(self, tp, p)
  end
  for tp in pairs(self.holding) do
    for seq, h in pairs(tp.held) do tp.held[seq] = nil; done(self, tp, h[2]) end
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
           reorder_window_ms = c.reorder_window_ms or 50 }
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
