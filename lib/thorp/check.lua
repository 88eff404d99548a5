-- check: argument and option checks, one message style for every module.
--
-- Every complaint about a value reads "WHERE: got VALUE, allowed: WHAT",
-- whether an API call raises it at the caller's line (the first frame
-- outside lib/thorp) or a validator (config, policies, breaker and
-- backpressure options) collects it in a list:
--
--   check.int("bus.new: max_queue_size", v, 1)    --> v, or raises
--   errs[#errs + 1] = check.problem("backpressure.warning_threshold", v, check.num_rule(v, 0, 1, true))
--   check.options("bus:subscribe", opts, { name = true, ... })
--
-- The ranges are the same whichever way a value arrives: a policy and a
-- direct bus:subscribe accept the same max_failure_rate (check.rate: 0 to 1,
-- both included; 0 tolerates no failure).
local type, tostring, pairs = type, tostring, pairs

local M = {}

function M.show(v) return type(v) == "string" and ("%q"):format(v) or tostring(v) end

-- Raise msg at the first caller outside thorp's own modules (the user's line).
function M.raise(msg)
  local l = 2
  while true do
    local i = debug.getinfo(l, "S")
    if not i or not i.source:find("lib/thorp/", 1, true) then break end
    l = l + 1
  end
  error(msg, l)
end

--- problem(where, v, allowed) -> "where: got v, allowed: allowed" (nil when allowed is nil)
function M.problem(where, v, allowed)
  if allowed then return ("%s: got %s, allowed: %s"):format(where, M.show(v), allowed) end
end
function M.bad(where, v, allowed) M.raise(M.problem(where, v, allowed)) end

-- Range rules: each returns what is allowed when v is outside it, nil when v is fine.
function M.int_rule(v, min, max)
  if type(v) ~= "number" or v % 1 ~= 0 or v < min or (max and v > max) then
    return max and ("integer in [%d, %d]"):format(min, max) or ("integer >= %d"):format(min)
  end
end
--- open_min: min itself is refused.
function M.num_rule(v, min, max, open_min)
  if type(v) ~= "number" or v ~= v or v < min or (open_min and v == min) or (max and v > max) then
    if max then return ("number in %s%g, %g]"):format(open_min and "(" or "[", min, max) end
    return ("number %s %g"):format(open_min and ">" or ">=", min)
  end
end
function M.rate_rule(v) return M.num_rule(v, 0, 1) end

local function checker(rule)
  return function(where, v, ...)
    local allowed = rule(v, ...)
    if allowed then M.bad(where, v, allowed) end
    return v
  end
end
M.int, M.num, M.rate = checker(M.int_rule), checker(M.num_rule), checker(M.rate_rule)
M.bool = checker(function(v) if type(v) ~= "boolean" then return "true or false" end end)
M.name = checker(function(v) if type(v) ~= "string" or v == "" then return "a non-empty string" end end)
M.callable = checker(function(v)
  local mt = type(v) == "table" and getmetatable(v)
  if type(v) ~= "function" and not (mt and mt.__call) then return "a function" end
end)

--- keys(t) -> "a, b, c": the sorted keys of t, for "allowed:" texts.
function M.keys(t)
  local names = {}
  for a in pairs(t) do names[#names + 1] = tostring(a) end
  table.sort(names)
  return table.concat(names, ", ")
end

--- unknown(where, opts, allowed) -> list of "where: unknown option k (allowed: ...)" (empty when none).
function M.unknown(where, opts, allowed)
  local errs = {}
  for k in pairs(opts) do
    if not allowed[k] then
      errs[#errs + 1] = ("%s: unknown option %s (allowed: %s)"):format(where, M.show(k), M.keys(allowed))
    end
  end
  table.sort(errs)
  return errs
end

--- options(fn, opts, allowed) -> opts (or {} for nil); raises on a non-table or an unknown key.
function M.options(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then M.bad(fn .. ": options", opts, "a table or nil") end
  local errs = M.unknown(fn, opts, allowed)
  if errs[1] then M.raise(errs[1]) end
  return opts
end

return M
