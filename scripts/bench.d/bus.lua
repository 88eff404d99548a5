-- Signal bus figures (docs/bus.md, issues 5 and 13). Run: LOG_LEVEL=warn ./thorp exec scripts/bench.d/bus.lua [part]
--  0. the realistic workload beside a bare Lua loop doing the same work, and
--     the memory held per queued event;
--  1. throughput: one Lua publisher -> 1 and -> 4 subscribers, publishing in
--     batches of 1000 between loop turns (plus: sequenced events, and a bus
--     with admission control like the host's default bus);
--  2. publish-to-handler latency p50/p99/p999 at 100,000 events/s offered
--     (1000 events every 10 ms, and 100 every 1 ms);
--  3. the same for the critical lane while low events are offered at 10x what
--     the subscriber can handle (its handler spends 10 us on each low event).
-- Latency is handler start minus the thorp.now() taken just before publish,
-- so it includes the rest of the publisher's burst.
io.stdout:setvbuf("line")
local tnew = require "table.new"
local N = tonumber(os.getenv("BUS_BENCH_EVENTS")) or 3000000
local CHUNK = 1000
local MAXLAT = 400000 -- latency samples kept (preallocated: growing the array would show as latency)

local function throughput(label, nsubs, opts)
  opts = opts or {}
  local bus = thorp.bus.new{ max_queue_size = 100000, backpressure = opts.bp }
  local got = 0
  for i = 1, nsubs do bus:subscribe("t", function() got = got + 1 end, { name = "s" .. i }) end
  local function run(n)
    got = 0
    local i = 0
    while i < n do
      for _ = 1, CHUNK do
        i = i + 1
        bus:publish("t", i)
      end
      coroutine.yield() -- a loop turn: the dispatcher and the workers drain
    end
    while got < n * nsubs do coroutine.yield() end
  end
  run(200000) -- warm up (JIT)
  local n = N
  local t0 = thorp.now()
  run(n)
  local ms = thorp.now() - t0
  print(("bus: %-44s %6.2f M events/s  (%6.2f M deliveries/s, %.0f ns/event)"):format(
    ("%s, %d subscriber%s:"):format(label, nsubs, nsubs == 1 and "" or "s"),
    n / ms / 1000, n * nsubs / ms / 1000, ms * 1e6 / n))
  bus:close()
end

-- Sequenced events allocate a table each: measure them on a fresh bus, warm.
local function throughput_seq()
  local bus = thorp.bus.new{ max_queue_size = 100000 }
  local got = 0
  bus:subscribe("t", function() got = got + 1 end)
  local seq = 0
  local function run(n)
    got = 0
    local i = 0
    while i < n do
      for _ = 1, CHUNK do i = i + 1; seq = seq + 1; bus:publish("t", { sequence = seq }) end
      coroutine.yield()
    end
    while got < n do coroutine.yield() end
  end
  run(200000)
  local n = N / 3
  local t0 = thorp.now()
  run(n)
  local ms = thorp.now() - t0
  print(("bus: %-44s %6.2f M events/s  (%.0f ns/event, a table per event)"):format(
    "sequenced, 1 subscriber:", n / ms / 1000, ms * 1e6 / n))
  bus:close()
end

local function pct(xs, n, p) return xs[math.max(1, math.ceil(n * p))] end
local function summary(label, lat, n, extra)
  table.sort(lat)
  print(("bus: %-44s p50 %6.1f us  p99 %6.1f us  p999 %7.1f us  max %7.1f us  (%d events%s)"):format(
    label, pct(lat, n, 0.5) * 1000, pct(lat, n, 0.99) * 1000, pct(lat, n, 0.999) * 1000, lat[n] * 1000, n,
    extra or ""))
end

-- `per_tick` events every `tick_ms` (catching up if the loop was late) for
-- `ms`, after one second of warm-up; returns the latencies, sorted by summary().
local function latency(label, per_tick, tick_ms, ms)
  collectgarbage()
  local bus = thorp.bus.new{}
  local lat, n, measuring = tnew(MAXLAT, 0), 0, false
  local now = thorp.now
  bus:subscribe("t", function(t0)
    if measuring and n < MAXLAT then n = n + 1; lat[n] = now() - t0 end
  end)
  local function offer(duration)
    local start, sent = now(), 0
    while now() - start < duration do
      local due = math.floor((now() - start) / tick_ms + 1) * per_tick
      while sent < due do
        for _ = 1, per_tick do bus:publish("t", now()) end
        sent = sent + per_tick
      end
      thorp.sleep(tick_ms - (now() - start) % tick_ms)
    end
    thorp.sleep(5)
  end
  offer(1000)
  measuring = true
  offer(ms)
  summary(label, lat, n)
  bus:close()
end

-- Critical events at 100,000/s (1 in 11 of what is offered) while low ones are
-- offered at 10x the subscriber's capacity: its handler spends 10 us on each
-- low event (capacity about 100,000 low/s), and 1,000,000 low/s are offered.
local function critical_under_overload(label, opts)
  collectgarbage()
  local bus = thorp.bus.new{ max_queue_size = 10000, evict_low_for_critical = opts.evict, backpressure = opts.bp }
  local lat, n, low_done, measuring = tnew(MAXLAT, 0), 0, 0, false
  local now = thorp.now
  bus:subscribe("t", function(ev)
    if type(ev) == "number" then
      if measuring and n < MAXLAT then n = n + 1; lat[n] = now() - ev end
    else
      local t = now()
      while now() - t < 0.01 do end -- 10 us of work
      low_done = low_done + 1
    end
  end, { name = "executor" })
  local LOW = {}
  local c_offered, c_refused, l_offered, l_refused = 0, 0, 0, 0
  local function offer(duration)
    local start, ticks = now(), 0
    while now() - start < duration do
      local due = math.floor(now() - start) + 1 -- 1 ms ticks
      while ticks < due do
        ticks = ticks + 1
        for _ = 1, 100 do -- per ms: 100 critical, each after 10 low
          for _ = 1, 10 do
            l_offered = l_offered + 1
            if not bus:publish("t", LOW, "low") then l_refused = l_refused + 1 end
          end
          c_offered = c_offered + 1
          if not bus:publish("t", now(), "critical") then c_refused = c_refused + 1 end
        end
      end
      thorp.sleep(1 - (now() - start) % 1)
    end
  end
  offer(500)
  local d0 = bus:stats().dropped_by_reason
  measuring, c_offered, c_refused, l_offered, l_refused, low_done = true, 0, 0, 0, 0, 0
  local t0 = now()
  offer(2000)
  local ms = now() - t0
  local d1 = bus:stats().dropped_by_reason
  local function delta(k) return (d1[k] or 0) - (d0[k] or 0) end
  bus:close()
  summary(label, lat, n, (", of %d critical offered: %d accepted, %d handled"):format(
    c_offered, c_offered - c_refused, n))
  print(("bus:   low: %.0f/s offered, %.0f/s handled; %.0f%% refused by publish, %.0f%% dropped from the full"
         .. " mailbox (%d MAILBOX_FULL, %d EVICTED)"):format(l_offered / ms * 1000, low_done / ms * 1000,
    l_refused / l_offered * 100, (delta("MAILBOX_FULL") + delta("EVICTED")) / l_offered * 100,
    delta("MAILBOX_FULL"), delta("EVICTED")))
end

-- The realistic workload (issue 13): each event a fresh table { n = i, t = thorp.now() }
-- published in batches of 1,000 with thorp.sleep(0) between batches, on a bus with
-- max_queue_size 10000, the subscribers counting. Beside it, in the same run, a bare
-- Lua loop that allocates the same tables and calls the same handler with no bus:
-- what the bus adds is the difference.
local REAL_N = tonumber(os.getenv("BUS_BENCH_REAL")) or 2000000
local function realistic(label, nsubs, sequenced)
  local now = thorp.now
  local got, last = 0, nil
  local function handler() got = got + 1 end
  local deliver = handler -- the bare loop calls the handler once per subscriber, as the bus does
  if nsubs > 1 then deliver = function(ev) for _ = 1, nsubs do handler(ev) end end end
  -- the bare loop keeps each event (as a queue would), or LuaJIT would sink its allocation
  local function bare(n)
    local i = 0
    while i < n do
      if sequenced then
        for _ = 1, CHUNK do i = i + 1; local ev = { n = i, t = now(), sequence = i }; last = ev; deliver(ev) end
      else
        for _ = 1, CHUNK do i = i + 1; local ev = { n = i, t = now() }; last = ev; deliver(ev) end
      end
      thorp.sleep(0)
    end
  end
  local bus = thorp.bus.new{ max_queue_size = 10000 }
  for k = 1, nsubs do bus:subscribe("t", handler, { name = "s" .. k }) end
  local seq = 0
  local function via_bus(n)
    local i = 0
    while i < n do
      if sequenced then
        for _ = 1, CHUNK do i = i + 1; seq = seq + 1; bus:publish("t", { n = i, t = now(), sequence = seq }) end
      else
        for _ = 1, CHUNK do i = i + 1; bus:publish("t", { n = i, t = now() }) end
      end
      thorp.sleep(0)
    end
    -- (bounded: an event lost to a full mailbox would otherwise make this wait forever)
    local t = now()
    while got < n * nsubs and now() - t < 10000 do thorp.sleep(0) end
  end
  -- wall ms and CPU ms (os.clock: the whole process, one thread; steadier than
  -- the wall clock when the machine is shared)
  local function timed(fn, n)
    collectgarbage()
    got = 0
    local t0, c0 = now(), os.clock()
    fn(n)
    return now() - t0, (os.clock() - c0) * 1000
  end
  timed(bare, REAL_N / 10); timed(via_bus, REAL_N / 10) -- warm up (JIT)
  local bare_ms, bare_cpu = timed(bare, REAL_N)
  local bus_ms, bus_cpu = timed(via_bus, REAL_N)
  local st = bus:stats()
  local drops = st.dropped_events + st.mailbox_dropped
  assert(last)
  bus:close()
  print(("bus: %-44s %6.2f M events/s, bare loop %6.2f M/s: bus %+4.0f%% over the bare loop"
         .. " (CPU: %.0f vs %.0f ns/event, %+.0f%%)%s"):format(
    label, REAL_N / bus_ms / 1000, REAL_N / bare_ms / 1000, (bus_ms / bare_ms - 1) * 100,
    bus_cpu * 1e6 / REAL_N, bare_cpu * 1e6 / REAL_N, (bus_cpu / bare_cpu - 1) * 100,
    drops > 0 and (" (%d dropped!)"):format(drops) or ""))
end

-- Memory held per queued event: events published and not yet routed (the bus
-- queue), then routed and not yet handled (a subscriber's mailbox: its topic's
-- delivery ring, shared by all the topic's subscribers). The event itself is
-- shared, so only the bus's own bookkeeping counts; the rings grow by
-- doubling, so this is what 10,000 queued events cost on a fresh bus.
local function bytes_per_event(label)
  local n = 10000
  local bus = thorp.bus.new{ max_queue_size = n }
  local gate, got = true, 0
  bus:subscribe("t", function() while gate do coroutine.yield() end got = got + 1 end)
  local ev = { n = 1 }
  bus:publish("t", ev); thorp.sleep(1) -- the worker is now parked inside the first event
  collectgarbage()
  local k0 = collectgarbage("count")
  for _ = 2, n do bus:publish("t", ev) end
  collectgarbage()
  local k1 = collectgarbage("count")
  thorp.sleep(1) -- the dispatcher moves them to the mailbox (the queue's rings stay grown)
  collectgarbage()
  local k2 = collectgarbage("count")
  gate = false
  while got < n do thorp.sleep(0) end
  bus:close()
  print(("bus: %-44s %.1f bytes per event in the bus queue, %.1f in a mailbox"):format(
    label, (k1 - k0) * 1024 / (n - 1), (k2 - k1) * 1024 / (n - 1)))
end

-- Optional argument: run only the parts whose label contains it (e.g. "critical").
local only = arg and arg[1]
local function part(label, fn, ...)
  if not only or label:find(only, 1, true) then fn(label, ...) end
end
part("realistic, 1 subscriber:", realistic, 1)
part("realistic, 4 subscribers:", realistic, 4)
part("realistic, sequenced, 1 subscriber:", realistic, 1, true)
part("memory:", bytes_per_event)
part("plain", throughput, 1)
part("plain", throughput, 4)
part("with admission control", throughput, 1, { bp = thorp.backpressure.new{ max_queue_size = 100000 } })
part("sequenced", throughput_seq)
part("latency, 1000 events every 10 ms:", latency, 1000, 10, 2000)
part("latency, 100 events every 1 ms:", latency, 100, 1, 2000)
part("critical, 10x low overload, evict on:", critical_under_overload, { evict = true })
part("critical, 10x low overload, evict off:", critical_under_overload, {})
