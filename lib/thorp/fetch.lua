-- thorp.fetch: any other HTTP API (quotes, webhooks, alerts, admin calls)
-- on the host's loop, yielding like an RPC call.
--
--   local res = thorp.fetch("https://quote-api.example/v6/quote?in=SOL", {
--     method = "GET", headers = { Accept = "application/json" }, timeout_ms = 2000 })
--   if res.ok then ... res.status, res.headers["content-type"], res.body ...
--   else log.warn("quote failed", { code = res.error.code, error = res.error.message }) end
--
-- Result: { ok = true, status, headers = { [lower-case name] = value }, body,
-- latency_ms, redirects } for any HTTP answer (a 404 or a 500 is an answer:
-- look at status), or { ok = false, error = { code, message, url } } when none
-- came: TIMEOUT, TRANSPORT_ERROR (refused, reset, DNS, TLS, an answer over
-- max_body), CANCELLED. Redirects are not followed unless
-- opts.follow_redirects = true (or a number: the most to follow, default 5).
-- The URL's secrets (path segments, query values, user:password) are
-- registered with the scrubber and never appear in an error or a log line;
-- error.url is the redacted URL. Bad arguments raise an error that names the
-- option and what is allowed. The transfer runs on host/pool.c's curl multi
-- (host/fetch.c), sharing its connections.
local ffi = require "ffi"
local C = require "thorp.cdef"
local sched = require "thorp.sched"
local logm = require "thorp.log"

local M = {}

local waiting = {} -- id -> { task, token }
local results = {} -- id -> result (answer arrived before the waiter suspended: never, but keep it safe)

local function take(res)
  local r = {
    curl_code = res.curl_code, status = res.http_status, cancelled = res.cancelled ~= 0,
    redirects = res.redirects, total_ms = res.total_ms,
    body = res.body_len > 0 and ffi.string(res.body, res.body_len) or "",
    headers = res.headers_len > 0 and ffi.string(res.headers, res.headers_len) or "",
    error = ffi.string(res.error),
  }
  C.thorp_fetch_result_free(res)
  return r
end

sched.on_event(C.TEV_FETCH, function(ev)
  local id = tonumber(ev.id)
  local r = take(ffi.cast("thorp_fetch_result *", ev.ptr))
  local w = waiting[id]
  waiting[id] = nil
  if w then sched.wake(w[1], r, w[2]) else results[id] = r end
end)

local METHOD = "^[A-Z][A-Z0-9_-]*$"
local OPTS = { method = true, headers = true, body = true, timeout_ms = true, follow_redirects = true,
               max_body = true }

local function bad(what, allowed, got)
  error(("thorp.fetch: %s: %s (got %s)"):format(what, allowed, logm.scrub(tostring(got))), 3)
end

local function header_block(h)
  if h == nil then return nil end
  if type(h) ~= "table" then bad("opts.headers", "expected a table { Name = value }", type(h)) end
  local lines = {}
  for k, v in pairs(h) do
    if type(k) ~= "string" or not k:match("^[%w!#$%%&'*+.^_`|~-]+$") then
      bad("opts.headers", "names are HTTP tokens (letters, digits, -)", k)
    end
    if type(v) ~= "string" and type(v) ~= "number" then bad("opts.headers." .. k, "expected a string", type(v)) end
    v = tostring(v)
    if v:find("[\r\n%z]") then bad("opts.headers." .. k, "a value cannot contain CR, LF or NUL", "a line break") end
    lines[#lines + 1] = k .. ": " .. v
  end
  logm.secret_headers(h) -- an Authorization or API-key header never reaches a log line
  return #lines > 0 and (table.concat(lines, "\n") .. "\n") or nil
end

local function parse_headers(raw)
  local h = {}
  for line in raw:gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:%s]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      h[k] = h[k] and (h[k] .. ", " .. v) or v
    end
  end
  return h
end

local errors = require "thorp.errors"
local function fail(code, message, shown)
  return { ok = false, error = errors.new(code, logm.scrub(message), { url = shown }) }
end

local errbuf = ffi.new("char[256]")

--- fetch(url, opts) -> { ok = true, status, headers, body, latency_ms, redirects }
---                   | { ok = false, error = { code, message, url } }
function M.fetch(url, opts)
  if type(url) ~= "string" or not url:match("^[Hh][Tt][Tt][Pp][Ss]?://[^/?#%s]+[^%s]*$") then
    bad("url", "expected an http:// or https:// URL", url)
  end
  opts = opts or {}
  if type(opts) ~= "table" then bad("opts", "expected a table", type(opts)) end
  for k in pairs(opts) do
    if not OPTS[k] then
      bad("opts." .. tostring(k), "unknown option; allowed method, headers, body, timeout_ms, follow_redirects, max_body",
        opts[k])
    end
  end
  local shown = logm.redact_url(url)
  local method = opts.method or (opts.body and "POST" or "GET")
  if type(method) ~= "string" or not method:upper():match(METHOD) then bad("opts.method", "an HTTP method", method) end
  method = method:upper()
  local body = opts.body
  if body ~= nil and type(body) ~= "string" then bad("opts.body", "expected a string", type(body)) end
  local timeout = opts.timeout_ms or 10000
  if type(timeout) ~= "number" or timeout <= 0 or timeout ~= timeout or timeout == math.huge then
    bad("opts.timeout_ms", "expected a number of milliseconds > 0", timeout)
  end
  local follow = opts.follow_redirects
  if follow == true then follow = 5
  elseif follow == nil or follow == false then follow = 0
  elseif type(follow) ~= "number" or follow < 0 or follow ~= math.floor(follow) or follow > 50 then
    bad("opts.follow_redirects", "true, false or the most redirects to follow (0-50)", follow)
  end
  local max_body = opts.max_body or 64 * 1048576
  if type(max_body) ~= "number" or max_body < 1 then bad("opts.max_body", "expected a number of bytes > 0", max_body) end
  local headers = header_block(opts.headers)
  local task = sched.current()
  if not task then error("thorp.fetch: call it from a task (a handler, thorp.spawn, a timer, the console)", 2) end
  local id = C.thorp_fetch_start(url, method, headers, body, body and #body or 0, timeout, follow, max_body, errbuf, 256)
  if id < 0 then return fail("TRANSPORT_ERROR", ffi.string(errbuf), shown) end
  id = tonumber(id)
  local r = results[id]
  results[id] = nil
  if not r then
    waiting[id] = { task, sched.token(task) }
    r = sched.suspend()
  end
  if r.cancelled then return fail("CANCELLED", "the request was cancelled (host stopping)", shown) end
  if r.curl_code ~= 0 then
    local code = r.curl_code == 28 and "TIMEOUT" or "TRANSPORT_ERROR"
    local msg = r.curl_code == 28 and ("no answer within %d ms"):format(timeout) or r.error
    return fail(code, ("%s %s: %s"):format(method, shown, msg), shown)
  end
  return { ok = true, status = r.status, headers = parse_headers(r.headers), body = r.body,
           latency_ms = r.total_ms, redirects = r.redirects }
end

function M.inflight() return C.thorp_fetch_inflight() end

return setmetatable(M, { __call = function(_, url, opts) return M.fetch(url, opts) end })
