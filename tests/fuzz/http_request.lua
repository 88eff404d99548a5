-- http_request: the Lua half of the front-door harness (http_request.c).
-- The listener routes requests as in the host (thorp.http); the pool behind
-- the front door answers every call at once from memory, so each request is
-- handled end to end without an upstream.
local http = require "thorp.http"
local sched = require "thorp.sched"

local RESULT = '{"context":{"slot":7},"value":5}'
local fake = {}
function fake.call(_, method)
  if method == "fail" then return { ok = false, error = { code = "ALL_ENDPOINTS_FAILED", message = "down" } } end
  return { ok = true, result = { value = 5 }, raw = '{"jsonrpc":"2.0","id":1,"result":' .. RESULT .. '}' }
end
function fake.batch(_, calls)
  local results = {}
  for i = 1, #calls do results[i] = { ok = true, result = i } end
  return { ok = true, results = results }
end
function fake.endpoints() return { { name = "up", healthy = true, state = "CLOSED" } } end

return {
  listen = function()
    return assert(http.listen("127.0.0.1", 0, { pool = fake, max_body = 65536 }))
  end,
  step = function() return sched.step() end,
  -- answers of status 500 so far (a Lua error in the handler): counted by
  -- thorp.http itself, so an echoed id that reads "HTTP/1.1 500" is no finding
  errors = function()
    local n = 0
    for k, v in pairs(http.counters.requests) do if k:match(" 500$") then n = n + v end end
    return n
  end,
}
