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

local C = require "thorp.cdef"
local check = require "thorp.check"
local priority = require "thorp.priority"

local M = {}
local PRIO, NAMES = priority.ADMIT, priority.ADMIT_NAMES
local REASONS = { [C.ADM_CRITICAL_OVERLOAD] = "CRITICAL_OVERLOAD", [C.ADM_WARNING] = "WARNING_THRESHOLD_EXCEEDED",
                  [C.ADM_QUEUE_FULL] = "QUEUE_FULL", [C.ADM_RESERVED] = "RESERVED_FOR_CRITICAL" }
M.REASONS = REASONS

-- prio_index(p, where) -> admission index (nil: normal) | raises naming what is allowed
local function prio_index(p, where)
  if p == nil then return C.ADM_NORMAL end
  return PRIO[p] or PRIO[priority.NAMES[priority.check(where, p)]]
end

local BP = {}
BP.__index = BP

local OPTS = { max_queue_size = true, warning_threshold = true, critical_threshold = true, enabled = true }

--- validate(opts, where) -> list of errors
function M.validate(opts, where)
  where = where or "backpressure"
  local errs = check.unknown(where, opts, OPTS)
  local function add(k, rule, ...)
    local v = opts[k]
    if v ~= nil then errs[#errs + 1] = check.problem(where .. "." .. k, v, rule(v, ...)) end
  end
  add("max_queue_size", check.int_rule, 1)
  add("warning_threshold", check.num_rule, 0, 1, true)
  add("critical_threshold", check.num_rule, 0, 1, true)
  local w = opts.warning_threshold or 0.8
  local c = opts.critical_threshold or 0.95
  if #errs == 0 and w > c then
    errs[#errs + 1] = ("%s: warning_threshold (%s) must not be above critical_threshold (%s)"):format(where, w, c)
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
  local r = C.thorp_admit_try(a, prio_index(p, "backpressure:admit: priority"))
  if r == 0 then return true end
  return false, REASONS[r], math.floor(a.last_util * 100 + 1e-9)
end

function BP:try_acquire(p)
  local a = self.a
  local util = C.thorp_admit_util(a)
  local r = C.thorp_admit_try(a, prio_index(p, "backpressure:try_acquire: priority"))
  return { accepted = r == 0, reason = REASONS[r], utilization = util }
end

function BP:release(p)
  C.thorp_admit_release(self.a, p == nil and -1 or prio_index(p, "backpressure:release: priority"))
end

function BP:stats()
  local a = self.a
  local util = C.thorp_admit_util(a)
  local offered, rejected = 0, 0
  local by, by_reason = {}, {}
  for r, name in pairs(REASONS) do by_reason[name] = a.by_reason[r] end
  for i = 0, C.ADM_PRIORITIES - 1 do
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
    by_reason = by_reason,
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
