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

  it("refuses a trade id a previous run left open, and says so", function()
    local dir = tmpdir()
    local j = assert(journal.open(dir, { run_id = "run1" }))
    assert.is_true(j:begin("t-open", "TRADE", { token = "A" }))
    j:close()
    local j2 = assert(journal.open(dir, { run_id = "run2" }))
    local ok, err = j2:begin("t-open", "TRADE", { token = "B" })
    assert.is_nil(ok)
    assert.are.equal("DUPLICATE", err.code)
    assert.matches("left open by an earlier run (run1)", err.message, 1, true)
    assert.are.equal("A", j2:open_trades()[1].meta.token)   -- not replaced
    assert.is_true(j2:done("t-open", "resolved"))
    assert.is_true(j2:begin("t-open", "TRADE", { token = "C" })) -- a finished id may be reused
    j2:close()
  end)

  it("records what is sent and gives it back to the next run", function()
    local dir = tmpdir()
    local j = assert(journal.open(dir, { run_id = "r1" }))
    assert.is_true(j:begin("s1", "TRADE", {}))
    local bytes = "\0\1\2signed\255"
    assert.is_true(j:send("s1", { signature = "5sig", last_valid_block_height = 1234, tx = bytes }))
    local ok, err = j:send("nope", { signature = "5sig", last_valid_block_height = 1, tx = "x" })
    assert.is_nil(ok); assert.are.equal("NOT_FOUND", err.code)
    j:close()
    local j2 = assert(journal.open(dir, { run_id = "r2" }))
    local t = j2:open_trades()[1]
    assert.are.equal("5sig", t.signature)
    assert.are.equal(1234, t.last_valid_block_height)
    assert.are.equal(bytes, t.tx)
    j2:close()
  end)

  it("keeps outcomes of finished trades in a history, newest first, filtered and compacted", function()
    local j = assert(journal.open(tmpdir(), { run_id = "h" }))
    for i = 1, 5 do
      assert.is_true(j:begin("h" .. i, "TRADE", { n = i }))
      local st = i % 2 == 0 and "failed" or "confirmed"
      assert.is_true(j:done("h" .. i, st, { status = st, slot = 100 + i, err = i % 2 == 0 and { code = 1 } or nil,
                                            signature = "sig" .. i }))
      thorp.sleep(2)
    end
    local h = j:history()
    assert.are.equal(5, #h)
    assert.are.equal("h5", h[1].id)
    assert.are.equal(105, h[1].slot)
    assert.are.equal("sig5", h[1].signature)
    assert.are.equal("confirmed", h[1].status)
    local failed = j:history{ status = "failed" }
    assert.are.equal(2, #failed)
    assert.are.same({ code = 1 }, failed[1].err)
    assert.are.equal(2, #j:history{ limit = 2 })
    assert.are.equal(2, #j:history{ since_ms = h[2].ended_at })
    j.retention_ms = 0
    thorp.sleep(2)
    assert.is_true(j:compact() >= 5)
    assert.are.equal(0, #j:history())
    j:close()
  end)

  it("a closed journal raises instead of reaching C", function()
    local j = assert(journal.open(tmpdir()))
    j:close()
    local ok, err = pcall(j.begin, j, "x", "TRADE", {})
    assert.is_false(ok)
    assert.matches("begin on a closed journal", err, 1, true)
    j:close() -- twice is fine
  end)

  it("uses no mmapped -shm file", function()
    local dir = tmpdir()
    local j = assert(journal.open(dir))
    assert.is_true(j:begin("x", "TRADE", {}))
    assert.is_nil(io.open(dir .. "/journal.db-shm", "r"))
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

describe("idempotency states", function()
  local idem = thorp.idempotency

  it("tells a key claimed and never finished (IN_DOUBT) from a finished one (DUPLICATE)", function()
    local dir = tmpdir()
    local saved = journal.default
    local j1 = assert(journal.open(dir, { run_id = "crashed" }))
    journal.default = j1
    local ok1 = idem.once("done-key", function() return 1 end)
    assert.is_true(ok1)
    assert.is_true(j1:claim("doubt-key", 60000))       -- claimed, then the "crash": never marked done
    j1:close()
    local j2 = assert(journal.open(dir, { run_id = "next" }))
    journal.default = j2
    local ok, err = idem.once("doubt-key", function() error("must not run") end)
    assert.is_false(ok)
    assert.are.equal("IN_DOUBT", err.code)
    assert.are.equal("crashed", err.run_id)
    assert.is_number(err.claimed_at)
    ok, err = idem.once("done-key", function() error("must not run") end)
    assert.is_false(ok)
    assert.are.equal("DUPLICATE", err.code)
    assert.are.equal("done", err.state)
    local states = {}
    for _, k in ipairs(idem.list()) do states[k.key] = k.state end
    assert.are.same({ ["doubt-key"] = "in_doubt", ["done-key"] = "done" }, states)
    assert.is_true(idem.release("doubt-key"))
    assert.is_false(idem.release("doubt-key"))
    assert.is_true((idem.once("doubt-key", function() return "ran" end)))
    journal.default = saved
    j2:close()
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

  it("refuses a trade id that is still open; completes with an outcome table", function()
    assert.truthy(thorp.shutdown.register("TRADE", "spec-dup", {}))
    local op, err = thorp.shutdown.register("TRADE", "spec-dup", {})
    assert.is_nil(op)
    assert.are.equal("DUPLICATE", err.code)
    assert.is_true(thorp.journal.record_send("spec-dup", { signature = "3xYz", last_valid_block_height = 77,
                                                           tx = "bytes" }))
    assert.is_true(thorp.shutdown.complete("spec-dup", { status = "expired", slot = 9 }))
    local h = thorp.journal.history{ limit = 1 }
    assert.are.equal("spec-dup", h[1].id)
    assert.are.equal("expired", h[1].status)
    assert.are.equal(9, h[1].slot)
    assert.are.equal("3xYz", h[1].signature)
    assert.are.equal(77, h[1].last_valid_block_height)
    assert.has_error(function()
      thorp.journal.record_send("x", { signature = "not base58 0OIl", last_valid_block_height = 1 })
    end)
    assert.has_error(function() thorp.journal.record_send("x", { signature = "abc", last_valid_block_height = -1 }) end)
    assert.has_error(function() thorp.shutdown.complete("x", { status = 5 }) end)
  end)

  it("stores any outcome: u64 slots exactly, what JSON cannot hold as text, and the trade completes", function()
    assert.truthy(thorp.shutdown.register("TRADE", "spec-odd", {}))
    assert.is_true(thorp.shutdown.complete("spec-odd", { status = "failed", slot = 18446744073709551615ULL,
                                                         err = { InstructionError = { 0, thorp.json.null } } }))
    local h = thorp.journal.history{ limit = 1 }[1]
    assert.are.equal(18446744073709551615ULL, h.slot)
    assert.is_true(thorp.json.is_null(h.err.InstructionError[2]))
    assert.truthy(thorp.shutdown.register("TRADE", "spec-odd2", {}))
    assert.is_true(thorp.shutdown.complete("spec-odd2", { status = "failed", callback = print }))
    assert.are.equal(0, thorp.shutdown.status().active_trades)
    assert.are.equal("failed", thorp.journal.history{ limit = 1 }[1].status)
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
