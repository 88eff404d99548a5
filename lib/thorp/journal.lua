-- thorp.journal: the durable trade journal (host/journal.c, SQLite in WAL
-- mode with an exclusive lock under THORP_STATE_DIR). thorp.shutdown writes
-- trades through it; a sender records what it is about to send; users read
-- what a previous run left open and what finished:
--
--   thorp.journal.record_send(id, { signature = sig, last_valid_block_height = h, tx = bytes })
--   for _, t in ipairs(thorp.journal.open_trades()) do -- {id, type, meta, started_at, signature?, ...}
--     reconcile(t); thorp.journal.resolve(t.id, { status = "confirmed", slot = 123 })
--   end
--   thorp.journal.history{ limit = 20, since_ms = wall_ms, status = "failed" }  -- newest first
--
-- A trade stays open in the journal until it is completed or resolved, so a
-- crash, kill -9 or forced exit never loses one: every later run lists it
-- (and logs it at start) until someone resolves it. Registering a trade
-- whose id is still open is refused (DUPLICATE), never replaced.
--
-- I/O failures (disk full, a damaged -wal, a file-size limit) never take the
-- host down: the failing operation returns { code = "JOURNAL_ERROR" }, the
-- failure is logged and counted (thorp_journal_errors_total), healthy()
-- turns false (/health answers 503), and the journal is reopened every
-- second until a real write succeeds. An idle host learns of a failing disk
-- too: a test write runs every THORP_JOURNAL_CHECK_MS (5 s). A completion that could not be
-- written is kept and written after the reopen; if any trade could not be
-- journaled at all, shutdown exits 1.
-- Durability: THORP_JOURNAL_SYNC = NORMAL (default; safe against process
-- crashes) or FULL (also against power loss). Finished trades are kept for
-- JOURNAL_HISTORY_RETENTION_MS (7 days) and expired idempotency keys are
-- dropped, at start and every 10 minutes.
local ffi = require "ffi"
local json = require "thorp.json"
local sched = require "thorp.sched"
local log = require("thorp.log").for_module("journal")
local C = require "thorp.cdef"

local M = {}
local J = {}
J.__index = J

M.DEFAULT_RETENTION_MS = 7 * 86400000

-- A closed journal answers every method with an error (never a NULL handle to C).
local CLOSED = { __index = function(_, name)
  if name == "close" then return function() end end
  if name == "healthy" then return false end
  return function() error("journal: " .. tostring(name) .. " on a closed journal", 2) end
end }

local function close(self)
  if self.h ~= nil then C.thorp_journal_close(ffi.gc(self.h, nil)); self.h = nil end
  setmetatable(self, CLOSED)
end
J.close = close

--- open(dir, { synchronous = "NORMAL"|"FULL"|"OFF", run_id = s, retention_ms = n }) -> j | nil, err
function M.open(dir, opts)
  opts = opts or {}
  local err = ffi.new("char[512]")
  local run_id = opts.run_id or ("%d-%d"):format(require("thorp.sys").getpid(), math.floor(sched.wall()))
  local h = C.thorp_journal_open(dir, opts.synchronous or "NORMAL", run_id, err, 512)
  if h == nil then return nil, ffi.string(err) end
  return setmetatable({ h = ffi.gc(h, C.thorp_journal_close), dir = dir, run_id = run_id,
                        retention_ms = opts.retention_ms or M.DEFAULT_RETENTION_MS,
                        healthy = true, errors = 0, on_failure = opts.on_failure }, J)
end

-- An operation failed: count it, log it (once a second at most), mark the
-- journal unhealthy and let the owner know (the host schedules a reopen).
local function failed(self)
  local msg = ffi.string(C.thorp_journal_error(self.h))
  self.errors = self.errors + 1
  self.last_error, self.last_error_at = msg, sched.wall()
  local was = self.healthy
  self.healthy = false
  local t = sched.now()
  if was or not self.logged_at or t - self.logged_at >= 1000 then
    self.logged_at = t
    log.error("journal write failed; trades cannot be journaled until it recovers",
              { error = msg, errors = self.errors, dir = self.dir })
  end
  if self.on_failure then self.on_failure(self) end
  return nil, { code = "JOURNAL_ERROR", message = msg }
end

local function jsonable(what, id, v)
  if v == nil then return nil end
  local text, err = json.safe_encode(v)
  if not text then
    error(("journal: trade %s %s cannot be stored as JSON (%s)"):format(tostring(id), what, tostring(err)), 3)
  end
  return text
end

-- An outcome is stored whatever it holds: what JSON cannot hold is kept as text.
local function outcome_text(o)
  if o == nil then return nil end
  local text = json.safe_encode(o)
  if text then return text end
  local safe = {}
  for k, v in pairs(o) do
    if type(k) == "string" then
      safe[k] = (type(v) == "string" or type(v) == "boolean" or (type(v) == "number" and v == v
                 and v > -math.huge and v < math.huge)) and v or tostring(v)
    end
  end
  return json.safe_encode(safe)
