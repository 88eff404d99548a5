-- thorp.shutdown: operations in flight, and the graceful exit.
--
--   local op = thorp.shutdown.register("TRADE", id, { token = "BONK" })  -- journaled first
--   ... thorp.shutdown.complete(id)
--
-- On SIGTERM, SIGUSR1, the first SIGINT or thorp.shutdown.initiate(reason):
-- new trades are refused (SHUTTING_DOWN), modules stop admitting
-- non-critical work (on_begin hooks), open trades get SHUTDOWN_TIMEOUT_MS,
-- then the other operations get what is left of it again; the host exits
-- the moment the last one completes (complete() ends it, nothing polls).
-- FORCE_SHUTDOWN_TIMEOUT_MS or a second SIGINT end it at once. Exit 0 when
-- every trade completed, 1 when any was abandoned (it stays open in the
-- journal for the next run) or the exit was forced. Progress is logged
-- every second: which operations are still open and for how long.
local sched = require "thorp.sched"
local log = require("thorp.log").for_module("shutdown")

local M = {}

local ops, n_trades, n_ops = {}, 0, 0
local state = { shutting_down = false }
local hooks = {}
local settings = { timeout_ms = 30000, force_timeout_ms = 60000, enabled = true }
local phase_timer, force_timer, progress_timer

-- phases go out on the bus topic "thorp.shutdown" so handlers can react
local function announce(ev) require("thorp.bus").system("thorp.shutdown", ev, "critical") end

-- required when used: the journal module is loaded by the host before any trade
local function journal_mod() return require("thorp.journal") end

--- register(kind, id, meta) -> op | nil, { code = "SHUTTING_DOWN" | "DUPLICATE" | "JOURNAL_ERROR", message }
--- A trade id still open (this run, or left open by an earlier one) is refused, never replaced.

function M.register(kind, id, meta)
  if type(kind) ~= "string" or kind == "" then
    error(("shutdown.register: kind must be a non-empty string such as \"TRADE\", got %s"):format(tostring(kind)), 2)
  end
  if type(id) ~= "string" and type(id) ~= "number" then
    error(("shutdown.register: id must be a string or number, got %s"):format(type(id)), 2)
  end
  if meta ~= nil and type(meta) ~= "table" then
    error(("shutdown.register: meta must be a table or nil, got %s"):format(type(meta)), 2)
  end
  id = tostring(id)
  local trade = kind == "TRADE"
  if state.shutting_down and trade then
    return nil, { code = "SHUTTING_DOWN", message = "shutdown in progress (" .. tostring(state.reason) ..
      "): new trade " .. id .. " refused" }
  end
  local old = ops[id]
  if old and (trade or old.trade) then
    return nil, { code = "DUPLICATE", id = id, message = ("%s %s is already registered and not completed: "
      .. "complete it first or use a new id"):format(old.trade and "trade" or "operation", id) }
  end
  if old then -- re-registering an operation id replaces it
    n_ops = n_ops - 1
    sched.unhold()
  end
  if trade then
    local j = journal_mod()
    if j then
      local ok, err = j.trade_begin(id, kind, meta)
      if not ok then return nil, err end
    end
  end
  local op = { id = id, type = kind, meta = meta or {}, started = sched.now(), trade = trade }
  ops[id] = op
  if trade then n_trades = n_trades + 1 else n_ops = n_ops + 1 end
  sched.hold()
  return op
end

local finish

--- complete(id, outcome): outcome is a status string ("completed" by default) or a table
--- { status = "confirmed"|"failed"|"expired"|..., slot =, err =, signature = } stored with
--- the finished trade (thorp.journal.history). Safe for unknown ids; a trade an earlier
--- run left open is finished in the journal.
function M.complete(id, outcome)
  if id == nil then return false end
  if type(id) == "table" then id = id.id end
  id = tostring(id)
  local jm = journal_mod()
  local status, otab = (jm or require("thorp.journal")).outcome(outcome)
  local op = ops[id]
  if not op then
    local j = jm and jm.default
    local t = j and j:get(id)
    if t and t.status == "open" then return (jm.trade_done(id, status, otab)) end
    return false
  end
  ops[id] = nil
  sched.unhold()
  if op.trade then
    n_trades = n_trades - 1
    if jm then jm.trade_done(id, status, otab) end
    require("thorp.metrics").trade_outcome(outcome)
  else
    n_ops = n_ops - 1
  end
  if state.shutting_down and not state.done then
    if n_trades == 0 and n_ops == 0 then finish(state.abandoned and 1 or 0, "all operations completed")
    elseif n_trades == 0 and state.phase == "trades" then M._phase_others() end
  end
  return true
end

