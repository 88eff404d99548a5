-- A meme-coin trade executor: copy this file and make it yours.
--
-- It takes trade signals from the bus (topic "trade_signal"), and for each
-- one: drops duplicates (idempotency key per signal id, durable across
-- restarts), checks the wallet balance (normal priority: shed under load),
-- takes the cached recent blockhash and a priority fee estimate, builds and
-- signs a real transaction, journals the trade, and sends and confirms it
-- with thorp.solana.send_and_confirm (signature journaled before the first
-- send, same bytes rebroadcast until confirmed or expired, never signed
-- twice). If the host is shutting down it refuses new trades and finishes
-- the open ones; a crash leaves them in the journal and recover() settles
-- them at the next start by looking their signatures up.
--
-- The wallet: WALLET_KEYPAIR=path (a Solana CLI keypair file), or a demo
-- keypair created on first run in the state directory (demo-wallet.json, 0600).
--
-- Wired up by examples/memecoin_policy.lua:  thorp run policies/default.lua examples/memecoin_policy.lua
local thorp = require "thorp"
local S = thorp.solana
local log = thorp.log.for_module("memecoin")

local M = {
  min_confidence = 0.6,
  lamports_per_trade = 10000000, -- 0.01 SOL
  max_priority_fee = 200000,     -- micro-lamports per compute unit, at most
  compute_unit_limit = 30000,
  stats = { signals = 0, skipped = 0, duplicates = 0, in_doubt = 0, sent = 0, confirmed = 0, failed = 0, expired = 0 },
}

-- The wallet ------------------------------------------------------------------

local function state_dir()
  local cfg = thorp.config.current
  return cfg and cfg.state_dir or os.getenv("THORP_STATE_DIR") or "./thorp-state"
end

--- The demo keypair: 32 random bytes of seed, saved as a Solana CLI file
--- (a JSON array of seed then public key) readable by its owner only.
local function demo_keypair(path)
  local f = io.open(path, "r")
  if f then f:close(); return assert(S.keypair.from_file(path)) end
  local rnd = assert(io.open("/dev/urandom", "rb"))
  local seed = rnd:read(32)
  rnd:close()
  local kp = assert(S.keypair.from_seed(seed))
  local bytes = {}
  for _, s in ipairs{ seed, kp.pubkey:bytes() } do for i = 1, #s do bytes[#bytes + 1] = s:byte(i) end end
  local rc = os.execute(("umask 077 && : > %q"):format(path))
  assert(rc == 0 or rc == true, "cannot create " .. path)
  f = assert(io.open(path, "w"))
  f:write("[", table.concat(bytes, ","), "]\n")
  f:close()
  log.info("demo wallet created", { path = path, pubkey = tostring(kp.pubkey) })
  return kp
end

function M.wallet()
  if not M.keypair then
    local path = os.getenv("WALLET_KEYPAIR")
    if path and path ~= "" then
      local kp, err = S.keypair.from_file(path)
      if not kp then error("WALLET_KEYPAIR=" .. path .. ": " .. tostring(err), 0) end
      M.keypair = kp
    else
      require("thorp.sys").mkdir_p(state_dir())
      M.keypair = demo_keypair(state_dir() .. "/demo-wallet.json")
    end
  end
  return M.keypair
end

-- The trade ---------------------------------------------------------------------

-- A stand-in counterparty for the demo swap.
local DEMO_POOL = S.pubkey("9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM")

--- The instructions of the trade. >>> THIS IS WHERE THE SWAP GOES. <<<
--- A real bot asks Jupiter for a quote and its swap instructions (thorp.fetch
--- to https://quote-api.jup.ag/v6/quote?inputMint=...&outputMint=...&amount=...
--- then POST /v6/swap-instructions) or builds a Raydium swap instruction, and
--- returns those instructions here. The demo moves lamports to a stand-in
--- pool address and writes what it would have swapped in a memo.
function M.swap_instructions(sig, wallet)
  return {
    S.system.transfer(wallet.pubkey, DEMO_POOL, sig.lamports or M.lamports_per_trade),
    S.memo(("thorp demo %s %s signal %s"):format(sig.action, sig.token, tostring(sig.id)), { wallet.pubkey }),
  }
end

