-- RPC pool against the bundled simulator: classification, failover, 429,
-- sendTransaction safety, hedging, slot-lag health, batches, secrets;
-- background health by default, critical calls through a cascade of faults,
-- insane answers, Retry-After, a lying slot, submission methods, transport
-- queueing, method routing.
local thorp = require "thorp"
local simm = require "helpers.sim"
local C = require "thorp.cdef"

-- poll cond() until it is true or ms pass; returns whether it became true
local function eventually(ms, cond)
  local deadline = thorp.now() + ms
  while not cond() do
    if thorp.now() > deadline then return false end
    thorp.sleep(10)
  end
  return true
end

describe("rpc pool", function()
  local sim
  setup(function() sim = simm.start(3) end)
  teardown(function() sim:stop() end)
  before_each(function() sim:reset() end)

  -- health checks off unless asked for: these tests count the simulator's requests
  local function pool(opts)
    opts = opts or {}
    opts.endpoints = opts.endpoints or sim:endpoints({ "a", "b", "c" })
    opts.timeout_ms = opts.timeout_ms or 2000
    if opts.health == nil then opts.health = false end
    return thorp.rpc.new_pool(opts)
  end
  local function ep(p, name)
    for _, e in ipairs(p:endpoints()) do if e.name == name then return e end end
  end

  it("answers from the first endpoint by weight, with latency and attempts", function()
    local p = pool{ endpoints = { { name = "a", url = sim.urls[1], weight = 1 }, { name = "b", url = sim.urls[2], weight = 5 } } }
    local r = p:call("getSlot")
    assert.is_true(r.ok)
    assert.are.equal("b", r.endpoint)
    assert.are.equal(1, r.attempts)
    assert.is_number(r.result)
    assert.is_number(r.latency_ms)
  end)

  it("fails over from a dead endpoint and opens its breaker", function()
    sim:fault(1, { down = true })
    local p = pool{ breaker = { failure_threshold = 2, cooldown_ms = 60000 } }
    for _ = 1, 4 do
      local r = p:call("getBalance", { "wallet" })
      assert.is_true(r.ok, r.error and r.error.message)
      assert.are.equal("b", r.endpoint)
    end
    assert.are.equal("OPEN", ep(p, "a").state)
    assert.are.equal("CLOSED", ep(p, "b").state)
    assert.are.equal(2, ep(p, "a").errors.TRANSPORT_ERROR)
  end)

  it("backs off a 429 endpoint for its Retry-After without counting a failure", function()
    sim:fault(1, { status = 429, retry_after = 1 })
    local p = pool{ breaker = { failure_threshold = 1 } }
    local r = p:call("getSlot")
    assert.is_true(r.ok)
    assert.are.equal("b", r.endpoint)
    local a = ep(p, "a")
    assert.are.equal("CLOSED", a.state)
    assert.are.equal(1, a.errors.RATE_LIMITED)
    assert.is_true(a.rate_limited_ms > 800 and a.rate_limited_ms <= 1000, tostring(a.rate_limited_ms))
    assert.are.equal("b", p:call("getSlot").endpoint)     -- still backed off: not asked
    assert.are.equal(1, sim:stats(1).errors)
  end)

  it("never sends a transaction twice on its own, but fails over when it never left", function()
    sim:fault(1, { status = 502 })
    local p = pool()
    local r = p:call("sendTransaction", { "TX1" })
    assert.is_false(r.ok)
    assert.are.equal("HTTP_ERROR", r.error.code)
    assert.are.equal(502, r.error.http_status)
    assert.are.equal(0, sim:stats(2).send_transaction)
    r = p:call("sendTransaction", { "TX2" }, { retry_send = true })
    assert.is_true(r.ok)
    assert.are.equal(1, sim:stats(2).send_transaction)
    sim:fault(1, { status = 0, down = true })                -- reset after the request was sent
    r = p:call("sendTransaction", { "TX3" })
    assert.are.equal("TRANSPORT_ERROR", r.error.code)
    assert.are.equal(1, sim:stats(2).send_transaction)
    local refused = pool{ endpoints = { { name = "closed", url = "http://127.0.0.1:9" }, { name = "b", url = sim.urls[2] } },
                          health = false }
    r = refused:call("sendTransaction", { "TX4" })                -- connection refused: it never left
    assert.is_true(r.ok, r.error and r.error.message)
    assert.are.equal(2, sim:stats(2).send_transaction)
  end)

  it("returns the caller's RPC errors untouched and does not blame the endpoint", function()
    local p = pool{ breaker = { failure_threshold = 1 } }
    local r = p:call("sendTransaction", { "PREFLIGHT_FAIL" })
    assert.is_false(r.ok)
    assert.are.equal("RPC_ERROR", r.error.code)
    assert.are.equal(-32002, r.error.rpc_code)
    assert.are.equal(1, r.error.attempts)
    assert.are.equal("CLOSED", ep(p, "a").state)
    r = p:call("noSuchMethod")
    assert.are.equal(-32601, r.error.rpc_code)
  end)

  it("counts -32005 and malformed answers against the endpoint and fails over", function()
    sim:fault(1, { rpc_error = -32005 })
    sim:fault(2, { malformed = true })
    local p = pool()
    local r = p:call("getSlot")
    assert.is_true(r.ok)
    assert.are.equal("c", r.endpoint)
    assert.are.equal(3, r.attempts)
    assert.are.equal(1, ep(p, "a").failures)
    assert.are.equal(1, ep(p, "b").errors.BAD_RESPONSE)
  end)

  it("hedges a slow read to a second endpoint; the first answer wins", function()
    sim:fault(1, { latency_ms = 1500 })
    local p = pool{ hedge_ms = 50 }
    local t0 = thorp.now()
    local r = p:call("getSlot")
    assert.is_true(r.ok)
    assert.are.equal("b", r.endpoint)
    assert.are.equal(2, r.attempts)
    assert.is_true(thorp.now() - t0 < 1500)
  end)

  it("gives every transfer slot back when a hedge and the first attempt answer together", function()
    sim:fault(1, { latency_ms = 40 })
    sim:fault(2, { latency_ms = 20 })
    local p = pool{ hedge_ms = 20, endpoints = { { name = "a", url = sim.urls[1], max_inflight = 4 },
                                                 { name = "b", url = sim.urls[2], max_inflight = 4 } } }
    for _ = 1, 40 do assert.is_true(p:call("getSlot").ok) end
    for _, e in ipairs(p:endpoints()) do assert.are.equal(0, e.inflight, e.name) end
  end)

  it("does not hedge sendTransaction: a timeout is a timeout", function()
    sim:fault(1, { latency_ms = 1000 })
    local p = pool{ hedge_ms = 20 }
    local r = p:call("sendTransaction", { "SLOW" }, { timeout_ms = 300 })
    assert.is_false(r.ok)
    assert.are.equal("TIMEOUT", r.error.code)
    thorp.sleep(50)
    assert.are.equal(0, sim:stats(2).send_transaction + sim:stats(3).send_transaction)
  end)

  it("says which endpoints failed and how when all fail", function()
    for i = 1, 3 do sim:fault(i, { status = 503 }) end
    local r = pool():call("getSlot")
    assert.is_false(r.ok)
    assert.are.equal("ALL_ENDPOINTS_FAILED", r.error.code)
    for _, n in ipairs{ "a: HTTP 503", "b: HTTP 503", "c: HTTP 503" } do
      assert.truthy(r.error.message:find(n, 1, true), r.error.message)
    end
    assert.are.equal(3, #r.error.failures)
  end)

  it("with every breaker open, still tries the least bad endpoint", function()
    local p = pool()
    for _, e in ipairs(p.eps) do e.breaker:trip() end
    local r = p:call("getSlot")
    assert.is_true(r.ok, r.error and r.error.message)
  end)

  it("takes an endpoint that falls behind out of rotation, and lets it back with hysteresis", function()
    local p = pool{ max_slot_lag = 20 }
    sim:fault(1, { slot_lag = 100 })
    p:start_health(50, 20)
    require("thorp.testing").wait_until(function() return not ep(p, "a").healthy end, 3000, "a out of rotation")
    local a = ep(p, "a")
    assert.is_false(a.healthy)
    assert.are.equal("slot_lag", a.unhealthy_reason)
    assert.is_true(a.lag >= 99)
    assert.are.equal("b", p:call("getSlot").endpoint)
    sim:fault(1, { slot_lag = 0 })
    require("thorp.testing").wait_until(function() return ep(p, "a").healthy end, 3000, "a back in rotation")
    assert.is_true(ep(p, "a").healthy)
    assert.are.equal("a", p:call("getSlot").endpoint)
    p:stop_health()
  end)

  it("sends batches as one request and keeps answers in order", function()
    local p = pool()
    local r = p:batch({ { "getSlot" }, { "getBalance", { "w" } }, { "noSuchMethod" } })
    assert.is_true(r.ok)
    assert.is_number(r.results[1].result)
    assert.are.equal(1500000000, r.results[2].result.value)
    assert.are.equal("RPC_ERROR", r.results[3].error.code)
    assert.are.equal(1, sim:stats(1).batches)
  end)

  it("auto_batch: reads in the same loop turn go upstream as one batch, each with its own answer", function()
    local p = pool{ auto_batch = true }
    local results, n = {}, 20
    for i = 1, n do
      thorp.spawn(function()
        results[i] = i == 7 and p:call("noSuchMethod") or p:call("getBalance", { "w" .. i })
      end)
    end
    local t = p:call("sendTransaction", { "TX" })          -- never batched
    require("thorp.testing").wait_until(function() for i = 1, n do if not results[i] then return end end return true end)
    assert.is_true(t.ok)
    for i = 1, n do
      if i == 7 then
        assert.are.equal("RPC_ERROR", results[i].error.code)
        assert.truthy(results[i].error.raw:find('"code":-32601', 1, true))
      else
        assert.is_true(results[i].ok)
        assert.are.equal(1500000000, results[i].result.value)
        assert.are.equal(n, results[i].batched)
        assert.truthy(results[i].raw:find('"value":1500000000', 1, true))
      end
    end
    local st = sim:stats(1)
    assert.are.equal(1, st.batches)
    assert.are.equal(1, st.send_transaction)
    assert.has_error(function() pool{ auto_batch = 1 } end)
  end)

  it("auto_batch: a failing endpoint fails the batch over as a unit", function()
    sim:fault(1, { status = 503 })
    local p = pool{ auto_batch = 5 }
    local ok = 0
    for _ = 1, 12 do thorp.spawn(function() if p:call("getSlot").ok then ok = ok + 1 end end) end
    require("thorp.testing").wait_until(function() return ok == 12 end, 3000, "12 answered calls")
    assert.are.equal(12, ok)
    assert.are.equal(3, sim:stats(2).batches)               -- 12 calls, at most 5 per batch
  end)

  -- One of three endpoints failing in each way the simulator knows: 1,000
  -- critical calls (50 at a time) all succeed.
  local faults = {
    { "dead", { down = true } },
    { "hanging", { hang = true } },
    { "429 with Retry-After 30", { status = 429, retry_after = 30 } },
    { "50 slots behind", { slot_lag = 50 } },
    { "malformed JSON", { malformed = true } },
    { "reset mid-response", { truncate = true } },
  }
  for _, f in ipairs(faults) do
    it("1,000 critical calls all succeed with one endpoint " .. f[1], function()
      sim:fault(1, f[2])
      local p = pool{ hedge_ms = 30, timeout_ms = 3000 }
      if f[1] == "50 slots behind" then p:start_health(50, 20) thorp.sleep(200) end
      local ok, done, errors = 0, 0, {}
      for w = 1, 50 do
        thorp.spawn(function()
          for i = w, 1000, 50 do
            local r = p:call(i % 2 == 0 and "getLatestBlockhash" or "getSignatureStatuses", { { "sig" } },
                             { priority = "critical" })
            if r.ok then ok = ok + 1 else errors[#errors + 1] = r.error.code end
            done = done + 1
          end
        end)
      end
      while done < 1000 do thorp.sleep(20) end
      p:stop_health()
      assert.are.equal(1000, ok, table.concat(errors, ","))
      for _, e in ipairs(p:endpoints()) do                -- every transfer slot came back
        assert.are.equal(0, e.inflight, e.name)
        assert.are.equal(0, e.queued, e.name)
      end
      local a = p:endpoints()[1]
      if f[1] == "429 with Retry-After 30" then
        -- only the calls already in flight when the first 429 came back reached it
        assert.is_true(sim:stats(1).errors <= 50, "requests after the 429: " .. sim:stats(1).errors)
      elseif f[1] == "50 slots behind" then
        assert.is_false(a.healthy)
        sim:fault(1, { slot_lag = 0 })
        p:start_health(50, 20); thorp.sleep(300); p:stop_health()
        assert.is_true(p:endpoints()[1].healthy, "back in rotation once it caught up")
      else
        assert.are.equal("OPEN", a.state, f[1] .. " should open its breaker")
      end
      sim:fault(1, { hang = false })
    end)
  end

  it("a hanging endpoint gives TIMEOUT within the call's deadline", function()
    sim:fault(1, { hang = true })
    local p = pool()
    local t0 = thorp.now()
    local r = p:call("getSlot", {}, { endpoint = "a", timeout_ms = 300 })
    assert.are.equal("TIMEOUT", r.error.code)
    assert.is_true(thorp.now() - t0 < 1000)
    sim:fault(1, { hang = false })
  end)

  it("sends each sendTransaction exactly once, counted by the simulator, while an endpoint fails", function()
    sim:fault(1, { down = true })
    local p = pool{ endpoints = { { name = "closed", url = "http://127.0.0.1:9" }, { name = "a", url = sim.urls[1] },
                                  { name = "b", url = sim.urls[2] }, { name = "c", url = sim.urls[3] } },
                    breaker = { failure_threshold = 3 } }
    local sent = 0
    for i = 1, 40 do
      local r = p:call("sendTransaction", { "TX" .. i })
      if r.ok then sent = sent + 1 end
    end
    local total = sim:stats(1).send_transaction + sim:stats(2).send_transaction + sim:stats(3).send_transaction
    assert.are.equal(sent, total)          -- every success reached exactly one endpoint once
    assert.is_true(sent >= 37, "sent " .. sent)  -- only the few in flight to the dying endpoint fail
  end)

  it("pins an endpoint on request, and names the choices for a wrong one", function()
    local p = pool()
    assert.are.equal("c", p:call("getSlot", {}, { endpoint = "c" }).endpoint)
    local r = p:call("getSlot", {}, { endpoint = "zz" })
    assert.truthy(r.error.message:find("have: a, b, c", 1, true))
  end)

  it("keeps API keys out of listings, errors and logs", function()
    sim:fault(1, { status = 500 })
    local p = thorp.rpc.new_pool{ endpoints = { { name = "k", url = sim.urls[1] .. "/?api-key=SUPERSECRET99" } },
                                  health = false }
    local r = p:call("getSlot")
    assert.is_false(r.ok)
    assert.is_nil(r.error.message:find("SUPERSECRET99", 1, true))
    assert.is_nil(p:endpoints()[1].url:find("SUPERSECRET99", 1, true))
    assert.are.equal("x[REDACTED]y", thorp.log.scrub("xSUPERSECRET99y"):gsub("%*+", "[REDACTED]"))
  end)

  it("refuses by priority under load with the reason and utilization", function()
    local bp = thorp.backpressure.new{ max_queue_size = 10 }
    local p = pool{ backpressure = bp }
    for _ = 1, 10 do bp:try_acquire("normal") end
    local r = p:call("getSlot", {}, { priority = "low" })
    assert.are.equal("BACKPRESSURE_REJECTED", r.error.code)
    assert.are.equal(100, r.error.utilization)
    assert.are.equal("QUEUE_FULL", r.error.reason)
  end)

  it("rejects bad arguments with what is allowed", function()
    local p = pool()
    assert.has_error(function() p:call(42) end)
    assert.has_error(function() p:call("getSlot", {}, { priority = "urgent" }) end)
    assert.has_error(function() thorp.rpc.new_pool{ endpoints = { { name = "x", url = "ftp://nope" } } } end)
    assert.has_error(function() thorp.rpc.new_pool{ endpoints = {} } end)
  end)

  -- Health checks by default ---------------------------------------------------

  it("every new_pool checks its endpoints unless health = false", function()
    collectgarbage() -- pools of earlier tests stop checking once collected
    local on = thorp.rpc.new_pool{ endpoints = { { name = "a", url = sim.urls[1] } }, health_interval_ms = 30 }
    local off = thorp.rpc.new_pool{ endpoints = { { name = "b", url = sim.urls[2] } }, health = false }
    local n1, n2 = sim:stats(1).get_slot, sim:stats(2).get_slot
    assert.is_true(eventually(2000, function() return sim:stats(1).get_slot >= n1 + 3 end))
    assert.is_number(on:endpoints()[1].slot)
    assert.are.equal(n2, sim:stats(2).get_slot)
    assert.is_nil(off:endpoints()[1].slot)
    on:stop_health()
    assert.has_error(function() thorp.rpc.new_pool{ endpoints = sim:endpoints(), health = "yes" } end)
  end)

  it("a pool nobody references stops its health checks once collected", function()
    local clock = thorp.rpc.new_pool{ endpoints = { { name = "a", url = sim.urls[1] } }, health_interval_ms = 20 }
    local function ticks(n) -- wait for n more checks of the clock pool
      local c = sim:stats(1).get_slot
      assert.is_true(eventually(3000, function() return sim:stats(1).get_slot >= c + n end))
    end
    local dropped = thorp.rpc.new_pool{ endpoints = { { name = "b", url = sim.urls[2] } }, health_interval_ms = 20 }
    ticks(3)
    local was = sim:stats(2).get_slot
    assert.is_true(was >= 2, "the pool checked while referenced")
    assert.is_truthy(dropped.health_timer)
    dropped = nil -- luacheck: ignore
    ticks(2)                                               -- its last check has answered
    collectgarbage() collectgarbage()
    local base = sim:stats(2).get_slot
    ticks(10)
    assert.is_true(sim:stats(2).get_slot <= base + 1, ("%d checks after collection"):format(sim:stats(2).get_slot - base))
    clock:stop_health()
  end)

  it("a good health check closes an open breaker at once and ends a 429 backoff early", function()
    local p = pool{ health = true, health_interval_ms = 40, breaker = { failure_threshold = 1, cooldown_ms = 30000 },
                    max_retry_after_ms = 60000 }
    p.eps[1].breaker:trip()
    assert.are.equal("OPEN", ep(p, "a").state)
    assert.is_true(eventually(1000, function() return ep(p, "a").state == "CLOSED" end), "breaker still open")
    sim:fault(2, { status = 429, retry_after = 45 })
    local r = p:call("getSlot", {}, { endpoint = "b" })
    assert.are.equal(429, r.error.http_status)
    assert.is_true(ep(p, "b").rate_limited_ms > 40000)
    sim:fault(2, { status = 0 })
    assert.is_true(eventually(1000, function() return ep(p, "b").rate_limited_ms == 0 end), "still backed off")
    assert.are.equal("b", p:call("getSlot", {}, { endpoint = "b" }).endpoint)
    p:stop_health()
  end)

  it("an endpoint 300 slots behind leaves rotation of a default pool", function()
    sim:fault(3, { slot_lag = 300 })
    local p = thorp.rpc.new_pool{ endpoints = sim:endpoints({ "a", "b", "c" }) }
    assert.is_true(eventually(3000, function() return ep(p, "c").unhealthy_reason == "slot_lag" end))
    assert.is_true(ep(p, "c").lag >= 299)
    assert.is_true(ep(p, "a").healthy and ep(p, "b").healthy)
    p:stop_health()
  end)

  -- Critical calls, the retry budget and probes ------------------------------

  it("the retry budget never refuses a critical call an endpoint it has not tried", function()
    sim:fault(1, { status = 500 })
    sim:fault(2, { down = true })
    local p = pool{ retry_budget = 0 }
    local r = p:call("getBalance", { "w" }, { priority = "normal" })
    assert.is_false(r.ok)
    assert.truthy(r.error.message:find("retry budget exhausted", 1, true), r.error.message)
    for _ = 1, 5 do
      r = p:call("getBalance", { "w" }, { priority = "critical" })
      assert.is_true(r.ok, r.error and r.error.message)
      assert.are.equal("c", r.endpoint)
    end
  end)

  it("before a critical call fails, open endpoints are probed and a good answer closes the breaker", function()
    local p = pool{ breaker = { failure_threshold = 5, cooldown_ms = 60000 } }
    p.eps[1].breaker:trip()
    p.eps[2].breaker:trip()
    sim:fault(3, { status = 503 })
    local r = p:call("getBalance", { "w" }, { priority = "normal" })
    assert.is_false(r.ok)                                   -- a normal call gives up
    r = p:call("getBalance", { "w" }, { priority = "critical" })
    assert.is_true(r.ok, r.error and r.error.message)
    assert.are.equal(2, r.attempts)                         -- c, then the open one due soonest
    local other = r.endpoint == "a" and "b" or "a"
    assert.are.equal("CLOSED", ep(p, r.endpoint).state)
    assert.are.equal("OPEN", ep(p, other).state)
  end)

  it("cascade: 5 rounds in a row with 0 failed critical calls while faults switch every half second", function()
    local p = sim:cascade_pool()
    assert.is_truthy(p.health_timer, "a new_pool checks its endpoints by default")
    assert.is_true(eventually(2000, function() return p.eps[1].slot and p.eps[2].slot and p.eps[3].slot end))
    local st = sim:cascade(500)
    assert.are.equal("hang", st.fault)
    local per_round, lagged = {}, false
    local ok, err = pcall(function()
      for round = 1, 5 do
        local failed, errs, lag, gap = simm.cascade_round(p, 450, 300)
        per_round[round] = failed
        lagged = lagged or lag
        assert.are.equal(0, failed, ("round %d (loop ticks up to %d ms apart): %s"):format(round, gap,
          table.concat(errs, " | ")))
      end
    end)
    sim:cascade(0)
    p:stop_health()
    assert(ok, err)
    assert.is_true(lagged, "an endpoint 300 slots behind never left rotation")
    assert.are.same({ 0, 0, 0, 0, 0 }, per_round)
  end)

  -- Insane answers ---------------------------------------------------------------

  local shapes = {
    { "result and error (error a number)", '{"jsonrpc":"2.0","id":$id,"result":1,"error":5}' },
    { "error a number", '{"jsonrpc":"2.0","id":$id,"error":17}' },
    { "error a string", '{"jsonrpc":"2.0","id":$id,"error":"boom"}' },
    { "error an array", '{"jsonrpc":"2.0","id":$id,"error":[1,2]}' },
    { "error without a code", '{"jsonrpc":"2.0","id":$id,"error":{"message":"x"}}' },
    { "error code a string", '{"jsonrpc":"2.0","id":$id,"error":{"code":"-32000","message":"x"}}' },
    { "neither result nor error", '{"jsonrpc":"2.0","id":$id}' },
    { "an array for a single call", '[{"jsonrpc":"2.0","id":$id,"result":7}]' },
    { "an empty array", '[]' },
    { "an empty object", '{}' },
    { "a wrong id", '{"jsonrpc":"2.0","id":987654321,"result":7}' },
    { "the id as a string", '{"jsonrpc":"2.0","id":"$id","result":7}', 'wrong id "' },
    { "no id", '{"jsonrpc":"2.0","result":7}', "wrong id missing" },
    { "a bare number", '31337' },
    { "a bare string", '"ok"' },
    { "null", 'null', "not a JSON object" },
    { "not JSON", '<html><body>Bad Gateway</body></html>' },
    { "truncated JSON", '{"jsonrpc":"2.0","id":$id,"result":{"value":' },
  }
  for _, sh in ipairs(shapes) do
    it("an answer with " .. sh[1] .. " is BAD_RESPONSE, counts against the endpoint and fails over", function()
      sim:fault(1, { body = sh[2] })
      local p = pool{ breaker = { failure_threshold = 2 } }
      local r = p:call("getBalance", { "w" })
      assert.is_true(r.ok, r.error and r.error.message)
      assert.are.equal("b", r.endpoint)
      assert.are.equal(1500000000, r.result.value)
      assert.are.equal(1, ep(p, "a").errors.BAD_RESPONSE)
      r = p:call("getBalance", { "w" }, { endpoint = "a" })
      assert.is_false(r.ok)
      assert.are.equal("BAD_RESPONSE", r.error.code)
      assert.truthy(r.error.message:find("malformed JSON-RPC answer: " .. (sh[3] or ""), 1, true), r.error.message)
      assert.are.equal("OPEN", ep(p, "a").state)
    end)
  end

  it("absurd nesting is BAD_RESPONSE, batches with insane elements too; error = null beside a result is fine", function()
    sim:fault(1, { nest = 200000 })
    local p = pool()
    local r = p:call("getBalance", { "w" }, { endpoint = "a" })
    assert.are.equal("BAD_RESPONSE", r.error.code)
    assert.are.equal("b", p:call("getBalance", { "w" }).endpoint)
    sim:fault(1, { nest = 0, body = '[{"jsonrpc":"2.0","id":$id,"error":5}]' })
    r = p:batch({ { "getSlot" }, { "getBalance", { "w" } } })
    assert.is_true(r.ok, r.error and r.error.message)
    assert.are.equal("b", r.endpoint)
    assert.are.equal(3, ep(p, "a").errors.BAD_RESPONSE)
    sim:fault(2, { body = '{"jsonrpc":"2.0","id":$id,"result":42,"error":null}' })
    r = p:call("getBalance", { "w" }, { endpoint = "b" })
    assert.is_true(r.ok)
    assert.are.equal(42, r.result)
  end)

  -- Retry-After -----------------------------------------------------------------

  it("parses Retry-After as delta-seconds or an HTTP-date; garbage is -1", function()
    local date = 784111777 * 1000 -- Sun, 06 Nov 1994 08:49:37 GMT
    local function parse(s, wall) return C.thorp_pool_parse_retry_after(s, #s, wall or date) end
    local cases = {
      { "3", 3000 }, { " 12 ", 12000 }, { "0", 0 }, { "0007", 7000 }, { "99999999", 99999999000 },
      { string.rep("9", 40), 1e12 },
      { "inf", -1 }, { "Infinity", -1 }, { "1e400", -1 }, { "-5", -1 }, { "1.5", -1 }, { "", -1 },
      { "soon", -1 }, { "nan", -1 }, { "0x10", -1 }, { "5 s", -1 },
      { "Sun, 06 Nov 1994 08:50:07 GMT", 30000 }, { "Sunday, 06-Nov-94 08:50:17 GMT", 40000 },
      { "Sun Nov  6 08:50:27 1994", 50000 }, { "Sun, 06 Nov 1994 08:00:00 GMT", 0 },
      { "Sun, 06 Nov 1994 08:50:07 PST", -1 }, { "Sun, 32 Nov 1994 08:50:07 GMT", -1 },
    }
    for _, c in ipairs(cases) do assert.are.equal(c[2], parse(c[1]), "Retry-After: " .. c[1]) end
  end)

  it("clamps Retry-After to max_retry_after_ms (default 30 s), reads HTTP-dates, and logs sane numbers", function()
    local p = pool{ max_retry_after_ms = 5000 }
    local function backoff(f)
      sim:fault(1, f)
      local r = p:call("getSlot", {}, { endpoint = "a" })
      assert.are.equal(429, r.error.http_status)
      assert.is_nil(r.error.message:find("e+", 1, true))
      assert.is_nil(r.error.message:find("-", 1, true), r.error.message)
      local ms = ep(p, "a").rate_limited_ms
      p.eps[1].backoff_until, p.eps[1].backoff_n = 0, 0
      return ms, r.error.retry_after_ms
    end
    local ms, ra = backoff{ status = 429, retry_after = 99999999 }
    assert.is_true(ms > 4500 and ms <= 5000, tostring(ms))
    assert.are.equal(5000, ra)
    ms = backoff{ retry_after_raw = "inf" }                   -- garbage: exponential from 250 ms
    assert.is_true(ms > 0 and ms <= 250, tostring(ms))
    ms = backoff{ retry_after_raw = "1e400" }
    assert.is_true(ms > 0 and ms <= 250, tostring(ms))
    ms = backoff{ retry_after_raw = "", retry_after_date = 3 }
    assert.is_true(ms > 1000 and ms <= 3000, tostring(ms))
    ms = backoff{ retry_after_date = -30 }                    -- a date in the past: no wait
    assert.are.equal(0, ms)
    local d = pool()
    sim:fault(1, { status = 429, retry_after = 99999999 })
    d:call("getSlot", {}, { endpoint = "a" })
    assert.is_true(ep(d, "a").rate_limited_ms <= 30000)
    assert.has_error(function() pool{ max_retry_after_ms = -1 } end)
  end)

  -- Slot: one liar -----------------------------------------------------------------

  it("one endpoint claiming a slot far ahead does not take the others out of rotation", function()
    sim:fault(1, { slot_lag = -5000000 })
    sim:fault(3, { slot_lag = 250 })
    local p = pool{ health = true, health_interval_ms = 30, max_slot_lag = 20 }
    assert.is_true(eventually(2000, function() return ep(p, "c").unhealthy_reason == "slot_lag" end))
    assert.is_true(eventually(1000, function() local a = ep(p, "a") return a.lag and a.lag < -4000000 end))
    for _ = 1, 5 do                                          -- several checks later, b is still in
      local n = sim:stats(2).get_slot
      assert.is_true(eventually(1000, function() return sim:stats(2).get_slot > n end))
      assert.is_true(ep(p, "b").healthy, "b taken out by the liar")
      assert.is_true(math.abs(ep(p, "b").lag) <= 2)
    end
    assert.is_true(ep(p, "c").lag >= 249)
    p:stop_health()
  end)

  -- Submission methods ---------------------------------------------------------------

  it("a 5xx to sendTransaction is never re-sent, whatever the status", function()
    local p = pool()
    for _, status in ipairs{ 500, 502, 503, 504, 429 } do
      sim:fault(1, { status = status })
      local r = p:call("sendTransaction", { "TX" .. status })
      assert.is_false(r.ok)
      assert.are.equal(status, r.error.http_status)
      assert.are.equal(1, r.error.attempts)
    end
    assert.are.equal(0, sim:stats(2).send_transaction + sim:stats(3).send_transaction)
  end)

  it("submission methods (sendTransaction, sendBundle, methods.submit) are never hedged, batched or re-sent", function()
    sim:fault(1, { latency_ms = 400 })
    local p = pool{ hedge_ms = 20, auto_batch = true, methods = { submit = { "submitOrder" } } }
    for _, m in ipairs{ "sendTransaction", "sendBundle", "submitOrder" } do
      local r = p:call(m, { "TX" }, { timeout_ms = 200 })
      assert.are.equal("TIMEOUT", r.error.code, m)
      assert.are.equal(1, r.error.attempts, m)
    end
    assert.are.equal(0, sim:stats(2).requests + sim:stats(3).requests)
    assert.is_true(p:call("getSlot", {}, { timeout_ms = 1000 }).ok)  -- a read is hedged
    assert.is_true(sim:stats(2).requests >= 1)
    sim:fault(1, { latency_ms = 0 })
    local done = 0
    for i = 1, 6 do
      thorp.spawn(function() p:call(i % 2 == 0 and "sendBundle" or "submitOrder", { "B" .. i }) done = done + 1 end)
    end
    assert.is_true(eventually(2000, function() return done == 6 end))
    assert.are.equal(0, sim:stats(1).batches)
    thorp.rpc.set_methods{ submit = { "placeOrder" } }        -- the policy's list reaches every pool
    assert.is_true(thorp.rpc.is_submit("placeOrder"))
    thorp.rpc.set_methods{}
    assert.is_false(thorp.rpc.is_submit("placeOrder"))
    assert.is_true(thorp.rpc.is_submit("sendBundle"))
  end)

  -- Transport queueing ---------------------------------------------------------------

  it("time queued behind the transport's limit is not charged: many calls on a slow endpoint keep breakers closed", function()
    sim:fault(1, { latency_ms = 150 })
    local p = thorp.rpc.new_pool{ endpoints = { { name = "slow", url = sim.urls[1], max_inflight = 8 } },
                                  timeout_ms = 1000, health = false, breaker = { failure_threshold = 2 } }
    local ok, timeouts, other, done, peak = 0, 0, {}, 0, 0
    local n = 120
    for _ = 1, n do
      thorp.spawn(function()
        local r = p:call("getBalance", { "w" }, { priority = "critical" })
        if r.ok then ok = ok + 1 elseif r.error.code == "TIMEOUT" then timeouts = timeouts + 1
        else other[#other + 1] = r.error.code end
        done = done + 1
      end)
    end
    assert.is_true(eventually(5000, function()
      peak = math.max(peak, p.eps[1].inflight)
      return done == n
    end))
    assert.are.same({}, other)
    assert.is_true(peak <= 8, "in flight " .. peak)
    assert.is_true(ok >= 40, "ok " .. ok)                    -- ~8 per 150 ms for 1 s
    assert.is_true(timeouts > 0)                             -- 120 cannot all fit: the rest waited, unjudged
    local e = p:endpoints()[1]
    assert.are.equal("CLOSED", e.state)
    assert.are.equal(0, e.consecutive_failures)
    assert.are.equal(0, e.queued)
    assert.are.equal(0, e.inflight)
  end)

  it("past an endpoint's transfer queue, non-critical calls are refused at once (TRANSPORT_SATURATED)", function()
    sim:fault(1, { latency_ms = 100 })
    local p = thorp.rpc.new_pool{ endpoints = { { name = "slow", url = sim.urls[1], max_inflight = 2 } },
                                  max_queued = 3, health = false }
    local res, done = {}, 0
    for i = 1, 10 do
      thorp.spawn(function() res[i] = p:call("getSlot", {}, { priority = i <= 8 and "normal" or "critical" }) done = done + 1 end)
    end
    assert.is_true(eventually(3000, function() return done == 10 end))
    local ok, refused = 0, 0
    for i = 1, 10 do
      if res[i].ok then ok = ok + 1
      else
        assert.are.equal("TRANSPORT_SATURATED", res[i].error.reason)
        assert.are.equal("BACKPRESSURE_REJECTED", res[i].error.code)
        refused = refused + 1
      end
    end
    assert.are.equal(7, ok)                                 -- 2 in flight + 3 queued + 2 critical
    assert.are.equal(3, refused)
    assert.is_true(res[9].ok and res[10].ok)
    assert.has_error(function() thorp.rpc.new_pool{ endpoints = { { name = "x", url = sim.urls[1], max_inflight = 0 } } } end)
    assert.has_error(function() thorp.rpc.new_pool{ endpoints = sim:endpoints(), max_inflight = 100000 } end)
  end)

  -- Routing ---------------------------------------------------------------------------

  it("-32601 from one provider tries the next and is remembered per (endpoint, method)", function()
    sim:fault(1, { missing_method = "getVersion" })
    local p = pool{ breaker = { failure_threshold = 1 } }
    local r = p:call("getVersion")
    assert.is_true(r.ok, r.error and r.error.message)
    assert.are.equal("b", r.endpoint)
    assert.are.equal(2, r.attempts)
    r = p:call("getVersion")
    assert.are.equal("b", r.endpoint)
    assert.are.equal(1, r.attempts)
    assert.are.equal("a", p:call("getSlot").endpoint)       -- other methods still go to a
    local a = ep(p, "a")
    assert.are.same({ "getVersion" }, a.unsupported_methods)
    assert.are.equal("CLOSED", a.state)
    assert.are.equal(0, a.failures)
    r = p:call("getNothingSuch", {}, { priority = "low" }) -- missing everywhere: the caller's error
    assert.are.equal("RPC_ERROR", r.error.code)
    assert.are.equal(-32601, r.error.rpc_code)
    local before = sim:stats(1).requests
    r = p:call("getNothingSuch")
    assert.are.equal(-32601, r.error.rpc_code)
    assert.are.equal(before, sim:stats(1).requests)         -- remembered: nobody asked again
  end)

  it("a methods section pins a method to endpoints with its own timeout and priority", function()
    sim:fault(3, { latency_ms = 300 })
    local bp = thorp.backpressure.new{ max_queue_size = 10 }
    local p = pool{ backpressure = bp, methods = {
      getHealth = { endpoints = { "c" }, timeout_ms = 100, priority = "critical" },
      getVersion = { endpoints = { "b", "c" } } } }
    local t0 = thorp.now()
    local r = p:call("getHealth")
    assert.are.equal("TIMEOUT", r.error.code)
    assert.is_true(thorp.now() - t0 < 280)
    assert.are.equal(0, sim:stats(1).requests + sim:stats(2).requests)
    sim:fault(3, { latency_ms = 0 })
    assert.are.equal("c", p:call("getHealth").endpoint)
    assert.are.equal("b", p:call("getVersion").endpoint)
    for _ = 1, 10 do bp:try_acquire("normal") end
    assert.are.equal("BACKPRESSURE_REJECTED", p:call("getSlot").error.code)
    assert.is_true(p:call("getHealth").ok)                 -- critical by its route
    for _ = 1, 10 do bp:release("normal") end
    assert.has_error(function() pool{ methods = { getHealth = { endpoints = { "zz" } } } } end)
    assert.has_error(function() pool{ methods = { getHealth = { timeout = 5 } } } end)
    assert.has_error(function() pool{ methods = { submit = "sendBundle" } } end)
  end)

  it("the policy's methods section is validated with what is allowed and applied to the host's pool", function()
    local policy = require "thorp.policy"
    local errs = policy.validate({ methods = { getPriorityFeeEstimate = { endpoints = { "helius" }, timeout_ms = 0,
                                                                          priority = "urgent", retries = 2 } } },
                                 "p.lua", { chainstack = true })
    local all = table.concat(errs, "\n")
    assert.truthy(all:find("p.lua: methods.getPriorityFeeEstimate.endpoints: no endpoint named helius", 1, true), all)
    assert.truthy(all:find("timeout_ms = 0", 1, true), all)
    assert.truthy(all:find("priority = urgent", 1, true), all)
    assert.truthy(all:find("unknown key retries", 1, true), all)
    assert.are.same({}, policy.validate({ methods = { getPriorityFeeEstimate = { endpoints = { "helius" },
      timeout_ms = 800, priority = "normal" }, submit = { "sendBundle" } } }, "p.lua", { helius = true }))
    -- applied by a load, merged across files (submit lists add up), cleared by a policy without it
    local function file(text)
      local name = os.tmpname() .. ".lua"
      local f = assert(io.open(name, "w"))
      f:write(text)
      f:close()
      return name
    end
    local a = file('return { methods = { submit = { "placeOrder" } } }')
    local b = file('return { methods = { submit = { "cancelOrder" }, getHealth = { timeout_ms = 50 } } }')
    local none = file('return {}')
    assert.is_true((policy.apply_files({ a, b })))
    assert.is_true(thorp.rpc.is_submit("placeOrder") and thorp.rpc.is_submit("cancelOrder"))
    assert.is_true((policy.apply_files({ none })))
    assert.is_false(thorp.rpc.is_submit("placeOrder"))
    for _, n in ipairs{ a, b, none } do os.remove(n) os.remove((n:gsub("%.lua$", ""))) end
  end)
end)
