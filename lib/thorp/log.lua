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
local json = require "thorp.json"

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
local has_secrets = false -- a literal secret is registered (else only text with a URL needs the scrubber)
function M.secret(s)
  if type(s) == "string" and #s >= 4 then
    C.thorp_log_secret_add(s)
    has_secrets = true
  end
end

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

-- Would the scrubber change any of these write arguments? Only strings and
-- numbers (else nil: the real write raises its own error).
local function needs_scrub(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local t = type(v)
    if t == "string" then
      if has_secrets or v:find("://", 1, true) or v:find(":\\/\\/", 1, true) then return true end
    elseif t ~= "number" then return nil end
  end
  return false
end

local guarded = false
--- guard_output(): from now on print, io.write and writes to io.stdout and
--- io.stderr pass the scrubber (what policies, handlers and exec scripts
--- print, and any module they require). Text with no URL costs a find when
--- no secret is registered.
function M.guard_output()
  if guarded then return end
  guarded = true
  local file_methods = getmetatable(io.stdout).__index
  local raw_write = file_methods.write
  local stdout, stderr = io.stdout, io.stderr
  local concat, tostr, select_ = table.concat, tostring, select
  file_methods.write = function(f, ...)
    if (f == stdout or f == stderr) and needs_scrub(...) then
      return raw_write(f, M.scrub(concat({ ... })))
    end
    return raw_write(f, ...)
  end
  rawset(io, "write", function(...) return io.output():write(...) end)
  rawset(_G, "print", function(...)
    local n = select_("#", ...)
    local parts = { ... }
    for i = 1, n do parts[i] = tostr(parts[i]) end
    stdout:write(concat(parts, "\t", 1, n), "\n")
  end)
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

-- A field as JSON (thorp.json: uint64 with every digit, json.null, pubkeys as
-- base58); what JSON cannot hold (a function, NaN, a cycle) as its tostring.
local function field_json(v)
  local s = json.safe_encode(v)
  if s then return s end
  local ok, text = pcall(tostring, v)
  return json.encode(ok and text or "(a value that cannot be shown)")
end
M.field_json = field_json

local function text_value(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "table" or t == "cdata" then
    local s = field_json(v)
    if s:sub(1, 1) == '"' then return json.decode(s) end -- a pubkey, a function: its text, unquoted
    return s
  end
  return tostring(v)
end

--- format(level, msg, fields, module, as_json) -> the log line (not yet scrubbed)
function M.format(level, msg, fields, module, as_json)
  if as_json then
    -- fixed keys first, so lines read (and grep) the same way every time
    local parts = { '{"ts":"', timestamp(), '","level":"', level, '","module":', json.encode(tostring(module or "lua")),
                    ',"msg":', json.encode(tostring(msg)) }
    if fields then
      for k, v in pairs(fields) do
        if k ~= "ts" and k ~= "level" and k ~= "module" and k ~= "msg" then
          parts[#parts + 1] = "," .. json.encode(tostring(k)) .. ":" .. field_json(v)
        end
      end
    end
    parts[#parts + 1] = "}"
    return table.concat(parts)
  end
  local parts = { timestamp(), ("%-5s"):format(level), "[" .. (module or "lua") .. "]" }
  if fields and fields.request_id then parts[#parts + 1] = "(" .. tostring(fields.request_id) .. ")" end
  parts[#parts + 1] = tostring(msg)
  if fields then
    local keys = {}
    for k in pairs(fields) do if k ~= "request_id" and k ~= "error" then keys[#keys + 1] = k end end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do parts[#parts + 1] = tostring(k) .. "=" .. text_value(fields[k]) end
    local e = fields.error
    if e then
      local text = type(e) == "table" and type(e.code) == "string" and type(e.message) == "string"
        and (e.code .. ": " .. e.message) or tostring(e)
      parts[#parts + 1] = "\n  " .. text:gsub("\n", "\n  ")
    end
  end
  return table.concat(parts, " ")
end

function M.write(level, msg, fields, module)
  local l = LEVELS[level]
  if l > C.thorp_log_get_level() then return end
  C.thorp_log_write(l, M.format(level, msg, fields, module, C.thorp_log_is_json() ~= 0))
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
