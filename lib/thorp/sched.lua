-- sched: coroutines, timers and the inbox on the host's one loop.
--
-- Every piece of user code runs in a task (a coroutine). A task that has to
-- wait (thorp.sleep, an RPC call, a bulkhead slot) parks itself with
-- sched.suspend() and whoever owns the wait calls sched.wake(task, value)
-- later; the value becomes suspend()'s return value. A plain
-- coroutine.yield() from a task just gives the loop a turn.
--
-- Timers live in a binary heap here in Lua; C only learns the next deadline.
-- C modules never call into Lua: they post to the inbox (host/loop.h) and
-- step() drains it in batches, dispatching by kind to sched.on_event handlers.
--
-- Liveness (what keeps `thorp exec` running): tasks and timers created by
-- user code, plus sched.hold()/sched.unhold() for pending work such as
-- registered operations or queued bus events. Host internals use
-- daemon = true so that their background work never keeps a script alive.
local ffi = require "ffi"

local C = require "thorp.cdef"
local co_create, co_resume, co_yield, co_status, co_running =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running
local select, unpack, type, tostring, xpcall = select, unpack, type, tostring, xpcall
local floor = math.floor

local M = {}

M.EV = { SIGNAL = C.TEV_SIGNAL, RPC = C.TEV_RPC, CONSOLE = C.TEV_CONSOLE, HTTP = C.TEV_HTTP,
         USER = C.TEV_USER }

local SUSPEND = setmetatable({}, { __tostring = function() return "thorp.SUSPEND" end })
M.SUSPEND = SUSPEND

