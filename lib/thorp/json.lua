-- thorp.json: the JSON codec of the host (RPC answers use it too).
--
--   local json = thorp.json
--   local v, err = json.decode('{"a":null,"rentEpoch":18446744073709551615}')
--   json.is_null(v.a)          --> true (v.a == json.null; the sentinel is truthy, test with is_null)
--   v.rentEpoch                --> 18446744073709551615ULL (uint64 cdata: every digit kept)
--   json.encode(v)             --> '{"a":null,"rentEpoch":18446744073709551615}' (key order aside)
--
-- Numbers: integers within +-2^53 and all non-integers are Lua numbers; an
-- integer beyond 2^53 is uint64 cdata (int64 when negative), written back
-- unchanged by encode. Arrays: an empty JSON array decodes to a table with
-- json.array_mt so it encodes back as []; json.array(t) marks a table the
-- same way. The parser is C (host/json.c); decode_buffer(ptr, len) parses a
-- C buffer without making a Lua string of it.
local ffi = require "ffi"
local C = require "thorp.cdef"

local type, tostring, pairs, setmetatable, getmetatable, error = type, tostring, pairs, setmetatable,
  getmetatable, error
local fstring, floor, huge, concat, format = ffi.string, math.floor, math.huge, table.concat, string.format
local tnew = require "table.new"

local M = {}

M.null = setmetatable({}, { __tostring = function() return "null" end, __newindex = function()
  error("json.null is read-only", 2) end, __metatable = "json.null" })
function M.is_null(v) return v == M.null end
M.array_mt = { __name = "json.array" }
function M.array(t)
  return setmetatable(t or {}, M.array_mt)
end

local doc = ffi.gc(C.thorp_json_new(), C.thorp_json_free)
local NULL = M.null
local array_mt = M.array_mt
local T_NULL, T_FALSE, T_TRUE, T_NUM, T_INT, T_UINT, T_STR, T_ESC, T_ARR = C.JSON_NULL, C.JSON_FALSE, C.JSON_TRUE,
  C.JSON_NUM, C.JSON_INT, C.JSON_UINT, C.JSON_STR, C.JSON_STR_ESC, C.JSON_ARR
local u64_t, i64_t = ffi.typeof("uint64_t"), ffi.typeof("int64_t")
local cchar_p = ffi.typeof("const char *")

local nodes, text, sbuf -- of the parse being built

local function str(nd)
  if nd.type == T_STR then return fstring(text + nd.v.off, nd.len) end
  return fstring(sbuf + nd.v.off, nd.len)
end

local build
build = function(i)
  local nd = nodes[i]
  local t = nd.type
  if t == T_STR or t == T_ESC then return str(nd), i + 1 end
  if t == T_NUM then return nd.v.d, i + 1 end
  if t == T_ARR then
    local n = nd.len
    local a = tnew(n, 0)
    i = i + 1
    for k = 1, n do a[k], i = build(i) end
    if n == 0 then setmetatable(a, array_mt) end
    return a, i
  end
  if t > T_ARR then -- object
    local n = nd.len
    local o = tnew(0, n)
    i = i + 1
    for _ = 1, n do
      local key = str(nodes[i])
      o[key], i = build(i + 1)
    end
    return o, i
  end
  if t == T_NULL then return NULL, i + 1 end
  if t == T_TRUE then return true, i + 1 end
  if t == T_FALSE then return false, i + 1 end
  if t == T_UINT then return u64_t(nd.v.u), i + 1 end
  if t == T_INT then return i64_t(nd.v.i), i + 1 end
  error("json: unknown node type " .. tostring(t))
end

--- decode_buffer(ptr, len) -> v | nil, err: parse len bytes at a C pointer.
function M.decode_buffer(ptr, len)
  if C.thorp_json_parse(doc, ptr, len) ~= 0 then return nil, fstring(doc.err) end
  nodes, text, sbuf = doc.nodes, ffi.cast(cchar_p, ptr), doc.strbuf
  local v = build(0)
  nodes, text, sbuf = nil, nil, nil
  return v
end

--- decode(s) -> v | nil, err
function M.decode(s)
  if type(s) ~= "string" then return nil, "json: expected a string to decode, got " .. type(s) end
  if C.thorp_json_parse(doc, s, #s) ~= 0 then return nil, fstring(doc.err) end
  nodes, text, sbuf = doc.nodes, ffi.cast(cchar_p, s), doc.strbuf -- s stays alive: it is our argument
  local v = build(0)
  nodes, text, sbuf = nil, nil, nil
  return v
end

-- encode ----------------------------------------------------------------------

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
              ["\t"] = "\\t" }
for c = 0, 31 do
  local ch = string.char(c)
  if not ESC[ch] then ESC[ch] = format("\\u%04x", c) end
end
ESC["\127"] = "\\u007f"

local function quote(s)
  if not s:find('[%z\1-\31"\\\127]') then return '"' .. s .. '"' end
  return '"' .. s:gsub('[%z\1-\31"\\\127]', ESC) .. '"'
end

local function number(v)
  if v ~= v or v == huge or v == -huge then
    error("json.encode: " .. tostring(v) .. " has no JSON form (numbers must be finite)", 0)
  end
  if v == floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53 then return format("%d", v) end
  return format("%.17g", v)
end

local enc
enc = function(v, out, n, depth)
  local t = type(v)
  if t == "string" then n = n + 1; out[n] = quote(v); return n end
  if t == "number" then n = n + 1; out[n] = number(v); return n end
  if t == "boolean" then n = n + 1; out[n] = v and "true" or "false"; return n end
  if v == nil then n = n + 1; out[n] = "null"; return n end
  if t == "cdata" then
    if ffi.istype(u64_t, v) or ffi.istype(i64_t, v) then
      n = n + 1
      out[n] = tostring(v):gsub("U?LL$", "")
      return n
    end
    error("json.encode: cannot encode cdata " .. tostring(ffi.typeof(v)) .. " (only int64/uint64)", 0)
  end
  if t ~= "table" then error("json.encode: cannot encode a " .. t, 0) end
  if v == NULL then n = n + 1; out[n] = "null"; return n end
  if depth > 1000 then error("json.encode: nesting deeper than 1000 (a cycle?)", 0) end
  local len = #v
  local is_array = getmetatable(v) == array_mt
  if not is_array and len > 0 then
    local count = 0
    for _ in pairs(v) do count = count + 1 end
    is_array = count == len
  end
  if is_array then
    n = n + 1; out[n] = "["
    for i = 1, len do
      if i > 1 then n = n + 1; out[n] = "," end
      n = enc(v[i], out, n, depth + 1)
    end
    n = n + 1; out[n] = "]"
    return n
  end
  n = n + 1; out[n] = "{"
  local first = true
  for k, x in pairs(v) do
    local kt = type(k)
    if kt == "number" then k = number(k)
    elseif kt ~= "string" then error("json.encode: object keys must be strings or numbers, got " .. kt, 0) end
    if not first then n = n + 1; out[n] = "," end
    first = false
    n = n + 1; out[n] = quote(k)
    n = n + 1; out[n] = ":"
    n = enc(x, out, n, depth + 1)
  end
  n = n + 1; out[n] = "}"
  return n
end

--- encode(v) -> string (raises on values JSON cannot hold: functions, NaN, cycles)
function M.encode(v)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "number" then return number(v) end
  local out = {}
  local n = enc(v, out, 0, 0)
  return concat(out, "", 1, n)
end

--- safe_encode(v) -> string | nil, err
function M.safe_encode(v)
  local ok, s = pcall(M.encode, v)
  if ok then return s end
  return nil, s
end

return M
