-- The signal bus (thorp.bus): ordering, reordering, isolation, quarantine,
-- limits, eviction, stats (drops by reason, lanes, handler times), a
-- million-event run, liveness holds and argument errors.
local thorp = require "thorp"
local sched = require "thorp.sched"
local busm = require "thorp.bus"
local testing = require "thorp.testing"
local wait_until = testing.wait_until

-- A few loop turns (not wall-clock time): enough for the dispatcher and the
-- workers to run; used where a test checks what has (or has not) happened
-- once the bus had its turns. Waits for something to happen use wait_until.
local turns = testing.turns

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

-- publish refusals are error values { code, message }: compare their code
local function refusal(ok, e) return ok, e and e.code end

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
    wait_until(function() return #got == 4 end, 2000, "the held events after the reorder window")
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
    wait_until(function() return #order == 5 end, 2000, "five events")
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
      'bus:set_topic_priorities: priority of topic "x": got "urgent", allowed: critical, normal, low')
  end)

  it("refuses a burst beyond max_queue_size and counts it", function()
    local bus = busm.new{ max_queue_size = 3 }
    collect(bus, "t")
    for i = 1, 3 do assert.is_true(bus:publish("t", i)) end
    local ok, reason = bus:publish("t", 4)
    assert.is_false(ok)
    assert.are.equal("QUEUE_FULL", reason.code)
    assert.is_string(reason.message)
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

  it("a full mailbox loses its oldest events, lowest lane first, and only for that subscriber", function()
    local bus = busm.new{}
    local g = gate()
    local slow, fast = {}, {}
    bus:subscribe("t", function(ev) slow[#slow + 1] = ev; if ev == 0 then g.wait() end end,
                  { name = "slow", max_queue_size = 3 })
    bus:subscribe("t", function(ev) fast[#fast + 1] = ev end, { name = "fast" })
    bus:publish("t", 0)
    turns() -- slow is parked inside event 0
    bus:publish("t", "low1", "low")
    for i = 1, 3 do bus:publish("t", i) end
    turns()
    assert.are.same({ normal = 3, low = 0, critical = 0 }, sub_stats(bus, "slow").queued_by_lane)
    for i = 4, 5 do bus:publish("t", i) end
    turns()
    g.open()
    turns()
    assert.are.same({ 0, 3, 4, 5 }, slow) -- low1 went first, then the oldest normal ones
    assert.are.same({ 0, 1, 2, 3, "low1", 4, 5 }, fast)
    local s = sub_stats(bus, "slow")
    assert.are.same({ 3, 0 }, { s.dropped, s.queued })
    assert.are.equal(3, bus:stats().topics.t.dropped_by_reason.MAILBOX_FULL)
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
    wait_until(function() return sub_stats(bus, "s").quarantined_for_ms == 0 end, 2000, "the quarantine to end")
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
    assert.are.equal("BACKPRESSURE_REJECTED", reason.code)
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


  it("a million events through a bounded bus: memory stays flat, every event is accounted for", function()
    local base = sched.pending().holds
    local bus = busm.new{ max_queue_size = 10000 }
    local n1, n2, in_order = 0, 0, true
    bus:subscribe("t", function(ev) n1 = n1 + 1; if ev ~= n1 then in_order = false end end, { name = "fast1" })
    bus:subscribe("t", function() n2 = n2 + 1 end, { name = "fast2" })
    local slow_started = 0
    bus:subscribe("t", function()
      slow_started = slow_started + 1
      if slow_started % 50 == 0 then thorp.sleep(1) else coroutine.yield() end
    end, { name = "slow", max_queue_size = 100 })
    collectgarbage("collect")
    local mem0, mem_max = collectgarbage("count"), 0
    local N, accepted, refused, other = 1000000, 0, 0, 0
    local i = 0
    while i < N do
      for _ = 1, 2000 do -- twice what one dispatcher batch takes: the queue fills and refuses
        i = i + 1
        -- accepted events are numbered 1, 2, ... so the fast subscribers can check order
        local ok, reason = bus:publish("t", accepted + 1)
        if ok then accepted = accepted + 1
        elseif reason.code == "QUEUE_FULL" then refused = refused + 1
        else other = other + 1 end
      end
      coroutine.yield()
      if i % 100000 == 0 then
        collectgarbage("collect")
        mem_max = math.max(mem_max, collectgarbage("count") - mem0)
      end
    end
    wait_until(function() return n1 == accepted and n2 == accepted end, 20000, "the fast subscribers")
    collectgarbage("collect")
    local grown = collectgarbage("count") - mem0
    assert.is_true(mem_max < 1024, ("memory grew by %.0f KB during the run"):format(mem_max))
    assert.is_true(grown < 1024, ("memory grew by %.0f KB"):format(grown))
    assert.are.equal(0, other)
    assert.is_true(refused > 0 and accepted > 100000, ("accepted %d, refused %d"):format(accepted, refused))
    assert.is_true(in_order)
    local st = bus:stats()
    -- every publish: accepted (published) or refused (dropped_events, by reason)
    assert.are.equal(N, st.published + st.dropped_events)
    assert.are.same({ accepted, refused, refused }, { st.published, st.dropped_events, st.dropped_by_reason.QUEUE_FULL })
    assert.are.same({ 0, 0, 0 }, { st.queued, st.topics.t.queued, st.undelivered })
    -- every accepted event, for each subscriber: delivered, dropped (its mailbox bound), or still queued
    local subs = {}
    for _, s in ipairs(st.subscribers) do subs[s.name] = s end
    for _, name in ipairs{ "fast1", "fast2" } do
      assert.are.same({ accepted, 0, 0, 0 }, { subs[name].delivered, subs[name].dropped, subs[name].queued,
                                              subs[name].failures })
    end
    local slow = subs.slow
    assert.are.equal(accepted, slow.delivered + slow.dropped + slow.queued + (slow.busy and 1 or 0))
    assert.are.equal(slow_started, slow.delivered + (slow.busy and 1 or 0))
    assert.is_true(slow.delivered > 0 and slow.dropped > 0 and slow.queued <= 100)
    assert.are.equal(slow.dropped, st.topics.t.dropped_by_reason.MAILBOX_FULL)
    assert.are.equal(slow.dropped, st.mailbox_dropped)
    bus:unsubscribe("slow")
    wait_until(function() return sched.pending().holds == base end, 5000, "holds to balance")
  end)

  it("a handler that errors on every third event: the others are delivered, failures counted, no quarantine", function()
    local bus = busm.new{}
    local ok_events, all = {}, {}
    bus:subscribe("t", function(ev) if ev % 3 == 0 then error("third") end; ok_events[#ok_events + 1] = ev end,
                  { name = "flaky", max_failure_rate = 0.5 })
    bus:subscribe("t", function(ev) all[#all + 1] = ev end, { name = "other" })
    for i = 1, 30 do bus:publish("t", i) end
    turns()
    local want = {}
    for i = 1, 30 do if i % 3 ~= 0 then want[#want + 1] = i end end
    assert.are.same(want, ok_events)
    assert.are.equal(30, #all)
    local s = sub_stats(bus, "flaky")
    assert.are.same({ 20, 10, false, 0, 0 }, { s.delivered, s.failures, s.quarantined, s.quarantines, s.skipped })
    local st = bus:stats()
    assert.are.same({ 10, 10 }, { st.failures, st.topics.t.failures })
  end)

  it("a handler that yields inside (thorp.sleep) still gets every event, in order", function()
    local bus = busm.new{}
    local got, fast = {}, {}
    bus:subscribe("t", function(ev)
      if ev % 2 == 0 then thorp.sleep(1) else coroutine.yield() end
      got[#got + 1] = ev
    end, { name = "sleeper" })
    bus:subscribe("t", function(ev) fast[#fast + 1] = ev end, { name = "fast" })
    for i = 1, 20 do bus:publish("t", i) end
    turns(2)
    assert.are.equal(20, #fast) -- the sleeper does not hold the other subscriber up
    for i = 21, 40 do bus:publish("t", i); if i % 5 == 0 then thorp.sleep(1) end end
    wait_until(function() return #got == 40 end, 5000, "the sleeper")
    local want = {}
    for i = 1, 40 do want[i] = i end
    assert.are.same(want, got)
    assert.are.same(want, fast)
  end)

  it("evicts the oldest queued low event for a critical one when evict_low_for_critical is set", function()
    local bus = busm.new{ max_queue_size = 3, evict_low_for_critical = true }
    local got = collect(bus, "t")
    assert.is_true(bus:publish("t", "low1", "low"))
    assert.is_true(bus:publish("t", "low2", "low"))
    assert.is_true(bus:publish("t", "normal1"))
    assert.are.same({ false, "QUEUE_FULL" }, { refusal(bus:publish("t", "low3", "low")) })
    assert.are.same({ false, "QUEUE_FULL" }, { refusal(bus:publish("t", "normal2")) })
    assert.is_true(bus:publish("t", "crit1", "critical")) -- evicts low1
    assert.is_true(bus:publish("t", "crit2", "critical")) -- evicts low2
    assert.are.same({ false, "QUEUE_FULL" }, { refusal(bus:publish("t", "crit3", "critical")) }) -- no low left
    local st = bus:stats()
    assert.are.same({ critical = 2, normal = 1, low = 0 }, st.topics.t.queued_by_lane)
    assert.are.same({ QUEUE_FULL = 3, EVICTED = 2 }, st.topics.t.dropped_by_reason)
    assert.are.same({ 5, 5, 3 }, { st.dropped_events, st.topics.t.dropped, st.queued })
    turns()
    assert.are.same({ "crit1", "crit2", "normal1" }, got)
    -- off by default: a critical event is refused like any other
    local plain = busm.new{ max_queue_size = 1 }
    plain:publish("t", "low", "low")
    assert.are.same({ false, "QUEUE_FULL" }, { refusal(plain:publish("t", "crit", "critical")) })
  end)

  it("evicts a low event from a full mailbox for a critical one when evict_low_for_critical is set", function()
    local bus = busm.new{ evict_low_for_critical = true }
    local g = gate()
    local got = {}
    bus:subscribe("t", function(ev) got[#got + 1] = ev; if ev == "first" then g.wait() end end,
                  { name = "s", max_queue_size = 2 })
    bus:publish("t", "first")
    turns()
    bus:publish("t", "low1", "low")
    bus:publish("t", "low2", "low")
    turns()
    bus:publish("t", "crit", "critical") -- the mailbox is full
    turns()
    local s = sub_stats(bus, "s")
    assert.are.same({ critical = 1, normal = 0, low = 1 }, s.queued_by_lane)
    assert.are.equal(1, bus:stats().topics.t.dropped_by_reason.EVICTED)
    g.open()
    turns()
    assert.are.same({ "first", "crit", "low2" }, got)
  end)

  it("counts drops per topic by reason: shutting down, closed, duplicate, unsubscribed", function()
    local bus = busm.new{}
    local g = gate()
    bus:subscribe("t", function() g.wait() end, { name = "s" })
    bus:set_critical_only(true) -- what the host does when shutdown begins
    assert.are.same({ false, "SHUTTING_DOWN" }, { refusal(bus:publish("t", 1, "normal")) })
    assert.is_true(bus:publish("t", 2, "critical"))
    bus:set_critical_only(false)
    bus:publish("u", { sequence = 1 })
    bus:publish("u", { sequence = 1 })
    for i = 3, 5 do bus:publish("t", i) end
    turns()
    bus:unsubscribe("s") -- 3 queued in its mailbox
    g.open()
    bus:close()
    assert.are.same({ false, "CLOSED" }, { refusal(bus:publish("t", 6)) })
    local st = bus:stats()
    assert.are.same({ SHUTTING_DOWN = 1, UNSUBSCRIBED = 3, CLOSED = 1 }, st.topics.t.dropped_by_reason)
    assert.are.same({ DUPLICATE = 1 }, st.topics.u.dropped_by_reason)
    assert.are.same({ SHUTTING_DOWN = 1, UNSUBSCRIBED = 3, CLOSED = 1, DUPLICATE = 1 }, st.dropped_by_reason)
    assert.are.equal(2, st.dropped_events) -- refused by publish
  end)

  it("reports queued events by lane per topic and per mailbox", function()
    local bus = busm.new{}
    local g = gate()
    bus:subscribe("t", function() g.wait() end, { name = "s" })
    bus:publish("t", 0)
    turns()
    bus:publish("t", 1, "low")
    bus:publish("t", 2, "low")
    bus:publish("t", 3, "critical")
    local st = bus:stats()
    assert.are.same({ critical = 1, normal = 0, low = 2 }, st.topics.t.queued_by_lane)
    assert.are.same({ critical = 1, normal = 0, low = 2 }, st.queued_by_lane)
    assert.are.equal(3, st.topics.t.queued)
    turns()
    st = bus:stats()
    assert.are.same({ critical = 0, normal = 0, low = 0 }, st.topics.t.queued_by_lane)
    assert.are.same({ critical = 1, normal = 0, low = 2 }, st.subscribers[1].queued_by_lane)
    assert.are.equal(3, st.subscribers[1].queued)
    bus:unsubscribe("s")
    g.open()
  end)

  it("reports handler time percentiles and how long a busy handler has been running", function()
    local bus = busm.new{}
    local g = gate()
    bus:subscribe("slow", function(ev) if ev == "park" then g.wait() else thorp.sleep(3) end end, { name = "slow" })
    bus:subscribe("fast", function() end, { name = "fast" })
    for i = 1, 4 do bus:publish("slow", i) end
    for i = 1, 100 do bus:publish("fast", i) end
    wait_until(function() return sub_stats(bus, "slow").delivered == 4 end, 5000, "the slow handler")
    local h = sub_stats(bus, "slow").handler_ms
    assert.are.equal(4, h.samples) -- a slow handler is timed on every call
    assert.is_true(h.p50 >= 3 and h.p99 >= h.p50 and h.max >= h.p99, require("thorp.pretty").format(h))
    local f = sub_stats(bus, "fast")
    assert.are.equal(100, f.delivered)
    assert.is_true(f.handler_ms.samples >= 1 and f.handler_ms.samples <= 100)
    bus:publish("slow", "park")
    -- a parked handler shows as busy, for longer and longer
    wait_until(function() local s = sub_stats(bus, "slow"); return s.busy and s.busy_ms >= 5 end, 2000,
               "busy_ms of the parked handler to reach 5 ms")
    g.open()
    wait_until(function() return not sub_stats(bus, "slow").busy end, 2000, "the handler to finish")
  end)

  it("runs each subscriber's handler in a task named bus:<subscriber> (the watchdog reports that name)", function()
    local bus = busm.new{}
    local name
    local sub = bus:subscribe("t", function() name = sched.current().name end, { name = "executor" })
    assert.are.equal("bus:executor", sub.task.name)
    bus:publish("t", 1)
    turns()
    assert.are.equal("bus:executor", name)
  end)

  describe("argument errors name the argument, the value and what is allowed", function()
    local bus = busm.new{}
    local cases = {
      { function() bus:publish(nil, 1) end, "bus:publish: topic: got nil, allowed: a non-empty string" },
      { function() bus:publish("", 1) end, 'bus:publish: topic: got "", allowed: a non-empty string' },
      { function() bus:publish("t", 1, "high") end,
        'bus:publish: priority: got "high", allowed: critical, normal, low' },
      { function() bus:publish("t", { sequence = 0 }) end,
        "bus:publish: event.sequence: got 0, allowed: integer >= 1 or nil" },
      { function() bus:publish("t", { sequence = "3" }) end,
        'bus:publish: event.sequence: got "3", allowed: integer >= 1 or nil' },
      { function() bus:subscribe(5, function() end) end, "bus:subscribe: topic: got 5, allowed: a non-empty string" },
      { function() bus:subscribe("t", "f") end, 'bus:subscribe: handler: got "f", allowed: a function' },
      { function() bus:subscribe("t", function() end, { max_failure_rate = 2 }) end,
        "bus:subscribe: opts.max_failure_rate: got 2, allowed: number in [0, 1]" },
      { function() bus:subscribe("t", function() end, { nmae = "x" }) end,
        'bus:subscribe: unknown option "nmae" (allowed: failure_window, max_failure_rate, max_queue_size, '
          .. "name, quarantine_ms)" },
      { function() busm.new{ max_queue_size = 0 } end, "bus.new: max_queue_size: got 0, allowed: integer >= 1" },
      { function() busm.new{ reorder_window_ms = -1 } end,
        "bus.new: reorder_window_ms: got -1, allowed: number >= 0" },
      { function() busm.new{ backpressure = {} } end, "bus.new: backpressure: got table: " },
      { function() busm.new(5) end, "bus.new: options: got 5, allowed: a table or nil" },
      { function() busm.new{ evict_low_for_critical = "yes" } end,
        'bus.new: evict_low_for_critical: got "yes", allowed: true or false' },
      { function() bus:configure{ max_subscribers = 1.5 } end,
        "bus:configure: max_subscribers: got 1.5, allowed: integer >= 1" },
      { function() bus:subscribe("t", function() end, { failure_window = 0 }) end,
        "bus:subscribe: opts.failure_window: got 0, allowed: integer in [1, 10000]" },
      { function() bus:replace_handler("x", 1) end, "bus:replace_handler: handler: got 1, allowed: a function" },
      { function() bus:set_topic_priorities{ t = "urgent" } end,
        'bus:set_topic_priorities: priority of topic "t": got "urgent", allowed: critical, normal, low' },
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