end

local function row_table(row, with_tx)
  local meta = json.decode(ffi.string(row.meta))
  local t = { id = ffi.string(row.id), type = ffi.string(row.kind), meta = type(meta) == "table" and meta or {},
              started_at = row.started_at, run_id = ffi.string(row.run_id) }
  if row.signature ~= nil then t.signature = ffi.string(row.signature) end
  if row.last_valid_block_height >= 0 then t.last_valid_block_height = row.last_valid_block_height end
  if with_tx and row.tx ~= nil then t.tx = ffi.string(row.tx, row.tx_len) end
  return t
end

--- j:begin(id, kind, meta) -> true | nil, { code = "DUPLICATE" | "JOURNAL_ERROR", message }
function J:begin(id, kind, meta)
  local text = jsonable("meta", id, meta) or "{}"
  local rc = C.thorp_journal_begin(self.h, id, kind, text, sched.wall())
  if rc == -2 then
    local prev = self:get(id) or {}
    local whose = prev.run_id == self.run_id and "registered earlier in this run"
      or ("left open by an earlier run (%s)"):format(tostring(prev.run_id))
    return nil, { code = "DUPLICATE", id = id, started_at = prev.started_at, run_id = prev.run_id,
                  message = ("trade %s is already open in the journal, %s: resolve it first "
                             .. "(thorp.journal.resolve(id, outcome)) or use a new id"):format(id, whose) }
  end
  if rc < 0 then return failed(self) end
  return true
end

