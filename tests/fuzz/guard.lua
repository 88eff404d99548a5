-- guard: what the config and policy harnesses share. The code under test
-- runs whatever Lua the fuzzer writes, as a config or policy file; this
-- writes the input to a private file and, while it loads, keeps that code
-- from changing the machine (no processes, no removed, renamed or written
-- files). os.exit stays: a loader that lets a file exit the host is a
-- finding (libFuzzer reports the exit).
-- luacheck: globals os io (the guard swaps their functions while a file loads)
local M = {}

local dir = os.getenv("TMPDIR") or "/tmp"
dir = dir .. "/thorp-fuzz-" .. (io.open("/proc/self/stat"):read("*l"):match("^(%d+)"))
assert(os.execute(("mkdir -p %q"):format(dir)) == 0, "cannot create " .. dir)
M.dir = dir

local function refuse(name) return function() error(name .. " is not available while fuzzing", 2) end end
local real_open = io.open
local function read_only_open(path, mode)
  if mode and not mode:match("^r") then error("io.open for writing is not available while fuzzing", 2) end
  return real_open(path, mode)
end

function M.file(name, text)
  local path = dir .. "/" .. name
  local f = assert(real_open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

-- fn(...) with the machine guarded; returns what fn returns, re-raises its errors
function M.call(fn, ...)
  local saved = { os.execute, os.remove, os.rename, os.tmpname, io.popen, io.open, io.output, io.lines }
  os.execute, os.remove, os.rename, os.tmpname = refuse("os.execute"), refuse("os.remove"),
    refuse("os.rename"), refuse("os.tmpname")
  io.popen, io.open, io.output, io.lines = refuse("io.popen"), read_only_open, refuse("io.output"), refuse("io.lines")
  local r = { pcall(fn, ...) }
  os.execute, os.remove, os.rename, os.tmpname, io.popen, io.open, io.output, io.lines = unpack(saved)
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, table.maxn(r))
end

return M
