-- The signal bus (thorp.bus): ordering, reordering, isolation, quarantine,
-- limits, stats, liveness holds and argument errors.
local thorp = require "thorp"
local sched = require "thorp.sched"
local busm = require "thorp.bus"

-- A few loop turns: enough for the dispatcher and the workers to run.
local function turns(n) for _ = 1, n or 5 do coroutine.yield() end end

-- A gate a handler can park on until the test opens it.
local function gate()
  local g = {}
  function g.wait() g.task = sched.current(); sched.suspend() end
  function g.open() local t = g.task; g.task = nil; if t then sched.wake(t) end end
  return g
end

local function sub_stats(bus, name)
  for _, s in ipairs(bus:stats().subscribers) do if s.name == name then return s end end
end

local function collect(bus, topic, opts)
  local got = {}
  bus:subscribe(topic, function(ev) got[#got + 1] = type(ev) == "table" and (ev.v or ev.sequence) or ev end, opts)
  return got
end

describe("bus", function()
  it("delivers asynchronously, in publish order, with the topic passed to the handler", function()
    local bus = busm.new{}
    local got, topics = {}, {}
    bus:subscribe("t", function(ev, topic) got[#got + 1] = ev; topics[topic] = true end)
    for i = 1, 5 do assert.is_true(bus:publish("t", i)) end
    assert.are.same({}, got) -- not before a later loop turn
    turns()
    assert.are.same({ 1, 2, 3, 4, 5 }, got)
    assert.are.same({ t = true }, topics)
  end)

  it("holds an out-of-order event until the gap fills, without counting a gap", function()
    local bus = busm.new{ reorder_window_ms = 60000 }
    local got = collect(bus, "t")
    bus:publish("t", { sequence = 1 })
    bus:publish("t", { sequence = 3 })
    turns()
    assert.are.same({ 1 }, got)
    assert.are.equal(1, bus:stats().held)
    assert.are.equal(1, bus:stats().queued)
    bus:publish("t", { sequence = 2 })
    turns()
    assert.are.same({ 1, 2, 3 }, got)
    local st = bus:stats()
    assert.are.equal(0, st.reorder_gaps)
    assert.are.equal(0, st.held)
    assert.are.equal(4, st.topics.t.next_sequence)
  end)

  it("skips a gap once the reorder window passes and counts it", function()
    local bus = busm.new{ reorder_window_ms = 20 }
    local got = collect(bus, "t")
    bus:publish("t", { sequence = 1 })
    bus:publish("t", { sequence = 3 })
    bus:publish("t", { sequence = 4 })
    bus:publish("t", { sequence = 7 })
    thorp.sleep(80)
    assert.are.same({ 1, 3, 4, 7 }, got)
    local st = bus:stats()
    assert.are.equal(2, st.reorder_gaps)
    assert.are.equal(3, st.missing_sequences) -- 2, 5 and 6
    assert.are.equal(2, st.topics.t.reorder_gaps)
    assert.are.equal(0, st.queued)
    -- the sequence goes on from there
    bus:publish("t", { sequence = 8 })
    turns()
    assert.are.equal(8, got[5])
  end)

  it("drops duplicate and stale sequences and counts them", function()
    local bus = busm.new{ reorder_window_ms = 60000 }
    local got = collect(bus, "t")
    for _, s in ipairs{ 1, 2, 2, 1, 4, 4, 3 } do bus:publish("t", { sequence = s }) end
    turns()
    assert.are.same({ 1, 2, 3, 4 }, got)
    local st = bus:stats()
    assert.are.equal(3, st.duplicates)
    assert.are.equal(3, st.topics.t.duplicates)
    assert.are.equal(7, st.published)
    assert.are.equal(4, st.delivered)
  end)

  it("keeps a sequence per topic", function()
    local bus = busm.new{ reorder_window_ms = 60000 }
    local a, b = collect(bus, "a"), collect(bus, "b")
    bus:publish("a", { sequence = 1 })
    bus:publish("b", { sequence = 1 })
    bus:publish("b", { sequence = 2 })
    turns()
    assert.are.same({ 1 }, a)
    assert.are.same({ 1, 2 }, b)
    assert.are.equal(0, bus:stats().duplicates)
  end)

  it("gives each subscriber its events one at a time while the others go on", function()
    local bus = busm.new{}
    local g = gate()
    local slow, fast = {}, {}
    bus:subscribe("t", function(ev) slow[#slow + 1] = "start" .. ev; g.wait(); slow[#slow + 1] = "end" .. ev end,
                  { name = "slow" })
    bus:subscribe("t", function(ev) fast[#fast + 1] = ev end, { name = "fast" })
    for i = 1, 3 do bus:publish("t", i) end
    turns()
    assert.are.same({ 1, 2, 3 }, fast)
    assert.are.same({ "start1" }, slow)
    assert.are.equal(2, sub_stats(bus, "slow").queued)
    assert.is_true(sub_stats(bus, "slow").busy)
    for _ = 1, 3 do g.open(); turns() end
    assert.are.same({ "start1", "end1", "start2", "end2", "start3", "end3" }, slow)
  end)

  it("never runs one subscriber's handler twice at once when it sleeps", function()
    local bus = busm.new{}
    local active, max_active, order = 0, 0, {}
    bus:subscribe("t", function(ev)
      active = active + 1
      if active > max_active then max_active = active end
      thorp.sleep(2)
      order[#order + 1] = ev
      active = active - 1
    end)
    for i = 1, 5 do bus:publish("t", i) end
    while #order < 5 do thorp.sleep(5) end
    assert.are.equal(1, max_active)
    assert.are.same({ 1, 2, 3, 4, 5 }, order)
  end)

  it("unsubscribes by object or name, after which events count as undelivered", function()
    local bus = busm.new{}
    local got = collect(bus, "t", { name = "x" })
    local sub = bus:find_subscriber("x")
    bus:publish("t", 1)
    turns()
    assert.is_true(bus:unsubscribe(sub))
    assert.is_false(bus:unsubscribe(sub))
    assert.is_false(bus:unsubscribe("x"))
    assert.is_nil(bus:find_subscriber("x"))
    bus:publish("t", 2)
    turns()
    assert.are.same({ 1 }, got)
    assert.are.equal(1, bus:stats().undelivered)
    collect(bus, "t", { name = "y" })
    assert.is_true(bus:unsubscribe("y"))
    assert.are.equal(0, bus:stats().subscriber_count)
  end)

  it("discards an unsubscribed subscriber's queued events and keeps holds balanced", function()
    local base = sched.pending().holds
    local bus = busm.new{}
    local g = gate()
    bus:subscribe("t", function() g.wait() end, { name = "s" })
    for i = 1, 4 do bus:publish("t", i) end
    turns()
    assert.are.equal(base + 4, sched.pending().holds) -- one running, three in the mailbox
    bus:unsubscribe("s")
    assert.are.equal(base + 1, sched.pending().holds)
    g.open()
    turns()
    assert.are.equal(base, sched.pending().holds)
    assert.are.equal(3, bus:stats().topics.t.delivered + 2) -- the running one finished
  end)

  it("refuses subscribers beyond max_subscribers with an error that says so", function()
    local bus = busm.new{ max_subscribers = 2 }
    bus:subscribe("a", function() end)
    bus:subscribe("b", function() end, { name = "b" })
    local ok, err = pcall(bus.subscribe, bus, "c", function() end)
    assert.is_false(ok)
    assert.matches("max_subscribers %(2%) reached", err)
    bus:unsubscribe("b")
    assert.is_truthy(bus:subscribe("c", function() end))
  end)

  it("rejects a duplicate subscriber name", function()
    local bus = busm.new{}
    bus:subscribe("a", function() end, { name = "n" })
    local ok, err = pcall(bus.subscribe, bus, "a", function() end, { name = "n" })
    assert.is_false(ok)
    assert.matches('named "n" already exists', err)
  end)

  it("counts events whose topic has no subscriber as undelivered and releases their holds", function()
    local base = sched.pending().holds
    local bus = busm.new{}
    for i = 1, 3 do bus:publish("nobody", i) end
    assert.are.equal(base + 3, sched.pending().holds)
    turns()
    local st = bus:stats()
    assert.are.equal(3, st.undelivered)
    assert.are.equal(3, st.topics.nobody.undelivered)
    assert.are.equal(0, st.queued)
    assert.are.equal(base, sched.pending().holds)
  end)

  it("delivers critical before normal before low, each in publish order", function()
    local bus = busm.new{}
    local got = collect(bus, "t")
    for i = 1, 3 do bus:publish("t", { v = "low" .. i }, "low") end
    for i = 1, 3 do bus:publish("t", { v = "normal" .. i }) end
    for i = 1, 2 do bus:publish("t", { v = "critical" .. i }, "critical") end
    turns()
    assert.are.same({ "critical1", "critical2", "normal1", "normal2", "normal3", "low1", "low2", "low3" }, got)
  end)

  it("lets a critical event overtake a busy subscriber's queued ones", function()
    local bus = busm.new{}
    local g = gate()
    local got = {}
    bus:subscribe("t", function(ev) got[#got + 1] = ev; if ev == "first" then g.wait() end end)
    bus:publish("t", "first")
    turns()
    bus:publish("t", "n1", "low")
    bus:publish("t", "n2")
    bus:publish("t", "c", "critical")
    turns()
    g.open()
    turns()
    assert.are.same({ "first", "c", "n2", "n1" }, got)
  end)

  it("uses the topic's priority from set_topic_priorities when publish gives none", function()
    local bus = busm.new{}
    local metrics, alerts = collect(bus, "metrics"), collect(bus, "alerts")
    bus:publish("metrics", "m-before") -- known before the map: later events take the new priority
    turns()
    assert.is_true(bus:set_topic_priorities{ alerts = "critical", metrics = "low" })
    bus:publish("metrics", "m-low")
    bus:publish("metrics", "m-normal", "normal") -- an explicit priority wins
    bus:publish("alerts", "a-normal", "normal")
    bus:publish("alerts", "a-critical")
    turns()
    assert.are.same({ "m-before", "m-normal", "m-low" }, metrics)
    assert.are.same({ "a-critical", "a-normal" }, alerts)
    local st = bus:stats()
    assert.are.equal("low", st.topics.metrics.priority)
    assert.are.equal("critical", st.topics.alerts.priority)
    bus:set_topic_priorities{}
    assert.are.equal("normal", bus:stats().topics.metrics.priority)
    assert.has_error(function() bus:set_topic_priorities{ x = "urgent" } end,
      'bus:set_topic_priorities: priority of topic "x" must be "critical", "normal" or "low" (got "urgent")')
  end)

  it("refuses a burst beyond max_queue_size and counts it", function()
    local bus = busm.new{ max_queue_size = 3 }
    collect(bus, "t")
    for i = 1, 3 do assert.is_true(bus:publish("t", i)) end
    local ok, reason = bus:publish("t", 4)
    assert.is_false(ok)
    assert.are.equal("QUEUE_FULL", reason)
    local st = bus:stats()
    assert.are.equal(1, st.dropped_events)
    assert.are.equal(1, st.topics.t.dropped)
    turns()
    assert.is_true(bus:publish("t", 5)) -- room again once dispatched
  end)

  it("bounds a subscriber's mailbox", function()
    local bus = busm.new{}
    local g = gate()
    bus:subscribe("t", function() g.wait() end, { name = "s", max_queue_size = 2 })
    for i = 1, 5 do bus:publish("t", i) end
    turns()
    local s = sub_stats(bus, "s")
    assert.are.equal(1, s.queued) -- 1 running, 2 queued, 3 to 5 over the bound
    assert.are.equal(3, s.dropped)
    assert.are.equal(3, bus:stats().mailbox_dropped)
    bus:unsubscribe("s")
    g.open()
  end)

  it("reports its figures in stats()", function()
    local bus = busm.new{}
    bus:subscribe("t", function(ev) if ev == "bad" then error("no") end end, { name = "s" })
    bus:publish("t", "good")
    bus:publish("t", "bad")
    bus:publish("u", "x")
    turns()
    local st = bus:stats()
    assert.are.equal(3, st.published)
    assert.are.equal(1, st.delivered)
    assert.are.equal(1, st.failures)
    assert.are.equal(1, st.undelivered)
    assert.are.equal(0, st.dropped_events)
    assert.are.equal(0, st.queued)
    assert.are.equal(0, st.duplicates)
    assert.are.equal(0, st.reorder_gaps)
    assert.are.equal(10000, st.max_queue_size)
    local t = st.topics.t
    assert.are.same({ 2, 1, 1, 0, 0, 1 }, { t.published, t.delivered, t.failures, t.dropped, t.queued, t.subscribers })
    assert.are.equal(1, st.topics.u.published)
    assert.are.equal(1, #st.subscribers)
    local s = st.subscribers[1]
    assert.are.same({ "s", "t", 1, 1, false, 0 }, { s.name, s.topic, s.delivered, s.failures, s.quarantined, s.queued })
  end)

  it("quarantines a failing subscriber, skips it, and lets it back on probation", function()
    local bus = busm.new{ quarantine_ms = 30 }
    local fail, calls = true, 0
    bus:subscribe("t", function() calls = calls + 1; if fail then error("down") end end,
                  { name = "s", max_failure_rate = 0.5 })
    for i = 1, 20 do bus:publish("t", i) end
    turns()
    local s = sub_stats(bus, "s")
    assert.are.equal(6, calls) -- 6 of the last 10 failed: over 0.5
    assert.is_true(s.quarantined)
    assert.are.equal(14, s.skipped)
    bus:publish("t", 21)
    turns()
    assert.are.equal(6, calls)
    assert.are.equal(15, sub_stats(bus, "s").skipped)
    thorp.sleep(40)
    fail = false
    bus:publish("t", 22)
    turns()
    assert.are.equal(7, calls)
    s = sub_stats(bus, "s")
    assert.is_false(s.quarantined)
    assert.is_true(s.probation)
    assert.are.equal(1, s.delivered)
    for i = 23, 40 do bus:publish("t", i) end
    turns()
    s = sub_stats(bus, "s")
    assert.is_false(s.probation)
    assert.are.equal(19, s.delivered)
  end)

  it("tolerates failures up to max_failure_rate", function()
    local bus = busm.new{}
    local n = 0
    bus:subscribe("t", function() n = n + 1; if n % 2 == 0 then error("every other") end end,
                  { name = "s", max_failure_rate = 0.5 })
    for i = 1, 40 do bus:publish("t", i) end
    turns()
    local s = sub_stats(bus, "s")
    assert.is_false(s.quarantined)
    assert.are.same({ 20, 20 }, { s.delivered, s.failures })
  end)

  it("replace_handler keeps the mailbox and lifts a quarantine", function()
    local bus = busm.new{}
    local g = gate()
    local old, new = {}, {}
    bus:subscribe("t", function(ev) old[#old + 1] = ev; g.wait() end, { name = "s" })
    for i = 1, 3 do bus:publish("t", i) end
    turns()
    assert.is_truthy(bus:replace_handler("s", function(ev) new[#new + 1] = ev end))
    g.open()
    turns()
    assert.are.same({ 1 }, old)
    assert.are.same({ 2, 3 }, new)
    local r, err = bus:replace_handler("nope", function() end)
    assert.is_nil(r)
    assert.matches('no subscriber named "nope"', err)
    -- quarantined, then fixed
    bus:replace_handler("s", function() error("x") end)
    for i = 1, 10 do bus:publish("t", i) end
    turns()
    assert.is_true(sub_stats(bus, "s").quarantined)
    bus:replace_handler("s", function(ev) new[#new + 1] = ev end)
    bus:publish("t", "fixed")
    turns()
    assert.is_false(sub_stats(bus, "s").quarantined)
    assert.are.equal("fixed", new[#new])
  end)

  it("find_subscriber finds by name and gives default names", function()
    local bus = busm.new{}
    local s = bus:subscribe("t", function() end, { name = "exec" })
    assert.are.equal(s, bus:find_subscriber("exec"))
    assert.is_nil(bus:find_subscriber("other"))
    local anon = bus:subscribe("t", function() end)
    assert.are.equal(anon, bus:find_subscriber(anon.name))
    assert.matches("^t#", anon.name)
  end)

  it("gives every delivery a request id", function()
    local bus = busm.new{}
    local ids = {}
    bus:subscribe("t", function() ids[#ids + 1] = busm.request_id(); assert(busm.request_id() == ids[#ids]) end)
    bus:publish("t", 1)
    bus:publish("t", 2)
    turns()
    assert.are.equal(2, #ids)
    assert.are.equal("string", type(ids[1]))
    assert.are_not.equal(ids[1], ids[2])
    assert.is_nil(busm.request_id()) -- not inside a delivery
  end)

  it("keeps thorp exec alive while a handler is still working", function()
    local base = sched.pending().holds
    local bus = busm.new{}
    local g = gate()
    bus:subscribe("t", function() g.wait() end)
    bus:publish("t", 1)
    turns()
    assert.are.equal(base + 1, sched.pending().holds)
    g.open()
    turns()
    assert.are.equal(base, sched.pending().holds)
  end)

  it("consults a backpressure object and releases what it acquired after dispatch", function()
    local acquired, released, allow = {}, {}, 2
    local bp = {
      try_acquire = function(_, p)
        if allow == 0 then return { accepted = false, reason = "QUEUE_FULL" } end
        allow = allow - 1
        acquired[#acquired + 1] = p
        return { accepted = true }
      end,
      release = function(_, p) released[#released + 1] = p end,
    }
    local bus = busm.new{ backpressure = bp }
    collect(bus, "t")
    assert.is_true(bus:publish("t", 1, "critical"))
    assert.is_true(bus:publish("t", 2, "low"))
    local ok, reason = bus:publish("t", 3)
    assert.is_false(ok)
    assert.are.equal("BACKPRESSURE_REJECTED", reason)
    assert.are.equal(1, bus:stats().dropped_events)
    assert.are.same({}, released)
    turns()
    assert.are.same({ "critical", "low" }, acquired)
    assert.are.same({ "critical", "low" }, released)
  end)

  it("close discards pending events and balances holds", function()
    local base = sched.pending().holds
    local bus = busm.new{ reorder_window_ms = 60000 }
    collect(bus, "t")
    bus:publish("t", { sequence = 5 })
    turns()
    bus:publish("t", "x")
    bus:close()
    assert.are.equal(base, sched.pending().holds)
    assert.is_false(bus:publish("t", "y"))
    turns()
    assert.are.equal(base, sched.pending().holds)
  end)

  it("the default bus is thorp.bus.default, configured by start(cfg)", function()
    assert.are.equal(busm.default, thorp.bus.default)
    local got = {}
    local sub = thorp.subscribe("spec.default", function(ev) got[#got + 1] = ev end)
    assert.is_true(thorp.publish("spec.default", "hi"))
    turns()
    assert.are.same({ "hi" }, got)
    thorp.bus.default:unsubscribe(sub)
    busm.start({ bus = { max_queue_size = 7, max_subscribers = 3, reorder_window_ms = 5 } }, "test")
    assert.are.equal(7, busm.default.max_queue_size)
    assert.are.equal(5, busm.default.reorder_window_ms)
    busm.start(nil, "test")
    assert.are.equal(10000, busm.default.max_queue_size)
  end)

  describe("argument errors name the argument and what is allowed", function()
    local bus = busm.new{}
    local cases = {
      { function() bus:publish(nil, 1) end, "bus:publish: topic must be a non-empty string (got nil)" },
      { function() bus:publish("", 1) end, 'bus:publish: topic must be a non-empty string (got "")' },
      { function() bus:publish("t", 1, "high") end,
        'bus:publish: priority must be "critical", "normal" or "low" (got "high")' },
      { function() bus:publish("t", { sequence = 0 }) end,
        "bus:publish: event.sequence must be an integer >= 1 or nil (got 0)" },
      { function() bus:publish("t", { sequence = "3" }) end,
        'bus:publish: event.sequence must be an integer >= 1 or nil (got "3")' },
      { function() bus:subscribe(5, function() end) end, "bus:subscribe: topic must be a non-empty string (got 5)" },
      { function() bus:subscribe("t", "f") end, 'bus:subscribe: handler must be a function (got "f")' },
      { function() bus:subscribe("t", function() end, { max_failure_rate = 2 }) end,
        "bus:subscribe: opts.max_failure_rate must be a number from 0 to 1 (got 2)" },
      { function() bus:subscribe("t", function() end, { nmae = "x" }) end,
        'bus:subscribe: unknown option "nmae" (allowed: failure_window, max_failure_rate, max_queue_size, '
          .. "name, quarantine_ms)" },
      { function() busm.new{ max_queue_size = 0 } end, "bus.new: max_queue_size must be an integer >= 1 (got 0)" },
      { function() busm.new{ reorder_window_ms = -1 } end,
        "bus.new: reorder_window_ms must be a number >= 0 (got -1)" },
      { function() busm.new{ backpressure = {} } end, "bus.new: backpressure must be an object with" },
      { function() busm.new(5) end, "bus.new: options must be a table or nil (got 5)" },
      { function() bus:configure{ max_subscribers = 1.5 } end,
        "bus:configure: max_subscribers must be an integer >= 1 (got 1.5)" },
      { function() bus:subscribe("t", function() end, { failure_window = 0 }) end,
        "bus:subscribe: opts.failure_window must be an integer from 1 to 10000 (got 0)" },
      { function() bus:replace_handler("x", 1) end, "bus:replace_handler: handler must be a function (got 1)" },
    }
    for i, c in ipairs(cases) do
      it("case " .. i .. ": " .. c[2], function()
        local ok, err = pcall(c[1])
        assert.is_false(ok)
        assert.is_truthy(tostring(err):find(c[2], 1, true), err)
      end)
    end
  end)
end)
