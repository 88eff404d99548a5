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
  { "bus.max_queue_size", "BUS_MAX_QUEUE_SIZE", "int", 10000, min = 1, max = 1e9 },
  { "bus.max_subscribers", "BUS_MAX_SUBSCRIBERS", "int", 100, min = 1, max = 100000 },
  { "bus.reorder_window_ms", "BUS_REORDER_WINDOW_MS", "int", 50, min = 0, max = 600000 },
  { "bus.evict_low_for_critical", "BUS_EVICT_LOW_FOR_CRITICAL", "bool", true,
    note = "a full bus drops its oldest low event to take a critical one" },
  { "console.enabled", "THORP_CONSOLE", "bool", true },
  { "console.socket", "THORP_CONSOLE_SOCKET", "string", nil, note = "default: STATE_DIR/console.sock" },
}
M.SETTINGS = SETTINGS

local by_key, by_env = {}, {}
for _, s in ipairs(SETTINGS) do by_key[s[1]] = s; by_env[s[2]] = s end

-- Keys of the config file that are tables of their own (not settings).
local FILE_TABLES = { ["rpc.endpoints"] = true, ["policies"] = true }

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

local function get_path(t, key)
  for p in key:gmatch("[^.]+") do
    if type(t) ~= "table" then return nil end
    t = t[p]
  end
  return t
end

------------------------------------------------------------------------------
-- Loading
------------------------------------------------------------------------------
local function load_file(path, errs)
  local chunk, err = loadfile(path)
  if not chunk then
    errs[#errs + 1] = ("config file %s: %s"):format(path, err)
    return nil
  end
  setfenv(chunk, setmetatable({}, { __index = _G }))
  local ok, t = pcall(chunk)
  if not ok then
    errs[#errs + 1] = ("config file %s: %s"):format(path, tostring(t))
    return nil
  end
  if type(t) ~= "table" then
    errs[#errs + 1] = ("config file %s: must return a table, got %s"):format(path, type(t))
    return nil
  end
  return t
end

-- Walk the file's table and turn it into { key = value } for known keys.
local function flatten(t, prefix, out, errs, path)
  for k, v in pairs(t) do
    local key = prefix .. tostring(k)
    if FILE_TABLES[key] then
      out[key] = v
    elseif by_key[key] then
      out[key] = v
    elseif type(v) == "table" then
      flatten(v, key .. ".", out, errs, path)
    else
      local allowed = {}
      for _, s in ipairs(SETTINGS) do allowed[#allowed + 1] = s[1] end
      for k2 in pairs(FILE_TABLES) do allowed[#allowed + 1] = k2 end
      table.sort(allowed)
      errs[#errs + 1] = ("config file %s: unknown key %q (allowed: %s)"):format(path, key, table.concat(allowed, ", "))
    end
  end
end

local function check_endpoints(list, where, errs)
  if type(list) ~= "table" then
    errs[#errs + 1] = ("%s: must be a list of { name = ..., url = ..., weight = ... }"):format(where)
    return {}
  end
  local out, seen = {}, {}
  for i, e in ipairs(list) do
    local w = ("%s[%d]"):format(where, i)
    if type(e) ~= "table" then
      errs[#errs + 1] = w .. ": must be a table { name = ..., url = ... }"
    else
      local ok = true
      if type(e.name) ~= "string" or not e.name:match("^[%w_%-]+$") then
        errs[#errs + 1] = ("%s.name = %s: must be a name of letters, digits, _ or -"):format(w, tostring(e.name))
        ok = false
      elseif seen[e.name] then
        errs[#errs + 1] = ("%s.name = %s: duplicate endpoint name"):format(w, e.name)
        ok = false
      end
      if not valid_url(e.url) then
        errs[#errs + 1] = ("%s.url = %s: must be an http:// or https:// URL"):format(w, M.redact_url(tostring(e.url)))
        ok = false
      end
      if e.weight ~= nil and (type(e.weight) ~= "number" or e.weight <= 0) then
        errs[#errs + 1] = ("%s.weight = %s: must be a number > 0"):format(w, tostring(e.weight))
        ok = false
      end
      if e.timeout_ms ~= nil and (type(e.timeout_ms) ~= "number" or e.timeout_ms <= 0) then
        errs[#errs + 1] = ("%s.timeout_ms = %s: must be a number of milliseconds > 0"):format(w, tostring(e.timeout_ms))
        ok = false
      end
      if ok then
        seen[e.name] = true
        out[#out + 1] = { name = e.name, url = e.url, weight = e.weight or 1, timeout_ms = e.timeout_ms,
                          public_path = e.public_path == true or nil }
      end
    end
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
  local endpoints_from_file

  if opts.file then
    local t = load_file(opts.file, errs)
    if t then
      local flat = {}
      flatten(t, "", flat, errs, opts.file)
      for key, v in pairs(flat) do
        if key == "rpc.endpoints" then
          endpoints_from_file = check_endpoints(v, opts.file .. ": rpc.endpoints", errs)
        elseif key == "policies" then
          values.policies = v
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

  local cfg = {}
  for key, v in pairs(values) do set_path(cfg, key, v) end

  -- Endpoints: the file's list, then Helius -> Chainstack -> public, then THORP_RPC_URLS.
  local eps, names = {}, {}
  local function add(name, url, weight)
    if names[name] then return end
    names[name] = true
    eps[#eps + 1] = { name = name, url = url, weight = weight or 1 }
  end
  for _, e in ipairs(endpoints_from_file or {}) do
    add(e.name, e.url, e.weight)
    eps[#eps].timeout_ms, eps[#eps].public_path = e.timeout_ms, e.public_path
  end
  if values["rpc.helius_url"] then add("helius", values["rpc.helius_url"]) end
  if values["rpc.chainstack_url"] then add("chainstack", values["rpc.chainstack_url"]) end
  if values["rpc.public_url"] then add("public", values["rpc.public_url"]) end
  for _, e in ipairs(values["rpc.urls"] or {}) do add(e.name, e.url) end
  for _, e in ipairs(eps) do e.display_url = M.redact_url(e.url, e) end
  cfg.rpc.endpoints = eps
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

M.get = get_path

-- The effective configuration of this process (set by thorp.cli).
M.current = nil

return M
