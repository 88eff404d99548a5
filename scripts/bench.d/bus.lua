-- Signal bus figures: publish+deliver throughput (1 and 10 subscribers,
-- plain and sequenced) and publish-to-handler latency.
-- Run: ./thorp exec scripts/bench.d/bus.lua
local N = 300000
local CHUNK = 5000

local function throughput(label, nsubs, sequenced)
  local bus = thorp.bus.new{ max_queue_size = N }
  local got = 0
  for i = 1, nsubs do bus:subscribe("t", function() got = got + 1 end, { name = "s" .. i }) end
  local want = N * nsubs
  local t0 = thorp.now()
  local i = 0
  while i < N do
    for _ = 1, CHUNK do
      i = i + 1
      assert(bus:publish("t", sequenced and { sequence = i } or i))
    end
    coroutine.yield() -- a loop turn: the dispatcher and the workers drain
  end
  while got < want do coroutine.yield() end
  local ms = thorp.now() - t0
  print(("bus: %s, %d subscriber%s: %d events in %.0f ms, %.0f events/s (%.0f deliveries/s)"):format(
    label, nsubs, nsubs == 1 and "" or "s", N, ms, N / ms * 1000, want / ms * 1000))
  bus:close()
end

local function pct(sorted, p) return sorted[math.max(1, math.ceil(#sorted * p))] end

local function latency(label, burst, rounds)
  local bus = thorp.bus.new{}
  local lat = {}
  bus:subscribe("t", function(ev) lat[#lat + 1] = thorp.now() - ev end)
  for _ = 1, rounds do
    for _ = 1, burst do bus:publish("t", thorp.now()) end
    thorp.sleep(0)
  end
  while #lat < burst * rounds do thorp.sleep(0) end
  table.sort(lat)
  print(("bus: latency publish->handler, %s: p50 %.1f us, p99 %.1f us, max %.1f us (%d events)"):format(
    label, pct(lat, 0.5) * 1000, pct(lat, 0.99) * 1000, lat[#lat] * 1000, #lat))
  bus:close()
end

throughput("plain", 1)
throughput("plain", 10)
throughput("sequenced", 1, true)
latency("one event per loop turn", 1, 20000)
latency("bursts of 1000 per turn", 1000, 100)
