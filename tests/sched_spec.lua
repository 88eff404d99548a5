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

  -- The old bug, every time: a busy task holds the loop past both the
  -- spec's wake-up (T+5) and the next tick (T+10), so one turn wakes the
  -- spec first and spawns the tick's callback behind it; the spec cancels
  -- before that callback's task starts.
  local function hold_loop_until(t) thorp.spawn(function() while thorp.now() < t do end end) end

  it("cancel stops an interval callback already spawned in the same turn", function()
    for _ = 1, 5 do
      local ticks = 0
      local t0 = thorp.now()
      local tm = thorp.timer.every(10, function() ticks = ticks + 1 end)
      hold_loop_until(t0 + 12)
      thorp.sleep(5)
      assert.is_true(thorp.now() >= t0 + 12)   -- the tick was due in the same turn
      assert.is_true(tm:cancel())
      local at_cancel = ticks
      thorp.sleep(25)
      assert.are.equal(0, at_cancel)
      assert.are.equal(at_cancel, ticks)
    end
  end)

  it("a cancelled after-timer spawned in the same turn does not run", function()
    local fired = false
    local t0 = thorp.now()
    local tm = thorp.timer.after(10, function() fired = true end)
    hold_loop_until(t0 + 12)
    thorp.sleep(5)
    assert.is_true(tm:cancel())
    thorp.sleep(10)
    assert.is_false(fired)
  end)

  it("cancelled timers do not pile up in the heap", function()
    local before = sched.pending().timers
    for _ = 1, 100000 do thorp.timer.after(60000, function() end):cancel() end
    local p = sched.pending()
    assert.is_true(p.timers - before < 200, "heap entries " .. p.timers)
    local fired = 0
    local keep = thorp.timer.after(5, function() fired = fired + 1 end)
    for _ = 1, 1000 do thorp.timer.after(1, function() fired = fired + 100 end):cancel() end
    thorp.sleep(20)
    assert.are.equal(1, fired)
    assert.is_false(keep:cancel())
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
