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

options (--name VALUE and --name=VALUE are the same):
  -c, --config FILE     Lua config file (a chunk returning a table)
  -I DIR                add DIR to the module path (DIR/?.lua, DIR/?/init.lua); LUA_PATH works too
  -e CODE               exec: run CODE (before FILE, or instead of it), as luajit -e
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
-- Options that take a value: --name=VALUE is the same as --name VALUE.
local VALUE_OPTS = { ["--config"] = true, ["--set"] = true, ["--log-level"] = true, ["--state-dir"] = true,
                     ["--http-port"] = true, ["--socket"] = true }

local function parse(argv, first, stop_at_positional)
  local o = { sets = {}, pos = {}, flags = {}, paths = {}, code = {} }
  local i = first
  while i <= #argv do
    local a = argv[i]
    local inline
    if #o.pos == 0 or not stop_at_positional then
      local name, v = a:match("^(%-%-[%w-]+)=(.*)$")
      if name and VALUE_OPTS[name] then a, inline = name, v end
      local short, rest = a:match("^(%-[Ie])(.+)$")
      if short then a, inline = short, rest end
    end
    local function value()
      if inline then return inline end
      i = i + 1
      if argv[i] == nil then error({ usage = a .. " needs a value" }) end
      return argv[i]
    end
    if #o.pos > 0 and stop_at_positional then
      o.pos[#o.pos + 1] = a
    elseif a == "-I" then o.paths[#o.paths + 1] = value()
    elseif a == "-e" then o.code[#o.code + 1] = value()
    elseif a == "-c" or a == "--config" then o.config = value()
    elseif a == "--set" then o.sets[#o.sets + 1] = value()
    elseif a == "--log-level" then o.sets[#o.sets + 1] = "log_level=" .. value()
    elseif a == "--state-dir" then o.sets[#o.sets + 1] = "state_dir=" .. value()
    elseif a == "--http-port" then o.sets[#o.sets + 1] = "http.port=" .. value()
    elseif a == "--socket" then o.socket = value()
    elseif a == "--local" then o.flags["local"] = true
    elseif a == "--json" then o.flags.json = true
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
  local jm = package.loaded["thorp.journal"]
  if code == 0 and jm and jm.unjournaled and jm.unjournaled() > 0 then
    io.stderr:write(("thorp: %d trade write(s) could not be journaled (journal I/O failure): exit 1\n"):format(
      jm.unjournaled()))
    return 1
  end
  return code
end

-- Inside the running host os.exit would skip shutdown and abandon open
-- trades: policies, handlers and the console get an error naming it.
local function forbid_os_exit()
  rawset(os, "exit", function()
    error("os.exit is not allowed inside the running host (policies, handlers, the console): it would abandon "
          .. "open trades; use thorp.shutdown.initiate(reason)", 2)
  end)
end

local function cmd_exec(o, cfg)
  local file = o.pos[1]
  if not file and #o.code == 0 then return usage_error("exec needs a FILE.lua or -e CODE") end
  local chunks = {}
  for i, code in ipairs(o.code) do
    local c, err = loadstring(code, "=(command line -e " .. i .. ")")
    if not c then
      io.stderr:write("thorp: ", err, "\n")
      return 2
    end
    chunks[#chunks + 1] = c
  end
  if file then
    local chunk, err = loadfile(file)
    if not chunk then
      io.stderr:write("thorp: ", err, "\n")
      return 2
    end
    chunks[#chunks + 1] = chunk
  end
  if not start_host(cfg, "exec", {}) then return 2 end
  local script_args = { [0] = file or "-e" }
  for i = 2, #o.pos do script_args[i - 1] = o.pos[i] end
  _G.arg = script_args
  local main = sched.spawn_opts({ name = "main" }, function(...)
    for i = 1, #chunks - 1 do chunks[i]() end
    return chunks[#chunks](...)
  end, unpack(script_args))
  sched.on_idle(function()
    if main.done then sched.stop(main.error ~= nil and 1 or 0) end
  end)
  return finish(sched.run())
end

local function warn_no_endpoints(cfg, to_stderr)
  if cfg.rpc and #cfg.rpc.endpoints > 0 then return end
  local msg = "no RPC endpoints configured: every thorp.rpc.call will fail. Set HELIUS_RPC_URL, CHAINSTACK_RPC_URL, "
    .. "PUBLIC_RPC_URL or THORP_RPC_URLS, or rpc.endpoints in the config file"
  if to_stderr then io.stderr:write("thorp: WARNING: ", msg, "\n") else log.warn(msg) end
end

local function policy_paths(o, cfg)
  if #o.pos > 0 then return o.pos end
  return cfg.policies -- from the config file (checked to exist), else the defaults
end

local function cmd_run(o, cfg)
  forbid_os_exit()
  warn_no_endpoints(cfg)
  if not start_host(cfg, "run", { policies = policy_paths(o, cfg) }) then return 2 end
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
  local code = finish(sched.run())
  if o.temp_state then os.execute(("rm -rf '%s'"):format(o.temp_state:gsub("'", "'\\''"))) end
  return code
end

-- `thorp test` gets a fresh state directory of its own (removed afterwards)
-- unless THORP_STATE_DIR or --state-dir names one: specs never touch a
-- bot's journal and a rerun starts clean.
local function test_state_dir(o)
  if os.getenv("THORP_STATE_DIR") then return end
  for _, kv in ipairs(o.sets) do if kv:match("^state_dir=") or kv:match("^THORP_STATE_DIR=") then return end end
  local p = io.popen("mktemp -d -t thorp-test.XXXXXX 2>/dev/null")
  local dir = p and p:read("*l")
  if p then p:close() end
  if not dir or dir == "" then return end
  o.temp_state = dir
  o.sets[#o.sets + 1] = "state_dir=" .. dir
end

local function cmd_check(o, cfg)
  local problems = 0
  warn_no_endpoints(cfg, true)
  local ok, policy = pcall(require, "thorp.policy")
  if ok and policy.check then
    local errs = policy.check(policy_paths(o, cfg), cfg)
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
  -- what user code prints leaves the process: it passes the secret scrubber (specs print as they like)
  if cmd ~= "test" then log.guard_output() end
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
  for i = #o.paths, 1, -1 do
    local d = o.paths[i]:gsub("/+$", "")
    package.path = d .. "/?.lua;" .. d .. "/?/init.lua;" .. package.path
  end
  if #o.code > 0 and cmd ~= "exec" and cmd ~= "repl" then
    return usage_error("-e CODE is an option of thorp exec and thorp repl")
  end
  if cmd == "test" then test_state_dir(o) end
  if cmd == "repl" or cmd == "reload" then
    local console = require "thorp.console"
    if cmd == "repl" and o.flags["local"] then
      forbid_os_exit()
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
