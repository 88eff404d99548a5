-- thorp.sender: send a signed transaction and see it land (reached as
-- thorp.solana.send_and_confirm / blockhash / priority_fee / jito).
--
--   local bh = thorp.solana.blockhash()                 -- cached, no round trip once warm
--   local tx = thorp.solana.transaction{ fee_payer = kp.pubkey, recent_blockhash = bh.blockhash, ... }
--   tx:sign(kp)
--   local res = thorp.solana.send_and_confirm(tx, { trade = id })
--   -- res = { ok, signature, status = "confirmed"|"finalized"|"failed"|"expired"|"timeout", err, slot, sends, latency_ms }
--
-- The bytes are serialized once and never signed again. The first send goes
-- through the pool (maxRetries = 0, preflight unless opts.skip_preflight);
-- then the same bytes are rebroadcast every opts.rebroadcast_ms (1000) to
-- every healthy endpoint of the pool and to the configured send-only
-- endpoints (config send.endpoints = { {name=, url=} } or THORP_SEND_URLS: a Jito block engine,
-- Helius Sender), with skipPreflight. One poller per pool asks
-- getSignatureStatuses for every signature in flight in one call per tick
-- (opts.poll_ms, 400), batched with getBlockHeight. It ends at
-- opts.commitment ("confirmed"), on a transaction error ("failed"), when the
-- block height has passed the blockhash's last valid block height and one
-- more status check found nothing ("expired"), or at opts.timeout_ms
-- ("timeout", 120 s). A signatureSubscribe on the pool's WebSocket side
-- (where an endpoint has a ws_url or an https url; opts.subscribe = true or
-- false decides otherwise) makes the poller check at once when its
-- notification arrives.
--
-- With opts.trade = id (a registered trade) the signature, last valid block
-- height and signed bytes are journaled before the first send, and the
-- outcome completes the trade. At start (run and exec) trades a previous run
-- left open with a journaled signature are reconciled: see M.reconcile.
local sched = require "thorp.sched"
local log = require("thorp.log").for_module("sender")

local M = {}

local COMMITMENT = { processed = 1, confirmed = 2, finalized = 3 }
local MAX_STATUS_BATCH = 256
local DAEMON = { daemon = true, name = "sender", quiet = true }
local defaults = { rebroadcast_ms = 1000, poll_ms = 400, timeout_ms = 120000, send_endpoints = {} }
M.stats = { sent = 0, sends = 0, confirmed = 0, failed = 0, expired = 0, timeout = 0,
            reconciled = { landed = 0, failed = 0, expired = 0, rebroadcast = 0, unknown = 0 } }

local function sol() return require "thorp.solana" end
-- Prometheus counters (thorp.metrics): thorp_send_*
local HELP = {
  send_transactions_total = "Transactions sent by send_and_confirm, by outcome.",
  send_broadcasts_total = "sendTransaction posts made by send_and_confirm (first sends and rebroadcasts).",
  send_reconciled_total = "Trades left open with a signature, settled at start, by outcome.",
}
local function count(name, labels, n) require("thorp.metrics").counter_add(name, labels, n, HELP[name]) end
local function rpcm() return require "thorp.rpc" end
local json = require "thorp.json"
local function is_table(v) return type(v) == "table" and v ~= json.null end
local function errv(code, message, extra)
  local e = { code = code, message = message }
  for k, v in pairs(extra or {}) do e[k] = v end
  return { ok = false, status = "failed", error = e }
end

-- Transactions as bytes --------------------------------------------------------

-- bytes, signature (base58), recent blockhash (base58) of a signed transaction
-- (a thorp.solana tx or its wire bytes); or nil, error value
local WANT = "tx must be a thorp.solana transaction or its wire bytes"
local function wire(tx)
  local bytes = tx
  if type(tx) == "table" or type(tx) == "userdata" then
    if not tx.serialize then return nil, errv("BAD_TRANSACTION", "send_and_confirm: " .. WANT) end
    local ok, b = pcall(tx.serialize, tx)
    if not ok then return nil, errv("BAD_TRANSACTION", "send_and_confirm: " .. tostring(b)) end
    bytes = b
  elseif type(tx) ~= "string" then
    return nil, errv("BAD_TRANSACTION", "send_and_confirm: " .. WANT .. ", got " .. type(tx))
  end
  local d, err = sol().decode_transaction(bytes)
  if not is_table(d) or d.ok == false then
    local why = is_table(err) and err.message or is_table(d) and d.error and d.error.message or tostring(err)
    return nil, errv("BAD_TRANSACTION", "send_and_confirm: not a wire transaction: " .. tostring(why))
  end
  local first = d.signatures and d.signatures[1]
  if type(first) ~= "string" or first == ("\0"):rep(64) or first == ("1"):rep(64) then
    return nil, errv("UNSIGNED", "send_and_confirm: the transaction is not signed (sign it with tx:sign(keypair) first)")
  end
  if #first == 64 then first = sol().base58.encode(first) end
  return bytes, first, tostring(d.recent_blockhash)
