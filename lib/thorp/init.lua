-- thorp: the Lua API of the host (also the global `thorp` in policies,
-- scripts and the console). See ../../README.md and DESIGN.md for the
-- contract. Scheduling lives here; every other concern is its own module,
-- loaded the first time it is touched (thorp.rpc -> thorp/rpc.lua, ...).
local sched = require "thorp.sched"

local thorp = {
  _VERSION = "thorp",
  spawn = sched.spawn,
  sleep = sched.sleep,
  now = sched.now,
  cached_now = sched.cached_now,
  timer = sched.timer,
}

local modules = {
  rpc = "thorp.rpc", breaker = "thorp.breaker", backpressure = "thorp.backpressure",
  bus = "thorp.bus", shutdown = "thorp.shutdown", journal = "thorp.journal",
  idempotency = "thorp.idempotency", policy = "thorp.policy", log = "thorp.log",
  config = "thorp.config", console = "thorp.console", http = "thorp.http",
  metrics = "thorp.metrics", pretty = "thorp.pretty",
  solana = "thorp.solana", json = "thorp.json",
}

setmetatable(thorp, {
  __index = function(t, k)
    local name = modules[k]
    if not name then return nil end
    local m = require(name)
    rawset(t, k, m)
    return m
  end,
})

function thorp.publish(...) return thorp.bus.default:publish(...) end
function thorp.subscribe(...) return thorp.bus.default:subscribe(...) end
--- thorp.fetch(url, opts): any other HTTP API on the loop (lib/thorp/fetch.lua)
function thorp.fetch(url, opts) return require("thorp.fetch").fetch(url, opts) end
function thorp.version() return require("thorp.host").version() end

return thorp
