-- RPC pool against the bundled simulator: classification, failover, 429,
-- sendTransaction safety, hedging, slot-lag health, batches, secrets.
local thorp = require "thorp"
local simm = require "helpers.sim"

describe("rpc pool", function()
  local sim
  setup(function() sim = simm.start(3) end)
  teardown(function() sim:stop() end)
  before_each(function() sim:reset() end)

  local function pool(opts)
    opts = opts or {}
    opts.endpoints = opts.endpoints or sim:endpoints({ "a", "b", "c" })
    opts.timeout_ms = opts.timeout_ms or 2000
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
    local refused = pool{ endpoints = { { name = "closed", url = "http://127.0.0.1:9" }, { name = "b", url = sim.urls[2] } } }
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
    thorp.sleep(250)
    local a = ep(p, "a")
    assert.is_false(a.healthy)
    assert.are.equal("slot_lag", a.unhealthy_reason)
    assert.is_true(a.lag >= 99)
    assert.are.equal("b", p:call("getSlot").endpoint)
    sim:fault(1, { slot_lag = 0 })
    thorp.sleep(300)
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
    thorp.sleep(100)
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
    thorp.sleep(150)
    assert.are.equal(12, ok)
    assert.are.equal(3, sim:stats(2).batches)               -- 12 calls, at most 5 per batch
  end)

  -- One of three endpoints failing in each way the simulator knows: 1,000
  -- critical calls (50 at a time) all succeed.
  local faults = {
    { "dead", { down = true } },
    { "hanging", { hang = true } },
    { "429 with Retry-After 2", { status = 429, retry_after = 2 } },
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
      local a = p:endpoints()[1]
      if f[1] == "429 with Retry-After 2" then
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
    local p = thorp.rpc.new_pool{ endpoints = { { name = "k", url = sim.urls[1] .. "/?api-key=SUPERSECRET99" } } }
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
end)
