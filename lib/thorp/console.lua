-- console: a Lua REPL inside the running host, over a unix socket.
--
--   thorp repl [--socket PATH]     attach to a running host (thorp run)
--   thorp repl -e CHUNK [--json]   run one chunk, print its answer, exit 1 if it raised
--   thorp repl --json              answers as JSON lines (machine output)
--   thorp repl --local [-e CHUNK]  start a host in this process and talk to it (-e, --json as above)
--   thorp reload [--socket PATH]   ask the running host to reload its policies
--
-- Host side: start(cfg, "run") listens on cfg.console.socket (host/console.c
-- owns the socket, framing and peer checks). Each request is one Lua chunk,
-- evaluated in its own daemon task so it may yield (thorp.sleep, an RPC
-- call); a connection keeps its own environment (x = 1, then =x). `=expr`
-- or a bare expression prints its values with thorp.pretty; errors come back
-- as text with a traceback; every reply passes the log scrubber, so a
-- registered secret never reaches the console.
-- Reply payload: "+" or "-" (ok / error) followed by the text.
local ffi = require "ffi"
local C = require "thorp.cdef"
local sched = require "thorp.sched"
local pretty = require "thorp.pretty"
local logm = require "thorp.log"
local log = logm.for_module("console")

local concat, select, tostring, type = table.concat, select, tostring, type

local M = {}

local EV_REQUEST, EV_CLOSED, EV_STDIN = C.CONSOLE_EV_REQUEST, C.CONSOLE_EV_CLOSED, C.CONSOLE_EV_STDIN
local PROMPT, CONT = "thorp> ", "   >> "

------------------------------------------------------------------------------
-- Evaluation
------------------------------------------------------------------------------

-- An error raised by a console helper: shown as its message, no traceback.
local Fail = { __tostring = function(e) return e.msg end }
local function fail(msg) error(setmetatable({ msg = msg }, Fail), 0) end

-- One pass over the whole reply, whatever its length: a secret is never cut
-- in two by a piece boundary (host/log.c scrubs any length at once).
local function scrub(s)
  return logm.scrub((s:gsub("%z", "\\0")))
end

local function errtext(e)
  if type(e) == "table" and type(e.code) == "string" and type(e.message) == "string" then
    return e.code .. ": " .. e.message
  end
  if type(e) == "table" and not getmetatable(e) then return pretty.format(e) end
  return tostring(e)
end

local HELP = [[
thorp console: any Lua statement or expression; `=expr` or a bare expression
prints its value. Commands may yield (thorp.sleep, thorp.rpc.call).
  endpoints()   RPC endpoints and their state (endpoints(true): every field)
  stats()       backpressure, bus, RPC and scheduler statistics
  trades()      active trades and operations (thorp.shutdown.status())
  reload()      reload the policies (like SIGHUP)
  help()        this text
Variables you set stay for this connection. Ctrl-D (or `exit`) leaves.]]

-- Helpers shared by every console environment.
local base = setmetatable({}, { __index = _G })
base.thorp = require "thorp"

--- endpoints() -> one row per endpoint with what an operator looks at first
--- (endpoints(true) -> the full records of thorp.rpc.endpoints())
function base.endpoints(full)
  local rpc = package.loaded["thorp.rpc"]
  if not rpc or not rpc.endpoints then fail("the RPC pool (thorp.rpc) is not loaded in this host") end
  if full then return rpc.endpoints() end
  local rows = {}
  for i, e in ipairs(rpc.endpoints()) do
    local errors = 0
    for _, n in pairs(e.errors or {}) do errors = errors + n end
    rows[i] = { name = e.name, state = e.state, healthy = e.healthy and "yes" or (e.unhealthy_reason or "no"),
                slot = e.slot or "-", lag = e.lag or "-", p50_ms = e.latency_ms and e.latency_ms.p50 or "-",
                p99_ms = e.latency_ms and e.latency_ms.p99 or "-", inflight = e.inflight, calls = e.calls,
                errors = errors, limited_ms = e.rate_limited_ms, url = e.url,
                ws = e.ws and (e.ws.state .. (e.ws.reconnects > 0 and (" r" .. e.ws.reconnects) or "")) or "-" }
  end
  return rows
