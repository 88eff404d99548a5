-- thorp.rpc.routing: which endpoints, timeout and priority a method gets, and
-- which methods are submissions (never hedged, batched or re-sent by the pool).
--
-- Routes come from the policy's `methods` section (set_methods) or from
-- new_pool{ methods = ... } (compile_methods, kept on the pool); a pool's own
-- route wins over the policy's.
--
--   local routing = require "thorp.rpc.routing"
--   routing.validate_methods(m, where, endpoint_names) -> { errors }
--   local route = routing.route_of(pool, method); if route then opts = routing.routed(pool, route, opts) end
--   routing.is_submit(pool, method)
local priority = require "thorp.priority"

local R = {}

-- Submission methods: never hedged, batched or re-sent by the pool.
local SUBMIT = { sendTransaction = true, sendBundle = true }
local routes, policy_submit = {}, {} -- from the policy: method -> { endpoints set, timeout_ms, priority }
local ROUTE_KEYS = { endpoints = true, timeout_ms = true, priority = true }

--- validate_methods(m, where, endpoint_names_set|nil) -> { errors }
function R.validate_methods(m, where, eps)
  local errs = {}
  local function err(fmt, ...) errs[#errs + 1] = (fmt):format(...) end
  if type(m) ~= "table" then
    return { where .. ": expected a table { METHOD = { endpoints =, timeout_ms =, priority = }, submit = { ... } }" }
  end
  for k, r in pairs(m) do
    local w = where .. "." .. tostring(k)
    if type(k) ~= "string" then err("%s: method names must be strings", where)
    elseif k == "submit" then
      if type(r) ~= "table" then err("%s: expected a list of method names", w)
      else
        for i, name in pairs(r) do
          if type(i) ~= "number" or type(name) ~= "string" or name == "" then
            err("%s: expected a list of method names, got %s = %s", w, tostring(i), tostring(name))
          end
        end
      end
    elseif type(r) ~= "table" then err("%s: expected { endpoints = { NAME, ... }, timeout_ms = n, priority = p }", w)
    else
      for key in pairs(r) do
        if not ROUTE_KEYS[key] then err("%s: unknown key %s (allowed: endpoints, priority, timeout_ms)", w, tostring(key)) end
      end
      if r.endpoints ~= nil then
        if type(r.endpoints) ~= "table" or #r.endpoints == 0 then
          err("%s.endpoints: expected a non-empty list of endpoint names", w)
        else
          for _, name in ipairs(r.endpoints) do
            if type(name) ~= "string" then err("%s.endpoints: expected endpoint names, got %s", w, tostring(name))
            elseif eps and not eps[name] then
              local have = {}
              for n in pairs(eps) do have[#have + 1] = n end
              table.sort(have)
              err("%s.endpoints: no endpoint named %s (configured: %s)", w, name, table.concat(have, ", "))
            end
          end
        end
      end
      if r.timeout_ms ~= nil and (type(r.timeout_ms) ~= "number" or not (r.timeout_ms > 0 and r.timeout_ms < 1e9)) then
        err("%s.timeout_ms = %s: allowed a number of ms > 0", w, tostring(r.timeout_ms))
      end
      if r.priority ~= nil and not priority.RANK[r.priority] then
        err("%s.priority = %s: allowed \"critical\", \"normal\", \"low\"", w, tostring(r.priority))
      end
    end
  end
  return errs
end

-- { method = route }, { method = true } from a validated methods table
function R.compile_methods(m)
  local r, sub = {}, {}
  for k, v in pairs(m or {}) do
    if k == "submit" then
      for _, name in ipairs(v) do sub[name] = true end
    else
      local set
      if v.endpoints then
        set = {}
        for _, name in ipairs(v.endpoints) do set[name] = true end
      end
      r[k] = { endpoints = set, timeout_ms = v.timeout_ms, priority = v.priority }
    end
  end
  return r, sub
end

--- set_methods(m): the policy's `methods` section (validated by policy.lua).
function R.set_methods(m)
  local errs = R.validate_methods(m or {}, "methods")
  if #errs > 0 then error(table.concat(errs, "; "), 2) end
  routes, policy_submit = R.compile_methods(m)
end

function R.route_of(pool, method) return pool.routes[method] or routes[method] end
function R.is_submit(pool, method) return SUBMIT[method] or policy_submit[method] or pool.submit[method] or false end

-- opts with a method route applied: its endpoints (those of this pool), timeout and priority
-- as defaults under what the caller passed
function R.routed(pool, route, opts)
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.timeout_ms = o.timeout_ms or route.timeout_ms
  o.priority = o.priority or route.priority
  if route.endpoints and not o.endpoint then
    for name in pairs(route.endpoints) do
      if pool.by_name[name] then o._allowed = route.endpoints break end
    end
  end
  return o
end

return R
