-- thorp.idempotency: run something at most once per key, across restarts.
--
--   local ok, res = thorp.idempotency.once("buy:" .. signal.id, function()
--     return place_trade(signal)
--   end, { ttl_ms = 3600000 })
--   if not ok and res.code == "DUPLICATE" then ... end   -- done before (or running now): ignored
--   if not ok and res.code == "IN_DOUBT" then ... end    -- claimed, never finished: look it up
--
-- The key is claimed in the journal's database (a durable write) before fn
-- runs, and marked done (another durable write) when fn returns, so the
-- next run tells the two apart:
--   DUPLICATE  fn finished (res.state = "done", res.finished_at), or is running
--              now in this process (res.state = "running");
--   IN_DOUBT   an earlier run claimed the key and never finished it (a crash
--              between the two writes): fn may or may not have had its effect.
--              res.claimed_at, res.run_id say when and by whom. Find out, then
--              thorp.idempotency.release(key) to allow it again.
--   JOURNAL_ERROR  the claim could not be written: fn did not run.
-- If fn raises, the key is kept as done (the trade may have gone out before
-- the error) unless opts.release_on_error is true; the error is returned as
-- false, err. Keys expire after opts.ttl_ms (24 h). Without the host's
-- journal (a module used alone) keys live in memory.
--   thorp.idempotency.list() -> { { key, state = "claimed"|"done"|"in_doubt", claimed_at,
--                                   finished_at, expires_at, run_id }, ... }
--   thorp.idempotency.release(key) -> true (it was held) | false
local sched = require "thorp.sched"

local M = {}
local memory = {} -- key -> { state, claimed_at, finished_at, expires_at }

local function store()
  return require("thorp.journal").default -- nil until the host opens it
end

local function claim(key, ttl)
  local j = store()
  if j then return j:claim(key, ttl) end
  local t = sched.wall()
  local k = memory[key]
  if k and k.expires_at > t then return false end
  memory[key] = { key = key, state = "claimed", claimed_at = t, expires_at = t + ttl, run_id = "memory" }
  return true
end

local function lookup(key)
  local j = store()
  if j then
    local k = j:key(key)
    if k and k.state == "claimed" and k.run_id ~= j.run_id then k.state = "in_doubt" end
    return k
  end
  return memory[key]
end

local function mark_done(key)
  local j = store()
  if j then return j:key_done(key) end
  local k = memory[key]
  if k then k.state, k.finished_at = "done", sched.wall() end
  return true
end

local function unclaim(key)
  local j = store()
  if j then return j:unclaim(key) end
  local had = memory[key] ~= nil
  memory[key] = nil
  return had
end

local function taken(key)
  local k = lookup(key) or { state = "done" }
  if k.state == "in_doubt" then
    return false, { code = "IN_DOUBT", key = key, claimed_at = k.claimed_at, run_id = k.run_id,
                    expires_at = k.expires_at,
                    message = ("%s was claimed by an earlier run (%s) at %s ms and never finished: "
                               .. "its effect is unknown; check, then thorp.idempotency.release(key)"):format(
                      key, tostring(k.run_id), tostring(k.claimed_at)) }
  end
  local running = k.state == "claimed"
  return false, { code = "DUPLICATE", key = key, state = running and "running" or "done",
                  claimed_at = k.claimed_at, finished_at = k.finished_at, expires_at = k.expires_at,
                  message = (running and "already running: " or "already done within its ttl: ") .. key }
end

local function done(key, opts, ok, ...)
  if not ok and opts.release_on_error then
    unclaim(key)
  else
    mark_done(key) -- a failed write leaves it claimed: the next run reports it IN_DOUBT, which is true
  end
  if not ok then return false, ... end
  return true, ...
end

--- once(key, fn, opts) -> true, ... | false, { code = "DUPLICATE" | "IN_DOUBT" | "JOURNAL_ERROR" } | false, err
function M.once(key, fn, opts)
  opts = opts or {}
  if type(key) ~= "string" or key == "" then
    error(("idempotency.once: key must be a non-empty string, got %s"):format(tostring(key)), 2)
  end
  if type(fn) ~= "function" then error("idempotency.once: fn must be a function", 2) end
  local ttl = opts.ttl_ms or 86400000
  if type(ttl) ~= "number" or ttl <= 0 or ttl ~= ttl then
    error(("idempotency.once: ttl_ms must be a number > 0, got %s"):format(tostring(ttl)), 2)
  end
  local got, err = claim(key, ttl)
  if got == nil then return false, err end
  if not got then return taken(key) end
  return done(key, opts, pcall(fn))
end

--- list() -> live keys: { key, state = "claimed" | "done" | "in_doubt", claimed_at, finished_at, expires_at, run_id }
function M.list()
  local j = store()
  local out = {}
  if j then
    for _, k in ipairs(j:keys()) do
      if k.state == "claimed" and k.run_id ~= j.run_id then k.state = "in_doubt" end
      out[#out + 1] = k
    end
    return out
  end
  local t = sched.wall()
  for _, k in pairs(memory) do
    if k.expires_at > t then out[#out + 1] = { key = k.key, state = k.state, claimed_at = k.claimed_at,
                                               finished_at = k.finished_at, expires_at = k.expires_at } end
  end
  table.sort(out, function(a, b) return a.claimed_at < b.claimed_at end)
  return out
end

--- release(key) -> true (it was held) | false (no such key) | nil, err: once(key) may run again.
function M.release(key)
  if type(key) ~= "string" or key == "" then
    error(("idempotency.release: key must be a non-empty string, got %s"):format(tostring(key)), 2)
  end
  return unclaim(key)
end

return M
