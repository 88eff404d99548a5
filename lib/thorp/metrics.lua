-- thorp.metrics: the host's state in Prometheus text format (version 0.0.4),
-- served on GET /metrics by thorp.http.
--
--   local text = thorp.metrics.render()          -- or render{ pool = p } for another pool
--
-- Every name starts with thorp_; counters end in _total. Each scrape reads
-- the modules' own statistics (rpc endpoints and breakers, admission, bus,
-- shutdown, journal, policy, the HTTP listener), so there is nothing to keep
-- in step and a module that is not loaded is simply left out. The full list
-- of names is in docs/http.md.
local sched = require "thorp.sched"

local M = {}

local fmt, concat, tostring, type, pairs, ipairs, floor = string.format, table.concat, tostring, type, pairs, ipairs,
  math.floor

local function num(v)
  if type(v) == "boolean" then return v and "1" or "0" end
  v = tonumber(v) or 0
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return fmt("%d", v) end
  local s = fmt("%.15g", v)
  if tonumber(s) ~= v then s = fmt("%.17g", v) end
  return s
end

local function esc(v) return (tostring(v):gsub("[\\\"\n]", { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" })) end

-- A writer: family(name, type, help) then sample(value, labels...) calls;
-- labels are given as alternating name, value.
local function writer()
  local out, cur = {}, nil
  local w = {}
  function w.family(name, typ, help)
    cur = "thorp_" .. name
    out[#out + 1] = "# HELP " .. cur .. " " .. help:gsub("\\", "\\\\"):gsub("\n", "\\n")
    out[#out + 1] = "# TYPE " .. cur .. " " .. typ
  end
  function w.sample(suffix, value, ...)
    local n = select("#", ...)
    local line = cur .. suffix
    if n > 0 then
      local parts = {}
      for i = 1, n, 2 do parts[#parts + 1] = (select(i, ...)) .. '="' .. esc((select(i + 1, ...))) .. '"' end
      line = line .. "{" .. concat(parts, ",") .. "}"
    end
    out[#out + 1] = line .. " " .. num(value)
  end
  -- one family, one unlabelled sample
  function w.one(name, typ, help, value)
    w.family(name, typ, help)
    w.sample("", value)
  end
  function w.text() return concat(out, "\n") .. "\n" end
  return w
end

local function loaded(name) return package.loaded[name] end

------------------------------------------------------------------------------
-- Counters other modules feed
------------------------------------------------------------------------------

-- RPC calls by method: the methods a Solana node serves keep their name,
-- anything else is "other" (a label per typo would grow without bound).
local KNOWN_METHODS = {}
for m in ([[getAccountInfo getBalance getBlock getBlockCommitment getBlockHeight getBlockProduction getBlocks
  getBlocksWithLimit getBlockTime getClusterNodes getEpochInfo getEpochSchedule getFeeForMessage
  getFirstAvailableBlock getGenesisHash getHealth getHighestSnapshotSlot getIdentity getInflationGovernor
  getInflationRate getInflationReward getLargestAccounts getLatestBlockhash getLeaderSchedule getMaxRetransmitSlot
  getMaxShredInsertSlot getMinimumBalanceForRentExemption getMultipleAccounts getProgramAccounts
  getRecentPerformanceSamples getRecentPrioritizationFees getSignaturesForAddress getSignatureStatuses getSlot
  getSlotLeader getSlotLeaders getStakeMinimumDelegation getSupply getTokenAccountBalance
  getTokenAccountsByDelegate getTokenAccountsByOwner getTokenLargestAccounts getTokenSupply getTransaction
  getTransactionCount getVersion getVoteAccounts isBlockhashValid minimumLedgerSlot requestAirdrop
  sendTransaction simulateTransaction getPriorityFeeEstimate getAsset getAssetsByOwner sendBundle
  getBundleStatuses getTipAccounts]]):gmatch("%S+") do KNOWN_METHODS[m] = true end
M.KNOWN_METHODS = KNOWN_METHODS

local LAT_BOUNDS = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
local by_method = {} -- method -> { outcomes = { [outcome] = n }, buckets = {...}, sum, n }

--- observe_call(method, res, ms): one RPC call and its result, for the per-method families.
function M.observe_call(method, res, ms)
  local m = KNOWN_METHODS[method] and method or "other"
  local rec = by_method[m]
  if not rec then
    rec = { outcomes = {}, buckets = {}, sum = 0, n = 0 }
    for i = 1, #LAT_BOUNDS do rec.buckets[i] = 0 end
    by_method[m] = rec
  end
  local outcome = "ok"
  if type(res) ~= "table" or not res.ok then
    local e = type(res) == "table" and type(res.error) == "table" and res.error.code
    outcome = type(e) == "string" and e:lower() or "error"
  end
  rec.outcomes[outcome] = (rec.outcomes[outcome] or 0) + 1
  local sec = (tonumber(ms) or 0) / 1000
  for i, b in ipairs(LAT_BOUNDS) do if sec <= b then rec.buckets[i] = rec.buckets[i] + 1 end end
  rec.sum, rec.n = rec.sum + sec, rec.n + 1
end

-- Trade outcomes, from thorp.shutdown.complete(id, status) (status a string
-- or { status = ... }) and the trades a shutdown abandons.
local TRADE_OUTCOME = { confirmed = "confirmed", finalized = "confirmed", landed = "confirmed", ok = "confirmed",
                        success = "confirmed", failed = "failed", error = "failed", expired = "expired",
                        timeout = "expired", abandoned = "abandoned" }
local TRADE_ORDER = { "confirmed", "failed", "expired", "abandoned", "other" }
local trades = { confirmed = 0, failed = 0, expired = 0, abandoned = 0, other = 0 }
function M.trade_outcome(status)
  if type(status) == "table" then status = status.status end
  local o = TRADE_OUTCOME[type(status) == "string" and status:lower() or ""] or "other"
  trades[o] = trades[o] + 1
end

-- Named counters any module can bump: counter_add(name, labels, n [, help]).
-- name gets the thorp_ prefix; labels is a table of label = value. Declared
-- families (declare) show 0 before their first increment.
local custom, custom_order = {}, {}
local NAME = "^[a-zA-Z_][a-zA-Z0-9_]*$"
function M.declare(name, help, typ)
  if type(name) ~= "string" or not name:match(NAME) then error("metrics: bad metric name " .. tostring(name), 2) end
  if not custom[name] then
    custom[name] = { help = help or name, type = typ or "counter", series = {}, order = {} }
    custom_order[#custom_order + 1] = name
  elseif help then custom[name].help = help end
  return custom[name]
end
function M.counter_add(name, labels, n, help)
  local f = custom[name] or M.declare(name, help)
  local keys = {}
  for k in pairs(labels or {}) do
    if type(k) ~= "string" or not k:match(NAME) then error("metrics.counter_add: bad label name " .. tostring(k), 2) end
    keys[#keys + 1] = k
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "\0" .. tostring(labels[k]) end
  local key = table.concat(parts, "\1")
  local sr = f.series[key]
  if not sr then
    sr = { value = 0, labels = {} }
    for _, k in ipairs(keys) do sr.labels[#sr.labels + 1] = k; sr.labels[#sr.labels + 1] = tostring(labels[k]) end
    f.series[key] = sr
    f.order[#f.order + 1] = key
  end
  sr.value = sr.value + (tonumber(n) or 1)
end
M.declare("journal_io_errors_total", "Journal I/O errors (SQLite reads and writes that failed).")

local function custom_section(w)
  for _, name in ipairs(custom_order) do
    local f = custom[name]
    w.family(name, f.type, f.help)
    if #f.order == 0 then w.sample("", 0) end
    for _, key in ipairs(f.order) do
      local sr = f.series[key]
      w.sample("", sr.value, unpack(sr.labels))
    end
  end
end

local function calls_section(w)
  local methods = {}
  for m in pairs(by_method) do methods[#methods + 1] = m end
  table.sort(methods)
  w.family("rpc_method_calls_total", "counter", "RPC calls by method (known Solana methods, else other) and outcome.")
  for _, m in ipairs(methods) do
    local outs = {}
    for o in pairs(by_method[m].outcomes) do outs[#outs + 1] = o end
    table.sort(outs)
    for _, o in ipairs(outs) do w.sample("", by_method[m].outcomes[o], "method", m, "outcome", o) end
  end
  w.family("rpc_method_latency_seconds", "histogram", "RPC call latency by method (admission to answer).")
  for _, m in ipairs(methods) do
    local rec = by_method[m]
    for i, b in ipairs(LAT_BOUNDS) do w.sample("_bucket", rec.buckets[i], "method", m, "le", num(b)) end
    w.sample("_bucket", rec.n, "method", m, "le", "+Inf")
    w.sample("_sum", rec.sum, "method", m)
    w.sample("_count", rec.n, "method", m)
  end
  w.family("trades_total", "counter", "Trades completed, by outcome (thorp.shutdown.complete), and abandoned.")
  for _, o in ipairs(TRADE_ORDER) do w.sample("", trades[o], "outcome", o) end
end

------------------------------------------------------------------------------
-- Sections
------------------------------------------------------------------------------

local ERR_CLASSES = { "TIMEOUT", "TRANSPORT_ERROR", "HTTP_ERROR", "RPC_ERROR", "BAD_RESPONSE", "RATE_LIMITED" }
local BREAKER_STATE = { CLOSED = 0, HALF_OPEN = 1, OPEN = 2 }

local function rpc_section(w, explicit)
  local rpc = loaded("thorp.rpc")
  if not rpc then return end
  local pool = explicit or rpc.default_pool()
  if not explicit then
    local s = rpc.stats()
    w.family("rpc_calls_total", "counter", "RPC calls made through the host's pool, by outcome.")
    w.sample("", s.ok, "outcome", "ok")
    w.sample("", s.failed, "outcome", "failed")
    w.sample("", s.rejected, "outcome", "rejected")
    w.sample("", s.shed_shutdown, "outcome", "shutting_down")
    w.one("rpc_retries_total", "counter", "Attempts beyond the first (failover), within the retry budget.", s.retries)
    w.one("rpc_hedges_total", "counter", "Hedged reads: a second endpoint asked because the first was slow.", s.hedges)
    w.one("rpc_hedge_wins_total", "counter", "Hedged reads answered first by the hedge.", s.hedge_wins)
    w.one("rpc_http_inflight", "gauge", "HTTP requests to endpoints in flight.", s.inflight_http)
  end
  if not pool then return end
  local eps = pool:endpoints()
  local raw = pool.eps or {}
  local function each(name, typ, help, get)
    w.family(name, typ, help)
    for i, e in ipairs(eps) do
      local v = get(e, raw[i])
      if v ~= nil then w.sample("", v, "endpoint", e.name) end
    end
  end
  each("rpc_endpoint_requests_total", "counter", "Requests sent to the endpoint (attempts, hedges included).",
    function(e) return e.calls end)
  each("rpc_endpoint_successes_total", "counter", "Requests the endpoint answered successfully.",
    function(e) return e.successes end)
  w.family("rpc_endpoint_errors_total", "counter", "Failed requests by class (rate_limited: HTTP 429 or -32429).")
  for _, e in ipairs(eps) do
    for _, c in ipairs(ERR_CLASSES) do w.sample("", (e.errors or {})[c] or 0, "endpoint", e.name, "class", c:lower()) end
  end
  each("rpc_endpoint_rate_limited_total", "counter", "HTTP 429 answers (the endpoint is then backed off).",
    function(e) return (e.errors or {}).RATE_LIMITED or 0 end)
  each("rpc_endpoint_rate_limited", "gauge", "1 while the endpoint is backed off after a 429.",
    function(e) return (e.rate_limited_ms or 0) > 0 end)
  each("rpc_endpoint_inflight", "gauge", "Requests to the endpoint in flight.", function(e) return e.inflight end)
  each("rpc_endpoint_healthy", "gauge", "1 when the health checker keeps the endpoint in rotation.",
    function(e) return e.healthy and true or false end)
  each("rpc_endpoint_slot", "gauge", "Last slot the endpoint reported (processed).", function(e) return e.slot end)
  each("rpc_endpoint_slot_lag", "gauge", "Slots behind the most advanced endpoint.", function(e) return e.lag end)
  each("rpc_endpoint_breaker_state", "gauge", "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
    function(e) return BREAKER_STATE[e.state] or 0 end)
  each("rpc_endpoint_breaker_transitions_total", "counter", "Circuit breaker state changes.",
    function(_, r) return r and r.breaker and r.breaker:stats().state_changes end)
  each("rpc_endpoint_breaker_trips_total", "counter", "Times the circuit breaker opened.",
    function(_, r) return r and r.breaker and r.breaker:stats().trips end)
  -- Latency: a cumulative histogram when the pool keeps one, else recent quantiles.
  local hist = false
  for _, e in ipairs(eps) do if type(e.latency_histogram) == "table" then hist = true end end
  if hist then
    w.family("rpc_endpoint_latency_seconds", "histogram", "Latency of successful requests.")
    for _, e in ipairs(eps) do
      local h = e.latency_histogram
      if type(h) == "table" then
        local cum = 0
        for i, b in ipairs(h.bounds) do
          cum = cum + (h.counts[i] or 0)
          w.sample("_bucket", cum, "endpoint", e.name, "le", num(b / 1000))
        end
        w.sample("_bucket", h.count, "endpoint", e.name, "le", "+Inf")
        w.sample("_sum", (h.sum_ms or 0) / 1000, "endpoint", e.name)
        w.sample("_count", h.count, "endpoint", e.name)
      end
    end
  else
    w.family("rpc_endpoint_latency_recent_seconds", "gauge",
      "Latency quantiles over the endpoint's last 128 successful requests.")
    for _, e in ipairs(eps) do
      local l = e.latency_ms
      if l then
        w.sample("", l.p50 / 1000, "endpoint", e.name, "quantile", "0.5")
        w.sample("", l.p90 / 1000, "endpoint", e.name, "quantile", "0.9")
        w.sample("", l.p99 / 1000, "endpoint", e.name, "quantile", "0.99")
      end
    end
  end
end

local PRIOS = require("thorp.priority").NAMES
local ADM_STATUS = { HEALTHY = 0, WARNING = 1, CRITICAL = 2 }

local function admission_section(w)
  local bp = loaded("thorp.backpressure")
  local d = bp and rawget(bp, "default")
  if not d then return end
  local s = d:stats()
  w.one("admission_utilization_ratio", "gauge", "Admission utilization (load / capacity).", (s.utilization or 0) / 100)
  w.one("admission_load", "gauge", "Admitted work in flight.", s.current_load)
  w.one("admission_capacity", "gauge", "Admission capacity (BACKPRESSURE_MAX_QUEUE_SIZE).", s.max_queue_size)
  w.one("admission_peak_load", "gauge", "Highest load seen.", s.peak_load)
  w.one("admission_status", "gauge", "Admission status: 0 healthy, 1 warning, 2 critical.", ADM_STATUS[s.status] or 0)
  w.one("admission_critical_reserve", "gauge", "Slots currently kept free for critical work.", s.critical_reserve)
  local by = s.by_priority or {}
  for _, f in ipairs{ { "offered", "Work offered to admission" }, { "accepted", "Work admitted" },
                      { "rejected", "Work refused by admission" } } do
    w.family("admission_" .. f[1] .. "_total", "counter", f[2] .. ", by priority.")
    for _, p in ipairs(PRIOS) do w.sample("", (by[p] or {})[f[1]] or 0, "priority", p) end
  end
  w.family("admission_inflight", "gauge", "Admitted work in flight, by priority.")
  for _, p in ipairs(PRIOS) do w.sample("", (by[p] or {}).load or 0, "priority", p) end
  if type(s.by_reason) == "table" then
    w.family("admission_rejected_by_reason_total", "counter", "Work refused by admission, by reason.")
    local reasons = {}
    for r in pairs(s.by_reason) do reasons[#reasons + 1] = r end
    table.sort(reasons)
    for _, r in ipairs(reasons) do w.sample("", s.by_reason[r], "reason", r) end
  end
end

local function bus_section(w)
  local bm = loaded("thorp.bus")
  local b = bm and rawget(bm, "default")
  if not b then return end
  local s = b:stats()
  w.one("bus_published_total", "counter", "Events accepted by publish().", s.published)
  w.one("bus_delivered_total", "counter", "Events handled by a subscriber.", s.delivered)
  w.one("bus_handler_failures_total", "counter", "Subscriber handler errors.", s.failures)
  w.family("bus_dropped_total", "counter", "Events not delivered, by reason.")
  local reasons = {}
  for r, n in pairs(s.dropped_by_reason or {}) do reasons[#reasons + 1] = { r:lower(), n } end
  table.sort(reasons, function(a, b2) return a[1] < b2[1] end)
  for _, r in ipairs(reasons) do w.sample("", r[2], "reason", r[1]) end
  w.sample("", s.undelivered, "reason", "no_subscriber")
  w.sample("", s.skipped, "reason", "quarantined")
  w.one("bus_reorder_gaps_total", "counter", "Sequence gaps given up on after reorder_window_ms.", s.reorder_gaps)
  local lanes = s.queued_by_lane
  w.family("bus_queue_depth", "gauge", "Events published and not yet dispatched, by lane.")
  if type(lanes) == "table" then
    for _, p in ipairs(PRIOS) do w.sample("", lanes[p] or 0, "lane", p) end
  else
    w.sample("", s.queued, "lane", "all")
  end
  w.one("bus_queue_capacity", "gauge", "Bus queue capacity (max_queue_size).", s.max_queue_size)
  w.one("bus_held", "gauge", "Events held back waiting for a sequence gap to fill.", s.held)
  w.one("bus_mailbox_depth", "gauge", "Events waiting in subscriber mailboxes.", s.in_mailboxes)
  local subs, quarantined = 0, 0
  for _, sub in ipairs(s.subscribers or {}) do
    subs = subs + 1
    if sub.quarantined then quarantined = quarantined + 1 end
  end
  w.one("bus_subscribers", "gauge", "Subscribers.", subs)
  w.one("bus_subscribers_quarantined", "gauge", "Subscribers quarantined for failing too often.", quarantined)
  local topics = {}
  for name in pairs(s.topics or {}) do topics[#topics + 1] = name end
  table.sort(topics)
  for _, f in ipairs{ { "published", "counter", "Events published" }, { "delivered", "counter", "Events delivered" },
                      { "dropped", "counter", "Events dropped" }, { "queued", "gauge", "Events queued" } } do
    w.family("bus_topic_" .. f[1] .. (f[2] == "counter" and "_total" or ""), f[2], f[3] .. ", by topic.")
    for _, t in ipairs(topics) do w.sample("", s.topics[t][f[1]] or 0, "topic", t) end
  end
end

local function shutdown_section(w)
  local sd = loaded("thorp.shutdown")
  if sd then
    local s = sd.status()
    w.one("shutdown_in_progress", "gauge", "1 while the host drains for shutdown.", s.shutting_down and true or false)
    w.one("active_trades", "gauge", "Trades registered and not completed.", s.active_trades)
    w.one("active_operations", "gauge", "Other operations registered and not completed.", s.active_operations)
  end
  local j = loaded("thorp.journal")
  if j and j.stats then
    local s = j.stats()
    w.one("journal_open_trades", "gauge", "Trades open in the journal (this run and any left by an earlier one).",
      s.open)
    w.one("journal_idempotency_keys", "gauge", "Idempotency keys held.", s.idempotency_keys)
    w.one("journal_errors_total", "counter", "Journal I/O failures (writes that could not be made durable).", s.errors)
    w.one("journal_healthy", "gauge", "1 while the journal can write; 0 while it fails (/health is 503).", s.healthy)
  end
end

local function policy_section(w)
  local p = loaded("thorp.policy")
  if not p or not p.status then return end
  local ok, s = pcall(p.status)
  if not ok or type(s) ~= "table" then return end
  w.one("policy_version", "gauge", "Policy version: 1 after start, +1 per applied reload.", s.version)
  if s.loaded_at then
    w.one("policy_loaded_timestamp_seconds", "gauge", "When the current policy was applied.", s.loaded_at / 1000)
  end
  w.one("policy_last_reload_ok", "gauge", "1 when the last load or reload applied, 0 when it was rejected.",
    s.last_error == nil)
  w.one("policy_reloads_total", "counter", "Reloads asked for (SIGHUP, thorp reload, console).", s.reloads or 0)
  w.one("policy_reload_failures_total", "counter", "Reloads rejected (the previous policy stayed).", s.rejected or 0)
end

local function http_section(w)
  local h = loaded("thorp.http")
  if not h or not h.counters then return end
  -- answers from Lua and the ones the listener sent itself (400, 413, 501, 503 before Lua saw them)
  local all = {}
  for k, n in pairs(h.counters.requests) do all[k] = n end
  for k, n in pairs(h.refused and h.refused() or {}) do all[k] = (all[k] or 0) + n end
  local keys = {}
  for k in pairs(all) do keys[#keys + 1] = k end
  table.sort(keys)
  w.family("http_requests_total", "counter", "HTTP requests answered, by route and status code.")
  for _, k in ipairs(keys) do
    local route, code = k:match("^(%S+) (%d+)$")
    w.sample("", all[k], "route", route, "code", code)
  end
  keys = {}
  for k in pairs(h.counters.calls) do keys[#keys + 1] = k end
  table.sort(keys)
  w.family("frontdoor_calls_total", "counter", "JSON-RPC calls through the front door, by outcome.")
  for _, k in ipairs(keys) do w.sample("", h.counters.calls[k], "outcome", k) end
  w.one("frontdoor_coalesced_total", "counter", "Front-door reads that shared an identical call in flight.",
    h.counters.coalesced or 0)
  w.one("http_pending", "gauge", "HTTP requests being answered.", h.pending())
  if h.inflight_bytes then
    w.one("http_inflight_body_bytes", "gauge", "Request body bytes held (bounded by THORP_HTTP_MAX_INFLIGHT_BYTES).",
      h.inflight_bytes())
  end
end

--- render(opts) -> text. opts.pool: report this pool's endpoints instead of the host's.
function M.render(opts)
  opts = opts or {}
  local w = writer()
  w.one("up", "gauge", "1 while the host runs.", 1)
  local okv, host = pcall(require, "thorp.host")
  w.family("build_info", "gauge", "The running thorp version.")
  w.sample("", 1, "version", okv and host.version() or "unknown")
  w.one("lua_memory_bytes", "gauge", "Memory held by the Lua state.", floor(collectgarbage("count") * 1024))
  local p = sched.pending()
  w.one("scheduler_tasks", "gauge", "User tasks alive.", p.tasks)
  w.one("scheduler_timers", "gauge", "Timers pending.", p.timers)
  rpc_section(w, opts.pool)
  admission_section(w)
  bus_section(w)
  shutdown_section(w)
  policy_section(w)
  http_section(w)
  calls_section(w)
  custom_section(w)
  local ws = loaded("thorp.ws") -- WebSocket subscriptions (lib/thorp/ws.lua)
  if ws then ws.metrics(w, opts.pool or (loaded("thorp.rpc") and loaded("thorp.rpc").default_pool())) end
  return w.text()
end

return M
