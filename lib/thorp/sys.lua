-- sys: small POSIX helpers reached through the FFI (pid, files, dirs).
local ffi = require "ffi"
ffi.cdef [[
int getpid(void);
int mkdir(const char *path, unsigned int mode);
int access(const char *path, int mode);
char *strerror(int errnum);
]]
local C = ffi.C
local M = {}
function M.getpid() return C.getpid() end
function M.exists(path) return C.access(path, 0) == 0 end
--- mkdir -p with mode (default 0700); returns true or nil, err
function M.mkdir_p(path, mode)
  mode = mode or tonumber("700", 8)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    if C.mkdir(acc, mode) ~= 0 then
      local e = ffi.errno()
      if e ~= 17 then return nil, ("cannot create directory %s: %s"):format(acc, ffi.string(C.strerror(e))) end
    end
  end
  return true
end
function M.strerror(e) return ffi.string(C.strerror(e or ffi.errno())) end
return M
