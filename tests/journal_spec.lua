-- Trade journal (host/journal.c), idempotency keys and the shutdown registry.
local thorp = require "thorp"
local journal = require "thorp.journal"

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  return d
end

describe("journal", function()
  it("keeps open trades for the next run, not done ones", function()
    local dir = tmpdir()
    local j = assert(journal.open(dir, { run_id = "run1" }))
    j:begin("a", "TRADE", { token = "BONK", amount = 5 })
    j:begin("b", "TRADE", { token = "PEPE" })
    j:done("a")
    assert.are.same({}, j:open_trades())          -- nothing from earlier runs
    assert.are.equal(1, #j:open_trades(true))
    j:close()
    local j2 = assert(journal.open(dir, { run_id = "run2" }))
    local open = j2:open_trades()
    assert.are.equal(1, #open)
    assert.are.equal("b", open[1].id)
    assert.are.equal("TRADE", open[1].type)
    assert.are.equal("PEPE", open[1].meta.token)
    assert.are.equal("run1", open[1].run_id)
    j2:done("b", "reconciled")
    assert.are.equal(0, #j2:open_trades())
    j2:close()
  end)

  it("keeps its WAL bounded while trades and keys are looked up between writes", function()
    -- get() and key() used to leave their read open: SQLite could never reset the WAL,
    -- which grew by every write for as long as the host ran (found by make soak)
    local dir = tmpdir()
    local j = assert(journal.open(dir, { run_id = "wal" }))
    local meta = { token = ("X"):rep(200) }
    local function wal_size()
      local f = io.open(dir .. "/journal.db-wal", "rb")
      local size = f and f:seek("end") or 0
      if f then f:close() end
      return size
    end
    for i = 1, 3000 do
      j:begin("w" .. i, "TRADE", meta)
      assert.is_table(j:get("w" .. i))
      j:done("w" .. i)
    end
    local after_get = wal_size()
    for i = 1, 3000 do
      j:claim("k" .. i, 60000)
      assert.is_table(j:key("k" .. i))
      j:begin("v" .. i, "TRADE", meta)
      j:done("v" .. i)
    end
    local after_key = wal_size()
    j:close()
    assert.is_true(after_get < 8 * 1024 * 1024, ("the WAL is %d bytes after 3000 get()s"):format(after_get))
    assert.is_true(after_key < 8 * 1024 * 1024, ("the WAL is %d bytes after 3000 key()s"):format(after_key))
  end)

  it("refuses a second host on the same state directory", function()
    local dir = tmpdir()
    local j = assert(journal.open(dir))
    local j2, err = journal.open(dir)
    assert.is_nil(j2)
    assert.truthy(err:find("in use by another running thorp host", 1, true))
    assert.truthy(err:find(dir, 1, true))
    j:close()
    assert.truthy(journal.open(dir)):close()     -- free again once closed
  end)

  it("reports a corrupt journal and an unusable directory clearly", function()
    local dir = tmpdir()
    os.execute("mkdir -p " .. dir)
    local f = io.open(dir .. "/journal.db", "w")
    f:write(("this is not a database\n"):rep(200))
    f:close()
    local j, err = journal.open(dir)
    assert.is_nil(j)
    assert.truthy(err:find(dir .. "/journal.db", 1, true))
    assert.truthy(err:find("damaged", 1, true), err)
    j, err = journal.open("/dev/null/state")
    assert.is_nil(j)
    assert.truthy(err:find("cannot create state directory /dev/null/state", 1, true), err)
  end)

  it("claims idempotency keys once until they expire, and compacts them", function()
    local j = assert(journal.open(tmpdir()))
    assert.is_true(j:claim("k", 50))
    assert.is_false(j:claim("k", 50))
    thorp.sleep(60)
    assert.is_true(j:claim("k", 10))
    thorp.sleep(15)
    j:begin("old", "TRADE", {}); j:done("old")
    j.retention_ms = 0
    thorp.sleep(2)
    assert.is_true(j:compact() >= 2)                -- the done trade and the expired key
    assert.are.equal(0, j:stats().done)
    j:close()
  end)

  it("refuses meta that cannot be stored", function()
    local j = assert(journal.open(tmpdir()))
    assert.has_error(function() j:begin("x", "TRADE", { f = print }) end)
    j:close()
  end)
end)

describe("idempotency", function()
  it("runs fn once per key and reports duplicates", function()
    local n = 0
    local ok, v = thorp.idempotency.once("sig-1", function() n = n + 1; return "placed" end)
    assert.is_true(ok); assert.are.equal("placed", v)
    local ok2, err = thorp.idempotency.once("sig-1", function() n = n + 1 end)
    assert.is_false(ok2); assert.are.equal("DUPLICATE", err.code)
    assert.are.equal(1, n)
  end)

  it("a duplicate arriving while the first is still running is refused", function()
    local runs = 0
    thorp.spawn(function() thorp.idempotency.once("slow", function() runs = runs + 1; thorp.sleep(30) end) end)
    thorp.sleep(1)
    local ok, err = thorp.idempotency.once("slow", function() runs = runs + 1 end)
    assert.is_false(ok); assert.are.equal("DUPLICATE", err.code)
    thorp.sleep(40)
    assert.are.equal(1, runs)
  end)

  it("keeps the key after an error unless release_on_error", function()
    local ok, err = thorp.idempotency.once("e1", function() error("rpc died") end)
    assert.is_false(ok); assert.truthy(tostring(err):find("rpc died"))
    assert.are.equal("DUPLICATE", select(2, thorp.idempotency.once("e1", function() end)).code)
    thorp.idempotency.once("e2", function() error("x") end, { release_on_error = true })
    assert.is_true((thorp.idempotency.once("e2", function() end)))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() thorp.idempotency.once("", function() end) end)
    assert.has_error(function() thorp.idempotency.once("k", function() end, { ttl_ms = -1 }) end)
  end)
end)

describe("shutdown registry", function()
  it("journals trades before register returns and tracks status", function()
    local op = thorp.shutdown.register("TRADE", "spec-t1", { token = "WIF" })
    assert.are.equal("spec-t1", op.id)
    local found = false
    for _, t in ipairs(journal.default:open_trades(true)) do if t.id == "spec-t1" then found = true end end
    assert.is_true(found)
    thorp.shutdown.register("RPC_CALL", "spec-r1")
    local s = thorp.shutdown.status()
    assert.are.equal(1, s.active_trades)
    assert.are.equal(1, s.active_operations)
    assert.are.equal("WIF", s.trades[1].meta.token)
    assert.is_true(thorp.shutdown.complete("spec-t1"))
    assert.is_true(thorp.shutdown.complete("spec-r1"))
    assert.is_false(thorp.shutdown.complete("never-registered"))
    for _, t in ipairs(journal.default:open_trades(true)) do assert.are_not.equal("spec-t1", t.id) end
  end)

  it("rejects bad arguments with what is allowed", function()
    local ok, err = pcall(thorp.shutdown.register, nil, "x")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("kind must be a non-empty string", 1, true))
    ok, err = pcall(thorp.shutdown.register, "TRADE", "x", "meta")
    assert.is_false(ok)
    assert.truthy(tostring(err):find("meta must be a table or nil", 1, true))
  end)
end)
