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
  local ws_urls, wsline = {}, p:read("*l") -- "SIM_WS ws://...": the PubSub side (tests/sim/sim_ws.c)
  for u in (wsline or ""):sub(8):gmatch("[^,]+") do ws_urls[#ws_urls + 1] = u end
  return setmetatable({ pid = pid, pipe = p, urls = urls, ws_urls = ws_urls }, Sim)
end

local function post(url, body)
  local r = assert(thorp.rpc.http_post(url, body, 2000))
  return cjson.decode(r.body)
end

function Sim:fault(i, f) return post(self.urls[i] .. "/admin/fault", cjson.encode(f)) end
function Sim:stats(i) return post(self.urls[i] .. "/admin/fault", "{}") end
--- WebSocket faults (tests/sim/sim_ws.c): { close=1, reset=1, silence=1, garbage=1, oversize=N, ... }
function Sim:ws_fault(i, f) return post(self.ws_urls[i]:gsub("^ws:", "http:") .. "/admin/ws", cjson.encode(f or {})) end
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
  for i, u in ipairs(self.urls) do
    eps[i] = { name = names and names[i] or ("ep" .. i), url = u, ws_url = self.ws_urls[i] }
  end
  return eps
end

return M
