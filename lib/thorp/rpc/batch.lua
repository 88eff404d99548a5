-- thorp.rpc.batch: auto-batching (new_pool{ auto_batch = n }, THORP_RPC_AUTO_BATCH).
--
-- Reads made in the same loop turn go upstream as one JSON-RPC batch (fewer
-- HTTP requests, less per-call overhead). Each call keeps its own admission
-- and gets its own answer; the batch takes the earliest deadline and the most
-- urgent priority of its calls, and fails over as a unit. The first call of a
-- turn spawns the flush task, which runs after the callers of that turn.
--
--   require("thorp.rpc.batch").install(Pool, stats_total)   -- adds Pool:_batched (lib/thorp/rpc.lua)
local sched = require "thorp.sched"
local logm = require "thorp.log"
local priority = require "thorp.priority"
local classify = require "thorp.rpc.classify"
local min = math.min

local B = {}

function B.install(Pool, T)
  local function flush_batch(pool, q)
    if pool.bq == q then pool.bq = nil end
    if #q == 1 then
      local e = q[1]
      local ok, res = pcall(pool._execute, pool, e.req, e.opts)
      sched.wake(e.task, ok and res or classify.fail("BAD_RESPONSE", tostring(res)), e.tok)
      return
    end
    local bodies, ids, deadline, prio = {}, {}, math.huge, "low"
    for i, e in ipairs(q) do
      bodies[i], ids[i] = e.req.body, e.req.id
      deadline = min(deadline, e.opts.timeout_ms or pool.timeout_ms)
      prio = priority.max(prio, e.req.priority)
    end
    T.auto_batches = (T.auto_batches or 0) + 1
    local breq = { body = "[" .. table.concat(bodies, ",") .. "]", batch = true, ids = ids, idempotent = true,
                   raw_elements = true, method = "auto-batch(" .. #q .. ")", rid = logm.request_id(), priority = prio }
    local ok, res = pcall(pool._execute, pool, breq, { timeout_ms = deadline })
    if not ok then res = classify.fail("BAD_RESPONSE", tostring(res)) end
    for i, e in ipairs(q) do
      local r = res
      if res.ok then
        r = res.results[i]
        r.endpoint, r.latency_ms, r.attempts, r.batched = res.endpoint, res.latency_ms, res.attempts, #q
      end
      sched.wake(e.task, r, e.tok)
    end
  end

  --- pool:_batched(req, opts) -> result: queue req for this turn's batch and wait for its answer
  function Pool:_batched(req, opts)
    local q = self.bq
    if not q or #q >= self.auto_batch then
      q = {}
      self.bq = q
      sched.spawn_opts({ daemon = true, name = "rpc.batch" }, flush_batch, self, q)
    end
    local task = sched.current()
    q[#q + 1] = { req = req, opts = opts, task = task, tok = sched.token(task) }
    return sched.suspend()
  end
end

return B