--- j:send(id, { signature =, last_valid_block_height =, tx = }) -> true | nil, err
function J:send(id, rec)
  local rc = C.thorp_journal_send(self.h, id, rec.signature, rec.last_valid_block_height, rec.tx,
                                  rec.tx and #rec.tx or 0)
  if rc == -2 then
    return nil, { code = "NOT_FOUND", id = id,
                  message = ("journal.record_send: no open trade %s (register it with thorp.shutdown.register"
                             .. "(\"TRADE\", id, meta) first)"):format(id) }
  end
  if rc < 0 then return failed(self) end
  return true
end

--- j:done(id, status, outcome_table) -> true | nil, err
function J:done(id, status, outcome)
  local text = outcome_text(outcome)
  local sig = type(outcome) == "table" and type(outcome.signature) == "string" and outcome.signature or nil
  if C.thorp_journal_done(self.h, id, sched.wall(), status or "completed", text, sig) < 0 then return failed(self) end
  return true
end

--- j:get(id) -> the trade (open or finished) | nil
function J:get(id)
  local row = ffi.new("thorp_journal_row")
  if C.thorp_journal_get(self.h, tostring(id), row) ~= 1 then return nil end
  local t = row_table(row, true)
  t.status = ffi.string(row.status)
  C.thorp_journal_release(self.h)
  return t
end

--- j:open_trades(all) -> trades left open by earlier runs (all = include this run's)
function J:open_trades(all)
  local out = {}
  if C.thorp_journal_scan_open(self.h, all and "" or self.run_id) < 0 then return out end
  local row = ffi.new("thorp_journal_row")
  while C.thorp_journal_next(self.h, row) == 1 do out[#out + 1] = row_table(row, true) end
  return out
end

--- j:history{ limit = 100, since_ms = 0, status = nil } -> finished trades, newest first
function J:history(opts)
  opts = opts or {}
  local out = {}
  if C.thorp_journal_scan_history(self.h, opts.since_ms or 0, opts.status or "", opts.limit or 100) < 0 then
    return out
  end
  local row = ffi.new("thorp_journal_row")
  while C.thorp_journal_next(self.h, row) == 1 do
    local t = row_table(row, false)
    t.ended_at, t.status = row.ended_at, ffi.string(row.status)
    if row.outcome ~= nil then
      local o = json.decode(ffi.string(row.outcome))
      if type(o) == "table" then t.outcome, t.slot, t.err = o, o.slot, o.err end
    end
    out[#out + 1] = t
  end
  return out
end

--- j:claim(key, ttl_ms) -> true (first) | false (taken and not expired) | nil, err
function J:claim(key, ttl_ms)
  local rc = C.thorp_journal_claim(self.h, key, sched.wall(), ttl_ms)
  if rc < 0 then return failed(self) end
  return rc == 1
end

local function key_table(k)
  local t = { key = ffi.string(k.key), state = ffi.string(k.state), run_id = ffi.string(k.run_id),
              expires_at = k.expires_at }
  if k.claimed_at > 0 then t.claimed_at = k.claimed_at end
  if k.finished_at > 0 then t.finished_at = k.finished_at end
  return t
end

--- j:key(key) -> { key, state = "claimed"|"done", run_id, claimed_at, finished_at, expires_at } | nil
function J:key(key)
  local k = ffi.new("thorp_journal_key")
  if C.thorp_journal_key_get(self.h, key, k) ~= 1 then return nil end
  local t = key_table(k)
  C.thorp_journal_release(self.h)
  return t
end

--- j:keys() -> live (not expired) keys, oldest claim first
function J:keys()
  local out = {}
  if C.thorp_journal_scan_keys(self.h, sched.wall()) < 0 then return out end
  local k = ffi.new("thorp_journal_key")
  while C.thorp_journal_next_key(self.h, k) == 1 do out[#out + 1] = key_table(k) end
  return out
end

function J:key_done(key)
  if C.thorp_journal_key_done(self.h, key, sched.wall()) < 0 then return failed(self) end
  return true
end

--- j:unclaim(key) -> true (removed) | false (no such key) | nil, err
function J:unclaim(key)
  local rc = C.thorp_journal_unclaim(self.h, key)
  if rc < 0 then return failed(self) end
  return rc == 1
end

--- j:compact() -> rows removed | nil, err
function J:compact()
  local now = sched.wall()
  local n = C.thorp_journal_compact(self.h, now - self.retention_ms, now)
  if n < 0 then return failed(self) end
  return n
end

--- j:check() -> true | nil, err: a test write (the probe row); a failure is
--- handled like any failed operation (logged, counted, unhealthy, reopened)
function J:check()
  if C.thorp_journal_probe(self.h, sched.wall()) ~= 0 then return failed(self) end
  return true
end

--- j:recover() -> true when the database could be reopened and written to
function J:recover()
  if C.thorp_journal_reopen(self.h) ~= 0 or C.thorp_journal_probe(self.h, sched.wall()) ~= 0 then
    self.last_error = ffi.string(C.thorp_journal_error(self.h))
    return false
  end
  self.healthy = true
  return true
end

function J:stats()
  return { open = C.thorp_journal_count(self.h, C.JOURNAL_COUNT_OPEN), done = C.thorp_journal_count(self.h, C.JOURNAL_COUNT_DONE),
           idempotency_keys = C.thorp_journal_count(self.h, C.JOURNAL_COUNT_KEYS), dir = self.dir, run_id = self.run_id,
           healthy = self.healthy, errors = self.errors, last_error = self.last_error }
end

-- The host's journal ------------------------------------------------------

local compactor, reopener, checker
local pending = {}   -- completions that could not be written: { id, status, outcome }
local refused = 0    -- trades refused because the journal could not write them

local function flush_pending(j)
  local left = {}
  for _, p in ipairs(pending) do
    if not (j.healthy and j:done(p.id, p.status, p.outcome)) then left[#left + 1] = p end
  end
  pending = left
end

local function try_reopen()
  local j = M.default
  if not j or j.healthy then return end
  if j:recover() then
    flush_pending(j)
    log.warn("journal recovered: writes work again", { errors = j.errors, dir = j.dir, flushed_pending = #pending == 0 })
    if j.healthy and reopener then reopener:cancel(); reopener = nil end
  end
end

local function schedule_reopen()
  if not reopener then reopener = sched.daemon_every(1000, try_reopen, "journal.reopen") end
end

function M.start(cfg, mode)
  if mode ~= "run" and mode ~= "exec" and mode ~= "test" then return true end
  local dir = cfg and cfg.state_dir or os.getenv("THORP_STATE_DIR") or "./thorp-state"
  local jc = cfg and cfg.journal or {}
  local j, err = M.open(dir, { synchronous = jc.synchronous, retention_ms = jc.history_retention_ms,
                               on_failure = schedule_reopen })
  if not j then return nil, err end
  M.default = j
  pending, refused = {}, 0
  j:compact()
  M.recovered = j:open_trades()
  for _, t in ipairs(M.recovered) do
    log.warn("trade left open by an earlier run", { trade_id = t.id, type = t.type, meta = t.meta,
                                                     started_at = t.started_at, run_id = t.run_id,
                                                     signature = t.signature })
  end
  compactor = sched.daemon_every(600000, function() j:compact() end, "journal.compact")
  local every = jc.check_interval_ms or 5000
  if every > 0 then
    checker = sched.daemon_every(every, function() if j.healthy then j:check() end end, "journal.check")
  end
  return true
end

function M.stop()
  if compactor then compactor:cancel(); compactor = nil end
  if checker then checker:cancel(); checker = nil end
  if reopener then reopener:cancel(); reopener = nil end
  local j = M.default
  if j then
    if #pending > 0 and not j.healthy then j:recover() end
    flush_pending(j)
    if #pending > 0 then
      log.error("trade completions could not be journaled; these trades stay open in the journal",
                { trades = (function() local ids = {} for i, p in ipairs(pending) do ids[i] = p.id end return ids end)() })
    end
    close(j)
    M.default = nil
  end
end

--- healthy() -> bool: false while the journal cannot write (/health answers 503)
function M.healthy() return not M.default or M.default.healthy end

--- errors() -> journal operations that failed since start (thorp_journal_errors_total)
function M.errors() return M.default and M.default.errors or 0 end

--- unjournaled() -> trades refused or completions not written because of journal failures
function M.unjournaled() return refused + #pending end

-- Used by thorp.shutdown: begin/done on the host's journal. Without one
-- (the console, a module used alone) trades live in memory only.
function M.trade_begin(id, kind, meta)
  local j = M.default
  if not j then return true end
  local ok, err = j:begin(id, kind, meta)
  if not ok and err.code == "JOURNAL_ERROR" then refused = refused + 1 end
  return ok, err
end

function M.trade_done(id, status, outcome)
  local j = M.default
  if not j then return true end
  if j:done(id, status, outcome) then return true end
  pending[#pending + 1] = { id = id, status = status, outcome = outcome }
  return false
end

--- thorp.journal.open_trades() -> trades a previous run left open
function M.open_trades()
  if not M.default then return {} end
  return M.default:open_trades()
end

local function check_send(id, rec)
  if type(id) ~= "string" and type(id) ~= "number" then
    error(("journal.record_send: trade_id must be a string or number, got %s"):format(type(id)), 3)
  end
  if type(rec) ~= "table" then
    error("journal.record_send: expected { signature = base58, last_valid_block_height = n, tx = bytes }", 3)
  end
  if type(rec.signature) ~= "string" or not rec.signature:match("^[1-9A-HJ-NP-Za-km-z]+$") then
    error(("journal.record_send: signature must be a base58 string, got %s"):format(tostring(rec.signature)), 3)
  end
  local h = rec.last_valid_block_height
  if type(h) ~= "number" or h ~= h or h < 0 or h ~= math.floor(h) or h >= 2 ^ 53 then
    error(("journal.record_send: last_valid_block_height must be an integer >= 0, got %s"):format(tostring(h)), 3)
  end
  if rec.tx ~= nil and (type(rec.tx) ~= "string" or #rec.tx == 0) then
    error("journal.record_send: tx must be the signed transaction bytes (a non-empty string)", 3)
  end
end

--- thorp.journal.record_send(trade_id, { signature, last_valid_block_height, tx }) -> true | nil, err
--- Durable (committed) before it returns: call it before the first send.
function M.record_send(id, rec)
  check_send(id, rec)
  if not M.default then
    return nil, { code = "JOURNAL_ERROR", message = "journal.record_send: no journal (runs inside the host only)" }
  end
  return M.default:send(tostring(id), rec)
end

--- Turn complete()'s outcome (a string or { status =, slot =, err =, signature = }) into status, table.
function M.outcome(outcome)
  if outcome == nil then return "completed", nil end
  if type(outcome) == "string" then return outcome, nil end
  if type(outcome) ~= "table" then
    error(("outcome must be a status string or a table { status = ..., slot = ..., err = ... }, got %s"):format(
      type(outcome)), 3)
  end
  local st = outcome.status
  if st ~= nil and (type(st) ~= "string" or st == "") then
    error(("outcome.status must be a non-empty string such as \"confirmed\", got %s"):format(tostring(st)), 3)
  end
  return st or "completed", outcome
end

--- thorp.journal.resolve(id, outcome): mark a recovered trade as handled.
function M.resolve(id, outcome)
  local status, o = M.outcome(outcome or "resolved")
  return M.trade_done(tostring(id), status, o)
end

--- thorp.journal.history{ limit =, since_ms =, status = } -> finished trades, newest first
function M.history(opts)
  if opts ~= nil and type(opts) ~= "table" then error("journal.history: expected { limit =, since_ms =, status = }", 2) end
  opts = opts or {}
  if opts.limit ~= nil and (type(opts.limit) ~= "number" or opts.limit < 1) then
    error("journal.history: limit must be a number >= 1", 2)
  end
  if opts.since_ms ~= nil and type(opts.since_ms) ~= "number" then
    error("journal.history: since_ms must be wall-clock milliseconds since the epoch", 2)
  end
  if opts.status ~= nil and type(opts.status) ~= "string" then error("journal.history: status must be a string", 2) end
  if not M.default then return {} end
  return M.default:history(opts)
end

function M.stats()
  local s = M.default and M.default:stats() or { open = 0, done = 0, idempotency_keys = 0, healthy = true, errors = 0 }
  s.unjournaled = M.unjournaled()
  return s
end

return M
