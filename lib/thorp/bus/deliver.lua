-- bus.deliver: the hot path, from the bus queue to the handlers.
--
-- publish() (in thorp.bus) appends to the bus queue and wakes the bus's
-- dispatcher task. The dispatcher drains the queue's lanes, critical first,
-- in batches of BATCH events, passes sequenced events through the reorder
-- buffer, and copies each event into the mailbox of every subscriber of its
-- topic (route). Each subscriber's worker task handles its mailbox, most
-- urgent lane first, in batches of up to WORKER_BATCH events inside one
-- xpcall (a handler error unwinds to the worker, which counts it and goes
-- on with the next event), so a handler that yields only delays its own
-- next event and no closure or table is made per event.
--
-- Holds: each event queued or in a mailbox holds the scheduler once (per
-- copy), so `thorp exec` does not exit with events pending; the holds are
-- adjusted once per batch.
local sched = require "thorp.sched"
local priority = require "thorp.priority"
local lanes = require "thorp.bus.lanes"
local stats = require "thorp.bus.stats"
local reorder = require "thorp.bus.reorder"
local quarantine = require "thorp.bus.quarantine"
local band = require("bit").band

local type, xpcall, min, floor = type, xpcall, math.min, math.floor
local hold, unhold, wake, co_yield = sched.hold, sched.unhold, sched.wake, coroutine.yield
local now = sched.now
local drop, grow, sequenced, release = stats.drop, lanes.grow, reorder.sequenced, quarantine.release
local NAMES = priority.NAMES

local M = {}
local BATCH = 1024      -- events the dispatcher routes before giving the loop a turn
local WORKER_BATCH = 4 * BATCH -- and a worker handles (more, so that a worker that fell behind catches up)
local BUDGET_MS = 1     -- a worker waits for the loop's next turn after this much handler time
local NEXT_TURN_MS = 0.001 -- (by sleeping this long: any timer > 0 fires on the next turn only)
local SAMPLE = 16       -- time 1 handler call in SAMPLE ...
local SLOW_MS = 0.005   -- ... or every call while the last timed one took longer than this
local RING = stats.RING
M.BATCH = BATCH

--- leave(bus, lane): an event leaves the bus queue (routed, duplicate or discarded).
local function leave(self, p)
  unhold(1)
  local bp = self.backpressure
  if bp then bp:release(NAMES[p]) end
end
M.leave = leave

-- Make room in a full mailbox for a critical event: drop its oldest low one.
local function evict_mail(self, s, tp)
  lanes.pop(s.mb, 3)
  s.dropped = s.dropped + 1
  self.mailbox_dropped = self.mailbox_dropped + 1
  drop(self, tp, "EVICTED")
  unhold(1)
  return true
end

-- Put ev in subscriber s's mailbox (lane p); 1 when it took it, 0 when
-- skipped (quarantined) or dropped (mailbox full). No loop in here, so that
-- LuaJIT compiles it into the dispatcher's trace.
local function copy(self, s, tp, p, ev)
  local mb = s.mb
  local c = mb.count
  if s.quarantined and not release(s, now()) then
    s.skipped = s.skipped + 1
    self.skipped = self.skipped + 1
    return 0
  elseif c >= s.max_queue_size
         and not (p == 1 and self.evict_low_for_critical and mb[3].n > 0 and evict_mail(self, s, tp)) then
    s.dropped = s.dropped + 1
    self.mailbox_dropped = self.mailbox_dropped + 1
    drop(self, tp, "MAILBOX_FULL")
    return 0
  end
  local r = mb[p]
  local m = r.n
  if m == r.cap then grow(r) end
  r.e[band(r.head + m, r.cap - 1)] = ev
  r.n = m + 1
  mb.count = mb.count + 1
  if s.idle then
    s.idle = false
    wake(s.task, nil, s.wtok)
  elseif s.napping and (p == 1 or mb.count >= s.nap_wake) then
    s.napping = false -- a critical event, or the mailbox filling fast: do not wait for the next turn
    wake(s.task)
  end
  return 1
end

--- route(bus, tp, lane, ev) -> copies: put ev in the mailbox of every subscriber
--- of tp. The caller holds the scheduler once per copy. A topic with one
--- subscriber (the common case) takes no loop: a loop here would be a trace of
--- its own, entered and left on every event.
local function route(self, tp, p, ev)
  local n = tp.nsubs
  local subs = tp.subs
  if n == 1 then return copy(self, subs[1], tp, p, ev) end
  if n == 0 then
    self.undelivered = self.undelivered + 1
    tp.undelivered = tp.undelivered + 1
    return 0
  end
  local k = 0
  for i = 1, n do k = k + copy(self, subs[i], tp, p, ev) end
  return k
