-- priority: the three priorities of work and events, in one place.
--
-- Every module that takes a priority (thorp.bus lanes, thorp.backpressure,
-- thorp.rpc calls, policies) uses these names and this order: critical
-- first. RANK is the 1-based rank (the bus's lane index; lower is more
-- urgent); ADMIT is the index host/admission.h uses.
--
--   local priority = require "thorp.priority"
--   local lane = priority.RANK[p] or priority.check("bus:publish: priority", p)
local C = require "thorp.cdef"

local M = {}

M.NAMES = { "critical", "normal", "low" }
M.RANK = { critical = 1, normal = 2, low = 3 }
M.ADMIT = { critical = C.ADM_CRITICAL, normal = C.ADM_NORMAL, low = C.ADM_LOW }
M.ADMIT_NAMES = { [C.ADM_CRITICAL] = "critical", [C.ADM_NORMAL] = "normal", [C.ADM_LOW] = "low" }
M.DEFAULT = "normal"
M.ALLOWED = "critical, normal, low"

--- The more urgent of two priority names.
function M.max(a, b) return M.RANK[a] <= M.RANK[b] and a or b end

--- check(where, p) -> rank of p, or raises "where: got p, allowed: critical, normal, low".
function M.check(where, p)
  local r = M.RANK[p]
  if not r then require("thorp.check").bad(where, p, M.ALLOWED) end
  return r
end

return M
