-- host: brings the host's modules up in order and down in reverse.
--
-- Each concern (journal, shutdown, rpc pool, bus, policy, console, http) is
-- a module that may export start(cfg, mode) -> true | nil, err and stop().
-- mode is "run", "exec", "test" or "repl". A start error is fatal for the
-- process (exit code 2: bad config, locked journal, ...).
local ffi = require "ffi"
local C = require "thorp.cdef"
local log = require "thorp.log"

local M = {}

M.ORDER = { "thorp.journal", "thorp.shutdown", "thorp.backpressure", "thorp.rpc", "thorp.bus", "thorp.ws",
            "thorp.policy", "thorp.console", "thorp.http", "thorp.sender" }

function M.version() return ffi.string(C.thorp_version()) end
function M.dev_root() return ffi.string(C.thorp_dev_root()) end
function M.exe_dir() return ffi.string(C.thorp_exe_dir()) end

local started = {}

local function find(name)
  local ok, m = pcall(require, name)
  if ok then return m end
  if tostring(m):find("module '" .. name .. "' not found", 1, true) then return nil end
  error(m, 0)
end

--- start(cfg, mode, opts) -> true | nil, err
function M.start(cfg, mode, opts)
  -- Until thorp.shutdown installs its own, a stop signal simply ends the loop.
  local sched = require "thorp.sched"
  for _, sig in ipairs{ sched.SIGTERM, sched.SIGINT, sched.SIGUSR1 } do
    sched.on_signal(sig, function(n)
      log.info("signal received, stopping", { signal = n })
      sched.stop(0)
    end)
  end
  sched.watchdog_start(cfg and cfg.watchdog_ms or 1000, cfg and cfg.watchdog_exit_multiple or 0)
  local mods = {}
  for _, name in ipairs(M.ORDER) do
    local m = find(name)
    mods[name] = m
    if m and m.start then
      local ok, res, err = pcall(m.start, cfg, mode, opts or {})
      if not ok then return nil, ("%s: %s"):format(name, tostring(res)) end
      if res == nil and err then return nil, err end
      started[#started + 1] = m
    end
  end
  M.wire(mods)
  return true
end

--- wire(modules): connect the host's modules to each other, so that none of
--- the generic ones has to require another for the host's sake.
function M.wire(mods)
  local bus, bp, sd = mods["thorp.bus"], mods["thorp.backpressure"], mods["thorp.shutdown"]
  if bus then
    local b = bus.default
    -- the host's bus shares admission control with the RPC pool: in a burst,
    -- low-priority events are shed first, critical ones keep their headroom
    if bp then b:configure{ backpressure = bp.default } end
    -- once shutdown begins, only critical events are taken
    if sd then sd.on_begin(function() b:set_critical_only(true) end) end
  end
  -- the policy's frontdoor_request hook runs in the front door
  local pol, http = mods["thorp.policy"], mods["thorp.http"]
  if pol and http then
    local function install() http.set_request_hook(pol.hooks.frontdoor_request) end
    pol.on_apply(install)
    install()
  end
end

function M.stop()
  for i = #started, 1, -1 do
    local m = started[i]
    if m.stop then
      local ok, err = pcall(m.stop)
      if not ok then log.error("module stop failed", { error = tostring(err) }) end
    end
    started[i] = nil
  end
end

return M
