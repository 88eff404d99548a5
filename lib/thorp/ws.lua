-- ws: Solana PubSub subscriptions over WebSocket (thorp.rpc.subscribe; DESIGN.md
-- "Subscriptions (WebSocket)"; README "Subscriptions").
--
--   local sub = thorp.rpc.subscribe("accountSubscribe", { pk, { commitment = "confirmed" } },
--                                   function(value, ctx) ... end, { redundancy = 2 })
--   sub:status()  sub:unsubscribe()  thorp.rpc.subscriptions()
--
-- The desired set is kept per pool by (method, params): identical subscriptions
-- share one entry and one upstream subscription per endpoint. An entry is placed
-- on `redundancy` endpoints (distinct ones, healthiest first); one WebSocket per
-- endpoint (host/ws.c) carries all its entries. When a connection drops (close,
-- reset, ping timeout, or no slot notification within heartbeat_ms where a
-- slotSubscribe is placed) its entries move to another endpoint that is up, or
-- wait for it to come back (capped, jittered exponential backoff); subscribing
-- again maps the new upstream ids, and an entry that had no live placement in
-- between publishes a gap event on the host bus topic `thorp.ws`.
--
-- Messages arrive in batches from C (one TEV_WS per batch); each payload is read
-- from the C buffer with one ffi.string and decoded once. With redundancy, a
-- notification whose content (the message minus the subscription number) was
-- already seen is dropped: first arrival wins. Delivery goes through a private
-- bus (thorp.bus): one bus subscriber per subscription gives it an ordered,
-- bounded mailbox (drops counted), an isolated handler and the quarantine of a
-- handler that keeps failing; the socket reader never waits for a handler.
local ffi = require "ffi"
local C = require "thorp.cdef"
local sched = require "thorp.sched"
local busm = require "thorp.bus"
local breaker = require "thorp.breaker"
local config = require "thorp.config"
local logm = require "thorp.log"
local json = require "thorp.json" -- lossless u64 (rentEpoch), thorp.json.null; parses the C buffer in place
local log = logm.for_module("ws")

local ffi_string, decode, now = ffi.string, json.decode_buffer, sched.now
local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local floor, min, max, random = math.floor, math.min, math.max, math.random

local M = {}

M.METHODS = { slotSubscribe = true, accountSubscribe = true, programSubscribe = true, logsSubscribe = true,
              signatureSubscribe = true, rootSubscribe = true, blockSubscribe = true,
              slotsUpdatesSubscribe = true, voteSubscribe = true }

-- heartbeat_ms, ping_interval_ms, ping_timeout_ms, connect_timeout_ms, max_message_bytes,
-- backoff_min_ms, backoff_max_ms, mailbox, ca_file: the defaults are the ws.* settings of
-- lib/thorp/config.lua (one source); M.configure{...}, the config file's `ws` table and
-- THORP_WS_* change them (applied at start).
M.options = {}
local OPTION = {} -- name -> its setting
for _, s in ipairs(config.SETTINGS) do
  local k = s[1]:match("^ws%.(.+)$")
  if k then M.options[k], OPTION[k] = s[4], s end
end

M.stats = { notifications = 0, delivered_once = 0, duplicates = 0, malformed = 0, unknown_subscription = 0,
            subscribe_errors = 0, gaps = 0, reconnects = 0, bytes = 0, backfilled = 0, backfill_errors = 0 }
local S = M.stats

local DAEMON = { daemon = true, name = "ws" }
local function spawn_daemon(fn) return sched.spawn_opts(DAEMON, fn) end

local function err(code, message) return { ok = false, error = { code = code, message = message } } end

local function log_limited(key, msg, fields)
  local t = now()
  local l = M._loglim or {}
  M._loglim = l
  local e = l[key]
  if not e or t - e.at > 1000 then e = { at = t, n = 0 }; l[key] = e end
  e.n = e.n + 1
  if e.n <= 5 then log.warn(msg, fields) end
end

