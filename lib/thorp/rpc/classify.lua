-- thorp.rpc.classify: what one endpoint's answer means for the call and for the endpoint.
--
-- classify(pool, ep, res, req, att) -> result | nil, err, retry, maybe_sent.
-- Transport errors, timeouts with a fair time, 5xx, malformed answers and
-- -32005/-32603 count against the endpoint (its breaker); a 429 (or a rate
-- limit reported inside a 200) backs it off without counting; -32601 is the
-- provider's gap, remembered per method; any other RPC error is the caller's
-- and goes back untouched. `retry` says another endpoint may be asked,
-- `maybe_sent` that the request may have reached the upstream (a submission
-- is then not re-sent). tests/fuzz/rpc_answer.lua feeds it arbitrary bytes.
local json = require "thorp.json" -- RPC bodies: lossless u64, thorp.json.null
local jsonspan = require "thorp.jsonspan"
local sched = require "thorp.sched"
local logm = require "thorp.log"
local endpoint = require "thorp.rpc.endpoint"
local log = logm.for_module("rpc")
local now = sched.now
local floor, min = math.floor, math.min

local K = {}

-- a call's request id (logs only): made the first time a log line needs it
function K.rid_of(req)
  local r = req.rid
  if not r then r = logm.request_id(); req.rid = r end
  return r
end
local rid_of = K.rid_of

--- K.fail(code, message, extra) -> { ok = false, error = extra + { code, message } }
function K.fail(code, message, extra)
  local e = extra or {}
  e.code, e.message = code, message
  return { ok = false, error = e }
end

-- curl codes that prove the request never left: proxy or host not resolved, could not connect
local NOT_SENT = { [5] = true, [6] = true, [7] = true }
local ENDPOINT_RPC_FAULTS = { [-32005] = true, [-32603] = true }
local NULL = json.null

-- why d is not a sane JSON-RPC answer to request id (nil when it is), and its error object
local function insane(d, id)
  if type(d) ~= "table" or d == NULL then return "not a JSON object" end
  if d[1] ~= nil then return "an array where one answer was expected" end
  if d.id ~= id then
    local got = type(d.id) == "string" and ("%q"):format(d.id) or d.id == nil and "missing" or tostring(d.id)
    return ("wrong id %s (asked %s)"):format(got, tostring(id))
  end
  local e = d.error
  if e == NULL then e = nil end
  local has_result = d.result ~= nil
  if has_result == (e ~= nil) then return has_result and "both result and error" or "neither result nor error" end
  if e ~= nil and (type(e) ~= "table" or type(e.code) ~= "number") then
    return "error is not an object with a numeric code"
  end
  return nil, e
end

