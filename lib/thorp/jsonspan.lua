-- jsonspan: raw text of JSON members and array elements (host/jsonspan.c).
--
--   local js = require "thorp.jsonspan"
--   js.member('{"id":18446744073709551615}', "id")   --> "18446744073709551615"
--   js.elements('[1,{"a":2}]')                        --> { {2, 2}, {4, 10} }
--
-- For passing ids, results and errors through byte for byte (see jsonspan.h).
local ffi = require "ffi"
local C = require "thorp.cdef"

local M = {}
local s0, s1 = ffi.new("size_t[1]"), ffi.new("size_t[1]")

--- member(s, key, off, n) -> raw text of member key of the object text s
--- (starting at byte offset off, n bytes long), or nil.
function M.member(s, key, off, n)
  off = off or 0
  local p = ffi.cast("const char *", s) + off
  local r = C.thorp_json_member(p, n or #s - off, key, #key, s0, s1)
  if r ~= 1 and r ~= 2 then return nil end -- 2: the key is there more than once (this is the last, as decoders keep)
  return s:sub(off + tonumber(s0[0]) + 1, off + tonumber(s1[0]))
end

--- repeated(s, key, off, n) -> true when the object text has member key more than once.
function M.repeated(s, key, off, n)
  off = off or 0
  return C.thorp_json_member(ffi.cast("const char *", s) + off, n or #s - off, key, #key, s0, s1) == 2
end

--- elements(s) -> offsets { {from, to}, ... } (1-based, inclusive) of the elements of the array text s, or nil.
function M.elements(s)
  local max = 64
  while true do
    local a, b = ffi.new("size_t[?]", max), ffi.new("size_t[?]", max)
    local n = C.thorp_json_elements(s, #s, a, b, max)
    if n < 0 then return nil end
    if n <= max then
      local out = {}
      for i = 0, n - 1 do out[i + 1] = { tonumber(a[i]) + 1, tonumber(b[i]) } end
      return out
    end
    max = n
  end
end

return M