------------------------------------------------------------------------------
-- Canonical JSON for the desired-set key and the request body: object keys
-- sorted, so { a, b } and { b, a } built in any order name the same entry.
------------------------------------------------------------------------------
local function canon(v, out)
  local t = type(v)
  if v == json.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    local n = #v
    if n > 0 or next(v) == nil then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        canon(v[i], out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = json.encode(k)
        out[#out + 1] = ":"
        local x = v[k]
        if x == nil then x = v[tonumber(k)] end
        canon(x, out)
      end
      out[#out + 1] = "}"
    end
  elseif t == "string" or t == "number" or t == "boolean" or t == "cdata" then
    out[#out + 1] = json.encode(v)
  elseif v == nil then
    out[#out + 1] = "null"
  else
    error("cannot encode a " .. t .. " in subscription params")
  end
  return out
end
M._canon = function(v) return table.concat(canon(v, {})) end

--- ws_url_of(endpoint) -> url | nil, message: its ws_url, or the url with http -> ws, https -> wss.
function M.ws_url_of(e)
  local u = e.ws_url
  if u ~= nil then
    if type(u) ~= "string" or not (u:match("^wss?://[^/]")) then
      return nil, ("endpoint %s: ws_url (%s) must be a ws:// or wss:// URL"):format(tostring(e.name),
        config.redact_url(tostring(u)))
    end
    return u
  end
  local url = e.url or ""
  if url:match("^https://") then return "wss://" .. url:sub(9) end
  if url:match("^http://") then return "ws://" .. url:sub(8) end
  return nil, ("endpoint %s: no ws_url and its url is not http(s)"):format(tostring(e.name))
end

------------------------------------------------------------------------------
-- Per pool state: endpoints (one connection each) and entries (the desired set)
------------------------------------------------------------------------------
local states = setmetatable({}, { __mode = "k" }) -- pool -> state
local conns = {}    -- C connection id -> ws endpoint
local all_subs = {} -- user subscriptions, in creation order
local sub_seq = 0
local best_slot = 0

local private_bus
local function dbus()
  if not private_bus then
    private_bus = busm.new{ max_queue_size = 1000000, max_subscribers = 1000000, reorder_window_ms = 0 }
  end
  return private_bus
end

local function system(ev) busm.system("thorp.ws", ev, "normal") end

local function pool_state(pool)
  local st = states[pool]
  if st then return st end
  st = { pool = pool, eps = {}, entries = {} }
  for i, e in ipairs(pool.order or pool.eps or {}) do
    local url, msg = M.ws_url_of(e)
    local ep = { name = e.name, url = url, bad = msg, headers = e.header_lines, -- sent on the upgrade
                 display = url and config.redact_url(url) or nil, index = i,
                 state = "idle", placements = {}, nplaced = 0, by_sub = {}, pending = {}, req = 0,
                 fails = 0, retry_at = 0, reconnects = 0, connects = 0, gaps = 0, notifications = 0, bytes = 0,
                 rate = 0, rate_n = 0, rate_at = now(), slot = nil, slot_subs = 0, last_slot_at = 0,
                 duplicates = 0, malformed = 0, unknown = 0, errors = 0,
                 breaker = breaker.new{ name = "ws:" .. e.name, failure_threshold = 3, cooldown_ms = 5000 } }
    st.eps[#st.eps + 1] = ep
    ep.st = st
  end
  states[pool] = st
  return st
end

local function live_count(e)
  local n = 0
  for ep, id in pairs(e.placed) do if id and ep.state == "open" then n = n + 1 end end
  return n
end

local place -- forward

local function send(ep, method, params_json)
  ep.req = ep.req + 1
  local body = '{"jsonrpc":"2.0","id":' .. ep.req .. ',"method":"' .. method .. '","params":' .. params_json .. '}'
  if C.thorp_ws_send(ep.conn, body, #body) ~= 0 then return nil end
  return ep.req
end

local function send_subscribe(ep, e)
  local rid = send(ep, e.method, e.params_json)
  if rid then ep.pending[rid] = { entry = e, at = now() } end
end

local function backoff_ms(fails)
  local o = M.options
  local d = min(o.backoff_max_ms, o.backoff_min_ms * 2 ^ max(fails - 1, 0))
  return d * (0.5 + random() * 0.5)
end

local function connect(ep)
  if ep.state == "open" or ep.state == "connecting" then return end
  local t = now()
  if ep.retry_at > t then
    if not ep.timer then
      ep.timer = sched.daemon_after(ep.retry_at - t, function()
        ep.timer = nil
        if ep.nplaced > 0 then connect(ep) end
      end, "ws-reconnect:" .. ep.name)
    end
    return
  end
  local o = M.options
  local ebuf = ffi.new("char[256]")
  local id = C.thorp_ws_open(ep.url, o.connect_timeout_ms, o.ping_interval_ms, o.ping_timeout_ms,
                             o.max_message_bytes, o.ca_file, ep.headers, ebuf, 256)
  ep.connects = ep.connects + 1
  if id < 0 then
    ep.last_error = ffi_string(ebuf)
    ep.state = "down"
    ep.fails = ep.fails + 1
    ep.retry_at = t + backoff_ms(ep.fails)
    log_limited("open:" .. ep.name, "ws connect failed", { endpoint = ep.name, error = ep.last_error })
    return
  end
  ep.conn = tonumber(id)
  conns[ep.conn] = ep
  ep.state = "connecting"
end

-- Score for placing an entry: lower is better.
local function score(ep)
  if ep.bad then return nil end
  local s = ({ open = 0, connecting = 1, idle = 2, down = 3 })[ep.state] or 3
  if ep.state == "down" and ep.retry_at <= now() then s = 2 end
  if ep.breaker:state() == "OPEN" then s = s + 4 end
  return s * 1000 + ep.index
end

function place(e)
  if e.closed or e.done then return end
  local st = e.st
  local want = min(e.redundancy, #st.eps)
  local have = 0
  for _ in pairs(e.placed) do have = have + 1 end
  while have < want do
    local best, bs
    for _, ep in ipairs(st.eps) do
      if e.placed[ep] == nil then
        local s = score(ep)
        if s and (not bs or s < bs) then best, bs = ep, s end
      end
    end
    if not best then break end
    e.placed[best] = false
    best.placements[e] = true
    best.nplaced = best.nplaced + 1
    if e.method == "slotSubscribe" then best.slot_subs = best.slot_subs + 1 end
    have = have + 1
    if best.state == "open" then send_subscribe(best, e) else connect(best) end
  end
end

local function unplace(ep, e)
  if not ep.placements[e] then return end
  ep.placements[e] = nil
  ep.nplaced = ep.nplaced - 1
  if e.method == "slotSubscribe" then ep.slot_subs = ep.slot_subs - 1 end
  local id = e.placed[ep]
  e.placed[ep] = nil
  if id then ep.by_sub[id] = nil end
  return id
end

-- An endpoint with nothing placed closes its connection (no failure).
local function maybe_idle(ep)
  if ep.nplaced == 0 and ep.conn and (ep.state == "open" or ep.state == "connecting") then
    ep.closing = true
    C.thorp_ws_close(ep.conn, "no subscriptions left")
  end
end

------------------------------------------------------------------------------
-- Delivery
------------------------------------------------------------------------------
local function slot_of(result)
  if type(result) ~= "table" then return type(result) == "number" and result or nil end
  local c = result.context
  if type(c) == "table" then return c.slot end
  return result.slot
end

local function deliver_to(s, value, slot, epname, t_rx, backfill)
  local ctx = { slot = slot, endpoint = epname, subscription = s, value = value, received_at = t_rx,
                backfill = backfill }
  -- critical: the private bus routes that lane without a per-turn batch limit
  if s.bus_sub then dbus():publish(s.topic_private, ctx, "critical") end
  if s.topic then
    local b = rawget(busm, "default") or busm.default
    local ok = b:publish(s.topic, ctx)
    if not ok then s.topic_drops = s.topic_drops + 1 end
  end
end

local function deliver(e, value, slot, ep, t_rx)
  local subs = e.subs
  for i = 1, #subs do
    local s = subs[i]
    s.notifications = s.notifications + 1
    s.last_slot = slot or s.last_slot
    deliver_to(s, value, slot, ep.name, t_rx, nil)
  end
end

------------------------------------------------------------------------------
-- Backfill after a gap (opts.backfill): what the common streams missed, fetched
-- over HTTP and delivered through the same handler with ctx.backfill = true.
------------------------------------------------------------------------------
local SIG_RECENT = 4096 -- live logs signatures remembered per entry (backfill skips them)

local function commitment_of(e, i)
  local o = e.params and e.params[i]
  local c = type(o) == "table" and o.commitment or nil
  return c
end

local function logs_address(params)
  local f = params and params[1]
  local m = type(f) == "table" and f.mentions
  return type(m) == "table" and type(m[1]) == "string" and m[1] or nil
end

-- Each returns a list of { value, slot, endpoint } (oldest first) or nil, message.
local BACKFILL = {}
function BACKFILL.logsSubscribe(e, g)
  local pool = e.st.pool
  if not g.last_sig then return nil, "no signature was seen before the gap" end
  local c = commitment_of(e, 2)
  if c == "processed" then c = nil end -- getSignaturesForAddress/getTransaction take confirmed at least
  local r = pool:call("getSignaturesForAddress", { logs_address(e.params), { ["until"] = g.last_sig, limit = 1000,
                                                                            commitment = c } })
  if not r.ok then return nil, "getSignaturesForAddress: " .. tostring(r.error and r.error.message) end
  local out = {}
  local list = type(r.result) == "table" and r.result or {}
  for i = #list, 1, -1 do
    local sig = type(list[i]) == "table" and list[i].signature
    if type(sig) == "string" and not e.sig_seen[sig] then
      local t = pool:call("getTransaction", { sig, { encoding = "json", maxSupportedTransactionVersion = 0,
                                                     commitment = c } })
      if not t.ok then return out, "getTransaction " .. sig .. ": " .. tostring(t.error and t.error.message) end
      local tx = t.result
      if type(tx) == "table" and not e.sig_seen[sig] then
        local meta = type(tx.meta) == "table" and tx.meta or {}
        out[#out + 1] = { value = { context = { slot = tx.slot }, value = { signature = sig, err = meta.err,
                                                                            logs = meta.logMessages } },
                          slot = tx.slot, endpoint = t.endpoint }
      end
    end
  end
  return out
end

function BACKFILL.accountSubscribe(e, g)
  local o = type(e.params[2]) == "table" and e.params[2] or {}
  local r = e.st.pool:call("getAccountInfo", { e.params[1], { encoding = o.encoding, commitment = o.commitment,
                                                               minContextSlot = g.from } })
  if not r.ok then return nil, "getAccountInfo: " .. tostring(r.error and r.error.message) end
  local slot = slot_of(r.result)
  if not slot then return nil, "getAccountInfo: no context.slot in the answer" end
  return { { value = r.result, slot = slot, endpoint = r.endpoint, newer = true } }
end

function BACKFILL.programSubscribe(e, g)
  local o = type(e.params[2]) == "table" and e.params[2] or {}
  local r = e.st.pool:call("getProgramAccounts", { e.params[1], { encoding = o.encoding, commitment = o.commitment,
    filters = o.filters, minContextSlot = g.from, withContext = true } }, { timeout_ms = 30000 })
  if not r.ok then return nil, "getProgramAccounts: " .. tostring(r.error and r.error.message) end
  local res = r.result
  local slot = slot_of(res)
  if type(res) ~= "table" or not slot or type(res.value) ~= "table" then
    return nil, "getProgramAccounts: no context and value in the answer"
  end
  local out = {}
  for _, a in ipairs(res.value) do
    out[#out + 1] = { value = { context = res.context, value = a }, slot = slot, endpoint = r.endpoint, newer = true }
  end
  return out
end

function BACKFILL.signatureSubscribe(e)
  local r = e.st.pool:call("getSignatureStatuses", { { e.params[1] }, { searchTransactionHistory = true } })
  if not r.ok then return nil, "getSignatureStatuses: " .. tostring(r.error and r.error.message) end
  local v = type(r.result) == "table" and type(r.result.value) == "table" and r.result.value[1]
  if type(v) ~= "table" then return {} end
  local want = commitment_of(e, 2) or "finalized"
  local cs = v.confirmationStatus
  if want == "finalized" and cs ~= "finalized" or want == "confirmed" and cs == "processed" then return {} end
  return { { value = { context = r.result.context, value = { err = v.err } }, slot = v.slot, endpoint = r.endpoint,
             finish = true } }
end

local function backfill_fail(s, msg)
  s.backfill_errors = s.backfill_errors + 1
  s.backfill_error = msg
  S.backfill_errors = S.backfill_errors + 1
  log_limited("backfill:" .. s.method, "ws backfill failed", { method = s.method, error = msg })
end

local function backfill_deliver(s, items)
  for _, it in ipairs(items) do
    if s.state == "closed" then return end
    s.backfilled = s.backfilled + 1
    S.backfilled = S.backfilled + 1
    deliver_to(s, it.value, it.slot, it.endpoint, now(), true)
  end
end

local finish_entry -- forward

-- After the gap event: the built-in backfill once for the entry's subscribers that
-- asked for it (opts.backfill = true), each function backfill for its own.
local function run_backfill(e, gap)
  local builtin, fns = false, {}
  for _, s in ipairs(e.subs) do
    if s.backfill == true then builtin = true elseif type(s.backfill) == "function" then fns[#fns + 1] = s end
  end
  if not builtin and #fns == 0 then return end
  spawn_daemon(function()
    if builtin then
      local ok, items, msg = pcall(BACKFILL[e.method], e, gap)
      if not ok then items, msg = nil, tostring(items) end
      local finish = false
      if items then
        local fresh = {}
        for _, it in ipairs(items) do
          -- state fetched by get*: only when newer than the last notification before the
          -- gap and not older than what the stream delivered since
          if not it.newer or ((not gap.from or it.slot > gap.from) and it.slot >= (e.last_slot or 0)) then
            fresh[#fresh + 1] = it
          end
          if it.finish then finish = true end
        end
        for _, s in ipairs(e.subs) do
          if s.backfill == true then
            s.backfills = s.backfills + 1
            backfill_deliver(s, fresh)
          end
        end
      end
      if msg then for _, s in ipairs(e.subs) do if s.backfill == true then backfill_fail(s, msg) end end end
      if finish and not e.done then finish_entry(e, "done") end
    end
    for _, s in ipairs(fns) do
      local ok, list = pcall(s.backfill, gap, s)
      s.backfills = s.backfills + 1
      if not ok then
        backfill_fail(s, tostring(list))
      elseif type(list) == "table" then
        local items = {}
        for i, v in ipairs(list) do items[i] = { value = v, slot = slot_of(v) } end
        backfill_deliver(s, items)
      end
    end
  end)
end

function finish_entry(e, state)
  e.done = true
  for ep in pairs(e.placed) do unplace(ep, e); maybe_idle(ep) end
  if e.st.entries[e.key] == e then e.st.entries[e.key] = nil end
  for _, s in ipairs(e.subs) do
    if s.state ~= "closed" then
      s.state = state
      if s.on_state then s.on_state(s) end
      if s.held then s.held = false; sched.unhold(1) end
    end
  end
end

-- The gap: from the last slot delivered before the drop to the first one after
-- the new subscription (or, when none comes within a second, the pool's slot).
local function publish_gap(e, ep, to)
  local g = e.gap
  e.gap = nil
  for _, s in ipairs(e.subs) do
    s.gaps = s.gaps + 1
    S.gaps = S.gaps + 1
    ep.gaps = ep.gaps + 1
    system({ kind = "gap", subscription = s, id = s.id, method = e.method, endpoint = ep.name,
             from_slot = g.from, to_slot = to })
  end
  log.info("ws subscription resumed after a gap", { method = e.method, endpoint = ep.name, from_slot = g.from,
                                                    to_slot = to })
  run_backfill(e, { from_slot = g.from, to_slot = to, from = g.from, last_sig = g.last_sig, method = e.method,
                    params = e.params, endpoint = ep.name, last_signature = g.last_sig })
end

local function gap_by_clock(e)
  local g = e.gap
  if g.asking then return end
  g.asking = true
  spawn_daemon(function()
    local r = e.st.pool:call("getSlot", nil, { timeout_ms = 2000 })
    if e.gap == g then publish_gap(e, g.ep, r.ok and r.result or (best_slot > 0 and best_slot or nil)) end
  end)
end

local SEEN = 4096 -- notification hashes remembered per redundant entry

local function on_notification(ep, m)
  local sid = tonumber(m.sub)
  local len = tonumber(m.len)
  ep.notifications = ep.notifications + 1
  ep.bytes = ep.bytes + len
  S.notifications = S.notifications + 1
  S.bytes = S.bytes + len
  local e = ep.by_sub[sid]
  if not e then
    ep.unknown = ep.unknown + 1
    S.unknown_subscription = S.unknown_subscription + 1
    log_limited("unknown:" .. ep.name, "ws notification for an unknown subscription id",
                { endpoint = ep.name, subscription_id = sid })
    return
  end
  local p, rl = m.data, tonumber(m.res_len)
  local t = now()
  ep.last_rx_at = t
  if e.method == "slotSubscribe" then ep.last_slot_at = t end
  -- With redundancy, a duplicate is known by its bytes before any decoding (half the
  -- messages at redundancy 2): the hash of params.result where C located it, else of
  -- the message without its subscription number. seen[h] keeps the slot for lag.
  local h
  if e.redundancy > 1 then
    h = rl > 0 and C.thorp_ws_hash_bytes(p + m.res_off, rl) or C.thorp_ws_hash(p, len)
    local dup_slot = e.seen[h]
    if dup_slot then
      e.duplicates = e.duplicates + 1
      ep.duplicates = ep.duplicates + 1
      S.duplicates = S.duplicates + 1
      if dup_slot ~= true and (not ep.slot or dup_slot > ep.slot) then ep.slot = dup_slot end
      return
    end
  end
  -- decode only params.result where C located it (most of a notification's cost is decoding)
  local result
  if rl > 0 then result = decode(p + m.res_off, rl) end
  if result == nil then
    local msg = decode(p, len)
    local params = type(msg) == "table" and msg.params
    result = type(params) == "table" and params.result or nil
  end
  if result == nil then
    ep.malformed = ep.malformed + 1
    S.malformed = S.malformed + 1
    log_limited("malformed:" .. ep.name, "ws message is not a JSON-RPC notification", { endpoint = ep.name })
    return
  end
  local slot = slot_of(result)
  if slot then
    if not ep.slot or slot > ep.slot then ep.slot = slot end
    if slot > best_slot then best_slot = slot end
  end
  if h then
    local seen = e.seen
    seen[h] = type(slot) == "number" and slot or true
    local i = e.seen_i % SEEN + 1
    local old = e.seen_ring[i]
    if old then seen[old] = nil end
    e.seen_ring[i] = h
    e.seen_i = i
  end
  e.notifications = e.notifications + 1
  if e.sig_seen then
    local v = type(result) == "table" and result.value
    local sig = type(v) == "table" and v.signature
    if type(sig) == "string" then
      e.last_sig = sig
      local i = e.sig_i % SIG_RECENT + 1
      local old = e.sig_ring[i]
      if old then e.sig_seen[old] = nil end
      e.sig_ring[i], e.sig_seen[sig], e.sig_i = sig, true, i
    end
  end
  if e.gap and e.gap.ep then publish_gap(e, ep, slot) end
  if slot then e.last_slot = slot end
  S.delivered_once = S.delivered_once + 1
  deliver(e, result, slot, ep, m.t_rx)
  if e.method == "signatureSubscribe" then
    -- Agave ends a signature subscription after its notification: so do we
    finish_entry(e, "done")
  end
end

local function on_control(ep, m)
  local msg = decode(m.data, m.len)
  if type(msg) ~= "table" then
    ep.malformed = ep.malformed + 1
    S.malformed = S.malformed + 1
    log_limited("malformed:" .. ep.name, "ws message is not JSON", { endpoint = ep.name })
    return
  end
  local rid = tonumber(msg.id)
  local p = rid and ep.pending[rid]
  if not p then
    if msg.method then -- a notification without a usable subscription number
      ep.malformed = ep.malformed + 1
      S.malformed = S.malformed + 1
      log_limited("malformed:" .. ep.name, "ws notification without a subscription id", { endpoint = ep.name })
    end
    return
  end
  ep.pending[rid] = nil
  local e = p.entry
  if (type(msg.error) == "table" and msg.error ~= json.null) or type(msg.result) ~= "number" then
    local emsg = type(msg.error) == "table" and tostring(msg.error.message) or "no subscription id in the answer"
    local code = type(msg.error) == "table" and msg.error.code
    S.subscribe_errors = S.subscribe_errors + 1
    ep.errors = ep.errors + 1
    log.error("ws subscribe refused", { endpoint = ep.name, method = e.method, error = emsg, code = code })
    e.error = { code = "SUBSCRIBE_FAILED", message = ("%s on %s: %s"):format(e.method, ep.name, emsg), rpc_code = code }
    finish_entry(e, "failed")
    return
  end
  local id = msg.result
  if e.closed or e.done or e.placed[ep] ~= false then -- unsubscribed meanwhile
    send(ep, e.unsub_method, "[" .. id .. "]")
    return
  end
  e.placed[ep] = id
  ep.by_sub[id] = e
  if e.method == "slotSubscribe" then ep.last_slot_at = now() end
  for _, s in ipairs(e.subs) do
    if s.state ~= "closed" then
      s.state = "active"
      if s.on_state then s.on_state(s) end
    end
  end
  if e.lost and e.gap then e.gap.ep, e.gap.at = ep, now() end
  e.lost = false
  e.active_once = true
end

local function on_open(ep)
  ep.state = "open"
  ep.opened_at = now()
  ep.breaker:success()
  if ep.connected_once then ep.reconnects = ep.reconnects + 1 end
  ep.connected_once = true
  ep.last_slot_at = now()
  for e in pairs(ep.placements) do send_subscribe(ep, e) end
end

local function on_closed(ep, id)
  local info = ffi.new("thorp_ws_info")
  if C.thorp_ws_info_get(id, info) == 0 then ep.last_error = ffi_string(info.error) end
  C.thorp_ws_free(id)
  conns[id] = nil
  if ep.conn ~= id then return end
  ep.conn = nil
  ep.pending = {}
  local intended = ep.closing
  ep.closing = false
  local was_open = ep.state == "open"
  if intended then
    ep.state = "idle"
  else
    if was_open and ep.opened_at and now() - ep.opened_at > 10000 then ep.fails = 0 end
    ep.fails = ep.fails + 1
    ep.state = "down"
    ep.retry_at = now() + backoff_ms(ep.fails)
    ep.breaker:failure()
    log_limited("down:" .. ep.name, "ws connection down", { endpoint = ep.name, error = ep.last_error,
                                                            retry_in_ms = floor(ep.retry_at - now()) })
  end
  -- move what it carried: another endpoint that is up takes it now, else this one after the backoff
  local moved = {}
  for e in pairs(ep.placements) do moved[#moved + 1] = e end
  for _, e in ipairs(moved) do
    local was = e.placed[ep]
    unplace(ep, e)
    if was and live_count(e) == 0 and not e.lost then
      e.lost = true
      e.gap = { from = e.last_slot or (best_slot > 0 and best_slot or nil), last_sig = e.last_sig }
      S.reconnects = S.reconnects + 1
      for _, s in ipairs(e.subs) do
        s.reconnects = s.reconnects + 1
        if s.state == "active" then s.state = "reconnecting" end
      end
    end
  end
  for _, e in ipairs(moved) do place(e) end
  if ep.nplaced > 0 then connect(ep) end
end

local msgs = ffi.new("thorp_ws_msg[?]", 256)
local function drain()
  while true do
    local n = C.thorp_ws_drain(msgs, 256)
    if n == 0 then return end
    for i = 0, n - 1 do
      local m = msgs[i]
      local cid = tonumber(m.conn)
      local ep = conns[cid]
      if ep then
        if m.sub >= 0 then on_notification(ep, m) else on_control(ep, m) end
      elseif cid < 0 and M.client_hooks then -- a front-door client (lib/thorp/http_ws.lua)
        M.client_hooks.message(cid, m.data, tonumber(m.len))
      end
    end
  end
end

sched.on_event(C.TEV_WS, function(ev)
  local a = ev.a
  if a == C.THORP_WS_MESSAGES then
    local ok, e = pcall(drain)
    if not ok then
      log.error("ws batch failed", { error = tostring(e) })
      while C.thorp_ws_drain(msgs, 256) > 0 do end -- leave no half-read batch behind
    end
    return
  end
  local id = tonumber(ev.id)
  if id < 0 then
    if M.client_hooks then M.client_hooks.closed(id) end
    return
  end
  local ep = conns[id]
  if not ep then C.thorp_ws_free(id); return end
  if a == C.THORP_WS_OPEN then on_open(ep) elseif a == C.THORP_WS_CLOSED then on_closed(ep, id) end
end)

-- Heartbeat and rates, every 100 ms while anything is placed.
local function tick()
  local t = now()
  local hb = M.options.heartbeat_ms
  for _, st in pairs(states) do
    for _, ep in ipairs(st.eps) do
      if ep.state == "open" and ep.slot_subs > 0 and hb > 0 and t - ep.last_slot_at > hb then
        local live = false
        for e in pairs(ep.placements) do if e.method == "slotSubscribe" and e.placed[ep] then live = true end end
        if live then
          C.thorp_ws_close(ep.conn, ("no slot notification for %d ms (heartbeat)"):format(floor(t - ep.last_slot_at)))
        end
      end
      for e in pairs(ep.placements) do
        if e.gap and e.gap.ep and t - e.gap.at > 1000 then gap_by_clock(e) end
      end
      if t - ep.rate_at >= 1000 then
        ep.rate = (ep.notifications - ep.rate_n) * 1000 / (t - ep.rate_at)
        ep.rate_n, ep.rate_at = ep.notifications, t
      end
    end
  end
end
local ticker
local function ensure_ticker()
  if not ticker then ticker = sched.daemon_every(100, tick, "ws-heartbeat") end
end

------------------------------------------------------------------------------
-- Subscriptions (the user's handles)
------------------------------------------------------------------------------
local Sub = {}
Sub.__index = Sub
function Sub:__tostring() return ("ws subscription %d (%s)"):format(self.id, self.method) end

function Sub:status()
  local e = self.entry
  local endpoint
  if e then
    for ep, id in pairs(e.placed) do
      if id and ep.state == "open" and (not endpoint or ep.index < endpoint.index) then endpoint = ep end
    end
  end
  local st = { state = self.state, endpoint = endpoint and endpoint.name or nil, notifications = self.notifications,
               gaps = self.gaps, reconnects = self.reconnects, method = self.method, id = self.id,
               last_slot = self.last_slot, redundancy = e and e.redundancy or nil, error = e and e.error or nil,
               backfills = self.backfills, backfilled = self.backfilled, backfill_errors = self.backfill_errors,
               backfill_error = self.backfill_error }
  local bs = self.bus_sub
  if bs then
    st.delivered, st.failures, st.dropped, st.quarantined = bs.delivered, bs.failures, bs.dropped, bs.quarantined
    st.queued = bs:queued()
  end
  return st
end

--- sub:unsubscribe() -> true | false (already gone)
function Sub:unsubscribe()
  if self.state == "closed" then return false end
  local was = self.state
  self.state = "closed"
  if self.held then self.held = false; sched.unhold(1) end
  if self.bus_sub then dbus():unsubscribe(self.bus_sub) end
  for i, s in ipairs(all_subs) do if s == self then table.remove(all_subs, i); break end end
  local e = self.entry
  if not e then return true end
  for i, s in ipairs(e.subs) do if s == self then table.remove(e.subs, i); break end end
  if #e.subs == 0 and was ~= "done" and was ~= "failed" then
    e.closed = true
    if e.st.entries[e.key] == e then e.st.entries[e.key] = nil end
    for ep in pairs(e.placed) do
      local id = unplace(ep, e)
      if id and ep.state == "open" then send(ep, e.unsub_method, "[" .. id .. "]") end
      maybe_idle(ep)
    end
  elseif #e.subs > 0 then
    local r = 1
    for _, s in ipairs(e.subs) do r = max(r, s.redundancy) end
    e.redundancy = r
  end
  return true
end

local SUB_OPTS = { redundancy = true, topic = true, name = true, max_queue_size = true, max_failure_rate = true,
                   failure_window = true, quarantine_ms = true, backfill = true }

--- subscribe(pool, method, params, handler, opts) -> sub | { ok = false, error = {...} }
function M.subscribe(pool, method, params, handler, opts)
  if type(pool) ~= "table" then return err("NO_ENDPOINTS", "rpc.subscribe: no RPC pool (no endpoints configured)") end
  if type(method) ~= "string" or not M.METHODS[method] then
    local names = {}
    for k in pairs(M.METHODS) do names[#names + 1] = k end
    table.sort(names)
    return err("INVALID_ARGUMENT", ("rpc.subscribe: method %s is not a PubSub method (allowed: %s)")
      :format(type(method) == "string" and ("%q"):format(method) or tostring(method), table.concat(names, ", ")))
  end
  if params ~= nil and type(params) ~= "table" then
    return err("INVALID_ARGUMENT", "rpc.subscribe: params must be a list (table) or nil, got " .. type(params))
  end
  if opts ~= nil and type(opts) ~= "table" then
    return err("INVALID_ARGUMENT", "rpc.subscribe: opts must be a table or nil, got " .. type(opts))
  end
  opts = opts or {}
  for k in pairs(opts) do
    if not SUB_OPTS[k] then
      return err("INVALID_ARGUMENT", ("rpc.subscribe: unknown option %s (allowed: backfill, max_failure_rate, "
        .. "failure_window, max_queue_size, name, quarantine_ms, redundancy, topic)"):format(tostring(k)))
    end
  end
  if handler ~= nil and type(handler) ~= "function" then
    return err("INVALID_ARGUMENT", "rpc.subscribe: handler must be a function or nil, got " .. type(handler))
  end
  local topic = opts.topic
  if topic ~= nil and (type(topic) ~= "string" or topic == "") then
    return err("INVALID_ARGUMENT", "rpc.subscribe: opts.topic must be a non-empty string")
  end
  if not handler and not topic then
    return err("INVALID_ARGUMENT", "rpc.subscribe: give a handler function or opts.topic")
  end
  local bf = opts.backfill
  if bf ~= nil and type(bf) ~= "boolean" and type(bf) ~= "function" then
    return err("INVALID_ARGUMENT", "rpc.subscribe: opts.backfill must be true, false or a function, got " .. type(bf))
  end
  if bf == true then
    if not BACKFILL[method] then
      return err("INVALID_ARGUMENT", ("rpc.subscribe: no built-in backfill for %s (built in: accountSubscribe, "
        .. "logsSubscribe with a mentions filter, programSubscribe, signatureSubscribe; or give a function)")
        :format(method))
    end
    if method == "logsSubscribe" and not logs_address(params) then
      return err("INVALID_ARGUMENT", "rpc.subscribe: logsSubscribe backfill needs a { mentions = { address } } "
        .. "filter (getSignaturesForAddress); give opts.backfill a function for other filters")
    end
  end
  local red = opts.redundancy or 1
  if type(red) ~= "number" or red < 1 or red > 8 or red % 1 ~= 0 then
    return err("INVALID_ARGUMENT", "rpc.subscribe: opts.redundancy must be an integer 1-8, got " .. tostring(red))
  end
  local st = pool_state(pool)
  if #st.eps == 0 then return err("NO_ENDPOINTS", "rpc.subscribe: the pool has no endpoints") end
  local usable = 0
  for _, ep in ipairs(st.eps) do
    if ep.bad then return err("INVALID_ARGUMENT", "rpc.subscribe: " .. ep.bad) end
    usable = usable + 1
  end
  local ok, pj = pcall(function() return table.concat(canon(params or {}, {})) end)
  if not ok then return err("INVALID_ARGUMENT", "rpc.subscribe: params: " .. tostring(pj)) end
  local key = method .. " " .. pj
  local e = st.entries[key]
  if not e then
    e = { key = key, method = method, params = params or {}, params_json = pj,
          unsub_method = method:gsub("Subscribe$", "Unsubscribe"),
          st = st, subs = {}, placed = {}, redundancy = 1, seen = {}, seen_ring = {}, seen_i = 0,
          notifications = 0, duplicates = 0, lost = false }
    if method == "logsSubscribe" then e.sig_seen, e.sig_ring, e.sig_i = {}, {}, 0 end
    st.entries[key] = e
  end
  sub_seq = sub_seq + 1
  local s = setmetatable({ ok = true, id = sub_seq, method = method, params = params, entry = e, handler = handler,
                           topic = topic, state = "subscribing", notifications = 0, gaps = 0, reconnects = 0,
                           topic_drops = 0, redundancy = min(red, usable), pool = pool, backfill = bf or nil,
                           backfills = 0, backfilled = 0, backfill_errors = 0 }, Sub)
  if handler then
    s.topic_private = "ws." .. sub_seq
    local h = handler
    s.bus_sub = dbus():subscribe(s.topic_private, function(ctx) return h(ctx.value, ctx) end,
      { name = opts.name and (opts.name .. "#" .. sub_seq) or ("ws:" .. method .. "#" .. sub_seq),
        max_queue_size = opts.max_queue_size or M.options.mailbox, max_failure_rate = opts.max_failure_rate,
        failure_window = opts.failure_window, quarantine_ms = opts.quarantine_ms })
  end
  e.subs[#e.subs + 1] = s
  all_subs[#all_subs + 1] = s
  s.held = true
  sched.hold(1)
  if e.active_once and live_count(e) > 0 then s.state = "active" end
  if s.redundancy > e.redundancy then e.redundancy = s.redundancy end
  ensure_ticker()
  place(e)
  return s
end

--- subscriptions() -> list of status tables (every live subscription of every pool)
function M.list()
  local out = {}
  for i, s in ipairs(all_subs) do
    local st = s:status()
    st.subscription = s
    out[i] = st
  end
  return out
end

--- endpoint_status(pool, name) -> { state, url, reconnects, gaps, notifications, ... } | nil
function M.endpoint_status(pool, name)
  local st = states[pool]
  if not st then return nil end
  for _, ep in ipairs(st.eps) do
    if ep.name == name then
      local ref = best_slot > 0 and best_slot or nil
      return { state = ep.state, url = ep.display, reconnects = ep.reconnects, connects = ep.connects,
               gaps = ep.gaps, notifications = ep.notifications, notifications_per_s = ep.rate,
               bytes = ep.bytes, slot = ep.slot, lag = (ref and ep.slot) and (ref - ep.slot) or nil,
               subscriptions = ep.nplaced, duplicates = ep.duplicates, malformed = ep.malformed,
               unknown_subscription = ep.unknown, errors = ep.errors, last_error = ep.last_error,
               breaker = ep.breaker:state(), retry_in_ms = ep.state == "down" and max(0, floor(ep.retry_at - now()))
                 or nil }
    end
  end
end

--- metrics(w, pool): the WebSocket families for /metrics (lib/thorp/metrics.lua's writer)
local STATE_NUM = { idle = 0, connecting = 1, open = 2, down = 3 }
function M.metrics(w, pool)
  w.one("ws_notifications_total", "counter", "WebSocket notifications received (all endpoints, duplicates included).",
        S.notifications)
  w.one("ws_delivered_total", "counter", "Notifications delivered (once each, after redundancy dedupe).",
        S.delivered_once)
  w.one("ws_duplicates_total", "counter", "Notifications dropped as already delivered from another endpoint.",
        S.duplicates)
  w.one("ws_bad_messages_total", "counter", "Malformed messages and notifications for unknown subscription ids.",
        S.malformed + S.unknown_subscription)
  w.one("ws_gaps_total", "counter", "Gap events published (a subscription resumed after notifications may be lost).",
        S.gaps)
  w.one("ws_backfilled_total", "counter", "Notifications delivered by backfill after a gap (opts.backfill).",
        S.backfilled)
  w.one("ws_backfill_errors_total", "counter", "Backfill runs that failed (an RPC error, a failing function).",
        S.backfill_errors)
  w.one("ws_subscriptions", "gauge", "Subscriptions (user handles).", #all_subs)
  local st = pool and states[pool]
  if not st then return end
  local function each(name, typ, help, get)
    w.family(name, typ, help)
    for _, ep in ipairs(st.eps) do
      local v = get(ep)
      if v ~= nil then w.sample("", v, "endpoint", ep.name) end
    end
  end
  each("ws_endpoint_state", "gauge", "WebSocket connection: 0 idle, 1 connecting, 2 open, 3 down.",
       function(ep) return STATE_NUM[ep.state] end)
  each("ws_endpoint_reconnects_total", "counter", "Reconnects.", function(ep) return ep.reconnects end)
  each("ws_endpoint_gaps_total", "counter", "Gap events on this endpoint.", function(ep) return ep.gaps end)
  each("ws_endpoint_notifications_total", "counter", "Notifications received.", function(ep) return ep.notifications end)
  each("ws_endpoint_notifications_per_second", "gauge", "Notifications per second (last second).",
       function(ep) return ep.rate end)
  each("ws_endpoint_bytes_total", "counter", "Notification bytes received.", function(ep) return ep.bytes end)
  each("ws_endpoint_subscriptions", "gauge", "Upstream subscriptions placed on the endpoint.",
       function(ep) return ep.nplaced end)
  each("ws_endpoint_slot_lag", "gauge", "Slots behind the latest notification slot of any endpoint.",
       function(ep) return ep.slot and best_slot > 0 and best_slot - ep.slot or nil end)
end

--- configure{ heartbeat_ms=, ping_interval_ms=, ping_timeout_ms=, connect_timeout_ms=,
---            max_message_bytes=, backoff_min_ms=, backoff_max_ms=, mailbox=, ca_file= }
function M.configure(opts)
  for k, v in pairs(opts or {}) do
    local s = OPTION[k]
    if not s then
      local names = {}
      for n in pairs(OPTION) do names[#names + 1] = n end
      table.sort(names)
      error(("ws.configure: unknown option %s (allowed: %s)"):format(tostring(k), table.concat(names, ", ")), 2)
    end
    if s[3] == "string" then
      if v ~= nil and type(v) ~= "string" then error(("ws.configure: %s must be a string"):format(k), 2) end
    elseif type(v) ~= "number" or v < (s.min or 0) or v > (s.max or math.huge) then
      error(("ws.configure: %s must be a number from %s to %s, got %s"):format(k, s.min or 0, s.max or "any",
        tostring(v)), 2)
    end
    M.options[k] = v
  end
  return M.options
end

--- Test hook: drop an endpoint's connection as a reset would.
function M._reset(pool, name)
  local st = states[pool]
  for _, ep in ipairs(st and st.eps or {}) do
    if ep.name == name and ep.conn then C.thorp_ws_test_reset(ep.conn) end
  end
end
M._state = function(pool) return states[pool] end

function M.start(cfg)
  local w = type(cfg) == "table" and type(cfg.ws) == "table" and cfg.ws or nil
  if w then M.configure(w) end
  return true
end

function M.stop()
  for i = #all_subs, 1, -1 do all_subs[i]:unsubscribe() end
end

return M
