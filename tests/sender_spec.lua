-- The send path against the simulator's ledger (tests/sim/sim_tx.c): real
-- ed25519 signatures, blockhashes that expire, balances, statuses.
local thorp = require "thorp"
local cjson = require "cjson"
local simm = require "helpers.sim"
local sender = require "thorp.sender"

-- A simulator of `count` endpoints with 20 ms slots, a pool over it as the
-- host's pool for the describe block, all put back afterwards.
local function ledger(count)
  local L = {}
  function L.chain(body)
    local r = assert(thorp.rpc.http_post(L.sim.urls[1] .. "/admin/chain", cjson.encode(body), 2000))
    return cjson.decode(r.body)
  end
  setup(function()
    L.sim = simm.start(count)
    L.pool = thorp.rpc.new_pool{ endpoints = L.sim:endpoints({ "a", "b" }), timeout_ms = 2000, health = false }
    L.old = thorp.rpc.set_default_pool(L.pool)
    L.chain{ reset = true, slot_ms = 20 }
  end)
  teardown(function()
    thorp.rpc.set_default_pool(L.old)
    sender.stop()
    L.sim:stop()
  end)
  return L
end

describe("send_and_confirm", function()
  local L = ledger(2)
  local sim, pool, S, payer
  local chain = L.chain
  local function balance(pk)
    local r = pool:call("getBalance", { tostring(pk) })
    assert(r.ok, r.error and r.error.message)
    return r.result.value
  end
  local function transfer(lamports, opts)
    opts = opts or {}
    local to = opts.to or S.keypair.generate().pubkey
    local bh = opts.blockhash or assert(thorp.solana.blockhash())
    local ixs = { S.system.transfer(payer.pubkey, to, lamports) }
    for _, ix in ipairs(opts.extra or {}) do ixs[#ixs + 1] = ix end
    local tx = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = bh.blockhash, instructions = ixs }
    tx:sign(payer)
    return tx, to
  end
  local fast = { poll_ms = 30, rebroadcast_ms = 100 }
  local function with(o)
    local t = {}
    for k, v in pairs(fast) do t[k] = v end
    for k, v in pairs(o or {}) do t[k] = v end
    return t
  end

  setup(function()
    S, sim, pool = thorp.solana, L.sim, L.pool
    payer = S.keypair.generate()
  end)
  before_each(function() chain{ drop = 0, drop_all = false } end)

  it("signs once, sends, and confirms a transfer: the balances move", function()
    local before = balance(payer.pubkey)
    local tx, to = transfer(1000000)
    local res = thorp.solana.send_and_confirm(tx, with())
    assert.is_true(res.ok, res.status)
    assert.are.equal("confirmed", res.status)
    assert.are.equal(tx:signature(), res.signature)
    assert.is_number(res.slot)
    assert.is_true(res.sends >= 1)
    assert.is_number(res.latency_ms)
    assert.are.equal(before - 1000000 - 5000, balance(payer.pubkey))
    assert.are.equal(1500000000 + 1000000, balance(to))
    local text = require("thorp.metrics").render()
    assert.truthy(text:find('thorp_send_transactions_total{status="confirmed"} %d+'), "metrics")
    assert.truthy(text:find('thorp_send_broadcasts_total %d+'), "metrics")
  end)

  it("checks the status as soon as the signature subscription notifies", function()
    local res = thorp.solana.send_and_confirm(transfer(8), { poll_ms = 5000, rebroadcast_ms = 10000 })
    assert.is_true(res.ok, res.status)
    assert.is_true(res.latency_ms < 2000, "latency " .. res.latency_ms) -- the first poll tick is at 5 s
  end)

  it("waits for finalized when asked", function()
    local res = thorp.solana.send_and_confirm(transfer(1), with{ commitment = "finalized" })
    assert.are.equal("finalized", res.status)
    local st = pool:call("getSignatureStatuses", { { res.signature } })
    assert.are.equal("finalized", st.result.value[1].confirmationStatus)
  end)

  it("rebroadcasts the same bytes when the first send is dropped", function()
    chain{ drop = 1 }
    local before = chain{}
    local b1, b2 = sim:stats(1).send_transaction, sim:stats(2).send_transaction
    local res = thorp.solana.send_and_confirm(transfer(2), with())
    assert.is_true(res.ok, res.status)
    assert.is_true(res.sends >= 2, "sends " .. res.sends)
    -- the rebroadcast went to every healthy endpoint, the first send to one
    assert.is_true(sim:stats(1).send_transaction - b1 >= 1 and sim:stats(2).send_transaction - b2 >= 1)
    local seen = sim:stats(1).send_transaction - b1 + sim:stats(2).send_transaction - b2
    assert.is_true(seen >= 2 and seen <= res.sends, ("%d seen, %d sent"):format(seen, res.sends)) -- some may be in flight
    local after = chain{}
    assert.are.equal(1, after.transactions - before.transactions) -- one signature landed, once
    assert.are.equal(1, after.dropped - before.dropped)
  end)

  it("lands through the other endpoint while the first one resets every connection", function()
    sim:fault(1, { down = true })
    local ok, res = pcall(thorp.solana.send_and_confirm, transfer(9), with())
    sim:fault(1, { reset = true })
    assert.is_true(ok, res)
    assert.is_true(res.ok, res.status)
  end)

  it("rebroadcasts to the send-only endpoints too (config send.endpoints / THORP_SEND_URLS)", function()
    local only_a = thorp.rpc.new_pool{ endpoints = { { name = "a", url = sim.urls[1] } }, timeout_ms = 2000, health = false }
    chain{ drop = 1 }
    local before = sim:stats(2).requests
    local res = thorp.solana.send_and_confirm(transfer(7), with{ pool = only_a,
      send_endpoints = { { name = "jito", url = sim.urls[2] } } })
    assert.is_true(res.ok, res.status)
    assert.is_true(sim:stats(2).requests > before)
    local cfg = assert(require("thorp.config").load{ env = function(n)
      return ({ THORP_SEND_URLS = "jito=https://mainnet.block-engine.jito.wtf/api/v1/transactions" })[n] end, environ = {} })
    assert.are.equal("jito", cfg.send.endpoints[1].name)
    assert.are.equal(1000, cfg.send.rebroadcast_ms)
  end)

  it("gives up as expired once the block height passes the last valid one", function()
    chain{ drop_all = true }
    local res
    thorp.spawn(function() res = thorp.solana.send_and_confirm(transfer(3), with()) end)
    thorp.sleep(150)
    assert.is_nil(res)
    chain{ advance = 200 }
    local deadline = thorp.now() + 3000
    while not res and thorp.now() < deadline do thorp.sleep(10) end
    assert.is_table(res)
    assert.is_false(res.ok)
    assert.are.equal("expired", res.status)
    assert.is_true(res.sends >= 2)
  end)

  it("reports a transaction that landed with an error as failed, with the error", function()
    local res = thorp.solana.send_and_confirm(transfer(99 * 1e9), with{ skip_preflight = true })
    assert.is_false(res.ok)
    assert.are.equal("failed", res.status)
    assert.is_table(res.err)
    assert.is_table(res.err.InstructionError)
    assert.is_number(res.slot)
  end)

  it("reports a transaction preflight refused as failed after one send", function()
    local tx = transfer(4)
    local bytes = tx:serialize()
    local bad = bytes:sub(1, 10) .. string.char((bytes:byte(11) + 1) % 256) .. bytes:sub(12) -- a signature byte
    local res = thorp.solana.send_and_confirm(bad, with())
    assert.is_false(res.ok)
    assert.are.equal("failed", res.status)
    assert.are.equal(1, res.sends)
    assert.are.equal("RPC_ERROR", res.error.code)
    assert.truthy(res.error.message:find("signature verification", 1, true), res.error.message)
  end)

  it("sends at once without preflight when the endpoint has not seen the blockhash yet, and lands", function()
    -- a blockhash fresher than the nodes' view: both lag the chain by 25 slots, so their
    -- preflight answers "Blockhash not found" while the leaders know it
    local v = pool:call("getLatestBlockhash", {}).result.value
    sim:fault(1, { slot_lag = 25 })
    sim:fault(2, { slot_lag = 25 })
    local before = chain{}
    local ok, res = pcall(thorp.solana.send_and_confirm, transfer(6, { blockhash = v }),
                          with{ last_valid_block_height = v.lastValidBlockHeight })
    sim:fault(1, { reset = true })
    sim:fault(2, { reset = true })
    assert.is_true(ok, res)
    assert.is_true(res.ok, res.status .. " " .. tostring(res.error and res.error.message))
    assert.are.equal("confirmed", res.status)
    assert.is_true(res.sends >= 2, "sends " .. res.sends) -- the refused first send, then without preflight
    local after = chain{}
    assert.are.equal(1, after.transactions - before.transactions)
    assert.is_true(after.refused - before.refused >= 1, "the first send was refused by preflight")
  end)

  it("refuses what is not a signed transaction, sending nothing", function()
    local before = chain{}.sends
    local r = thorp.solana.send_and_confirm("not a transaction", with())
    assert.is_false(r.ok)
    assert.are.equal("BAD_TRANSACTION", r.error.code)
    local tx = S.transaction{ fee_payer = payer.pubkey, recent_blockhash = thorp.solana.blockhash().blockhash,
                              instructions = { S.system.transfer(payer.pubkey, payer.pubkey, 1) } }
    r = thorp.solana.send_and_confirm(tx, with())
    assert.is_false(r.ok)
    assert.truthy(r.error.code == "BAD_TRANSACTION" or r.error.code == "UNSIGNED", r.error.code)
    assert.are.equal(before, chain{}.sends)
    assert.has_error(function() thorp.solana.send_and_confirm(tx, { commitment = "final" }) end,
      'send_and_confirm: commitment must be "processed", "confirmed" or "finalized", got final')
  end)

  it("confirms many transactions in flight with one status call per poll tick", function()
    local n, done, results = 8, 0, {}
    local r0 = sim:stats(1).requests + sim:stats(2).requests
    for i = 1, n do
      thorp.spawn(function()
        results[i] = thorp.solana.send_and_confirm(transfer(10 + i), with{ rebroadcast_ms = 10000 })
        done = done + 1
      end)
    end
    local deadline = thorp.now() + 5000
    while done < n and thorp.now() < deadline do thorp.sleep(10) end
    assert.are.equal(n, done)
    for i = 1, n do assert.is_true(results[i].ok, results[i].status) end
    -- sends + polls (each poll: one status call and one block height, in one batch)
    local requests = sim:stats(1).requests + sim:stats(2).requests - r0
    assert.is_true(requests < n * 4, "requests " .. requests)
  end)

  it("journals the signature before sending and completes the trade with the outcome", function()
    local id = "send-spec-" .. math.floor(thorp.now())
    assert(thorp.shutdown.register("TRADE", id, { token = "TEST" }))
    local active = thorp.shutdown.status().active_trades
    local tx = transfer(5)
    local res = thorp.solana.send_and_confirm(tx, with{ trade = id })
    assert.is_true(res.ok)
    assert.are.equal(active - 1, thorp.shutdown.status().active_trades)
    local t = thorp.journal.default:get(id)
    assert.are.equal("confirmed", t.status)
    assert.are.equal(tx:signature(), t.signature)
    assert.are.equal(tx:serialize(), t.tx)
    assert.is_number(t.last_valid_block_height)
    local found
    for _, h in ipairs(thorp.journal.history{ status = "confirmed" }) do if h.id == id then found = h end end
    assert.is_table(found)
    assert.are.equal(res.slot, found.slot)
  end)

  it("sends nothing when the signature cannot be journaled", function()
    local before = chain{}.sends
    local res = thorp.solana.send_and_confirm(transfer(6), with{ trade = "never-registered" })
    assert.is_false(res.ok)
    assert.are.equal("JOURNAL_ERROR", res.error.code)
    assert.truthy(res.error.message:find("no open trade never-registered", 1, true), res.error.message)
    assert.are.equal(before, chain{}.sends)
  end)
end)

