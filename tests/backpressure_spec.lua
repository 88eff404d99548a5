-- Admission control (host/admission.c) through thorp.backpressure.
local thorp = require "thorp"
local backpressure = require "thorp.backpressure"
local wait_until = require("thorp.testing").wait_until

describe("backpressure", function()
  it("reports utilization before the request and the exact reasons", function()
    local bp = backpressure.new{ max_queue_size = 10, warning_threshold = 0.5, critical_threshold = 0.8 }
    for _ = 1, 5 do bp:try_acquire("normal") end
    local r = bp:try_acquire("low")
    assert.are.same({ accepted = false, reason = "WARNING_THRESHOLD_EXCEEDED", utilization = 50 }, r)
    assert.is_true(bp:try_acquire("normal").accepted)
    assert.is_true(bp:try_acquire("normal").accepted)
    assert.is_true(bp:try_acquire("normal").accepted)
    r = bp:try_acquire("normal")
    assert.are.equal("CRITICAL_OVERLOAD", r.reason)
    assert.are.equal(80, r.utilization)
    assert.are.equal("CRITICAL", bp:stats().status)
  end)

  it("never refuses anything below the warning threshold", function()
    local bp = backpressure.new{ max_queue_size = 100 }
    for _ = 1, 60 do bp:try_acquire("critical") end   -- teach it a large critical demand
    for _ = 1, 60 do bp:release("critical") end
    for i = 1, 80 do assert.is_true(bp:try_acquire("low").accepted, "low " .. i) end
  end)

  it("keeps room for observed critical demand above the warning threshold", function()
    local bp = backpressure.new{ max_queue_size = 100 }
    for _ = 1, 10 do bp:try_acquire("critical") end   -- critical demand: 10 in flight
    for _ = 1, 70 do bp:try_acquire("normal") end
    local r
    repeat r = bp:try_acquire("normal") until not r.accepted
    assert.are.equal("RESERVED_FOR_CRITICAL", r.reason)
    local load = bp:stats().current_load
    assert.is_true(load <= 100 - 10, "load " .. load)
    for i = 1, 100 - load do assert.is_true(bp:try_acquire("critical").accepted, "critical " .. i) end
  end)

  it("exact release by priority; proportional without; never below zero", function()
    local bp = backpressure.new{ max_queue_size = 10 }
    bp:try_acquire("critical"); bp:try_acquire("low"); bp:try_acquire("low")
    bp:release("low")
    local s = bp:stats()
    assert.are.equal(2, s.current_load)
    assert.are.equal(1, s.by_priority.low.load)
    bp:release(); bp:release(); bp:release("normal")
    assert.are.equal(0, bp:stats().current_load)
  end)

  it("sheds most work but keeps >= 99% of critical in a 10x burst", function()
    local bp = backpressure.new{ max_queue_size = 200 }
    local crit, crit_ok = 0, 0
    for _ = 1, 50 do
      for _ = 1, 400 do
        local r = math.random()
        local p = r < 0.02 and "critical" or (r < 0.7 and "normal" or "low")
        local ok = bp:admit(p)
        if p == "critical" then crit = crit + 1; if ok then crit_ok = crit_ok + 1 end end
        if ok then thorp.timer.after(math.random() * 100, function() bp:release(p) end) end
      end
      thorp.sleep(10)
    end
    wait_until(function() return bp:stats().current_load == 0 end, 2000, "every admitted request released")
    local s = bp:stats()
    assert.is_true(crit_ok / crit >= 0.99, crit_ok .. "/" .. crit)
    assert.is_true(s.by_priority.low.rejected > s.by_priority.normal.rejected * 0.3)
    assert.are.equal(0, s.current_load)
  end)

  it("when disabled, admits everything and still counts", function()
    local bp = backpressure.new{ max_queue_size = 2, enabled = false }
    for _ = 1, 5 do assert.is_true(bp:try_acquire("low").accepted) end
    assert.are.equal(5, bp:stats().current_load)
    assert.are.equal(5, bp:stats().peak_load)
  end)

  it("rejects bad options and priorities with what is allowed", function()
    local ok, err = pcall(backpressure.new, { warning_threshold = 0.9, critical_threshold = 0.5 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("must not be above critical_threshold", 1, true))
    ok, err = pcall(backpressure.new, { max_queue_size = -1 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("max_queue_size: got -1, allowed: integer >= 1", 1, true))
    local bp = backpressure.new{}
    ok, err = pcall(bp.try_acquire, bp, "urgent")
    assert.is_false(ok)
    assert.truthy(tostring(err):find('backpressure:try_acquire: priority: got "urgent", allowed: critical, normal, low',
                                     1, true))
  end)

  it("the host instance follows the configuration, and is left as it was", function()
    local was = backpressure.default:stats()
    local function restore()
      backpressure.start{ backpressure = { max_queue_size = was.max_queue_size, enabled = was.enabled,
                                           warning_threshold = was.warning_threshold,
                                           critical_threshold = was.critical_threshold } }
    end
    finally(restore)
    backpressure.start{ backpressure = { max_queue_size = 3, warning_threshold = 0.5, critical_threshold = 0.9,
                                         enabled = true } }
    local st = backpressure.default:stats()
    assert.are.same({ 3, 0.5, 0.9 }, { st.max_queue_size, st.warning_threshold, st.critical_threshold })
    restore()
    st = backpressure.default:stats()
    assert.are.same({ was.max_queue_size, was.warning_threshold, was.critical_threshold, was.enabled },
                    { st.max_queue_size, st.warning_threshold, st.critical_threshold, st.enabled })
  end)
end)
