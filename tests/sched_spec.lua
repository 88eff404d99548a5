-- The scheduler: spawn, sleep, timers, errors, yields inside specs.
local thorp = require "thorp"
local sched = require "thorp.sched"

describe("scheduler", function()
  it("sleep suspends only the calling task", function()
    local order = {}
    thorp.spawn(function() thorp.sleep(30); order[#order + 1] = "slow" end)
    thorp.spawn(function() thorp.sleep(5); order[#order + 1] = "fast" end)
    thorp.sleep(60)
    assert.are.same({ "fast", "slow" }, order)
  end)

  it("sleep waits at least the asked time", function()
    local t0 = thorp.now()
    thorp.sleep(50)
    assert.is_true(thorp.now() - t0 >= 49.5)
  end)

  it("passes arguments to spawned functions and exposes results", function()
    local t = thorp.spawn(function(a, b) thorp.sleep(1); return a + b end, 2, 3)
    t:wait()
    assert.are.equal(5, t.results[2])
    assert.are.equal("done", t:status())
  end)

  it("timer.after fires once and timer.every repeats until cancelled", function()
    local once, ticks = 0, 0
    thorp.timer.after(10, function() once = once + 1 end)
    local tm = thorp.timer.every(5, function() ticks = ticks + 1 end)
    thorp.sleep(40)
    tm:cancel()
    local at_cancel = ticks
    thorp.sleep(20)
    assert.are.equal(1, once)
    assert.is_true(at_cancel >= 3, "ticks " .. at_cancel)
    assert.are.equal(at_cancel, ticks)
  end)

  it("a cancelled after-timer never fires", function()
    local fired = false
    local tm = thorp.timer.after(10, function() fired = true end)
    assert.is_true(tm:cancel())
    assert.is_false(tm:cancel())
    thorp.sleep(30)
    assert.is_false(fired)
  end)

  it("an error in a task is contained and recorded", function()
    local t = thorp.spawn_quiet and nil or sched.spawn_opts({ quiet = true }, function() error("kaboom") end)
    t:wait()
    assert.are.equal("failed", t:status())
    assert.matches("kaboom", tostring(t.error))
    assert.matches("stack traceback", t.traceback)
  end)

  it("a plain coroutine.yield gives the loop a turn", function()
    local ran = false
    thorp.spawn(function() ran = true end)
    coroutine.yield()
    assert.is_true(ran)
  end)

  it("a stale wake is ignored", function()
    local me = sched.current()
    local tok = sched.token(me)
    thorp.timer.after(5, function() sched.wake(me, "late", tok) end)
    sched.token(me) -- move on: tok is now stale
    local t2 = sched.token(me)
    thorp.timer.after(20, function() sched.wake(me, "right", t2) end)
    assert.are.equal("right", sched.suspend())
  end)

  it("sleep outside a task is an error that names the rule", function()
    local co = coroutine.create(function() return pcall(thorp.sleep, 1) end)
    local _, ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.matches("inside a thorp task", err)
  end)
end)
