-- rpc_answer: an upstream's answer through the pool's classification
-- (thorp.rpc) and the front door's pass-through of its bytes (thorp.http,
-- host/http.c's JSON span scanner), as if a real endpoint had sent it.
--
-- Input: byte 1 picks the shape of the call (bit 0: a batch of three; bits
-- 1-2: HTTP status 200, 200, 429 or 500; bit 3: a Retry-After header),
-- the rest is the answer's body.
-- Invariants: classification never raises and returns either an ok result
-- or an error value with a code and a message; the front door then answers
-- with valid JSON whose id is the request's.
local cjson = require "cjson.safe"
local rpc = require "thorp.rpc"
local http = require "thorp.http"

local classify = assert(rpc._classify, "thorp.rpc._classify is missing")
local pool = rpc.new_pool{ name = "fuzz", endpoints = { { name = "up", url = "http://127.0.0.1:9/" } },
                           breaker = { failure_threshold = 1000000 } }
local ep = pool.eps[1]
local STATUS = { [0] = 200, 200, 429, 500 }

local answer -- the upstream answer of the current input: { res =, batch = }

local function check_err(err, where)
  if type(err) ~= "table" or type(err.code) ~= "string" or type(err.message) ~= "string" then
    error(("%s: an error must be { code = string, message = string }, got %s"):format(where, cjson.encode(err)))
  end
end

local function classified(req)
  ep.backoff_until, ep.backoff_n = 0, 0
  local r, err = classify(pool, ep, answer.res, req)
  if r then
    if r.ok ~= true then error("classify: a result must have ok = true") end
    return r
  end
  check_err(err, "classify")
  return { ok = false, error = err }
end

-- the pool the front door sees: each call is answered by the input
-- (the front door runs it under pcall: `pending` tells if it raised)
local fake, pending = {}, false
function fake.call(_, method)
  pending = true
  local r = classified({ batch = false, method = method, rid = "fuzz" })
  pending = false
  return r
end
function fake.batch(_, calls)
  local ids = {}
  for i = 1, #calls do ids[i] = i end
  pending = true
  local r = classified({ batch = true, ids = ids, raw_elements = true, method = "batch", rid = "fuzz" })
  pending = false
  return r
end
function fake.endpoints() return pool:endpoints() end
assert(http.listen("127.0.0.1", 0, { pool = fake }))

local SINGLE = '{"jsonrpc":"2.0","id":77,"method":"getBalance","params":["x"]}'
local BATCH = '[{"jsonrpc":"2.0","id":1,"method":"getSlot"},{"jsonrpc":"2.0","id":"b","method":"getSlot"},' ..
              '{"jsonrpc":"2.0","id":3,"method":"getSlot"}]'

-- the reply is checked with the parser that accepted the answer (thorp.json):
-- it passes upstream bytes through, and e.g. a lone surrogate escape "\ud800"
-- is JSON that thorp.json and JavaScript accept but lua-cjson refuses
local json = require "thorp.json"

local function check_reply(status, text, want_ids)
  if status == 204 then return end
  if pending then error("the pool call behind the front door raised (see the log line above); it answered " .. text) end
  local doc, err = json.decode(text)
  if doc == nil then error(("front door answered %d with invalid JSON (%s): %s"):format(status, err, text)) end
  local list = want_ids[2] and doc or { doc }
  if #list ~= #want_ids then error(("front door answered %d objects for %d calls"):format(#list, #want_ids)) end
  for i, d in ipairs(list) do
    if d.id ~= want_ids[i] then error(("answer %d has id %s, the request had %s"):format(i, tostring(d.id), want_ids[i])) end
    if (d.result == nil) == (d.error == nil) then error("an answer needs exactly one of result and error: " .. text) end
  end
end

return {
  one = function(input)
    local mode = input:byte(1) or 0
    local res = { curl_code = 0, http_status = STATUS[math.floor(mode / 2) % 4],
                  retry_after_ms = mode % 16 >= 8 and 1500 or -1, total_ms = 3, body = input:sub(2), error = "" }
    answer = { res = res }
    -- classification first, unprotected (the front door would catch an error and answer "internal error")
    if mode % 2 == 0 then classified({ batch = false, method = "getBalance", rid = "fuzz" })
    else classified({ batch = true, ids = { 1, 2, 3 }, raw_elements = true, method = "batch", rid = "fuzz" }) end
    if mode % 2 == 0 then
      local status, text = http.frontdoor(SINGLE)
      check_reply(status, text, { 77 })
    else
      local status, text = http.frontdoor(BATCH)
      check_reply(status, text, { 1, "b", 3 })
    end
  end,
}
