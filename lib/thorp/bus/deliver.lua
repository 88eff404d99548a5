-- bus.deliver: the hot path, from the bus queue to the handlers.
--
-- publish() (in thorp.bus) appends to the bus queue and wakes the bus's
-- dispatcher task (events with a `sequence` go through the reorder buffer
-- first). The dispatcher drains the queue's lanes, critical first, in
-- batches of BATCH events, and appends each event ONCE to its topic's
-- delivery ring for its lane (route). Every subscriber of the topic reads
-- those rings with its own cursors: its mailbox is what lies between its
-- cursors and the rings' heads, so a fourth subscriber costs a cursor, not a
-- copy per event. After each batch, finish() bounds each mailbox, wakes the
-- workers and forgets the events every subscriber has passed (trim).
--
-- Each subscriber's worker task handles its mailbox, most urgent lane
-- first, in batches of up to WORKER_BATCH events inside one xpcall (a
-- handler error unwinds to the worker, which counts it and goes on with the
-- next event), so a handler that yields only delays its own next event and
-- no closure or table is made per event.
--
-- Holds: each event queued or in a mailbox holds the scheduler once (per
-- copy), so `thorp exec` does not exit with events pending; the dispatcher
-- adjusts them once per batch, the worker releases one per event handled.
local sched = require "thorp.sched"
local priority = require "thorp.priority"
local stats = require "thorp.bus.stats"
local reorder = require "thorp.bus.reorder"
local quarantine = require "thorp.bus.quarantine"
local band = require("bit").band
local tnew = require "table.new"

local xpcall, min, floor = xpcall, math.min, math.floor
local hold, unhold, wake, co_yield = sched.hold, sched.unhold, sched.wake, coroutine.yield
local now = sched.now
local drop, release = stats.drop, quarantine.release
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

-- Each topic has three delivery rings tp[1..3] (critical, normal, low), in
-- absolute positions: ring r holds the events at positions r.tail .. r.head - 1
-- in r.e[band(pos, r.mask)]. Each subscriber s of the topic reads them with its
-- own cursors s.cur[1..3]: its mailbox is, per lane, cur .. head - 1. The
-- dispatcher appends each event once, whatever the number of subscribers.
function M.rings(tp)
  for p = 1, 3 do tp[p] = { e = tnew(16, 0), mask = 15, head = 0, tail = 0 } end
end

-- Double a full ring.
local function grow(r)
  local e, mask = r.e, r.mask
  local nmask = mask * 2 + 1
  local ne = tnew(nmask + 1, 0)
  for i = r.tail, r.head - 1 do ne[band(i, nmask)] = e[band(i, mask)] end
  r.e, r.mask = ne, nmask
end

--- pending(sub) -> events in its mailbox (0 once unsubscribed)
local function pending(s)
  if s.closed then return 0 end
  local tp, c = s.tp, s.cur
  return tp[1].head - c[1] + tp[2].head - c[2] + tp[3].head - c[3]
end
M.pending = pending

--- trim(tp): forget the events every subscriber of tp has passed (the ring
--- keeps no reference to them).
local function trim(tp)
  local subs, ns = tp.subs, tp.nsubs
  for p = 1, 3 do
    local r = tp[p]
    local low = r.head
    for k = 1, ns do
      local c = subs[k].cur[p]
      if c < low then low = c end
    end
    local t = r.tail
    if low > t then
      local e, mask = r.e, r.mask
      for i = t, low - 1 do e[band(i, mask)] = nil end
      r.tail = low
    end
  end
end
M.trim = trim

--- route(bus, tp, lane, ev): append ev to tp's ring for lane p (its copies
--- hold the scheduler from finish()); counted as undelivered when tp has no
--- subscriber. No loop in here, so that it compiles into the dispatcher's trace.
local function route(self, tp, p, ev)
  if tp.nsubs == 0 then
    self.undelivered = self.undelivered + 1
    tp.undelivered = tp.undelivered + 1
    return
  end
  local r = tp[p]
  local h = r.head
  if h - r.tail > r.mask then grow(r) end
  r.e[band(h, r.mask)] = ev
  r.head = h + 1
  if tp.stamp ~= self.stamp then
    tp.stamp, tp.fresh, tp.crit = self.stamp, 0, false
    local k = self.ntouched + 1
    self.ntouched = k
    self.touched[k] = tp
  end
  tp.fresh = tp.fresh + 1
  if p == 1 then tp.crit = true end
end
M.route = route

-- A mailbox over its bound by x: it loses x events, the lowest lane first and
-- the oldest first (a critical arrival takes low ones as EVICTED when the bus
-- evicts low for critical). Returns the number lost.
local function overflow(self, s, tp, x, crit)
  local c, lost = s.cur, 0
  for p = 3, 1, -1 do
    local k = min(x - lost, tp[p].head - c[p])
    if k > 0 then
      c[p] = c[p] + k
      lost = lost + k
      drop(self, tp, (p == 3 and crit and self.evict_low_for_critical) and "EVICTED" or "MAILBOX_FULL", k)
    end
  end
  s.dropped = s.dropped + lost
  self.mailbox_dropped = self.mailbox_dropped + lost
  return lost