describe("blockhash and fees", function()
  local L = ledger(1)
  local sim, pool
  local chain = L.chain
  setup(function() sim, pool = L.sim, L.pool end)

  it("keeps a blockhash at hand: the second call costs no round trip", function()
    sender.stop()
    local a = assert(thorp.solana.blockhash({ refresh_ms = 100000 }))
    assert.is_string(a.blockhash)
    assert.is_number(a.last_valid_block_height)
    local before = sim:stats(1).requests
    local b = thorp.solana.blockhash()
    assert.are.equal(before, sim:stats(1).requests - 0)
    assert.are.equal(a.blockhash, b.blockhash)
    local v = pool:call("isBlockhashValid", { a.blockhash })
    assert.is_true(v.result.value)
  end)

  it("refreshes the blockhash in the background while it is used", function()
    sender.stop()
    local a = assert(thorp.solana.blockhash({ refresh_ms = 50 }))
    local deadline = thorp.now() + 2000
    local b = a
    while b.blockhash == a.blockhash and thorp.now() < deadline do
      thorp.sleep(20)
      b = thorp.solana.blockhash() -- never a round trip: the daemon moved it on
    end
    assert.are_not.equal(a.blockhash, b.blockhash)
    assert.is_true(b.last_valid_block_height > a.last_valid_block_height)
    sender.stop()
  end)

  it("estimates the priority fee as a percentile of the non-zero recent fees, capped", function()
    chain{ fees = { 0, 100, 200, 0, 300, 400 } }
    local acct = thorp.solana.keypair.generate().pubkey
    assert.are.equal(300, thorp.solana.priority_fee({ acct }))
    assert.are.equal(200, thorp.solana.priority_fee({ acct }, { percentile = 50 }))
    assert.are.equal(250, thorp.solana.priority_fee({ acct }, { max = 250 }))
    chain{ fees = { 0 } }
    assert.are.equal(0, thorp.solana.priority_fee({ acct }))
    chain{ reset = true }
  end)

  it("sets the compute unit limit from a simulation", function()
    local S = thorp.solana
    local kp = S.keypair.generate()
    local bh = assert(S.blockhash())
    local tx, info = sender.prepare({ fee_payer = kp.pubkey, recent_blockhash = bh.blockhash,
                                      instructions = { S.system.transfer(kp.pubkey, kp.pubkey, 1), S.memo("hi") } }, kp)
    assert.is_table(tx, info and info.message)
    assert.are.equal(150 + 150 + 2000 + 60 * 2, info.units)
    assert.are.equal(math.ceil(info.units * 1.1) + 1000, info.limit)
    local res = S.send_and_confirm(tx, { poll_ms = 30 })
    assert.is_true(res.ok, res.status)
    -- the same through send_and_confirm's opts.simulate, which needs the spec and the signers
    res = S.send_and_confirm({ fee_payer = kp.pubkey, recent_blockhash = bh.blockhash,
                               instructions = { S.memo("simulated") } }, { simulate = true, signers = { kp }, poll_ms = 30 })
    assert.is_true(res.ok, res.status)
    local bad = S.send_and_confirm(tx, { simulate = true })
    assert.are.equal("BAD_TRANSACTION", bad.error.code)
  end)
end)

