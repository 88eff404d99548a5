-- config: the host's settings, validated, from four layers.
--
-- Built-in defaults < config file (-c FILE, a Lua chunk returning a table)
-- < environment < command line (--set key=value and a few named flags).
-- Every invalid value is reported with its name, the value and what is
-- allowed; nothing is silently replaced by a default. load() returns the
-- effective table, or nil and the list of every problem.
--
--   local cfg, errs = config.load{ file = "thorp.conf.lua", sets = { "rpc.timeout_ms=800" } }
--
-- URLs: redact_url() hides API keys (query values, user:password, long
-- tokens in the path) and registers each hidden piece with the log scrubber,
-- so the key cannot reach a log line even by accident.
local M = {}

-- key, env name, type, default, extra checks
local SETTINGS = {
  { "log_level", "LOG_LEVEL", "enum", "info", values = { "error", "warn", "info", "debug" } },
  { "state_dir", "THORP_STATE_DIR", "string", "./thorp-state" },
  { "watchdog_ms", "THORP_WATCHDOG_MS", "int", 1000, min = 0, max = 3600000,
    note = "report a task that runs this long without yielding; 0 = off" },
  { "watchdog_exit_multiple", "THORP_WATCHDOG_EXIT_MULTIPLE", "int", 10, min = 0, max = 100000,
    note = "exit 1 once a task has run this many watchdog limits without yielding; 0 = never" },
  { "load_timeout_ms", "THORP_LOAD_TIMEOUT_MS", "int", 5000, min = 1, max = 600000,
    note = "a config or policy file still running after this long is stopped and reported" },
  { "http.enabled", "THORP_HTTP", "bool", true },
  { "http.port", "THORP_HTTP_PORT", "int", 0, min = 0, max = 65535, note = "0 turns the listener off" },
  { "http.host", "THORP_HTTP_HOST", "string", "127.0.0.1" },
  { "http.token", "THORP_HTTP_TOKEN", "string", nil,
    note = "bearer token the listener requires (at least 16 characters; needed for a non-loopback THORP_HTTP_HOST)" },
  { "http.max_body", "THORP_HTTP_MAX_BODY", "int", 4194304, min = 1024, max = 268435456,
    note = "bytes per request body (413 beyond)" },
  { "http.max_inflight_bytes", "THORP_HTTP_MAX_INFLIGHT_BYTES", "int", 67108864, min = 1024, max = 17179869184,
    note = "bytes of request bodies held at once (503 beyond)" },
  { "http.max_pending", "THORP_HTTP_MAX_PENDING", "int", 8192, min = 1, max = 8192,
    note = "front-door requests being answered (503 beyond; /health, /ready, /metrics are not counted)" },
  { "backpressure.enabled", "ENABLE_BACKPRESSURE_MANAGEMENT", "bool", true },
  { "backpressure.max_queue_size", "BACKPRESSURE_MAX_QUEUE_SIZE", "int", 10000, min = 1, max = 1e9 },
  { "backpressure.warning_threshold", "BACKPRESSURE_WARNING_THRESHOLD", "number", 0.8, min = 0.01, max = 1 },
  { "backpressure.critical_threshold", "BACKPRESSURE_CRITICAL_THRESHOLD", "number", 0.95, min = 0.01, max = 1 },
  { "shutdown.enabled", "ENABLE_GRACEFUL_SHUTDOWN", "bool", true },
  { "shutdown.timeout_ms", "SHUTDOWN_TIMEOUT_MS", "int", 30000, min = 0, max = 86400000 },
  { "shutdown.force_timeout_ms", "FORCE_SHUTDOWN_TIMEOUT_MS", "int", 60000, min = 0, max = 86400000 },
  { "journal.synchronous", "THORP_JOURNAL_SYNC", "enum", "NORMAL", values = { "OFF", "NORMAL", "FULL" } },
  { "journal.history_retention_ms", "JOURNAL_HISTORY_RETENTION_MS", "int", 7 * 86400000, min = 0, max = 1e13,
    note = "finished trades are kept this long for thorp.journal.history" },
  { "journal.check_interval_ms", "THORP_JOURNAL_CHECK_MS", "int", 5000, min = 0, max = 3600000,
    note = "a test write this often while idle, so /health learns of a failing disk before a trade does (0 = off)" },
  { "rpc.timeout_ms", "RPC_TIMEOUT_MS", "int", 5000, min = 1, max = 600000 },
  { "rpc.health_interval_ms", "THORP_HEALTH_INTERVAL_MS", "int", 400, min = 0, max = 600000,
    note = "0 turns the slot checker off" },
  { "rpc.max_slot_lag", "THORP_MAX_SLOT_LAG", "int", 20, min = 1, max = 1000000 },
  { "rpc.auto_batch", "THORP_RPC_AUTO_BATCH", "int", 0, min = 0, max = 1000,
    note = "send reads made in the same loop turn as one JSON-RPC batch of at most N; 0 = off" },
  { "rpc.helius_url", "HELIUS_RPC_URL", "url", nil },
  { "rpc.chainstack_url", "CHAINSTACK_RPC_URL", "url", nil },
  { "rpc.public_url", "PUBLIC_RPC_URL", "url", nil },
  { "rpc.urls", "THORP_RPC_URLS", "urllist", nil },
  { "send.rebroadcast_ms", "THORP_SEND_REBROADCAST_MS", "int", 1000, min = 50, max = 60000,
    note = "send_and_confirm sends the same bytes again this often until they land or expire" },
  { "send.reconcile", "THORP_SEND_RECONCILE", "bool", true,
    note = "at start, look up trades a previous run left open with a journaled signature and complete them" },
  { "send.urls", "THORP_SEND_URLS", "urllist", nil,
    note = "send-only endpoints (name=url,...: a Jito block engine, Helius Sender) that get every rebroadcast" },
  { "bus.max_queue_size", "BUS_MAX_QUEUE_SIZE", "int", 10000, min = 1, max = 1e9 },
  { "bus.max_subscribers", "BUS_MAX_SUBSCRIBERS", "int", 100, min = 1, max = 100000 },
  { "bus.reorder_window_ms", "BUS_REORDER_WINDOW_MS", "int", 50, min = 0, max = 600000 },
  { "bus.evict_low_for_critical", "BUS_EVICT_LOW_FOR_CRITICAL", "bool", true,
    note = "a full bus drops its oldest low event to take a critical one" },
  { "ws.heartbeat_ms", "THORP_WS_HEARTBEAT_MS", "int", 2000, min = 0, max = 600000,
    note = "a connection with a slotSubscribe and no slot notification for this long is dead; 0 = off" },
  { "ws.ping_interval_ms", "THORP_WS_PING_INTERVAL_MS", "int", 5000, min = 100, max = 600000,
    note = "a WebSocket ping when nothing arrived for this long" },
  { "ws.ping_timeout_ms", "THORP_WS_PING_TIMEOUT_MS", "int", 15000, min = 100, max = 3600000,
    note = "nothing at all (not even a pong) for this long: the connection is dead" },
  { "ws.connect_timeout_ms", "THORP_WS_CONNECT_TIMEOUT_MS", "int", 5000, min = 100, max = 600000 },
  { "ws.max_message_bytes", "THORP_WS_MAX_MESSAGE_BYTES", "int", 64 * 1024 * 1024, min = 4096, max = 1073741824,
    note = "a larger message closes the connection with an error (programSubscribe with base64 data is large)" },
  { "ws.backoff_min_ms", "THORP_WS_BACKOFF_MIN_MS", "int", 100, min = 1, max = 600000,
    note = "first reconnect delay (jittered, doubling up to ws.backoff_max_ms)" },
  { "ws.backoff_max_ms", "THORP_WS_BACKOFF_MAX_MS", "int", 5000, min = 1, max = 3600000 },
  { "ws.mailbox", "THORP_WS_MAILBOX", "int", 10000, min = 1, max = 1e9,
    note = "notifications waiting per subscription before drops (counted)" },
  { "ws.ca_file", "THORP_WS_CA_FILE", "string", nil, note = "trust store for wss:// (default: the system's)" },
  { "console.enabled", "THORP_CONSOLE", "bool", true },
  { "console.socket", "THORP_CONSOLE_SOCKET", "string", nil, note = "default: STATE_DIR/console.sock" },
}
M.SETTINGS = SETTINGS

