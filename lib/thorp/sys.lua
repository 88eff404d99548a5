-- sys: small POSIX helpers reached through the FFI (pid, files, dirs).
local ffi = require "ffi"
local C = require "thorp.cdef"
local M = {}
function M.getpid() return C.getpid() end
--- mkdir -p with mode (default 0700); returns true or nil, err
function M.mkdir_p(path, mode)
  mode = mode or tonumber("700", 8)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    if C.mkdir(acc, mode) ~= 0 then
      local e = ffi.errno()
      if e ~= C.SYS_EEXIST then return nil, ("cannot create directory %s: %s"):format(acc, ffi.string(C.strerror(e))) end
    end
  end
  return true
end
function M.strerror(e) return ffi.string(C.strerror(e or ffi.errno())) end
return M
