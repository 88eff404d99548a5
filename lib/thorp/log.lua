-- log: structured logging for Lua code, through the host's scrubbed sink.
--
--   local log = require "thorp.log"
--   log.info("trade sent", { request_id = rid, token = "BONK" })
--
-- JSON lines when stderr is not a terminal, readable text when it is (the
-- C side decides, host/log.c). Every line is scrubbed of registered secrets
-- before it is written; log.secret(s) registers one.
local ffi = require "ffi"
local C = require "thorp.cdef"
local cjson = require "cjson.safe"

local M = {}
local LEVELS = { error = C.LOG_ERROR, warn = C.LOG_WARN, info = C.LOG_INFO, debug = C.LOG_DEBUG }
local NAMES = { [C.LOG_ERROR] = "error", [C.LOG_WARN] = "warn", [C.LOG_INFO] = "info", [C.LOG_DEBUG] = "debug" }
M.LEVELS = LEVELS

function M.set_level(name)
  local l = LEVELS[name]
  if not l then return nil, ("log level %q: allowed error, warn, info, debug"):format(tostring(name)) end
  C.thorp_log_set_level(l)
  return true
end
function M.level() return NAMES[C.thorp_log_get_level()] end
function M.enabled(name) return LEVELS[name] <= C.thorp_log_get_level() end
function M.set_json(on) C.thorp_log_set_json(on and 1 or 0) end
function M.secret(s) if type(s) == "string" and #s >= 4 then C.thorp_log_secret_add(s) end end

local scrub_cap = 8192
local scrub_buf = ffi.new("char[?]", scrub_cap)
--- Return s with every secret hidden (see host/log.h): registered secrets
--- become ***, and so do the path segments, query values, user:password and
--- fragment of any URL in s. Works on the whole string at once, any length.
function M.scrub(s)
  s = tostring(s)
  local n = tonumber(C.thorp_log_scrub_n(s, #s, scrub_buf, scrub_cap))
  if n >= scrub_cap then
    scrub_cap = n + 1
    scrub_buf = ffi.new("char[?]", scrub_cap)
    n = tonumber(C.thorp_log_scrub_n(s, #s, scrub_buf, scrub_cap))
  end
  local out = ffi.string(scrub_buf, n)
  if scrub_cap > 1048576 then -- do not keep a huge buffer alive after one big reply
    scrub_cap = 8192
    scrub_buf = ffi.new("char[?]", scrub_cap)
  end
  return out
end

--- Register the secrets of an endpoint's headers (values, and the token of
--- "Bearer X" / "Basic X") with the scrubber.
function M.secret_headers(headers)
  if type(headers) ~= "table" then return end
  for _, v in pairs(headers) do
    if type(v) == "string" then
      M.secret(v)
      local tok = v:match("^%a+%s+(%S+)$")
      if tok then M.secret(tok) end
    end
  end
end

--- redact_url(url [, opts]) -> url with its secrets replaced by ***.
--- Every path segment, query value, user:password and fragment is secret,
--- whatever its length; each piece is also registered with the scrubber so
--- it is hidden wherever else it shows up. opts.public_path = true keeps the
--- path readable (for a public endpoint such as api.mainnet-beta.solana.com);
--- opts.headers registers header values (providers that authenticate by header).
function M.redact_url(url, opts)
  if type(url) ~= "string" then return M.scrub(tostring(url)) end
  opts = type(opts) == "table" and opts or {}
  M.secret_headers(opts.headers)
  local rest = url:match("^%a[%w+.-]*://(.*)$")
  if not rest then -- not a URL: hide all of it but a short head
    M.secret(url)
    return M.scrub(url)
  end
  local auth = rest:match("^([^/?#]*)@")
  if auth then
    M.secret(auth)
    local user, pass = auth:match("^([^:]*):(.*)$")
    if pass then M.secret(pass); M.secret(user) end
  end
  local path, query, frag = rest:match("^[^/?#]*([^?#]*)%??([^#]*)#?(.*)$")
  if opts.public_path then
    C.thorp_log_public_add(url:match("^[^?#]*"))
  else
    for seg in (path or ""):gmatch("[^/]+") do M.secret(seg) end
  end
  for part in (query or ""):gmatch("[^&]+") do
    local v = part:match("=(.*)$")
    M.secret(v or part)
  end
  if frag and frag ~= "" then M.secret(frag) end
  return M.scrub(url)
end

local function timestamp()
  local ms = C.thorp_wall()
  local sec = math.floor(ms / 1000)
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. (".%03dZ"):format(math.floor(ms - sec * 1000))
end

local function text_value(v)
  if type(v) == "table" then return cjson.encode(v) or tostring(v) end
  return tostring(v)
end

function M.write(level, msg, fields, module)
  local l = LEVELS[level]
  if l > C.thorp_log_get_level() then return end
  local line
  if C.thorp_log_is_json() ~= 0 then
    -- fixed keys first, so lines read (and grep) the same way every time
    local head = cjson.encode({ ts = timestamp() }):sub(1, -2) .. ',"level":"' .. level .. '","module":'
      .. cjson.encode(module or "lua") .. ',"msg":' .. (cjson.encode(tostring(msg)) or '"?"')
    local rest = "}"
    if fields then
      local rec = {}
      for k, v in pairs(fields) do
        if k ~= "ts" and k ~= "level" and k ~= "module" and k ~= "msg" then rec[k] = v end
      end
      if next(rec) ~= nil then rest = "," .. ((cjson.encode(rec) or '{"fields":"(unencodable)"}'):sub(2)) end
    end
    line = head .. rest
  else
    local parts = { timestamp(), ("%-5s"):format(level), "[" .. (module or "lua") .. "]" }
    if fields and fields.request_id then parts[#parts + 1] = "(" .. tostring(fields.request_id) .. ")" end
    parts[#parts + 1] = tostring(msg)
    if fields then
      local keys = {}
      for k in pairs(fields) do if k ~= "request_id" and k ~= "error" then keys[#keys + 1] = k end end
      table.sort(keys)
      for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. text_value(fields[k]) end
      if fields.error then parts[#parts + 1] = "\n  " .. tostring(fields.error):gsub("\n", "\n  ") end
    end
    line = table.concat(parts, " ")
  end
  C.thorp_log_write(l, line)
end

function M.error(msg, fields, module) M.write("error", msg, fields, module) end
function M.warn(msg, fields, module) M.write("warn", msg, fields, module) end
function M.info(msg, fields, module) M.write("info", msg, fields, module) end
function M.debug(msg, fields, module) if C.thorp_log_get_level() >= 3 then M.write("debug", msg, fields, module) end end

--- A logger bound to a module name: log.for_module("pool").warn(...)
function M.for_module(name)
  return {
    error = function(msg, f) M.write("error", msg, f, name) end,
    warn = function(msg, f) M.write("warn", msg, f, name) end,
    info = function(msg, f) M.write("info", msg, f, name) end,
    debug = function(msg, f) if C.thorp_log_get_level() >= 3 then M.write("debug", msg, f, name) end end,
  }
end

-- Request ids: short, unique within the process, sortable by time.
local rid_seq = 0
local rid_prefix = ("%x"):format(math.floor(C.thorp_wall()) % 0xffffff)
function M.request_id()
  rid_seq = rid_seq + 1
  return rid_prefix .. "-" .. rid_seq
end

return M