local by_key, by_env = {}, {}
for _, s in ipairs(SETTINGS) do by_key[s[1]] = s; by_env[s[2]] = s end

-- Keys of the config file that are tables of their own (not settings).
local FILE_TABLES = { ["rpc.endpoints"] = true, ["policies"] = true, ["send.endpoints"] = true }

-- The keys an endpoint of rpc.endpoints may have (add a key here and in check_endpoints).
M.ENDPOINT_KEYS = { name = true, url = true, weight = true, timeout_ms = true, headers = true, ws_url = true,
                    public_path = true }

-- THORP_* variables read outside the settings table (tests, the demo, the
-- build). Any other THORP_* name is an error: a misspelt setting must not
-- pass silently. A module reading its own THORP_ variable adds it here.
M.OTHER_ENV = { THORP_NO_DEV_LIB = true, THORP_TEST_VERBOSE = true, THORP_SIM = true, THORP_SIM_SLOT_MS = true,
                THORP_LIVE_RPC_URL = true, THORP_TEST_UPSTREAMS = true, THORP_URL = true, THORP_DEMO_FEED = true,
                THORP_DEMO_FEED_MS = true, THORP_VERSION = true }

------------------------------------------------------------------------------
-- URL redaction
------------------------------------------------------------------------------
--- redact_url(url [, endpoint]) -> url with its secrets replaced by ***, each
--- registered with the scrubber (one scrubber: thorp.log.redact_url).
function M.redact_url(url, opts)
  return (package.loaded["thorp.log"] or require("thorp.log")).redact_url(url, opts)