local now = C.thorp_now
M.now = function() return now() end
-- The clock as of the start of this loop turn (like OpenResty's ngx.now()):
-- free to read, for hot paths that only need turn resolution. M.now reads the
-- clock itself.
local cached = now()
M.cached_now = function() return cached end
M.wall = function() return C.thorp_wall() end

-- Errors go to thorp.log (which needs nothing of sched, so there is no cycle).
local function report(msg, fields) require("thorp.log").error(msg, fields) end

------------------------------------------------------------------------------
-- Tasks
------------------------------------------------------------------------------
local Task = {}
Task.__index = Task

local current = nil
local live = 0      -- user (non-daemon) tasks not yet finished
local holds = 0     -- pending work: user timers, operations, queued events
local rq_task, rq_val = {}, {}
local rq_head, rq_tail = 1, 0

local function enqueue(t, v)
  rq_tail = rq_tail + 1
  rq_task[rq_tail] = t
  rq_val[rq_tail] = v
end

local function on_error(e)
  return { err = e, tb = debug.traceback(tostring(e), 2) }
end

local function finish(t)
  t.done = true
  if not t.daemon then live = live - 1 end
  local w = t.waiters
  if w then
    t.waiters = nil
    for i = 1, #w do M.wake(w[i], t) end
  end
  if t.on_done then t.on_done(t) end
end

local RECYCLE = setmetatable({}, { __tostring = function() return "thorp.RECYCLE" end })
local NOARGS = { n = 0 }

local function record(t, ok, ...)
  if ok then
    if select("#", ...) > 0 then t.results = { true, ... } end
  else
    local e = ...
    t.error = e.err
    t.traceback = e.tb
    if not t.quiet then report("task failed", { task = t.name, error = e.tb }) end
  end
end

-- A task's coroutine runs functions in a loop: when one finishes it yields
-- RECYCLE and goes back to the pool, so spawning mostly costs no new
-- coroutine (spawn is on the path of every timer callback).
local function body(t, fn)
  while true do
    local args = t.args
    t.args = nil
    record(t, xpcall(fn, on_error, unpack(args, 1, args.n)))
    t, fn = co_yield(RECYCLE)
  end
end

local pool, pool_n = {}, 0
local POOL_MAX = 1024

--- spawn(fn, ...) -> task. Runs fn(...) in a new coroutine on a later turn.
function M.spawn_opts(opts, fn, ...)
  if type(fn) ~= "function" then error("thorp.spawn: expected a function, got " .. type(fn), 3) end
  local n = select("#", ...)
  local t = setmetatable({ name = opts.name, daemon = opts.daemon or false,
                           quiet = opts.quiet, waiting = false, wtok = 0,
                           args = n == 0 and NOARGS or { n = n, ... } }, Task)
  if pool_n > 0 then
    t.co = pool[pool_n]
    pool[pool_n] = nil
    pool_n = pool_n - 1
  else
    t.co = co_create(body)
  end
  if not t.daemon then live = live + 1 end
  t.first = fn
  enqueue(t, nil)
  return t
end

local default_opts = {}
function M.spawn(fn, ...) return M.spawn_opts(default_opts, fn, ...) end

--- The running task, or nil outside any task.
function M.current()
  local t = current
  if t and co_running() == t.co then return t end
  return nil
end

--- A token for the next suspend(): a wake carrying an older token is ignored,
--- so a late timer cannot wake a task that has moved on to another wait.
function M.token(t)
  t = t or current
  t.wtok = t.wtok + 1
  return t.wtok
end

--- Park the running task until sched.wake(task, value); returns value.
function M.suspend()
  local t = current
  if not t or co_running() ~= t.co then
    error("this call waits, so it must run inside a thorp task (thorp.spawn, a handler, or thorp exec)", 3)
  end
  t.waiting = true
  return co_yield(SUSPEND)
end

--- Wake a parked task with value. Returns false if it was not waiting (or
--- the token is stale), so racing wakers (answer vs. timeout) are safe.
function M.wake(t, v, tok)
  if not t.waiting or (tok and tok ~= t.wtok) then return false end
  t.waiting = false
  enqueue(t, v)
  return true
end

function Task:wait()
  if self.done then return self end
  self.waiters = self.waiters or {}
  self.waiters[#self.waiters + 1] = M.current()
  M.suspend()
  return self
end

function Task:__tostring() return "task " .. (self.name or "?") end

function Task:status()
  return self.done and (self.error ~= nil and "failed" or "done") or (self.waiting and "waiting" or "ready")
end

-- the watchdog thread (host/watchdog.c) sees which task runs, and for how long
local wd = C.thorp_wd
M.watchdog = wd
--- watchdog_start(limit_ms, exit_multiple): report any task running longer than limit_ms
--- without yielding; with exit_multiple > 0, exit 1 once one has run that many limits.
function M.watchdog_start(limit_ms, exit_multiple)
  wd.exit_after_ms = (exit_multiple or 0) > 0 and limit_ms * exit_multiple or 0
  return C.thorp_watchdog_start(limit_ms) == 0
end

local function run_task(t, v)
  current = t
  wd.task = t.name or "task"
  wd.seq = wd.seq + 1
  wd.running = 1
  local ok, r
  if t.first then
    local fn = t.first
    t.first = nil
    ok, r = co_resume(t.co, t, fn)
  else
    ok, r = co_resume(t.co, v)
  end
  wd.running = 0
  current = nil
  if r == RECYCLE then
    finish(t)
    if pool_n < POOL_MAX then
      pool_n = pool_n + 1
      pool[pool_n] = t.co
    end
  elseif not ok then
    -- body() catches everything; this is an error resuming (should not happen)
    report("task could not be resumed", { task = t.name, error = tostring(r) })
    finish(t)
  elseif co_status(t.co) == "dead" then
    finish(t)
  elseif r ~= SUSPEND then
    enqueue(t, nil) -- a plain coroutine.yield(): run again next turn
  end
end

------------------------------------------------------------------------------
-- Timers: a binary min-heap of { at, seq, ... }
------------------------------------------------------------------------------
local heap, hn, tseq = {}, 0, 0

local function less(a, b) return a.at < b.at or (a.at == b.at and a.seq < b.seq) end

local function heap_push(e)
  hn = hn + 1
  local i = hn
  heap[i] = e
  while i > 1 do
    local p = floor(i / 2)
    if less(heap[i], heap[p]) then heap[i], heap[p] = heap[p], heap[i]; i = p else break end
  end
end

local function sift_down(i)
  while true do
    local l, r, m = 2 * i, 2 * i + 1, i
    if l <= hn and less(heap[l], heap[m]) then m = l end
    if r <= hn and less(heap[r], heap[m]) then m = r end
    if m == i then return end
    heap[i], heap[m] = heap[m], heap[i]
    i = m
  end
end

local function heap_pop()
  local top = heap[1]
  heap[1] = heap[hn]
  heap[hn] = nil
  hn = hn - 1
  sift_down(1)
  return top
end

local Timer = {}
Timer.__index = Timer

-- Cancelled timers are not searched out of the heap: they are counted, and
-- once they are more than half of it (and more than a few) the heap is
-- rebuilt without them, so create+cancel in a loop keeps it small.
local dead = 0
local COMPACT_MIN = 64

local function heap_compact()
  local live_n = 0
  for i = 1, hn do
    local e = heap[i]
    if not e.cancelled then live_n = live_n + 1; heap[live_n] = e else e.in_heap = false end
  end
  for i = live_n + 1, hn do heap[i] = nil end
  hn, dead = live_n, 0
  for i = floor(hn / 2), 1, -1 do sift_down(i) end -- heapify
end

--- timer:cancel() -> true | false (already cancelled or fired). Once it
--- returns, the callback never starts again: a callback already spawned in
--- this loop turn checks the flag before it runs.
function Timer:cancel()
  if self.cancelled or self.fired then return false end
  self.cancelled = true
  if not self.daemon and not self.spawned then holds = holds - 1 end
  if self.in_heap then
    dead = dead + 1
    if dead > COMPACT_MIN and dead * 2 > hn then heap_compact() end
  end
  return true
end

local function add_timer(ms, fn, interval, daemon, name)
  if type(ms) ~= "number" or ms ~= ms then error("timer delay must be a number of milliseconds", 3) end
  if type(fn) ~= "function" then error("timer callback must be a function", 3) end
  if ms < 0 then ms = 0 end
  tseq = tseq + 1
  local e = setmetatable({ at = now() + ms, seq = tseq, fn = fn, interval = interval, daemon = daemon or false,
                           cancelled = false, name = name, in_heap = true }, Timer)
  if not e.daemon then holds = holds + 1 end
  heap_push(e)
  return e
end

M.timer = {
  after = function(ms, fn) return add_timer(ms, fn, nil, false) end,
  every = function(ms, fn)
    if type(ms) ~= "number" or ms <= 0 then error("thorp.timer.every: interval must be a number > 0 (ms)", 2) end
    return add_timer(ms, fn, ms, false)
  end,
}
--- Host-internal timers that never keep `thorp exec` alive.
function M.daemon_after(ms, fn, name) return add_timer(ms, fn, nil, true, name) end
function M.daemon_every(ms, fn, name) return add_timer(ms, fn, ms, true, name) end

--- thorp.sleep(ms): park the running task; the loop keeps running.
function M.sleep(ms)
  local t = current
  if not t or co_running() ~= t.co then
    error("thorp.sleep must run inside a thorp task (thorp.spawn, a handler, or thorp exec)", 2)
  end
  if type(ms) ~= "number" then error("thorp.sleep: expected milliseconds, got " .. type(ms), 2) end
  if ms <= 0 then co_yield(); return end
  tseq = tseq + 1
  t.wtok = t.wtok + 1
  heap_push({ at = now() + ms, seq = tseq, task = t, tok = t.wtok, daemon = true })
  t.waiting = true
  co_yield(SUSPEND)
end

--- suspend_until(at_ms, tok) -> value: park the running task (whose token
--- is tok, from sched.token) until sched.wake(task, value, tok), or until the
--- clock reaches at_ms (then nil). A deadline without a timer object or a
--- closure: hot waits (an RPC call's answer) cost one heap entry, dropped
--- unfired when the wake comes first.
function M.suspend_until(at, tok)
  local t = current
  if not t or co_running() ~= t.co then
    error("this call waits, so it must run inside a thorp task (thorp.spawn, a handler, or thorp exec)", 3)
  end
  tseq = tseq + 1
  local e = { at = at, seq = tseq, task = t, tok = tok, daemon = true, in_heap = true, cancelled = false }
  heap_push(e)
  t.waiting = true
  local v = co_yield(SUSPEND)
  if e.in_heap then
    e.cancelled = true
    dead = dead + 1
    if dead > COMPACT_MIN and dead * 2 > hn then heap_compact() end
  end
  return v
end

local timer_opts = { name = "timer", quiet = false }
-- The callback's task starts with this check: a cancel() between the spawn
-- and the start (a busy task ahead of it in the same turn) wins.
local function run_timer(e)
  if e.cancelled then return end
  if not e.interval then e.fired = true end -- from now on cancel() returns false
  return e.fn(e)
end
local function fire(e)
  if e.task then
    e.in_heap = false
    M.wake(e.task, nil, e.tok)
    return
  end
  e.in_heap = false
  if e.interval then
    e.at = e.at + e.interval
    local n = now()
    if e.at < n then e.at = n end -- never fire in a burst to catch up
    tseq = tseq + 1
    e.seq = tseq
    e.in_heap = true
    heap_push(e)
  elseif not e.daemon then
    holds = holds - 1 -- the callback's task keeps exec alive from here
    e.spawned = true
  end
  timer_opts.daemon = e.daemon
  timer_opts.name = e.name or "timer"
  M.spawn_opts(timer_opts, run_timer, e)
end

------------------------------------------------------------------------------
-- Liveness
------------------------------------------------------------------------------
function M.hold(n) holds = holds + (n or 1) end
function M.unhold(n) holds = holds - (n or 1) end
function M.pending()
  return { tasks = live, holds = holds, ready = rq_tail - rq_head + 1, timers = hn, cancelled_timers = dead }
end
function M.is_idle() return live == 0 and holds <= 0 and rq_tail < rq_head and C.thorp_inbox_size() == 0 end

------------------------------------------------------------------------------
-- Inbox and signals
------------------------------------------------------------------------------
local handlers = {}
function M.on_event(kind, fn) handlers[kind] = fn end

local signal_handlers = {}
--- sched.on_signal(signum, fn): fn(signum) runs in a daemon task.
function M.on_signal(signum, fn)
  signal_handlers[signum] = fn
  C.thorp_loop_catch_signal(signum)
end
M.SIGHUP, M.SIGINT, M.SIGTERM, M.SIGUSR1 = C.TSIG_HUP, C.TSIG_INT, C.TSIG_TERM, C.TSIG_USR1

handlers[M.EV.SIGNAL] = function(ev)
  local h = signal_handlers[ev.a]
  if h then M.spawn_opts({ daemon = true, name = "signal-" .. ev.a }, h, ev.a) end
end

local BATCH = 256
local evbuf = ffi.new("thorp_event[?]", BATCH)

local function drain_inbox()
  while true do
    local n = C.thorp_inbox_drain(evbuf, BATCH)
    for i = 0, n - 1 do
      local ev = evbuf[i]
      local h = handlers[ev.kind]
      if h then
        local ok, err = pcall(h, ev)
        if not ok then report("inbox handler failed", { kind = ev.kind, error = tostring(err) }) end
      end
    end
    if n < BATCH then return end
  end
end

------------------------------------------------------------------------------
-- The step the C loop calls once per turn (host/loop.c: loop_run)
------------------------------------------------------------------------------
local stop_code = nil
local idle_hooks = {}
--- fn() is called when nothing user-visible is left; used by `thorp exec`.
function M.on_idle(fn) idle_hooks[#idle_hooks + 1] = fn end

function M.stop(code)
  if stop_code == nil then stop_code = code or 0 end
  C.thorp_loop_stop()
end
function M.exit_code() return stop_code end

local RUN_BUDGET = 20000

local function step()
  cached = now()
  drain_inbox()
  local t = now()
  while hn > 0 and heap[1].at <= t do
    local e = heap_pop()
    if e.cancelled then e.in_heap = false; dead = dead - 1 else fire(e) end
  end
  local budget = RUN_BUDGET
  while rq_head <= rq_tail and budget > 0 do
    local i = rq_head
    local task, v = rq_task[i], rq_val[i]
    rq_task[i], rq_val[i] = nil, nil
    rq_head = i + 1
    run_task(task, v)
    budget = budget - 1
  end
  if rq_head > rq_tail then rq_head, rq_tail = 1, 0 end
  if stop_code ~= nil then return 0 end
  if #idle_hooks > 0 and M.is_idle() then
    for _, h in ipairs(idle_hooks) do h() end
    if stop_code ~= nil then return 0 end
  end
  if rq_head <= rq_tail then return 0 end
  -- drop cancelled timers at the top so they do not wake the loop
  while hn > 0 and heap[1].cancelled do heap_pop().in_heap = false; dead = dead - 1 end
  if hn > 0 then
    local d = heap[1].at - now()
    return d > 0 and d or 0
  end
  return -1
end
M.step = step

--- Run the loop until sched.stop(code); returns the code.
function M.run()
  _G.__thorp_step = step
  local rc = C.thorp_script_run_loop()
  if rc ~= 0 and stop_code == nil then stop_code = 1 end
  return stop_code or 0
end

return M
