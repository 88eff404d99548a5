-- bus.quarantine: what happens when a handler fails.
--
-- Each subscriber keeps a window of its last `failure_window` deliveries.
-- A failure is counted and logged (at most LOG_PER_S lines per subscriber
-- per second, with a request id; the rest are counted in the next line).
-- When the failures in the window exceed max_failure_rate * failure_window
-- the subscriber is quarantined: its events are skipped for quarantine_ms,
-- then it is let back on probation with a fresh window. Successes are only
-- recorded while the window holds a failure or during probation, so a
-- healthy subscriber pays nothing here.
local sched = require "thorp.sched"
local logm = require "thorp.log"
local log = logm.for_module("bus")

local now = sched.cached_now
local LOG_PER_S = 10

local M = {}

--- release(sub, t) -> true when the quarantine is over at time t (sub back on probation).
function M.release(s, t)
  if t < s.quarantine_until then return false end
  s.quarantined, s.probation, s.watch, s.wfails, s.wn, s.wi = false, true, true, 0, 0, 1
  for i = 1, s.window do s.win[i] = false end
  log.info("subscriber back on probation", { subscriber = s.name, topic = s.topic })
  return true
end

--- lift(sub): end a quarantine and clear the window now (a new handler gets a fresh start).
function M.lift(s)
  if s.quarantined or s.wfails > 0 then
    s.quarantine_until = 0
    M.release(s, 0)
    s.probation, s.watch = false, false
  end
end

--- record(sub, failed): a delivery's outcome in the window; quarantine past the rate.
--- Successes are recorded only while s.watch (a failure in the window, or probation).
function M.record(s, failed)
  local i = s.wi
  if s.win[i] then s.wfails = s.wfails - 1 end
  s.win[i] = failed
  s.wi = i % s.window + 1
  if s.wn < s.window then s.wn = s.wn + 1 end
  if s.probation and s.wn >= s.window then s.probation = false end
  if failed then
    s.wfails = s.wfails + 1
    if s.wfails > s.max_failure_rate * s.window then
      s.quarantined = true
      s.quarantines = s.quarantines + 1
      s.quarantine_until = sched.now() + s.quarantine_ms
      log.warn("subscriber quarantined", { subscriber = s.name, topic = s.topic, failures = s.wfails,
                                           window = s.window, quarantine_ms = s.quarantine_ms })
    end
  end
  s.watch = s.wfails > 0 or s.probation
end

local by_task = setmetatable({}, { __mode = "k" })
--- adopt(sub): the running task is sub's worker (for request_id()).
function M.adopt(s) by_task[sched.current()] = s end

--- The request id of the delivery running in the current task (made on first
--- use; the error line of a failed handler carries it), or nil outside a handler.
function M.request_id(s)
  if not s then
    local t = sched.current()
    s = t and by_task[t]
    if not s then return nil end
  end
  -- one id per delivery: the n-th handler call of this subscriber
  local k = s.delivered + s.failures
  if s.rid_k ~= k then s.rid, s.rid_k = logm.request_id(), k end
  return s.rid
end

--- traceback(e): the handler's traceback, without the bus's and scheduler's own frames.
function M.traceback(e)
  return (debug.traceback(tostring(e), 2)
    :gsub("\n%s*[^\n]*lib/thorp/bus/deliver%.lua:%d+:[^\n]*", "")
    :gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""))
end

--- failed(bus, sub, err): count, log (rate-limited) and record a handler error.
function M.failed(self, s, err)
  local tp = s.tp
  local rid = M.request_id(s) -- before the count moves on to the next delivery
  s.failures = s.failures + 1
  tp.failures = tp.failures + 1
  self.failures = self.failures + 1
  local t = now()
  if t - s.log_at >= 1000 then s.log_at, s.log_n = t, 0 end
  if s.log_n < LOG_PER_S then
    s.log_n = s.log_n + 1
    log.error("bus handler failed", { request_id = rid, subscriber = s.name, topic = s.topic,
                                      error = err, not_logged = s.log_skipped > 0 and s.log_skipped or nil })
    s.log_skipped = 0
  else
    s.log_skipped = s.log_skipped + 1
  end
  M.record(s, true)
end

return M
