-- thorp.idempotency: run something at most once per key, across restarts.
--
--   local ok, res = thorp.idempotency.once("buy:" .. signal.id, function()
--     return place_trade(signal)
--   end, { ttl_ms = 3600000 })
--   if not ok and res.code == "DUPLICATE" then ... end   -- a second signal, ignored
--
-- The key is claimed in the journal's database (a durable write) before fn
-- runs, so a duplicate that arrives while fn is still running, or after a
-- crash and restart, is refused too. If fn raises, the key stays claimed
-- (the trade may have gone out before the error) unless
-- opts.release_on_error is true; the error is returned as false, err.
-- Without the host's journal (a module used alone) keys live in memory.
local sched = require "thorp.sched"

local M = {}
local memory = {}

local function store()
  return require("thorp.journal").default -- nil until the host opens it
end

local function claim(key, ttl)
  local j = store()
  if j then return j:claim(key, ttl) end
  local t = sched.wall()
  if memory[key] and memory[key] > t then return false end
  memory[key] = t + ttl
  return true
end

local function unclaim(key)
  local j = store()
  if j then j:unclaim(key) else memory[key] = nil end
end

local function done(key, opts, ok, ...)
  if not ok then
    if opts.release_on_error then unclaim(key) end
    return false, ...
  end
  return true, ...
end

--- once(key, fn, opts) -> true, ... | false, { code = "DUPLICATE" } | false, err
function M.once(key, fn, opts)
  opts = opts or {}
  if type(key) ~= "string" or key == "" then
    error(("idempotency.once: key must be a non-empty string, got %s"):format(tostring(key)), 2)
  end
  if type(fn) ~= "function" then error("idempotency.once: fn must be a function", 2) end
  local ttl = opts.ttl_ms or 86400000
  if type(ttl) ~= "number" or ttl <= 0 then
    error(("idempotency.once: ttl_ms must be a number > 0, got %s"):format(tostring(ttl)), 2)
  end
  if not claim(key, ttl) then
    return false, { code = "DUPLICATE", key = key, message = "already done within its ttl: " .. key }
  end
  return done(key, opts, pcall(fn))
end

return M
