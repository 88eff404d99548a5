-- thorp.http: the operator HTTP listener: /metrics, /health, /ready and the
-- JSON-RPC front door (POST /) that lets bots in any language use the pool.
--
--   THORP_HTTP_PORT=8899 thorp run        (http.port in the config file; 0 = off,
--                                          THORP_HTTP=false turns it off too)
--   curl -s localhost:8899/metrics        Prometheus text (thorp.metrics.render())
--   curl -s localhost:8899/health         200 {"status":"ok"} | 503 {"status":..., "reason":...}
--   curl -s -d '{"jsonrpc":"2.0","id":1,"method":"getSlot"}' localhost:8899/
--
-- host/http.c owns the sockets (evhttp on the loop) and posts each request to
-- the inbox; every request is served in its own daemon task, so a slow
-- upstream never holds up another client. Front-door calls go through
-- thorp.rpc exactly like thorp.rpc.call: the policy's method priorities,
-- admission, breakers, failover, hedging and the sendTransaction rule.
-- Ids (and, when the pool hands back the upstream bytes, results and
-- upstream errors) pass through byte for byte. A refusal by admission is
-- HTTP 429 with Retry-After: 1; an upstream JSON-RPC error is passed on
-- unchanged; other pool failures are JSON-RPC errors -32050.. -32059 with
-- the thorp code name in error.data.code (see docs/http.md). Identical reads
-- already in flight share one upstream call (M.coalesce). A POST is a
-- shutdown operation until its answer is written out, so a draining host
-- finishes the front-door calls it accepted before it exits.
--
-- Request hook (policy `hooks.frontdoor_request`, installed by thorp.host.wire
-- through M.set_request_hook(fn)): fn(req) runs in the request's task for
-- every front-door call; req = { method, params, id, batch = bool }; it may
-- rewrite req.method / req.params / req.priority / req.timeout_ms, or return
-- an error table { code = n, message = "...", data = ... } to answer with it.
local ffi = require "ffi"
local C = require "thorp.cdef"
local cjson = require("cjson.safe").new()
local sched = require "thorp.sched"
local logm = require "thorp.log"
local log = logm.for_module("http")

local type, tostring, tonumber, pcall, concat = type, tostring, tonumber, pcall, table.concat
local ffi_string = ffi.string

local M = {}
M.MAX_BATCH = 1000

local JSON = "application/json"
local METHOD = { [C.HTTP_M_OTHER] = "OTHER", [C.HTTP_M_GET] = "GET", [C.HTTP_M_POST] = "POST", [C.HTTP_M_HEAD] = "HEAD" }

-- Counters for thorp.metrics: HTTP answers by route and status, front-door
-- calls by outcome ("ok", "rpc_error", a thorp error code, "invalid").
M.counters = { requests = {}, calls = {}, coalesced = 0 }
local requests, calls = M.counters.requests, M.counters.calls
local function bump(t, k) t[k] = (t[k] or 0) + 1 end

local hook -- the policy's frontdoor_request hook, or nil
function M.set_request_hook(fn)
  if fn ~= nil and type(fn) ~= "function" then error("http.set_request_hook: expected a function or nil", 2) end
  hook = fn
end
function M.request_hook() return hook end