end
M.route = route
reorder.wire(route, leave)

-- One batch: every queued critical event, then up to BATCH normal and low
-- ones (critical events count against the BATCH too). Nothing here runs
-- user code (so nothing can publish meanwhile) except a user-supplied
-- backpressure object's release, which is called after the lane is updated.
local function dispatch(self)
  local q, budget, holds = self.q, BATCH, 0
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
        local s = type(ev) == "table" and ev.sequence
        if s then
          sequenced(self, tp, p, ev, s)
        else
          holds = holds + route(self, tp, p, ev) - 1 -- its copies replace the queue's hold
          plain = plain + 1
        end
      end
      r.head, r.n = h, r.n - n
      q.count = q.count - n
      budget = budget - n
      local bp = self.backpressure
      if bp then
        local name = NAMES[p]
        for _ = 1, plain do bp:release(name) end
      end
    end
  end
  if holds > 0 then hold(holds) elseif holds < 0 then unhold(-holds) end
end

--- dispatcher(bus): the bus's task; parks when the queue is empty (publish wakes it).
function M.dispatcher(self)
  local q = self.q
  while not self.closed do
    dispatch(self)
    local next_at = next(self.holding) and reorder.expire(self)
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

-- Handle up to max events of s's mailbox, most urgent lane first; stops early
-- when the mailbox is empty or the handlers used the batch's time budget.
-- Returns over_budget, handled. A handler error unwinds out of here (the
-- event it was handling is popped and still holds the scheduler).
local function run(self, s, t_batch, max)
  local times, topic = s.times, s.topic
  local left, n, over = s.left, 0, false
  s.left = 0 -- if a handler raises, the next call is timed
  while n < max do
    local mb = s.mb -- unsubscribe replaces it
    local c = mb.count
    if c == 0 then break end
    local r = mb[1]
    if r.n == 0 then r = mb[2]; if r.n == 0 then r = mb[3] end end
    local i = r.head
    local ev = r.e[i]
    r.e[i] = nil
    r.head = band(i + 1, r.cap - 1)
    r.n = r.n - 1
    mb.count = c - 1
    n = n + 1
    if s.quarantined then
      s.skipped = s.skipped + 1
      self.skipped = self.skipped + 1
    else
      if left > 0 then
        left = left - 1
        s.handler(ev, topic)
      else
        local t0 = now()
        s.busy_since = t0
        s.handler(ev, topic)
        local t1 = now()
        local d = t1 - t0
        local k = s.ti
        times[k] = d
        s.ti = k < RING and k + 1 or 1
        s.timed = s.timed + 1
        if d > s.max_ms then s.max_ms = d end
        left = d > SLOW_MS and 0 or SAMPLE - 1
        if t1 - t_batch > BUDGET_MS then over = true end
      end
      s.delivered = s.delivered + 1
      if s.watch then quarantine.record(s, false) end
    end
    unhold(1)
    if over then break end
  end
  s.left = left
  return over, n
end

local traceback, failed = quarantine.traceback, quarantine.failed

--- worker(bus, sub): a subscriber's task ("bus:<name>", what the watchdog reports).
function M.worker(self, s)
  quarantine.adopt(s)
  while not s.closed do
    if s.mb.count == 0 then
      s.wtok = sched.token()
      s.idle = true
      sched.suspend()
    else
      -- critical events still in the bus queue: let the dispatcher route them first
      if self.q[1].n > 0 then co_yield() end
      local t_batch = now()
      s.busy_since, s.busy = t_batch, true
      local done, over = 0, false
      repeat
        local ok, o, k = xpcall(run, traceback, self, s, t_batch, WORKER_BATCH - done)
        if ok then
          over, done = o, done + k
        else -- the handler of the event just popped raised o
          failed(self, s, o)
          unhold(1)
          done = done + 1
        end
      until over or done >= WORKER_BATCH or s.mb.count == 0
      s.busy = false
      if over then
        -- past the time budget: nap until the loop's next turn so timers, I/O
        -- and the inbox get their turn (a plain yield runs again in this one);
        -- route() cuts the nap short for a critical event, or before the mailbox
        -- could overflow (other tasks still publishing in this turn)
        local c, mx = s.mb.count, s.max_queue_size
        s.napping, s.nap_wake = true, min(c + floor(mx / 2), mx - BATCH)
        sched.sleep(NEXT_TURN_MS)
        s.napping = false
      elseif s.mb.count > 0 then
        co_yield()
      end
    end
  end
  stats.retire(self, s)
end

return M