end

-- The blockhash cache -----------------------------------------------------------

local known, order = {}, {} -- known[blockhash] = its last valid block height
local caches = {} -- pool -> { value, at, used, refresher }
local heights = {} -- pool -> the last block height seen on it (status polls)

local function remember(bh, lvbh)
  if known[bh] then return end
  known[bh] = lvbh
  order[#order + 1] = bh
  if #order > 256 then known[table.remove(order, 1)] = nil end
end

local function fetch_blockhash(pool, c)
  local res = pool:call("getLatestBlockhash", { { commitment = "confirmed" } }, { priority = "critical" })
  local v = res.ok and is_table(res.result) and res.result.value
  if not is_table(v) or type(v.blockhash) ~= "string" then
    return nil, res.error or { code = "BAD_RESPONSE", message = "getLatestBlockhash: no value" }
  end
  c.value = { blockhash = v.blockhash, last_valid_block_height = tonumber(v.lastValidBlockHeight) }
  c.at = sched.now()
  remember(v.blockhash, c.value.last_valid_block_height)
  return c.value
end

local function default_pool(opts)
  return opts and opts.pool or rpcm().default_pool()
end

--- blockhash(opts) -> { blockhash, last_valid_block_height } | nil, err
-- The first call fetches (yields); then a daemon refreshes it every
-- opts.refresh_ms (2000) at critical priority while it is used (it stops
-- after 60 s without a call), so later calls return at once.
function M.blockhash(opts)
  local pool = default_pool(opts)
  if not pool then return nil, { code = "ALL_ENDPOINTS_FAILED", message = "blockhash: no RPC endpoints configured" } end
  local c = caches[pool]
  if not c then c = {}; caches[pool] = c end
  c.used = sched.now()
  -- refetch when it is old, or close to expiry at the height the status polls last saw
  local h = heights[pool]
  if not c.value or sched.now() - c.at > 30000 or (h and c.value.last_valid_block_height - h < 20) then
    local v, err = fetch_blockhash(pool, c)
    if not v then return nil, err end
  end
  if not c.refresher then
    c.refresher = sched.daemon_every(opts and opts.refresh_ms or 2000, function(t)
      if sched.now() - c.used > 60000 then t:cancel(); c.refresher = nil; return end
      local _, err = fetch_blockhash(pool, c)
      if err then log.warn("blockhash refresh failed", { error = err.message }) end
    end, "sender.blockhash")
  end
  return { blockhash = c.value.blockhash, last_valid_block_height = c.value.last_valid_block_height }
end

-- Priority fees --------------------------------------------------------------------

--- priority_fee(writable_accounts, opts) -> micro_lamports | nil, err
-- The opts.percentile (75) of the non-zero recent prioritization fees of the
-- accounts, at least opts.min (0), at most opts.max; 0 when none paid a fee.
function M.priority_fee(accounts, opts)
  opts = opts or {}
  local pool = default_pool(opts)
  if not pool then return nil, { code = "ALL_ENDPOINTS_FAILED", message = "priority_fee: no RPC endpoints configured" } end
  local p = opts.percentile or 75
  if type(p) ~= "number" or p <= 0 or p > 100 then
    error(("priority_fee: percentile must be a number in (0, 100], got %s"):format(tostring(p)), 2)
  end
  local keys = {}
  for i, a in ipairs(accounts or {}) do keys[i] = tostring(a) end
  local res = pool:call("getRecentPrioritizationFees", { keys }, { priority = opts.priority or "normal" })
  if not res.ok then return nil, res.error end
  local fees = {}
  for _, f in ipairs(is_table(res.result) and res.result or {}) do
    local v = is_table(f) and tonumber(f.prioritizationFee)
    if v and v > 0 then fees[#fees + 1] = v end
  end
  table.sort(fees)
  local fee = #fees > 0 and fees[math.max(1, math.ceil(p / 100 * #fees))] or 0
  fee = math.max(fee, opts.min or 0)
  if opts.max then fee = math.min(fee, opts.max) end
  return fee
end

-- Sending ----------------------------------------------------------------------------

local function settings() return defaults end

local function b64(bytes) return sol().base64.encode(bytes) end

local function send_params(entry, preflight)
  return { entry.b64, { encoding = "base64", skipPreflight = not preflight, maxRetries = 0,
                        preflightCommitment = entry.preflight_commitment } }
end

-- one sendTransaction to a send-only endpoint (not in the pool: no health checks there)
local function post_send_only(ep, body)
  local ok, res = pcall(rpcm().http_post, ep.url, body, 2000)
  if not ok or not res then log.debug("send-only endpoint failed", { endpoint = ep.name, error = tostring(res) }) end
end

-- the same bytes again, to every healthy endpoint and every send-only one
local function rebroadcast(entry)
  local params = send_params(entry, false)
  for _, ep in ipairs(entry.pool:endpoints()) do
    if ep.healthy ~= false and ep.state ~= "OPEN" then
      entry.sends = entry.sends + 1
      sched.spawn_opts(DAEMON, function()
        entry.pool:call("sendTransaction", params, { endpoint = ep.name, priority = "critical", timeout_ms = 2000 })
      end)
    end
  end
  local extra = entry.send_endpoints
  if #extra > 0 then
    local body = json.encode({ jsonrpc = "2.0", id = 1, method = "sendTransaction", params = params })
    for _, ep in ipairs(extra) do
      entry.sends = entry.sends + 1
      sched.spawn_opts(DAEMON, post_send_only, ep, body)
    end
  end
  M.stats.sends = M.stats.sends + entry.sends - (entry.counted or 0)
  count("send_broadcasts_total", nil, entry.sends - (entry.counted or 0))
  entry.counted = entry.sends
end

-- The poller: one batched status call per tick for every signature in flight on a pool.
local pollers = {} -- pool -> { entries = { [sig] = entry }, n = count }

local function finish(entry, status, slot, err)
  if entry.status then return end
  entry.status, entry.slot, entry.err = status, slot, err
  if entry.task then sched.wake(entry.task, "done", entry.tok) end
end

local function apply_status(entry, v)
  if not is_table(v) then return false end
  local slot = tonumber(v.slot)
  if v.err ~= nil and is_table(v.err) or type(v.err) == "string" then finish(entry, "failed", slot, v.err); return true end
  local cs = v.confirmationStatus
  if COMMITMENT[cs] and COMMITMENT[cs] >= COMMITMENT[entry.commitment] then
    finish(entry, cs == "processed" and "processed" or cs, slot)
    return true
  end
  entry.seen = cs
  return true
end

local function poll_once(pool, P)
  local sigs, list = {}, {}
  for sig, e in pairs(P.entries) do
    if #sigs < MAX_STATUS_BATCH then sigs[#sigs + 1] = sig; list[#list + 1] = e end
  end
  if #sigs == 0 then return end
  local res = pool:batch({ { "getSignatureStatuses", { sigs, { searchTransactionHistory = true } } },
                           { "getBlockHeight", { { commitment = "confirmed" } } } }, { priority = "critical" })
  if not res.ok then log.debug("status poll failed", { error = res.error and res.error.message }); return end
  local st, bh = res.results[1], res.results[2]
  local values = st and st.ok and is_table(st.result) and st.result.value
  local height = bh and bh.ok and tonumber(bh.result)
  P.polls = (P.polls or 0) + 1
  for i, e in ipairs(list) do
    local v = is_table(values) and values[i]
    if not (is_table(v) and apply_status(e, v)) and not e.status then
      if e.expiring then finish(e, "expired") -- the one status check after the height passed found nothing
      elseif height and e.lvbh and height > e.lvbh then e.expiring = true end
    end
  end
  if height then heights[pool] = height end
end

local function ensure_poller(pool, poll_ms)
  local P = pollers[pool]
  if P then return P end
  P = { entries = {}, n = 0, poll_ms = poll_ms }
  pollers[pool] = P
  sched.spawn_opts({ daemon = true, name = "sender.poll", quiet = true }, function()
    while P.n > 0 do
      sched.sleep(P.poll_ms)
      local ok, err = pcall(poll_once, pool, P)
      if not ok then log.error("status poller failed", { error = tostring(err) }) end
    end
    pollers[pool] = nil
  end)
  return P
end

local function track(entry)
  local P = ensure_poller(entry.pool, entry.poll_ms)
  P.poll_ms = math.min(P.poll_ms, entry.poll_ms)
  P.entries[entry.signature] = entry
  P.n = P.n + 1
  return P
end

local function untrack(entry, P)
  if P.entries[entry.signature] == entry then P.entries[entry.signature] = nil; P.n = P.n - 1 end
end

-- A signatureSubscribe notification makes the poller look at once (the
-- status check decides: a notification alone is not trusted).
-- Only where a WebSocket side is known: an endpoint with a ws_url, or an
-- https one (providers serve wss on the same host); a plain http URL's
-- derived ws:// is usually wrong (a local validator listens on port + 1).
local function has_ws(pool)
  for _, ep in ipairs(pool.eps or {}) do
    if ep.ws_url or (type(ep.url) == "string" and ep.url:match("^https://")) then return true end
  end
  return false
end

local function subscribe(entry, P)
  local pool = entry.pool
  if type(pool.subscribe) ~= "function" or entry.subscribe == false then return nil end
  if entry.subscribe ~= true and not has_ws(pool) then return nil end
  local ok, sub = pcall(pool.subscribe, pool, "signatureSubscribe", { entry.signature, { commitment = entry.commitment } },
    function()
      if entry.status then return end
      sched.spawn_opts(DAEMON, function() pcall(poll_once, pool, P) end)
    end)
  return ok and type(sub) == "table" and sub.unsubscribe and sub or nil
end

-- journal and trade hooks (thorp.journal.record_send, thorp.shutdown.complete)
local function journal_send(trade, entry)
  local J = require "thorp.journal"
  if type(J.record_send) ~= "function" then return true end
  if not entry.lvbh then return nil, "the blockhash's last valid block height is unknown (no block height answer)" end
  local called, ok, err = pcall(J.record_send, trade, { signature = entry.signature,
                                                        last_valid_block_height = entry.lvbh, tx = entry.bytes })
  -- (entry.bytes nil: a bundle member, recorded so reconciliation can look it up, never resent alone)
  if not called then return nil, ok end
  if not ok then return nil, err end
  return true
end

local function complete_trade(id, outcome)
  local J = require "thorp.journal"
  local sh = require "thorp.shutdown"
  local arg = type(J.record_send) == "function" and outcome or outcome.status
  local ok, done = pcall(sh.complete, id, arg)
  if not (ok and done) then J.resolve(id, outcome.status) end
end

local function result(entry, t0)
  local status = entry.status
  local ok = status == "confirmed" or status == "finalized" or status == "processed"
  local s = M.stats
  if ok then s.confirmed = s.confirmed + 1 elseif s[status] then s[status] = s[status] + 1 end
  count("send_transactions_total", { status = status })
  return { ok = ok, signature = entry.signature, status = status, err = entry.err, slot = entry.slot,
           sends = entry.sends, latency_ms = sched.now() - t0, error = entry.error }
end

local function check_opts(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then error("send_and_confirm: opts must be a table", 3) end
  if opts.commitment ~= nil and not COMMITMENT[opts.commitment] then
    error(("send_and_confirm: commitment must be \"processed\", \"confirmed\" or \"finalized\", got %s")
      :format(tostring(opts.commitment)), 3)
  end
  for _, k in ipairs{ "rebroadcast_ms", "poll_ms", "timeout_ms" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] <= 0) then
      error(("send_and_confirm: %s must be a number > 0, got %s"):format(k, tostring(opts[k])), 3)
    end
  end
  return opts
end

--- send_and_confirm(tx, opts) -> res (see the top of this file)
-- opts: commitment, skip_preflight, rebroadcast_ms, poll_ms, timeout_ms,
-- trade (journaled trade id), last_valid_block_height (when the blockhash
-- did not come from thorp.solana.blockhash()), pool, send_endpoints,
-- bundle (a list of more signed transactions: sent as one Jito bundle),
-- simulate = true | { margin = } with tx the spec table and signers = {kp, ...}
-- (see prepare: the compute unit limit from a simulation, then signed).
function M.send_and_confirm(tx, opts)
  opts = check_opts(opts)
  if not sched.current() then error("send_and_confirm: call it from a coroutine (a handler, thorp.spawn, a script)", 2) end
  if opts.bundle then
    local txs = { tx }
    for _, t in ipairs(opts.bundle == true and {} or opts.bundle) do txs[#txs + 1] = t end
    return M.send_bundle(txs, opts)
  end
  local t0 = sched.now()
  local pool = default_pool(opts)
  if not pool then return errv("ALL_ENDPOINTS_FAILED", "send_and_confirm: no RPC endpoints configured") end
  if opts.simulate then
    -- the limit is part of the signed message: build from the spec, simulate, rebuild, sign
    if type(tx) ~= "table" or tx.serialize or type(opts.signers) ~= "table" then
      return errv("BAD_TRANSACTION", "send_and_confirm: opts.simulate needs the transaction's spec (the table for "
        .. "thorp.solana.transaction) and opts.signers, to set the compute unit limit before signing")
    end
    local built, info = M.prepare(tx, opts.signers, type(opts.simulate) == "table" and opts.simulate or { pool = pool })
    if not built then return errv(info.code, "send_and_confirm: " .. tostring(info.message), { err = info.err }) end
    tx = built
  end
  local bytes, signature, blockhash = wire(tx)
  if not bytes then return signature end
  local s = settings()
  local entry = { pool = pool, bytes = bytes, b64 = b64(bytes), signature = signature, sends = 0,
                  commitment = opts.commitment or "confirmed", poll_ms = opts.poll_ms or s.poll_ms,
                  send_endpoints = opts.send_endpoints or s.send_endpoints,
                  lvbh = opts.last_valid_block_height or known[blockhash],
                  preflight_commitment = opts.preflight_commitment, subscribe = opts.subscribe }
  if not entry.lvbh then
    -- a blockhash we did not hand out: its last valid height is at most 150 blocks ahead
    local r = pool:call("getBlockHeight", { { commitment = "confirmed" } }, { priority = "critical" })
    if r.ok and tonumber(r.result) then entry.lvbh = tonumber(r.result) + 150 end
  end
  if opts.trade and not opts.resume then
    local ok, err = journal_send(tostring(opts.trade), entry)
    if not ok then
      return errv("JOURNAL_ERROR", "send_and_confirm: the signature could not be journaled, nothing was sent: "
        .. tostring(is_table(err) and err.message or err))
    end
  end
  M.stats.sent = M.stats.sent + 1
  -- the first send: through the pool (best endpoint), with preflight unless skipped
  local first = pool:call("sendTransaction", send_params(entry, not opts.skip_preflight and not opts.resume),
                          { priority = "critical" })
  entry.sends, entry.counted = 1, 1
  M.stats.sends = M.stats.sends + 1
  count("send_broadcasts_total", nil, 1)
  if not first.ok then
    local e = first.error or {}
    local msg = tostring(e.message or "")
    local unseen = msg:find("Blockhash not found", 1, true) or is_table(e.data) and e.data.err == "BlockhashNotFound"
    if unseen then
      -- that node has not seen the blockhash yet (it lags the one that gave it): the
      -- others and the leaders may have; send at once without preflight, and let the
      -- rebroadcasts and the expiry check decide
      log.warn("first send: the endpoint does not know the blockhash yet; sending without preflight",
               { signature = signature, endpoint = first.endpoint or e.endpoint })
      rebroadcast(entry)
    elseif e.code == "RPC_ERROR" and not msg:find("already been processed", 1, true) then
      -- preflight refused it: it never reached a leader
      entry.status, entry.error = "failed", e
      entry.err = is_table(e.data) and e.data.err or msg
      local res = result(entry, t0)
      if opts.trade then complete_trade(tostring(opts.trade), { status = "failed", err = msg, signature = signature }) end
      return res
    else
      log.warn("first send failed; rebroadcasting", { signature = signature, error = msg })
    end
  end
  local P = track(entry)
  local sub = subscribe(entry, P)
  local interval = opts.rebroadcast_ms or s.rebroadcast_ms
  local deadline = t0 + (opts.timeout_ms or s.timeout_ms)
  local next_send = sched.now() + interval
  local task = sched.current()
  entry.task = task
  while not entry.status do
    local t = sched.now()
    if t >= deadline then entry.status = "timeout"; break end
    if t >= next_send and not entry.expiring then
      rebroadcast(entry)
      next_send = t + interval
    end
    entry.tok = sched.token(task)
    local tok = entry.tok
    local timer = sched.daemon_after(math.max(1, math.min(next_send, deadline) - t), function()
      sched.wake(task, "tick", tok)
    end, "sender.wait")
    sched.suspend()
    timer:cancel()
  end
  entry.task = nil
  untrack(entry, P)
  if sub and sub.unsubscribe then pcall(sub.unsubscribe, sub) end
  local res = result(entry, t0)
  if opts.trade then
    complete_trade(tostring(opts.trade), { status = res.status, slot = res.slot, err = res.err, signature = signature })
  end
  if not res.ok then
    log.warn("transaction not confirmed", { signature = signature, status = res.status, sends = res.sends,
                                            trade_id = opts.trade })
  end
  return res
end

-- Jito ---------------------------------------------------------------------------------

M.jito = {
  -- the tip accounts Jito publishes (getTipAccounts); one is chosen at random per tip
  tip_accounts = {
    "96gYZGLnJYVFmbjzopPSU6QiEV5fGqZNyN9nmNhvrZU5", "HFqU5x63VTqvQss8hp11i4wVV8bD44PvwucfZ2bU7gRe",
    "Cw8CFyM9FkoMi7K7Crf6HNQqf4uEMzpKw6QNghXLvLkY", "ADaUMid9yfUytqMBgopwjb2DTLSokTSzL1zt6iGPaS49",
    "DfXygSm4jCyNCybVYYK6DwvWqjKee8pbDmJGcLWNDXjh", "ADuUkR4vqLUMWXxW9gh6D6L8pMSawimctcNZ5pGwDcEt",
    "DttWaMuVvTiduZRnguLF7jNxTgiMBZ1hyAumKUiL2KRL", "3AVi9Tg9Uo68tJfuvoKvqKNWKkC5wPdSSdeBnizKZ6jT",
  },
}

--- jito.tip(payer, lamports) -> a system transfer to one of the tip accounts
function M.jito.tip(payer, lamports)
  local S = sol()
  local list = M.jito.tip_accounts
  return S.system.transfer(S.pubkey(payer), S.pubkey(list[math.random(#list)]), lamports)
end

local function bundle_endpoint(opts)
  if opts.bundle_endpoint then return opts.bundle_endpoint end
  for _, ep in ipairs(opts.send_endpoints or settings().send_endpoints) do
    if ep.bundles ~= false then return ep end
  end
end

local function post_json(url, method, params)
  local r, err = rpcm().http_post(url, json.encode({ jsonrpc = "2.0", id = 1, method = method, params = params }), 5000)
  if not r then return nil, { code = "TRANSPORT_ERROR", message = tostring(err) } end
  local doc = json.decode(r.body or "")
  if not is_table(doc) then
    return nil, { code = "BAD_RESPONSE", message = ("%s: HTTP %s"):format(method, tostring(r.status)) }
  end
  if is_table(doc.error) then
    return nil, { code = "RPC_ERROR", rpc_code = doc.error.code, message = tostring(doc.error.message) }
  end
  return doc.result
end

--- send_bundle(txs, opts) -> { ok, bundle_id, status, slot, signatures, sends, latency_ms }
-- Up to 5 signed transactions, sent together to the block engine
-- (opts.bundle_endpoint or the first of send.endpoints), all or nothing,
-- resent every opts.rebroadcast_ms until getBundleStatuses shows it at the
-- commitment, or the first transaction's blockhash expires.
function M.send_bundle(txs, opts)
  opts = check_opts(opts)
  local t0 = sched.now()
  if type(txs) ~= "table" or #txs < 1 or #txs > 5 then
    return errv("BAD_TRANSACTION", ("send_bundle: a bundle holds 1 to 5 transactions, got %s")
      :format(type(txs) == "table" and #txs or type(txs)))
  end
  local ep = bundle_endpoint(opts)
  if not ep then
    return errv("ALL_ENDPOINTS_FAILED",
      "send_bundle: no block engine: set send.endpoints (THORP_SEND_URLS) or opts.bundle_endpoint")
  end
  local list, sigs, lvbh = {}, {}, opts.last_valid_block_height
  for i, tx in ipairs(txs) do
    local bytes, sig, bh = wire(tx)
    if not bytes then return sig end
    list[i], sigs[i] = b64(bytes), sig
    lvbh = lvbh or known[bh]
  end
  local commitment = opts.commitment or "confirmed"
  local interval, poll = opts.rebroadcast_ms or settings().rebroadcast_ms, opts.poll_ms or defaults.poll_ms
  local deadline = t0 + (opts.timeout_ms or defaults.timeout_ms)
  local pool = default_pool(opts)
  if not lvbh and pool then
    local r = pool:call("getBlockHeight", { { commitment = "confirmed" } }, { priority = "critical" })
    if r.ok and tonumber(r.result) then lvbh = tonumber(r.result) + 150 end
  end
  if opts.trade then
    -- the first signature stands for the bundle; no bytes: a member must never go out alone
    local ok, jerr = journal_send(tostring(opts.trade), { signature = sigs[1], lvbh = lvbh })
    if not ok then
      return errv("JOURNAL_ERROR", "send_bundle: the signature could not be journaled, nothing was sent: "
        .. tostring(is_table(jerr) and jerr.message or jerr))
    end
  end
  local id, err = post_json(ep.url, "sendBundle", { list, { encoding = "base64" } })
  if not id then
    if opts.trade then complete_trade(tostring(opts.trade), { status = "failed", err = err.message, signature = sigs[1] }) end
    return errv(err.code, "send_bundle: " .. err.message)
  end
  local sends, next_send, expiring = 1, sched.now() + interval, false
  local function outcome(status, v)
    return { ok = status == "confirmed" or status == "finalized" or status == "processed", bundle_id = id,
             status = status, slot = v and tonumber(v.slot), err = v and v.err, signatures = sigs, sends = sends,
             latency_ms = sched.now() - t0 }
  end
  local function follow()
    while true do
      sched.sleep(poll)
      local st = post_json(ep.url, "getBundleStatuses", { { id } })
      local v = is_table(st) and is_table(st.value) and st.value[1]
      if is_table(v) then
        local cs = v.confirmation_status
        if is_table(v.err) and v.err.Ok == nil then return outcome("failed", v) end
        if COMMITMENT[cs] and COMMITMENT[cs] >= COMMITMENT[commitment] then v.err = nil; return outcome(cs, v) end
      elseif expiring then
        return outcome("expired")
      end
      if sched.now() >= deadline then return outcome("timeout") end
      if lvbh and pool then
        local h = pool:call("getBlockHeight", { { commitment = "confirmed" } }, { priority = "critical" })
        if h.ok and tonumber(h.result) and tonumber(h.result) > lvbh then expiring = true end
      end
      if not expiring and sched.now() >= next_send then
        post_json(ep.url, "sendBundle", { list, { encoding = "base64" } })
        sends, next_send = sends + 1, sched.now() + interval
      end
    end
  end
  local res = follow()
  if opts.trade then
    complete_trade(tostring(opts.trade), { status = res.status, slot = res.slot, err = res.err, signature = sigs[1],
                                           bundle_id = id })
  end
  return res
end

-- Compute units from a simulation ----------------------------------------------------------

--- prepare(spec, signers, opts) -> tx, { units, limit } | nil, err
-- Builds thorp.solana.transaction(spec) with the maximum compute unit limit,
-- signs it, asks simulateTransaction for unitsConsumed, then builds and
-- signs it again with the limit set to units * (1 + opts.margin (0.1)) +
-- opts.extra (1000): a priority fee is paid per unit of the limit, so a
-- tight limit costs less. spec.instructions must not set the limit itself.
function M.prepare(spec, signers, opts)
  opts = opts or {}
  local S = sol()
  local pool = default_pool(opts)
  if not pool then return nil, { code = "ALL_ENDPOINTS_FAILED", message = "prepare: no RPC endpoints configured" } end
  if type(signers) ~= "table" then error("prepare: signers must be a keypair or a list of keypairs", 2) end
  if signers.pubkey then signers = { signers } end
  local function build(limit)
    local s = {}
    for k, v in pairs(spec) do s[k] = v end
    s.instructions = { S.compute_budget.set_compute_unit_limit(limit) }
    for _, ix in ipairs(spec.instructions) do s.instructions[#s.instructions + 1] = ix end
    local tx = S.transaction(s)
    tx:sign(unpack(signers))
    return tx
  end
  local probe = build(1400000)
  local res = pool:call("simulateTransaction", { probe:base64(), { encoding = "base64", sigVerify = false,
                                                                   replaceRecentBlockhash = true } },
                        { priority = opts.priority or "critical" })
  local v = res.ok and is_table(res.result) and res.result.value
  if not is_table(v) then return nil, res.error or { code = "BAD_RESPONSE", message = "simulateTransaction: no value" } end
  if is_table(v.err) or type(v.err) == "string" then
    return nil, { code = "SIMULATION_FAILED", message = "prepare: the simulation failed", err = v.err, logs = v.logs }
  end
  local units = tonumber(v.unitsConsumed) or 0
  local limit = math.min(1400000, math.ceil(units * (1 + (opts.margin or 0.1))) + (opts.extra or 1000))
  return build(limit), { units = units, limit = limit }
end

-- Reconciliation ---------------------------------------------------------------------------

local function trade_field(t, k)
  if t[k] ~= nil then return t[k] end
  return is_table(t.meta) and t.meta[k] or nil
end

local reconciling

--- reconcile(opts) -> { { id, signature, status, slot, err }, ... }
-- Trades a previous run left open with a journaled signature: looked up
-- (getSignatureStatuses with history); landed -> completed with its slot;
-- failed -> completed with its error; not found and the block height past
-- its last valid block height -> expired; still valid -> the journaled
-- bytes are rebroadcast until it lands or expires. Runs once per process
-- (start does it in run and exec); later calls return the same outcomes;
-- opts.force runs it again.
function M.reconcile(opts)
  opts = opts or {}
  if reconciling and not opts.force then
    while not reconciling.done do sched.sleep(20) end
    return reconciling.outcomes
  end
  local run = { outcomes = {} }
  reconciling = run
  local pool = default_pool(opts)
  local todo = {}
  for _, t in ipairs(require("thorp.journal").open_trades()) do
    if trade_field(t, "signature") then todo[#todo + 1] = t end
  end
  if #todo == 0 or not pool then run.done = true; return run.outcomes end
  local R = M.stats.reconciled
  local sigs = {}
  for i, t in ipairs(todo) do sigs[i] = trade_field(t, "signature") end
  local res = pool:batch({ { "getSignatureStatuses", { sigs, { searchTransactionHistory = true } } },
                           { "getBlockHeight", { { commitment = "confirmed" } } } }, { priority = "critical" })
  local values = res.ok and res.results[1].ok and is_table(res.results[1].result) and res.results[1].result.value
  local height = res.ok and res.results[2].ok and tonumber(res.results[2].result)
  local waits = {}
  for i, t in ipairs(todo) do
    local sig, lvbh = sigs[i], tonumber(trade_field(t, "last_valid_block_height"))
    local v = is_table(values) and values[i]
    local out = { id = t.id, signature = sig }
    if is_table(v) and (is_table(v.err) or type(v.err) == "string") then
      out.status, out.slot, out.err = "failed", tonumber(v.slot), v.err
    elseif is_table(v) and COMMITMENT[v.confirmationStatus] and COMMITMENT[v.confirmationStatus] >= 2 then
      out.status, out.slot = v.confirmationStatus, tonumber(v.slot)
    elseif not values or not height then
      out.status = "unknown" -- no answer: left open for the next start
    elseif not is_table(v) and lvbh and height > lvbh then
      out.status = "expired"
    else
      out.status = "rebroadcast"
    end
    run.outcomes[i] = out
    if out.status == "rebroadcast" then
      R.rebroadcast = R.rebroadcast + 1
      count("send_reconciled_total", { outcome = "rebroadcast" })
      local bytes = trade_field(t, "tx")
      if type(bytes) ~= "string" then
        out.status = "unknown"
      else
        waits[#waits + 1] = out
        sched.spawn_opts(DAEMON, function()
          local r = M.send_and_confirm(bytes, { resume = true, trade = t.id, last_valid_block_height = lvbh,
                                                rebroadcast_ms = opts.rebroadcast_ms, poll_ms = opts.poll_ms, pool = pool })
          out.status, out.slot, out.err, out.done = r.status, r.slot, r.err, true
          log.info("reconciled trade", { trade_id = t.id, signature = sig, status = r.status, slot = r.slot })
        end)
      end
    end
    if out.status ~= "rebroadcast" then
      out.done = true
      local kind = (out.status == "confirmed" or out.status == "finalized") and "landed" or out.status
      R[kind] = (R[kind] or 0) + 1
      count("send_reconciled_total", { outcome = kind })
      if out.status ~= "unknown" then
        complete_trade(t.id, { status = kind == "landed" and "confirmed" or out.status, slot = out.slot, err = out.err,
                               signature = sig })
      end
      log[out.status == "unknown" and "warn" or "info"]("reconciled trade", { trade_id = t.id, signature = sig,
        status = out.status, slot = out.slot, err = out.err })
    end
  end
  if opts.wait ~= false then
    for _, out in ipairs(waits) do while not out.done do sched.sleep(20) end end
  end
  run.done = true
  return run.outcomes
end

function M.start(cfg, mode)
  local s = cfg and cfg.send or {}
  defaults.send_endpoints = s.endpoints or {}
  defaults.rebroadcast_ms = s.rebroadcast_ms or 1000
  if (mode == "run" or mode == "exec") and s.reconcile ~= false then
    sched.spawn_opts({ daemon = true, name = "sender.reconcile" }, function()
      local ok, err = pcall(M.reconcile)
      if not ok then log.error("reconciliation failed", { error = tostring(err) }) end
    end)
  end
  return true
end

function M.stop()
  for pool, c in pairs(caches) do
    if c.refresher then c.refresher:cancel() end
    caches[pool], heights[pool] = nil, nil
  end
end

return M
