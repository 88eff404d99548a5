-- Circuit breaker: the state machine (host/breaker.c) through its Lua face.
local thorp = require "thorp"
local breaker = require "thorp.breaker"
local wait_until = require("thorp.testing").wait_until

-- a condition for wait_until: the breaker's cooldown is over
local function half_open(b) return function() return b:state() == "HALF_OPEN" end end

local function fail() error("boom") end
local function ok() return "fine" end

describe("breaker", function()
  it("counts consecutive failures only; a success resets the count", function()
    local b = breaker.new{ name = "c", failure_threshold = 3 }
    b:call(fail); b:call(fail); b:call(ok); b:call(fail); b:call(fail)
    assert.are.equal("CLOSED", b:state())
    b:call(fail)
    assert.are.equal("OPEN", b:state())
    local s = b:stats()
    assert.are.equal(5, s.failures)
    assert.are.equal(1, s.successes)
    assert.are.equal(1, s.trips)
  end)

  it("returns what fn raised, and fn's results on success", function()
    local b = breaker.new{}
    local okv, a, c = b:call(function(x, y) return x + y, "two" end, 1, 2)
    assert.is_true(okv); assert.are.equal(3, a); assert.are.equal("two", c)
    local okf, err = b:call(function() error({ code = "MINE" }) end)
    assert.is_false(okf); assert.are.equal("MINE", err.code)
  end)

  it("rejects with CIRCUIT_OPEN, the breaker name and when to retry", function()
    local b = breaker.new{ name = "ep", failure_threshold = 1, cooldown_ms = 5000, jitter = 0 }
    b:call(fail)
    local okv, err = b:call(ok)
    assert.is_false(okv)
    assert.are.equal("CIRCUIT_OPEN", err.code)
    assert.are.equal("ep", err.breaker)
    assert.is_true(err.retry_in_ms > 4000 and err.retry_in_ms <= 5000)
    assert.are.equal(1, b:stats().rejected)
  end)

  it("doubles the cooldown after each failed probe, up to max_cooldown_ms", function()
    local b = breaker.new{ failure_threshold = 1, cooldown_ms = 20, max_cooldown_ms = 50, jitter = 0 }
    b:call(fail)
    assert.are.equal(20, b:stats().cooldown_ms)
    wait_until(half_open(b), 1000, "HALF_OPEN"); b:call(fail) -- probe fails
    assert.are.equal(40, b:stats().cooldown_ms)
    wait_until(half_open(b), 1000, "HALF_OPEN"); b:call(fail)
    assert.are.equal(50, b:stats().cooldown_ms)   -- capped
    wait_until(half_open(b), 1000, "HALF_OPEN"); b:call(ok)
    assert.are.equal("CLOSED", b:state())
    b:call(fail)
    assert.are.equal(20, b:stats().cooldown_ms)   -- back to the base after closing
  end)

  it("jitter never retries early and spreads breakers apart", function()
    local opened = {}
    for i = 1, 20 do
      local b = breaker.new{ failure_threshold = 1, cooldown_ms = 1000, jitter = 0.5 }
      b:call(fail)
      opened[i] = b:retry_in()
      assert.is_true(opened[i] >= 999 and opened[i] <= 1500, tostring(opened[i]))
    end
    table.sort(opened)
    assert.is_true(opened[20] - opened[1] > 10, "retries are spread")
  end)

  it("limits half-open trial calls and times out a probe that never answers", function()
    local b = breaker.new{ failure_threshold = 1, cooldown_ms = 10, jitter = 0, half_open_max_calls = 1,
                           half_open_timeout_ms = 50 }
    b:call(fail)
    wait_until(half_open(b), 1000, "HALF_OPEN")
    assert.is_true(b:allow())        -- the one trial
    assert.is_false(b:allow())       -- no second trial
    assert.are.equal("HALF_OPEN", b:state())
    -- the trial never reports back: after half_open_timeout_ms it counts as failed
    wait_until(function() return b:state() == "OPEN" end, 1000, "OPEN after the trial timeout")
  end)

  it("neutral outcomes neither trip nor reset, and free a trial slot", function()
    local b = breaker.new{ failure_threshold = 2, cooldown_ms = 10, jitter = 0 }
    assert.is_true(b:allow()); b:failure()
    assert.is_true(b:allow()); b:neutral()
    assert.is_true(b:allow()); b:failure()
    assert.are.equal("OPEN", b:state())
    wait_until(half_open(b), 1000, "HALF_OPEN")
    assert.is_true(b:allow()); b:neutral()
    assert.is_true(b:allow())        -- slot came back
  end)

  it("trips on the failure-rate window as well", function()
    local b = breaker.new{ failure_threshold = 100, failure_rate = 0.5, rate_min_calls = 10 }
    for i = 1, 20 do
      if b:state() == "OPEN" then break end
      b:call(i % 2 == 0 and fail or ok)
    end
    assert.are.equal("OPEN", b:state())
  end)

  it("trip() and reset() force the state and tell listeners", function()
    local b = breaker.new{ name = "l" }
    local seen = {}
    b:on_change(function(_, from, to) seen[#seen + 1] = from .. ">" .. to end)
    b:trip(); b:reset()
    assert.are.same({ "CLOSED>OPEN", "OPEN>CLOSED" }, seen)
  end)

  it("bulkhead: waits for a slot, then fails with BULKHEAD_FULL past max_waiting or max_wait_ms", function()
    local b = breaker.new{ max_concurrent = 1, max_waiting = 1, max_wait_ms = 30 }
    local results = {}
    for i = 1, 3 do
      thorp.spawn(function()
        local okv, err = b:call(function() thorp.sleep(20); return i end)
        results[i] = okv and "ok" or err.code
      end)
    end
    wait_until(function() return results[1] and results[2] and results[3] end, 2000, "three results")
    assert.are.same({ "ok", "ok", "BULKHEAD_FULL" }, results)
    local slow = breaker.new{ max_concurrent = 1, max_wait_ms = 10 }
    thorp.spawn(function() slow:call(function() thorp.sleep(50) end) end)
    wait_until(function() return slow.inflight == 1 end, 1000, "the first call in flight")
    local okv, err = slow:call(ok)
    assert.is_false(okv); assert.are.equal("BULKHEAD_FULL", err.code)
    assert.are.equal(1, slow:stats().bulkhead_rejected)
  end)

  it("rejects bad options naming the option and what is allowed", function()
    local okv, err = pcall(breaker.new, { failure_threshold = 0 })
    assert.is_false(okv)
    assert.truthy(tostring(err):find("failure_threshold: got 0, allowed: integer >= 1", 1, true))
    okv, err = pcall(breaker.new, { cooldown = 5 })
    assert.is_false(okv)
    assert.truthy(tostring(err):find([[unknown option "cooldown"]], 1, true))
  end)
end)