local function open_list(only_trades)
  local list, t = {}, sched.now()
  for _, op in pairs(ops) do
    if not only_trades or op.trade then
      list[#list + 1] = { id = op.id, type = op.type, duration_ms = math.floor(t - op.started), meta = op.meta }
    end
  end
  table.sort(list, function(a, b) return a.duration_ms > b.duration_ms end)
  return list
end

function M.status()
  return { shutting_down = state.shutting_down, reason = state.reason, phase = state.phase,
           active_trades = n_trades, active_operations = n_ops, trades = open_list(true),
           operations = open_list(false),
           elapsed_ms = state.started and math.floor(sched.now() - state.started) or nil }
end

function M.is_shutting_down() return state.shutting_down end
function M.on_begin(fn) hooks[#hooks + 1] = fn end

local function cancel_timers()
  for _, t in pairs{ phase_timer, force_timer, progress_timer } do t:cancel() end
end

finish = function(code, why)
  if state.done then return end
  state.done = true
  cancel_timers()
  local left = open_list(false)
  local jm = journal_mod()
  local lost = jm and jm.unjournaled and jm.unjournaled() or 0
  if lost > 0 then
    code = 1
    log.error("trades could not be journaled (journal I/O failure); exiting 1", { unjournaled = lost })
  end
  local fields = { exit_code = code, reason = why, elapsed_ms = math.floor(sched.now() - state.started) }
  if #left > 0 then
    for _, o in ipairs(left) do if o.type == "TRADE" then require("thorp.metrics").trade_outcome("abandoned") end end
    fields.abandoned = left
    log.error("shutdown abandoned open operations", fields)
  else
    log.info("shutdown complete", fields)
  end
  sched.stop(code)
end

function M._phase_others()
  if state.done then return end
  state.phase = "operations"
  announce({ phase = "operations", reason = state.reason, active_trades = n_trades, active_operations = n_ops })
  if n_ops == 0 then return finish(state.abandoned and 1 or 0, "all operations completed") end
  phase_timer:cancel()
  phase_timer = sched.daemon_after(settings.timeout_ms, function()
    finish(1, "operations did not finish within SHUTDOWN_TIMEOUT_MS")
  end, "shutdown.ops")
end

--- initiate(reason) -> true | false (already shutting down)
function M.initiate(reason)
  if state.shutting_down then return false end
  state.shutting_down, state.reason, state.started, state.phase = true, tostring(reason or "requested"), sched.now(), "trades"
  log.warn("shutdown started", { reason = state.reason, active_trades = n_trades, active_operations = n_ops,
                                 timeout_ms = settings.timeout_ms, force_timeout_ms = settings.force_timeout_ms })
  announce({ phase = "begin", reason = state.reason, active_trades = n_trades, active_operations = n_ops })
  for _, fn in ipairs(hooks) do
    local ok, err = pcall(fn, state.reason)
    if not ok then log.error("shutdown hook failed", { error = tostring(err) }) end
  end
  if not settings.enabled then
    return true, finish(n_trades > 0 and 1 or 0, "graceful shutdown disabled (ENABLE_GRACEFUL_SHUTDOWN=false)")
  end
  force_timer = sched.daemon_after(settings.force_timeout_ms, function()
    finish(1, "FORCE_SHUTDOWN_TIMEOUT_MS reached")
  end, "shutdown.force")
  progress_timer = sched.daemon_every(1000, function()
    log.info("shutdown waiting", { phase = state.phase, open = open_list(false),
                                   elapsed_ms = math.floor(sched.now() - state.started) })
  end, "shutdown.progress")
  phase_timer = sched.daemon_after(settings.timeout_ms, function()
    if n_trades > 0 then
      state.abandoned = true
      log.error("trades abandoned after SHUTDOWN_TIMEOUT_MS; they stay open in the journal",
                { trades = open_list(true) })
    end
    M._phase_others()
  end, "shutdown.trades")
  if n_trades == 0 then M._phase_others() end
  return true
end

--- force(reason): exit now with code 1 (second SIGINT).
function M.force(reason)
  if not state.shutting_down then
    state.shutting_down, state.started, state.reason = true, sched.now(), reason
  end
  finish(1, reason or "forced")
end

function M.start(cfg)
  local s = cfg and cfg.shutdown or {}
  settings.timeout_ms = s.timeout_ms or 30000
  settings.force_timeout_ms = s.force_timeout_ms or 60000
  settings.enabled = s.enabled ~= false
  for _, sig in ipairs{ sched.SIGTERM, sched.SIGUSR1 } do
    sched.on_signal(sig, function(n) M.initiate(n == sched.SIGTERM and "SIGTERM" or "SIGUSR1") end)
  end
  sched.on_signal(sched.SIGINT, function()
    if state.shutting_down then M.force("second SIGINT") else M.initiate("SIGINT") end
  end)
  return true
end

return M
