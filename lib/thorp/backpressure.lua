-- thorp.backpressure: priority admission control (host/admission.c through
-- the FFI; the check is one compiled C call).
--
--   local bp = thorp.backpressure.new{ max_queue_size = 10000,
--                                      warning_threshold = 0.8, critical_threshold = 0.95 }
--   local r = bp:try_acquire("normal")   -- { accepted, reason, utilization }
--   if r.accepted then ... bp:release("normal") end
--   bp:admit(prio) -> true | false, reason, utilization   (no table: hot path)
--   bp:stats()  bp:configure{...}
--   thorp.backpressure.default   -- the host's instance (rpc pool, bus)
local ffi = require "ffi"

ffi.cdef [[
typedef struct thorp_admit {
  double max, warning, critical;
  int enabled;
  double load[3], total, peak;
  double offered[3], accepted[3], rejected[3];
  double crit_peak, crit_peak_at, reserve, last_util;
  double by_reason[5];
} thorp_admit;
void thorp_admit_init(thorp_admit *a, double max, double warning, double critical);
int thorp_admit_try(thorp_admit *a, int prio);
void thorp_admit_release(thorp_admit *a, int prio);
int thorp_admit_util(const thorp_admit *a);
double thorp_admit_reserve(thorp_admit *a);
]]
local C = ffi.C

local M = {}
local PRIO = { critical = 0, normal = 1, low = 2 }
local NAMES = { [0] = "critical", "normal", "low" }
local REASONS = { "CRITICAL_OVERLOAD", "WARNING_THRESHOLD_EXCEEDED", "QUEUE_FULL", "RESERVED_FOR_CRITICAL" }
M.PRIORITIES = PRIO
M.REASONS = REASONS

--- priority(p, where) -> index | error naming what is allowed
local function prio_index(p, where)
  if p == nil then return 1 end
  local i = PRIO[p]
  if not i then
    error(("%s: priority must be \"critical\", \"normal\" or \"low\", got %s"):format(where, tostring(p)), 3)
  end
  return i
end
M.priority_index = function(p) return PRIO[p] end

local BP = {}
BP.__index = BP

--- validate(opts, where) -> list of errors
function M.validate(opts, where)
  where = where or "backpressure"
  local errs = {}
  local function num(k, ok, allowed)
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v ~= v or not ok(v)) then
      errs[#errs + 1] = ("%s.%s: got %s, allowed: %s"):format(where, k, tostring(v), allowed)
    end
  end
  num("max_queue_size", function(v) return v >= 1 and v % 1 == 0 end, "integer >= 1")
  num("warning_threshold", function(v) return v > 0 and v <= 1 end, "number in (0, 1]")
  num("critical_threshold", function(v) return v > 0 and v <= 1 end, "number in (0, 1]")
  local w = opts.warning_threshold or 0.8
  local c = opts.critical_threshold or 0.95
  if #errs == 0 and w > c then
    errs[#errs + 1] = ("%s: warning_threshold (%s) must not be above critical_threshold (%s)"):format(where, w, c)
  end
  for k in pairs(opts) do
    if k ~= "max_queue_size" and k ~= "warning_threshold" and k ~= "critical_threshold" and k ~= "enabled" then
      errs[#errs + 1] = ("%s: unknown option %s (allowed: max_queue_size, warning_threshold, critical_threshold, enabled)")
        :format(where, tostring(k))
    end
  end
  return errs
end

function M.new(opts)
  opts = opts or {}
  local errs = M.validate(opts)
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  local a = ffi.new("thorp_admit")
  C.thorp_admit_init(a, opts.max_queue_size or 10000, opts.warning_threshold or 0.8, opts.critical_threshold or 0.95)
  if opts.enabled == false then a.enabled = 0 end
  return setmetatable({ a = a }, BP)
end

function BP:configure(opts)
  local merged = { max_queue_size = opts.max_queue_size, warning_threshold = opts.warning_threshold or self.a.warning,
                   critical_threshold = opts.critical_threshold or self.a.critical }
  local errs = M.validate(merged)
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  local a = self.a
  a.max = merged.max_queue_size or a.max
  a.warning, a.critical = merged.warning_threshold, merged.critical_threshold
  if opts.enabled ~= nil then a.enabled = opts.enabled and 1 or 0 end
  return self
end

--- bp:admit(priority) -> true | false, reason, utilization (no allocation)
function BP:admit(p)
  local a = self.a
  local r = C.thorp_admit_try(a, prio_index(p, "backpressure:admit"))
  if r == 0 then return true end
  return false, REASONS[r], math.floor(a.last_util * 100 + 1e-9)
end

function BP:try_acquire(p)
  local a = self.a
  local util = C.thorp_admit_util(a)
  local r = C.thorp_admit_try(a, prio_index(p, "backpressure:try_acquire"))
  return { accepted = r == 0, reason = REASONS[r], utilization = util }
end

function BP:release(p)
  C.thorp_admit_release(self.a, p == nil and -1 or prio_index(p, "backpressure:release"))
end

function BP:stats()
  local a = self.a
  local util = C.thorp_admit_util(a)
  local offered, rejected = 0, 0
  local by = {}
  for i = 0, 2 do
    offered, rejected = offered + a.offered[i], rejected + a.rejected[i]
    by[NAMES[i]] = { offered = a.offered[i], accepted = a.accepted[i], rejected = a.rejected[i],
                     load = math.floor(a.load[i] + 0.5) }
  end
  local status = "HEALTHY"
  if util >= a.critical * 100 - 1e-9 then status = "CRITICAL"
  elseif util >= a.warning * 100 - 1e-9 then status = "WARNING" end
  return {
    current_load = a.total, max_queue_size = a.max, utilization = util, peak_load = a.peak,
    rejection_rate = offered > 0 and rejected / offered or 0, status = status,
    offered = offered, rejected = rejected, accepted = offered - rejected,
    warning_threshold = a.warning, critical_threshold = a.critical, enabled = a.enabled == 1,
    critical_reserve = C.thorp_admit_reserve(a), by_priority = by,
    by_reason = { CRITICAL_OVERLOAD = a.by_reason[1], WARNING_THRESHOLD_EXCEEDED = a.by_reason[2],
                  QUEUE_FULL = a.by_reason[3], RESERVED_FOR_CRITICAL = a.by_reason[4] },
  }
end

function BP:__tostring()
  return ("backpressure %d/%d (%d%%)"):format(self.a.total, self.a.max, C.thorp_admit_util(self.a))
end

--- The host's instance, configured from cfg.backpressure at start.
function M.start(cfg)
  local c = cfg and cfg.backpressure or {}
  local opts = { max_queue_size = c.max_queue_size, warning_threshold = c.warning_threshold,
                 critical_threshold = c.critical_threshold }
  if M.default then M.default:configure(opts) else M.default = M.new(opts) end
  M.default.a.enabled = c.enabled == false and 0 or 1
  return true
end

return setmetatable(M, { __index = function(t, k)
  if k == "default" then
    local d = M.new()
    rawset(t, "default", d)
    return d
  end
end })
