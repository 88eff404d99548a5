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
-- same way. A table whose metatable has __tojson(v) encodes as what that
-- returns (thorp.solana pubkeys and keypairs: their base58). The parser is C (host/json.c); decode_buffer(ptr, len) parses a
-- C buffer without making a Lua string of it.
local ffi = require "ffi"
local C = require "thorp.cdef"

local type, tostring, pairs, setmetatable, getmetatable, error = type, tostring, pairs, setmetatable,
  getmetatable, error
local fstring, floor, huge, format = ffi.string, math.floor, math.huge, string.format
local tnew = require "table.new"
local errors = require "thorp.errors"

local M = {}

M.null = setmetatable({}, { __tostring = function() return "null" end, __newindex = function()
  error("json.null is read-only", 2) end })
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

--- decode(s) -> v | nil, err: err an error value (thorp.errors), code BAD_JSON
function M.decode(s)
  if type(s) ~= "string" then
    return nil, errors.described("BAD_JSON", "json: expected a string to decode, got " .. type(s))
  end
  if C.thorp_json_parse(doc, s, #s) ~= 0 then return nil, errors.described("BAD_JSON", fstring(doc.err)) end
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
  if C.thorp_json_plain(s, #s) == 1 then return '"' .. s .. '"' end
  return '"' .. s:gsub('[%z\1-\31"\\\127]', ESC) .. '"'
end

local function number(v)
  if v ~= v or v == huge or v == -huge then
    error("json.encode: " .. tostring(v) .. " has no JSON form (numbers must be finite)", 0)
  end
  if v == floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53 then return format("%d", v) end
  local s = format("%.14g", v)
  if tonumber(s) ~= v then s = format("%.17g", v) end
  return s
end

local obuf = require("string.buffer").new(4096)

local enc
enc = function(b, v, depth)
  local t = type(v)
  if t == "string" then
    if C.thorp_json_plain(v, #v) == 1 then b:put('"', v, '"') else b:put(quote(v)) end
  elseif t == "number" then
    if v == floor(v) and v > -1e14 and v < 1e14 then b:put(v) else b:put(number(v)) end
  elseif t == "boolean" then b:put(v and "true" or "false")
  elseif v == nil then b:put("null")
  elseif t == "cdata" then
    if not (ffi.istype(u64_t, v) or ffi.istype(i64_t, v)) then
      error("json.encode: cannot encode cdata " .. tostring(ffi.typeof(v)) .. " (only int64/uint64)", 0)
    end
    b:put((tostring(v):gsub("U?LL$", "")))
  elseif t ~= "table" then error("json.encode: cannot encode a " .. t, 0)
  elseif v == NULL then b:put("null")
  else
    local mt = getmetatable(v)
    if mt and mt.__tojson then return enc(b, mt.__tojson(v), depth + 1) end
    if depth > 1000 then error("json.encode: nesting deeper than 1000 (a cycle?)", 0) end
    local len = #v
    local is_array = mt == array_mt
    if not is_array and len > 0 then
      local count = 0
      for _ in pairs(v) do count = count + 1 end
      is_array = count == len
    end
    if is_array then
      b:put("[")
      for i = 1, len do
        if i > 1 then b:put(",") end
        enc(b, v[i], depth + 1)
      end
      b:put("]")
    else
      b:put("{")
      local first = true
      for k, x in pairs(v) do
        local kt = type(k)
        if kt == "number" then k = number(k)
        elseif kt ~= "string" then error("json.encode: object keys must be strings or numbers, got " .. kt, 0) end
        if not first then b:put(",") end
        first = false
        enc(b, k, depth + 1)
        b:put(":")
        enc(b, x, depth + 1)
      end
      b:put("}")
    end
  end
end

--- encode(v) -> string (raises on values JSON cannot hold: functions, NaN, cycles)
local busy = false
function M.encode(v)
  local b = busy and require("string.buffer").new() or obuf -- a __tojson may encode too
  local was = busy
  busy = true
  b:reset()
  local ok, err = pcall(enc, b, v, 0)
  busy = was
  if not ok then
    b:reset()
    error(err, 2)
  end
  local s = b:tostring()
  b:reset()
  return s
end

--- safe_encode(v) -> string | nil, err
function M.safe_encode(v)
  local ok, s = pcall(M.encode, v)
  if ok then return s end
  return nil, s
end

return M
