-- Start the bundled simulator (build/thorp-sim) from a spec and drive its faults.
--   local sim = require("helpers.sim").start(3)   -- sim.urls[1..3]
--   sim:fault(1, { down = true })  sim:stats(1)  sim:reset()  sim:stop()
local thorp = require "thorp"
local cjson = require "cjson"

local M = {}
local Sim = {}
Sim.__index = Sim

local function binary()
  local b = os.getenv("THORP_SIM")
  if b and b ~= "" then return b end
  return require("thorp.host").dev_root() .. "/build/thorp-sim"
end

function M.start(count)
  local p = assert(io.popen(("sh -c 'echo $$; exec %q --count %d --base-port 0'"):format(binary(), count or 3), "r"))
  local pid = tonumber(p:read("*l"))
  local ready = p:read("*l")
  assert(ready and ready:match("^SIM_READY "), "simulator did not start: " .. tostring(ready))
  local urls = {}
  for u in ready:sub(11):gmatch("[^,]+") do urls[#urls + 1] = u end
  return setmetatable({ pid = pid, pipe = p, urls = urls }, Sim)
end

local function post(url, body)
  local r = assert(thorp.rpc.http_post(url, body, 2000))
  return cjson.decode(r.body)
end

function Sim:fault(i, f) return post(self.urls[i] .. "/admin/fault", cjson.encode(f)) end
function Sim:stats(i) return post(self.urls[i] .. "/admin/fault", "{}") end
function Sim:reset()
  for i = 1, #self.urls do post(self.urls[i] .. "/admin/reset", "") end
end
function Sim:stop()
  os.execute("kill " .. self.pid .. " 2>/dev/null")
  self.pipe:close()
end

--- endpoints list for rpc.new_pool
function Sim:endpoints(names)
  local eps = {}
  for i, u in ipairs(self.urls) do eps[i] = { name = names and names[i] or ("ep" .. i), url = u } end
  return eps
end

return M
