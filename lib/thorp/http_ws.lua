-- http_ws: Solana PubSub for clients on the front door's port (host/http_ws.c).
--
-- @solana/kit's createSolanaRpcSubscriptions(ws://thorp/) and web3.js
-- subscriptions speak JSON-RPC over the WebSocket; each client subscription
-- becomes a thorp.rpc.subscribe on the front door's pool, so identical
-- subscriptions of many clients share one upstream subscription, and the
-- client's subscription id is ours: it stays the same when the upstream side
-- reconnects or fails over. A client's subscriptions end with its connection.
local C = require "thorp.cdef"
local json = require "thorp.json"
local ws = require "thorp.ws"
local log = require("thorp.log").for_module("http_ws")

local M = { pool = nil, stats = { clients = 0, subscribes = 0, notifications = 0, bad_requests = 0 } }
local S = M.stats

local clients = {} -- connection id -> { subs = { [client sub id] = sub } }
local next_sub = 0

local function send(cid, t)
  local s = json.safe_encode(t)
  if s then C.thorp_http_ws_send(cid, s, #s) end
end

local function rpc_error(cid, id, code, message)
  send(cid, { jsonrpc = "2.0", id = id, error = { code = code, message = message } })
end

local function pool()
  return M.pool or require("thorp.rpc").default_pool()
end

local function subscribe(cid, c, msg)
  local method = msg.method
  next_sub = next_sub + 1
  local csid = next_sub
  local notif = method:gsub("Subscribe$", "Notification")
  local params = msg.params
  if params == json.null then params = nil end
  local head = '{"jsonrpc":"2.0","method":"' .. notif .. '","params":{"result":'
  local tail = ',"subscription":' .. csid .. '}}' -- last, as Agave writes it (clients scan for it there)
  local sub = ws.subscribe(pool(), method, params, function(value)
    S.notifications = S.notifications + 1
    local v = json.safe_encode(value)
    if v then
      local s = head .. v .. tail
      C.thorp_http_ws_send(cid, s, #s)
    end
    if method == "signatureSubscribe" then c.subs[csid] = nil end
  end)
  if not sub.ok then
    S.bad_requests = S.bad_requests + 1
    return rpc_error(cid, msg.id, -32602, sub.error.message)
  end
  S.subscribes = S.subscribes + 1
  c.subs[csid] = sub
  -- answer once the upstream took it (or refused it), as a provider would
  local answered = false
  local function answer(s)
    if answered then return end
    if s.state == "active" or s.state == "done" then
      answered = true
      send(cid, { jsonrpc = "2.0", id = msg.id, result = csid })
    elseif s.state == "failed" then
      answered = true
      c.subs[csid] = nil
      local e = s:status().error
      rpc_error(cid, msg.id, e and e.rpc_code or -32603, e and e.message or "subscription failed upstream")
    end
  end
  sub.on_state = answer
  answer(sub)
end

local function unsubscribe(cid, c, msg)
  local p = msg.params
  local csid = type(p) == "table" and tonumber(p[1])
  local sub = csid and c.subs[csid]
  if not sub then return rpc_error(cid, msg.id, -32602, "Invalid subscription id.") end
  c.subs[csid] = nil
  sub:unsubscribe()
  send(cid, { jsonrpc = "2.0", id = msg.id, result = true })
end

local function on_message(cid, ptr, len)
  local c = clients[cid]
  if not c then
    c = { subs = {} }
    clients[cid] = c
    S.clients = S.clients + 1
  end
  local msg = json.decode_buffer(ptr, len)
  if type(msg) ~= "table" or type(msg.method) ~= "string" then
    S.bad_requests = S.bad_requests + 1
    return rpc_error(cid, type(msg) == "table" and msg.id or json.null, -32700, "Parse error: a JSON-RPC request expected")
  end
  local m = msg.method
  if msg.id == nil then return end -- a JSON-RPC notification (web3.js and kit ping this way): no answer
  if ws.METHODS[m] then return subscribe(cid, c, msg) end
  if m:match("Unsubscribe$") and ws.METHODS[m:gsub("Unsubscribe$", "Subscribe")] then
    return unsubscribe(cid, c, msg)
  end
  S.bad_requests = S.bad_requests + 1
  rpc_error(cid, msg.id, -32601, "Method not found: " .. m .. " (this WebSocket serves the PubSub *Subscribe methods)")
end

local function on_closed(cid)
  local c = clients[cid]
  if not c then return end
  clients[cid] = nil
  S.clients = S.clients - 1
  for _, sub in pairs(c.subs) do sub:unsubscribe() end
end

ws.client_hooks = {
  message = function(cid, ptr, len)
    local ok, err = pcall(on_message, cid, ptr, len)
    if not ok then log.error("front-door WebSocket message failed", { error = tostring(err) }) end
  end,
  closed = on_closed,
}

--- enable(pool, token): take WebSocket upgrades on the HTTP listener (thorp.http.listen calls it)
function M.enable(p, token)
  M.pool = p
  C.thorp_http_ws_enable(token or "")
end

function M.clients() return C.thorp_http_ws_clients() end

return M