local pool -- the pool the front door uses (default: the host's, through thorp.rpc)
local function pool_call(...)
  if pool then return pool:call(...) end
  return require("thorp.rpc").call(...)
end
local function pool_batch(...)
  if pool then return pool:batch(...) end
  return require("thorp.rpc").batch(...)
end
local function pool_endpoints()
  if pool then return pool:endpoints() end
  return require("thorp.rpc").endpoints()
end

-- JSON spans (thorp.jsonspan): raw ids, results and errors pass through as bytes
local jsonspan = require "thorp.jsonspan"
local member, elements = jsonspan.member, jsonspan.elements
M._member, M._elements = member, elements

------------------------------------------------------------------------------
-- JSON-RPC front door
------------------------------------------------------------------------------
-- thorp error code -> JSON-RPC server error code (data.code keeps the name)
M.ERROR_CODES = {
  BACKPRESSURE_REJECTED = -32050, SHUTTING_DOWN = -32051, CIRCUIT_OPEN = -32052, TIMEOUT = -32053,
  ALL_ENDPOINTS_FAILED = -32054, TRANSPORT_ERROR = -32055, BAD_RESPONSE = -32056, HTTP_ERROR = -32057,
  BULKHEAD_FULL = -32058, DUPLICATE = -32059,
}
local DATA_FIELDS = { "reason", "utilization", "priority", "http_status", "retry_after_ms", "attempts" }

local function enc(v)
  local s = cjson.encode(v)
  return s or "null"
end

local function err_obj(code, message, data)
  local e = '{"code":' .. code .. ',"message":' .. enc(message)
  if data ~= nil then e = e .. ',"data":' .. enc(data) end
  return e .. "}"
end

local function envelope(id_raw, key, value_text)
  return '{"jsonrpc":"2.0","' .. key .. '":' .. value_text .. ',"id":' .. (id_raw or "null") .. "}"
end

local PARSE_ERROR = envelope(nil, "error", err_obj(-32700, "Parse error"))

-- the JSON-RPC error text for a failed pool result; second value: HTTP status
local function pool_error(e, raw_error)
  if e.code == "RPC_ERROR" then
    if raw_error then return raw_error, 200 end
    local msg = tostring(e.message)
    if e.endpoint and msg:sub(1, #e.endpoint + 2) == e.endpoint .. ": " then msg = msg:sub(#e.endpoint + 3) end
    return err_obj(tonumber(e.rpc_code) or -32603, logm.scrub(msg), e.data), 200
  end
  local data = { code = e.code }
  for _, k in ipairs(DATA_FIELDS) do data[k] = e[k] end
  if type(e.failures) == "table" and #e.failures > 0 then
    data.failures = {}
    for i, f in ipairs(e.failures) do data.failures[i] = { endpoint = f.endpoint, code = f.code } end
  end
  local status = e.code == "BACKPRESSURE_REJECTED" and 429 or e.code == "SHUTTING_DOWN" and 503 or 200
  return err_obj(M.ERROR_CODES[e.code] or -32000, logm.scrub(tostring(e.message or e.code)), data), status
end

local function call_outcome(res)
  if res.ok then return "ok" end
  return res.error.code == "RPC_ERROR" and "rpc_error" or tostring(res.error.code)
end

-- Validate one decoded request object: nil | error text (JSON-RPC -32600)
local function invalid(msg)
  if type(msg) ~= "table" or msg[1] ~= nil then return "Invalid Request" end
  if msg.jsonrpc ~= "2.0" then return "Invalid Request: jsonrpc must be \"2.0\"" end
  if type(msg.method) ~= "string" or msg.method == "" then return "Invalid Request: method must be a string" end
  if msg.params ~= nil and type(msg.params) ~= "table" then
    return "Invalid Request: params must be an array or an object"
  end
  local id = msg.id
  if id ~= nil and id ~= cjson.null and type(id) ~= "string" and type(id) ~= "number" then
    return "Invalid Request: id must be a string, a number or null"
  end
  return nil
end

-- Run the hook on req: nil (go on) | error text
local function run_hook(req)
  if not hook then return nil end
  local ok, r = pcall(hook, req)
  if not ok then
    log.error("front-door request hook failed", { error = tostring(r), method = req.method })
    return err_obj(-32603, "Internal error: request hook failed")
  end
  if type(r) == "table" then
    return err_obj(tonumber(r.code) or -32000, tostring(r.message or "refused by policy"), r.data)
  end
  if type(req.method) ~= "string" or req.method == "" or (req.params ~= nil and type(req.params) ~= "table") then
    log.error("front-door request hook left an invalid request", { method = tostring(req.method) })
    return err_obj(-32603, "Internal error: request hook left an invalid request")
  end
  return nil
end

local priority = require "thorp.priority"
local PRIORITIES = priority.RANK
local function call_opts(req)
  local o = {}
  if PRIORITIES[req.priority] then o.priority = req.priority end
  if type(req.timeout_ms) == "number" and req.timeout_ms > 0 then o.timeout_ms = req.timeout_ms end
  return o
end

-- raw result text of a successful single answer
local function single_result_text(res)
  if res.raw then
    local r = member(res.raw, "result")
    if r then return r end
  end
  return enc(res.result)
end

local function single_result(res)
  if not res.text then res.text = single_result_text(res) end -- shared by a single flight
  return res.text
end

-- Single flight: identical reads in flight at the same moment share one
-- upstream call; the followers wait for the leader's answer.
M.coalesce = true
local NO_SHARE = { sendTransaction = true, requestAirdrop = true }
local flights = {}

local function forward(req, body)
  local key
  if M.coalesce and not NO_SHARE[req.method] then
    key = req.method .. "\0" .. (hook and enc(req.params) or member(body, "params") or "") .. "\0" ..
      tostring(req.priority) .. "\0" .. tostring(req.timeout_ms)
    local f = flights[key]
    if f then
      local t = sched.current()
      f[#f + 1], f[#f + 2] = t, sched.token(t)
      M.counters.coalesced = M.counters.coalesced + 1
      return sched.suspend()
    end
    flights[key] = {}
  end
  local ok, res = pcall(pool_call, req.method, req.params, call_opts(req))
  if not ok then
    log.error("front-door call failed", { error = tostring(res), method = req.method })
    res = { ok = false, error = { code = "INTERNAL", message = "internal error" } }
  end
  if key then
    local f = flights[key]
    flights[key] = nil
    for i = 1, #f, 2 do sched.wake(f[i], res, f[i + 1]) end
  end
  return res
end

-- A key given twice ("id" above all) is refused: decoders disagree on which
-- one counts, so answering with either could mislead the client.
local function duplicate_key(s, off, n)
  for _, k in ipairs{ "id", "method", "params", "jsonrpc" } do
    if jsonspan.repeated(s, k, off, n) then return k end
  end
end

local answered_by -- endpoint of the last pool answer (read right after the call, in the same task)

local function single(body, msg)
  local id_raw = member(body, "id")
  local dup = duplicate_key(body)
  if dup then
    bump(calls, "invalid")
    return 200, envelope(nil, "error", err_obj(-32600, "Invalid Request: duplicate key \"" .. dup .. "\""))
  end
  local bad = invalid(msg)
  if bad then
    bump(calls, "invalid")
    if id_raw and id_raw:sub(1, 1) ~= '"' and not tonumber(id_raw) and id_raw ~= "null" then id_raw = nil end
    return 200, envelope(id_raw, "error", err_obj(-32600, bad))
  end
  local req = { method = msg.method, params = msg.params, id = msg.id, batch = false }
  local herr = run_hook(req)
  if herr then
    bump(calls, "refused")
    return 200, envelope(id_raw, "error", herr)
  end
  local res = forward(req, body)
  bump(calls, call_outcome(res))
  answered_by = res.endpoint or res.error and res.error.endpoint
  if msg.id == nil then return 204, "" end -- a notification gets no answer
  if res.ok then return 200, envelope(id_raw, "result", single_result(res)) end
  local raw_err = res.error.raw and member(res.error.raw, "error")
  local text, status = pool_error(res.error, raw_err and logm.scrub(raw_err))
  return status, envelope(id_raw, "error", text)
end

-- map the i-th forwarded call to the raw text of its answer in res.raw
local function batch_raw_answers(res, n)
  if not res.raw then return nil end
  local els = elements(res.raw)
  if not els then return nil end
  local by_id, ids = {}, {}
  for _, e in ipairs(els) do
    local id = tonumber(member(res.raw, "id", e[1] - 1, e[2] - e[1] + 1))
    if id then by_id[id] = e; ids[#ids + 1] = id end
  end
  if not res.ids then table.sort(ids) end
  local out = {}
  for i = 1, n do
    local e = by_id[(res.ids or ids)[i]]
    if e then
      local off, len = e[1] - 1, e[2] - e[1] + 1
      local r = member(res.raw, "result", off, len)
      if r then out[i] = { "result", r }
      else
        local er = member(res.raw, "error", off, len)
        if er then out[i] = { "error", er } end
      end
    end
  end
  return out
end

local function batch(body, list)
  if #list == 0 then
    bump(calls, "invalid")
    return 200, envelope(nil, "error", err_obj(-32600, "Invalid Request: empty batch"))
  end
  if #list > M.MAX_BATCH then
    bump(calls, "invalid")
    return 200, envelope(nil, "error", err_obj(-32600, ("Invalid Request: batch of %d, the limit is %d")
      :format(#list, M.MAX_BATCH)))
  end
  local els = elements(body)
  local answers, fwd, fwd_idx = {}, {}, {}
  for i, msg in ipairs(list) do
    local e = els and els[i]
    local id_raw = e and type(msg) == "table" and member(body, "id", e[1] - 1, e[2] - e[1] + 1) or nil
    local dup = e and type(msg) == "table" and duplicate_key(body, e[1] - 1, e[2] - e[1] + 1)
    local bad = dup and ("Invalid Request: duplicate key \"" .. dup .. "\"") or invalid(msg)
    if dup then id_raw = nil end
    if bad then
      bump(calls, "invalid")
      if id_raw and id_raw:sub(1, 1) ~= '"' and not tonumber(id_raw) then id_raw = nil end
      answers[i] = envelope(id_raw, "error", err_obj(-32600, bad))
    else
      local req = { method = msg.method, params = msg.params, id = msg.id, batch = true }
      local herr = run_hook(req)
      if herr then
        bump(calls, "refused")
        answers[i] = envelope(id_raw, "error", herr)
      else
        fwd[#fwd + 1] = { req.method, req.params, opts = call_opts(req) }
        fwd_idx[#fwd_idx + 1] = { i = i, id_raw = id_raw, notify = msg.id == nil }
      end
    end
  end
  local status = 200
  if #fwd > 0 then
    local opts = {}
    for _, c in ipairs(fwd) do -- a hook's priority / timeout: the highest and the longest asked for
      local p = c.opts.priority
      if p then opts.priority = priority.max(p, opts.priority or p) end
      if c.opts.timeout_ms and c.opts.timeout_ms > (opts.timeout_ms or 0) then opts.timeout_ms = c.opts.timeout_ms end
    end
    local ok, res = pcall(pool_batch, fwd, opts)
    if not ok then
      log.error("front-door batch failed", { error = tostring(res) })
      res = { ok = false, error = { code = "INTERNAL", message = "internal error" } }
    end
    local raw = res.ok and batch_raw_answers(res, #fwd)
    answered_by = res.endpoint
    for k, f in ipairs(fwd_idx) do
      local text
      if res.ok then
        local r = res.results[k]
        bump(calls, call_outcome(r))
        local rw = raw and raw[k]
        if rw then text = envelope(f.id_raw, rw[1], rw[1] == "error" and logm.scrub(rw[2]) or rw[2])
        elseif r.ok then text = envelope(f.id_raw, "result", enc(r.result))
        else text = envelope(f.id_raw, "error", (pool_error(r.error))) end
      else
        bump(calls, call_outcome(res))
        local et, st = pool_error(res.error)
        if st ~= 200 then status = st end
        text = envelope(f.id_raw, "error", et)
      end
      if not f.notify then answers[f.i] = text end
    end
  end
  local out = {}
  for i = 1, #list do if answers[i] then out[#out + 1] = answers[i] end end
  if #out == 0 then return 204, "" end
  return status, "[" .. concat(out, ",") .. "]"
end

--- frontdoor(body) -> http_status, json_text, endpoint (the upstream that answered, or nil)
function M.frontdoor(body)
  answered_by = nil
  local doc = cjson.decode(body)
  if doc == nil then
    bump(calls, "parse_error")
    return 200, PARSE_ERROR
  end
  local status, text
  if type(doc) == "table" and body:match("^%s*%[") then status, text = batch(body, doc)
  else status, text = single(body, doc) end
  return status, text, answered_by
end

------------------------------------------------------------------------------
-- Health
------------------------------------------------------------------------------
--- health() -> ok, { status, reason?, endpoints_healthy, endpoints }
function M.health()
  local sd = package.loaded["thorp.shutdown"]
  if sd and sd.is_shutting_down() then
    local st = sd.status()
    return false, { status = "draining", reason = "shutting down (" .. tostring(st.reason) .. ")",
                    active_trades = st.active_trades }
  end
  local jm = package.loaded["thorp.journal"]
  if jm and jm.healthy and not jm.healthy() then -- trades cannot be journaled (thorp.journal)
    return false, { status = "unavailable", reason = "journal failing: " .. tostring(jm.stats().last_error) }
  end
  local eps = pool_endpoints()
  local healthy = 0
  for _, e in ipairs(eps) do if e.healthy and e.state ~= "OPEN" then healthy = healthy + 1 end end
  local r = { endpoints_healthy = healthy, endpoints = #eps }
  if #eps == 0 then
    r.status, r.reason = "unavailable", "no RPC endpoints configured"
  elseif healthy == 0 then
    r.status, r.reason = "unavailable", "no healthy RPC endpoint"
  else
    r.status = "ok"
  end
  return r.status == "ok", r
end

--- ready() -> ok, info: healthy, and at least one healthy endpoint has answered
--- (a health check or a call) since start.
function M.ready()
  local ok, r = M.health()
  if not ok then return false, r end
  for _, e in ipairs(pool_endpoints()) do
    if e.healthy and e.state ~= "OPEN" and (e.slot or (e.successes or 0) > 0) then
      r.status = "ready"
      return true, r
    end
  end
  r.status, r.reason = "starting", "no endpoint has answered yet"
  return false, r
end

------------------------------------------------------------------------------
-- Routing
------------------------------------------------------------------------------
local ROUTES = { ["/"] = true, ["/metrics"] = true, ["/health"] = true, ["/ready"] = true }

local function not_found(path)
  return 404, JSON, enc({ error = "not found", path = path, routes = { "GET /metrics", "GET /health",
                                                                     "GET /ready", "POST / (JSON-RPC)" } })
end

--- route(method, path, body) -> status, content_type, body[, header_name, header_value]
function M.route(method, path, body)
  local get = method == "GET" or method == "HEAD"
  if path == "/" and method == "POST" then
    local status, text, ep = M.frontdoor(body)
    if status == 429 then return status, JSON, text, "Retry-After", "1", ep end
    return status, JSON, text, nil, nil, ep
  elseif get and path == "/metrics" then
    return 200, "text/plain; version=0.0.4; charset=utf-8", require("thorp.metrics").render{ pool = pool }
  elseif get and (path == "/health" or path == "/ready") then
    local ok, info = (path == "/health" and M.health or M.ready)()
    return ok and 200 or 503, JSON, enc(info)
  elseif ROUTES[path] then
    return 405, JSON, enc({ error = "method not allowed" }), "Allow", path == "/" and "POST" or "GET, HEAD"
  end
  return not_found(path)
end

local EV_SENT = C.HTTP_EV_SENT
local ops = {} -- request id -> shutdown operation id, until the answer is written out

-- Bearer-token auth (THORP_HTTP_TOKEN): every route but /health and /ready
-- (probes of a supervisor or load balancer) needs "Authorization: Bearer TOKEN".
local token
local OPEN_ROUTES = { ["/health"] = true, ["/ready"] = true }
local function authorized(id, path)
  if not token or OPEN_ROUTES[path] then return true end
  local h = C.thorp_http_header(id, "Authorization")
  if h == nil then return false end
  local given = ffi_string(h):match("^[Bb]earer%s+(%S+)$")
  if not given or #given ~= #token then return false end
  local diff = 0 -- the same time whatever matches, so the token cannot be guessed byte by byte
  for i = 1, #token do diff = bit.bor(diff, bit.bxor(given:byte(i), token:byte(i))) end
  return diff == 0
end

-- one header line, refusing CR/LF so a value cannot inject another header
local function header_line(name, value)
  value = tostring(value)
  if value:find("[\r\n]") then return "" end
  return name .. ": " .. value .. "\r\n"
end

local function serve(id, method, uri, body)
  local path = uri:match("^[^?#]*")
  local op
  if method == "POST" then -- drain waits for front-door calls in flight
    local sd = package.loaded["thorp.shutdown"]
    if sd then op = sd.register("HTTP", "http:" .. id) end
  end
  local ok, status, ctype, out, hname, hvalue, ep
  if not authorized(id, path) then
    ok, status, ctype, out = true, 401, JSON, '{"error":"unauthorized: send Authorization: Bearer <THORP_HTTP_TOKEN>"}'
    hname, hvalue = "WWW-Authenticate", 'Bearer realm="thorp"'
  else
    ok, status, ctype, out, hname, hvalue, ep = pcall(M.route, method, path, body)
  end
  if not ok then
    log.error("http handler failed", { error = tostring(status), path = path })
    status, ctype, out, hname, hvalue, ep = 500, JSON, '{"error":"internal error"}', nil, nil, nil
  end
  bump(requests, (ROUTES[path] and path or "other") .. " " .. status)
  local extra = (hname and hvalue and header_line(hname, hvalue) or "") ..
    (ep and header_line("X-Thorp-Endpoint", ep) or "")
  local rc = C.thorp_http_reply(id, status, ctype, out, #out, extra ~= "" and extra or nil)
  if op then
    if rc == 0 then ops[id] = op.id else package.loaded["thorp.shutdown"].complete(op.id) end
  end
end

local serve_opts = { name = "http", daemon = true }
sched.on_event(sched.EV.HTTP, function(ev)
  local id = tonumber(ev.id)
  if ev.a == EV_SENT then -- the answer is out: a draining host may now exit
    local op = ops[id]
    if op then
      ops[id] = nil
      package.loaded["thorp.shutdown"].complete(op)
    end
    return
  end
  local r = C.thorp_http_request(id)
  if r == nil then return end
  sched.spawn_opts(serve_opts, serve, id, METHOD[r.method] or "OTHER", ffi_string(r.uri),
                   r.body_len > 0 and ffi_string(r.body, r.body_len) or "")
end)

------------------------------------------------------------------------------
-- Lifecycle
------------------------------------------------------------------------------
local errbuf = ffi.new("char[256]")

local LOOPBACK = { ["localhost"] = true, ["::1"] = true, ["[::1]"] = true }
local function loopback(host) return LOOPBACK[host] or host:match("^127%.%d+%.%d+%.%d+$") ~= nil end
M.is_loopback = loopback

--- listen(host, port, opts) -> port | nil, err. opts.pool: a pool from
--- thorp.rpc.new_pool for the front door (default: the host's);
--- opts.max_body (bytes per request, default 4 MiB), opts.max_inflight_bytes
--- (bodies held at once, default 64 MiB), opts.max_pending (front-door
--- requests being answered, default 8192), opts.token (bearer token; required
--- for an address other than loopback).
function M.listen(host, port, opts)
  opts = opts or {}
  host = host or "127.0.0.1"
  if opts.token ~= nil and (type(opts.token) ~= "string" or #opts.token < 16 or opts.token:find("%s")) then
    return nil, "the HTTP token (THORP_HTTP_TOKEN) must be at least 16 characters without spaces"
  end
  if not loopback(host) and not opts.token then
    return nil, ("refusing to listen on %s without a token: set THORP_HTTP_TOKEN (clients then send "
      .. "Authorization: Bearer <token>), or listen on 127.0.0.1"):format(host)
  end
  C.thorp_http_set_limits(opts.max_body or 0, opts.max_inflight_bytes or 0, opts.max_pending or 0)
  local p = C.thorp_http_listen(host, port or 0, opts.max_body or 0, errbuf, 256)
  if p < 0 then return nil, ffi_string(errbuf) end
  pool = opts.pool
  token = opts.token
  if token then logm.secret(token) end
  require("thorp.http_ws").enable(opts.pool, token) -- WebSocket on the same port (lib/thorp/http_ws.lua)
  return p
end

function M.port() return C.thorp_http_port() end
function M.pending() return C.thorp_http_pending() end
function M.inflight_bytes() return C.thorp_http_inflight_bytes() end

-- Replies C sent before Lua saw the request (400, 413, 501, 503), by route.
local C_ROUTES = { [0] = "/", "/metrics", "/health", "/ready", "other" }
function M.refused()
  local out = {}
  for r = 0, 4 do
    for _, code in ipairs{ 400, 413, 501, 503 } do
      local n = C.thorp_http_refused(r, code)
      if n > 0 then out[C_ROUTES[r] .. " " .. code] = n end
    end
  end
  return out
end

function M.start(cfg, mode)
  local h = cfg and cfg.http or {}
  if h.enabled == false or not h.port or h.port == 0 or (mode ~= "run" and mode ~= "exec") then return true end
  local port, err = M.listen(h.host or "127.0.0.1", h.port, { token = h.token, max_body = h.max_body,
    max_inflight_bytes = h.max_inflight_bytes, max_pending = h.max_pending })
  if not port then return nil, "http: " .. err .. " (THORP_HTTP_PORT / http.port, THORP_HTTP_HOST)" end
  log.info("http listening", { address = (h.host or "127.0.0.1") .. ":" .. port, auth = token and "bearer" or "none",
                               routes = "GET /metrics /health /ready, POST / (JSON-RPC)" })
  return true
end

function M.stop()
  C.thorp_http_stop()
  pool, token = nil, nil
  local sd = package.loaded["thorp.shutdown"]
  for id, op in pairs(ops) do
    ops[id] = nil
    if sd then sd.complete(op) end
  end
end

return M