describe("jito bundles", function()
  local L = ledger(1)
  local sim, pool
  setup(function() sim, pool = L.sim, L.pool end)

  it("tips one of the published tip accounts", function()
    local kp = thorp.solana.keypair.generate()
    local ix = thorp.solana.jito.tip(kp.pubkey, 1000)
    local to = tostring(ix.accounts[2].pubkey)
    local known = false
    for _, a in ipairs(sender.jito.tip_accounts) do known = known or a == to end
    assert.is_true(known, to)
  end)

  it("sends up to 5 transactions as one bundle and follows its status", function()
    local S = thorp.solana
    local kp = S.keypair.generate()
    local bh = assert(S.blockhash())
    local function tx(ixs)
      local t = S.transaction{ fee_payer = kp.pubkey, recent_blockhash = bh.blockhash, instructions = ixs }
      t:sign(kp)
      return t
    end
    local a = tx{ S.memo("first") }
    local b = tx{ S.memo("second"), sender.jito.tip(kp.pubkey, 10000) }
    local res = thorp.solana.send_bundle({ a, b }, { bundle_endpoint = { name = "jito", url = sim.urls[1] }, poll_ms = 50 })
    assert.is_true(res.ok, res.status)
    assert.are.equal(64, #res.bundle_id)
    assert.are.same({ a:signature(), b:signature() }, res.signatures)
    local st = pool:call("getSignatureStatuses", { res.signatures })
    assert.is_table(st.result.value[1])
    assert.is_table(st.result.value[2])
    -- the same through send_and_confirm's opts.bundle
    local c, d = tx{ S.memo("third") }, tx{ S.memo("fourth"), thorp.solana.jito.tip(kp.pubkey, 10000) }
    local via = S.send_and_confirm(c, { bundle = { d }, bundle_endpoint = { name = "jito", url = sim.urls[1] }, poll_ms = 50 })
    assert.is_true(via.ok, via.status)
    assert.are.same({ c:signature(), d:signature() }, via.signatures)
    -- with a trade: journaled under the first signature, completed with the outcome
    local f, g = tx{ S.memo("sixth") }, tx{ S.memo("seventh") }
    local id = "bundle-" .. math.floor(thorp.now())
    assert(thorp.shutdown.register("TRADE", id, {}))
    local tr = S.send_bundle({ f, g }, { trade = id, bundle_endpoint = { name = "jito", url = sim.urls[1] }, poll_ms = 50 })
    assert.is_true(tr.ok, tr.status)
    local row = thorp.journal.default:get(id)
    assert.are.equal("confirmed", row.status)
    assert.are.equal(f:signature(), row.signature)
    -- a bundle with a member that already landed is dropped whole: it expires
    local e = tx{ S.memo("fifth") }
    thorp.rpc.http_post(sim.urls[1] .. "/admin/chain", '{"slot_ms":2}', 2000)
    local dup = S.send_bundle({ e, a }, { bundle_endpoint = { name = "jito", url = sim.urls[1] }, poll_ms = 50 })
    thorp.rpc.http_post(sim.urls[1] .. "/admin/chain", '{"slot_ms":20}', 2000)
    assert.are.equal("expired", dup.status)
    assert.is_true(thorp.json.is_null(pool:call("getSignatureStatuses", { { e:signature() } }).result.value[1]))
    local six = {}
    for i = 1, 6 do six[i] = a end
    assert.are.equal("BAD_TRANSACTION", sender.send_bundle(six, {}).error.code)
  end)
end)
