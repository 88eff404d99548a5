-- A meme-coin trade executor: copy this file and make it yours.
--
-- It takes trade signals from the bus (topic "trade_signal"), and for each
-- one: drops duplicates (idempotency key per signal id, durable across
-- restarts), checks the wallet balance (normal priority: shed under load),
-- fetches a recent blockhash (critical), journals the trade, sends it
-- (critical, never re-sent by the pool), polls for confirmation, and
-- completes the trade. If the host is shutting down, it refuses new trades
-- and finishes the open ones; a crash leaves them in the journal for the
-- next start (see recover()).
--
-- Wired up by examples/memecoin_policy.lua:  thorp run policies/default.lua examples/memecoin_policy.lua
local thorp = require "thorp"
local log = thorp.log.for_module("memecoin")

local M = {
  wallet = os.getenv("WALLET_PUBKEY") or "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU",
  min_confidence = 0.6,
  lamports_per_trade = 10000000, -- 0.01 SOL
  confirm_timeout_ms = 8000,
  stats = { signals = 0, skipped = 0, duplicates = 0, sent = 0, confirmed = 0, failed = 0 },
}

-- Build and sign the swap transaction. A real bot builds a Jupiter/Raydium
-- swap here and signs it with its key; the simulator accepts any base64.
function M.build_transaction(sig, blockhash)
  return ("SIMTX|%s|%s|%s|%d"):format(sig.action, sig.token, blockhash, sig.lamports or M.lamports_per_trade)
end

local function confirm(signature, deadline)
  while thorp.now() < deadline do
    local st = thorp.rpc.call("getSignatureStatuses", { { signature } }, { priority = "critical" })
    local v = st.ok and st.result.value and st.result.value[1]
    if type(v) == "table" and (v.confirmationStatus == "confirmed" or v.confirmationStatus == "finalized") then
      return true, v.err
    end
    thorp.sleep(400)
  end
  return false
end

function M.execute(sig)
  local bal = thorp.rpc.call("getBalance", { M.wallet }, { priority = "normal" })
  if not bal.ok then
    -- under load this read may be shed: skip the signal rather than trade blind
    log.warn("balance check failed, signal skipped", { signal = sig.id, error = bal.error.code })
    M.stats.skipped = M.stats.skipped + 1
    return "skipped"
  end
  if bal.result.value < M.lamports_per_trade * 2 then
    log.warn("balance too low", { lamports = bal.result.value })
    return "skipped"
  end
  local bh = thorp.rpc.call("getLatestBlockhash", { { commitment = "confirmed" } })
  if not bh.ok then
    log.warn("no blockhash, signal skipped", { signal = sig.id, error = bh.error.message })
    return "skipped"
  end
  local trade_id = "trade-" .. sig.id
  local op, err = thorp.shutdown.register("TRADE", trade_id, { token = sig.token, action = sig.action,
                                                              lamports = M.lamports_per_trade })
  if not op then
    log.warn("trade refused", { signal = sig.id, reason = err.code })
    return "refused"
  end
  local tx = M.build_transaction(sig, bh.result.value.blockhash)
  local sent = thorp.rpc.call("sendTransaction", { tx, { encoding = "base64", skipPreflight = true } })
  if not sent.ok then
    M.stats.failed = M.stats.failed + 1
    log.error("send failed", { trade = trade_id, error = sent.error.message })
    thorp.shutdown.complete(trade_id, "send_failed")
    return "failed"
  end
  M.stats.sent = M.stats.sent + 1
  local ok = confirm(sent.result, thorp.now() + M.confirm_timeout_ms)
  if ok then M.stats.confirmed = M.stats.confirmed + 1 end
  log.info(ok and "trade confirmed" or "trade not confirmed in time", { trade = trade_id, token = sig.token,
           signature = sent.result, endpoint = sent.endpoint, latency_ms = sent.latency_ms })
  thorp.shutdown.complete(trade_id, ok and "confirmed" or "unconfirmed")
  return ok and "confirmed" or "unconfirmed"
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
  elseif not ok then
    error(res, 0) -- counted by the bus as a handler failure, logged with its traceback
  end
end

--- Trades a crash left open: reconcile them (here: look the trade up and close it).
function M.recover()
  for _, t in ipairs(thorp.journal.open_trades()) do
    log.warn("recovering open trade", { trade = t.id, token = t.meta.token })
    thorp.journal.resolve(t.id, "recovered")
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