local function bad_response(ep, res, why)
  ep.errors.BAD_RESPONSE = ep.errors.BAD_RESPONSE + 1
  ep.breaker:failure()
  return nil, { code = "BAD_RESPONSE", endpoint = ep.name,
                message = ("%s: malformed JSON-RPC answer: %s (%d bytes)"):format(ep.name, why, #res.body) }, true, true
end

-- a 429: back off for Retry-After (clamped to max_retry_after_ms) or exponentially
local function back_off(pool, ep, retry_after, t)
  local cap = pool.max_retry_after_ms
  local ms = retry_after and retry_after >= 0 and min(retry_after, cap) or min(cap, 250 * 2 ^ min(ep.backoff_n, 16))
  ep.backoff_n = ep.backoff_n + 1
  ep.backoff_until, ep.backoff_at = t + ms, t
  ep.errors.RATE_LIMITED = ep.errors.RATE_LIMITED + 1
  ep.breaker:neutral()
  return floor(ms)
end

-- the time an attempt must have had before its silence counts against the endpoint
function K.fair_ms(att) return min(att.call.fair_ms, att.ep.timeout_ms or math.huge) - 1 end

-- classify one answer: returns result table (ok) or nil, err, retry, maybe_sent
function K.classify(pool, ep, res, req, att)
  local t = now()
  if res.curl_code ~= 0 then
    local code = res.curl_code == 28 and "TIMEOUT" or "TRANSPORT_ERROR"
    ep.errors[code] = ep.errors[code] + 1
    -- a local failure, or a deadline too short to judge the endpoint by, is no verdict on it
    if res.curl_code < 0 or (code == "TIMEOUT" and att and att.timeout < K.fair_ms(att)) then ep.breaker:neutral()
    else ep.breaker:failure() end
    return nil, { code = code, endpoint = ep.name, message = ("%s: %s"):format(ep.name, res.error) },
      true, res.sent and not NOT_SENT[res.curl_code]
  end
  local status = res.http_status
  if status == 429 then
    local ms = back_off(pool, ep, res.retry_after_ms, t)
    log.warn("endpoint rate-limited, backing off", { endpoint = ep.name, backoff_ms = ms, request_id = rid_of(req) })
    return nil, { code = "HTTP_ERROR", http_status = 429, retry_after_ms = ms, endpoint = ep.name,
                  message = ("%s: rate limited (429), backing off %d ms"):format(ep.name, ms) }, true, true
  end
  if status ~= 200 then
    ep.errors.HTTP_ERROR = ep.errors.HTTP_ERROR + 1
    ep.breaker:failure()
    -- any 5xx (a proxy's 502/503/504 too) may come after the upstream got the request
    return nil, { code = "HTTP_ERROR", http_status = status, endpoint = ep.name,
                  message = ("%s: HTTP %d"):format(ep.name, status) }, true, true
  end
  ep.backoff_n = 0
  local doc = json.decode(res.body)
  local e
  if req.batch then
    if type(doc) ~= "table" or doc[1] == nil then return bad_response(ep, res, "not an array of answers") end
    local asked = {}
    for _, id in ipairs(req.ids) do asked[id] = true end
    for _, d in ipairs(doc) do
      local why = insane(d, type(d) == "table" and asked[d.id] and d.id or {})
      if why then return bad_response(ep, res, "batch element: " .. why) end
    end
  else
    local why
    why, e = insane(doc, req.id)
    if why then return bad_response(ep, res, why) end
  end
  if e then
    local code = e.code
    if code == 429 or code == -32429 then -- rate limit reported inside a 200
      local ms = back_off(pool, ep, nil, t)
      return nil, { code = "HTTP_ERROR", http_status = 429, retry_after_ms = ms, endpoint = ep.name,
                    message = ep.name .. ": rate limited" }, true, false
    end
    ep.errors.RPC_ERROR = ep.errors.RPC_ERROR + 1
    local err = { code = "RPC_ERROR", rpc_code = code, data = e.data, endpoint = ep.name, raw = res.body,
                  message = ("%s: %s"):format(ep.name, tostring(e.message)) }
    if code == -32601 then -- this provider lacks the method: remember it, ask the next one
      ep.unsupported[req.method] = t
      ep.breaker:neutral()
      log.info("endpoint lacks a method: routing it elsewhere", { endpoint = ep.name, method = req.method })
      return nil, err, true, false
    end
    if ENDPOINT_RPC_FAULTS[code] then
      ep.breaker:failure()
      return nil, err, true, code ~= -32005 -- "node is unhealthy" refuses before sending
    end
    ep.breaker:neutral() -- the caller's problem, not the endpoint's
    return nil, err, false, true
  end
  local probe = att and att.probe
  if probe and ep.breaker:state() ~= "CLOSED" then
    ep.breaker:reset()
    log.info("endpoint answered a probe: breaker closed", { endpoint = ep.name })
  else
    ep.breaker:success()
  end
  if probe then ep.backoff_until = 0 end
  ep.successes = ep.successes + 1
  endpoint.lat_add(ep, res.total_ms)
  if req.batch then
    local by_id, results = {}, {}
    for j, d in ipairs(doc) do by_id[d.id] = j end
    -- each element's own bytes, for callers that pass answers on unchanged
    local spans = req.raw_elements and jsonspan.elements(res.body)
    for i, id in ipairs(req.ids) do
      local j = by_id[id]
      local d = j and doc[j]
      local de = d and d.error ~= NULL and d.error
      if not d then results[i] = K.fail("BAD_RESPONSE", "no answer for this request in the batch")
      elseif de then
        results[i] = K.fail("RPC_ERROR", tostring(de.message), { rpc_code = de.code, data = de.data })
      else results[i] = { ok = true, result = d.result } end
      if spans and j and spans[j] then
        local raw = res.body:sub(spans[j][1], spans[j][2])
        if results[i].ok then results[i].raw = raw else results[i].error.raw = raw end
      end
    end
    return { ok = true, results = results, endpoint = ep.name, latency_ms = res.total_ms, raw = res.body,
             ids = req.ids }
  end
  -- raw: the answer's bytes, for callers that pass it on unchanged (the front door)
  return { ok = true, result = doc.result, endpoint = ep.name, latency_ms = res.total_ms, raw = res.body }
end

return K
