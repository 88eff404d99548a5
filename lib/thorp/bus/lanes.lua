-- bus.lanes: the three priority rings (critical, normal, low) of a queue.
--
-- A lanes object is { count = n, [1] = ring, [2] = ring, [3] = ring }, each
-- ring a power-of-two array indexed from 0: { head, n, cap, e = events,
-- x = topics or false }. The bus queue keeps each event's topic in the
-- parallel array x; a subscriber's mailbox keeps events only. Rings double
-- when full and never shrink. The dispatcher and workers inline pop for
-- speed; this file is the reference for what they do.
local band = require("bit").band
local tnew = require "table.new"

local M = {}

function M.new(with_x)
  local l = { count = 0 }
  for p = 1, 3 do l[p] = { head = 0, n = 0, cap = 16, e = tnew(16, 0), x = with_x and tnew(16, 0) or false } end
  return l
end

-- Double a full ring, unrolled so that head is 0.
function M.grow(r)
  local cap, e, x = r.cap, r.e, r.x
  local ne, nx = tnew(cap * 2, 0), x and tnew(cap * 2, 0)
  for k = 0, cap - 1 do
    local j = band(r.head + k, cap - 1)
    ne[k] = e[j]
    if x then nx[k] = x[j] end
  end
  r.e, r.x, r.head, r.cap = ne, nx or false, 0, cap * 2
end
local grow = M.grow

--- push(l, p, ev, tp): append ev (and its topic tp, in a queue) to lane p.
function M.push(l, p, ev, tp)
  local r = l[p]
  local n = r.n
  if n == r.cap then grow(r) end
  local i = band(r.head + n, r.cap - 1)
  r.e[i] = ev
  if tp then r.x[i] = tp end
  r.n = n + 1
  l.count = l.count + 1
end

--- pop(l, p) -> ev, tp: the oldest event of lane p (the caller checks it is not empty).
function M.pop(l, p)
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

--- each(l, p, fn): fn(ev, tp) for every queued event of lane p, oldest first.
function M.each(l, p, fn)
  local r = l[p]
  for k = 0, r.n - 1 do
    local i = band(r.head + k, r.cap - 1)
    fn(r.e[i], r.x and r.x[i])
  end
end

return M
