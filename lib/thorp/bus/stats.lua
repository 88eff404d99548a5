-- bus.stats: the counters that are not on the hot path, and bus:stats().
--
-- To keep publish and delivery cheap, some figures are kept in one place
-- only and summed here: the bus's published count is the sum of its
-- topics', delivered counts are the subscribers' (plus what unsubscribed
-- ones had delivered), and queued-by-topic is counted by walking the
-- queue's rings (at most max_queue_size events).
local sched = require "thorp.sched"
local lanes = require "thorp.bus.lanes"
local priority = require "thorp.priority"

local pairs, ipairs, min, max, ceil = pairs, ipairs, math.min, math.max, math.ceil
local NAMES = priority.NAMES

local M = {}
M.RING = 512 -- recent handler durations kept per subscriber (for percentiles)

--- drop(bus, tp, reason, n): count n copies of tp's events lost for reason (dropped_by_reason).
function M.drop(self, tp, reason, n)
  n = n or 1
  tp.drops[reason] = (tp.drops[reason] or 0) + n
  self.drops[reason] = (self.drops[reason] or 0) + n
end

--- lost(bus, tp, reason): an event the bus took no further (refused by publish, or evicted).
function M.lost(self, tp, reason)
  self.dropped_events = self.dropped_events + 1
  tp.dropped = tp.dropped + 1
  M.drop(self, tp, reason)
end

--- retire(bus, sub): keep an unsubscribed subscriber's deliveries in the totals
--- (called by unsubscribe, and again when its worker ends: a delivery that was
--- running at unsubscribe still counts).
function M.retire(self, s)
  local d = s.delivered - (s.retired or 0)
  s.retired = s.delivered
  s.tp.delivered_gone = s.tp.delivered_gone + d
  self.delivered_gone = self.delivered_gone + d
end

local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
local function by_lane(a, b, c) return { critical = a, normal = b, low = c } end

-- { p50, p90, p99, max, samples } in ms over the subscriber's recent timed calls.
local function handler_ms(s)
  local n = min(s.timed, M.RING)
  if n == 0 then return { p50 = 0, p90 = 0, p99 = 0, max = 0, samples = 0 } end
  local xs = {}
  for i = 1, n do xs[i] = s.times[i] end
  table.sort(xs)
  local function pct(p) return xs[max(1, ceil(n * p))] end
  return { p50 = pct(0.5), p90 = pct(0.9), p99 = pct(0.99), max = s.max_ms, samples = s.timed }
end

--- stats(bus) -> the snapshot bus:stats() returns (docs/bus.md)
function M.stats(self)
  local topics, subs, in_mailboxes, t = {}, {}, 0, sched.now()
  local q = self.q
  local ql = {} -- topic -> { critical, normal, low } queued in the bus queue
  local dl = {} -- topic -> delivered
  for _, tp in pairs(self.topics) do ql[tp] = { 0, 0, 0 }; dl[tp] = tp.delivered_gone end
  for p = 1, 3 do lanes.each(q, p, function(_, tp) ql[tp][p] = ql[tp][p] + 1 end) end
  local delivered = self.delivered_gone
  for i, s in ipairs(self.subs) do
    local tp, c = s.tp, s.cur -- its mailbox: per lane, its cursor to the ring's head
    local m1, m2, m3 = tp[1].head - c[1], tp[2].head - c[2], tp[3].head - c[3]
    local queued = m1 + m2 + m3
    in_mailboxes = in_mailboxes + queued
    delivered = delivered + s.delivered
    dl[s.tp] = dl[s.tp] + s.delivered
    subs[i] = { name = s.name, topic = s.topic, delivered = s.delivered, failures = s.failures,
                skipped = s.skipped, dropped = s.dropped, queued = queued, max_queue_size = s.max_queue_size,
                queued_by_lane = by_lane(m1, m2, m3), busy = s.busy,
                busy_ms = s.busy and t - s.busy_since or 0, handler_ms = handler_ms(s),
                quarantined = s.quarantined, probation = s.probation, quarantines = s.quarantines,
                quarantined_for_ms = s.quarantined and max(0, s.quarantine_until - t) or 0 }
  end
  local published = 0
  for name, tp in pairs(self.topics) do
    local l = ql[tp]
    published = published + tp.published
    topics[name] = { published = tp.published, delivered = dl[tp], failures = tp.failures,
                     dropped = tp.dropped, queued = l[1] + l[2] + l[3] + tp.held_n,
                     queued_by_lane = by_lane(l[1], l[2], l[3]), dropped_by_reason = copy(tp.drops),
                     undelivered = tp.undelivered, duplicates = tp.duplicates, reorder_gaps = tp.reorder_gaps,
                     held = tp.held_n, subscribers = tp.nsubs, priority = NAMES[tp.prio],
                     next_sequence = tp.expect }
  end
  return { published = published, delivered = delivered, failures = self.failures,
           dropped_events = self.dropped_events, dropped_by_reason = copy(self.drops),
           undelivered = self.undelivered, skipped = self.skipped,
           mailbox_dropped = self.mailbox_dropped, queued = q.count + self.held, held = self.held,
           queued_by_lane = by_lane(q[1].n, q[2].n, q[3].n),
           in_mailboxes = in_mailboxes, duplicates = self.duplicates, reorder_gaps = self.reorder_gaps,
           missing_sequences = self.missing_sequences, max_queue_size = self.max_queue_size,
           max_subscribers = self.max_subscribers, subscriber_count = self.nsubs,
           evict_low_for_critical = self.evict_low_for_critical, critical_only = self.critical_only or false,
           topics = topics, subscribers = subs }
end

return M
