-- check: argument and option checks, one message style for every module.
--
-- An API call with a bad argument raises, at the caller's line (the first
-- frame outside lib/thorp), "FN: WHAT must be ALLOWED (got VALUE)":
--
--   check.int("bus.new", "max_queue_size", v, 1)      --> v or raises
--   check.options("bus:subscribe", opts, { name = true, ... })
--
-- A validator that collects every problem (config, policies, breaker and
-- backpressure options) asks check.problem(...) for the same text instead
-- of raising. The ranges are the same whichever way a value arrives: a
-- policy and a direct bus:subscribe accept the same max_failure_rate.
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

function M.problem(fn, what, allowed, v) return ("%s: %s must be %s (got %s)"):format(fn, what, allowed, M.show(v)) end
function M.bad(fn, what, allowed, v) M.raise(M.problem(fn, what, allowed, v)) end

-- Range rules: each returns the allowed text when v is outside it, nil when fine.
function M.int_rule(v, min, max)
  if type(v) ~= "number" or v % 1 ~= 0 or v < min or (max and v > max) then
    return max and ("an integer from %d to %d"):format(min, max) or ("an integer >= %d"):format(min)
  end
end
function M.num_rule(v, min, max)
  if type(v) ~= "number" or v ~= v or v < min or (max and v > max) then
    return max and ("a number from %g to %g"):format(min, max) or ("a number >= %g"):format(min)
  end
end

function M.int(fn, what, v, min, max)
  local allowed = M.int_rule(v, min, max)
  if allowed then M.bad(fn, what, allowed, v) end
  return v
end
function M.num(fn, what, v, min, max)
  local allowed = M.num_rule(v, min, max)
  if allowed then M.bad(fn, what, allowed, v) end
  return v
end
--- A fraction of calls or deliveries: 0 to 1, both included (0: none tolerated).
function M.rate(fn, what, v) return M.num(fn, what, v, 0, 1) end
function M.bool(fn, what, v)
  if type(v) ~= "boolean" then M.bad(fn, what, "a boolean", v) end
  return v
end
function M.name(fn, what, v)
  if type(v) ~= "string" or v == "" then M.bad(fn, what, "a non-empty string", v) end
  return v
end
function M.callable(fn, what, v)
  local mt = type(v) == "table" and getmetatable(v)
  if type(v) ~= "function" and not (mt and mt.__call) then M.bad(fn, what, "a function", v) end
  return v
end

local function sorted_keys(t)
  local names = {}
  for a in pairs(t) do names[#names + 1] = a end
  table.sort(names)
  return table.concat(names, ", ")
end
M.keys = sorted_keys

--- options(fn, opts, allowed) -> opts (or {} for nil); raises on a non-table or an unknown key.
function M.options(fn, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then M.bad(fn, "options", "a table or nil", opts) end
  for k in pairs(opts) do
    if not allowed[k] then M.raise(("%s: unknown option %s (allowed: %s)"):format(fn, M.show(k), sorted_keys(allowed))) end
  end
  return opts
end

return M
