-- bus.reorder: the per-topic reorder buffer for events that carry a `sequence`.
--
-- A topic expects sequence 1 first, then 2, ... An event in sequence goes
-- into the bus queue at once (and any held ones that now follow it); an
-- older or repeated one is dropped as DUPLICATE; a later one is held until
-- the gap fills or the bus's reorder_window_ms passes, when the gap is
-- skipped (reorder_gaps, missing_sequences) and the held events go out in
-- order. publish() calls sequenced() for each such event (the event is hot
-- in the cache there, and the dispatcher never looks inside events); the
-- dispatcher calls expire() before each batch while anything is held.
local sched = require "thorp.sched"
local drop = require("thorp.bus.stats").drop

local pairs, huge = pairs, math.huge
local now = sched.cached_now

local M = {}

local push = require("thorp.bus.lanes").push
local leave -- from thorp.bus.deliver (wire)
function M.wire(leave_fn) leave = leave_fn end

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
    push(self.q, h[2], h[1], tp)
  end
  self.holding[tp] = nil
end

--- sequenced(bus, tp, lane, ev, s): queue, hold or drop an event with sequence s.
function M.sequenced(self, tp, p, ev, s)
  local expect = tp.expect
  if s == expect then
    tp.expect = s + 1
    push(self.q, p, ev, tp)
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

--- expire(bus) -> next deadline or nil: skip gaps whose reorder window has passed.
function M.expire(self)
  local t, window, next_at = now(), self.reorder_window_ms, nil
  for tp in pairs(self.holding) do
    while tp.held_n > 0 do
      local low, oldest = nil, huge
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

--- discard(bus, fn): drop every held event (fn(tp, lane) for each), as close() does.
function M.discard(self, fn)
  for tp in pairs(self.holding) do
    for seq, h in pairs(tp.held) do
      tp.held[seq] = nil
      fn(tp, h[2])
    end
    tp.held_n = 0
  end
  self.holding, self.held = {}, 0
end

return M
