-- WebSocket subscriptions against the simulator's PubSub side (tests/sim/sim_ws.c):
-- delivery, sharing, reconnect after close/reset/silence, gaps, failover,
-- redundancy, oversize and fragmented frames, slow handlers, bad input.
local thorp = require "thorp"
local ws = require "thorp.ws"
local simm = require "helpers.sim"
local C_http_stop = function() require("thorp.cdef").thorp_http_stop() end

local function wait(cond, ms, what)
  local deadline = thorp.now() + (ms or 5000)
  while thorp.now() < deadline do
    if cond() then return true end
    thorp.sleep(10)
  end
  error("timed out waiting for " .. (what or "a condition"), 2)
end

describe("ws subscriptions", function()
  local sim, defaults
  setup(function()
    sim = simm.start(2)
    defaults = {}
    for k, v in pairs(ws.options) do defaults[k] = v end
  end)
  teardown(function() sim:stop() end)
  before_each(function()
    for i = 1, 2 do sim:ws_fault(i, { clear = 1 }) end
  end)
  after_each(function()
    for _, s in ipairs(ws.list()) do s.subscription:unsubscribe() end
    for k, v in pairs(defaults) do ws.options[k] = v end
  end)

  local function pool(n)
    local eps = sim:endpoints({ "a", "b" })
    if n == 1 then eps = { eps[1] } end
    return thorp.rpc.new_pool{ endpoints = eps }
  end
  local function wsinfo(p, name)
    for _, e in ipairs(p:endpoints()) do if e.name == name then return e.ws end end
  end
  local function gaps()
    local got = {}
    local s = thorp.bus.default:subscribe("thorp.ws", function(ev) got[#got + 1] = ev end)
    return got, function() thorp.bus.default:unsubscribe(s) end
  end

  it("delivers slot notifications with their context, and reports status", function()
    local p = pool(1)
    local got = {}
    local sub = p:subscribe("slotSubscribe", nil, function(v, ctx) got[#got + 1] = { v = v, ctx = ctx } end)
    assert.is_true(sub.ok)
    wait(function() return #got >= 2 end, 3000, "two slots")
    local n = got[1]
    assert.is_number(n.v.slot)
    assert.are.equal(n.v.slot, n.ctx.slot)
    assert.are.equal("a", n.ctx.endpoint)
    assert.are.equal(sub, n.ctx.subscription)
    assert.is_true(got[2].v.slot > got[1].v.slot)
    local st = sub:status()
    assert.are.equal("active", st.state)
    assert.are.equal("a", st.endpoint)
    assert.is_true(st.notifications >= 2)
    assert.are.equal(0, st.gaps)
    assert.are.equal(0, st.reconnects)
    local e = wsinfo(p, "a")
    assert.are.equal("open", e.state)
    assert.is_true(e.notifications >= 2 and e.bytes > 0)
    assert.is_true(sub:unsubscribe())
    assert.is_false(sub:unsubscribe())
    wait(function() return sim:ws_fault(1, {}).subscriptions == 0 end, 2000, "the upstream unsubscribe")
  end)

  it("shows connection state, counts and lag in endpoints(), subscriptions() and /metrics", function()
    local p = pool(2)
    local n = 0
    local sub = p:subscribe("slotSubscribe", nil, function() n = n + 1 end, { redundancy = 2 })
    wait(function() return n >= 2 end, 3000, "slots")
    local a = wsinfo(p, "a")
    assert.are.equal("open", a.state)
    assert.are.equal(1, a.subscriptions)
    assert.is_number(a.lag)
    assert.is_true(a.bytes > 0)
    local listed
    for _, s in ipairs(thorp.rpc.subscriptions()) do if s.subscription == sub then listed = s end end
    assert.are.equal("slotSubscribe", listed.method)
    assert.are.equal("active", listed.state)
    local text = require("thorp.metrics").render{ pool = p }
    assert.matches('thorp_ws_endpoint_state{endpoint="a"} 2', text, 1, true)
    assert.matches('thorp_ws_endpoint_subscriptions{endpoint="b"} 1', text, 1, true)
    assert.matches("thorp_ws_delivered_total %d+", text)
  end)

  it("shares one upstream subscription between identical subscriptions", function()
    local p = pool(1)
    local a, b = 0, 0
    local pk = "Acc1111111111111111111111111111111111111111"
    local s1 = p:subscribe("accountSubscribe", { pk, { encoding = "base64", commitment = "confirmed" } },
                           function() a = a + 1 end)
    local s2 = p:subscribe("accountSubscribe", { pk, { commitment = "confirmed", encoding = "base64" } },
                           function() b = b + 1 end)
    wait(function() return a >= 2 and b >= 2 end, 3000, "both handlers")
    assert.are.equal(1, sim:ws_fault(1, {}).subscriptions)
    assert.are.equal(2, #thorp.rpc.subscriptions())
    s1:unsubscribe()
    local b0 = b
    wait(function() return b >= b0 + 2 end, 3000, "the second handler after the first left")
    assert.are.equal(1, sim:ws_fault(1, {}).subscriptions)
    s2:unsubscribe()
    wait(function() return sim:ws_fault(1, {}).subscriptions == 0 end, 2000, "unsubscribed upstream")
  end)

  for _, fault in ipairs({ "close", "reset" }) do
    it("reconnects after a " .. fault .. ", subscribes again and publishes a gap", function()
      ws.options.backoff_min_ms = 20
      local p = pool(1)
      local slots = {}
      local got, stop = gaps()
      local sub = p:subscribe("slotSubscribe", nil, function(v) slots[#slots + 1] = v.slot end)
      wait(function() return #slots >= 1 end, 3000, "a first slot")
      local subscribes = sim:ws_fault(1, {}).subscribes
      sim:ws_fault(1, { [fault] = 1 })
      wait(function() return #got >= 1 end, 5000, "the gap event")
      stop()
      local g = got[1]
      assert.are.equal("gap", g.kind)
      assert.are.equal(sub, g.subscription)
      assert.are.equal("slotSubscribe", g.method)
      assert.are.equal("a", g.endpoint)
      assert.is_number(g.from_slot)
      assert.is_true(g.to_slot > g.from_slot, g.to_slot .. " after " .. g.from_slot)
      local n = #slots
      wait(function() return #slots >= n + 2 end, 3000, "slots after the reconnect")
      assert.is_true(sim:ws_fault(1, {}).subscribes > subscribes)
      local st = sub:status()
      assert.are.equal(1, st.reconnects)
      assert.are.equal(1, st.gaps)
      assert.are.equal("active", st.state)
      assert.are.equal(1, wsinfo(p, "a").reconnects)
    end)
  end

  it("declares a silent connection dead when slot notifications stop (heartbeat)", function()
    ws.options.heartbeat_ms = 1000
    ws.options.backoff_min_ms = 20
    local p = pool(1)
    local slots = {}
    local sub = p:subscribe("slotSubscribe", nil, function(v) slots[#slots + 1] = v.slot end)
    wait(function() return #slots >= 1 end, 3000, "a first slot")
    sim:ws_fault(1, { silence = 1 })
    wait(function() return sub:status().reconnects == 1 end, 4000, "the heartbeat reconnect")
    assert.matches("heartbeat", wsinfo(p, "a").last_error)
    local n = #slots
    wait(function() return #slots >= n + 1 end, 3000, "slots after the reconnect")
  end)

  it("declares a silent connection dead by ping timeout where no slot subscription exists", function()
    ws.options.ping_interval_ms = 100
    ws.options.ping_timeout_ms = 600
    ws.options.backoff_min_ms = 20
    local p = pool(1)
    local n = 0
    local sub = p:subscribe("logsSubscribe", { "all" }, function() n = n + 1 end)
    wait(function() return n >= 1 end, 3000, "a first notification")
    sim:ws_fault(1, { silence = 1 })
    wait(function() return sub:status().reconnects == 1 end, 4000, "the ping-timeout reconnect")
    assert.matches("ping timeout", wsinfo(p, "a").last_error)
    local n0 = n
    wait(function() return n > n0 end, 3000, "notifications after the reconnect")
  end)

  it("moves to another endpoint when one stays down", function()
    ws.options.backoff_min_ms = 500
    local p = pool(2)
    local eps = {}
    local sub = p:subscribe("slotSubscribe", nil, function(_, ctx) eps[#eps + 1] = ctx.endpoint end)
    wait(function() return #eps >= 1 end, 3000, "a first slot")
    assert.are.equal("a", eps[#eps])
    sim:ws_fault(1, { upgrade_status = 503 })
    sim:ws_fault(1, { reset = 1 })
    wait(function() return eps[#eps] == "b" end, 3000, "slots from b")
    assert.are.equal("b", sub:status().endpoint)
    assert.are.equal(1, sub:status().reconnects)
  end)

  it("redundancy 2 holds the subscription on both endpoints, delivers each slot once, loses none on a kill", function()
    ws.options.backoff_min_ms = 20
    local p = pool(2)
    local seen, dups, slots = {}, 0, {}
    local sub = p:subscribe("slotSubscribe", nil, function(v)
      if seen[v.slot] then dups = dups + 1 end
      seen[v.slot] = true
      slots[#slots + 1] = v.slot
    end, { redundancy = 2 })
    wait(function() return sim:ws_fault(1, {}).subscriptions == 1 and sim:ws_fault(2, {}).subscriptions == 1 end,
         3000, "both placements")
    wait(function() return #slots >= 2 end, 3000, "two slots")
    assert.is_true(ws.stats.duplicates > 0 or wsinfo(p, "b").notifications > 0)
    sim:ws_fault(1, { reset = 1 })
    local n = #slots
    wait(function() return #slots >= n + 3 end, 4000, "slots after the kill")
    assert.are.equal(0, dups)
    for i = 2, #slots do assert.are.equal(slots[i - 1] + 1, slots[i]) end -- nothing lost, in order
    assert.are.equal(0, sub:status().gaps)
    wait(function() return sim:ws_fault(1, {}).subscriptions == 1 end, 3000, "the killed side back")
  end)

  it("closes with a clear error on a message above max_message_bytes and reconnects", function()
    ws.options.max_message_bytes = 64 * 1024
    ws.options.backoff_min_ms = 20
    local p = pool(1)
    local n = 0
    local sub = p:subscribe("accountSubscribe", { "Acc2" }, function() n = n + 1 end)
    wait(function() return n >= 1 end, 3000, "a first notification")
    sim:ws_fault(1, { oversize = 200000 })
    wait(function() return sub:status().reconnects == 1 end, 3000, "the reconnect")
    assert.matches("max_message_bytes %(65536%)", wsinfo(p, "a").last_error)
    local n0 = n
    wait(function() return n > n0 end, 3000, "notifications after it")
  end)

  it("reassembles fragmented messages", function()
    sim:ws_fault(1, { fragment = 1, payload_bytes = 3000 })
    local m0 = ws.stats.malformed
    local p = pool(1)
    local got = {}
    p:subscribe("programSubscribe", { "Prog1" }, function(v) got[#got + 1] = v end)
    wait(function() return #got >= 2 end, 3000, "fragmented notifications")
    assert.are.equal(3000, #got[1].value.account.data[1])
    assert.are.equal(m0, ws.stats.malformed)
  end)

  it("takes notifications in another key order (subscription before result)", function()
    sim:ws_fault(1, { sub_first = 1, payload_bytes = 300 })
    local m0 = ws.stats.malformed
    local p = pool(1)
    local got = {}
    p:subscribe("accountSubscribe", { "Order1" }, function(v, ctx) got[#got + 1] = { v = v, slot = ctx.slot } end)
    wait(function() return #got >= 2 end, 3000, "notifications")
    assert.are.equal(300, #got[1].v.value.data[1])
    assert.is_number(got[1].slot)
    assert.are.equal(m0, ws.stats.malformed)
  end)

  it("a slow handler does not stall other subscriptions or the reader", function()
    local p = pool(1)
    local release = false
    local slow_calls, fast = 0, 0
    local slow = p:subscribe("accountSubscribe", { "Slow" }, function()
      slow_calls = slow_calls + 1
      while not release do thorp.sleep(5) end
    end)
    p:subscribe("slotSubscribe", nil, function() fast = fast + 1 end)
    wait(function() return fast >= 3 and slow:status().queued >= 2 end, 4000, "fast deliveries while slow waits")
    assert.are.equal(1, slow_calls)
    release = true
    wait(function() return slow:status().queued == 0 end, 3000, "the slow mailbox drained")
  end)

  it("signatureSubscribe ends after its notification", function()
    local p = pool(1)
    local got = {}
    local sub = p:subscribe("signatureSubscribe", { "5igsig", { commitment = "confirmed" } }, function(v, ctx)
      got[#got + 1] = { v = v, slot = ctx.slot }
    end)
    wait(function() return sub:status().state == "done" and #got == 1 end, 3000, "the signature notification")
    thorp.sleep(50)
    assert.are.equal(1, #got)
    assert.is_true(thorp.json.is_null(got[1].v.value.err))
    assert.is_number(got[1].slot)
    assert.are.equal(0, sim:ws_fault(1, {}).subscriptions)
  end)

  it("publishes on the host bus with opts.topic and no handler", function()
    local p = pool(1)
    local got = {}
    local bs = thorp.bus.default:subscribe("ws_test_slots", function(ev) got[#got + 1] = ev end)
    local sub = p:subscribe("slotSubscribe", nil, nil, { topic = "ws_test_slots" })
    assert.is_true(sub.ok)
    wait(function() return #got >= 1 end, 3000, "a bus event")
    assert.is_number(got[1].value.slot)
    assert.are.equal("a", got[1].endpoint)
    thorp.bus.default:unsubscribe(bs)
  end)


  it("sends the endpoint's headers on the upgrade (providers that authenticate by header)", function()
    ws.options.backoff_min_ms = 20
    sim:ws_fault(1, { require_header = "X-Api-Key: sekret-header-123" })
    local bare = pool(1)
    local sub = bare:subscribe("slotSubscribe", nil, function() end)
    wait(function() return (wsinfo(bare, "a").last_error or ""):match("HTTP 401") end, 3000, "the 401 without it")
    sub:unsubscribe()
    local ep = sim:endpoints({ "a" })[1]
    ep.headers = { ["X-Api-Key"] = "sekret-header-123", ["X-Other"] = "1" }
    local p = thorp.rpc.new_pool{ endpoints = { ep } }
    local n = 0
    p:subscribe("slotSubscribe", nil, function() n = n + 1 end)
    wait(function() return n >= 1 end, 3000, "slots with the header")
    assert.are.equal("open", wsinfo(p, "a").state)
  end)

  describe("backfill", function()
    local ADDR = "Mention111111111111111111111111111111111111"
    local function seq(sig) return tonumber(sig:match("^simsig(%d+)$")) end

    it("logs: fetches the signatures missed during the gap and their transactions, oldest first", function()
      ws.options.backoff_min_ms, ws.options.backoff_max_ms = 900, 900 -- a gap of 450-900 ms
      sim:ws_fault(1, { notify_ms = 50 })
      local p = pool(1)
      local live, filled = {}, {}
      local sub = p:subscribe("logsSubscribe", { { mentions = { ADDR } }, { commitment = "confirmed" } },
        function(v, ctx)
          local list = ctx.backfill and filled or live
          list[#list + 1] = { sig = v.value.signature, slot = ctx.slot, logs = v.value.logs }
        end, { backfill = true })
      wait(function() return #live >= 2 end, 3000, "live logs")
      local before = seq(live[#live].sig) -- a live signature from before the gap
      sim:ws_fault(1, { close = 1 })
      wait(function() local st = sub:status(); return st.backfills == 1 and #filled == st.backfilled end, 6000, "the backfill")
      assert.is_true(#filled >= 2, #filled .. " backfilled; status " .. require("cjson").encode(sub:status())
        .. "; last live " .. live[#live].sig .. ", before the gap " .. before)
      local seen = {}
      for _, l in ipairs(live) do seen[l.sig] = true end
      for i, f in ipairs(filled) do
        assert.is_nil(seen[f.sig], f.sig .. " delivered twice")
        seen[f.sig] = true
        assert.is_true(seq(f.sig) > before, f.sig .. " is not after " .. before)
        if i > 1 then assert.is_true(seq(f.sig) > seq(filled[i - 1].sig), "oldest first") end
        assert.is_number(f.slot)
        assert.are.equal("Program 11111111111111111111111111111111 invoke [1]", f.logs[1])
      end
      local st = sub:status()
      assert.are.equal(#filled, st.backfilled)
      assert.are.equal(0, st.backfill_errors)
      assert.are.equal(1, st.gaps)
    end)

    it("account: delivers the current state once when it is newer than the last notification", function()
      ws.options.backoff_min_ms, ws.options.backoff_max_ms = 900, 900
      local p = pool(1)
      local live, filled = {}, {}
      local pk = "Acc1111111111111111111111111111111111111111"
      local sub = p:subscribe("accountSubscribe", { pk, { encoding = "base64", commitment = "confirmed" } },
        function(v, ctx) local l = ctx.backfill and filled or live; l[#l + 1] = { v = v, slot = ctx.slot } end,
        { backfill = true })
      wait(function() return #live >= 1 end, 3000, "a live notification")
      local last = live[#live].slot
      sim:ws_fault(1, { close = 1 })
      wait(function() local st = sub:status(); return st.backfills == 1 and #filled == st.backfilled end, 6000, "the backfill")
      assert.are.equal(1, #filled)
      assert.is_true(filled[1].slot > last, filled[1].slot .. " after " .. last)
      assert.are.equal(filled[1].slot, filled[1].v.context.slot)
      assert.are.equal(2039280, filled[1].v.value.lamports)
      assert.are.equal(1, sub:status().backfilled)
    end)

    it("program: getProgramAccounts with opts.backfill", function()
      ws.options.backoff_min_ms, ws.options.backoff_max_ms = 900, 900
      local p = pool(1)
      local filled, n = {}, 0
      local sub = p:subscribe("programSubscribe", { "11111111111111111111111111111111", { encoding = "base64" } },
        function(v, ctx) if ctx.backfill then filled[#filled + 1] = v else n = n + 1 end end, { backfill = true })
      wait(function() return n >= 1 end, 3000, "a live notification")
      sim:ws_fault(1, { close = 1 })
      wait(function() return #filled >= 1 end, 6000, "the backfill")
      assert.are.equal("SimProgramAccount1111111111111111111111111", filled[1].value.pubkey)
      assert.is_number(filled[1].value.account.lamports)
      assert.are.equal(1, sub:status().backfilled)
    end)

    it("a function backfill gets the gap and its values reach the handler with ctx.backfill", function()
      ws.options.backoff_min_ms = 20
      local p = pool(1)
      local gap, filled = nil, {}
      local sub = p:subscribe("slotSubscribe", nil, function(v, ctx) if ctx.backfill then filled[#filled + 1] = v end end,
        { backfill = function(g) gap = g; return { { slot = g.to_slot, mine = true } } end })
      wait(function() return sub:status().notifications >= 1 end, 3000, "a slot")
      sim:ws_fault(1, { reset = 1 })
      wait(function() return #filled == 1 end, 5000, "the function's value")
      assert.is_true(filled[1].mine)
      assert.are.equal("slotSubscribe", gap.method)
      assert.is_true(gap.to_slot > gap.from_slot)
      assert.are.equal(1, sub:status().backfilled)
    end)

    it("counts a failing backfill and keeps the subscription", function()
      ws.options.backoff_min_ms = 20
      local p = pool(1)
      local sub = p:subscribe("slotSubscribe", nil, function() end, { backfill = function() error("boom") end })
      wait(function() return sub:status().notifications >= 1 end, 3000, "a slot")
      sim:ws_fault(1, { reset = 1 })
      wait(function() return sub:status().backfill_errors == 1 end, 5000, "the counted failure")
      assert.matches("boom", sub:status().backfill_error)
      local n = sub:status().notifications
      wait(function() return sub:status().notifications > n end, 3000, "slots after it")
    end)

    it("refuses a backfill it cannot do, naming what is built in", function()
      local p = pool(1)
      local r = p:subscribe("slotSubscribe", nil, function() end, { backfill = true })
      assert.is_false(r.ok)
      assert.matches("no built%-in backfill for slotSubscribe", r.error.message)
      r = p:subscribe("logsSubscribe", { "all" }, function() end, { backfill = true })
      assert.is_false(r.ok)
      assert.matches("mentions", r.error.message)
      r = p:subscribe("slotSubscribe", nil, function() end, { backfill = 1 })
      assert.matches("true, false or a function", r.error.message)
    end)
  end)

  describe("wss", function()
    -- nginx terminates TLS (a self-signed certificate for localhost) in front of endpoint 1's WebSocket port
    local dir, port, nginx_pid
    setup(function()
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir))
      assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s/key.pem -out %s/cert.pem -days 1 "
        .. "-subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1"):format(dir, dir)))
      local p = io.popen("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); "
        .. "print(s.getsockname()[1])'")
      port = tonumber(p:read("*l"))
      p:close()
      local upstream = sim.ws_urls[1]:gsub("^ws://", "")
      local f = assert(io.open(dir .. "/nginx.conf", "w"))
      f:write((([[
daemon off; worker_processes 1; pid DIR/nginx.pid; error_log DIR/error.log;
events {}
http {
  access_log off; client_body_temp_path DIR; proxy_temp_path DIR; fastcgi_temp_path DIR;
  uwsgi_temp_path DIR; scgi_temp_path DIR;
  server {
    listen 127.0.0.1:PORT ssl; ssl_certificate DIR/cert.pem; ssl_certificate_key DIR/key.pem;
    location / { proxy_pass http://UP; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;
                 proxy_set_header Connection "upgrade"; proxy_read_timeout 1h; }
  }
}
]]):gsub("DIR", dir):gsub("PORT", tostring(port)):gsub("UP", upstream)))
      f:close()
      assert(os.execute(("nginx -e %s/error.log -c %s/nginx.conf >/dev/null 2>&1 &"):format(dir, dir)))
      wait(function()
        local pf = io.open(dir .. "/nginx.pid")
        if pf then nginx_pid = tonumber(pf:read("*l")); pf:close() end
        return nginx_pid ~= nil
      end, 5000, "nginx")
    end)
    teardown(function()
      if nginx_pid then os.execute("kill " .. nginx_pid) end
      os.execute("rm -rf " .. dir)
    end)

    local function tls_pool(host)
      return thorp.rpc.new_pool{ endpoints = { { name = "t", url = sim.urls[1],
                                                 ws_url = ("wss://%s:%d/"):format(host, port) } } }
    end

    it("subscribes over TLS with SNI and the certificate checked against the host name", function()
      ws.options.ca_file = dir .. "/cert.pem"
      local p = tls_pool("localhost")
      local got = 0
      p:subscribe("slotSubscribe", nil, function() got = got + 1 end)
      wait(function() return got >= 1 end, 5000, "a slot over wss")
      assert.are.equal("open", wsinfo(p, "t").state)
    end)

    it("refuses a certificate that does not name the host, and one it does not trust", function()
      ws.options.ca_file = dir .. "/cert.pem"
      local p = tls_pool("127.0.0.1") -- the certificate names localhost only
      local got = 0
      p:subscribe("slotSubscribe", nil, function() got = got + 1 end)
      wait(function() return wsinfo(p, "t").last_error ~= nil end, 5000, "the refusal")
      assert.matches("TLS", wsinfo(p, "t").last_error)
      ws.options.ca_file = nil
      local p2 = tls_pool("localhost") -- the system's trust store: self-signed is not in it
      p2:subscribe("rootSubscribe", nil, function() got = got + 1 end)
      wait(function() return wsinfo(p2, "t").last_error ~= nil end, 5000, "the refusal")
      assert.matches("TLS", wsinfo(p2, "t").last_error)
      assert.are.equal(0, got)
    end)
  end)


  describe("front door", function()
    -- thorp's own client (a pool whose endpoint is the front door) against the listener
    local port, upstream
    setup(function()
      upstream = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b" }) }
      port = assert(thorp.http.listen("127.0.0.1", 0, { pool = upstream }))
    end)
    teardown(function() C_http_stop() end)

    local function client()
      return thorp.rpc.new_pool{ endpoints = { { name = "door", url = "http://127.0.0.1:" .. port,
                                                 ws_url = "ws://127.0.0.1:" .. port .. "/" } } }
    end

    it("serves subscriptions; identical ones of two clients share one upstream; failover keeps them flowing", function()
      ws.options.backoff_min_ms = 500
      local c1, c2 = client(), client()
      local n1, n2 = 0, 0
      local s1 = c1:subscribe("slotSubscribe", nil, function(v) assert(v.slot > 0); n1 = n1 + 1 end)
      local s2 = c2:subscribe("slotSubscribe", nil, function() n2 = n2 + 1 end)
      wait(function() return n1 >= 2 and n2 >= 2 end, 4000, "slots through the front door")
      assert.are.equal(1, sim:ws_fault(1, {}).subscriptions + sim:ws_fault(2, {}).subscriptions)
      sim:ws_fault(1, { upgrade_status = 503 })
      sim:ws_fault(1, { reset = 1 })
      local a, b = n1, n2
      wait(function() return n1 >= a + 2 and n2 >= b + 2 end, 4000, "slots after the upstream failover")
      assert.are.equal(0, s1:status().reconnects) -- the client's connection and subscription id stayed
      assert.are.equal(0, s2:status().reconnects)
      s1:unsubscribe()
      s2:unsubscribe()
      wait(function() return sim:ws_fault(2, {}).subscriptions == 0 end, 3000, "the upstream unsubscribe")
    end)

    it("asks for the listener's token on the upgrade when it has one", function()
      C_http_stop()
      local token = "ws-spec-token-0123456789"
      port = assert(thorp.http.listen("127.0.0.1", 0, { pool = upstream, token = token }))
      local bare = client()
      bare:subscribe("slotSubscribe", nil, function() end)
      wait(function() return (wsinfo(bare, "door").last_error or ""):match("HTTP 401") end, 4000, "the 401")
      local with = thorp.rpc.new_pool{ endpoints = { { name = "door", url = "http://127.0.0.1:" .. port,
                                                     ws_url = "ws://127.0.0.1:" .. port .. "/?token=" .. token } } }
      local n = 0
      with:subscribe("slotSubscribe", nil, function() n = n + 1 end)
      wait(function() return n >= 1 end, 4000, "slots with the token")
      C_http_stop()
      port = assert(thorp.http.listen("127.0.0.1", 0, { pool = upstream }))
    end)

    it("passes an upstream refusal on to the client as a JSON-RPC error", function()
      local c = client()
      local sub = c:subscribe("blockSubscribe", { "all" }, function() end) -- the simulator refuses it upstream
      wait(function() return sub:status().state == "failed" end, 4000, "the refusal")
      assert.matches("Method not found", sub:status().error.message)
      assert.are.equal(-32601, sub:status().error.rpc_code)
    end)
  end)

  describe("bad input", function()
    it("refuses an unknown method, bad params and a missing handler with error values", function()
      local p = pool(1)
      local r = p:subscribe("fooSubscribe", nil, function() end)
      assert.is_false(r.ok)
      assert.are.equal("INVALID_ARGUMENT", r.error.code)
      assert.matches("slotSubscribe", r.error.message)
      assert.is_false(p:subscribe("slotSubscribe", "x", function() end).ok)
      assert.is_false(p:subscribe("slotSubscribe", nil, nil).ok)
      assert.is_false(p:subscribe("slotSubscribe", nil, function() end, { redundancy = 0 }).ok)
      assert.is_false(p:subscribe("slotSubscribe", nil, function() end, { bogus = 1 }).ok)
    end)

    it("refuses a ws_url that is not ws or wss", function()
      local ok, e = pcall(thorp.rpc.new_pool, { endpoints = { { name = "x", url = sim.urls[1],
                                                                ws_url = "http://h/?api-key=SECRETSECRET" } } })
      assert.is_false(ok)
      assert.matches("ws_url", e)
      assert.not_matches("SECRETSECRET", e)
      local u, msg = ws.ws_url_of({ name = "y", url = "ftp://x" })
      assert.is_nil(u)
      assert.matches("y", msg)
      assert.are.equal("wss://h:8900/k?x=1", (ws.ws_url_of({ url = "https://h:8900/k?x=1" })))
      assert.are.equal("ws://h/", (ws.ws_url_of({ url = "http://h/" })))
    end)

    it("an upstream refusing the method fails the subscription with the reason", function()
      local p = pool(1)
      local sub = p:subscribe("blockSubscribe", { "all" }, function() end)
      wait(function() return sub:status().state == "failed" end, 3000, "the refusal")
      assert.matches("Method not found", sub:status().error.message)
    end)

    it("an endpoint answering the upgrade with 405 or 200 is a logged error, the host stays up", function()
      for _, code in ipairs({ 405, 200 }) do
        sim:ws_fault(1, { upgrade_status = code })
        local p = pool(1)
        local sub = p:subscribe("slotSubscribe", nil, function() end)
        wait(function() local e = wsinfo(p, "a"); return e.last_error ~= nil end, 3000, "the failed upgrade")
        assert.matches("HTTP " .. code, wsinfo(p, "a").last_error)
        assert.are.equal("down", wsinfo(p, "a").state)
        sub:unsubscribe()
      end
    end)

    it("counts malformed JSON, unknown subscription ids and broken frames, and keeps going", function()
      ws.options.backoff_min_ms = 20
      local p = pool(1)
      local n = 0
      local sub = p:subscribe("slotSubscribe", nil, function() n = n + 1 end)
      wait(function() return n >= 1 end, 3000, "a first slot")
      local m0, u0 = ws.stats.malformed, ws.stats.unknown_subscription
      sim:ws_fault(1, { garbage = 1 })
      sim:ws_fault(1, { bogus_sub = 1 })
      wait(function() return ws.stats.malformed > m0 and ws.stats.unknown_subscription > u0 end, 3000, "the counts")
      assert.are.equal(0, sub:status().reconnects)
      sim:ws_fault(1, { garbage_frame = 1 })
      wait(function() return sub:status().reconnects == 1 end, 3000, "the reconnect after a broken frame")
      assert.matches("protocol error", wsinfo(p, "a").last_error)
      local n0 = n
      wait(function() return n > n0 end, 3000, "slots after it")
    end)
  end)
end)