--- Build and sign the transaction: compute budget first, then the swap.
function M.build_transaction(sig, wallet, blockhash, fee)
  local ixs = { S.compute_budget.set_compute_unit_limit(M.compute_unit_limit),
                S.compute_budget.set_compute_unit_price(fee) }
  for _, ix in ipairs(M.swap_instructions(sig, wallet)) do ixs[#ixs + 1] = ix end
  local tx = S.transaction{ fee_payer = wallet.pubkey, recent_blockhash = blockhash, instructions = ixs }
  tx:sign(wallet)
  return tx
end

function M.execute(sig)
  local wallet = M.wallet()
  local bal = thorp.rpc.call("getBalance", { tostring(wallet.pubkey) }, { priority = "normal" })
  if not bal.ok then
    -- under load this read may be shed: skip the signal rather than trade blind
    log.warn("balance check failed, signal skipped", { signal = sig.id, error = bal.error.code })
    M.stats.skipped = M.stats.skipped + 1
    return "skipped"
  end
  if bal.result.value < M.lamports_per_trade * 2 then
    log.warn("balance too low", { lamports = bal.result.value, wallet = tostring(wallet.pubkey) })
    return "skipped"
  end
  local bh, err = S.blockhash() -- cached and refreshed in the background: no round trip
  if not bh then
    log.warn("no blockhash, signal skipped", { signal = sig.id, error = err.message })
    return "skipped"
  end
  local fee = S.priority_fee({ wallet.pubkey, DEMO_POOL }, { max = M.max_priority_fee }) or 0
  local trade_id = "trade-" .. sig.id
  local op, rerr = thorp.shutdown.register("TRADE", trade_id, { token = sig.token, action = sig.action,
                                                               lamports = M.lamports_per_trade })
  if not op then
    log.warn("trade refused", { signal = sig.id, reason = rerr.code })
    return "refused"
  end
  local tx = M.build_transaction(sig, wallet, bh.blockhash, fee)
  M.stats.sent = M.stats.sent + 1
  -- journals the signature, sends, rebroadcasts, confirms, and completes the trade
  local res = S.send_and_confirm(tx, { trade = trade_id })
  local key = res.ok and "confirmed" or (res.status == "expired" and "expired" or "failed")
  M.stats[key] = M.stats[key] + 1
  log.info(res.ok and "trade confirmed" or "trade not confirmed", { trade = trade_id, token = sig.token,
           signature = res.signature, status = res.status, slot = res.slot, sends = res.sends,
           latency_ms = res.latency_ms and math.floor(res.latency_ms), priority_fee = fee,
           error = res.error and res.error.message })
  return res.status
end

--- The subscriber: one signal at a time (the bus serialises per subscriber).
function M.on_signal(sig)
  M.stats.signals = M.stats.signals + 1
  if (sig.confidence or 0) < M.min_confidence then
    M.stats.skipped = M.stats.skipped + 1
    return
  end
  local ok, res = thorp.idempotency.once("signal:" .. tostring(sig.id), function() return M.execute(sig) end,
    { ttl_ms = 3600000 })
  if not ok and type(res) == "table" and res.code == "DUPLICATE" then
    M.stats.duplicates = M.stats.duplicates + 1
  elseif not ok and type(res) == "table" and res.code == "IN_DOUBT" then
    -- claimed by a run that crashed before finishing: its trade (if any) is in the
    -- journal and reconciled at start; never trade the same signal a second time
    M.stats.in_doubt = M.stats.in_doubt + 1
    thorp.log.warn("signal left in doubt by an earlier run: not traded again",
                   { signal = sig.id, claimed_at = res.claimed_at })
  elseif not ok then
    error(res, 0) -- counted by the bus as a handler failure, logged with its traceback
  end
end

--- Trades a crash left open: those with a journaled signature are looked up
--- on chain by the host's reconciliation (landed, failed, expired, or
--- rebroadcast until one of those); one without a signature never reached
--- the send (the signature is journaled before the first send), so it is
--- closed as not sent.
function M.recover()
  for _, o in ipairs(require("thorp.sender").reconcile()) do
    log.warn("open trade reconciled", { trade = o.id, signature = o.signature, status = o.status, slot = o.slot })
  end
  for _, t in ipairs(thorp.journal.open_trades()) do
    if not t.signature then
      log.warn("open trade was never sent", { trade = t.id, token = t.meta and t.meta.token })
      thorp.journal.resolve(t.id, "not_sent")
    end
  end
end

--- A fake signal source for the demo: a few signals a second, some duplicated.
function M.feed(every_ms)
  local tokens = { "BONK", "WIF", "PEPE", "POPCAT", "MEW", "BOME" }
  local n = 0
  thorp.timer.every(every_ms or 700, function()
    n = n + 1
    local sig = { id = n, token = tokens[math.random(#tokens)], action = math.random() < 0.7 and "BUY" or "SELL",
                  confidence = 0.5 + math.random() * 0.5, timestamp = thorp.now() }
    thorp.publish("trade_signal", sig)
    if n % 5 == 0 then thorp.publish("trade_signal", sig) end -- a duplicate the bot must ignore
    thorp.publish("price_update", { token = sig.token, price = math.random() * 1e-3 })
  end)
end

return M