end

--- subscriptions() -> one row per WebSocket subscription (lib/thorp/ws.lua)
function base.subscriptions()
  local ws = package.loaded["thorp.ws"]
  local rows = {}
  for i, s in ipairs(ws and ws.list() or {}) do
    rows[i] = { id = s.id, method = s.method, state = s.state, endpoint = s.endpoint or "-",
                notifications = s.notifications, gaps = s.gaps, reconnects = s.reconnects,
                queued = s.queued or 0, dropped = s.dropped or 0 }
  end
  return rows
end

function base.stats()
  local r = { scheduler = sched.pending(), console = { connections = C.thorp_console_conns() } }
  local bp, bus, rpc = package.loaded["thorp.backpressure"], package.loaded["thorp.bus"], package.loaded["thorp.rpc"]
  if bp and bp.default then r.backpressure = bp.default:stats() end
  if bus and bus.default then r.bus = bus.default:stats() end
  if rpc and rpc.stats then r.rpc = rpc.stats() end
  return r
end

function base.trades()
  local sd = package.loaded["thorp.shutdown"]
  if not sd or not sd.status then fail("the shutdown module (thorp.shutdown) is not loaded in this host") end
  return sd.status()
end

-- out: the list that collects this environment's printed text.
local outputs = setmetatable({}, { __mode = "k" })

