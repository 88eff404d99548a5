-- The operator surface: /metrics in valid Prometheus text whose counters
-- move, /health and /ready, and the JSON-RPC front door over real HTTP
-- (ids, batches, error mapping, admission 429, failover, single flight,
-- the policy hook, clients that hang up) against the bundled simulator.
local thorp = require "thorp"
local cjson = require "cjson"
local http = require "thorp.http"
local metrics = require "thorp.metrics"
local simm = require "helpers.sim"

------------------------------------------------------------------------------
-- A small Prometheus text-format (0.0.4) checker: metric and label name
-- syntax, label value escapes, values, HELP/TYPE placement (TYPE before the
-- family's samples, once), families contiguous, no duplicate series,
-- counters named *_total, histogram buckets with le and cumulative counts.
------------------------------------------------------------------------------
local TYPES = { counter = true, gauge = true, histogram = true, summary = true, untyped = true }
local NAME = "^[%a_:][%w_:]*$"

local function parse_labels(s, i, errs, ln)
  local labels, names = {}, {}
  i = i + 1 -- past "{"
  while true do
    if s:sub(i, i) == "}" then return labels, i + 1 end
    local name = s:match("^([%a_][%w_]*)", i)
    if not name then errs[#errs + 1] = ("line %d: bad label name at column %d"):format(ln, i); return nil end
    if names[name] then errs[#errs + 1] = ("line %d: label %s repeated"):format(ln, name) end
    names[name] = true
    i = i + #name
    if s:sub(i, i + 1) ~= '="' then errs[#errs + 1] = ("line %d: expected =\" after %s"):format(ln, name); return nil end
    i = i + 2
    local v = {}
    while true do
      local c = s:sub(i, i)
      if c == "" then errs[#errs + 1] = ("line %d: unterminated label value"):format(ln); return nil end
      if c == '"' then break end
      if c == "\\" then
        local n = s:sub(i + 1, i + 1)
        if n == "\\" or n == '"' then v[#v + 1] = n elseif n == "n" then v[#v + 1] = "\n"
        else errs[#errs + 1] = ("line %d: bad escape \\%s in a label value"):format(ln, n); return nil end
        i = i + 2
      else
        v[#v + 1] = c
        i = i + 1
      end
    end
    labels[name] = table.concat(v)
    i = i + 1
    local c = s:sub(i, i)
    if c == "," then i = i + 1
    elseif c ~= "}" then errs[#errs + 1] = ("line %d: expected , or } after a label"):format(ln); return nil end
  end
end

local function check_prom(text)
  local errs, types, helps, sampled, closed, series = {}, {}, {}, {}, {}, {}
  local current, last_bucket = nil, {}
  if text:sub(-1) ~= "\n" then errs[#errs + 1] = "the text must end with a newline" end
  local function family_of(name)
    for _, suf in ipairs{ "_bucket", "_sum", "_count" } do
      local b = name:sub(1, -#suf - 1)
      if name:sub(-#suf) == suf and (types[b] == "histogram" or types[b] == "summary") then return b, suf end
    end
    return name, nil
  end
  local ln = 0
  for line in text:gmatch("([^\n]*)\n") do
    ln = ln + 1
    if line:match("^#") then
      local kind, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
      if kind == "HELP" or kind == "TYPE" then
        if not name:match(NAME) then errs[#errs + 1] = ("line %d: bad metric name %q"):format(ln, name) end
        if kind == "HELP" then
          if helps[name] then errs[#errs + 1] = ("line %d: second HELP for %s"):format(ln, name) end
          helps[name] = true
        else
          if not TYPES[rest] then errs[#errs + 1] = ("line %d: unknown type %q"):format(ln, rest) end
          if types[name] then errs[#errs + 1] = ("line %d: second TYPE for %s"):format(ln, name) end
          if sampled[name] then errs[#errs + 1] = ("line %d: TYPE for %s after its samples"):format(ln, name) end
          if rest == "counter" and not name:match("_total$") then
            errs[#errs + 1] = ("line %d: counter %s should end in _total"):format(ln, name)
          end
          types[name] = rest
        end
      end
    elseif line:match("%S") then
      local name = line:match("^([%a_:][%w_:]*)")
      if not name then
        errs[#errs + 1] = ("line %d: bad sample line %q"):format(ln, line)
      else
        local i, labels = #name + 1, {}
        if line:sub(i, i) == "{" then labels, i = parse_labels(line, i, errs, ln) end
        if labels then
          local value, ts = line:sub(i):match("^ (%S+) ?(%S*)$")
          if not value or not (tonumber(value) or value == "+Inf" or value == "-Inf" or value == "NaN") then
            errs[#errs + 1] = ("line %d: bad value in %q"):format(ln, line)
          elseif ts ~= "" and not ts:match("^%-?%d+$") then
            errs[#errs + 1] = ("line %d: bad timestamp %q"):format(ln, ts)
          end
          local fam, suf = family_of(name)
          if not types[fam] then errs[#errs + 1] = ("line %d: sample of %s before its TYPE"):format(ln, fam) end
          sampled[fam] = true
          if current ~= fam then
            if closed[fam] then errs[#errs + 1] = ("line %d: samples of %s are not together"):format(ln, fam) end
            if current then closed[current] = true end
            current = fam
          end
          local keys = {}
          for k, v in pairs(labels) do keys[#keys + 1] = k .. "=" .. v end
          table.sort(keys)
          local key = name .. "{" .. table.concat(keys, ",") .. "}"
          if series[key] then errs[#errs + 1] = ("line %d: duplicate series %s"):format(ln, key) end
          series[key] = true
          if suf == "_bucket" then
            if not labels.le then errs[#errs + 1] = ("line %d: bucket without le"):format(ln) end
            local skey = key:gsub("le=[^,}]*,?", "")
            local v = tonumber(value) or 0
            if last_bucket[skey] and v < last_bucket[skey] then
              errs[#errs + 1] = ("line %d: bucket counts must not decrease"):format(ln)
            end
            last_bucket[skey] = v
          end
        end
      end
    end
  end
  return errs
end

-- sample value of name{labels} in a scrape, or nil
local function value(text, name, labels)
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #name) == name then
      local rest = line:sub(#name + 1)
      local lab, v = rest:match("^(%b{}) (%S+)$")
      if not lab then lab, v = "", rest:match("^ (%S+)$") end
      if v and (labels == nil and lab == "" or labels and lab == labels) then return tonumber(v) end
    end
  end
  return nil
end

describe("prometheus checker", function()
  it("accepts well-formed text", function()
    local ok = table.concat({
      "# HELP thorp_x_total A counter.", "# TYPE thorp_x_total counter",
      'thorp_x_total{a="1",b="q\\"uote\\\\ \\n"} 3', "thorp_x_total 4 1700000000000",
      "# TYPE thorp_h histogram",
      'thorp_h_bucket{le="0.1"} 1', 'thorp_h_bucket{le="+Inf"} 2', "thorp_h_sum 0.3", "thorp_h_count 2",
      "# TYPE thorp_g gauge", "thorp_g NaN", "thorp_g{x=\"y\",} +Inf", "" }, "\n")
    assert.are.same({}, check_prom(ok))
  end)

  it("rejects each kind of mistake", function()
    local bad = {
      ["bad metric name"] = "# TYPE 1x gauge\n1x 1\n",
      ["before its TYPE"] = "thorp_a 1\n",
      ["after its samples"] = "# TYPE thorp_a gauge\nthorp_a 1\n# TYPE thorp_b gauge\nthorp_b 1\n# TYPE thorp_a gauge\n",
      ["duplicate series"] = '# TYPE thorp_a gauge\nthorp_a{x="1"} 1\nthorp_a{x="1"} 2\n',
      ["not together"] = "# TYPE thorp_a gauge\n# TYPE thorp_b gauge\nthorp_a 1\nthorp_b 1\nthorp_a{x=\"2\"} 1\n",
      ["bad escape"] = '# TYPE thorp_a gauge\nthorp_a{x="\\t"} 1\n',
      ["bad value"] = "# TYPE thorp_a gauge\nthorp_a one\n",
      ["bad label name"] = '# TYPE thorp_a gauge\nthorp_a{1x="a"} 1\n',
      ["should end in _total"] = "# TYPE thorp_a counter\nthorp_a 1\n",
      ["must not decrease"] = '# TYPE thorp_h histogram\nthorp_h_bucket{le="1"} 5\nthorp_h_bucket{le="+Inf"} 4\n',
      ["end with a newline"] = "# TYPE thorp_a gauge\nthorp_a 1",
    }
    for what, text in pairs(bad) do
      local errs = check_prom(text)
      assert.is_true(#errs > 0, what)
      assert.truthy(table.concat(errs, "\n"):find(what, 1, true), what .. ": " .. table.concat(errs, "; "))
    end
  end)
end)

describe("http json spans", function()
  it("finds members and elements byte for byte", function()
    local s = ' { "a" : "x\\"}]" , "id":18446744073709551615, "r":{"k":[1,{"z":"]"}]} } '
    assert.are.equal("18446744073709551615", http._member(s, "id"))
    assert.are.equal('{"k":[1,{"z":"]"}]}', http._member(s, "r"))
    assert.are.equal('"x\\"}]"', http._member(s, "a"))
    assert.is_nil(http._member(s, "zz"))
    assert.is_nil(http._member("[1]", "id"))
    local arr = ' [ {"id":1} , "a,b" ,[2,3], null ]'
    local els = http._elements(arr)
    assert.are.equal(4, #els)
    assert.are.equal('"a,b"', arr:sub(els[2][1], els[2][2]))
    assert.are.equal("[2,3]", arr:sub(els[3][1], els[3][2]))
    assert.are.equal(0, #http._elements("[ ]"))
    local big = {}
    for i = 1, 200 do big[i] = tostring(i) end
    assert.are.equal(200, #http._elements("[" .. table.concat(big, ",") .. "]"))
  end)
end)

describe("http listener", function()
  local sim, pool, port, url, bp

  setup(function()
    sim = simm.start(3)
    bp = thorp.backpressure.new{ max_queue_size = 50 }
    pool = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b", "c" }), timeout_ms = 2000, backpressure = bp,
                               breaker = { failure_threshold = 2, cooldown_ms = 60000 } }
    port = assert(http.listen("127.0.0.1", 0, { pool = pool, max_body = 64 * 1024 }))
    url = "http://127.0.0.1:" .. port .. "/"
  end)
  teardown(function()
    http.stop()
    http.set_request_hook(nil)
    sim:stop()
  end)
  before_each(function()
    sim:reset()
    for _, e in ipairs(pool.eps) do e.breaker:reset(); e.backoff_until = 0 end
  end)

  local function post(body, path, timeout)
    local r = assert(thorp.rpc.http_post(url:sub(1, -2) .. (path or "/"), body, timeout or 3000))
    return r.status, r.body ~= "" and require("cjson.safe").decode(r.body) or nil, r.body
  end
  local function call(method, params, id)
    return post(cjson.encode({ jsonrpc = "2.0", id = id == nil and 1 or id, method = method, params = params }))
  end

  it("listens on an ephemeral port and refuses a second listener", function()
    assert.is_true(port > 0)
    assert.are.equal(port, http.port())
    local p, err = http.listen("127.0.0.1", 0)
    assert.is_nil(p)
    assert.truthy(err:find("already running", 1, true))
  end)

  it("forwards a call and keeps the client's id exactly", function()
    local status, doc, raw = post('{"jsonrpc":"2.0","id":12345678901234567890,"method":"getSlot"}')
    assert.are.equal(200, status)
    assert.is_number(doc.result)
    assert.truthy(raw:find('"id":12345678901234567890}', 1, true), raw)
    status, doc = call("getBalance", { "Wallet1" }, "req-7")
    assert.are.equal(200, status)
    assert.are.equal("req-7", doc.id)
    assert.are.equal(1500000000, doc.result.value)
    local _, _, raw2 = post('{"jsonrpc":"2.0","id":null,"method":"getSlot"}')
    assert.truthy(raw2:find('"id":null}', 1, true), raw2)
  end)

  it("answers a batch in order with each id, invalid members answered alone", function()
    local status, doc = post('[{"jsonrpc":"2.0","id":"x","method":"getSlot"},' ..
      '{"jsonrpc":"2.0","id":2,"method":"getBalance","params":["W"]},{"id":3},' ..
      '{"jsonrpc":"2.0","id":4,"method":"noSuchMethod"}, 5]')
    assert.are.equal(200, status)
    assert.are.equal(5, #doc)
    assert.are.equal("x", doc[1].id); assert.is_number(doc[1].result)
    assert.are.equal(2, doc[2].id); assert.are.equal(1500000000, doc[2].result.value)
    assert.are.equal(3, doc[3].id); assert.are.equal(-32600, doc[3].error.code)
    assert.are.equal(4, doc[4].id); assert.are.equal(-32601, doc[4].error.code)
    assert.are.equal(cjson.null, doc[5].id); assert.are.equal(-32600, doc[5].error.code)
    assert.are.equal(1, sim:stats(1).batches)
  end)

  it("gives the JSON-RPC error for malformed requests", function()
    local status, doc = post("{not json")
    assert.are.equal(200, status)
    assert.are.equal(-32700, doc.error.code)
    assert.are.equal(cjson.null, doc.id)
    for _, body in ipairs{ '{"jsonrpc":"1.0","id":1,"method":"getSlot"}', '{"jsonrpc":"2.0","id":1}',
                           '{"jsonrpc":"2.0","id":1,"method":"getSlot","params":"x"}', '"hello"', "[]",
                           '{"jsonrpc":"2.0","id":{"a":1},"method":"getSlot"}' } do
      status, doc = post(body)
      assert.are.equal(200, status, body)
      assert.are.equal(-32600, doc.error.code, body)
    end
    assert.are.equal(0, sim:stats(1).requests)
  end)

  it("passes an upstream JSON-RPC error through unchanged", function()
    local _, doc = call("noSuchMethod", {}, 9)
    assert.are.same({ code = -32601, message = "Method not found" }, doc.error)
    assert.are.equal(9, doc.id)
    _, doc = call("sendTransaction", { "PREFLIGHT_FAIL" }, 10)
    assert.are.equal(-32002, doc.error.code)
    assert.are.equal("Transaction simulation failed: Blockhash not found", doc.error.message)
  end)

  it("returns the upstream result bytes unchanged (needs thorp.rpc to hand back res.raw)", function()
    -- cjson re-encoding would turn "logs":[] into {} and round u64 values
    local _, _, raw = call("simulateTransaction", { "AQAB" }, 1)
    assert.truthy(raw:find('"logs":[]', 1, true), raw)
    local _, doc, braw = post('[{"jsonrpc":"2.0","id":"s","method":"simulateTransaction","params":["AQAB"]},' ..
      '{"jsonrpc":"2.0","id":7,"method":"noSuchMethod"},{"jsonrpc":"2.0","id":8,"method":"getSlot"}]')
    assert.truthy(braw:find('"logs":[]', 1, true), braw)
    assert.are.equal("s", doc[1].id)
    assert.are.same({ code = -32601, message = "Method not found" }, doc[2].error)
    assert.are.equal(8, doc[3].id); assert.is_number(doc[3].result)
  end)

  it("answers 204 to a notification and forwards it", function()
    local status, doc = post('{"jsonrpc":"2.0","method":"getSlot"}')
    assert.are.equal(204, status)
    assert.is_nil(doc)
    assert.are.equal(1, sim:stats(1).requests)
  end)

  it("refuses with HTTP 429, Retry-After and a JSON-RPC error when admission says no", function()
    for _ = 1, 50 do bp:try_acquire("normal") end
    local status, doc = call("getBalance", { "W" }, 5)
    local _, _, _, hname, hval = http.route("POST", "/", '{"jsonrpc":"2.0","id":6,"method":"getSlot"}')
    local bstatus, bdoc = post('[{"jsonrpc":"2.0","id":1,"method":"getSlot"},{"jsonrpc":"2.0","id":2,"method":"getSlot"}]')
    for _ = 1, 50 do bp:release("normal") end
    assert.are.equal(429, status)
    assert.are.equal(-32050, doc.error.code)
    assert.are.equal("BACKPRESSURE_REJECTED", doc.error.data.code)
    assert.are.equal(5, doc.id)
    assert.are.equal("Retry-After", hname)
    assert.are.equal("1", hval)
    assert.are.equal(429, bstatus)
    assert.are.equal(2, #bdoc)
    assert.are.equal("BACKPRESSURE_REJECTED", bdoc[2].error.data.code)
    assert.are.equal(200, (call("getSlot")))
  end)

  it("maps other pool failures to -32050.. codes with the code name in data", function()
    for i = 1, 3 do sim:fault(i, { down = true }) end
    local status, doc = call("getBalance", { "W" }, 1)
    assert.are.equal(200, status)
    assert.are.equal(-32054, doc.error.code)
    assert.are.equal("ALL_ENDPOINTS_FAILED", doc.error.data.code)
    assert.is_table(doc.error.data.failures)
    assert.is_nil(doc.error.message:find("127.0.0.1:%d+/"), doc.error.message)
  end)

  it("keeps failover invisible to the client", function()
    sim:fault(1, { down = true })
    for i = 1, 6 do
      local status, doc = call("getBalance", { "W" .. i }, i)
      assert.are.equal(200, status)
      assert.are.equal(1500000000, doc.result.value)
    end
    assert.are.equal("OPEN", pool:endpoints()[1].state)
  end)

  it("lets identical reads in flight share one upstream call, never transactions", function()
    sim:fault(1, { latency_ms = 200 })
    local function burst(body, n)
      local done = 0
      for _ = 1, n do thorp.spawn(function() post(body); done = done + 1 end) end
      while done < n do thorp.sleep(10) end
    end
    local before = http.counters.coalesced
    burst('{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["Same"]}', 5)
    assert.are.equal(1, sim:stats(1).requests)
    assert.are.equal(before + 4, http.counters.coalesced)
    burst('{"jsonrpc":"2.0","id":1,"method":"sendTransaction","params":["AQAB"]}', 3)
    assert.are.equal(3, sim:stats(1).send_transaction)
  end)

  it("lets the request hook rewrite a request or answer it", function()
    local seen
    http.set_request_hook(function(req)
      seen = req
      if req.method == "getSlotPlease" then req.method = "getSlot" end
      if req.method == "forbidden" then return { code = -32099, message = "not here", data = { why = "policy" } } end
      if req.method == "boom" then error("hook bug") end
    end)
    local _, doc = call("getSlotPlease", nil, 1)
    assert.is_number(doc.result)
    assert.are.equal("getSlot", seen.method)
    assert.is_false(seen.batch)
    _, doc = call("forbidden", nil, 2)
    assert.are.same({ code = -32099, message = "not here", data = { why = "policy" } }, doc.error)
    _, doc = call("boom", nil, 3)
    assert.are.equal(-32603, doc.error.code)
    http.set_request_hook(nil)
    _, doc = call("getSlotPlease", nil, 4)
    assert.are.equal(-32601, doc.error.code)
    assert.has_error(function() http.set_request_hook(42) end)
  end)

  it("routes GET /health, /ready, /metrics and refuses the rest", function()
    local s, ctype, body = http.route("GET", "/health", "")
    assert.are.equal(200, s); assert.are.equal("application/json", ctype)
    assert.are.equal("ok", cjson.decode(body).status)
    assert.are.equal(405, (post("{}", "/health")))
    assert.are.equal(404, (post("{}", "/nope")))
    local m, mtype = http.route("GET", "/metrics", "")
    assert.are.equal(200, m)
    assert.truthy(mtype:find("text/plain; version=0.0.4", 1, true))
    local s405, _, _, allow = http.route("GET", "/", "")
    assert.are.equal(405, s405); assert.are.equal("Allow", allow)
  end)

  it("is unhealthy when no endpoint is healthy, and while draining", function()
    for _, e in ipairs(pool.eps) do e.breaker:trip() end
    local ok, info = http.health()
    local rok = http.ready()
    local status = http.route("GET", "/health", "")
    for _, e in ipairs(pool.eps) do e.breaker:reset() end
    assert.is_false(ok)
    assert.is_false(rok)
    assert.are.equal(503, status)
    assert.are.equal("no healthy RPC endpoint", info.reason)
    local real = package.loaded["thorp.shutdown"]
    package.loaded["thorp.shutdown"] = { is_shutting_down = function() return true end,
                                         status = function() return { reason = "SIGTERM", active_trades = 1 } end }
    local dok, dinfo = http.health()
    package.loaded["thorp.shutdown"] = real
    assert.is_false(dok)
    assert.are.equal("draining", dinfo.status)
    assert.truthy(dinfo.reason:find("SIGTERM", 1, true))
    assert.is_true((http.health()))
  end)

  it("survives clients that hang up before the answer, and oversized bodies", function()
    sim:fault(1, { latency_ms = 300 })
    local r, err = thorp.rpc.http_post(url, '{"jsonrpc":"2.0","id":1,"method":"getBalance","params":["Gone"]}', 50)
    assert.is_nil(r); assert.is_string(err)
    assert.are.equal(1, http.pending())
    thorp.sleep(500)
    assert.are.equal(0, http.pending())
    local status = post(('{"jsonrpc":"2.0","id":1,"method":"getSlot","params":["%s"]}'):format(("x"):rep(70000)))
    assert.are.equal(413, status)
    sim:fault(1, { latency_ms = 0 })
    assert.are.equal(200, (call("getSlot")))
  end)

  it("serves a valid Prometheus scrape whose counters move with calls", function()
    local b = thorp.bus.new{}
    local real_bus = rawget(thorp.bus, "default")
    rawset(thorp.bus, "default", b)
    b:subscribe('odd"topic\\x', function() end, { name = "sub\nline" })
    b:publish('odd"topic\\x', { n = 1 })
    thorp.sleep(20)
    local before = metrics.render{ pool = pool }
    assert.are.same({}, check_prom(before))
    call("getSlot"); call("getBalance", { "W" }); call("noSuchMethodMetrics") -- a name no endpoint is known to lack yet
    b:publish('odd"topic\\x', { n = 2 })
    thorp.sleep(20)
    local after = metrics.render{ pool = pool }
    rawset(thorp.bus, "default", real_bus)
    b:close()
    assert.are.same({}, check_prom(after))
    local function grew(name, labels, by)
      local a, z = value(before, name, labels) or 0, value(after, name, labels)
      assert.is_number(z, name .. (labels or ""))
      assert.is_true(z >= a + (by or 1), ("%s%s: %s -> %s"):format(name, labels or "", a, z))
    end
    grew("thorp_rpc_endpoint_requests_total", '{endpoint="a"}', 3)
    grew("thorp_rpc_endpoint_successes_total", '{endpoint="a"}', 2)
    grew("thorp_rpc_endpoint_errors_total", '{endpoint="a",class="rpc_error"}', 1)
    grew("thorp_frontdoor_calls_total", '{outcome="ok"}', 2)
    grew("thorp_frontdoor_calls_total", '{outcome="rpc_error"}', 1)
    grew("thorp_http_requests_total", '{route="/",code="200"}', 3)
    grew("thorp_bus_published_total", nil, 1)
    grew("thorp_bus_topic_delivered_total", '{topic="odd\\"topic\\\\x"}', 1)
    grew("thorp_admission_offered_total", '{priority="normal"}', 0)
    assert.are.equal(0, value(after, "thorp_rpc_endpoint_breaker_state", '{endpoint="a"}'))
    assert.are.equal(1, value(after, "thorp_up"))
    for _, name in ipairs{ "thorp_shutdown_in_progress", "thorp_active_trades", "thorp_policy_version",
                           "thorp_policy_last_reload_ok", "thorp_bus_subscribers_quarantined",
                           "thorp_admission_utilization_ratio" } do
      assert.is_number(value(after, name), name)
    end
    assert.is_number(value(after, "thorp_bus_queue_depth", '{lane="critical"}'))
  end)

  it("counts calls by method (unknown ones as other), trade outcomes and named counters", function()
    local before = metrics.render{ pool = pool }
    call("getBalance", { "W" }); call("getSlot"); call("noSuchMethodXyz")
    local sd = require "thorp.shutdown"
    for i, st in ipairs{ "confirmed", "failed", "expired", "finalized", "sent" } do
      sd.register("TRADE", "metric-trade-" .. i)
      sd.complete("metric-trade-" .. i, st)
    end
    metrics.trade_outcome({ status = "failed" }) -- the table form of complete(id, { status = ... })
    metrics.counter_add("journal_io_errors_total", { op = "write" }, 2)
    local after = metrics.render{ pool = pool }
    assert.are.same({}, check_prom(after))
    local function grew(name, labels, by)
      local a, z = value(before, name, labels) or 0, value(after, name, labels)
      assert.is_number(z, name .. (labels or ""))
      assert.are.equal(a + by, z, name .. (labels or ""))
    end
    grew("thorp_rpc_method_calls_total", '{method="getBalance",outcome="ok"}', 1)
    grew("thorp_rpc_method_calls_total", '{method="other",outcome="rpc_error"}', 1)
    grew("thorp_rpc_method_latency_seconds_count", '{method="getSlot"}', 1)
    assert.is_nil(after:find("noSuchMethodXyz", 1, true))
    grew("thorp_trades_total", '{outcome="confirmed"}', 2)
    grew("thorp_trades_total", '{outcome="failed"}', 2)
    grew("thorp_trades_total", '{outcome="expired"}', 1)
    grew("thorp_trades_total", '{outcome="other"}', 1)
    grew("thorp_journal_io_errors_total", '{op="write"}', 2)
    assert.are.equal(0, value(after, "thorp_trades_total", '{outcome="abandoned"}'))
  end)

  it("reports breaker state and transitions", function()
    sim:fault(1, { down = true })
    call("getSlot"); call("getSlot")
    local text = metrics.render{ pool = pool }
    assert.are.same({}, check_prom(text))
    assert.are.equal(2, value(text, "thorp_rpc_endpoint_breaker_state", '{endpoint="a"}'))
    assert.is_true(value(text, "thorp_rpc_endpoint_breaker_transitions_total", '{endpoint="a"}') >= 1)
    assert.is_true(value(text, "thorp_rpc_endpoint_errors_total", '{endpoint="a",class="transport_error"}') >= 2)
  end)

  it("renders the host's own pool when no pool is given", function()
    local text = metrics.render()
    assert.are.same({}, check_prom(text))
    assert.is_number(value(text, "thorp_rpc_calls_total", '{outcome="ok"}'))
  end)
end)
