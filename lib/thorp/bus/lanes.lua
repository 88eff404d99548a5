-- bus.lanes: the three priority rings (critical, normal, low) of the bus queue.
--
-- A lanes object is { count = n, [1] = ring, [2] = ring, [3] = ring }, each
-- ring a power-of-two array indexed from 0: { head, n, cap, e = events,
-- x = topics }: the parallel array x keeps each event's topic. Rings double
-- when full and never shrink. publish() and the dispatcher inline push and
-- pop for speed; this file is the reference for what they do. (The topics'
-- delivery rings, read by the subscribers, are in thorp.bus.deliver.)
local band = require("bit").band
local tnew = require "table.new"

local M = {}

function M.new()
  local l = { count = 0 }
  for p = 1, 3 do l[p] = { head = 0, n = 0, cap = 16, e = tnew(16, 0), x = tnew(16, 0) } end
  return l
end

-- Double a full ring, unrolled so that head is 0.
function M.grow(r)
  local cap, e, x = r.cap, r.e, r.x
  local ne, nx = tnew(cap * 2, 0), tnew(cap * 2, 0)
  for k = 0, cap - 1 do
    local j = band(r.head + k, cap - 1)
    ne[k], nx[k] = e[j], x[j]
  end
  r.e, r.x, r.head, r.cap = ne, nx, 0, cap * 2
end
local grow = M.grow

--- push(l, p, ev, tp): append ev and its topic tp to lane p.
function M.push(l, p, ev, tp)
  local r = l[p]
  local n = r.n
  if n == r.cap then grow(r) end
  local i = band(r.head + n, r.cap - 1)
  r.e[i], r.x[i] = ev, tp
  r.n = n + 1
  l.count = l.count + 1
end

--- pop(l, p) -> ev, tp: the oldest event of lane p (the caller checks it is not empty).
function M.pop(l, p)
  local r = l[p]
  local i = r.head
  local ev, tp = r.e[i], r.x[i]
  r.e[i], r.x[i] = nil, nil
  r.head = band(i + 1, r.cap - 1)
  r.n = r.n - 1
  l.count = l.count - 1
  return ev, tp
end

--- each(l, p, fn): fn(ev, tp) for every queued event of lane p, oldest first.
function M.each(l, p, fn)
  local r = l[p]
  for k = 0, r.n - 1 do
    local i = band(r.head + k, r.cap - 1)
    fn(r.e[i], r.x[i])
  end
end

return M