end

------------------------------------------------------------------------------
-- Value parsing
------------------------------------------------------------------------------
local BOOL = { ["true"] = true, ["1"] = true, yes = true, ["false"] = false, ["0"] = false, no = false }

local function describe(s)
  local t = s[3]
  if t == "bool" then return "true, false, 1, 0, yes or no" end
  if t == "enum" then return "one of " .. table.concat(s.values, ", ") end
  if t == "int" or t == "number" then
    local what = t == "int" and "an integer" or "a number"
    local r = (s.min and s.max) and (" from %s to %s"):format(s.min, s.max)
      or (s.min and (" >= %s"):format(s.min)) or ""
    return what .. r .. (s.note and (" (" .. s.note .. ")") or "")
  end
  if t == "url" then return "an http:// or https:// URL" end
  if t == "urllist" then return "a comma-separated list of NAME=URL (http or https)" end
  return "a string" .. (s.note and (" (" .. s.note .. ")") or "")
end

local function valid_url(u)
  return type(u) == "string" and u:match("^https?://[^/?#%s]+[^%s]*$") ~= nil
end

-- Parse v (a string from env/command line, or a Lua value from the file).
local function parse(s, v)
  local t = s[3]
  if t == "bool" then
    if type(v) == "boolean" then return v end
    local b = BOOL[tostring(v):lower()]
    if b == nil then return nil end
    return b
  elseif t == "int" or t == "number" then
    local n = tonumber(v)
    if not n or n ~= n then return nil end
    if t == "int" and n ~= math.floor(n) then return nil end
    if (s.min and n < s.min) or (s.max and n > s.max) then return nil end
    return n
  elseif t == "enum" then
    v = tostring(v)
    for _, a in ipairs(s.values) do if a:lower() == v:lower() then return a end end
    return nil
  elseif t == "url" then
    if v == "" then return false end -- set but empty: treated as unset
    return valid_url(v) and v or nil
  elseif t == "urllist" then
    local list = {}
    for item in tostring(v):gmatch("[^,]+") do
      local name, url = item:match("^%s*([%w_%-]+)=(.-)%s*$")
      if not name or not valid_url(url) then return nil end
      list[#list + 1] = { name = name, url = url }
    end
    return list
  else
    if type(v) ~= "string" or v == "" then return nil end
    return v
  end
end

local function shown(s, v)
  if s[3] == "url" or s[3] == "urllist" then return M.redact_url(tostring(v)) end
  return tostring(v)
end

local function set_path(t, key, v)
  local parts = {}
  for p in key:gmatch("[^.]+") do parts[#parts + 1] = p end
  for i = 1, #parts - 1 do
    t[parts[i]] = t[parts[i]] or {}
    t = t[parts[i]]
  end
  t[parts[#parts]] = v
end

------------------------------------------------------------------------------
-- Loading
------------------------------------------------------------------------------
------------------------------------------------------------------------------
-- Running user files (config and policy files) safely
------------------------------------------------------------------------------
--- sandbox(what, file, extra) -> an environment for a user chunk: the globals,
--- with an os.exit that raises an error naming it (a file must not end the host).
local function no_exit_for(what, file)
  return function()
    error(("os.exit is not allowed in %s (%s): it would end the host and abandon open trades; "
           .. "use thorp.shutdown.initiate(reason) to stop it"):format(what, file), 2)
  end
end

function M.sandbox(what, file, extra)
  local env = setmetatable(extra or {}, { __index = _G })
  env.os = setmetatable({ exit = no_exit_for(what, file) }, { __index = os })
  return env
end

local function load_timeout()
  local cur = M.current and M.current.load_timeout_ms
  local v = cur or tonumber(os.getenv("THORP_LOAD_TIMEOUT_MS") or "")
  return (v and v > 0) and v or 5000
end
M.load_timeout = load_timeout

-- how long past its deadline a load may still run before the process ends it
M.LOAD_GRACE_MS = 1000

--- run_bounded(chunk, file, timeout_ms, what, exit_code) -> true, result | false, message (with a traceback)
--- Runs a user file's chunk with a deadline. LuaJIT's hooks do not fire in
--- compiled code, so the JIT is off while the chunk runs (nothing new gets
--- compiled) and a count hook checks the clock: `while true do end` is
--- stopped and named instead of freezing the host. Past the deadline the
--- hook fires on every instruction and raises each time, so a chunk that
--- catches the error (a pcall in a loop) is stopped too. A chunk stuck where
--- no hook runs (inside a C function) is ended by the watchdog thread
--- LOAD_GRACE_MS after the deadline: the process exits exit_code (default 2;
--- 1 for a reload in a running host, so its supervisor restarts it).
function M.run_bounded(chunk, file, timeout_ms, what, exit_code)
  local sched = require "thorp.sched"
  local now = sched.now
  local deadline = now() + timeout_ms
  local jit_was_on = jit.status()
  -- the load has its own deadline: the watchdog must not end the host first
  local wd = sched.watchdog
  local wd_exit = wd.exit_after_ms
  if wd_exit > 0 and wd_exit < timeout_ms + M.LOAD_GRACE_MS then wd.exit_after_ms = timeout_ms + M.LOAD_GRACE_MS end
  local C = require "thorp.cdef"
  C.thorp_watchdog_guard(file, deadline + M.LOAD_GRACE_MS, exit_code or 2)
  -- while it loads, the real os.exit is out of reach by any path (_G.os, a required module)
  local exit = os.exit
  rawset(os, "exit", no_exit_for(what or "a file being loaded", file))
  jit.off()
  local old_hook, old_mask, old_count = debug.gethook()
  local getinfo, sethook = debug.getinfo, debug.sethook
  local message = ("%s: still running after %d ms (an endless loop?): stopped (THORP_LOAD_TIMEOUT_MS)"):format(
    file, timeout_ms)
  local function hook()
    if now() <= deadline then return end
    -- from now on, every instruction: a caught error cannot buy the chunk another 1000
    sethook(hook, "", 1)
    -- except this function's own, once the chunk has returned
    if getinfo(2, "f").func == M.run_bounded then return end
    error(message, 2)
  end
  sethook(hook, "", 1000)
  local res = { xpcall(chunk, debug.traceback) }
  -- a C hook shows as the string "external hook": Lua cannot put it back
  if type(old_hook) == "function" then sethook(old_hook, old_mask, old_count) else sethook() end
  C.thorp_watchdog_guard(nil, 0, 0)
  if jit_was_on then jit.on() end
  rawset(os, "exit", exit)
  -- the load's time was its deadline's to judge: the task's watchdog clock starts
  -- again (a new seq) before the exit limit comes back, or the rest of this resume
  -- would be charged the whole load and end the host
  wd.seq = wd.seq + 1
  wd.exit_after_ms = wd_exit
  return unpack(res, 1, 2)
end

local function load_file(path, errs, timeout_ms)
  local chunk, err = loadfile(path)
  if not chunk then
    errs[#errs + 1] = ("config file %s: %s"):format(path, err)
    return nil
  end
  setfenv(chunk, M.sandbox("a config file", path))
  local ok, t = M.run_bounded(chunk, path, timeout_ms or load_timeout(), "a config file")
  if not ok then
    -- an error value whose __tostring raises must not escape the loader
    local printable, text = pcall(tostring, t)
    text = printable and text:gsub("\nstack traceback:.*$", "") or "(an error value that cannot be shown)"
    errs[#errs + 1] = ("config file %s: %s"):format(path, text)
    return nil
  end
  if type(t) ~= "table" then
    errs[#errs + 1] = ("config file %s: must return a table, got %s"):format(path, type(t))
    return nil
  end
  return t
end

-- The keys allowed right under prefix ("" = top level, "rpc." = in rpc).
local function allowed_under(prefix)
  local set, list = {}, {}
  local function add(full)
    if full:sub(1, #prefix) == prefix then
      local next_part = full:sub(#prefix + 1):match("^[^.]+")
      if next_part and not set[next_part] then set[next_part] = true; list[#list + 1] = next_part end
    end
  end
  for _, s in ipairs(SETTINGS) do add(s[1]) end
  for k in pairs(FILE_TABLES) do add(k) end
  table.sort(list)
  return set, list
end

-- Walk the file's table and turn it into { key = value } for known keys;
-- every other key, at any depth, is an error naming it and what is allowed.
local function flatten(t, prefix, out, errs, path)
  local set, list = allowed_under(prefix)
  for k, v in pairs(t) do
    local key = prefix .. tostring(k)
    if FILE_TABLES[key] or by_key[key] then
      out[key] = v
    elseif type(k) == "string" and set[k] and type(v) == "table" then
      flatten(v, key .. ".", out, errs, path)
    elseif type(k) == "string" and set[k] then
      local _, sub = allowed_under(key .. ".")
      errs[#errs + 1] = ("config file %s: %s = %s: must be a table of settings (%s)"):format(path, key,
        tostring(v), table.concat(sub, ", "))
    else
      local where = prefix == "" and "at the top level" or ("in " .. prefix:sub(1, -2))
      errs[#errs + 1] = ("config file %s: unknown key %s (allowed %s: %s)"):format(path, key, where,
        table.concat(list, ", "))
    end
  end
end

local function finite_positive(v) return type(v) == "number" and v == v and v > 0 and v < math.huge end

local function valid_ws_url(u) return type(u) == "string" and u:match("^wss?://[^/?#%s]+[^%s]*$") ~= nil end

-- headers = { ["x-api-key"] = "..." }: names are HTTP tokens, values one-line
-- strings. Values are secrets: registered with the scrubber, never shown.
local function check_headers(h, w, errs)
  if type(h) ~= "table" then
    errs[#errs + 1] = ("%s.headers: must be a table of name = \"value\" strings"):format(w)
    return nil
  end
  local out, ok = {}, true
  for k, v in pairs(h) do
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      errs[#errs + 1] = ("%s.headers: %s is not a header name (letters, digits and !#$%%&'*+.^_`|~-)"):format(w,
        tostring(k))
      ok = false
    elseif type(v) ~= "string" or v:find("[\r\n%z]") then
      errs[#errs + 1] = ("%s.headers.%s: must be a one-line string"):format(w, k)
      ok = false
    else
      require("thorp.log").secret_headers({ v })
      out[k] = v
    end
  end
  return ok and out or nil
end

local function ordered_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return table.concat(ks, ", ")
end

local function check_endpoints(list, where, errs)
  local shape = "a list { { name = ..., url = ..., weight = ... }, ... }"
  if type(list) ~= "table" then
    errs[#errs + 1] = ("%s: must be %s"):format(where, shape)
    return {}
  end
  local n = #list
  for k in pairs(list) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then
      errs[#errs + 1] = ("%s: must be %s, not a map (found key %s: write { name = %q, url = ... } as a list item)")
        :format(where, shape, tostring(k), tostring(k))
      return {}
    end
  end
  local out, seen = {}, {}
  for i, e in ipairs(list) do
    local w = ("%s[%d]"):format(where, i)
    if type(e) ~= "table" then
      errs[#errs + 1] = w .. ": must be a table { name = ..., url = ... }"
    else
      local ok = true
      for k in pairs(e) do
        if not M.ENDPOINT_KEYS[k] then
          errs[#errs + 1] = ("%s: unknown key %s (allowed: %s)"):format(w, tostring(k), ordered_keys(M.ENDPOINT_KEYS))
          ok = false
        end
      end
      if type(e.name) ~= "string" or not e.name:match("^[%w_%-]+$") then
        errs[#errs + 1] = ("%s.name = %s: must be a name of letters, digits, _ or -"):format(w, tostring(e.name))
        ok = false
      elseif seen[e.name] then
        errs[#errs + 1] = ("%s.name = %s: duplicate endpoint name (also %s[%d]); names must be unique"):format(
          w, e.name, where, seen[e.name])
        ok = false
      else
        seen[e.name] = i
      end
      if not valid_url(e.url) then
        errs[#errs + 1] = ("%s.url = %s: must be an http:// or https:// URL"):format(w, M.redact_url(tostring(e.url)))
        ok = false
      end
      if e.weight ~= nil and not finite_positive(e.weight) then
        errs[#errs + 1] = ("%s.weight = %s: must be a finite number > 0"):format(w, tostring(e.weight))
        ok = false
      end
      if e.timeout_ms ~= nil and not finite_positive(e.timeout_ms) then
        errs[#errs + 1] = ("%s.timeout_ms = %s: must be a finite number of milliseconds > 0"):format(w,
          tostring(e.timeout_ms))
        ok = false
      end
      if e.public_path ~= nil and type(e.public_path) ~= "boolean" then
        errs[#errs + 1] = ("%s.public_path = %s: must be true or false (true: the URL's path is not secret)"):format(w,
          tostring(e.public_path))
        ok = false
      end
      if e.ws_url ~= nil and not valid_ws_url(e.ws_url) then
        errs[#errs + 1] = ("%s.ws_url = %s: must be a ws:// or wss:// URL"):format(w, M.redact_url(tostring(e.ws_url)))
        ok = false
      end
      local headers
      if e.headers ~= nil then
        headers = check_headers(e.headers, w, errs)
        if not headers then ok = false end
      end
      if ok then
        out[#out + 1] = { name = e.name, url = e.url, weight = e.weight or 1, timeout_ms = e.timeout_ms,
                          ws_url = e.ws_url, headers = headers,
                          public_path = e.public_path == true or nil }
      end
    end
  end
  return out
end

-- policies = { "file.lua", "dir/" } in the config file: each must exist,
-- as given or relative to the config file's folder.
local function check_policies(v, file, errs)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" then
    errs[#errs + 1] = ("config file %s: policies: must be a list of policy files or folders"):format(file)
    return nil
  end
  local base = file:match("^(.*)/[^/]*$")
  local out = {}
  for i, p in ipairs(v) do
    local found
    if type(p) == "string" and p ~= "" then
      for _, cand in ipairs{ p, (base and p:sub(1, 1) ~= "/") and (base .. "/" .. p) or nil } do
        local f = io.open(cand, "r")
        if f then f:close(); found = cand; break end
      end
    end
    if found then out[#out + 1] = found
    else
      errs[#errs + 1] = ("config file %s: policies[%d] = %s: no such policy file or folder"):format(file, i,
        tostring(p))
    end
  end
  return out
end

-- Every THORP_* variable of the environment must be a known name.
local function check_env_names(names, errs)
  local known = {}
  for _, s in ipairs(SETTINGS) do known[s[2]] = true end
  for _, name in ipairs(names) do
    if name:match("^THORP_") and not known[name] and not M.OTHER_ENV[name] then
      local best, bd
      for k in pairs(known) do
        if k:match("^THORP_") then
          local d = 0 -- a small distance: differing characters over the longer length
          for i = 1, math.max(#k, #name) do if k:sub(i, i) ~= name:sub(i, i) then d = d + 1 end end
          if not bd or d < bd then best, bd = k, d end
        end
      end
      local all = {}
      for k in pairs(known) do if k:match("^THORP_") then all[#all + 1] = k end end
      table.sort(all)
      errs[#errs + 1] = ("%s: unknown THORP_ variable%s (known: %s)"):format(name,
        (bd and bd <= 3) and (", did you mean " .. best .. "?") or "", table.concat(all, ", "))
    end
  end
end

local function environ_names()
  local C = require "thorp.cdef"
  local ffi = require "ffi"
  local out, i = {}, 0
  while true do
    local p = C.thorp_script_env_at(i)
    if p == nil then break end
    out[#out + 1] = ffi.string(p):match("^([^=]*)")
    i = i + 1
  end
  return out
end

--- load{ file = path|nil, env = function(name) | nil, sets = { "key=value", ... } }
--- -> cfg | nil, { "error", ... }
function M.load(opts)
  opts = opts or {}
  local getenv = opts.env or os.getenv
  local errs = {}
  local values = {}
  for _, s in ipairs(SETTINGS) do values[s[1]] = s[4] end
  local endpoints_from_file, send_from_file

  if opts.file then
    local t = load_file(opts.file, errs, opts.timeout_ms)
    if t then
      local flat = {}
      flatten(t, "", flat, errs, opts.file)
      for key, v in pairs(flat) do
        if key == "rpc.endpoints" then
          endpoints_from_file = check_endpoints(v, opts.file .. ": rpc.endpoints", errs)
        elseif key == "send.endpoints" then
          send_from_file = check_endpoints(v, opts.file .. ": send.endpoints", errs)
        elseif key == "policies" then
          values.policies = check_policies(v, opts.file, errs)
        else
          local s = by_key[key]
          local p = parse(s, v)
          if p == nil then
            errs[#errs + 1] = ("config file %s: %s = %s: allowed %s"):format(opts.file, key, shown(s, v), describe(s))
          else
            values[key] = p
          end
        end
      end
    end
  end

  check_env_names(opts.environ or (opts.env == nil and environ_names()) or {}, errs)
  for _, s in ipairs(SETTINGS) do
    local v = getenv(s[2])
    if v ~= nil then
      local p = parse(s, v)
      if p == nil then
        errs[#errs + 1] = ("%s=%q: allowed %s"):format(s[2], shown(s, v), describe(s))
      elseif p == false and s[3] == "url" then
        values[s[1]] = nil -- set but empty: unset
      else
        values[s[1]] = p
      end
    end
  end

  for _, kv in ipairs(opts.sets or {}) do
    local key, v = kv:match("^([%w_.]+)=(.*)$")
    local s = key and (by_key[key] or by_env[key])
    if not s then
      errs[#errs + 1] = ("--set %s: unknown setting (see `thorp check --help` for the list)"):format(M.redact_url(kv))
    else
      local p = parse(s, v)
      if p == nil then
        errs[#errs + 1] = ("--set %s=%q: allowed %s"):format(s[1], shown(s, v), describe(s))
      elseif p == false and s[3] == "url" then
        values[s[1]] = nil
      else
        values[s[1]] = p
      end
    end
  end

  -- Cross-field checks
  local w, c = values["backpressure.warning_threshold"], values["backpressure.critical_threshold"]
  if w and c and w >= c then
    errs[#errs + 1] = ("BACKPRESSURE_WARNING_THRESHOLD=%s must be below BACKPRESSURE_CRITICAL_THRESHOLD=%s"):format(w, c)
  end
  local bmin, bmax = values["ws.backoff_min_ms"], values["ws.backoff_max_ms"]
  if bmin and bmax and bmin > bmax then
    errs[#errs + 1] = ("THORP_WS_BACKOFF_MIN_MS=%s (ws.backoff_min_ms) must be at most THORP_WS_BACKOFF_MAX_MS=%s "
                       .. "(ws.backoff_max_ms)"):format(bmin, bmax)
  end
  local st, ft = values["shutdown.timeout_ms"], values["shutdown.force_timeout_ms"]
  if st and ft and ft < st then
    errs[#errs + 1] = ("FORCE_SHUTDOWN_TIMEOUT_MS=%s (shutdown.force_timeout_ms) must be at least SHUTDOWN_TIMEOUT_MS=%s "
                       .. "(shutdown.timeout_ms): the forced exit would cut the graceful wait short"):format(ft, st)
  end

  local cfg = {}
  for key, v in pairs(values) do set_path(cfg, key, v) end

  -- Endpoints: the file's list, then Helius -> Chainstack -> public, then THORP_RPC_URLS.
  -- A name given twice is an error naming both places.
  local eps, names = {}, {}
  local function add(e, from)
    if names[e.name] then
      errs[#errs + 1] = ("endpoint name %s is defined twice (%s and %s): endpoint names must be unique"):format(
        e.name, names[e.name], from)
      return
    end
    names[e.name] = from
    e.weight = e.weight or 1
    eps[#eps + 1] = e
  end
  for i, e in ipairs(endpoints_from_file or {}) do add(e, ("config file rpc.endpoints[%d]"):format(i)) end
  if values["rpc.helius_url"] then add({ name = "helius", url = values["rpc.helius_url"] }, "HELIUS_RPC_URL") end
  if values["rpc.chainstack_url"] then
    add({ name = "chainstack", url = values["rpc.chainstack_url"] }, "CHAINSTACK_RPC_URL")
  end
  if values["rpc.public_url"] then add({ name = "public", url = values["rpc.public_url"] }, "PUBLIC_RPC_URL") end
  for _, e in ipairs(values["rpc.urls"] or {}) do add({ name = e.name, url = e.url }, "THORP_RPC_URLS") end
  for _, e in ipairs(eps) do e.display_url = M.redact_url(e.url, e) end
  cfg.rpc.endpoints = eps
  -- send-only endpoints: the file's send.endpoints, then THORP_SEND_URLS
  local sends = {}
  for _, e in ipairs(send_from_file or {}) do sends[#sends + 1] = e end
  for _, e in ipairs(values["send.urls"] or {}) do sends[#sends + 1] = { name = e.name, url = e.url } end
  for _, e in ipairs(sends) do e.display_url = M.redact_url(e.url) end
  cfg.send.endpoints = sends
  cfg.console.socket = cfg.console.socket or (cfg.state_dir .. "/console.sock")

  if #errs > 0 then return nil, errs end
  return cfg
end

--- The list of settings, for `thorp check --help` and the README.
function M.describe_all()
  local lines = {}
  for _, s in ipairs(SETTINGS) do
    lines[#lines + 1] = ("  %-34s %-32s %s (default %s)"):format(s[1], s[2], describe(s), tostring(s[4]))
  end
  return table.concat(lines, "\n")
end


-- The effective configuration of this process (set by thorp.cli).
M.current = nil

return M
