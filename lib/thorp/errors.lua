-- thorp.errors: the one shape of an operational error (DESIGN.md): a table
-- { code = "UPPER_CASE", message = "what happened and what to do", ... }.
--
--   local errors = require "thorp.errors"
--   return false, errors.new("QUEUE_FULL", "bus queue is full (max_queue_size 10000)")
--
-- tostring(err) gives the code, as the string reasons it replaces did (code
-- that did tostring(reason) == "QUEUE_FULL" keeps working); err.message says
-- what happened.
local M = {}

local mt = { __tostring = function(e) return e.code end }
M.mt = mt

--- new(code, message [, fields]) -> error table (fields are copied in)
function M.new(code, message, fields)
  local e = { code = code, message = message or code }
  if fields then for k, v in pairs(fields) do if e[k] == nil then e[k] = v end end end
  return setmetatable(e, mt)
end

-- Errors that replace what was a message string (decoders, keypair loaders,
-- policy.reload) print as "CODE: message" and concatenate the same way, so
-- assert(sol.keypair.from_file(p)), print(err) and "why: " .. err still say
-- what happened.
local described_mt = { __tostring = function(e) return e.code .. ": " .. e.message end }
described_mt.__concat = function(a, b) return tostring(a) .. tostring(b) end
M.described_mt = described_mt

--- described(code, message [, fields]) -> an error like new's that prints as "CODE: message"
function M.described(code, message, fields)
  return setmetatable(M.new(code, message, fields), described_mt)
end

--- is(v, code) -> true when v is an error value (with that code, if given)
function M.is(v, code)
  return type(v) == "table" and type(v.code) == "string" and (code == nil or v.code == code)
end

return M
