-- Policies: schema errors, merging, atomic reload (version, last_error),
-- subscribers matched by name, breaker state kept; and a reload under load.
local thorp = require "thorp"
local policy = require "thorp.policy"
local simm = require "helpers.sim"

-- globals the policy files below write to
-- luacheck: globals POLICY_SEEN LOAD_GOT
local dir = os.tmpname(); os.remove(dir); os.execute("mkdir -p " .. dir)
local function write(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w")); f:write(text); f:close()
  return path
end

describe("policy", function()
  it("names the file, the key and what is allowed for every error", function()
    local bad = write("bad.lua", [[
      return { priorities = { rpc = { sendTransaction = "urgent" } },
               backpressure = { warning_threshold = 2 },
               breakers = { default = { failure_threshold = 0 } },
               subscribers = { x = { topic = "t" } },
               colour = "blue" }]])
    local p, errs = policy.load({ bad })
    assert.is_nil(p)
    local all = table.concat(errs, "\n")
    assert.are.equal(5, #errs, all)
    for _, want in ipairs{ 'priorities.rpc.sendTransaction = urgent: allowed "critical", "normal", "low"',
                           "backpressure.warning_threshold: got 2, allowed: number in (0, 1]",
                           "breakers.default.failure_threshold: got 0, allowed: integer >= 1",
                           "subscribers.x.handler: expected a function, got nil",
                           "unknown key colour" } do
      assert.truthy(all:find(want, 1, true), want .. "\n---\n" .. all)
    end
    assert.truthy(all:find(bad, 1, true))
  end)

  it("reports syntax and runtime errors with file and line", function()
    local syn = write("syn.lua", "return {\n priorities = \n")
    local _, errs = policy.load({ syn })
    assert.truthy(errs[1]:find("syn.lua:3", 1, true), errs[1])
    local rt = write("rt.lua", "local x = nil\nreturn x.y\n")
    _, errs = policy.load({ rt })
    assert.truthy(errs[1]:find("rt.lua:2", 1, true), errs[1])
  end)

  it("merges files in order, later wins", function()
    local a = write("a.lua", [[return { priorities = { rpc = { getBalance = "low", getSlot = "low" } } }]])
    local b = write("b.lua", [[return { priorities = { rpc = { getBalance = "critical" } } }]])
    local p = assert(policy.load({ a, b }))
    assert.are.equal("critical", p.priorities.rpc.getBalance)
    assert.are.equal("low", p.priorities.rpc.getSlot)
  end)

  it("reloads atomically: a broken set changes nothing and is reported", function()
    rawset(_G, "POLICY_SEEN", {})
    local v1 = write("v1.lua", [[
      return { priorities = { rpc = { getSlot = "low" }, topics = { pt = "critical" } },
               subscribers = { watcher = { topic = "pt",
                                           handler = function(ev) table.insert(POLICY_SEEN, "v1:" .. ev.n) end } } }]])
    local v2 = write("v2.lua", [[
      return { priorities = { rpc = { getSlot = "critical" } },
               subscribers = { watcher = { topic = "pt",
                                           handler = function(ev) table.insert(POLICY_SEEN, "v2:" .. ev.n) end } } }]])
    local broken = write("broken.lua", "return { priorities = { rpc = { getSlot = 'nope' } } }")
    assert.is_true((policy.apply_files({ v1 })))
    local version = policy.status().version
    assert.are.equal("low", thorp.rpc.priorities().getSlot)
    thorp.publish("pt", { n = 1 })
    thorp.sleep(10)
    local ok, err = policy.apply_files({ broken })
    assert.is_false(ok)
    assert.are.equal("POLICY_ERROR", err.code)
    assert.truthy(err.message:find("broken.lua", 1, true))
    assert.are.equal(version, policy.status().version)
    assert.truthy(policy.status().last_error:find("getSlot = nope", 1, true))
    assert.are.equal("low", thorp.rpc.priorities().getSlot)
    assert.is_true((policy.apply_files({ v2 })))
    assert.are.equal(version + 1, policy.status().version)
    assert.is_nil(policy.status().last_error)
    assert.are.equal("critical", thorp.rpc.priorities().getSlot)
    thorp.publish("pt", { n = 2 })
    thorp.sleep(10)
    assert.are.same({ "v1:1", "v2:2" }, POLICY_SEEN)
    assert.are.equal(1, #thorp.bus.default:stats().subscribers)
  end)

  it("announces every reload on the thorp.policy topic", function()
    local seen = {}
    local sub = thorp.subscribe("thorp.policy", function(ev) seen[#seen + 1] = ev end)
    policy.apply_files({ write("ok.lua", "return {}") })
    policy.apply_files({ write("nok.lua", "return 42") })
    thorp.sleep(20)
    thorp.bus.default:unsubscribe(sub)
    assert.are.equal(2, #seen)
    assert.is_true(seen[1].ok)
    assert.are.equal(policy.status().version, seen[1].version)
    assert.is_false(seen[2].ok)
    assert.truthy(seen[2].error:find("nok.lua", 1, true))
  end)

  it("reload under load: every event once and in order, every call answered, breakers kept", function()
    local sim = simm.start(2)
    local pool = thorp.rpc.new_pool{ endpoints = { { name = "ep1", url = sim.urls[1] },
                                                   { name = "ep2", url = sim.urls[2] } },
                                    health = false } -- a good health check would close the tripped breaker
    local old_pool = thorp.rpc.set_default_pool(pool)
    pool.eps[2].breaker:trip()                       -- a state the reloads must keep
    rawset(_G, "LOAD_GOT", {})
    local body = [[
      return { breakers = { default = { failure_threshold = %d } },
               priorities = { topics = { load = "normal" } },
               subscribers = { counter = { topic = "load",
                                           handler = function(ev) LOAD_GOT[#LOAD_GOT + 1] = ev.sequence end } } }]]
    local sets = { { write("la.lua", body:format(3)) }, { write("lb.lua", body:format(7)) },
                   { write("lbroken.lua", "return { subscribers = { counter = { topic = 1 } } }") } }
    assert.is_true((policy.apply_files(sets[1])))
    local v0 = policy.status().version
    local published, calls, answered, done = 0, 0, 0, false
    thorp.spawn(function()                            -- 1000 events per 10 ms: 100,000/s
      for _ = 1, 150 do
        for _ = 1, 1000 do
          published = published + 1
          assert(thorp.publish("load", { sequence = published }))
        end
        thorp.sleep(10)
      end
      done = true
    end)
    for _ = 1, 20 do
      thorp.spawn(function()
        while not done do
          calls = calls + 1
          local r = thorp.rpc.call("getSlot", {}, { priority = "critical" })
          if r.ok then answered = answered + 1 end
        end
      end)
    end
    local applied, rejected = 0, 0
    for i = 1, 100 do
      local ok = policy.apply_files(sets[(i - 1) % 3 + 1])
      if ok then applied = applied + 1 else rejected = rejected + 1 end
      thorp.sleep(10)
    end
    require("thorp.testing").wait_until(function() return done and #LOAD_GOT >= published and calls == answered end,
                                        10000, "every event delivered and every call answered")
    assert.are.equal(published, #LOAD_GOT)
    for i = 1, #LOAD_GOT do
      if LOAD_GOT[i] ~= i then error(("event %d arrived as %s"):format(i, tostring(LOAD_GOT[i]))) end
    end
    assert.are.equal(calls, answered)
    assert.are.equal(67, applied)
    assert.are.equal(33, rejected)
    assert.are.equal(v0 + 67, policy.status().version)
    assert.are.equal("OPEN", pool:endpoints()[2].state)
    thorp.rpc.set_default_pool(old_pool)
    sim:stop()
  end)

  it("refuses os.exit: in the source (so check reports it), and at run time from a handler", function()
    local direct = write("exit1.lua", "os.exit(0)\nreturn {}")
    local _, errs = policy.load({ direct })
    assert.matches("exit1.lua:1: calls os.exit, which is not allowed in a policy", errs[1], 1, true)
    local in_handler = write("exit2.lua", [[
      return { subscribers = { quitter = { topic = "t", handler = function() os . exit(1) end } } }]])
    _, errs = policy.load({ in_handler })
    assert.matches("exit2.lua:1: calls os.exit", errs[1], 1, true)
    local commented = write("exit3.lua", "-- never os.exit(0) here\nreturn {}")
    assert.truthy(policy.load({ commented }))
    -- the sandbox: a policy that reaches it another way gets an error naming it
    local sneaky = write("exit4.lua", "local o = os; local name = 'ex' .. 'it'; o[name](0); return {}")
    _, errs = policy.load({ sneaky })
    assert.matches("os.exit is not allowed in a policy (" .. sneaky .. ")", errs[1], 1, true)
  end)

  it("stops a policy that loops while loading and names the file", function()
    local cfgm = require "thorp.config"
    local saved = cfgm.current
    cfgm.current = setmetatable({ load_timeout_ms = 150 }, { __index = saved })
    local loop = write("loop.lua", "local n = 0\nwhile true do n = n + 1 end\nreturn {}")
    local t0 = thorp.now()
    local _, errs = policy.load({ loop })
    cfgm.current = saved
    assert.matches("loop.lua: still running after 150 ms", errs[1], 1, true)
    assert.is_true(thorp.now() - t0 < 2000)
    assert.is_true(jit.status())                      -- the JIT is back on afterwards
  end)

  it("a rejected reload changes nothing: too many subscribers leaves priorities and the bus as they were", function()
    local bus = thorp.bus.default
    assert.is_true((policy.apply_files({ write("base.lua", [[return { priorities = { rpc = { getSlot = "low" } } }]]) })))
    local before_subs = bus:stats().subscriber_count
    local v = policy.status().version
    local lines = { "local s = {}", "for i = 1, " .. (bus.max_subscribers + 5) .. " do",
                    "  s['sub' .. i] = { topic = 'many', handler = function() end } end",
                    "return { priorities = { rpc = { getSlot = 'critical' } }, subscribers = s }" }
    local ok, err = policy.apply_files({ write("many.lua", table.concat(lines, "\n")) })
    assert.is_false(ok)
    assert.matches("exceed the bus's max_subscribers", err.message, 1, true)
    assert.are.equal(v, policy.status().version)
    assert.are.equal("low", thorp.rpc.priorities().getSlot)
    assert.are.equal(before_subs, bus:stats().subscriber_count)
  end)

  it("checks backpressure against the running values before anything applies", function()
    local bp = thorp.backpressure.default
    local saved = { warning_threshold = bp.a.warning, critical_threshold = bp.a.critical }
    assert.is_true((policy.apply_files({ write("bp0.lua", [[return { priorities = { rpc = { getSlot = "low" } },
      backpressure = { warning_threshold = 0.5, critical_threshold = 0.9 } }]]) })))
    -- alone this file is fine (0.92 is below the default 0.95); with the running 0.9 it is not
    local ok, err = policy.apply_files({ write("bp1.lua", [[return { priorities = { rpc = { getSlot = "critical" } },
      backpressure = { warning_threshold = 0.92 } }]]) })
    assert.is_false(ok)
    assert.matches("backpressure (with the running values)", err.message, 1, true)  -- refused before applying
    assert.is_nil(err.message:find("apply failed", 1, true))
    assert.are.equal("low", thorp.rpc.priorities().getSlot)
    bp:configure(saved)
  end)

  it("puts the policy's folder on package.path so it can require a module beside it", function()
    local sub = dir .. "/modpol"
    os.execute("mkdir -p " .. sub)
    local f = assert(io.open(sub .. "/beside_mod.lua", "w"))
    f:write("return { prio = 'critical' }")
    f:close()
    f = assert(io.open(sub .. "/uses.lua", "w"))
    f:write("local m = require 'beside_mod'\nreturn { priorities = { rpc = { getHealth = m.prio } } }")
    f:close()
    local p = assert(policy.load({ sub .. "/uses.lua" }))
    assert.are.equal("critical", p.priorities.rpc.getHealth)
  end)

  it("lets another module declare its own section", function()
    policy.section("spec_extra", { validate = function(v, where)
      return type(v) == "number" and {} or { where .. ": expected a number" } end, apply = function() end })
    local _, errs = policy.load({ write("extra.lua", "return { spec_extra = 'x' }") })
    assert.matches("extra.lua: spec_extra: expected a number", errs[1], 1, true)
    assert.truthy(policy.load({ write("extra2.lua", "return { spec_extra = 3 }") }))
  end)
end)