--- A fresh console environment: globals through _G, the helpers, and a
--- print that writes to the console instead of the host's stdout.
function M.new_env()
  local out = {}
  local env = setmetatable({}, { __index = base })
  outputs[env] = out
  function env.print(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    out[#out + 1] = concat(parts, "\t") .. "\n"
  end
  function env.help() out[#out + 1] = HELP .. "\n" end
  function env.reload()
    local ok, policy = pcall(require, "thorp.policy")
    if not ok or type(policy) ~= "table" or not policy.reload then
      local why = not ok and not tostring(policy):find("not found", 1, true) and tostring(policy):match("^[^\n]*")
      fail("cannot reload: the policy module (thorp.policy) is not available in this host"
        .. (why and (": " .. why) or ""))
    end
    local rok, err = policy.reload()
    if not rok then
      if type(err) == "table" and #err > 0 and type(err[1]) == "string" then err = "\n  " .. concat(err, "\n  ") end
      fail("policy reload failed: " .. (type(err) == "table" and type(err.message) == "string" and err.message
        or errtext(err)))
    end
    local st = policy.status and policy.status() or {}
    out[#out + 1] = ("policies reloaded%s\n"):format(st.version and (" (version " .. tostring(st.version) .. ")") or "")
  end
  return env
end

local function on_error(e)
  if getmetatable(e) == Fail then return e.msg end
  local tb = debug.traceback(errtext(e), 2):gsub("\n%s*%[builtin#%d+%]:[^\n]*", "")
  -- cut the frames of the console itself
  local cut = tb:find("\n%s*%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut - 1) or tb
end

local function identity(...) return ... end
local function pack(...) return { n = select("#", ...), ... } end

-- evaluate(src, env) -> ok, printed_text, values (table with n) | ok=false, printed_text, error_text
local function evaluate(src, env)
  local out = outputs[env] or {}
  local fn, err
  local code, n = src:gsub("^%s*=", "", 1)
  -- An expression is compiled as an argument list rather than `return f()`:
  -- that tail call would drop the chunk's frame from error positions.
  fn = loadstring("local __ret = ...; return __ret(" .. code .. "\n)", "=console")
  if not fn and n == 0 then fn, err = loadstring(src, "=console") end
  if not fn and n > 0 then err = select(2, loadstring("return " .. code, "=console")) end
  local ok, res
  if not fn then
    ok, res = false, err
  else
    setfenv(fn, env)
    local r = pack(xpcall(fn, on_error, identity))
    ok = r[1]
    if ok then res = pack(unpack(r, 2, r.n)) else res = r[2] end
  end
  local printed = concat(out)
  for i = #out, 1, -1 do out[i] = nil end
  return ok, printed, res
end

--- eval(src, env) -> ok, text. Runs in the calling task (it may yield).
--- `=expr` and bare expressions give their values; text is scrubbed.
function M.eval(src, env)
  env = env or M.new_env()
  local ok, printed, res = evaluate(src, env)
  local text
  if not ok then text = tostring(res) .. "\n"
  elseif res.n == 0 then text = ""
  else text = pretty.values(unpack(res, 1, res.n)) .. "\n" end
  return ok, scrub(printed .. text)
end

-- A value as thorp.json can carry it: tables (cycles cut), numbers, strings,
-- booleans, json.null, int64/uint64 (every digit), pubkeys (base58: their
-- __tojson); anything else (functions, other cdata, NaN) as its tostring.
local json = require "thorp.json"
local u64_t, i64_t = ffi.typeof("uint64_t"), ffi.typeof("int64_t")
local function jsonable(v, seen, depth)
  local t = type(v)
  if t == "string" or t == "boolean" then return v end
  if t == "number" then return (v == v and v ~= math.huge and v ~= -math.huge) and v or tostring(v) end
  if v == nil or v == json.null then return json.null end
  if t == "cdata" and (ffi.istype(u64_t, v) or ffi.istype(i64_t, v)) then return v end
  if t ~= "table" then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tojson then return v end
  if mt ~= nil and mt ~= json.array_mt and not next(v) then return tostring(v) end
  if seen[v] or depth > 32 then return "<cycle>" end
  seen[v] = true
  local o = mt == json.array_mt and json.array() or {}
  for k, x in pairs(v) do
    local key = (type(k) == "string" or type(k) == "number" and k == k and k ~= math.huge and k ~= -math.huge)
      and k or tostring(k)
    o[key] = jsonable(x, seen, depth + 1)
  end
  seen[v] = nil
  return o
end

--- eval_json(src, env) -> ok, text: one JSON object (and a newline):
--- {"ok":true,"values":[...],"output":"what print() wrote"} or
--- {"ok":false,"error":"message and traceback","output":"..."}. Scrubbed.
function M.eval_json(src, env)
  env = env or M.new_env()
  local ok, printed, res = evaluate(src, env)
  local text
  if ok then
    local vals = {}
    for i = 1, res.n do vals[i] = json.safe_encode(jsonable(res[i], {}, 0)) or '"<unencodable>"' end
    text = '{"ok":true,"values":[' .. concat(vals, ",") .. '],"output":' .. json.encode(printed) .. "}"
  else
    text = '{"ok":false,"error":' .. json.encode(tostring(res)) .. ',"output":' .. json.encode(printed) .. "}"
  end
  return ok, scrub(text) .. "\n"
end

--- incomplete(src) -> true when src only lacks its end (more lines to come).
function M.incomplete(src)
  local code, n = src:gsub("^%s*=", "return ", 1)
  local fn, err = loadstring(code, "=console")
  if fn or not err:find("'?<eof>'?$") then return false end
  return n == 0 and loadstring("return " .. src) == nil or n > 0
end

------------------------------------------------------------------------------
-- Server (in the host)
------------------------------------------------------------------------------
local envs = {}          -- connection id -> environment
local lenp = ffi.new("size_t[1]")
local eofp = ffi.new("int[1]")
local stdin_waiter, stdin_tok
local task_opts = { name = "console", daemon = true, quiet = true }

-- A request starting with JSON_MARK is answered as JSON (thorp repl --json).
local JSON_MARK = "\0json\n"
M.JSON_MARK = JSON_MARK

local function serve(id, src, env)
  local eval = M.eval
  if src:sub(1, #JSON_MARK) == JSON_MARK then eval, src = M.eval_json, src:sub(#JSON_MARK + 1) end
  local ok, good, text = pcall(eval, src, env)
  local reply
  if ok then reply = (good and "+" or "-") .. text else reply = "-console failure: " .. scrub(tostring(good)) .. "\n" end
  C.thorp_console_reply(id, reply, #reply)
end

local function on_event(ev)
  local id, a = tonumber(ev.id), ev.a
  if a == EV_REQUEST then
    local p = C.thorp_console_request(id, lenp)
    if p == nil then return end
    local src = ffi.string(p, lenp[0])
    local env = envs[id]
    if not env then env = M.new_env(); envs[id] = env end
    sched.spawn_opts(task_opts, serve, id, src, env)
  elseif a == EV_CLOSED then
    envs[id] = nil
  elseif a == EV_STDIN and stdin_waiter then
    sched.wake(stdin_waiter, nil, stdin_tok)
  end
end

local listening = nil

--- listen(path) -> true | nil, err: serve the console on a unix socket.
function M.listen(path)
  local dir = path:match("^(.*)/[^/]*$")
  if dir and dir ~= "" then
    local ok, err = require("thorp.sys").mkdir_p(dir, tonumber("700", 8))
    if not ok then return nil, "console: " .. err end
  end
  local errbuf = ffi.new("char[512]")
  if C.thorp_console_listen(path, errbuf, 512) ~= 0 then return nil, "console: " .. ffi.string(errbuf) end
  sched.on_event(sched.EV.CONSOLE, on_event)
  listening = path
  log.info("console listening", { socket = path })
  return true
end

--- start(cfg, mode): the host calls this; the console listens in mode "run"
--- unless console.enabled is false. A live host on the socket is an error.
function M.start(cfg, mode)
  if mode ~= "run" then return true end
  local c = cfg and cfg.console or {}
  if c.enabled == false then return true end
  return M.listen(c.socket or ((cfg and cfg.state_dir or "./thorp-state") .. "/console.sock"))
end

function M.stop()
  if listening then C.thorp_console_stop() end
  listening = nil
  envs = {}
  C.thorp_console_stdin_stop()
end

------------------------------------------------------------------------------
-- The read-eval-print loop shared by the client and --local
------------------------------------------------------------------------------

-- read(prompt) -> line | nil at end; run(src) -> nil to go on, or an exit code.
local function repl(read, run)
  local buf
  while true do
    local line = read(buf and CONT or PROMPT)
    if line == nil then
      if buf then return run(buf) or 0 end -- show what is wrong with the unfinished chunk
      return 0
    end
    if not buf and (line == "exit" or line == "quit") then return 0 end
    buf = buf and (buf .. "\n" .. line) or line
    if buf:match("^%s*$") then
      buf = nil
    elseif not M.incomplete(buf) then
      local src = buf
      buf = nil
      local code = run(src)
      if code then return code end
    end
  end
end

local function show(ok, text)
  local f = ok and io.stdout or io.stderr
  f:write(text)
  f:flush()
end

local function history_file()
  local home = os.getenv("HOME")
  return home and home ~= "" and (home .. "/.thorp_history") or nil
end

-- Line reader for an interactive terminal (libedit) or plain stdin.
local function client_reader()
  if C.thorp_console_isatty(0) == 0 then
    return function() return io.read("*l") end
  end
  local hist = history_file()
  if hist then C.thorp_console_history_load(hist) end
  io.stdout:write("thorp console; help() lists the commands, Ctrl-D leaves\n")
  return function(prompt)
    local p = C.thorp_console_readline(prompt)
    if p == nil then io.stdout:write("\n"); return nil end
    local s = ffi.string(p)
    C.thorp_console_free(p)
    if s:match("%S") then
      C.thorp_console_history_add(s)
      if hist then C.thorp_console_history_save(hist) end
    end
    return s
  end
end

local function call(fd, src)
  -- A failed send may still have an answer waiting (the host refuses an
  -- oversized request, then closes), so read it either way.
  C.thorp_console_send(fd, src, #src)
  local p = C.thorp_console_recv(fd, lenp)
  if p == nil then return nil end
  local s = ffi.string(p, lenp[0])
  C.thorp_console_free(p)
  return s:sub(1, 1) == "+", s:sub(2)
end

--- thorp repl / thorp reload: talk to a running host. Returns the exit code.
function M.client_main(cmd, o, cfg)
  local path = o.socket or (cfg and cfg.console and cfg.console.socket)
    or ((cfg and cfg.state_dir or "./thorp-state") .. "/console.sock")
  local errbuf = ffi.new("char[512]")
  local fd = C.thorp_console_dial(path, errbuf, 512)
  if fd < 0 then
    io.stderr:write(("thorp: cannot connect to the console socket %s: %s (is the host running?)\n")
      :format(path, ffi.string(errbuf)))
    return 1
  end
  local lost = function()
    io.stderr:write(("thorp: the host closed the console connection (%s)\n"):format(path))
    return 1
  end
  local code
  local mark = o.flags and o.flags.json and JSON_MARK or ""
  if cmd == "reload" then
    local ok, text = call(fd, "reload()")
    if ok == nil then code = lost() else show(ok, text); code = ok and 0 or 1 end
  elseif o.code and #o.code > 0 then -- thorp repl -e CHUNK [-e CHUNK ...]: 1 if any failed
    code = 0
    for _, src in ipairs(o.code) do
      local ok, text = call(fd, mark .. src)
      if ok == nil then code = lost(); break end
      show(ok or mark ~= "", text)
      if not ok then code = 1 end
    end
  else
    local failed = false
    local tty = C.thorp_console_isatty(0) ~= 0
    code = repl(client_reader(), function(src)
      local ok, text = call(fd, mark .. src)
      if ok == nil then return lost() end
      show(ok or mark ~= "", text)
      if not ok then failed = true end
    end)
    -- piped input: a chunk that raised makes the exit code 1, so scripts can tell
    if code == 0 and failed and not tty then code = 1 end
  end
  C.thorp_console_close(fd)
  return code
end

--- thorp repl --local: a host in this process, the REPL on its loop.
function M.local_main(o, cfg, start_host, finish)
  if not start_host(cfg, "repl", {}) then return 2 end
  local env = M.new_env()
  local eval = o and o.flags and o.flags.json and M.eval_json or M.eval
  if o and o.code and #o.code > 0 then -- thorp repl --local -e CHUNK [-e CHUNK ...]: 1 if any failed
    sched.spawn_opts({ name = "repl", daemon = true }, function()
      local code = 0
      for _, src in ipairs(o.code) do
        local ok, text = eval(src, env)
        show(ok or eval == M.eval_json, text)
        if not ok then code = 1 end
      end
      sched.stop(code)
    end)
    return finish(sched.run())
  end
  sched.on_event(sched.EV.CONSOLE, on_event)
  local tty = C.thorp_console_isatty(0) ~= 0
  local hist = tty and history_file()
  if hist then C.thorp_console_history_load(hist) end
  C.thorp_console_stdin_start(tty and 1 or 0)
  local function read(prompt)
    C.thorp_console_stdin_prompt(prompt)
    while true do
      local p = C.thorp_console_stdin_next(lenp, eofp)
      if p ~= nil then
        local s = ffi.string(p, lenp[0])
        C.thorp_console_free(p)
        if hist and s:match("%S") then
          C.thorp_console_history_add(s)
          C.thorp_console_history_save(hist)
        end
        return s
      end
      if eofp[0] ~= 0 then
        if tty then io.stdout:write("\n") end
        return nil
      end
      stdin_waiter = sched.current()
      stdin_tok = sched.token(stdin_waiter)
      sched.suspend()
      stdin_waiter = nil
    end
  end
  if tty then io.stdout:write("thorp console (local host); help() lists the commands, Ctrl-D leaves\n") end
  local failed = false
  sched.spawn_opts({ name = "repl", daemon = true }, function()
    local code = repl(read, function(src)
      local ok, text = eval(src, env)
      show(ok or eval == M.eval_json, text)
      if not ok then failed = true end
    end)
    if code == 0 and failed and not tty then code = 1 end
    sched.stop(code)
  end)
  local rc = finish(sched.run())
  C.thorp_console_stdin_stop()
  return rc
end

return M
