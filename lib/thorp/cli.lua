-- cli: the command line (see `thorp help`). main(argv) returns the exit code:
-- 0 success, 1 runtime failure or forced shutdown, 2 bad usage, config or policy.
local sched = require "thorp.sched"
local config = require "thorp.config"
local log = require "thorp.log"
local host = require "thorp.host"

local M = {}

local USAGE = [[
usage:
  thorp run  [-c CONFIG] [OPTIONS] [POLICY ...]   run the host until a shutdown signal
  thorp exec [-c CONFIG] [OPTIONS] FILE.lua [ARG ...]
                                                  run FILE as the main coroutine
  thorp test [OPTIONS] [PATH ...]                 run busted specs inside the host (default tests/)
  thorp repl [--socket PATH] [--local] [--json] [-e CHUNK]
                                                  attach to a running host's console
  thorp check [-c CONFIG] [OPTIONS] [POLICY ...]  validate config and policies
  thorp reload [--socket PATH]                    ask a running host to reload its policies
  thorp version

options:
  -c, --config FILE     Lua config file (a chunk returning a table)
  --set KEY=VALUE       set any setting (KEY as below, or its environment name)
  --log-level LEVEL     error, warn, info, debug
  --state-dir DIR       journal and console socket directory
  --http-port PORT      metrics / health / JSON-RPC listener (0 = off)

settings (config key, environment name, allowed values):
]]

local function usage_error(msg)
  io.stderr:write("thorp: ", msg, "\n", "run `thorp help` for usage\n")
  return 2
end

-- Split argv into options and positional arguments. Options stop at the
-- first positional for exec (the script's own arguments follow it).
local function parse(argv, first, stop_at_positional)
  local o = { sets = {}, pos = {}, flags = {} }
  local i = first
  while i <= #argv do
    local a = argv[i]
    local function value()
      i = i + 1
      if argv[i] == nil then error({ usage = a .. " needs a value" }) end
      return argv[i]
    end
    if #o.pos > 0 and stop_at_positional then
      o.pos[#o.pos + 1] = a
    elseif a == "-c" or a == "--config" then o.config = value()
    elseif a == "--set" then o.sets[#o.sets + 1] = value()
    elseif a == "--log-level" then o.sets[#o.sets + 1] = "log_level=" .. value()
    elseif a == "--state-dir" then o.sets[#o.sets + 1] = "state_dir=" .. value()
    elseif a == "--http-port" then o.sets[#o.sets + 1] = "http.port=" .. value()
    elseif a == "--socket" then o.socket = value()
    elseif a == "--local" then o.flags["local"] = true
    elseif a == "--json" then o.flags.json = true
    elseif a == "-e" and not stop_at_positional then o.evals = o.evals or {}; o.evals[#o.evals + 1] = value()
    elseif a == "-h" or a == "--help" then o.help = true
    elseif a:sub(1, 2) == "--" and a:find("=", 1, true) then
      local k, v = a:match("^%-%-([^=]+)=(.*)$")
      if k == "set" then o.sets[#o.sets + 1] = v else o.sets[#o.sets + 1] = k:gsub("-", "_") .. "=" .. v end
    elseif a:sub(1, 1) == "-" and a ~= "-" and #o.pos == 0 then
      error({ usage = "unknown option " .. a })
    else
      o.pos[#o.pos + 1] = a
    end
    i = i + 1
  end
  return o
end

local function load_config(o)
  local cfg, errs = config.load{ file = o.config, sets = o.sets }
  if not cfg then
    for _, e in ipairs(errs) do io.stderr:write("thorp: config: ", e, "\n") end
    io.stderr:write(("thorp: %d configuration error%s\n"):format(#errs, #errs == 1 and "" or "s"))
    return nil
  end
  config.current = cfg
  log.set_level(cfg.log_level)
  return cfg
end

local function start_host(cfg, mode, opts)
  local ok, err = host.start(cfg, mode, opts)
  if not ok then
    io.stderr:write("thorp: cannot start: ", tostring(err), "\n")
    host.stop()
    return false
  end
  return true
end

local function finish(code)
  host.stop()
  io.stdout:flush()
  return code
end

local function cmd_exec(o, cfg)
  local file = o.pos[1]
  if not file then return usage_error("exec needs a FILE.lua") end
  local chunk, err = loadfile(file)
  if not chunk then
    io.stderr:write("thorp: ", err, "\n")
    return 2
  end
  if not start_host(cfg, "exec", {}) then return 2 end
  local script_args = { [0] = file }
  for i = 2, #o.pos do script_args[i - 1] = o.pos[i] end
  _G.arg = script_args
  local main = sched.spawn_opts({ name = "main" }, chunk, unpack(script_args))
  sched.on_idle(function()
    if main.done then sched.stop(main.error ~= nil and 1 or 0) end
  end)
  return finish(sched.run())
end

local function cmd_run(o, cfg)
  if not start_host(cfg, "run", { policies = o.pos }) then return 2 end
  log.info("thorp running", { version = host.version(), pid = require("thorp.sys").getpid() })
  return finish(sched.run())
end

local function cmd_test(o, cfg)
  if not start_host(cfg, "test", {}) then return 2 end
  local testing = require "thorp.testing"
  sched.spawn_opts({ name = "busted" }, function()
    local code = testing.run(o.pos)
    sched.stop(code)
  end)
  return finish(sched.run())
end

local function cmd_check(o, cfg)
  local problems = 0
  local ok, policy = pcall(require, "thorp.policy")
  if ok and policy.check then
    local errs = policy.check(#o.pos > 0 and o.pos or nil, cfg)
    for _, e in ipairs(errs or {}) do io.stderr:write("thorp: policy: ", e, "\n") end
    problems = #(errs or {})
  end
  if problems > 0 then
    io.stderr:write(("thorp: %d policy error%s\n"):format(problems, problems == 1 and "" or "s"))
    return 2
  end
  io.stdout:write("ok: configuration", ok and policy.check and " and policies" or "", " valid\n")
  return 0
end

local commands = { exec = cmd_exec, run = cmd_run, test = cmd_test, check = cmd_check }

function M.main(argv)
  _G.thorp = require "thorp"
  local cmd = argv[1]
  if cmd == nil or cmd == "help" or cmd == "-h" or cmd == "--help" then
    io.stdout:write(USAGE, config.describe_all(), "\n")
    return cmd == nil and 2 or 0
  end
  if cmd == "version" or cmd == "--version" then
    io.stdout:write("thorp ", host.version(), " (", jit.version, ")\n")
    return 0
  end
  local ok, o = pcall(parse, argv, 2, cmd == "exec")
  if not ok then
    if type(o) == "table" and o.usage then return usage_error(o.usage) end
    error(o, 0)
  end
  if o.help then
    io.stdout:write(USAGE, config.describe_all(), "\n")
    return 0
  end
  if cmd == "repl" or cmd == "reload" then
    local console = require "thorp.console"
    if cmd == "repl" and o.flags["local"] then
      local cfg = load_config(o)
      if not cfg then return 2 end
      return console.local_main(o, cfg, start_host, finish)
    end
    local cfg = load_config(o)
    if not cfg then return 2 end
    return console.client_main(cmd, o, cfg)
  end
  local fn = commands[cmd]
  if not fn then return usage_error("unknown command " .. tostring(cmd)) end
  local cfg = load_config(o)
  if not cfg then return 2 end
  return fn(o, cfg)
end

return M
