-- testing: `thorp test` runs busted inside the host, on the loop.
--
-- The busted runner itself runs in a task, so a spec may thorp.sleep, make
-- an RPC call or plain coroutine.yield() while timers, handlers and other
-- coroutines go on, and every spec exercises the real C bindings.
--
-- Output: one line per test (ok / FAIL / skip with the reason) and a last
-- line "N passed, N failed[, N skipped]" that scripts/run-tests adds up.
local M = {}

--- The busted output handler (loaded by name: -o thorp.testing).
local function output_handler()
  local busted = require "busted"
  local handler = require("busted.outputHandlers.base")()
  local pretty = require "pl.pretty"
  local passed, failed, skipped = 0, 0, 0

  local function show(t, what)
    local msg = t.message
    if msg == nil then msg = "Nil error" elseif type(msg) ~= "string" then msg = pretty.write(msg) end
    io.write(("FAIL - %s (%s)\n"):format(t.name, what))
    local tr = t.element and t.element.trace
    if tr and tr.short_src then io.write(("  at %s:%s\n"):format(tr.short_src, tr.currentline)) end
    io.write("  ", (msg:gsub("\n", "\n  ")), "\n")
    if t.trace and t.trace.traceback and os.getenv("THORP_TEST_VERBOSE") then
      io.write("  ", (t.trace.traceback:gsub("\n", "\n  ")), "\n")
    end
  end

  handler.testEnd = function(element, _, status)
    if status == "success" then
      passed = passed + 1
      io.write("ok   - ", handler.getFullName(element), "\n")
    elseif status == "pending" then
      skipped = skipped + 1
      local t = handler.pendings[#handler.pendings]
      io.write("skip - ", t.name, (type(t.message) == "string" and (": " .. t.message) or ""), "\n")
    elseif status == "failure" then
      failed = failed + 1
      show(handler.failures[#handler.failures], "failure")
    elseif status == "error" then
      failed = failed + 1
      show(handler.errors[#handler.errors], "error")
    end
    io.flush()
    return nil, true
  end

  handler.error = function(element)
    if element.descriptor ~= "it" then
      failed = failed + 1
      show(handler.errors[#handler.errors], element.descriptor)
    end
    io.flush()
    return nil, true
  end

  handler.suiteEnd = function()
    io.write(("%d passed, %d failed%s\n"):format(passed, failed, skipped > 0 and (", " .. skipped .. " skipped") or ""))
    io.flush()
    M.result = { passed = passed, failed = failed, skipped = skipped }
    return nil, true
  end

  busted.subscribe({ "test", "end" }, handler.testEnd, { predicate = handler.cancelOnPending })
  busted.subscribe({ "error" }, handler.error)
  busted.subscribe({ "suite", "end" }, handler.suiteEnd)
  return handler
end
M.output_handler = output_handler
package.preload["thorp.busted_output"] = function() return output_handler end

------------------------------------------------------------------------------
-- Helpers for specs: wait for a condition, never for a fixed time.
--   local testing = require "thorp.testing"
--   testing.wait_until(function() return #got == 3 end, 1000, "three events")
--   testing.turns(3)   -- let the loop turn 3 times (to see that something did NOT happen)
------------------------------------------------------------------------------

--- wait_until(cond, timeout_ms = 5000, what) -> cond()'s first truthy value.
--- Polls cond on every loop turn; raises "wait_until: WHAT not reached within N ms" at the deadline.
function M.wait_until(cond, timeout_ms, what)
  local sched = require "thorp.sched"
  timeout_ms = timeout_ms or 5000
  local deadline = sched.now() + timeout_ms
  while true do
    local v = cond()
    if v then return v end
    if sched.now() >= deadline then
      error(("wait_until: %s not reached within %d ms"):format(what or "the condition", timeout_ms), 2)
    end
    coroutine.yield()        -- other ready tasks of this turn
    v = cond()
    if v then return v end
    sched.sleep(0.001)       -- the next turn (timers, I/O, the inbox)
  end
end

--- turns(n = 5): let the loop run n turns (no wall-clock wait).
function M.turns(n)
  local sched = require "thorp.sched"
  for _ = 1, n or 5 do coroutine.yield(); sched.sleep(0.001) end
end

--- Run busted on paths (files or directories); returns the exit code.
function M.run(paths, extra)
  if #paths == 0 then paths = { "tests" } end
  local args = { "-o", "thorp.busted_output", "-p", "_spec", "--no-auto-insulate" }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  for _, p in ipairs(paths) do
    args[#args + 1] = p
    -- specs may require helpers next to them: tests/helpers/x.lua is require("helpers.x")
    local dir = p:match("%.lua$") and (p:match("^(.*)/[^/]*$") or ".") or p
    package.path = dir .. "/?.lua;" .. package.path
  end
  _G.arg = args
  args[0] = "thorp-test"
  local exit_code
  local real_exit = os.exit
  os.exit = function(code) -- busted ends with os.exit; end the run instead
    exit_code = (code == true or code == nil) and 0 or (code == false and 1 or code)
    error({ thorp_test_exit = true })
  end
  local ok, err = pcall(function() require("busted.runner")({ standalone = false, output = "thorp.busted_output" }) end)
  os.exit = real_exit
  -- busted's exit helper raises error() (nil) on failure under Lua 5.1
  if not ok and err ~= nil and not (type(err) == "table" and err.thorp_test_exit) then
    io.stderr:write("thorp test: ", tostring(err), "\n")
    return 1
  end
  if exit_code then return exit_code ~= 0 and 1 or 0 end
  if M.result then return M.result.failed > 0 and 1 or 0 end
  return 1
end

return M
