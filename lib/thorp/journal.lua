-- thorp.journal: the durable trade journal (host/journal.c, SQLite in WAL
-- mode under THORP_STATE_DIR). thorp.shutdown writes trades through it;
-- users read what a previous run left open:
--
--   for _, t in ipairs(thorp.journal.open_trades()) do   -- {id, type, meta, started_at}
--     reconcile(t); thorp.journal.resolve(t.id, "reconciled")
--   end
--
-- A trade stays open in the journal until it is completed or resolved, so a
-- crash, kill -9 or forced exit never loses one: every later run lists it
-- (and logs it at start) until someone resolves it.
-- Durability: THORP_JOURNAL_SYNC = NORMAL (default; safe against process
-- crashes) or FULL (also against power loss). Done trades older than
-- retention_ms (24 h) and expired idempotency keys are compacted away at
-- start and every 10 minutes.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local sched = require "thorp.sched"
local log = require("thorp.log").for_module("journal")

local C = require "thorp.cdef"

local M = {}
local J = {}
J.__index = J

local function close(self)
  if self.h ~= nil then C.thorp_journal_close(ffi.gc(self.h, nil)); self.h = nil end
end
J.close = close

--- open(dir, { synchronous = "NORMAL"|"FULL"|"OFF", run_id = s }) -> j | nil, err
function M.open(dir, opts)
  opts = opts or {}
  local err = ffi.new("char[512]")
  local run_id = opts.run_id or ("%d-%d"):format(require("thorp.sys").getpid(), math.floor(sched.wall()))
  local h = C.thorp_journal_open(dir, opts.synchronous or "NORMAL", run_id, err, 512)
  if h == nil then return nil, ffi.string(err) end
  return setmetatable({ h = ffi.gc(h, C.thorp_journal_close), dir = dir, run_id = run_id,
                        retention_ms = opts.retention_ms or 86400000 }, J)
end

local function check(self, rc)
  if rc < 0 then error(ffi.string(C.thorp_journal_error(self.h)), 3) end
  return rc
end

function J:begin(id, kind, meta)
  local text = "{}"
  if meta ~= nil then text = cjson.encode(meta) end
  if not text then error("journal: trade " .. tostring(id) .. " meta cannot be stored as JSON (functions, cycles?)", 2) end
  check(self, C.thorp_journal_begin(self.h, id, kind, text, sched.wall()))
end

function J:done(id, status) check(self, C.thorp_journal_done(self.h, id, sched.wall(), status or "completed")) end

--- j:open_trades(all) -> trades left open by earlier runs (all = include this run's)
function J:open_trades(all)
  local out = {}
  C.thorp_journal_scan_open(self.h, all and "" or self.run_id)
  local row = ffi.new("thorp_journal_row")
  while C.thorp_journal_next(self.h, row) == 1 do
    local meta = cjson.decode(ffi.string(row.meta))
    out[#out + 1] = { id = ffi.string(row.id), type = ffi.string(row.kind), meta = meta or {},
                      started_at = row.started_at, run_id = ffi.string(row.run_id) }
  end
  return out
end

--- j:claim(key, ttl_ms) -> true (first) | false (taken and not expired)
function J:claim(key, ttl_ms) return check(self, C.thorp_journal_claim(self.h, key, sched.wall(), ttl_ms)) == 1 end
function J:unclaim(key) check(self, C.thorp_journal_unclaim(self.h, key)) end

function J:compact()
  local now = sched.wall()
  return check(self, C.thorp_journal_compact(self.h, now - self.retention_ms, now))
end

function J:stats()
  return { open = C.thorp_journal_count(self.h, C.JOURNAL_COUNT_OPEN), done = C.thorp_journal_count(self.h, C.JOURNAL_COUNT_DONE),
           idempotency_keys = C.thorp_journal_count(self.h, C.JOURNAL_COUNT_KEYS), dir = self.dir, run_id = self.run_id }
end

-- The host's journal ------------------------------------------------------

local compactor

function M.start(cfg, mode)
  if mode ~= "run" and mode ~= "exec" and mode ~= "test" then return true end
  local dir = cfg and cfg.state_dir or os.getenv("THORP_STATE_DIR") or "./thorp-state"
  local j, err = M.open(dir, { synchronous = cfg and cfg.journal and cfg.journal.synchronous })
  if not j then return nil, err end
  M.default = j
  j:compact()
  M.recovered = j:open_trades()
  for _, t in ipairs(M.recovered) do
    log.warn("trade left open by an earlier run", { trade_id = t.id, type = t.type, meta = t.meta,
                                                     started_at = t.started_at, run_id = t.run_id })
  end
  compactor = sched.daemon_every(600000, function() j:compact() end, "journal.compact")
  return true
end

function M.stop()
  if compactor then compactor:cancel(); compactor = nil end
  if M.default then close(M.default); M.default = nil end
end

--- thorp.journal.open_trades() -> trades a previous run left open
function M.open_trades()
  if not M.default then return {} end
  return M.default:open_trades()
end

--- thorp.journal.resolve(id, status): mark a recovered trade as handled.
function M.resolve(id, status)
  if M.default then M.default:done(tostring(id), status or "resolved") end
end

function M.stats() return M.default and M.default:stats() or { open = 0, done = 0, idempotency_keys = 0 } end

return M