end

-- After a batch: for each topic that got events, hold the scheduler once per
-- copy, bound each subscriber's mailbox, wake its worker, and trim the rings.
local function finish(self)
  local touched, holds = self.touched, 0
  for k = 1, self.ntouched do
    local tp = touched[k]
    touched[k] = nil
    local subs, ns, crit = tp.subs, tp.nsubs, tp.crit
    holds = holds + tp.fresh * ns
    local h1, h2, h3 = tp[1].head, tp[2].head, tp[3].head
    for j = 1, ns do
      local s = subs[j]
      local c = s.cur
      local n = h1 - c[1] + h2 - c[2] + h3 - c[3]
      local x = n - s.max_queue_size
      if x > 0 then
        holds = holds - overflow(self, s, tp, x, crit)
        n = n - x
      end
      if s.idle then
        s.idle = false
        wake(s.task, nil, s.wtok)
      elseif s.napping and (crit or n >= s.nap_wake) then
        s.napping = false -- a critical event, or the mailbox filling fast: do not wait for the next turn
        wake(s.task)
      end
    end
    trim(tp)
  end
  self.ntouched = 0
  self.stamp = self.stamp + 1
  if holds > 0 then hold(holds) elseif holds < 0 then unhold(-holds) end
end
reorder.wire(leave)

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
      local e, x, mask, h = r.e, r.x, r.cap - 1, r.head
      for _ = 1, n do
        local ev, tp = e[h], x[h]
        e[h], x[h] = nil, nil
        h = band(h + 1, mask)
        route(self, tp, p, ev)
      end
      holds = holds + n -- the queue's holds (finish() adds the copies')
      r.head, r.n = h, r.n - n
      q.count = q.count - n
      budget = budget - n
      local bp = self.backpressure
      if bp then
        local name = NAMES[p]
        for _ = 1, n do bp:release(name) end
      end
    end
  end
  if holds > 0 then unhold(holds) end
end

--- dispatcher(bus): the bus's task; parks when the queue is empty (publish wakes it).
function M.dispatcher(self)
  local q = self.q
  while not self.closed do
    local next_at = next(self.holding) and reorder.expire(self) -- held events whose window passed
    dispatch(self)
    finish(self)
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
-- event it was handling is passed and still holds the scheduler).
local function run(s, t_batch, max)
  local times, topic, tp, cur = s.times, s.topic, s.tp, s.cur
  local r1, r2, r3 = tp[1], tp[2], tp[3]
  local left, n, over = s.left, 0, false
  s.left = 0 -- if a handler raises, the next call is timed
  while n < max do
    -- the most urgent lane with an event (unsubscribe moves the cursors past any head)
    local r, p, i = r1, 1, cur[1]
    if i >= r1.head then
      r, p, i = r2, 2, cur[2]
      if i >= r2.head then
        r, p, i = r3, 3, cur[3]
        if i >= r3.head then break end
      end
    end
    local ev = r.e[band(i, r.mask)]
    cur[p] = i + 1
    n = n + 1
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
    unhold(1)
    if over then break end
  end
  s.left = left
  return over, n
end

-- A quarantined subscriber skips everything in its mailbox.
local function skip(self, s)
  local n, tp, c = pending(s), s.tp, s.cur
  for p = 1, 3 do c[p] = tp[p].head end
  s.skipped = s.skipped + n
  self.skipped = self.skipped + n
  unhold(n)
end

local traceback, failed = quarantine.traceback, quarantine.failed

--- worker(bus, sub): a subscriber's task ("bus:<name>", what the watchdog reports).
function M.worker(self, s)
  quarantine.adopt(s)
  while not s.closed do
    if pending(s) == 0 then
      trim(s.tp)
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
        if s.quarantined and not release(s, t_batch) then
          skip(self, s)
          break
        end
        local ok, o, k = xpcall(run, traceback, s, t_batch, WORKER_BATCH - done)
        if ok then
          over, done = o, done + k
        else -- the handler of the event just passed raised o
          failed(self, s, o)
          unhold(1)
          done = done + 1
        end
      until over or done >= WORKER_BATCH or pending(s) == 0
      s.busy = false
      if over then
        -- past the time budget: nap until the loop's next turn so timers, I/O
        -- and the inbox get their turn (a plain yield runs again in this one);
        -- finish() cuts the nap short for a critical event, or before the mailbox
        -- could overflow (other tasks still publishing in this turn)
        local c, mx = pending(s), s.max_queue_size
        s.napping, s.nap_wake = true, min(c + floor(mx / 2), mx - BATCH)
        sched.sleep(NEXT_TURN_MS)
        s.napping = false
      elseif pending(s) > 0 then
        co_yield()
      end
    end
  end
  stats.retire(self, s)
end

return M
