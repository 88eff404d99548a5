-- config_load: the host's configuration loader (thorp.config.load) on a
-- config file the fuzzer writes, with environment variables and --set
-- options taken from the same input: a line `--env NAME=value` (a Lua
-- comment in the file) sets NAME, a line `--set key=value` is a --set.
-- Invariants: load never raises; it returns a configuration or nil and a
-- non-empty list of error strings; a configuration's endpoints show no
-- query value of their URL (API keys) in display_url.
local here = debug.getinfo(1, "S").source:match("^@(.*/)")
local guard = dofile(here .. "guard.lua")
local config = require "thorp.config"
local ffi = require "ffi"
-- log_free (host/log.h) empties the scrubber's secret list. Each input starts as
-- a fresh host would: the query values earlier inputs registered as secrets
-- would pile up (every scrub scans them; one 30-minute run slowed from 2,500 to
-- 43 exec/s at 600 MB) and make a finding depend on the inputs before it.
ffi.cdef "void log_free(void);"

return {
  one = function(input)
    ffi.C.log_free()
    local env, sets = {}, {}
    for line in input:gmatch("[^\n]+") do
      local k, v = line:match("^%-%-env ([%w_]+)=(.*)$")
      if k then env[k] = v end
      local s = line:match("^%-%-set (.*)$")
      if s then sets[#sets + 1] = s end
    end
    local path = guard.file("thorp.conf.lua", input)
    local cfg, errs = guard.call(config.load, { file = path, sets = sets, env = function(name) return env[name] end })
    if cfg == nil then
      if type(errs) ~= "table" or #errs == 0 then error("config.load failed without saying why") end
      for i, e in ipairs(errs) do
        if type(e) ~= "string" then error(("error %d is a %s, not a message"):format(i, type(e))) end
      end
      return
    end
    if type(cfg) ~= "table" or type(cfg.rpc) ~= "table" or type(cfg.rpc.endpoints) ~= "table" then
      error("config.load returned a configuration without rpc.endpoints")
    end
    for _, e in ipairs(cfg.rpc.endpoints) do
      for v in tostring(e.url):gmatch("[?&][^=&#]+=([^&#]+)") do
        if #v >= 8 and tostring(e.display_url):find(v, 1, true) then
          error(("display_url %s shows the query value %s"):format(e.display_url, v))
        end
      end
    end
  end,
}
